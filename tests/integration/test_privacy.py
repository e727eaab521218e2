"""Forget a user, and no user state over the worker's HTTP port: against the real broker, Triton and worker."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from recstream.control import forget_users
from stream.names import WINDOWS_TABLE, changelog_topic
from stream.settings import Settings
from tests.integration.support import OutputReader, WorkerProcess, produce
from tests.integration.test_end_to_end import ITEMS, accounted, event

pytestmark = pytest.mark.integration


async def _tombstone_in_changelog(settings: Settings, user: str, timeout_s: float = 30) -> bool:
    consumer = AIOKafkaConsumer(
        changelog_topic(settings, WINDOWS_TABLE),
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                if any(r.key == orjson.dumps(user) and r.value is None for r in records):  # JSON-encoded keys
                    return True
        return False
    finally:
        await consumer.stop()


async def test_a_forgotten_user_starts_from_an_empty_window(worker: WorkerProcess, stack_settings: Settings) -> None:
    s = stack_settings
    user = f"fg-{uuid.uuid4().hex[:8]}"
    before = [
        (s.topic_clicks, user.encode(), event(user, item, 1_700_000_000 + j, event_id=f"{user}-{j}"))
        for j, item in enumerate(ITEMS[:3])
    ]
    predictions = OutputReader(s, s.topic_predictions)
    try:
        await produce(s, before)
        await predictions.read_until(lambda msgs: accounted(msgs, {f"{user}-{j}" for j in range(3)}))
        await forget_users(s, [user])
        assert await _tombstone_in_changelog(s, user), "the windows changelog forgets the user too"
        await produce(s, [(s.topic_clicks, user.encode(), event(user, ITEMS[3], 1_700_000_100, event_id=f"{user}-3"))])
        await predictions.read_until(lambda msgs: accounted(msgs, {f"{user}-3"}))
    finally:
        await predictions.close()
    after = next(m for m in predictions.messages if f"{user}-3" in m["event_ids"])
    assert after["window"]["events"] == 1, "the next prediction starts from an empty window"
    assert user not in worker.log_path.read_text(), "a user id never appears in the worker's log"


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                local, state = row.split()[1], row.split()[3]
                address, port_hex = local.rsplit(":", 1)
                if state == "0A" and int(port_hex, 16) == port:
                    found.add(address)
    return found


async def test_no_user_state_over_http(worker: WorkerProcess, stack_settings: Settings) -> None:
    s = stack_settings
    user = f"web-{uuid.uuid4().hex[:8]}"
    predictions = OutputReader(s, s.topic_predictions)
    try:
        await produce(s, [(s.topic_views, user.encode(), event(user, ITEMS[0], 1_700_000_000, event_id=f"{user}-0"))])
        await predictions.read_until(lambda msgs: accounted(msgs, {f"{user}-0"}))
    finally:
        await predictions.close()
    base = f"http://127.0.0.1:{s.web_port}"
    pages = [f"/table/{WINDOWS_TABLE}/{user}/", f"/table/{WINDOWS_TABLE}/", "/router/", "/graph/", "/stats/"]
    statuses = await asyncio.gather(*(asyncio.to_thread(_status, base + page) for page in pages))
    assert statuses == [404] * len(pages), dict(zip(pages, statuses, strict=True))
    assert await asyncio.to_thread(_status, base + "/health") == 200
    assert _listening_addresses(s.web_port) == {"0100007F"}, "the web server listens on 127.0.0.1 only"
