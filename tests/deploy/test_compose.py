"""docker-compose.yml: valid against the Compose Specification, everything it builds or mounts exists, and the
production properties the stack promises (scalable workers and Tritons, nothing but Grafana and Prometheus on
the host, a GPU for Triton, topics never auto-created, the worker reachable by Prometheus)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from stream.settings import Settings
from tests.deploy.support import COMPOSE_FILE, PROMETHEUS_CONFIG, ROOT, compose, load_yaml, service

VENDOR = Path(__file__).parent / "vendor"
SCHEMA_FILE = VENDOR / "compose-spec.json"
#: The upstream copy recorded in vendor/README.md.
SCHEMA_SHA256 = "1f91e091f16b2dd50ab8860e02bb391d22df553d91c145eacedb1b6eff9c3f0e"
#: Services run with `docker compose up --scale NAME=N`.
SCALED = ("worker", "triton")
#: Read by trainer.data.default_cache_dir through os.environ, not a Settings field.
NON_SETTINGS_ENV = {"RECSTREAM_CACHE_DIR"}


def _environment(svc: dict[str, Any]) -> dict[str, str]:
    """The service's environment as Compose sets it with no variables in the shell: ``${NAME:-default}`` is the
    default."""
    env = svc.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value)) for key, value in env.items()}


def _bind_sources(svc: dict[str, Any]) -> list[str]:
    """Host paths of the service's bind mounts (short and long volume syntax)."""
    sources = []
    for volume in svc.get("volumes", []):
        if isinstance(volume, str):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/", "~")):
                sources.append(source)
        elif volume.get("type") == "bind":
            sources.append(volume["source"])
    return sources


def _named_volumes(svc: dict[str, Any]) -> list[str]:
    names = []
    for volume in svc.get("volumes", []):
        if isinstance(volume, str):
            source = volume.split(":", 1)[0]
            if ":" in volume and not source.startswith((".", "/", "~")):
                names.append(source)
        elif volume.get("type") == "volume" and volume.get("source"):
            names.append(volume["source"])
    return names


def _build(svc: dict[str, Any]) -> tuple[Path, Path]:
    build = svc["build"]
    context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
    dockerfile = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
    return context, dockerfile


def _published(svc: dict[str, Any]) -> list[str]:
    ports = svc.get("ports", [])
    return [port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port['published']}" for port in ports]


def test_vendored_schema_is_the_recorded_upstream_copy() -> None:
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == SCHEMA_SHA256, "update vendor/README.md too"
    assert "Apache License" in (VENDOR / "compose-spec.LICENSE").read_text(encoding="utf-8")


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert schema["$schema"].startswith("https://json-schema.org/draft-07/schema")
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)


def test_the_schema_check_catches_a_mistake() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    broken = {"services": {"worker": {"image": "x", "deploy": {"resources": {"reservations": {"gpus": 1}}}}}}
    assert not jsonschema.Draft7Validator(schema).is_valid(broken)


def test_every_build_context_dockerfile_and_copied_path_exists() -> None:
    for name, svc in compose()["services"].items():
        if "build" not in svc:
            continue
        context, dockerfile = _build(svc)
        assert context.is_dir(), f"{name}: build context {context} is missing"
        assert dockerfile.is_file(), f"{name}: Dockerfile {dockerfile} is missing"
        for line in dockerfile.read_text(encoding="utf-8").splitlines():
            words = line.split()
            if words[:1] in (["COPY"], ["ADD"]) and not any(w.startswith("--from") for w in words):
                for source in (w for w in words[1:-1] if not w.startswith("--")):
                    assert (context / source).exists(), f"{name}: {dockerfile.name} copies missing {source}"


def test_every_bind_mount_exists_and_every_named_volume_is_declared() -> None:
    declared = set(compose().get("volumes") or {})
    for name, svc in compose()["services"].items():
        for source in _bind_sources(svc):
            assert (COMPOSE_FILE.parent / source).exists(), f"{name}: bind mount source {source} is missing"
        for volume in _named_volumes(svc):
            assert volume in declared, f"{name}: volume {volume} is not declared under top-level volumes"


def test_images_are_pinned_and_official() -> None:
    images = {name: svc["image"] for name, svc in compose()["services"].items() if "image" in svc}
    assert images["kafka"].startswith("apache/kafka:")
    assert images["prometheus"].startswith("prom/prometheus:")
    assert images["grafana"].startswith("grafana/grafana:")
    for name, image in images.items():
        tag = image.rsplit(":", 1)[-1] if ":" in image else ""
        assert tag and tag != "latest", f"{name}: pin the image version ({image})"
    _, triton_dockerfile = _build(service("triton"))
    assert triton_dockerfile == ROOT / "docker" / "triton.Dockerfile"
    assert re.search(r"^FROM nvcr\.io/nvidia/tritonserver:", triton_dockerfile.read_text(), re.MULTILINE)
    assert _build(service("worker"))[1] == ROOT / "docker" / "worker.Dockerfile"


@pytest.mark.parametrize("name", SCALED)
def test_scaled_services_have_no_fixed_host_port_or_name(name: str) -> None:
    svc = service(name)
    assert not svc.get("ports"), f"{name}: a fixed host port stops `--scale {name}=2`"
    assert "container_name" not in svc, f"{name}: a container_name stops `--scale {name}=2`"
    assert "hostname" not in svc
    assert not _named_volumes(svc), f"{name}: replicas must not share a named volume"


