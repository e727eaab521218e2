"""Debian's real Prometheus scrapes the running worker and Triton; the metrics the dashboard uses are there."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from recstream.processes import free_ports, terminate
from stream.settings import Settings
from tests.integration.support import OutputReader, WorkerProcess, produce
from tests.integration.test_end_to_end import ITEMS, accounted, event

pytestmark = pytest.mark.integration

#: Each must have a sample once events went through (names as exposed: counters end in _total).
EXPECTED = [
    'recstream_events_in_total{topic="views",event_type="view"}',
    'recstream_dead_letters_total{reason="invalid"}',
    "recstream_predictions_total",
    "recstream_guidance_total",
    "recstream_batch_size_users_count",
    'recstream_triton_request_seconds_count{kind="score"}',
    "recstream_prediction_latency_seconds_bucket",
    'recstream_stage_seconds_count{stage="triton"}',
    "recstream_consumer_lag",
    'recstream_table_keys{table="windows"}',
    "recstream_model_info",
    "nv_inference_request_success",
]


def _query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())["data"]["result"]


async def test_prometheus_scrapes_worker_and_triton(
    worker: WorkerProcess, stack_settings: Settings, tmp_path: Path
) -> None:
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus is needed (scripts/test installs it)"
    s, user = stack_settings, f"prom-{uuid.uuid4().hex[:8]}"
    predictions = OutputReader(s, s.topic_predictions)
    try:
        good = event(user, ITEMS[0], 1_700_000_000, "view", event_id=user)
        await produce(s, [(s.topic_views, user.encode(), good), (s.topic_views, user.encode(), b"not json")])
        await predictions.read_until(lambda msgs: accounted(msgs, {user}))
    finally:
        await predictions.close()

    (port,) = free_ports(1)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - {{job_name: worker, static_configs: [{{targets: ['127.0.0.1:{s.web_port}']}}]}}\n"
        f"  - {{job_name: triton, static_configs: [{{targets: ['127.0.0.1:{s.triton_metrics_port}']}}]}}\n"
    )
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    log = (tmp_path / "prometheus.log").open("wb")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, missing = time.monotonic() + 60, EXPECTED
        while missing and time.monotonic() < deadline:
            await asyncio.sleep(1)
            try:
                missing = [expr for expr in EXPECTED if not await asyncio.to_thread(_query, port, expr)]
            except OSError:
                continue  # not listening yet
        assert not missing, f"no samples for {missing}"
        in_use = await asyncio.to_thread(_query, port, "recstream_model_info == 1")
        shipped = max(int(p.name) for p in (s.model_repository / "recstream").iterdir() if p.name.isdigit())
        assert [r["metric"]["version"] for r in in_use] == [str(shipped)], "one series: the version in use"
    finally:
        terminate("prometheus", server)
        log.close()
