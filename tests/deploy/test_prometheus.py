"""The Prometheus config, its alert rules and every PromQL expression of the dashboard, checked by the real
promtool (Debian's `prometheus` package). A missing promtool fails these tests; .ci/run installs it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.deploy.support import (
    PROMETHEUS_CONFIG,
    PROMETHEUS_DIR,
    RULES_FILE,
    RULES_TEST_FILE,
    dashboard_exprs,
    load_yaml,
    promql,
    promtool,
)


def _promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_check_config_accepts_the_config_and_its_rule_files() -> None:
    result = _promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    # the config pulls in the alert rules, so they were checked too
    assert "rules.yml" in load_yaml(PROMETHEUS_CONFIG)["rule_files"]
    assert "1 rule files found" in result.stdout + result.stderr


def test_promtool_catches_a_broken_config(tmp_path: Path) -> None:
    broken = load_yaml(PROMETHEUS_CONFIG)
    broken.pop("rule_files")
    broken["scrape_configs"][0]["dns_sd_configs"][0]["type"] = "AAAAA"
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(broken))
    assert _promtool("check", "config", str(tmp_path / "prometheus.yml"), cwd=tmp_path).returncode != 0


def test_alert_rules_pass_their_unit_tests() -> None:
    result = _promtool("test", "rules", RULES_TEST_FILE.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    alerts = {rule["alert"] for group in load_yaml(RULES_FILE)["groups"] for rule in group["rules"] if "alert" in rule}
    tested = {case["alertname"] for test in load_yaml(RULES_TEST_FILE)["tests"] for case in test["alert_rule_test"]}
    assert alerts <= tested, f"alerts without a test in {RULES_TEST_FILE.name}: {sorted(alerts - tested)}"


def test_every_dashboard_expression_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each expression as a recording rule (Grafana's $__rate_interval etc. substituted)."""
    exprs = dashboard_exprs()
    assert exprs
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": promql(expr)} for i, expr in enumerate(exprs)
    ]}]}  # fmt: skip
    (tmp_path / "dashboard.rules.yml").write_text(yaml.safe_dump(rules))
    result = _promtool("check", "rules", "dashboard.rules.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(exprs)} rules found" in result.stdout + result.stderr
