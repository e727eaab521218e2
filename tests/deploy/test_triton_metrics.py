"""The Triton metrics the dashboard and the alert rules query exist in a real tritonserver's exposition, with
the labels the queries filter and group by (the CPU server of nvidia-pytriton: GPU metrics are exempt)."""

from __future__ import annotations

import re
import urllib.request

import pytest

from stream.settings import Settings
from tests.deploy.support import dashboard_exprs, rule_exprs

pytestmark = pytest.mark.integration

_TRITON_METRIC = re.compile(r"(?<![\w\"':])nv_[A-Za-z0-9_]+")
#: One sample line of the text exposition: name, then the labels. Read raw: prometheus-client's parser renames
#: counters to ``*_total``, which Triton's names are not.
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s")
#: Only a server with a GPU exposes these.
GPU_ONLY = ("nv_gpu_", "nv_energy_")


def test_triton_metric_names_and_labels_exist_on_a_real_server(tiny_triton: Settings) -> None:
    url = f"http://127.0.0.1:{tiny_triton.triton_metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    labels: dict[str, set[str]] = {}
    for line in text.splitlines():
        if (match := _SAMPLE.match(line)) is not None:
            name, label_text = match.groups()
            labels.setdefault(name, set()).update(re.findall(r'(\w+)="', label_text or ""))
    exprs = dashboard_exprs() + rule_exprs()
    used = {name for expr in exprs for name in _TRITON_METRIC.findall(expr) if not name.startswith(GPU_ONLY)}
    assert {"nv_inference_queue_duration_us", "nv_inference_request_success"} <= used
    assert not used - set(labels), f"not exposed by tritonserver: {sorted(used - set(labels))}"
    for name in used:
        assert {"model", "version"} <= labels[name], name
    model_filters = {m for expr in exprs for m in re.findall(r'model="([^"]+)"', expr)}
    assert model_filters <= {tiny_triton.model_name}
