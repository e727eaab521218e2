"""The Faust worker: the one place that builds the parts (topics, tables, scorer, batcher, agents, views).

Data flow (docs/architecture.md): ``views``/``clicks`` -> events agent (``windows`` table; records not in
their user's partition re-keyed through ``recstream-events`` first) -> micro-batcher -> scorer ->
``predictions``, and for the users the policy guides, the guide (``guidance-cooldown`` table, explanations) ->
``guidance``. Bad input goes to ``dead-letters``. The agent is in :mod:`stream.agents`, the web views in
:mod:`stream.views`, every name in :mod:`stream.names`. ``python -m stream.app`` runs a worker configured from
``RECSTREAM_*`` variables.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import faust
from faust import streams as faust_streams
from mode import Service

from stream import kafka
from stream.agents import Outputs, events_agent
from stream.batcher import MicroBatcher, PendingPrediction
from stream.guide import Guide
from stream.ingest import dead_letter
from stream.live import LiveFeed
from stream.metrics import Metrics
from stream.names import COOLDOWN_TABLE, WINDOWS_TABLE, input_topics
from stream.outputs import build_prediction
from stream.schemas import Scored, Scorer
from stream.settings import Settings
from stream.triton_client import TritonScorer
from stream.views import add_views

logger = logging.getLogger(__name__)

#: Producer acks: wait for all in-sync replicas.
PRODUCER_ACKS = -1
#: How often the lag and table-size gauges are sampled (counting a table's keys reads its local store).
METRICS_INTERVAL_S = 10.0

_RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


def default_instance_id(settings: Settings) -> str:
    """Stable across restarts of one worker (its host and its state folder), distinct for two workers."""
    folder = hashlib.sha256(str(settings.data_dir.resolve()).encode()).hexdigest()[:12]
    return f"{settings.app_id}-{socket.gethostname()}-{folder}"


class _Scoring(Service):
    """Starts and stops the scorer, the guide and the batcher with the app (after table recovery, before
    shutdown): the batcher stops first, so that the guide still takes its last predictions."""

    def __init__(self, scorer: Scorer, guide: Guide, batcher: MicroBatcher) -> None:
        super().__init__()
        self._scorer = scorer
        self._guide = guide
        self._batcher = batcher

    async def on_start(self) -> None:
        await self._scorer.start()
        await self._guide.start()
        await self._batcher.start()

    async def on_stop(self) -> None:
        await self._batcher.stop()
        await self._guide.stop()
        await self._scorer.stop()


@contextmanager
def as_of(pending: PendingPrediction) -> Iterator[None]:
    """Table access for a pending prediction's user after scoring, outside the agent: Faust's tables and RocksDB
    stores pick the partition from the current event (a context variable), so set it to the user's newest
    event (every event of a user reaches the window in the user's partition). Only the calling task's context
    changes."""
    token = faust_streams._current_event.set(weakref.ref(pending.context))
    try:
        yield
    finally:
        faust_streams._current_event.reset(token)


def build_app(settings: Settings, scorer: Scorer | None = None) -> faust.App:
    metrics = Metrics()
    scorer = scorer if scorer is not None else TritonScorer(settings, metrics)
    app = faust.App(
        settings.app_id,
        broker=f"recstream://{settings.bootstrap_servers}",  # stream.kafka: the fetch wait is a setting
        store="rocksdb://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_allow_declare=False,
        topic_disable_leader=True,
        producer_acks=PRODUCER_ACKS,
        producer_linger=settings.producer_linger_ms / 1000,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.session_timeout_s / 4,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        consumer_group_instance_id=settings.group_instance_id or default_instance_id(settings),
        web_bind=settings.web_host,
        web_port=settings.web_port,
        # Faust's own views would show any user's window (/table/) and the partition map (/router/)
        web_tables_enabled=False,
        web_router_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        autodiscover=False,
        processing_guarantee=settings.processing_guarantee,
        recovery_consistency_check=settings.recovery_consistency_check,
    )
    tuning = kafka.ConsumerTuning(
        settings.consumer_fetch_max_wait_ms, settings.consumer_empty_fetch_pause_ms, settings.leave_group_on_stop
    )
    setattr(app, kafka.TUNING_ATTR, tuning)
    events_in = app.topic(*input_topics(settings), settings.topic_events, settings.topic_control, **_RAW)
    events = app.topic(settings.topic_events, **_RAW)
    predictions = app.topic(settings.topic_predictions, **_RAW)
    guidance = app.topic(settings.topic_guidance, **_RAW)
    dead_letters = app.topic(settings.topic_dead_letters, **_RAW)
    windows = app.Table(WINDOWS_TABLE, partitions=settings.partitions, value_type=bytes)  # raw: UserWindow.to_bytes
    cooldown = app.Table(COOLDOWN_TABLE, partitions=settings.partitions)

    def sender(topic: faust.TopicT) -> Any:
        return lambda key, value: topic.send(key=key, value=value)

    def last_guided(pending: PendingPrediction) -> float | None:
        with as_of(pending):
            return cooldown.get(pending.user_id)

    def mark_guided(pending: PendingPrediction, emitted_at: float) -> None:
        with as_of(pending):
            cooldown[pending.user_id] = emitted_at

    feed = LiveFeed(metrics)
    guide = Guide(settings, scorer.explain, sender(guidance), last_guided, mark_guided, metrics, feed)

    async def emit(pending: PendingPrediction, scored: Scored) -> bool:
        prediction = build_prediction(pending, scored, top_k=settings.top_k, now_s=time.time())
        await predictions.send(key=prediction.user_id.encode(), value=prediction.to_bytes())
        metrics.predictions.inc()
        metrics.latency_seconds.observe(prediction.latency_ms / 1000)
        for stage, ms in prediction.stages_ms.items():
            metrics.stage_seconds.labels(stage).observe(ms / 1000)
        metrics.model_in_use(scored.model.name, scored.model.version)
        return await guide.offer(pending, prediction)

    async def reject(pending: PendingPrediction, error: str) -> None:
        newest = pending.origins[-1]
        letter = dead_letter(
            b"[" + b",".join(e.to_bytes() for e in pending.window) + b"]",
            pending.user_id.encode(),
            error=f"the model rejected the window: {error}",
            topic=newest.topic,
            partition=newest.partition,
            offset=newest.offset,
            now_s=time.time(),
            reason="rejected",
            event_ids=pending.event_ids,
        )
        await dead_letters.send(key=pending.user_id.encode(), value=letter.to_bytes())
        metrics.dead_letters.labels(letter.reason).inc()

    batcher = MicroBatcher(
        scorer.score,
        emit,
        reject,
        metrics,
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        max_batches_in_flight=settings.max_batches_in_flight,
    )
    app.service(_Scoring(scorer, guide, batcher))  # an instance: Faust starts it as is, after table recovery

    outputs = Outputs(events=sender(events), dead_letters=sender(dead_letters))
    app.agent(events_in, name="events")(events_agent(settings, windows, cooldown, batcher, outputs, metrics))
    add_views(app, scorer, metrics, feed)

    @app.timer(interval=METRICS_INTERVAL_S)
    async def sample_lag_and_tables() -> None:
        """Gauges of what this worker holds now: lag per assigned input partition, keys per table."""
        metrics.consumer_lag.clear()  # partitions handed to another worker drop out
        monitor = app.monitor
        for tp in app.consumer.assignment():
            if tp.topic in (*input_topics(settings), settings.topic_events):
                end, read = monitor.tp_end_offsets.get(tp), monitor.tp_read_offsets.get(tp, -1)
                if end is not None:
                    metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(end - read - 1, 0))
        for table in (windows, cooldown):
            metrics.table_keys.labels(table.name).set(len(table))

    return app


def run_worker(settings: Settings, scorer: Scorer | None = None, loglevel: str = "INFO") -> None:
    """Run a worker in this process until it is stopped (SIGINT/SIGTERM); raises ``SystemExit``."""
    faust.Worker(build_app(settings, scorer), loglevel=loglevel).execute_from_commandline()


if __name__ == "__main__":
    run_worker(Settings())
