"""The worker's live page in headless Chromium (Debian's), loaded while events flow through the real stack."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
import uuid
from pathlib import Path

import aiohttp
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


async def dom_after(url: str, profile: Path, seconds: float) -> str:
    """The page's DOM after it has run ``seconds`` of real time in headless Chromium, read over its DevTools
    protocol (``--dump-dom`` with a virtual-time budget would fast-forward the page's one-second polls, so
    its rates would span milliseconds)."""
    binary = shutil.which("chromium")
    assert binary, "Debian's chromium is needed (scripts/test installs it)"
    browser = await asyncio.create_subprocess_exec(
        binary,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",
        url,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + 60
        while not port_file.is_file() or not port_file.read_text().strip():
            assert browser.returncode is None and time.monotonic() < deadline, "chromium opened no DevTools port"
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        await asyncio.sleep(seconds)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                (page,) = [t for t in await response.json() if t["type"] == "page" and t["url"] == url]
            async with http.ws_connect(page["webSocketDebuggerUrl"]) as devtools:
                expression = "document.documentElement.outerHTML"
                await devtools.send_json({"id": 1, "method": "Runtime.evaluate", "params": {"expression": expression}})
                reply = await devtools.receive_json(timeout=30)
        return reply["result"]["result"]["value"]
    finally:
        browser.terminate()
        await browser.wait()


async def _flow(settings: Settings, stop: asyncio.Event) -> None:
    """Events of new users, 25 a second, keyed by user, until ``stop`` is set."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    run, i = uuid.uuid4().hex[:8], 0
    try:
        while not stop.is_set():
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
    stop = asyncio.Event()
    flow = asyncio.create_task(_flow(s, stop))
    predictions = OutputReader(s, s.topic_predictions)
    try:
        try:  # predictions of the flow arriving before the page loads (a loaded machine is slow to start)
            live = lambda msgs: sum(m["user_id"].startswith("live-") for m in msgs) >= 20  # noqa: E731
            assert live(await predictions.read_until(live, timeout_s=60)), "the flow's predictions arrive"
        finally:
            await predictions.close()
        # about six polls, a second apart, while events flow
        dom = await dom_after(f"http://127.0.0.1:{s.web_port}/", tmp_path / "profile", seconds=6)
    finally:
        stop.set()
        await flow

    assert float(_tile(dom, "events")) > 0 and float(_tile(dom, "predictions")) > 0, "rates while events flow"
    assert float(_tile(dom, "p50")) <= float(_tile(dom, "p99"))
    shipped = max(int(p.name) for p in (s.model_repository / "recstream").iterdir() if p.name.isdigit())
    assert _tile(dom, "model") == str(shipped)
    guidance = re.findall(r"<li><span class=\"action\">(\w+)</span>([^<]*)</li>", dom)
    assert guidance and all(" because " in explanation for _, explanation in guidance), dom[-2000:]
    assert re.search(r'<p id="updated">updated [^<]+</p>', dom), "the page updates by itself"
