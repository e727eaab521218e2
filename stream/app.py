"""The Faust worker: the one place that builds topics, tables, agents, the batcher and the web endpoints.

Data flow (docs/architecture.md): ``views``/``clicks`` -> ingest agent -> ``topic_events`` (keyed by user_id)
-> window agent (``windows`` table) -> micro-batcher -> scorer -> ``predictions`` -> policy agent
(``guidance-cooldown`` table) -> ``guidance``. Bad input goes to ``dead-letters``.

Acking: the window agent iterates a ``noack`` stream and acks each event only after the prediction that
accounts for it was produced (the consumer flushes the producer before it commits offsets), so a crash
between the window update and the prediction redelivers the event, and the window logic re-emits it
(see :mod:`stream.window`). Delivery is at least once: after a crash an event_id can be in two predictions.

The worker never declares topics: ``topic_names`` lists every topic with its partition count (the tables'
changelog topics included) for the launcher to create before the worker starts. ``python -m stream.app``
runs a worker configured from ``RECSTREAM_*`` environment variables.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Any

import faust
from faust.web import Request, Response, View
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST

from stream.batcher import MicroBatcher, PendingPrediction
from stream.ingest import parse_record
from stream.metrics import Metrics
from stream.outputs import build_prediction
from stream.policy import decide
from stream.schemas import DeadLetter, KeyedEvent, Prediction
from stream.settings import Settings
from stream.triton_client import Scored, TritonScorer
from stream.window import Outcome, UserWindow, apply_event

logger = logging.getLogger(__name__)

WINDOWS_TABLE = "windows"
COOLDOWN_TABLE = "guidance-cooldown"
#: Producer acks: wait for all in-sync replicas.
PRODUCER_ACKS = -1
#: How long /health waits for ``scorer.ready()``.
READY_TIMEOUT_S = 2.0

_RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


def topic_names(settings: Settings) -> dict[str, int]:
    """Every topic the worker reads or writes, with its partition count (create them all before starting)."""
    names = [
        settings.topic_views,
        settings.topic_clicks,
        settings.topic_events,
        settings.topic_predictions,
        settings.topic_guidance,
        settings.topic_dead_letters,
        # table changelogs (should be compacted where the broker supports it)
        f"{settings.app_id}-{WINDOWS_TABLE}-changelog",
        f"{settings.app_id}-{COOLDOWN_TABLE}-changelog",
    ]
    return dict.fromkeys(names, settings.partitions)


class _Scoring(Service):
    """Starts and stops the scorer and the batcher with the app (after table recovery, before shutdown)."""

    def __init__(self, scorer: TritonScorer, batcher: MicroBatcher) -> None:
        super().__init__()
        self._scorer = scorer
        self._batcher = batcher

    async def on_start(self) -> None:
        await self._scorer.start()
        await self._batcher.start()

    async def on_stop(self) -> None:
        await self._batcher.stop()
        await self._scorer.stop()


def _record_ts_ms(message: Any) -> int:
    """Kafka record timestamp in ms (Faust gives seconds); now when the record has none."""
    timestamp_s = message.timestamp
    return round(timestamp_s * 1000) if timestamp_s and timestamp_s > 0 else round(time.time() * 1000)


def build_app(settings: Settings, scorer: TritonScorer | None = None) -> faust.App:
    scorer = scorer if scorer is not None else TritonScorer(settings)
    metrics = Metrics()
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap_servers}",
        store="rocksdb://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_allow_declare=False,
        topic_disable_leader=True,
        producer_acks=PRODUCER_ACKS,
        web_port=settings.web_port,
        autodiscover=False,
        # tansu (memory storage) answers ListOffsets(latest) with the base offset of the last record batch, below
        # the true end offset, so a restarted worker's persisted changelog offset looks "ahead" of the topic.
        # Stale state from a vanished cluster is wiped by the launcher instead (recstream.topics).
        recovery_consistency_check=False,
    )
    inputs = app.topic(settings.topic_views, settings.topic_clicks, **_RAW)
    events = app.topic(settings.topic_events, **_RAW)
    predictions = app.topic(settings.topic_predictions, **_RAW)
    guidance = app.topic(settings.topic_guidance, **_RAW)
    dead_letters = app.topic(settings.topic_dead_letters, **_RAW)
    windows = app.Table(WINDOWS_TABLE, partitions=settings.partitions, help="user_id -> UserWindow.to_json()")
    cooldown = app.Table(COOLDOWN_TABLE, partitions=settings.partitions, help="user_id -> last guidance time")

    async def emit(pending: PendingPrediction, scored: Scored) -> None:
        prediction = build_prediction(pending, scored, top_k=settings.top_k, now_s=time.time())
        await predictions.send(key=prediction.user_id.encode(), value=prediction.to_bytes())
        metrics.predictions.inc()
        metrics.latency_ms.observe(prediction.latency_ms)

    batcher = MicroBatcher(
        scorer.score, emit, metrics, max_batch_size=settings.max_batch_size, max_wait_ms=settings.max_wait_ms
    )
    app.service(_Scoring(scorer, batcher))  # an instance: Faust starts it as is, after table recovery

    @app.agent(inputs)
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            metrics.events_in.labels(message.topic).inc()
            result = parse_record(
                event.value,
                event.key,
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                record_ts_ms=_record_ts_ms(message),
                now_s=time.time(),
            )
            if isinstance(result, DeadLetter):
                metrics.dead_letters.inc()
                logger.info("dead letter %s:%d:%d: %s", result.topic, result.partition, result.offset, result.error)
                await dead_letters.send(key=event.key, value=result.to_bytes())
            else:
                await events.send(key=result.user_id.encode(), value=result.to_bytes())

    @app.agent(events)
    async def window(stream: faust.StreamT[bytes]) -> None:
        manual = stream.noack()
        async for event in manual.events():
            keyed = KeyedEvent.model_validate_json(event.value)
            state, outcome = apply_event(
                UserWindow.from_json(windows.get(keyed.user_id)),
                keyed.event,
                event.message.offset,
                max_events=settings.window_max_events,
                max_age_s=settings.window_max_age_s,
            )
            if outcome is Outcome.duplicate:
                metrics.duplicates.inc()
                await manual.ack(event)
                continue
            if outcome is Outcome.added:
                windows[keyed.user_id] = state.to_json()
            await batcher.submit(keyed.user_id, state.events, keyed.event, partial(manual.ack, event))

    @app.agent(predictions)
    async def policy(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            prediction = Prediction.model_validate_json(value)
            user_id = prediction.user_id
            decision = decide(
                prediction,
                UserWindow.from_json(windows.get(user_id)).events,
                cooldown.get(user_id),
                settings,
                now_s=time.time(),
            )
            if decision is not None:
                cooldown[user_id] = prediction.emitted_at
                await guidance.send(key=user_id.encode(), value=decision.to_bytes())
                metrics.guidance.labels(decision.action).inc()

    async def not_ready_reason() -> str | None:
        if app.rebalancing or not app.consumer.assignment():
            return "waiting for partition assignment"
        if not app.tables.recovery.completed.is_set():
            return "recovering tables"
        try:
            ready = await asyncio.wait_for(scorer.ready(), READY_TIMEOUT_S)
        except Exception as exc:
            return f"scorer readiness check failed: {exc!r}"
        return None if ready else "scorer not ready"

    @app.page("/health")
    async def health(web: View, request: Request) -> Response:
        reason = await not_ready_reason()
        if reason is not None:
            return web.json({"status": "unavailable", "reason": reason}, status=503)
        return web.json({"status": "ok"})

    @app.page("/metrics")
    async def prometheus(web: View, request: Request) -> Response:
        return web.bytes(metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return app


def run_worker(settings: Settings, scorer: TritonScorer | None = None, loglevel: str = "INFO") -> None:
    """Run a worker in this process until it is stopped (SIGINT/SIGTERM); raises ``SystemExit``."""
    faust.Worker(build_app(settings, scorer), loglevel=loglevel).execute_from_commandline()


if __name__ == "__main__":
    run_worker(Settings())
