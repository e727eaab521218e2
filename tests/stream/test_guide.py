"""The guide with fakes for the scorer, the guidance topic and the cooldown table."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import orjson
import pytest

from stream.batcher import Ack, PendingPrediction
from stream.guide import Guide
from stream.live import LiveFeed
from stream.metrics import Metrics
from stream.outputs import build_prediction
from stream.schemas import EventType, Explained, Prediction, ScoringError, WindowEvent
from stream.settings import Settings
from tests.stream.helpers import MODEL, event, scored

SETTINGS = Settings(guidance_cooldown_s=300, guidance_max_delay_s=30, recommend_min_score=0.05, max_batch_size=8)
WINDOW = [event("1", 1, "i1"), event("2", 2, "i2", EventType.click)]


class Fakes:
    """Explains windows (optionally failing or waiting for ``gate``), records guidance, cooldown and acks."""

    def __init__(self, fail: bool = False, gate: asyncio.Event | None = None, garbled: bool = False) -> None:
        self.fail = fail
        self.garbled = garbled  # an explanation that does not fit its window: a bug, not a model error
        self.gate = gate
        self.explain_calls: list[int] = []
        self.sent: list[dict] = []
        self.cooldown: dict[str, float] = {}
        self.acked: list[str] = []

    async def explain(self, windows: Sequence[Sequence[WindowEvent]]) -> list[Explained]:
        self.explain_calls.append(len(windows))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ScoringError("the model cannot explain")
        extra = 1 if self.garbled else 0
        return [
            Explained(MODEL, [0.1 * (i + 1) for i in range(len(w) + extra)], [f"T{e.item_id}" for e in w])
            for w in windows
        ]

    async def send(self, key: bytes, value: bytes) -> None:
        self.sent.append({"_key": key, **orjson.loads(value)})

    def last_guided(self, pending: PendingPrediction) -> float | None:
        return self.cooldown.get(pending.user_id)

    def mark_guided(self, pending: PendingPrediction, emitted_at: float) -> None:
        self.cooldown[pending.user_id] = emitted_at

    def ack(self, user_id: str) -> Ack:
        async def ack() -> None:
            guided = user_id in {g["user_id"] for g in self.sent}
            assert guided or user_id.startswith("shed") or self.garbled, "acked before guidance"
            self.acked.append(user_id)

        return ack


def _guide(fakes: Fakes, metrics: Metrics, settings: Settings = SETTINGS) -> Guide:
    return Guide(settings, fakes.explain, fakes.send, fakes.last_guided, fakes.mark_guided, metrics, LiveFeed(metrics))


def _offer_args(fakes: Fakes, user_id: str, emitted_at: float | None = None) -> tuple[PendingPrediction, Prediction]:
    pending = PendingPrediction(user_id, WINDOW, event_ids=["2"], acks=[fakes.ack(user_id)])
    prediction = build_prediction(pending, scored(), top_k=10, now_s=time.time() if emitted_at is None else emitted_at)
    return pending, prediction


async def test_a_guided_user_gets_guidance_with_its_explanation_and_then_the_acks() -> None:
    fakes, metrics = Fakes(), Metrics()
    guide = _guide(fakes, metrics)
    await guide.start()
    assert await guide.offer(*_offer_args(fakes, "u1"))
    await guide.stop()
    [guidance] = fakes.sent
    assert guidance["_key"] == b"u1" and guidance["action"] == "recommend"
    assert [a["item_id"] for a in guidance["attribution"]] == ["i2", "i1"], "heaviest first"
    assert "clicked Ti2" in guidance["explanation"]
    assert fakes.acked == ["u1"] and "u1" in fakes.cooldown


async def test_cooldown_and_a_queued_guidance_stop_a_second_one() -> None:
    gate = asyncio.Event()
    fakes, metrics = Fakes(gate=gate), Metrics()
    guide = _guide(fakes, metrics)
    await guide.start()
    fakes.cooldown["cooled"] = time.time() - 10
    assert not await guide.offer(*_offer_args(fakes, "cooled")), "guided 10 s ago, cooldown 300 s"
    assert await guide.offer(*_offer_args(fakes, "u1"))
    assert not await guide.offer(*_offer_args(fakes, "u1")), "u1 is queued: its guidance is on the way"
    gate.set()
    await guide.stop()
    assert [g["user_id"] for g in fakes.sent] == ["u1"]


async def test_users_queued_while_one_is_explained_go_in_one_request() -> None:
    gate = asyncio.Event()
    fakes, metrics = Fakes(gate=gate), Metrics()
    guide = _guide(fakes, metrics)
    await guide.start()
    assert await guide.offer(*_offer_args(fakes, "first"))
    async with asyncio.timeout(5):
        while not fakes.explain_calls:
            await asyncio.sleep(0.001)
    for i in range(5):
        assert await guide.offer(*_offer_args(fakes, f"u{i}"))
    gate.set()
    await guide.stop()
    assert fakes.explain_calls == [1, 5]
    assert sorted(fakes.acked) == sorted(["first", *(f"u{i}" for i in range(5))])


async def test_without_an_explanation_the_guidance_still_goes_out() -> None:
    fakes, metrics = Fakes(fail=True), Metrics()
    guide = _guide(fakes, metrics)
    await guide.start()
    assert await guide.offer(*_offer_args(fakes, "u1"))
    await guide.stop()
    [guidance] = fakes.sent
    assert guidance["attribution"] == [] and "because you recently browsed" in guidance["explanation"]
    assert fakes.acked == ["u1"]


@pytest.mark.parametrize("late", [True, False])
async def test_a_user_waiting_too_long_or_too_many_waiting_is_shed(late: bool) -> None:
    fakes, metrics = Fakes(), Metrics()
    guide = _guide(fakes, metrics, SETTINGS.model_copy(update={"guidance_max_pending_users": 1}))
    if late:  # queued, but explained 31 s after its prediction: shed, its events acked
        assert await guide.offer(*_offer_args(fakes, "shed-late", emitted_at=time.time() - 31))
    else:  # the guide is not running: the first waits, the second is beyond the bound
        assert await guide.offer(*_offer_args(fakes, "waiting"))
        assert not await guide.offer(*_offer_args(fakes, "shed-full"))
    await guide.start()
    await guide.stop()
    assert metrics.guidance_shed._value.get() == 1
    assert [g["user_id"] for g in fakes.sent] == ([] if late else ["waiting"])
    assert fakes.acked == (["shed-late"] if late else ["waiting"])


async def test_a_bug_loses_the_guidance_but_acks_the_events_once() -> None:
    fakes, metrics = Fakes(garbled=True), Metrics()
    guide = _guide(fakes, metrics)
    await guide.start()
    assert await guide.offer(*_offer_args(fakes, "u1"))
    assert await guide.offer(*_offer_args(fakes, "u2"))
    await guide.stop()
    assert fakes.sent == []
    assert sorted(fakes.acked) == ["u1", "u2"], "acked once each: the commits go on"
    assert metrics.scorer_failures.labels("guidance")._value.get() == 1
