"""Replay a dataset's events, in time order, into the input topics, as a site would produce them.

Events go out in (timestamp, user_id, item_id) order: within one user that is the order rule of ``trainer.data``
(timestamp, then item id as a string), the order the split, training, evaluation and the stream window use, so
the pipeline is sent each user's events in the order the model was evaluated on. (Records of one user on the two
input topics may still arrive in another order; the window inserts each event by the same rule.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaProducer
from tqdm import tqdm

from stream.schemas import EVENT_TYPES, EventType, InputEvent
from stream.settings import Settings
from trainer.data import DEFAULT_DATASET, Dataset, fetch_movielens, load_movielens, movielens_source

logger = logging.getLogger(__name__)


def events_in_time_order(dataset: Dataset, source: str) -> Iterator[InputEvent]:
    """Every event of every user, ordered by (timestamp, user_id, item_id) as strings; events equal in all
    three keep the user's own order. ``event_id`` is ``source:user_id:item_id:j``, j the event's position in
    the user's sequence (so it is unique); ``context`` is the event's context (MovieLens: its user's
    attributes), absent where it has none."""
    users, item_ids = dataset.users, dataset.catalog.item_ids
    if not users:
        return
    lengths = [len(user.items) for user in users]
    owner = np.repeat(np.arange(len(users)), lengths)  # [n]: index into users
    position = np.concatenate([np.arange(n) for n in lengths])  # [n]: j, the event's place in its user's sequence
    times = np.concatenate([user.timestamps for user in users]).astype(np.float64)
    rows = np.concatenate([user.items for user in users])
    _, user_code = np.unique(np.array([user.user_id for user in users], dtype=str), return_inverse=True)
    _, item_code = np.unique(np.array(item_ids, dtype=str), return_inverse=True)  # string order of item ids
    order = np.lexsort((position, item_code.reshape(-1)[rows - 1], user_code.reshape(-1)[owner], times))
    for e in order:
        user, j, item_id = users[owner[e]], int(position[e]), item_ids[rows[e] - 1]
        ts = float(times[e])
        yield InputEvent(
            user_id=user.user_id,
            item_id=item_id,
            event_type=EVENT_TYPES[user.event_types[j] - 1],
            timestamp=ts,
            event_id=f"{source}:{user.user_id}:{item_id}:{j}",
            context=dataset.context.decode(user.context[j]) or None,
        )


async def replay(
    settings: Settings, events: Iterator[InputEvent], rate: float, limit: int | None, *, progress: bool = False
) -> int:
    """Produce events keyed by user_id (clicks and purchases to the clicks topic, the rest to views),
    paced at ``rate`` events per second (0 = as fast as possible), with a progress bar on stderr if asked.
    Returns the number sent."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
    await producer.start()
    sent, started = 0, time.monotonic()
    bar = tqdm(total=limit, unit=" events", desc="replay", disable=not progress, dynamic_ncols=True)
    try:
        for event in events:
            if limit is not None and sent >= limit:
                break
            topic = settings.topic_views if event.event_type is EventType.view else settings.topic_clicks
            await producer.send(topic, event.to_bytes(), key=event.user_id.encode())
            sent += 1
            bar.update()
            if rate > 0 and (ahead_s := sent / rate - (time.monotonic() - started)) > 0:
                await asyncio.sleep(ahead_s)
            if sent % 1000 == 0 and not progress:
                logger.info("replayed %d events", sent)
        await producer.flush()
    finally:
        bar.close()
        await producer.stop()
    logger.info("replay done: %d events in %.1f s", sent, time.monotonic() - started)
    return sent


async def replay_movielens(
    settings: Settings,
    rate: float,
    limit: int | None,
    cache_dir: Path | None = None,
    dataset: str = DEFAULT_DATASET,
    progress: bool = False,
) -> int:
    """Replay a named MovieLens dataset (``ml-100k``, ``ml-1m``), fetched into the cache on first use;
    ``cache_dir`` is the folder of its files (default ``<cache>/<dataset>``). Event ids start with the dataset
    name without dashes (``ml100k:``, ``ml1m:``)."""
    source = movielens_source(dataset)
    data_dir = await asyncio.to_thread(fetch_movielens, cache_dir, source.name)
    data = await asyncio.to_thread(load_movielens, data_dir, source.name)
    events = events_in_time_order(data, source.name.replace("-", ""))
    return await replay(settings, events, rate, limit, progress=progress)
