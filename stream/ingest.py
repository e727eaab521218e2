"""Turn one raw ``views``/``clicks`` record into a :class:`KeyedEvent`, or a :class:`DeadLetter` when it is bad.

Never raises on any input value: anything that is not a JSON object valid as :class:`InputEvent` becomes a
dead letter. A dead letter keeps the original bytes as UTF-8 text, or base64 when they are not UTF-8, cut to
``MAX_DEAD_LETTER_VALUE_BYTES`` so that it always fits in one Kafka message.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from aiokafka.partitioner import murmur2

from stream.schemas import DeadLetter, InputEvent, KeyedEvent, WindowEvent, model_context

#: Dead letters keep at most this many bytes of the original value (escaped JSON can be 6x the size).
MAX_DEAD_LETTER_VALUE_BYTES = 64 * 1024
#: Error texts are cut to this many characters.
MAX_ERROR_CHARS = 2000


def parse_record(
    value: bytes | None,
    key: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    record_ts_ms: int,
    now_s: float,
) -> KeyedEvent | DeadLetter:
    """Validate a record value; the event_id defaults to ``topic:partition:offset``."""
    try:
        if value is None:
            raise ValueError("record has no value (tombstone)")
        event = InputEvent.from_bytes(value)
    except ValueError as exc:  # orjson.JSONDecodeError and pydantic.ValidationError are ValueErrors
        return dead_letter(
            value or b"", key, error=str(exc), topic=topic, partition=partition, offset=offset, now_s=now_s
        )
    return KeyedEvent(
        user_id=event.user_id,
        event=WindowEvent(
            event_id=event.event_id or f"{topic}:{partition}:{offset}",
            item_id=event.item_id,
            event_type=event.event_type,
            timestamp=event.timestamp,
            record_ts_ms=record_ts_ms,
            context=model_context(event.context),
        ),
    )


def home_partition(user_id: str, partitions: int) -> int:
    """The partition that Kafka's default partitioner gives a record keyed by ``user_id``.

    murmur2, as the Java client, aiokafka and Faust's producer use. A record already there is processed where
    it is read; any other (unkeyed, keyed otherwise, or placed by librdkafka's default CRC32 partitioner) is
    re-keyed through the internal topic, as Kafka Streams repartitions only when the key changed.
    """
    return (murmur2(user_id.encode()) & 0x7FFFFFFF) % partitions


def dead_letter(
    value: bytes,
    key: bytes | None,
    *,
    error: str,
    topic: str,
    partition: int,
    offset: int,
    now_s: float,
    reason: str = "invalid",
    event_ids: Sequence[str] = (),
) -> DeadLetter:
    error = error[:MAX_ERROR_CHARS]
    if len(value) > MAX_DEAD_LETTER_VALUE_BYTES:
        error = f"{error} [value cut to {MAX_DEAD_LETTER_VALUE_BYTES} of {len(value)} bytes]"
    kept = value[:MAX_DEAD_LETTER_VALUE_BYTES]
    try:
        value.decode("utf-8")
        text, encoding = kept.decode("utf-8", errors="ignore"), "utf-8"  # "ignore": a cut may split a char
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(kept).decode("ascii"), "base64"
    return DeadLetter(
        reason=reason,
        event_ids=list(event_ids),
        topic=topic,
        partition=partition,
        offset=offset,
        error=error,
        value=text,
        value_encoding=encoding,
        key=None if key is None else key.decode("utf-8", errors="backslashreplace"),
        received_at=now_s,
    )
