"""What the deployment tests share: the repository's deployment files, parsed, and the real tools they run."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
MONITORING = ROOT / "monitoring"
PROMETHEUS_DIR = MONITORING / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES_FILE = PROMETHEUS_DIR / "rules.yml"
RULES_TEST_FILE = PROMETHEUS_DIR / "rules.test.yml"
GRAFANA_PROVISIONING = MONITORING / "grafana" / "provisioning"
DASHBOARD_FILE = MONITORING / "grafana" / "dashboards" / "recstream.json"

#: Grafana's interval variables, replaced by a duration before an expression is handed to a PromQL parser.
GRAFANA_INTERVALS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
#: A metric name in PromQL: not preceded by a name character, a quote or a colon (so not a label value).
_WORKER_METRIC = re.compile(r"(?<![\w\"':])recstream_[A-Za-z0-9_:]*")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@cache
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object inside node, node included."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def dashboard_exprs() -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and query variables."""
    board = dashboard()
    exprs = [obj["expr"] for obj in walk(board["panels"]) if isinstance(obj.get("expr"), str)]
    for variable in board.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query":
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def rule_exprs() -> list[str]:
    return [rule["expr"] for group in load_yaml(RULES_FILE)["groups"] for rule in group["rules"]]


def worker_metric_names(expr: str) -> set[str]:
    return set(_WORKER_METRIC.findall(expr))


def promql(expr: str) -> str:
    """expr with Grafana's interval variables replaced, so that Prometheus' own parser accepts it."""
    for variable, duration in GRAFANA_INTERVALS.items():
        expr = expr.replace(variable, duration)
    return expr


def promtool() -> str:
    """The real promtool (Debian: `apt-get install prometheus`; .ci/run installs it). Missing is a failure."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: `apt-get install -y prometheus` (.ci/run does this in CI)")
    return path
