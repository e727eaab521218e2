"""Replay a dataset's events, in time order, into the input topics, as a site would produce them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

from aiokafka import AIOKafkaProducer

from stream.schemas import EVENT_TYPES, EventType, InputEvent
from stream.settings import Settings
from trainer.data import Dataset, fetch_movielens, load_movielens

logger = logging.getLogger(__name__)


def events_in_time_order(dataset: Dataset, source: str) -> Iterator[InputEvent]:
    """Every event of every user, ordered by timestamp (ties by user order, then the user's own order)."""
    rows = [(float(ts), u, j) for u, user in enumerate(dataset.users) for j, ts in enumerate(user.timestamps)]
    rows.sort()
    for ts, u, j in rows:
        user = dataset.users[u]
        item_id = dataset.catalog.item_ids[user.items[j] - 1]
        yield InputEvent(
            user_id=user.user_id,
            item_id=item_id,
            event_type=EVENT_TYPES[user.event_types[j] - 1],
            timestamp=ts,
            event_id=f"{source}:{user.user_id}:{item_id}:{j}",
        )


async def replay(settings: Settings, events: Iterator[InputEvent], rate: float, limit: int | None) -> int:
    """Produce events keyed by user_id (clicks and purchases to the clicks topic, the rest to views),
    paced at ``rate`` events per second (0 = as fast as possible). Returns the number sent."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
    await producer.start()
    sent, started = 0, time.monotonic()
    try:
        for event in events:
            if limit is not None and sent >= limit:
                break
            topic = settings.topic_views if event.event_type is EventType.view else settings.topic_clicks
            await producer.send(topic, event.to_bytes(), key=event.user_id.encode())
            sent += 1
            if rate > 0 and (ahead_s := sent / rate - (time.monotonic() - started)) > 0:
                await asyncio.sleep(ahead_s)
            if sent % 1000 == 0:
                logger.info("replayed %d events", sent)
        await producer.flush()
    finally:
        await producer.stop()
    logger.info("replay done: %d events in %.1f s", sent, time.monotonic() - started)
    return sent


async def replay_movielens(settings: Settings, rate: float, limit: int | None, cache_dir: Path | None = None) -> int:
    dataset = await asyncio.to_thread(load_movielens, fetch_movielens(cache_dir) if cache_dir else None)
    return await replay(settings, events_in_time_order(dataset, "ml100k"), rate, limit)
