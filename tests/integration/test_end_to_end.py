"""Events in over the Kafka socket, predictions, guidance and dead letters out: the whole loop, real parts."""

from __future__ import annotations

import base64
import uuid

import orjson
import pytest

from stream.schemas import EVENT_TYPES
from stream.settings import Settings
from tests.integration.support import OutputReader, WorkerProcess, produce

pytestmark = pytest.mark.integration

# MovieLens-100K ids of the shipped model: Star Wars, Empire Strikes Back, Return of the Jedi, Toy Story
ITEMS = ["50", "172", "181", "1"]


def event(user: str, item: str, ts: float | str, event_type: str = "click", **extra: object) -> bytes:
    return orjson.dumps({"user_id": user, "item_id": item, "event_type": event_type, "timestamp": ts, **extra})


def shipped_titles(settings: Settings, item_ids: list[str]) -> list[str]:
    """Titles of items in the newest version of the shipped model."""
    model_dir = settings.model_repository / settings.model_name
    newest = max((p for p in model_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    catalogue = orjson.loads((newest / "items.json").read_bytes())
    title_of = dict(zip(catalogue["item_ids"], catalogue["titles"], strict=True))
    return [title_of[item] for item in item_ids]


def accounted(messages: list[dict], wanted: set[str]) -> bool:
    return wanted <= {e for m in messages for e in m["event_ids"]}


async def test_events_become_predictions_and_guidance(worker: WorkerProcess, stack_settings: Settings) -> None:
    s = stack_settings
    run = uuid.uuid4().hex[:8]
    users = [f"u-{run}-{i}" for i in range(4)]
    records, ids = [], set()
    for u, user in enumerate(users):
        for j, item in enumerate(ITEMS):
            event_id = f"{user}-e{j}"
            ids.add(event_id)
            key = None if u == 3 else user.encode()  # the last user's events come unkeyed: repartitioned
            ts: float | str = 1_700_000_000 + 60 * j
            if j == 1:
                ts = "2023-11-14T22:14:20Z"  # ISO-8601 is accepted too (= 1_700_000_060)
            records.append(
                (
                    s.topic_clicks if j % 2 else s.topic_views,
                    key,
                    event(user, item, ts, "click" if j % 2 else "view", event_id=event_id),
                )
            )
    # an event without event_id is named topic:partition:offset
    records.append((s.topic_views, users[0].encode(), event(users[0], "100", 1_700_000_500, "view")))
    landed = await produce(s, records)
    anonymous = f"{s.topic_views}:{landed[-1].partition}:{landed[-1].offset}"
    ids.add(anonymous)

    predictions = OutputReader(s, s.topic_predictions)
    guidance = OutputReader(s, s.topic_guidance)
    try:
        mine = lambda msgs: [m for m in msgs if m["user_id"] in users]  # noqa: E731
        got = mine(await predictions.read_until(lambda msgs: accounted(mine(msgs), ids), timeout_s=120))
        guided = await guidance.read_until(lambda msgs: {m["user_id"] for m in mine(msgs)} >= set(users), timeout_s=120)
    finally:
        await predictions.close()
        await guidance.close()

    all_ids = [e for m in got for e in m["event_ids"]]
    assert sorted(all_ids) == sorted(ids), "every accepted event is in exactly one prediction"
    for prediction in got:
        assert prediction["_key"] == prediction["user_id"].encode()
        assert prediction["model"]["name"] == "recstream" and prediction["model"]["version"].isdigit()
        scores = [i["score"] for i in prediction["next_items"]]
        assert len(scores) == s.top_k and scores == sorted(scores, reverse=True)
        if prediction["window"]["events"] >= len(ITEMS):
            assert not set(ITEMS) & {i["item_id"] for i in prediction["next_items"]}, "window items left out"
        assert set(prediction["next_action"]) == set(EVENT_TYPES)
        assert sum(prediction["next_action"].values()) == pytest.approx(1.0, abs=1e-4)
        assert 1 <= prediction["window"]["events"] <= 5 and prediction["latency_ms"] >= 0
    last = max((m for m in got if m["user_id"] == users[3]), key=lambda m: m["window"]["events"])
    assert last["window"] == {"events": 4, "span_seconds": 180.0}, "unkeyed events gathered in one window"

    titles = set(shipped_titles(s, [*ITEMS, "100"]))
    for user in users:
        first = next(m for m in guided if m["user_id"] == user)
        assert first["action"] in {"recommend", "retain", "checkout"}
        assert first["items"] and first["attribution"] and first["event_ids"]
        assert any(title in first["explanation"] for title in titles), first["explanation"]
        assert sum(1 for m in guided if m["user_id"] == user) == 1, "cooldown: one guidance per user"


async def test_bad_input_goes_to_dead_letters_and_the_worker_goes_on(
    worker: WorkerProcess, stack_settings: Settings
) -> None:
    s = stack_settings
    user = f"dl-{uuid.uuid4().hex[:8]}"
    bad = [
        b"not json",
        b"\xff\xfe\x00binary",
        orjson.dumps({"user_id": user, "item_id": "1"}),  # fields missing
        orjson.dumps([1, 2, 3]),
        event(user, "1", 1_700_000_000_000),  # milliseconds by mistake
        event(user, "1", 1_700_000_000, "like"),  # unknown event type
    ]
    landed = await produce(s, [(s.topic_views, user.encode(), value) for value in bad])
    await produce(s, [(s.topic_clicks, user.encode(), event(user, "50", 1_700_000_000, event_id=f"{user}-ok"))])

    dead = OutputReader(s, s.topic_dead_letters)
    predictions = OutputReader(s, s.topic_predictions)
    try:
        coords = {(s.topic_views, m.partition, m.offset) for m in landed}
        mine = lambda msgs: [m for m in msgs if (m["topic"], m["partition"], m["offset"]) in coords]  # noqa: E731
        letters = mine(await dead.read_until(lambda msgs: len(mine(msgs)) == len(bad)))
        await predictions.read_until(lambda msgs: accounted(msgs, {f"{user}-ok"}))
    finally:
        await dead.close()
        await predictions.close()

    assert len(letters) == len(bad)
    by_offset = {m["offset"]: m for m in letters}
    for value, meta in zip(bad, landed, strict=True):
        letter = by_offset[meta.offset]
        assert letter["error"]
        raw = base64.b64decode(letter["value"]) if letter["value_encoding"] == "base64" else letter["value"].encode()
        assert raw == value, "the original bytes are kept"
    assert by_offset[landed[1].offset]["value_encoding"] == "base64"
    assert "timestamp" in by_offset[landed[4].offset]["error"]
    assert accounted(predictions.messages, {f"{user}-ok"}), "a valid event after bad ones is still predicted"


async def test_restarted_worker_resumes_its_windows(worker: WorkerProcess, stack_settings: Settings) -> None:
    s = stack_settings
    user = f"rs-{uuid.uuid4().hex[:8]}"
    first = [
        (s.topic_clicks, user.encode(), event(user, item, 1_700_000_000 + j, event_id=f"{user}-{j}"))
        for j, item in enumerate(ITEMS[:3])
    ]
    await produce(s, first)
    predictions = OutputReader(s, s.topic_predictions)
    try:
        await predictions.read_until(lambda msgs: accounted(msgs, {f"{user}-{j}" for j in range(3)}))
        worker.stop()
        # sent while the worker is down, plus a repeated event id that must be dropped
        await produce(
            s,
            [
                (s.topic_clicks, user.encode(), event(user, ITEMS[3], 1_700_000_010, event_id=f"{user}-3")),
                (s.topic_clicks, user.encode(), event(user, ITEMS[0], 1_700_000_000, event_id=f"{user}-0")),
            ],
        )
        worker.start()
        await predictions.read_until(lambda msgs: accounted(msgs, {f"{user}-3"}), timeout_s=120)
    finally:
        await predictions.close()
    after = next(m for m in predictions.messages if f"{user}-3" in m["event_ids"])
    assert after["window"]["events"] == 4, "the window kept the events from before the restart"
    ids = [e for m in predictions.messages if m["user_id"] == user for e in m["event_ids"]]
    assert ids.count(f"{user}-0") == 1, "a repeated event id is dropped"
