"""What `recstream config` and `recstream status` show: the effective settings, and each part's health."""

from __future__ import annotations

import asyncio
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from dotenv import dotenv_values
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from tritonclient.grpc.aio import InferenceServerClient

from recstream.stack import replica_settings, worker_name
from stream.settings import ENV_FILE, Settings

#: How long each health check may take.
CHECK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class SettingRow:
    name: str
    value: str
    source: str  # "flag", "environment", ".env" or "default"
    description: str


def effective_settings(settings: Settings, flags: Mapping[str, Any]) -> list[SettingRow]:
    """Every setting, its value (secrets masked) and where it came from, strongest source first."""
    environment = {k.upper() for k in os.environ}
    dotenv = {k.upper() for k in dotenv_values(ENV_FILE)} if os.path.exists(ENV_FILE) else set()
    rows, dumped = [], settings.model_dump(mode="json")
    for name, field in Settings.model_fields.items():
        variable = f"RECSTREAM_{name.upper()}"
        if flags.get(name) is not None:
            source = "flag"
        elif variable in environment:
            source = "environment"
        elif variable in dotenv:
            source = ".env"
        else:
            source = "default"
        value, plain = getattr(settings, name), dumped[name]
        if isinstance(value, SecretStr):
            shown = "**********" if value.get_secret_value() else ""
        else:
            shown = ",".join(plain) if isinstance(plain, list) else str(plain)
        rows.append(SettingRow(name, shown, source, field.description or ""))
    return rows


def settings_markdown() -> str:
    """The configuration table of README.md: every setting's flag, variable, default and meaning."""
    defaults = Settings.model_construct().model_dump(mode="json")
    lines = ["| flag | variable | default | what |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        value = defaults[name]
        if isinstance(value, list):
            value = ",".join(value)
        elif name == "model_repository":
            value = "the project's model_repository/"
        shown = "(random per process)" if name == "log_hash_key" else f"`{value}`" if value not in ("", None) else "–"
        lines.append(
            f"| `--{name.replace('_', '-')}` | `RECSTREAM_{name.upper()}` | {shown} | {field.description or ''} |"
        )
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PartStatus:
    part: str
    ok: bool
    detail: str


async def _broker(settings: Settings) -> PartStatus:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=3000)
    try:
        await asyncio.wait_for(admin.start(), CHECK_TIMEOUT_S)
        topics = await asyncio.wait_for(admin.list_topics(), CHECK_TIMEOUT_S)
    except Exception as exc:
        return PartStatus("broker", False, f"{settings.bootstrap_servers}: {type(exc).__name__}")
    finally:
        await admin.close()
    return PartStatus("broker", True, f"{settings.bootstrap_servers}: {len(topics)} topics")


async def _triton(settings: Settings) -> PartStatus:
    client = InferenceServerClient(settings.triton_url)
    try:
        ready = await asyncio.wait_for(client.is_model_ready(settings.model_name), CHECK_TIMEOUT_S)
        index = await asyncio.wait_for(client.get_model_repository_index(as_json=True), CHECK_TIMEOUT_S)
    except Exception as exc:
        return PartStatus("triton", False, f"{settings.triton_url}: {type(exc).__name__}")
    finally:
        await client.close()
    loaded = [m for m in index.get("models", []) if m.get("name") == settings.model_name and m.get("state") == "READY"]
    versions = sorted(m.get("version", "") for m in loaded)
    detail = f"{settings.triton_url}: model {settings.model_name!r} {'ready' if ready else 'not ready'}"
    return PartStatus("triton", ready, detail + (f", version {', '.join(versions)}" if versions else ""))


def _worker(settings: Settings, name: str = "worker") -> PartStatus:
    host = "127.0.0.1" if settings.web_host in ("0.0.0.0", "::") else settings.web_host
    base = f"http://{host}:{settings.web_port}"
    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=CHECK_TIMEOUT_S) as response:
            metrics = response.read().decode()
        with urllib.request.urlopen(f"{base}/health", timeout=CHECK_TIMEOUT_S) as response:
            healthy = response.status == 200
    except urllib.error.HTTPError as exc:
        healthy = False if exc.code == 503 else None
    except OSError as exc:
        return PartStatus(name, False, f"{base}: {type(exc).__name__}")
    lag, versions, predictions = 0.0, set(), 0.0
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "recstream_consumer_lag":
                lag += sample.value
            elif sample.name == "recstream_model_info" and sample.value == 1:
                versions.add(sample.labels["version"])
            elif sample.name == "recstream_predictions_total":
                predictions = sample.value
    model = f", model version {', '.join(sorted(versions))}" if versions else ""
    detail = f"{base}: {'healthy' if healthy else 'not healthy'}, lag {lag:.0f}, {predictions:.0f} predictions{model}"
    return PartStatus(name, bool(healthy), detail)


async def stack_status(settings: Settings) -> list[PartStatus]:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # a refused connection is in the answer, once
    broker, triton = await asyncio.gather(_broker(settings), _triton(settings))
    workers = [
        await asyncio.to_thread(_worker, replica_settings(settings, i), worker_name(i)) for i in range(settings.workers)
    ]
    return [broker, triton, *workers]
