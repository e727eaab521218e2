"""Replay: a dataset's events reach the input topics in time order, keyed by user, valid for the worker."""

from __future__ import annotations

import asyncio

import orjson
from aiokafka import AIOKafkaConsumer

from recstream.broker import Broker
from recstream.replay import events_in_time_order, replay
from recstream.topics import ensure_topics
from stream.schemas import InputEvent
from stream.settings import Settings
from trainer.data import Catalog, build_dataset


def small_dataset():
    catalog = Catalog(["a", "b", "c"], ["A", "B", None], ["A", "B", "c"])
    return build_dataset(
        user_ids=["u1", "u2", "u1", "u2", "u1"],
        item_ids=["a", "b", "c", "a", "b"],
        event_types=["view", "click", "click", "view", "purchase"],
        timestamps=[30.0, 10.0, 20.0, 40.0, 50.0],
        catalog=catalog,
    )


def test_events_come_out_in_time_order_with_unique_ids() -> None:
    events = list(events_in_time_order(small_dataset(), "toy"))
    assert [e.timestamp for e in events] == [10.0, 20.0, 30.0, 40.0, 50.0]
    assert [(e.user_id, e.item_id, e.event_type) for e in events][:2] == [("u2", "b", "click"), ("u1", "c", "click")]
    assert len({e.event_id for e in events}) == len(events)


def test_replay_produces_keyed_valid_events_to_the_input_topics(broker: Broker, stack_settings: Settings) -> None:
    settings = stack_settings.model_copy(update={"topic_views": "replay-views", "topic_clicks": "replay-clicks"})
    asyncio.run(ensure_topics(settings, {settings.topic_views: 2, settings.topic_clicks: 2}))
    sent = asyncio.run(replay(settings, events_in_time_order(small_dataset(), "toy"), rate=0, limit=4))
    assert sent == 4

    async def consume() -> list:
        consumer = AIOKafkaConsumer(
            settings.topic_views,
            settings.topic_clicks,
            bootstrap_servers=settings.bootstrap_servers,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            got = []
            while len(got) < sent:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    got.extend(records)
            return got
        finally:
            await consumer.stop()

    records = asyncio.run(asyncio.wait_for(consume(), 30))
    by_topic = {r.topic for r in records}
    assert by_topic == {"replay-views", "replay-clicks"}
    for record in records:
        event = InputEvent.from_bytes(record.value)
        assert record.key == event.user_id.encode()
        assert (record.topic == "replay-views") == (event.event_type == "view")
    assert sorted(orjson.loads(r.value)["timestamp"] for r in records) == [10.0, 20.0, 30.0, 40.0]
