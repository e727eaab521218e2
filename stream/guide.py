"""Guidance made in the worker that made the prediction (no Faust in here; :mod:`stream.app` wires it).

Every prediction the batcher emits is offered to :meth:`Guide.offer` with the window it was made from. The
decision is the policy's (:func:`stream.policy.decide`: the prediction, the window and the user's cooldown), so
it costs no model call and no Kafka hop: the prediction is not read back from the ``predictions`` topic. For
the users it will guide, the guide takes over the acks of the prediction's events and queues the user; one
background task asks the scorer to explain the queued windows (one request for up to ``max_batch_size``
users, while the next users queue), writes the cooldown, emits the guidance, and only then acks the events.
A crash before the guidance went out therefore redelivers the events, the window re-emits the prediction
(:attr:`stream.window.Outcome.replayed`), and the user is guided again: guidance is at least once, as
predictions are.

Predictions come first: the guide never slows them down. A user queued for longer than
``guidance_max_delay_s`` (:func:`stream.policy.stale`), or offered while ``guidance_max_pending_users`` are
queued, is not guided; both count in ``recstream_guidance_shed_total``, and the events are acked (their
prediction went out). When the model cannot explain a window, the guidance goes out without the evidence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from stream.batcher import Loop, PendingPrediction, Stopping, acknowledge, retrying
from stream.live import LiveFeed
from stream.metrics import Metrics
from stream.policy import Action, attribution_of, build_guidance, decide, stale
from stream.schemas import Explained, Prediction, ScoringError, WindowEvent
from stream.settings import Settings

logger = logging.getLogger(__name__)

Explain = Callable[[Sequence[Sequence[WindowEvent]]], Awaitable[list[Explained]]]
Send = Callable[[bytes, bytes], Awaitable[Any]]
#: the emitted_at of the prediction that last guided the pending's user (the cooldown table), or None
LastGuided = Callable[[PendingPrediction], float | None]
#: record that the pending's user was guided for the prediction emitted at this time
MarkGuided = Callable[[PendingPrediction, float], None]


@dataclass(frozen=True, eq=False)  # identity: one queued user
class _Queued:
    pending: PendingPrediction
    prediction: Prediction
    action: Action


class Guide(Loop):
    """Applies the policy to emitted predictions (the module docstring); ``stop`` guides the queued users (one
    attempt at explaining them) and stops."""

    name = "guide"

    def __init__(
        self,
        settings: Settings,
        explain: Explain,
        send: Send,
        last_guided: LastGuided,
        mark_guided: MarkGuided,
        metrics: Metrics,
        feed: LiveFeed,
    ) -> None:
        self._settings = settings
        self._explain = explain
        self._send = send
        self._last_guided = last_guided
        self._mark_guided = mark_guided
        self._metrics = metrics
        self._feed = feed
        self._queue: list[_Queued] = []
        self._queued_at: dict[str, float] = {}  # user -> emitted_at of the user's queued prediction
        super().__init__()

    async def offer(self, pending: PendingPrediction, prediction: Prediction) -> bool:
        """Decide for the user of an emitted prediction; True when the user will be guided (the guide then acks
        the prediction's events once the guidance went out)."""
        user_id = pending.user_id
        last = self._queued_at[user_id] if user_id in self._queued_at else self._last_guided(pending)
        action = decide(prediction, pending.window, last, self._settings)
        if action is None or not pending.window:
            return False
        if len(self._queue) >= self._settings.guidance_max_pending_users:
            self._metrics.guidance_shed.inc()
            return False
        async with self._changed:
            self._queue.append(_Queued(pending, prediction, action))
            self._queued_at[user_id] = prediction.emitted_at
            self._changed.notify_all()
        return True

    async def _run(self) -> None:
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: self._queue or self._stopping.is_set())
                batch = self._queue[: self._settings.max_batch_size]
                del self._queue[: len(batch)]
            if not batch:
                break  # stopping, nothing queued
            unacked = list(batch)  # _guide takes each user out once its events are acked
            try:
                await self._guide(unacked)
            except Stopping:
                logger.error("stopping with %d guidance not sent; their events stay unacked", len(unacked))
            except Exception:  # a bug, not the model: lose this guidance, not the worker's commits
                logger.exception("guidance failed for %d users; their events are acked without it", len(unacked))
                self._metrics.scorer_failures.labels("guidance").inc()
                for queued in unacked:
                    await acknowledge(queued.pending)
            finally:
                for queued in batch:
                    if self._queued_at.get(queued.pending.user_id) == queued.prediction.emitted_at:
                        del self._queued_at[queued.pending.user_id]

    async def _guide(self, unacked: list[_Queued]) -> None:
        """Shed the stale users, explain the others in one request, emit their guidance; each user leaves
        ``unacked`` once its events are acked."""
        read_at = time.time()
        fresh: list[_Queued] = []
        for q in list(unacked):
            if not stale(q.prediction, read_at, self._settings):
                fresh.append(q)
                continue
            self._metrics.guidance_shed.inc()
            await self._acknowledge(q, unacked)
        if not fresh:
            return
        windows = [q.pending.window for q in fresh]
        try:
            explained: list[Explained] | None = await self._retrying("explain", partial(self._explain, windows))
        except (ScoringError, Stopping) as exc:  # the model cannot explain these windows: guide without evidence
            logger.warning("explanations failed for %d users: %r", len(fresh), exc)
            explained = None
        now_s = time.time()
        for i, q in enumerate(fresh):
            window = q.pending.window
            attribution = attribution_of(window, explained[i]) if explained is not None else []
            guidance = build_guidance(q.prediction, q.action, window, attribution, now_s=now_s)
            self._mark_guided(q.pending, q.prediction.emitted_at)
            await self._retrying("guidance", partial(self._send, q.pending.user_id.encode(), guidance.to_bytes()))
            self._metrics.guidance.labels(q.action.value).inc()
            self._feed.add_guidance(guidance)
            await self._acknowledge(q, unacked)

    @staticmethod
    async def _acknowledge(queued: _Queued, unacked: list[_Queued]) -> None:
        unacked.remove(queued)
        await acknowledge(queued.pending)

    async def _retrying(self, what: str, step: Callable[[], Awaitable[Any]]) -> Any:
        return await retrying(what, step, self._metrics, stopping=self._stopping)
