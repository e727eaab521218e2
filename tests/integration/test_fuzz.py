"""Fuzzing through the broker: hypothesis-generated records over the Kafka socket to the real worker.

Each example is one batch of labelled records: valid ones from one family of strategies, invalid ones from
others (malformed JSON, non-UTF-8 bytes, wrong types, missing or unknown fields, unknown event types, NaN,
infinite, far-future and ancient timestamps, empty or over-long ids, JSON that is not an object, tombstones,
values over 1 MB), with odd Unicode ids and keys that are not the user. The labels come from how a record was
generated, following the rules of ``stream.schemas.InputEvent`` (required user_id/item_id/event_type/
timestamp; ids 1..256 characters after stripping whitespace; the four event types; epoch seconds in
[0, 1e11) or ISO-8601 with a zone; no other fields), never from the parser itself. The whole batch is sent,
then: every valid record is in exactly one prediction (of its user), every invalid one is in ``dead-letters``
with reason ``invalid``, an error and its original bytes, and the worker is still up and healthy.

Seed-stable: ``derandomize=True``, no example database, a fixed number of examples (``FUZZ_EXAMPLES``, default
5; docs/RELIABILITY.md has a longer run), no shrinking (a failure prints the example). Records over the broker's
limit (Kafka's default ``message.max.bytes``, 1,048,588 bytes per record batch, which noida-db enforces) never
reach the worker: the producer gets an error.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import MessageSizeTooLargeError
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from recstream.processes import http_ok
from stream.settings import Settings
from tests.integration.support import OutputReader, WorkerProcess, produce

pytestmark = pytest.mark.integration
logger = logging.getLogger(__name__)

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase")
REQUIRED = ("user_id", "item_id", "event_type", "timestamp")
FIELDS = (*REQUIRED, "event_id", "session_id", "context")
MAX_ID_CHARS = 256
#: the ``timestamp`` bound: epoch seconds below 1e11 (year 5138)
MAX_EPOCH_S = 1e11
#: a dead letter keeps this many bytes of the original value
DEAD_LETTER_VALUE_BYTES = 64 * 1024
#: "over 1 MB" and still under the broker's record limit: the worker gets these
BIG_BYTES = 1_020_000
#: over the broker's limit: refused at produce time
OVERSIZE_BYTES = 2_000_000
ITEMS = ("1", "50", "172", "181")  # items of the shipped model, beside odd ones it has never seen

FUZZ_SETTINGS = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "5")),
    derandomize=True,
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),  # a failing example against the real stack is printed, not shrunk
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


@dataclass(frozen=True)
class Record:
    """One record to send and what must come of it."""

    kind: str
    topic: str
    key: bytes | None
    value: bytes | None
    valid: bool
    user_id: str | None = None  # valid: the user its prediction names
    event_id: str | None = None  # valid: the id its prediction names; None: topic:partition:offset
    field: str | None = None  # invalid: a field the dead letter's error must name

    def __repr__(self) -> str:  # a failing example prints the batch: without megabytes of filler
        value = self.value if self.value is None or len(self.value) <= 300 else self.value[:300] + b"..."
        return f"Record({self.kind!r}, {self.topic!r}, key={self.key!r}, value={value!r})"


class Ids:
    """Makes ids unique to one batch (the worker keeps windows across examples and tests)."""

    def __init__(self, topics: tuple[str, str]) -> None:
        self.run, self.topics, self._count = uuid.uuid4().hex[:8], topics, itertools.count()

    def fresh(self) -> str:
        return f"{self.run}.{next(self._count)}"


# --- building blocks -------------------------------------------------------------------------------------

#: code points that break naive handling: NUL, controls, zero-width and direction marks, BOM, combining marks,
#: emoji with joiners, the last code point, quotes, backslashes, separators, non-ASCII whitespace
SPECIALS = (
    "\x00",
    "\x1f",
    "\x7f",
    "\u200b",
    "\u200d",
    "\u202e",
    "\ufeff",
    "\u0301",
    "\U0001f642",
    "\U0001f469",
    "\U0010ffff",
    "\u3000",
    '"',
    "\\",
    "/",
    ":",
    " ",
    "\n",
    "\u00e9",
    "\u4e2d",
    "\u0627",
)
ODD_CHAR = st.one_of(st.sampled_from(SPECIALS), st.characters(codec="utf-8"))  # any code point but surrogates
#: ASCII whitespace around an id: stripped by the parser (and by any reading of "strip whitespace")
PADS = st.sampled_from(["", " ", "\t", "  \n"])
UTC_OFFSETS = st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-23 * 60, 23 * 60))


def odd_text(max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    return st.text(alphabet=ODD_CHAR, min_size=min_size, max_size=max_size)


def iso(low: datetime, high: datetime, zoned: bool = True) -> st.SearchStrategy[str]:
    if not zoned:
        return st.datetimes(low, high).map(datetime.isoformat)
    with_offset = st.datetimes(low, high, timezones=UTC_OFFSETS).map(datetime.isoformat)
    with_z = st.datetimes(low, high).map(lambda d: d.isoformat() + "Z")
    return with_offset | with_z


VALID_TIMESTAMPS = st.one_of(
    st.integers(0, int(MAX_EPOCH_S) - 1),
    st.floats(0, MAX_EPOCH_S, exclude_max=True),
    st.floats(1e9, 2e9),  # this century, the common case
    st.floats(0, MAX_EPOCH_S, exclude_max=True).map(repr),  # numeric strings
    st.integers(0, int(MAX_EPOCH_S) - 1).map(str),
    iso(datetime(1970, 1, 2), datetime(4999, 12, 30)),
    st.sampled_from([0, 0.0, "0", "1970-01-01T00:00:00Z", MAX_EPOCH_S - 0.001]),
)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    odd_text(20),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd_text(8), inner, max_size=3),
    max_leaves=12,
)
CONTEXTS = st.dictionaries(odd_text(12), JSON_VALUES, max_size=4)


def final_user(ids: Ids, index: int, text: str) -> str:
    """A user id: odd text between ASCII ends, so that stripping cannot change it, unique to the batch."""
    return f"{ids.run}:{index}:{text}:"


@st.composite
def item_ids(draw: st.DrawFn) -> str:
    return draw(st.sampled_from(ITEMS) | odd_text(60).map(lambda t: f"i{t}."))


@st.composite
def valid_fields(draw: st.DrawFn, ids: Ids, user: str) -> tuple[dict[str, object], str | None]:
    """The JSON fields of a valid event of ``user`` and the event_id its prediction names (None: by offset)."""
    pad = draw(PADS)
    fields: dict[str, object] = {
        "user_id": pad + user + pad,
        "item_id": pad + draw(item_ids()) + pad,
        "event_type": draw(st.sampled_from(EVENT_TYPES)),
        "timestamp": draw(VALID_TIMESTAMPS),
    }
    event_id = None
    how = draw(st.sampled_from(["given", "absent", "null"]))
    if how == "given":
        event_id = f"e{draw(odd_text(40))}:{ids.fresh()}"
        fields["event_id"] = draw(PADS) + event_id + draw(PADS)
    elif how == "null":
        fields["event_id"] = None
    if draw(st.booleans()):
        fields["session_id"] = draw(st.none() | odd_text(MAX_ID_CHARS))
    if draw(st.booleans()):
        fields["context"] = draw(st.none() | CONTEXTS)
    return fields, event_id


def keys(user: str, users: list[str]) -> st.SearchStrategy[bytes | None]:
    """The user (the well-keyed case), no key, another user, or bytes that are not even UTF-8."""
    return st.one_of(
        st.just(user.encode()),
        st.none(),
        st.sampled_from(users).map(str.encode),
        st.binary(min_size=1, max_size=12),
    )


@st.composite
def valid_records(draw: st.DrawFn, ids: Ids, users: list[str], big: bool = False) -> Record:
    user = draw(st.sampled_from(users))
    fields, event_id = draw(valid_fields(ids, user))
    kind = "valid"
    if big:  # a valid event over 1 MB: the context may be large
        filler = draw(st.sampled_from(["x", "\u00e9", "\U0001f642"]))
        fields["context"] = {"blob": filler * (BIG_BYTES // len(filler.encode()))}
        kind = "valid: over 1 MB"
    topic = draw(st.sampled_from(ids.topics))
    key = draw(keys(user, users))
    return Record(kind, topic, key, orjson.dumps(fields), True, user_id=user, event_id=event_id)


# --- invalid records: each strategy breaks one rule ------------------------------------------------------


@st.composite
def bad_base(draw: st.DrawFn, ids: Ids) -> dict[str, object]:
    """Valid fields to break (the user is fresh, so nothing valid of it is expected)."""
    fields, _ = draw(valid_fields(ids, final_user(ids, 999, ids.fresh())))
    return fields


def _invalid(kind: str, value: bytes | None, field: str | None = None) -> tuple[str, bytes | None, str | None]:
    return kind, value, field


@st.composite
def malformed_json(draw: st.DrawFn, ids: Ids) -> tuple[str, bytes | None, str | None]:
    whole = orjson.dumps(draw(bad_base(ids)))
    placeholder = orjson.dumps({**draw(bad_base(ids)), "timestamp": "__TS__"})
    how = draw(st.sampled_from(["truncated", "trailing", "token", "surrogate", "empty", "garbage"]))
    if how == "truncated":  # a proper prefix of an object is never a JSON value
        return _invalid("malformed JSON: truncated", whole[: draw(st.integers(1, len(whole) - 1))])
    if how == "trailing":
        return _invalid("malformed JSON: trailing data", whole + draw(st.sampled_from([b"}", b"x", b",{}", b"\x00"])))
    if how == "token":  # what json.dumps writes for NaN and infinities: not JSON
        token = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"]))
        return _invalid("malformed JSON: non-finite number", placeholder.replace(b'"__TS__"', token))
    if how == "surrogate":  # a lone surrogate escape
        return _invalid("malformed JSON: lone surrogate", placeholder.replace(b'"__TS__"', b'"\\ud800"'))
    if how == "empty":
        return _invalid("malformed JSON: empty", b"")
    text = draw(odd_text(60).filter(lambda t: not t.lstrip().startswith("{")))
    return _invalid("not an object: text", text.encode())


@st.composite
def non_utf8(draw: st.DrawFn, ids: Ids) -> tuple[str, bytes | None, str | None]:
    bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80", b"\x80"]))
    if draw(st.booleans()):
        placeholder = orjson.dumps({**draw(bad_base(ids)), "item_id": "__ITEM__"})
        return _invalid("non-UTF-8 inside a string", placeholder.replace(b"__ITEM__", b"i" + bad + b"i"))
    return _invalid("non-UTF-8 bytes", bad + draw(st.binary(max_size=40)))


INT64 = st.integers(-(2**63), 2**63 - 1)  # orjson writes no wider integers
WRONG_TYPES: dict[str, st.SearchStrategy[object]] = {
    "user_id": st.none() | st.booleans() | INT64 | st.floats(allow_nan=False, allow_infinity=False) | st.lists(INT64),
    "item_id": st.none() | st.booleans() | INT64 | st.dictionaries(st.text(max_size=3), INT64, max_size=2),
    "event_type": st.none() | st.booleans() | INT64 | st.lists(st.sampled_from(EVENT_TYPES), min_size=1, max_size=2),
    "timestamp": st.none() | st.booleans() | st.lists(INT64, max_size=2) | st.just({"seconds": 1}),
    "event_id": st.booleans() | INT64 | st.lists(st.text(max_size=3), max_size=2),
    "session_id": st.booleans() | INT64 | st.just({}),
    "context": st.booleans() | INT64 | st.text(max_size=5) | st.lists(INT64, max_size=2),
}


@st.composite
def wrong_type(draw: st.DrawFn, ids: Ids) -> tuple[str, bytes | None, str | None]:
    field = draw(st.sampled_from(sorted(WRONG_TYPES)))
    fields = {**draw(bad_base(ids)), field: draw(WRONG_TYPES[field])}
    return _invalid(f"wrong type: {field}", orjson.dumps(fields), field)


@st.composite
def missing_fields(draw: st.DrawFn, ids: Ids) -> tuple[str, bytes | None, str | None]:
    missing = draw(st.sets(st.sampled_from(REQUIRED), min_size=1))
    fields = {k: v for k, v in draw(bad_base(ids)).items() if k not in missing}
    return _invalid("missing field", orjson.dumps(fields), sorted(missing)[0])


@st.composite
def unknown_event_type(draw: st.DrawFn, ids: Ids) -> tuple[str, bytes | None, str | None]:
    # none that any reading (stripped, case-folded) could take for one of the four
    text = draw(
        st.sampled_from(["like", "View", "CLICK", "add-to-cart", "purchased", ""])
        | odd_text(20).filter(lambda t: t.strip().casefold() not in EVENT_TYPES)
    )
    return _invalid("unknown event type", orjson.dumps({**draw(bad_base(ids)), "event_type": text}), "event_type")


BAD_TIMESTAMPS: dict[str, st.SearchStrategy[object]] = {
    "far future (milliseconds by mistake)": st.integers(1_000_000_000_000, 2_000_000_000_000),
    "far future": st.integers(int(MAX_EPOCH_S), 2**63 - 1) | st.floats(MAX_EPOCH_S, 1e300),
    "ancient (negative)": st.integers(-(10**18), -1) | st.floats(-1e300, -1e-300),
    "not finite (string)": st.sampled_from(["NaN", "nan", "inf", "-inf", "Infinity", "-Infinity"]),
    "far future (ISO-8601)": iso(datetime(5200, 1, 2), datetime(9999, 12, 30)),
    "ancient (ISO-8601)": iso(datetime(1, 1, 2), datetime(1969, 12, 30)),
    "no zone (ISO-8601)": iso(datetime(1971, 1, 1), datetime(2100, 1, 1), zoned=False),
    "not a time": st.sampled_from(["", "yesterday", "2023-13-01T00:00:00Z", "12:00", "1.2.3"]),
    "boolean": st.booleans(),
}


@st.composite
def bad_timestamp(draw: st.DrawFn, ids: Ids) -> tuple[str, bytes | None, str | None]:
    what = draw(st.sampled_from([*sorted(BAD_TIMESTAMPS), "far future (an integer wider than 64 bits)"]))
    if what in BAD_TIMESTAMPS:
        value = orjson.dumps({**draw(bad_base(ids)), "timestamp": draw(BAD_TIMESTAMPS[what])})
    else:  # valid JSON that orjson reads as a float
        digits = str(draw(st.integers(10**20, 10**40))).encode()
        value = orjson.dumps({**draw(bad_base(ids)), "timestamp": "__TS__"}).replace(b'"__TS__"', digits)
    return _invalid(f"timestamp: {what}", value, "timestamp")


@st.composite
def bad_ids(draw: st.DrawFn, ids: Ids) -> tuple[str, bytes | None, str | None]:
    field = draw(st.sampled_from(["user_id", "item_id", "event_id", "session_id"]))
    empty = st.sampled_from(["", " ", "\t\n  "])
    too_long = odd_text(40).map(lambda t: "x" * (MAX_ID_CHARS + 1) + t)  # over 256 whatever is stripped
    value = draw(too_long if field == "session_id" else empty | too_long)
    return _invalid(f"bad id: {field}", orjson.dumps({**draw(bad_base(ids)), field: value}), field)


@st.composite
def unknown_field(draw: st.DrawFn, ids: Ids) -> tuple[str, bytes | None, str | None]:
    name = draw(st.sampled_from(["userId", "ts", "extra", "price"]) | odd_text(10).filter(lambda t: t not in FIELDS))
    fields = {**draw(bad_base(ids)), name: draw(JSON_VALUES)}
    return _invalid("unknown field", orjson.dumps(fields))


@st.composite
def not_an_object(draw: st.DrawFn, ids: Ids) -> tuple[str, bytes | None, str | None]:
    value = draw(JSON_SCALARS | st.lists(st.just(draw(bad_base(ids))), max_size=2))
    return _invalid("JSON, not an object", orjson.dumps(value))


def tombstone(ids: Ids) -> st.SearchStrategy[tuple[str, bytes | None, str | None]]:
    return st.just(_invalid("tombstone (no value)", None))


@st.composite
def big_invalid(draw: st.DrawFn, ids: Ids) -> tuple[str, bytes | None, str | None]:
    """Over 1 MB and under the broker's limit: an item id of a million characters."""
    filler = draw(st.sampled_from(["y", "\u00e9"]))
    fields = {**draw(bad_base(ids)), "item_id": filler * (BIG_BYTES // len(filler.encode()))}
    return _invalid("over 1 MB: item id too long", orjson.dumps(fields), "item_id")


INVALID_FAMILIES = (
    malformed_json,
    non_utf8,
    wrong_type,
    missing_fields,
    unknown_event_type,
    bad_timestamp,
    bad_ids,
    unknown_field,
    not_an_object,
    tombstone,
)


@st.composite
def invalid_records(draw: st.DrawFn, ids: Ids, family, users: list[str]) -> Record:
    kind, value, field = draw(family(ids))
    some_key = st.binary(min_size=1, max_size=12) | st.sampled_from(users).map(str.encode)
    key = draw(some_key if value is None else st.none() | some_key)  # a tombstone needs a key (Kafka's rule)
    return Record(kind, draw(st.sampled_from(ids.topics)), key, value, False, field=field)


@st.composite
def batches(draw: st.DrawFn, ids: Ids) -> list[Record]:
    """Some users with odd ids, their valid events, at least one record of every invalid family, shuffled."""
    texts = draw(st.lists(odd_text(60), min_size=1, max_size=6))
    users = [final_user(ids, i, t) for i, t in enumerate(texts)]
    longest = f"{ids.run}:L:" + "z" * (MAX_ID_CHARS - len(ids.run) - 4) + ":"  # exactly 256 characters: valid
    users.append(longest)
    records = draw(st.lists(valid_records(ids, users), min_size=8, max_size=20))
    records.append(draw(valid_records(ids, [longest])))
    records.append(draw(valid_records(ids, users, big=True)))
    for family in (*INVALID_FAMILIES, big_invalid):
        records += draw(st.lists(invalid_records(ids, family, users), min_size=1, max_size=3))
    return draw(st.permutations(records))


# --- sending and checking --------------------------------------------------------------------------------


def original_bytes(letter: dict) -> bytes:
    if letter["value_encoding"] == "base64":
        return base64.b64decode(letter["value"])
    return letter["value"].encode()


async def _send_and_collect(s: Settings, records: list[Record]) -> tuple[list, list[dict], list[dict]]:
    landed = await produce(s, [(r.topic, r.key, r.value) for r in records])
    names = [
        r.event_id or f"{r.topic}:{m.partition}:{m.offset}" for r, m in zip(records, landed, strict=True) if r.valid
    ]
    coords = {(r.topic, m.partition, m.offset) for r, m in zip(records, landed, strict=True) if not r.valid}
    predictions = OutputReader(s, s.topic_predictions)
    dead = OutputReader(s, s.topic_dead_letters)
    try:
        await predictions.read_until(lambda ms: set(names) <= {e for m in ms for e in m["event_ids"]}, timeout_s=90)
        await dead.read_until(lambda ms: coords <= {(m["topic"], m["partition"], m["offset"]) for m in ms}, 60)
    finally:
        await predictions.close()
        await dead.close()
    return landed, predictions.messages, dead.messages


@FUZZ_SETTINGS
@given(data=st.data())
def test_fuzzed_records_are_predicted_or_dead_lettered(
    worker: WorkerProcess, stack_settings: Settings, data: st.DataObject
) -> None:
    s = stack_settings
    records = data.draw(batches(Ids((s.topic_views, s.topic_clicks))), label="records")
    landed, predictions, letters = asyncio.run(_send_and_collect(s, records))
    logger.info(
        "fuzz batch: %d records, %d valid, %d invalid, %d over 1 MB",
        len(records),
        sum(r.valid for r in records),
        sum(not r.valid for r in records),
        sum(len(r.value or b"") >= BIG_BYTES for r in records),
    )

    by_event: dict[str, list[dict]] = {}
    for prediction in predictions:
        for event_id in prediction["event_ids"]:
            by_event.setdefault(event_id, []).append(prediction)
    by_coords = {(m["topic"], m["partition"], m["offset"]): m for m in letters}
    for record, meta in zip(records, landed, strict=True):
        coords = (record.topic, meta.partition, meta.offset)
        where = f"{record.kind} record at {coords}: {(record.value or b'')[:300]!r}"
        if record.valid:
            name = record.event_id or f"{record.topic}:{meta.partition}:{meta.offset}"
            found = by_event.get(name, [])
            assert len(found) == 1, f"{where}: in {len(found)} predictions, not exactly one"
            assert found[0]["user_id"] == record.user_id, where
            assert found[0]["_key"] == record.user_id.encode(), where
            assert coords not in by_coords, f"{where}: valid, yet dead-lettered: {by_coords[coords]['error']}"
            continue
        assert coords in by_coords, f"{where}: invalid, yet in no dead letter"
        assert f"{record.topic}:{meta.partition}:{meta.offset}" not in by_event, f"{where}: invalid, yet predicted"
        letter = by_coords[coords]
        assert letter["reason"] == "invalid" and letter["error"], where
        assert letter["event_ids"] == [], where
        if record.field is not None and not record.kind.startswith("over"):
            assert record.field in letter["error"], f"{where}: error does not name {record.field}: {letter['error']}"
        value = record.value or b""
        try:
            value.decode("utf-8")
            assert letter["value_encoding"] == "utf-8", where
        except UnicodeDecodeError:
            assert letter["value_encoding"] == "base64", where
        kept = original_bytes(letter)
        if len(value) <= DEAD_LETTER_VALUE_BYTES:
            assert kept == value, f"{where}: the original bytes are kept"
        else:
            assert value.startswith(kept) and len(kept) >= DEAD_LETTER_VALUE_BYTES - 3, where
            assert "cut" in letter["error"], where
        expected_key = None if record.key is None else record.key.decode("utf-8", errors="backslashreplace")
        assert letter["key"] == expected_key, where

    assert worker.proc.poll() is None, "the worker never stops"
    assert http_ok(f"http://127.0.0.1:{s.web_port}/health"), "and stays healthy"


async def _end_offsets(s: Settings, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=s.bootstrap_servers)
    await consumer.start()
    try:
        return await consumer.end_offsets([TopicPartition(topic, p) for p in range(s.partitions)])
    finally:
        await consumer.stop()


async def test_records_over_the_broker_limit_are_refused_at_produce_time(
    worker: WorkerProcess, stack_settings: Settings
) -> None:
    """What a user meets: the producer's send fails (with aiokafka's default limit, in the client; with the
    limit raised, the broker answers MESSAGE_TOO_LARGE); nothing is appended, so the worker never sees it."""
    s = stack_settings
    user = f"big-{uuid.uuid4().hex[:8]}"
    fields = {"user_id": user, "item_id": "50", "event_type": "view", "timestamp": 1_700_000_000}
    oversize = orjson.dumps({**fields, "event_id": f"{user}-big", "context": {"blob": "x" * OVERSIZE_BYTES}})
    before = await _end_offsets(s, s.topic_views)

    default = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers)
    raised = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, max_request_size=8 * OVERSIZE_BYTES)
    await default.start()
    await raised.start()
    try:
        with pytest.raises(MessageSizeTooLargeError):  # refused in the client: over max_request_size
            await default.send_and_wait(s.topic_views, oversize, key=user.encode())
        with pytest.raises(MessageSizeTooLargeError):  # refused by the broker
            await raised.send_and_wait(s.topic_views, oversize, key=user.encode())
    finally:
        await default.stop()
        await raised.stop()
    assert await _end_offsets(s, s.topic_views) == before, "nothing was appended"

    # the same user's next (small) event goes through, and nothing of the refused one ever comes out
    await produce(s, [(s.topic_views, user.encode(), orjson.dumps({**fields, "event_id": f"{user}-ok"}))])
    predictions = OutputReader(s, s.topic_predictions)
    dead = OutputReader(s, s.topic_dead_letters)
    try:
        got = await predictions.read_until(lambda ms: any(f"{user}-ok" in m["event_ids"] for m in ms))
        letters = await dead.read_until(lambda ms: False, timeout_s=1)
    finally:
        await predictions.close()
        await dead.close()
    mine = [m for m in got if m["user_id"] == user]
    assert [m["event_ids"] for m in mine] == [[f"{user}-ok"]]
    assert mine[0]["window"]["events"] == 1, "the refused event never reached the window"
    assert not [m for m in letters if m["key"] == user], "nor the dead letters"
    assert worker.proc.poll() is None
