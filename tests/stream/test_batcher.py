from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from stream.batcher import Ack, MicroBatcher, PendingPrediction
from stream.metrics import Metrics
from stream.schemas import WindowEvent
from stream.triton_client import Scored
from tests.stream.helpers import event, scored


class FakeScorer:
    """Records each call; fails the first ``failures`` calls; waits for ``gate`` when given."""

    def __init__(self, failures: int = 0, gate: asyncio.Event | None = None) -> None:
        self.calls: list[list[Sequence[WindowEvent]]] = []
        self.failures = failures
        self.gate = gate

    async def score(self, windows: Sequence[Sequence[WindowEvent]]) -> list[Scored]:
        self.calls.append(list(windows))
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise ConnectionError("triton down")
        return [scored(list(w)) for w in windows]


class Emitted:
    def __init__(self) -> None:
        self.predictions: list[PendingPrediction] = []
        self.acked: list[str] = []

    async def emit(self, pending: PendingPrediction, result: Scored) -> None:
        assert len(result.attribution) == len(pending.window)
        self.predictions.append(pending)

    def ack(self, event_id: str) -> Ack:
        async def ack() -> None:
            assert any(event_id in p.event_ids for p in self.predictions), "acked before its prediction"
            self.acked.append(event_id)

        return ack


def _batcher(scorer: FakeScorer, out: Emitted, *, max_batch_size: int = 4, max_wait_ms: float = 20) -> MicroBatcher:
    return MicroBatcher(
        scorer.score, out.emit, Metrics(), max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, retry_initial_s=0.01
    )


async def _submit(batcher: MicroBatcher, out: Emitted, user: str, event_id: str, ts: float) -> None:
    e = event(event_id, ts, record_ts_ms=int(ts))
    await batcher.submit(user, [e], e, out.ack(event_id))


async def test_events_of_one_user_merge_into_one_prediction() -> None:
    scorer, out = FakeScorer(), Emitted()
    batcher = _batcher(scorer, out, max_wait_ms=50)
    await batcher.start()
    for i in range(3):
        await _submit(batcher, out, "u1", f"e{i}", ts=i)
    await _submit(batcher, out, "u2", "x", ts=10)
    await batcher.stop()
    assert len(scorer.calls) == 1
    by_user = {p.user_id: p for p in out.predictions}
    assert by_user["u1"].event_ids == ["e0", "e1", "e2"]
    assert [e.event_id for e in by_user["u1"].window] == ["e2"]  # the newest window
    assert by_user["u1"].newest_record_ts_ms == 2
    assert sorted(out.acked) == ["e0", "e1", "e2", "x"]


async def test_flushes_when_max_batch_size_users_are_pending() -> None:
    scorer, out = FakeScorer(), Emitted()
    batcher = _batcher(scorer, out, max_batch_size=3, max_wait_ms=60_000)
    await batcher.start()
    for user in range(7):
        await _submit(batcher, out, f"u{user}", f"e{user}", ts=user)
    async with asyncio.timeout(5):
        while len(out.predictions) < 6:
            await asyncio.sleep(0.01)
    assert [len(call) for call in scorer.calls] == [3, 3]
    await batcher.stop()  # flushes the last one
    assert [len(call) for call in scorer.calls] == [3, 3, 1]


async def test_flushes_after_max_wait() -> None:
    scorer, out = FakeScorer(), Emitted()
    batcher = _batcher(scorer, out, max_batch_size=100, max_wait_ms=30)
    await batcher.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await _submit(batcher, out, "u1", "e1", ts=1)
    async with asyncio.timeout(5):
        while not out.predictions:
            await asyncio.sleep(0.005)
    assert loop.time() - started >= 0.03
    await batcher.stop()


async def test_submit_blocks_while_full_and_every_event_lands_once() -> None:
    gate = asyncio.Event()
    scorer, out = FakeScorer(gate=gate), Emitted()
    batcher = _batcher(scorer, out, max_batch_size=2, max_wait_ms=1)
    await batcher.start()
    await _submit(batcher, out, "a", "a1", 1)
    await _submit(batcher, out, "b", "b1", 1)  # a full batch: taken by the flush, which waits on the gate
    await asyncio.sleep(0.01)
    await _submit(batcher, out, "c", "c1", 1)
    await _submit(batcher, out, "d", "d1", 1)
    await _submit(batcher, out, "c", "c2", 2)  # merges without waiting
    blocked = asyncio.create_task(_submit(batcher, out, "e", "e1", 1))
    await asyncio.sleep(0.05)
    assert not blocked.done(), "a third user must wait while two are pending"
    gate.set()
    await asyncio.wait_for(blocked, 5)
    await batcher.stop()
    emitted = [event_id for p in out.predictions for event_id in p.event_ids]
    assert sorted(emitted) == ["a1", "b1", "c1", "c2", "d1", "e1"]
    assert sorted(out.acked) == sorted(emitted)


async def _until_acked(out: Emitted, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not out.acked:
            await asyncio.sleep(0.01)


async def test_scorer_failures_are_retried_not_lost() -> None:
    scorer, out = FakeScorer(failures=3), Emitted()
    batcher = _batcher(scorer, out, max_wait_ms=1)
    await batcher.start()
    await _submit(batcher, out, "u1", "e1", 1)
    await _until_acked(out)
    await batcher.stop()
    assert len(scorer.calls) == 4
    assert [p.event_ids for p in out.predictions] == [["e1"]]


async def test_failing_emit_is_retried_and_acks_wait_for_it() -> None:
    scorer, out = FakeScorer(), Emitted()
    failures = [ConnectionError("broker")]

    async def flaky_emit(pending: PendingPrediction, result: Scored) -> None:
        if failures:
            raise failures.pop()
        await out.emit(pending, result)

    batcher = MicroBatcher(scorer.score, flaky_emit, Metrics(), max_batch_size=4, max_wait_ms=1, retry_initial_s=0.01)
    await batcher.start()
    await _submit(batcher, out, "u1", "e1", 1)
    await _until_acked(out)
    await batcher.stop()
    assert out.acked == ["e1"]
    assert len(scorer.calls) == 1


async def test_stop_while_scorer_is_down_leaves_events_unacked() -> None:
    scorer, out = FakeScorer(failures=1000), Emitted()
    batcher = _batcher(scorer, out, max_wait_ms=1)
    await batcher.start()
    await _submit(batcher, out, "u1", "e1", 1)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(batcher.stop(), 5)
    assert out.acked == []
    assert out.predictions == []


@pytest.mark.parametrize("answers", [0, 2])
async def test_scorer_answering_the_wrong_number_of_results_is_a_failure(answers: int) -> None:
    out = Emitted()
    calls = []

    async def wrong(windows: Sequence[Sequence[WindowEvent]]) -> list[Scored]:
        calls.append(windows)
        n = answers if len(calls) == 1 else len(windows)
        return [scored(list(windows[0]))] * n

    batcher = MicroBatcher(wrong, out.emit, Metrics(), max_batch_size=4, max_wait_ms=1, retry_initial_s=0.01)
    await batcher.start()
    await _submit(batcher, out, "u1", "e1", 1)
    await _until_acked(out)
    await batcher.stop()
    assert len(calls) == 2
    assert out.acked == ["e1"]
