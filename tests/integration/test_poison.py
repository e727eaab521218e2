"""Poison isolation against a real served model that rejects some input (tests/integration/faulty_model.py).

One burst of events of many users, a few of them with item ``poison``, which the model answers with
INVALID_ARG. The worker sends a whole batch as one request, so the request fails; the batcher splits the batch
until the failing windows are found. Those go to ``dead-letters`` (reason ``rejected``, the model's error, the
events they account for) and their input offsets are committed; every other user is predicted, and the same
partitions go on predicting afterwards. Its own broker, tritonserver and worker: the session's worker (on the
shipped model) must not take these partitions.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from collections.abc import Iterator

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from recstream.broker import Broker
from recstream.control import forget_users
from recstream.stack import local_settings
from recstream.topics import ensure_topics
from recstream.triton import TritonServer
from stream.ingest import home_partition
from stream.names import input_topics, topic_names
from stream.settings import Settings
from tests.integration.faulty_model import POISON_ERROR, POISON_ITEM, build_poison_repository
from tests.integration.support import OutputReader, WorkerProcess
from tests.model_repository.tiny_version import item_ids

pytestmark = pytest.mark.integration

USERS = 24
EVENTS_PER_USER = 3
ITEMS = item_ids()[:20]


@pytest.fixture(scope="module")
def poison_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, WorkerProcess]]:
    work = tmp_path_factory.mktemp("poison")
    settings = local_settings(
        model_repository=build_poison_repository(work / "repository"),
        data_dir=work / "worker",
        max_wait_ms=300,  # the burst gathers into a few batches of many users
        recommend_min_score=0.0,
    )
    with Broker(settings, work / "log"):
        asyncio.run(ensure_topics(settings, topic_names(settings)))
        with TritonServer(settings, work_dir=work / "triton") as triton:
            triton.wait_ready()
            worker = WorkerProcess(settings, work / "log" / "worker.log")
            worker.start()
            try:
                yield settings, worker
            finally:
                worker.stop()


def event(user: str, item: str, ts: float, event_id: str) -> bytes:
    return orjson.dumps(
        {"user_id": user, "item_id": item, "event_type": "click", "timestamp": ts, "event_id": event_id}
    )


async def burst(settings: Settings, records: list[tuple[str, bytes, bytes]]) -> list:
    """Send every record before waiting for any: one burst."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for topic, key, value in records]
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


async def committed_is_end(settings: Settings, timeout_s: float = 20.0) -> dict[TopicPartition, tuple[int, int]]:
    """Wait until the worker's group has committed every input partition up to its end; (committed, end)."""
    partitions = [TopicPartition(t, p) for t in input_topics(settings) for p in range(settings.partitions)]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout_s
        while True:
            offsets = await admin.list_consumer_group_offsets(settings.app_id, partitions=partitions)
            seen = {tp: (offsets[tp].offset if tp in offsets else -1, ends[tp]) for tp in partitions}
            if all(c >= e for c, e in seen.values()) or time.monotonic() > deadline:
                return seen
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()
        await admin.close()


def metric(settings: Settings, line_start: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{settings.web_port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def ids_in(messages: list[dict]) -> list[str]:
    return [e for m in messages for e in m["event_ids"]]


async def test_rejected_windows_are_isolated_and_the_partitions_go_on(
    poison_stack: tuple[Settings, WorkerProcess],
) -> None:
    s, worker = poison_stack
    run = uuid.uuid4().hex[:8]
    users = [f"p-{run}-{i}" for i in range(USERS)]
    poisoned = users[::6]  # 4 of 24
    records, expected_of = [], {}
    for j in range(EVENTS_PER_USER):  # interleaved: every batch holds many users
        for u, user in enumerate(users):
            item = POISON_ITEM if user in poisoned and j == 0 else ITEMS[(u + j) % len(ITEMS)]
            event_id = f"{user}-{j}"
            expected_of[event_id] = user
            # a poisoned user's events all on one topic, so that they arrive in order and every window of the
            # user holds the poison (across two topics a later event may be windowed, and predicted, first)
            topic = s.topic_clicks if j % 2 and user not in poisoned else s.topic_views
            records.append((topic, user.encode(), event(user, item, 1_700_000_000 + 60 * j, event_id)))
    rejected_before = metric(s, 'recstream_scorer_failures_total{kind="rejected"}')
    await burst(s, records)

    poisoned_ids = {e for e, user in expected_of.items() if user in poisoned}
    healthy_ids = set(expected_of) - poisoned_ids
    predictions = OutputReader(s, s.topic_predictions)
    dead = OutputReader(s, s.topic_dead_letters)
    try:
        await predictions.read_until(lambda ms: healthy_ids <= set(ids_in(ms)), timeout_s=60)
        await dead.read_until(lambda ms: poisoned_ids <= set(ids_in(ms)), timeout_s=30)
        committed = await committed_is_end(s)

        predicted = [e for e in ids_in(predictions.messages) if e in expected_of]
        assert sorted(predicted) == sorted(healthy_ids), "every other user's events in exactly one prediction"
        letters = [m for m in dead.messages if m["event_ids"] and set(m["event_ids"]) <= poisoned_ids]
        assert sorted(ids_in(letters)) == sorted(poisoned_ids), "each poisoned event in exactly one dead letter"
        for letter in letters:
            user = letter["key"]
            assert user in poisoned and {expected_of[e] for e in letter["event_ids"]} == {user}
            assert letter["reason"] == "rejected"
            assert POISON_ERROR in letter["error"] and "INVALID" in letter["error"], letter["error"]
            window = orjson.loads(letter["value"])  # the window the model refused
            assert POISON_ITEM in {e["item_id"] for e in window}
            assert letter["topic"] in input_topics(s)
            assert letter["partition"] == home_partition(user, s.partitions)
        rejections = metric(s, 'recstream_scorer_failures_total{kind="rejected"}') - rejected_before
        assert rejections > len(letters), "whole batches were rejected and split, not only single windows"
        assert all(c >= e for c, e in committed.values()), f"input offsets acknowledged: {committed}"

        # not stalled: the same partitions predict new events, right after the rejections
        partitions = {home_partition(user, s.partitions) for user in poisoned}
        after = {}
        for user in users:
            partition = home_partition(user, s.partitions)
            if user not in poisoned and partition in partitions and partition not in after.values():
                after[user] = partition
        assert set(after.values()) == partitions
        # and a forgotten poisoned user starts over with a window the model accepts
        await forget_users(s, poisoned[:1])
        await asyncio.sleep(1)  # the control topic is its own partition stream: let the forget land first
        late = [
            (s.topic_clicks, user.encode(), event(user, ITEMS[0], 1_700_001_000, f"{user}-after"))
            for user in [*after, poisoned[0]]
        ]
        await burst(s, late)
        wanted = {f"{user}-after" for user in [*after, poisoned[0]]}
        await predictions.read_until(lambda ms: wanted <= set(ids_in(ms)), timeout_s=30)
    finally:
        await predictions.close()
        await dead.close()
    assert wanted <= set(ids_in(predictions.messages)), "the partitions are not stalled"
    restarted = next(m for m in predictions.messages if f"{poisoned[0]}-after" in m["event_ids"])
    assert restarted["window"]["events"] == 1
    assert worker.proc.poll() is None
