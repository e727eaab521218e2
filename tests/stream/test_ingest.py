from __future__ import annotations

import base64

import orjson
import pytest

from stream.ingest import MAX_DEAD_LETTER_VALUE_BYTES, parse_record
from stream.schemas import DeadLetter, KeyedEvent

WHERE = {"topic": "views", "partition": 2, "offset": 41, "record_ts_ms": 1_700_000_000_123, "now_s": 1.0}
GOOD = {"user_id": "u1", "item_id": "i1", "event_type": "view", "timestamp": 1_700_000_000}


def _parse(value: bytes | None, key: bytes | None = None) -> KeyedEvent | DeadLetter:
    return parse_record(value, key, **WHERE)


def test_good_event_is_keyed_by_user_with_default_event_id() -> None:
    result = _parse(orjson.dumps(GOOD), key=b"anything")
    assert isinstance(result, KeyedEvent)
    assert result.user_id == "u1"
    assert result.event.event_id == "views:2:41"
    assert result.event.record_ts_ms == WHERE["record_ts_ms"]
    assert result.event.timestamp == 1_700_000_000


def test_event_id_and_iso_timestamp() -> None:
    result = _parse(orjson.dumps(GOOD | {"event_id": "e-9", "timestamp": "2023-11-14T22:13:20Z"}))
    assert isinstance(result, KeyedEvent)
    assert result.event.event_id == "e-9"
    assert result.event.timestamp == 1_700_000_000


def test_the_context_a_model_reads_is_kept_with_the_event() -> None:
    context = {"device": "tv", "age": 25, "tags": ["a", "b"], "blob": "x" * 1000}
    result = _parse(orjson.dumps(GOOD | {"context": context}))
    assert isinstance(result, KeyedEvent)
    assert result.event.context == {"age": "25", "device": "tv"}  # lists and long texts are allowed, not kept
    assert KeyedEvent.model_validate_json(result.to_bytes()) == result  # through the internal topic unchanged


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"[1, 2]",
        b'"a string"',
        b"null",
        orjson.dumps({k: v for k, v in GOOD.items() if k != "user_id"}),
        orjson.dumps(GOOD | {"timestamp": 1_700_000_000_000}),  # milliseconds
        orjson.dumps(GOOD | {"timestamp": "2023-11-14T22:13:20"}),  # no time zone
        orjson.dumps(GOOD | {"timestamp": True}),
        orjson.dumps(GOOD | {"event_type": "like"}),
        orjson.dumps(GOOD | {"user_id": 5}),
        orjson.dumps(GOOD | {"surprise": 1}),
        orjson.dumps(GOOD | {"user_id": "u" * 10_000}),
        b"[" * 5000,
    ],
)
def test_bad_values_become_utf8_dead_letters(value: bytes) -> None:
    result = _parse(value, key=b"k")
    assert isinstance(result, DeadLetter)
    assert (result.topic, result.partition, result.offset, result.key) == ("views", 2, 41, "k")
    assert result.value_encoding == "utf-8"
    assert result.value == value.decode()[:MAX_DEAD_LETTER_VALUE_BYTES]
    assert result.error


def test_non_utf8_value_is_kept_as_base64() -> None:
    value = b"\xff\xfe" + orjson.dumps(GOOD)
    result = _parse(value, key=b"\xff")
    assert isinstance(result, DeadLetter)
    assert result.value_encoding == "base64"
    assert base64.b64decode(result.value) == value
    assert result.key == "\\xff"


def test_tombstone_and_huge_values_are_dead_letters_that_fit_a_message() -> None:
    assert isinstance(_parse(None), DeadLetter)
    huge = _parse(b"\x01" * (10 * MAX_DEAD_LETTER_VALUE_BYTES))
    assert isinstance(huge, DeadLetter)
    assert len(huge.to_bytes()) < 1_000_000
    assert "value cut to" in huge.error
