from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from stream.batcher import Ack, MicroBatcher, Origin, PendingPrediction
from stream.metrics import Metrics
from stream.schemas import Scored, ScoringError, WindowEvent
from tests.stream.helpers import event, scored

ORIGIN = Origin("views", 0, 0)


class FakeScorer:
    """Records each call; fails the first ``failures`` calls; waits for ``gate`` when given."""

    def __init__(self, failures: int = 0, gate: asyncio.Event | None = None) -> None:
        self.calls: list[list[Sequence[WindowEvent]]] = []
        self.failures = failures
        self.gate = gate

    async def score(self, windows: Sequence[Sequence[WindowEvent]], consumed: Sequence[Sequence[str]]) -> list[Scored]:
        self.calls.append(list(windows))
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise ConnectionError("triton down")
        return [scored() for _ in windows]


class Emitted:
    """Records predictions, dead letters and acks; takes over the acks of the users in ``keeps_acks_of``."""

    def __init__(self, keeps_acks_of: frozenset[str] = frozenset()) -> None:
        self.predictions: list[PendingPrediction] = []
        self.rejected: list[tuple[PendingPrediction, str]] = []
        self.acked: list[str] = []
        self.keeps_acks_of = keeps_acks_of

    async def emit(self, pending: PendingPrediction, result: Scored) -> bool:
        self.predictions.append(pending)
        return pending.user_id in self.keeps_acks_of

    async def reject(self, pending: PendingPrediction, error: str) -> None:
        self.rejected.append((pending, error))

    def ack(self, event_id: str) -> Ack:
        async def ack() -> None:
            out = [*self.predictions, *(p for p, _ in self.rejected)]
            assert any(event_id in p.event_ids for p in out), "acked before its prediction or dead letter"
            self.acked.append(event_id)

        return ack


def _batcher(
    scorer: FakeScorer, out: Emitted, *, max_batch_size: int = 4, max_wait_ms: float = 20, in_flight: int = 2
) -> MicroBatcher:
    return MicroBatcher(
        scorer.score,
        out.emit,
        out.reject,
        Metrics(),
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        max_batches_in_flight=in_flight,
        retry_initial_s=0.01,
    )


async def _submit(batcher: MicroBatcher, out: Emitted, user: str, event_id: str, ts: float) -> None:
    e = event(event_id, ts, record_ts_ms=int(ts))
    await batcher.submit(user, [e], e, out.ack(event_id), origin=ORIGIN, stages_ms={"ingest": 1.0})


