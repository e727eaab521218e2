"""Scale in: a worker that stops cleanly hands its partitions to the worker that stays.

Two workers (static members, each its own data folder and instance id) share the group on a broker of their
own; both predict. The second gets SIGTERM; then one new user per partition sends an event, and every one is
predicted by the worker that stayed. Without ``leave_group_on_stop`` the stopped static member keeps its
partitions until the broker expires its session, which noida-db never does: the test would time out.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from recstream.broker import Broker
from recstream.processes import free_ports
from recstream.topics import ensure_topics
from recstream.triton import TritonServer
from stream.ingest import home_partition
from stream.names import topic_names
from stream.settings import Settings
from tests.integration.support import OutputReader, WorkerProcess, produce
from tests.integration.test_end_to_end import ITEMS, accounted, event

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def scale_settings(
    triton: TritonServer, stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, Path]]:
    """The session's Triton, a broker of this module's own (the session's worker must not join this group)."""
    work = tmp_path_factory.mktemp("scale-in")
    broker_port, web_port = free_ports(2)
    settings = stack_settings.model_copy(
        update={
            "broker_port": broker_port,
            "bootstrap_servers": f"127.0.0.1:{broker_port}",
            "web_port": web_port,
            "data_dir": work / "first",
        }
    )
    with Broker(settings, work / "log"):
        asyncio.run(ensure_topics(settings, topic_names(settings)))
        yield settings, work


def one_user_per_partition(settings: Settings, prefix: str) -> list[str]:
    users: dict[int, str] = {}
    while len(users) < settings.partitions:
        user = f"{prefix}-{uuid.uuid4().hex[:8]}"
        users.setdefault(home_partition(user, settings.partitions), user)
    return list(users.values())


def predictions_made(settings: Settings) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{settings.web_port}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("recstream_predictions_total "))


async def counted_by(settings: Settings, wanted: float, timeout_s: float) -> bool:
    """Whether the worker's prediction counter reaches ``wanted`` within ``timeout_s``.

    The counter moves after the prediction is handed to the producer, so a reader can see the message first.
    """
    deadline = time.monotonic() + timeout_s
    while predictions_made(settings) < wanted:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


def group_story(*logs: Path) -> str:
    """What the workers' logs say of the group, for a failure's message."""
    story = re.compile(r"group|assigned partitions|\[\^Worker\]|ERROR|WARNING")
    return "\n".join(
        f"--- {log.name}\n" + "\n".join([line for line in log.read_text().splitlines() if story.search(line)][-25:])
        for log in logs
    )


async def send_round(settings: Settings, reader: OutputReader, prefix: str, timeout_s: float, *logs: Path) -> None:
    """One event of a new user in each partition; waits until all are predicted."""
    users = set(one_user_per_partition(settings, prefix))
    await produce(
        settings, [(settings.topic_clicks, u.encode(), event(u, ITEMS[0], 1_700_000_000, event_id=u)) for u in users]
    )
    messages = await reader.read_until(lambda msgs: accounted(msgs, users), timeout_s=timeout_s)
    assert accounted(messages, users), f"not predicted within {timeout_s} s\n{group_story(*logs)}"


async def test_a_clean_stop_hands_its_partitions_to_the_other_worker(scale_settings: tuple[Settings, Path]) -> None:
    first_settings, work = scale_settings
    (second_port,) = free_ports(1)
    second_settings = first_settings.model_copy(update={"web_port": second_port, "data_dir": work / "second"})
    logs = work / "first.log", work / "second.log"
    first, second = WorkerProcess(first_settings, logs[0]), WorkerProcess(second_settings, logs[1])
    reader = OutputReader(first_settings, first_settings.topic_predictions)
    first.start()
    try:
        second.start()
        try:
            # rounds until both workers predict in one: the group has settled with both in it
            deadline = time.monotonic() + 120
            while True:
                counts = [(s, predictions_made(s)) for s in (first_settings, second_settings)]
                await send_round(first_settings, reader, "both", 60, *logs)
                if all([await counted_by(s, count + 1, timeout_s=5) for s, count in counts]):
                    break
                assert time.monotonic() < deadline, f"the two workers never shared the partitions\n{group_story(*logs)}"
        finally:
            second.stop()
        before = predictions_made(first_settings)
        # all four partitions, two of them the stopped worker's, predicted by the one that stayed
        await send_round(first_settings, reader, "after", 60, *logs)
        assert await counted_by(first_settings, before + first_settings.partitions, timeout_s=10), group_story(*logs)
    finally:
        await reader.close()
        first.stop()