def test_only_grafana_and_prometheus_are_published_on_the_host() -> None:
    published = {name: _published(svc) for name, svc in compose()["services"].items() if svc.get("ports")}
    assert set(published) == {"grafana", "prometheus"}
    assert published["grafana"] == ["3000:3000"]
    # Prometheus has no authentication: loopback only
    assert all(port.startswith("127.0.0.1:") for port in published["prometheus"])
    assert all("network_mode" not in svc for svc in compose()["services"].values())


def test_triton_serves_the_model_repository_on_a_gpu() -> None:
    svc = service("triton")
    assert "./model_repository:/models" in svc["volumes"]
    devices = svc["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] and d.get("count") == 1 for d in devices)
    assert "curl" in svc["healthcheck"]["test"][-1]
    assert "/v2/models/$$RECSTREAM_MODEL_NAME/ready" in svc["healthcheck"]["test"][-1]


def test_triton_loads_the_model_the_workers_score_with() -> None:
    """One variable names the model: Triton links its environment into that model's folder and loads it, its
    health check asks for it, and the workers score with it; by default the shipped ML-100K model."""
    triton, worker = service("triton")["environment"], service("worker")["environment"]
    assert triton["RECSTREAM_MODEL_NAME"] == worker["RECSTREAM_MODEL_NAME"] == "${RECSTREAM_MODEL_NAME:-recstream}"
    dockerfile = (ROOT / "docker" / "triton.Dockerfile").read_text()
    (cmd,) = re.findall(r"^CMD (.*)$", dockerfile, re.MULTILINE)
    assert '\\"--load-model=$RECSTREAM_MODEL_NAME\\"' in cmd and '\\"/models/$RECSTREAM_MODEL_NAME/pyenv\\"' in cmd
    assert "ENV RECSTREAM_MODEL_NAME=recstream\n" in dockerfile
    for name in ("recstream", "recstream-ml-1m"):
        assert (ROOT / "model_repository" / name / "config.pbtxt").is_file()


def test_kafka_runs_kraft_and_never_auto_creates_topics() -> None:
    env = _environment(service("kafka"))
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert env["KAFKA_LOG_DIRS"] in [v.split(":", 1)[1] for v in service("kafka")["volumes"]]
    # every listener named in the listeners has a security protocol (the image has no defaults once configured)
    protocols = dict(pair.split(":") for pair in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert {listener.split("://")[0] for listener in env["KAFKA_LISTENERS"].split(",")} <= set(protocols)


def test_worker_environment_sets_only_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _environment(service("worker"))
    unknown = {key for key in env if key.startswith("RECSTREAM_")} - {
        f"RECSTREAM_{field.upper()}" for field in Settings.model_fields
    }
    assert not unknown, f"not Settings fields (typos, or settings not implemented yet): {sorted(unknown)}"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.bootstrap_servers == "kafka:9092"
    assert settings.triton_url.split(":")[0] == "triton"
    assert settings.web_host == "0.0.0.0"  # bound on the compose network, so Prometheus can scrape it


def test_worker_dockerfile_env_sets_only_real_settings() -> None:
    dockerfile = (ROOT / "docker" / "worker.Dockerfile").read_text(encoding="utf-8")
    names = set(re.findall(r"\b(RECSTREAM_[A-Z_]+)=", dockerfile))
    fields = {f"RECSTREAM_{field.upper()}" for field in Settings.model_fields}
    assert names, "the Dockerfile sets the worker's data dir and web address"
    assert names - NON_SETTINGS_ENV <= fields, sorted(names - NON_SETTINGS_ENV - fields)
    for name in NON_SETTINGS_ENV & names:
        assert name in (ROOT / "trainer" / "data.py").read_text(encoding="utf-8")


def test_prometheus_scrapes_every_replica_on_the_ports_the_services_listen_on() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    defaults = Settings()
    worker_env = _environment(service("worker"))
    expected = {
        "recstream-worker": ("worker", int(worker_env.get("RECSTREAM_WEB_PORT", defaults.web_port))),
        "triton": ("triton", defaults.triton_metrics_port),
    }
    prometheus_networks = set(service("prometheus")["networks"])
    for job_name, (svc_name, port) in expected.items():
        (sd,) = jobs[job_name]["dns_sd_configs"]
        assert sd["names"] == [svc_name] and sd["type"] == "A" and sd["port"] == port
        assert jobs[job_name].get("metrics_path", "/metrics") == "/metrics"
        assert prometheus_networks & set(service(svc_name)["networks"]), f"Prometheus cannot reach {svc_name}"
    # the workers reach Triton's gRPC port by the service name
    assert worker_env["RECSTREAM_TRITON_URL"] == f"triton:{defaults.triton_grpc_port}"
    # Prometheus reads the folder the config lives in
    assert "./monitoring/prometheus:/etc/prometheus:ro" in service("prometheus")["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in service("prometheus")["command"]


def test_grafana_is_not_on_the_network_of_kafka_and_triton() -> None:
    stream_network = set(service("triton")["networks"])
    assert not stream_network & set(service("grafana")["networks"])
    assert set(service("kafka")["networks"]) == stream_network