async def _until(condition: Callable[[], object], timeout_s: float = 5.0) -> None:
    """Wait until ``condition()`` holds (a TimeoutError after ``timeout_s``)."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.001)


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


async def test_acks_that_emit_took_over_are_left_to_it() -> None:
    scorer, out = FakeScorer(), Emitted(keeps_acks_of=frozenset({"guided"}))
    batcher = _batcher(scorer, out)
    await batcher.start()
    await _submit(batcher, out, "guided", "g1", ts=1)
    await _submit(batcher, out, "plain", "p1", ts=1)
    await batcher.stop()
    assert sorted(e for p in out.predictions for e in p.event_ids) == ["g1", "p1"]
    assert out.acked == ["p1"], "the guided user's event is acked by whoever took it, not by the batcher"


async def test_flushes_when_max_batch_size_users_are_pending() -> None:
    gate = asyncio.Event()
    scorer, out = FakeScorer(gate=gate), Emitted()
    batcher = _batcher(scorer, out, max_batch_size=3, max_wait_ms=60_000)
    await batcher.start()
    await _submit(batcher, out, "u0", "e0", ts=0)
    await _until(lambda: scorer.calls)  # u0 is being scored: the next batch fills
    for user in range(1, 4):
        await _submit(batcher, out, f"u{user}", f"e{user}", ts=user)
    await _until(lambda: len(scorer.calls) >= 2)  # full: it goes long before max_wait_ms, while u0 is still scored
    assert [len(call) for call in scorer.calls] == [1, 3]
    gate.set()
    await batcher.stop()
    assert sorted(e for p in out.predictions for e in p.event_ids) == [f"e{u}" for u in range(4)]


async def test_an_idle_scorer_gets_the_pending_users_at_once() -> None:
    scorer, out = FakeScorer(), Emitted()
    batcher = _batcher(scorer, out, max_batch_size=100, max_wait_ms=60_000)
    await batcher.start()
    await _submit(batcher, out, "u1", "e1", ts=1)
    await _submit(batcher, out, "u2", "e2", ts=1)  # arrived together: one batch
    await _until(lambda: len(out.predictions) >= 2)
    assert [len(call) for call in scorer.calls] == [2]
    await batcher.stop()


async def test_while_a_batch_is_scored_the_next_fills_until_max_wait() -> None:
    gate = asyncio.Event()
    scorer, out = FakeScorer(gate=gate), Emitted()
    batcher = _batcher(scorer, out, max_batch_size=100, max_wait_ms=30)
    await batcher.start()
    loop = asyncio.get_running_loop()
    await _submit(batcher, out, "u1", "e1", ts=1)
    await _until(lambda: scorer.calls)
    started = loop.time()
    await _submit(batcher, out, "u2", "e2", ts=1)  # the scorer is busy: u2 waits for others
    await asyncio.sleep(0.01)
    await _submit(batcher, out, "u3", "e3", ts=1)
    await _until(lambda: len(scorer.calls) >= 2)
    assert loop.time() - started >= 0.03
    assert [len(call) for call in scorer.calls] == [1, 2]
    gate.set()
    await batcher.stop()
    assert sorted(e for p in out.predictions for e in p.event_ids) == ["e1", "e2", "e3"]


async def test_a_filling_batch_goes_when_the_scorer_becomes_idle() -> None:
    gate = asyncio.Event()
    scorer, out = FakeScorer(gate=gate), Emitted()
    batcher = _batcher(scorer, out, max_batch_size=100, max_wait_ms=60_000)
    await batcher.start()
    await _submit(batcher, out, "u1", "e1", ts=1)
    await _until(lambda: scorer.calls)
    await _submit(batcher, out, "u2", "e2", ts=1)
    await asyncio.sleep(0.02)
    assert len(scorer.calls) == 1, "u2 waits while the first batch is scored"
    gate.set()
    await _until(lambda: len(out.predictions) >= 2)  # long before max_wait_ms
    assert [len(call) for call in scorer.calls] == [1, 1]
    await batcher.stop()


async def test_submit_blocks_while_full_and_every_event_lands_once() -> None:
    gate = asyncio.Event()
    scorer, out = FakeScorer(gate=gate), Emitted()
    batcher = _batcher(scorer, out, max_batch_size=2, max_wait_ms=1, in_flight=1)
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
    await _until(lambda: out.acked, timeout_s)


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

    batcher = MicroBatcher(
        scorer.score, flaky_emit, out.reject, Metrics(), max_batch_size=4, max_wait_ms=1, retry_initial_s=0.01
    )
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

    async def wrong(windows: Sequence[Sequence[WindowEvent]], consumed: Sequence[Sequence[str]]) -> list[Scored]:
        calls.append(windows)
        n = answers if len(calls) == 1 else len(windows)
        return [scored()] * n

    batcher = MicroBatcher(
        wrong, out.emit, out.reject, Metrics(), max_batch_size=4, max_wait_ms=1, retry_initial_s=0.01
    )
    await batcher.start()
    await _submit(batcher, out, "u1", "e1", 1)
    await _until_acked(out)
    await batcher.stop()
    assert len(calls) == 2
    assert out.acked == ["e1"]


async def test_next_batch_is_scored_while_one_is_in_flight_and_emission_keeps_order() -> None:
    """Two batches in flight; the second is answered first, but the first is emitted first."""
    gates = [asyncio.Event(), asyncio.Event()]
    calls: list[list[str]] = []

    async def score(windows: Sequence[Sequence[WindowEvent]], consumed: Sequence[Sequence[str]]) -> list[Scored]:
        calls.append([w[-1].event_id for w in windows])
        await gates[len(calls) - 1].wait()
        return [scored() for _ in windows]

    out = Emitted()
    batcher = MicroBatcher(
        score, out.emit, out.reject, Metrics(), max_batch_size=2, max_wait_ms=1, max_batches_in_flight=2
    )
    await batcher.start()
    await _submit(batcher, out, "u1", "a", 1)
    await _submit(batcher, out, "u2", "b", 1)
    await asyncio.sleep(0.01)  # the full batch is taken
    await _submit(batcher, out, "u1", "c", 2)  # u1 again: its batch is in flight, so this goes in the next
    async with asyncio.timeout(5):
        while len(calls) < 2:
            await asyncio.sleep(0.005)
    assert calls == [["a", "b"], ["c"]], "the second batch was sent while the first was being scored"
    gates[1].set()
    await asyncio.sleep(0.05)
    assert out.predictions == [], "the second batch must not be emitted before the first"
    gates[0].set()
    await batcher.stop()
    assert [p.event_ids for p in out.predictions] == [["a"], ["b"], ["c"]]
    assert all(set(p.stages_ms) == {"ingest", "batch_wait", "triton", "emit"} for p in out.predictions)


async def test_with_one_batch_in_flight_the_next_fills_until_the_scorer_answers() -> None:
    """The default (one batch in flight): users arriving while a batch is scored wait, past max_wait_ms, and
    go to Triton together in one request as soon as it answers."""
    gate = asyncio.Event()
    calls: list[list[str]] = []

    async def score(windows: Sequence[Sequence[WindowEvent]], consumed: Sequence[Sequence[str]]) -> list[Scored]:
        calls.append([w[-1].event_id for w in windows])
        if len(calls) == 1:
            await gate.wait()
        return [scored() for _ in windows]

    out = Emitted()
    batcher = MicroBatcher(score, out.emit, out.reject, Metrics(), max_batch_size=8, max_wait_ms=1)
    await batcher.start()
    await _submit(batcher, out, "u1", "a", 1)
    await _until(lambda: calls)
    for user, event_id in (("u2", "b"), ("u3", "c"), ("u4", "d")):
        await _submit(batcher, out, user, event_id, 1)
    await asyncio.sleep(0.05)  # 50x max_wait_ms
    assert calls == [["a"]], "no second request while the first is being scored"
    gate.set()
    await _until(lambda: len(out.predictions) == 4)
    assert calls == [["a"], ["b", "c", "d"]]
    await batcher.stop()


async def test_the_next_batch_is_scored_while_the_last_is_emitted() -> None:
    """One batch in flight means one in a score call: a scored batch that is still being emitted (a slow
    producer) does not hold Triton back, and the batches still go out in order."""
    scorer = FakeScorer()
    out = Emitted()
    producer_free = asyncio.Event()
    emit = out.emit

    async def slow_emit(pending: PendingPrediction, result: Scored) -> bool:
        if pending.user_id == "u1":
            await producer_free.wait()
        return await emit(pending, result)

    out.emit = slow_emit  # type: ignore[method-assign]
    batcher = _batcher(scorer, out, max_wait_ms=1, in_flight=1)
    await batcher.start()
    await _submit(batcher, out, "u1", "a", 1)
    await _until(lambda: scorer.calls)
    await _submit(batcher, out, "u2", "b", 1)
    await _until(lambda: len(scorer.calls) == 2)  # scored while u1's prediction waits for the producer
    await asyncio.sleep(0.02)
    assert out.predictions == [], "u2's batch must not be emitted before u1's"
    producer_free.set()
    await batcher.stop()
    assert [p.event_ids for p in out.predictions] == [["a"], ["b"]]


async def test_a_window_the_model_rejects_is_isolated_and_the_rest_predicted() -> None:
    calls: list[int] = []

    async def score(windows: Sequence[Sequence[WindowEvent]], consumed: Sequence[Sequence[str]]) -> list[Scored]:
        calls.append(len(windows))
        if any(w[-1].event_id == "poison" for w in windows):
            raise ScoringError("INVALID_ARG: unknown event type")
        return [scored() for _ in windows]

    out = Emitted()
    batcher = MicroBatcher(score, out.emit, out.reject, Metrics(), max_batch_size=8, max_wait_ms=1000)
    await batcher.start()
    for user in range(7):
        await _submit(batcher, out, f"u{user}", f"e{user}", user)
    await _submit(batcher, out, "u7", "poison", 7)  # the eighth user fills the batch
    async with asyncio.timeout(5):
        while len(out.acked) < 8:
            await asyncio.sleep(0.01)
    await batcher.stop()
    assert calls[0] == 8 and len(calls) <= 1 + 2 * 3, "halving finds one bad window in log2(8) rounds"
    assert sorted(e for p in out.predictions for e in p.event_ids) == [f"e{u}" for u in range(7)]
    assert [(p.event_ids, "INVALID_ARG" in error) for p, error in out.rejected] == [(["poison"], True)]
    assert sorted(out.acked) == sorted([*(f"e{u}" for u in range(7)), "poison"])
