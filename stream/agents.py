"""The worker's agent; ``stream.app`` builds its parts and passes them in.

**events** reads ``views``, ``clicks``, the internal ``recstream-events`` topic and ``recstream-control``.
An input record is parsed (:func:`stream.ingest.parse_record`): a bad one goes to ``dead-letters``; a
valid one whose record lies in its user's partition (:func:`stream.ingest.home_partition`) goes straight to
the user's window, any other is re-keyed through ``recstream-events`` first, so every user's window lives in
one partition and one hop is saved for well-keyed input. The window (:func:`stream.window.apply_event`) is
stored in the ``windows`` table and the new window submitted to the micro-batcher, which scores it and
emits the prediction; the guide (:mod:`stream.guide`) decides on guidance right there.

A control record (:class:`stream.schemas.ForgetUser`, keyed by user_id, so it reaches the worker that holds
the user) deletes the user's window and guidance cooldown: table deletions, tombstones in the changelogs.

Logs never name a user: :class:`UserHash` writes a keyed hash instead.

Acking: the agent iterates a ``noack`` stream. Dead letters and re-keyed records are acked once sent; a
windowed event only after the prediction that accounts for it was produced, and its guidance if the user is
guided (the consumer flushes the producer before it commits offsets), so a crash between the window update
and the prediction redelivers the event, and the window logic re-emits it. Delivery is at least once.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import faust

from stream.batcher import MicroBatcher, Origin
from stream.ingest import home_partition, parse_record
from stream.metrics import Metrics
from stream.schemas import DeadLetter, ForgetUser, KeyedEvent
from stream.settings import Settings
from stream.window import Outcome, UserWindow, apply_event

logger = logging.getLogger(__name__)

Send = Callable[[bytes, bytes], Awaitable[Any]]


@dataclass(frozen=True)
class Outputs:
    """Where the agents write: each a ``send(key, value)``."""

    events: Send
    dead_letters: Send


class UserHash:
    """A keyed hash that stands for a user id in logs (HMAC-SHA256, 12 hex digits)."""

    def __init__(self, key: bytes) -> None:
        self._key = key or secrets.token_bytes(32)

    def __call__(self, user_id: str) -> str:
        return hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()[:12]


def record_ts_ms(message: Any) -> int:
    """Kafka record timestamp in ms (Faust gives seconds); now when the record has none."""
    timestamp_s = message.timestamp
    return round(timestamp_s * 1000) if timestamp_s and timestamp_s > 0 else round(time.time() * 1000)


def events_agent(
    settings: Settings,
    windows: faust.Table,
    cooldown: faust.Table,
    batcher: MicroBatcher,
    outputs: Outputs,
    metrics: Metrics,
) -> Callable[[faust.StreamT[bytes]], Awaitable[None]]:
    user_hash = UserHash(settings.log_hash_key.get_secret_value().encode())

    async def events(stream: faust.StreamT[bytes]) -> None:
        manual = stream.noack()
        async for event in manual.events():
            message = event.message
            received_ms = time.time() * 1000
            if message.topic == settings.topic_control:
                try:
                    request = ForgetUser.model_validate_json(event.value or b"")
                except ValueError:
                    where = f"{message.topic}:{message.partition}:{message.offset}"
                    logger.warning("control record %s is not a request", where)
                else:
                    for table in (windows, cooldown):
                        if request.user_id in table:
                            del table[request.user_id]  # a tombstone: the changelog forgets too
                    metrics.forgotten.inc()
                    logger.info("forgot user %s", user_hash(request.user_id))
                await manual.ack(event)
                continue
            if message.topic == settings.topic_events:
                keyed = KeyedEvent.model_validate_json(event.value)
                stages_ms = {"ingest": keyed.ingest_ms, "rekey": received_ms - record_ts_ms(message)}
            else:
                result = parse_record(
                    event.value,
                    event.key,
                    topic=message.topic,
                    partition=message.partition,
                    offset=message.offset,
                    record_ts_ms=record_ts_ms(message),
                    now_s=received_ms / 1000,
                )
                if isinstance(result, DeadLetter):
                    metrics.events_in.labels(message.topic, "invalid").inc()
                    metrics.dead_letters.labels(result.reason).inc()
                    # not the error text: it may quote the record, and with it a user id
                    logger.info("dead letter %s:%d:%d", result.topic, result.partition, result.offset)
                    await outputs.dead_letters(event.key, result.to_bytes())
                    await manual.ack(event)
                    continue
                keyed = result
                metrics.events_in.labels(message.topic, keyed.event.event_type.value).inc()
                ingest_ms = received_ms - keyed.event.record_ts_ms
                if message.partition != home_partition(keyed.user_id, settings.partitions):
                    metrics.rekeyed.inc()
                    rekeyed = keyed.model_copy(update={"ingest_ms": ingest_ms})
                    await outputs.events(keyed.user_id.encode(), rekeyed.to_bytes())
                    await manual.ack(event)
                    continue
                stages_ms = {"ingest": ingest_ms}
            state, outcome = apply_event(
                UserWindow.from_bytes(windows.get(keyed.user_id)),
                keyed.event,
                message.topic,
                message.offset,
                max_events=settings.window_max_events,
                max_age_s=settings.window_max_age_s,
                consumed_types=settings.consumed_event_types,
                max_consumed=settings.consumed_max_items,
            )
            if outcome is Outcome.duplicate:
                metrics.duplicates.inc()
                await manual.ack(event)
                continue
            if outcome is Outcome.added:
                windows[keyed.user_id] = state.to_bytes()
            stages_ms["window"] = time.time() * 1000 - received_ms
            await batcher.submit(
                keyed.user_id,
                state.events,
                keyed.event,
                partial(manual.ack, event),
                origin=Origin(message.topic, message.partition, message.offset),
                stages_ms=stages_ms,
                consumed=state.consumed,
                context=event,
            )

    return events
