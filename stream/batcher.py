"""Async micro-batcher between the window agent and the scorer (no Faust in here).

``submit`` adds one user's new window and the event that changed it. Users wait in a pending set; several
events of one user pending at once merge into ONE prediction carrying all their event_ids and the newest
window. A batch takes the pending users (up to ``max_batch_size``) and scores them in one ``score`` call. It
is taken at once when no other batch is being scored (an idle scorer gains nothing from waiting: the users
that arrived together are all pending by then); while one is, the batch fills until ``max_batch_size`` users
are pending, ``max_wait_ms`` after the first of them arrived, or the scorer goes idle, whichever is first.
So batches are single users at low rates, and grow with the load.

Pipelining: the next batch fills while Triton scores the current one, and is scored while the current one is
emitted; up to ``max_batches_in_flight`` batches are scored at once (more than one pays where Triton has cores
or a GPU of its own). Batches are *emitted* strictly in the order they were taken, so one user's predictions
still go out in order.

Backpressure: at most ``max_batch_size`` users wait; ``submit`` for another user blocks until a batch takes
some (a user already pending merges without waiting).

This is the one retry layer. A :class:`TransientScoringError` (Triton down, model loading) or a failed
``emit`` is retried with exponential backoff until it succeeds: nothing is lost. A :class:`ScoringError`
(the model rejects the input) is not retried: the batch is split in halves until the failing windows are
found; those go to ``reject`` (the dead-letter topic) and the rest are emitted, so a poison window never
stalls its partition. Each event's ``ack`` is awaited only after its prediction (or dead letter) went out, or,
when ``emit`` says it took the acks over (the user is being guided), by whoever took them.
When the batcher stops, it scores what is pending once more; if that fails the events stay unacknowledged
(Kafka redelivers them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from stream.metrics import Metrics
from stream.schemas import Scored, ScoringError, TransientScoringError, WindowEvent

logger = logging.getLogger(__name__)

T = TypeVar("T")
Ack = Callable[[], Awaitable[object]]
#: score(windows, consumed): one result per window; consumed[i] are items never to recommend to user i
Score = Callable[[Sequence[Sequence[WindowEvent]], Sequence[Sequence[str]]], Awaitable[list[Scored]]]


@dataclass(frozen=True)
class Origin:
    """Where an event's record was read (for dead letters)."""

    topic: str
    partition: int
    offset: int


@dataclass
class PendingPrediction:
    """One user's prediction to make: the newest window and every event it accounts for.

    ``stages_ms`` describe the newest event: ingest/rekey/window come from the agent, the batcher adds
    batch_wait, triton and emit. ``context`` is the newest event's stream event, opaque here: the app makes
    the user's table writes after scoring in its partition.
    """

    user_id: str
    window: Sequence[WindowEvent]
    event_ids: list[str] = field(default_factory=list)
    newest_record_ts_ms: int = 0
    acks: list[Ack] = field(default_factory=list)
    origins: list[Origin] = field(default_factory=list)
    stages_ms: dict[str, float] = field(default_factory=dict)
    submitted_at: float = 0.0
    consumed: Sequence[str] = ()
    context: object = None

    def add(
        self,
        window: Sequence[WindowEvent],
        event: WindowEvent,
        ack: Ack,
        origin: Origin,
        stages_ms: dict[str, float],
        now: float,
        consumed: Sequence[str] = (),
        context: object = None,
    ) -> None:
        self.window = window
        self.context = context
        self.consumed = consumed
        self.event_ids.append(event.event_id)
        self.newest_record_ts_ms = max(self.newest_record_ts_ms, event.record_ts_ms)
        self.acks.append(ack)
        self.origins.append(origin)
        self.stages_ms = dict(stages_ms)
        self.submitted_at = now


#: emit(pending, scored) -> whether it took over the events' acks (the guide acks them after the guidance)
Emit = Callable[[PendingPrediction, Scored], Awaitable[bool]]
Reject = Callable[[PendingPrediction, str], Awaitable[None]]


