"""The consumer tuning of stream.kafka against the real embedded broker."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from recstream.broker import Broker
from recstream.topics import ensure_topics
from stream.kafka import pace_empty_fetches
from stream.settings import Settings

pytestmark = pytest.mark.integration


async def _idle_fetches(settings: Settings, pause_ms: float, seconds: float = 2.0) -> tuple[int, bytes]:
    """Fetch requests an idle consumer of 4 empty partitions makes in ``seconds``; then one record's value."""
    topic = f"idle-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, {topic: 4})
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, fetch_max_wait_ms=500)
    await consumer.start()
    try:
        pace_empty_fetches(consumer, pause_ms)
        consumer.assign([TopicPartition(topic, p) for p in range(4)])
        await consumer.seek_to_end()
        fetches, fetch = [0], consumer._fetcher._proc_fetch_request

        async def counted(*args: object) -> bool:
            fetches[0] += 1
            return await fetch(*args)

        consumer._fetcher._proc_fetch_request = counted
        await asyncio.sleep(seconds)
        idle = fetches[0]
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"after the pause", partition=1)
        finally:
            await producer.stop()
        record = await asyncio.wait_for(consumer.getone(), 10)
        return idle, record.value
    finally:
        await consumer.stop()


async def test_an_idle_consumer_does_not_spin_on_a_broker_that_answers_empty_fetches_at_once(
    broker: Broker, stack_settings: Settings
) -> None:
    paced, value = await _idle_fetches(stack_settings, pause_ms=10)
    assert value == b"after the pause", "a paced consumer still gets new data"
    assert paced <= 2.0 / 0.010 * 1.5, f"{paced} fetches in 2 s with a 10 ms pause"
    if stack_settings.embedded_broker == "noida":  # it answers an empty fetch at once: unpaced, it spins
        unpaced, _ = await _idle_fetches(stack_settings, pause_ms=0)
        assert unpaced > 3 * paced, (unpaced, paced)
