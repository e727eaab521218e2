"""The Grafana dashboard and its provisioning: every worker metric it (or an alert rule) queries exists in the
worker's registry, the panels the operators need are there, and Grafana finds the data source and the file."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from stream.metrics import Metrics
from tests.deploy.support import (
    DASHBOARD_FILE,
    GRAFANA_PROVISIONING,
    dashboard,
    dashboard_exprs,
    load_yaml,
    rule_exprs,
    service,
    walk,
    worker_metric_names,
)

#: The Triton metrics the dashboard must show (Triton's own names; its counters have no _total suffix).
TRITON_METRICS = (
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_request_success",
    "nv_inference_count",
)
#: Sample names Prometheus sees for a metric family of each type (prometheus-client's exposition).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "info": ("_info",),
}


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name the registry can expose, including labelled metrics that have no child yet."""
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


@pytest.fixture(scope="module")
def worker_names() -> set[str]:
    return exposed_names(Metrics().registry)


def test_exposed_names_follow_the_exposition_format() -> None:
    from prometheus_client import Counter, Gauge, Histogram

    registry = CollectorRegistry()
    Counter("c", "c", ["a"], registry=registry)
    Histogram("h", "h", registry=registry)
    Gauge("g", "g", registry=registry)
    assert {"c_total", "h_bucket", "h_sum", "h_count", "g"} <= exposed_names(registry)
    assert not {"c", "h"} & exposed_names(registry)


def test_every_worker_metric_the_dashboard_queries_exists(worker_names: set[str]) -> None:
    used = set().union(*map(worker_metric_names, dashboard_exprs()))
    assert used, "the dashboard queries the worker's metrics"
    missing = used - worker_names
    assert not missing, f"not in stream.metrics.Metrics().registry: {sorted(missing)}"


def test_every_worker_metric_the_alert_rules_query_exists(worker_names: set[str]) -> None:
    used = set().union(*map(worker_metric_names, rule_exprs()))
    assert not used - worker_names, f"not in stream.metrics.Metrics().registry: {sorted(used - worker_names)}"


@pytest.mark.parametrize(
    ("what", "needle"),
    [
        ("events in", "rate(recstream_events_in_total["),
        ("predictions per second", "rate(recstream_predictions_total["),
        ("end-to-end latency percentiles", "histogram_quantile(0.99, sum by (le) (rate(recstream_prediction_latency"),
        ("stage latency", "recstream_stage_seconds_bucket"),
        ("consumer lag", "recstream_consumer_lag"),
        ("dead letters by reason", "sum by (reason) (rate(recstream_dead_letters_total["),
        ("batch sizes", "recstream_batch_size_users_bucket"),
        ("model version in use", "recstream_model_info"),
        *((name, name) for name in TRITON_METRICS),
    ],
)
def test_dashboard_has_the_panels_operators_need(what: str, needle: str) -> None:
    assert any(needle in expr for expr in dashboard_exprs()), f"no panel shows {what}"


def _panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [obj for obj in walk(board["panels"]) if "gridPos" in obj]


def test_dashboard_layout_and_targets_are_well_formed() -> None:
    board = dashboard()
    panels = _panels(board)
    assert board["uid"] == "recstream" and board["schemaVersion"] >= 36
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        covered = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not covered & cells, f"panel {panel['title']!r} overlaps another"
        cells |= covered
        targets = panel.get("targets", [])
        assert panel["type"] == "row" or targets, f"panel {panel['title']!r} has no query"
        assert len({t["refId"] for t in targets}) == len(targets)


def test_grafana_provisions_the_data_source_and_the_dashboard_the_panels_use() -> None:
    (source,) = load_yaml(GRAFANA_PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090" and source["isDefault"]
    refs = [obj["datasource"] for obj in walk(dashboard()["panels"]) if isinstance(obj.get("datasource"), dict)]
    assert refs and all(ref == {"type": "prometheus", "uid": source["uid"]} for ref in refs)

    (provider,) = load_yaml(GRAFANA_PROVISIONING / "dashboards" / "recstream.yml")["providers"]
    grafana = service("grafana")
    mounts = dict(v.rsplit(":", 2)[:2] if v.endswith(":ro") else v.split(":", 1) for v in grafana["volumes"])
    assert mounts["./monitoring/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./monitoring/grafana/provisioning"] == "/etc/grafana/provisioning"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD_FILE.name}"
    # Grafana reaches Prometheus over a network they share
    assert set(grafana["networks"]) & set(service("prometheus")["networks"])
