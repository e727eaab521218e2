"""Async micro-batcher between the window agent and the scorer (no Faust in here).

``submit`` adds one user's new window and the event that changed it. Users wait in a pending set; several
events of one user pending at once merge into ONE prediction carrying all their event_ids and the newest
window. A flush takes up to ``max_batch_size`` users, as soon as that many are pending or ``max_wait_ms``
after the first of them arrived, and scores them in one ``score`` call. Flushes run one at a time, so one
user's predictions go out in order.

Backpressure: at most ``max_batch_size`` users wait; ``submit`` for another user blocks until a flush takes
some (a user already pending merges without waiting).

Nothing is dropped: a failed ``score`` or ``emit`` is retried with exponential backoff until it succeeds.
Each event's ``ack`` callback is awaited only after its prediction was emitted. When the batcher stops, it
flushes what is pending once more; if that fails the events stay unacknowledged (Kafka redelivers them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from stream.metrics import Metrics
from stream.schemas import WindowEvent

if TYPE_CHECKING:
    from stream.triton_client import Scored

logger = logging.getLogger(__name__)

T = TypeVar("T")
Ack = Callable[[], Awaitable[object]]
Score = Callable[[Sequence[Sequence[WindowEvent]]], Awaitable[list["Scored"]]]


@dataclass
class PendingPrediction:
    """One user's prediction to make: the newest window and every event it accounts for."""

    user_id: str
    window: Sequence[WindowEvent]
    event_ids: list[str] = field(default_factory=list)
    newest_record_ts_ms: int = 0
    acks: list[Ack] = field(default_factory=list)

    def add(self, window: Sequence[WindowEvent], event: WindowEvent, ack: Ack) -> None:
        self.window = window
        self.event_ids.append(event.event_id)
        self.newest_record_ts_ms = max(self.newest_record_ts_ms, event.record_ts_ms)
        self.acks.append(ack)


Emit = Callable[[PendingPrediction, "Scored"], Awaitable[None]]


class _Stopping(Exception):
    """A retried step failed while the batcher stops."""


class MicroBatcher:
    def __init__(
        self,
        score: Score,
        emit: Emit,
        metrics: Metrics,
        *,
        max_batch_size: int,
        max_wait_ms: float,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 10.0,
    ) -> None:
        self._score = score
        self._emit = emit
        self._metrics = metrics
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_ms / 1000
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._pending: dict[str, PendingPrediction] = {}
        self._first_pending_at = 0.0
        self._changed = asyncio.Condition()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        """Flush what is pending (one attempt) and stop."""
        if self._task is None:
            return
        self._stopping.set()
        async with self._changed:
            self._changed.notify_all()
        await self._task
        self._task = None

    async def submit(self, user_id: str, window: Sequence[WindowEvent], event: WindowEvent, ack: Ack) -> None:
        """Queue a prediction for ``user_id`` (blocks while ``max_batch_size`` other users are pending)."""
        async with self._changed:
            await self._changed.wait_for(lambda: user_id in self._pending or len(self._pending) < self._max_batch_size)
            pending = self._pending.get(user_id)
            if pending is None:
                if not self._pending:
                    self._first_pending_at = asyncio.get_running_loop().time()
                pending = self._pending[user_id] = PendingPrediction(user_id, window)
            pending.add(window, event, ack)
            self._changed.notify_all()

    async def _run(self) -> None:
        while batch := await self._next_batch():
            try:
                await self._flush(batch)
            except _Stopping:
                left = len(batch) + len(self._pending)
                logger.error("stopping with %d predictions not emitted; their events stay unacked", left)
                return

    async def _next_batch(self) -> list[PendingPrediction]:
        """Wait until a batch is due and take it; empty when stopping with nothing pending."""
        loop = asyncio.get_running_loop()
        async with self._changed:
            await self._changed.wait_for(lambda: self._pending or self._stopping.is_set())
            while len(self._pending) < self._max_batch_size and not self._stopping.is_set():
                remaining_s = self._first_pending_at + self._max_wait_s - loop.time()
                if remaining_s <= 0:
                    break
                try:
                    await asyncio.wait_for(self._changed.wait(), remaining_s)
                except TimeoutError:
                    break
            batch = list(self._pending.values())  # submit keeps it at most max_batch_size
            self._pending = {}
            self._changed.notify_all()
            return batch

    async def _flush(self, batch: list[PendingPrediction]) -> None:
        self._metrics.batch_size_users.observe(len(batch))
        scored = await self._retrying("score", partial(self._score_batch, [p.window for p in batch]))
        for pending, result in zip(batch, scored, strict=True):
            await self._retrying("emit", partial(self._emit, pending, result))
            for ack in pending.acks:
                try:
                    await ack()
                except Exception:  # the offset stays uncommitted: the event is redelivered and replayed
                    logger.exception("ack failed for a prediction of user %r", pending.user_id)

    async def _score_batch(self, windows: list[Sequence[WindowEvent]]) -> list[Scored]:
        scored = await self._score(windows)
        if len(scored) != len(windows):
            raise RuntimeError(f"scorer answered {len(scored)} results for {len(windows)} windows")
        return scored

    async def _retrying(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        delay_s = self._retry_initial_s
        while True:
            try:
                return await step()
            except Exception as exc:
                self._metrics.scorer_failures.inc()
                if self._stopping.is_set():
                    raise _Stopping from exc
                logger.warning("%s failed (%r); retrying in %.1f s", what, exc, delay_s)
            with contextlib.suppress(TimeoutError):  # sleep, but wake up when stopping
                await asyncio.wait_for(self._stopping.wait(), delay_s)
            delay_s = min(2 * delay_s, self._retry_max_s)
