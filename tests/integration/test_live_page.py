"""The worker's live page in headless Chromium (Debian's), loaded while events flow through the real stack."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from stream.settings import Settings
from tests.integration.support import OutputReader, WorkerProcess
from tests.integration.test_end_to_end import ITEMS, event

pytestmark = pytest.mark.integration

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium(url: str, profile: Path, *args: str) -> str:
    binary = shutil.which("chromium")
    assert binary, "Debian's chromium is needed (scripts/test installs it)"
    command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=True).stdout


async def _flow(settings: Settings, seconds: float) -> None:
    """Events of new users, 25 a second, keyed by user."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    run, started, i = uuid.uuid4().hex[:8], time.monotonic(), 0
    try:
        while time.monotonic() - started < seconds:
            user = f"live-{run}-{i}"
            value = event(user, ITEMS[i % len(ITEMS)], 1_700_000_000 + i, "view", event_id=f"{user}-0")
            await producer.send(settings.topic_views, value, key=user.encode())
            i += 1
            await asyncio.sleep(0.04)
    finally:
        await producer.stop()


def _tile(dom: str, element_id: str) -> str:
    match = re.search(rf'<b id="{element_id}">([^<]*)</b>', dom)
    assert match, f"no tile {element_id}"
    return match[1]


async def test_live_page_shows_what_flows(worker: WorkerProcess, stack_settings: Settings, tmp_path: Path) -> None:
    s = stack_settings
    flow = asyncio.create_task(_flow(s, seconds=30))
    predictions = OutputReader(s, s.topic_predictions)
    try:  # predictions of the flow arriving before the page loads (a loaded machine is slow to start)
        live = lambda msgs: sum(m["user_id"].startswith("live-") for m in msgs) >= 20  # noqa: E731
        assert live(await predictions.read_until(live, timeout_s=60)), "the flow's predictions arrive"
    finally:
        await predictions.close()
    url = f"http://127.0.0.1:{s.web_port}/"
    dom = await asyncio.to_thread(chromium, url, tmp_path / "profile", "--dump-dom", "--virtual-time-budget=8000")
    await flow

    assert float(_tile(dom, "events")) > 0 and float(_tile(dom, "predictions")) > 0, "rates while events flow"
    assert float(_tile(dom, "p50")) <= float(_tile(dom, "p99"))
    shipped = max(int(p.name) for p in (s.model_repository / "recstream").iterdir() if p.name.isdigit())
    assert _tile(dom, "model") == str(shipped)
    guidance = re.findall(r"<li><span class=\"action\">(\w+)</span>([^<]*)</li>", dom)
    assert guidance and all(" because " in explanation for _, explanation in guidance), dom[-2000:]
    assert re.search(r'<p id="updated">updated [^<]+</p>', dom), "the page updates by itself"