class Stopping(Exception):
    """A retried step failed while its component stops."""


class Loop:
    """A background task fed through ``_changed``: ``start`` runs ``_run``; ``stop`` sets ``_stopping``, wakes
    the task and waits for it to finish what it has (the batcher and the guide)."""

    name = "loop"

    def __init__(self) -> None:
        self._changed = asyncio.Condition()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stopping.set()
        async with self._changed:
            self._changed.notify_all()
        await self._task
        self._task = None


class MicroBatcher(Loop):
    """Scores pending users in batches (the module docstring); ``stop`` scores what is pending (one attempt),
    emits the batches in flight, and stops."""

    name = "micro-batcher"

    def __init__(
        self,
        score: Score,
        emit: Emit,
        reject: Reject,
        metrics: Metrics,
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_batches_in_flight: int = 1,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 5.0,
    ) -> None:
        self._score = score
        self._emit = emit
        self._reject = reject
        self._metrics = metrics
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_ms / 1000
        self._in_flight = asyncio.Semaphore(max_batches_in_flight)  # batches in score calls
        # batches taken and not yet emitted: those scoring, and one emitting (a scored batch frees its scoring
        # slot at once, so the next is scored while it is emitted)
        self._unemitted = asyncio.Semaphore(max_batches_in_flight + 1)
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._pending: dict[str, PendingPrediction] = {}
        self._scoring = 0  # batches in score calls now
        self._first_pending_at = 0.0
        super().__init__()

    async def submit(
        self,
        user_id: str,
        window: Sequence[WindowEvent],
        event: WindowEvent,
        ack: Ack,
        *,
        origin: Origin,
        stages_ms: dict[str, float] | None = None,
        consumed: Sequence[str] = (),
        context: object = None,
    ) -> None:
        """Queue a prediction for ``user_id`` (blocks while ``max_batch_size`` other users are pending)."""
        loop = asyncio.get_running_loop()
        async with self._changed:
            await self._changed.wait_for(lambda: user_id in self._pending or len(self._pending) < self._max_batch_size)
            pending = self._pending.get(user_id)
            if pending is None:
                if not self._pending:
                    self._first_pending_at = loop.time()
                pending = self._pending[user_id] = PendingPrediction(user_id, window)
            pending.add(window, event, ack, origin, stages_ms or {}, loop.time(), consumed, context)
            self._changed.notify_all()

    async def _run(self) -> None:
        emitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        emitted.set_result(None)
        tasks: set[asyncio.Task[None]] = set()
        while True:
            await self._unemitted.acquire()
            await self._in_flight.acquire()  # while every slot is busy, the pending set keeps filling
            batch = await self._next_batch()
            if not batch:
                self._in_flight.release()
                self._unemitted.release()
                break
            task = asyncio.create_task(self._process(batch, emitted), name="micro-batch")
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: no "never retrieved"
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            emitted = task
        await asyncio.gather(*tasks, return_exceptions=True)  # Stopping: logged where it happened

    async def _next_batch(self) -> list[PendingPrediction]:
        """Wait until a batch is due and take it; empty when stopping with nothing pending."""
        loop = asyncio.get_running_loop()
        async with self._changed:
            await self._changed.wait_for(lambda: self._pending or self._stopping.is_set())
            while self._scoring and len(self._pending) < self._max_batch_size and not self._stopping.is_set():
                remaining_s = self._first_pending_at + self._max_wait_s - loop.time()
                if remaining_s <= 0:
                    break
                try:
                    await asyncio.wait_for(self._changed.wait(), remaining_s)
                except TimeoutError:
                    break
            batch = list(self._pending.values())  # submit keeps it at most max_batch_size
            self._pending = {}
            self._scoring += 1
            self._changed.notify_all()
            return batch

    async def _process(self, batch: list[PendingPrediction], previous: Awaitable[None]) -> None:
        """Score one batch, wait for the batch before it to be emitted, then emit (or reject) and ack."""
        loop = asyncio.get_running_loop()
        try:
            self._metrics.batch_size_users.observe(len(batch))
            started = loop.time()
            for pending in batch:
                pending.stages_ms["batch_wait"] = (started - pending.submitted_at) * 1000
            try:
                try:
                    results = await self._score_isolating(batch)
                finally:
                    self._in_flight.release()
                    async with self._changed:  # a batch filling behind this one may go now
                        self._scoring -= 1
                        self._changed.notify_all()
            except Stopping:
                with contextlib.suppress(Stopping):
                    await previous
                logger.error("stopping with %d predictions not emitted; their events stay unacked", len(batch))
                raise
            scored_at = loop.time()
            await previous  # one user's predictions go out in order
            for pending, result in zip(batch, results, strict=True):
                pending.stages_ms["triton"] = (scored_at - started) * 1000
                pending.stages_ms["emit"] = (loop.time() - scored_at) * 1000
                kept_acks = False
                if isinstance(result, Scored):
                    kept_acks = await self._retrying("emit", partial(self._emit, pending, result))
                else:
                    await self._retrying("dead letter", partial(self._reject, pending, result))
                if not kept_acks:
                    await acknowledge(pending)
        finally:
            self._unemitted.release()

    async def _score_isolating(self, batch: list[PendingPrediction]) -> list[Scored | str]:
        """Each pending's result, or the model's error for the windows it rejects (found by halving)."""
        try:
            return list(await self._retrying("score", partial(self._score_checked, batch)))
        except ScoringError as exc:
            if len(batch) == 1:
                logger.warning("the model rejected a window of %d events: %s", len(batch[0].window), exc)
                return [str(exc)]
            half = len(batch) // 2
            return [*await self._score_isolating(batch[:half]), *await self._score_isolating(batch[half:])]

    async def _score_checked(self, batch: list[PendingPrediction]) -> list[Scored]:
        scored = await self._score([p.window for p in batch], [p.consumed for p in batch])
        if len(scored) != len(batch):
            raise TransientScoringError(f"scorer answered {len(scored)} results for {len(batch)} windows")
        return scored

    async def _retrying(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        return await retrying(
            what, step, self._metrics, stopping=self._stopping, initial_s=self._retry_initial_s, max_s=self._retry_max_s
        )


async def acknowledge(pending: PendingPrediction) -> None:
    """Ack every event the prediction accounts for, once what they are owed went out."""
    for ack in pending.acks:
        try:
            await ack()
        except Exception:  # the offset stays uncommitted: the event is redelivered and replayed
            logger.exception("ack failed for a prediction")


async def retrying(
    what: str,
    step: Callable[[], Awaitable[T]],
    metrics: Metrics,
    *,
    stopping: asyncio.Event,
    initial_s: float = 0.1,
    max_s: float = 5.0,
) -> T:
    """Run ``step`` until it succeeds, with exponential backoff: the one retry layer of the worker.

    A :class:`ScoringError` that is not transient (the model rejects the input) is raised at once; anything
    else is retried. Once ``stopping`` is set, the next failure raises ``Stopping`` instead.
    """
    delay_s = initial_s
    while True:
        try:
            return await step()
        except ScoringError as exc:
            if not isinstance(exc, TransientScoringError):
                metrics.scorer_failures.labels("rejected").inc()
                raise
            failure: Exception = exc
        except Exception as exc:
            failure = exc
        metrics.scorer_failures.labels("transient").inc()
        if stopping.is_set():
            raise Stopping from failure
        logger.warning("%s failed (%r); retrying in %.1f s", what, failure, delay_s)
        with contextlib.suppress(TimeoutError):  # sleep, but wake up when stopping
            await asyncio.wait_for(stopping.wait(), delay_s)
        delay_s = min(2 * delay_s, max_s)
