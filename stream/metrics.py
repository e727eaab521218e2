"""Prometheus metrics of one worker, all in one registry that the app builds and passes to every part.

Names carry their unit (``_seconds``); counters get ``_total`` in the exposition. The Grafana dashboard
(monitoring/) uses exactly these names, and a test checks that it does.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: The stages a prediction's latency is made of (Prediction.stages_ms); "deliver" is the output hop, which only
#: the consumer of the predictions topic can see.
STAGES = ("ingest", "rekey", "window", "batch_wait", "triton", "emit")
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.events_in = Counter(
            "recstream_events_in", "input records read", ["topic", "event_type"], registry=registry
        )
        self.dead_letters = Counter(
            "recstream_dead_letters", "records sent to the dead-letter topic", ["reason"], registry=registry
        )
        self.duplicates = Counter(
            "recstream_duplicate_events", "events dropped because their event_id was in the window", registry=registry
        )
        self.rekeyed = Counter(
            "recstream_rekeyed_events",
            "valid events whose record was not in their user's partition, sent through the internal topic",
            registry=registry,
        )
        self.forgotten = Counter("recstream_forgotten_users", "forget requests carried out", registry=registry)
        self.predictions = Counter("recstream_predictions", "predictions emitted", registry=registry)
        self.guidance = Counter("recstream_guidance", "guidance emitted", ["action"], registry=registry)
        self.guidance_shed = Counter(
            "recstream_guidance_shed",
            "guidance not given under a backlog: explained too late (guidance_max_delay_s) or too many users waiting",
            registry=registry,
        )
        self.scorer_failures = Counter(
            "recstream_scorer_failures", "failed scoring or emission attempts", ["kind"], registry=registry
        )
        self.batch_size_users = Histogram(
            "recstream_batch_size_users",
            "users per scoring request",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=registry,
        )
        self.triton_request_seconds = Histogram(
            "recstream_triton_request_seconds",
            "latency of one Triton request (all windows of a batch)",
            ["kind"],
            buckets=_SECONDS,
            registry=registry,
        )
        self.latency_seconds = Histogram(
            "recstream_prediction_latency_seconds",
            "Kafka record timestamp of the newest event to the prediction's emission",
            buckets=_SECONDS,
            registry=registry,
        )
        self.stage_seconds = Histogram(
            "recstream_stage_seconds",
            "time a prediction spent in each stage",
            ["stage"],
            buckets=_SECONDS,
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "recstream_consumer_lag",
            "records not yet read, per input partition",
            ["topic", "partition"],
            registry=registry,
        )
        self.table_keys = Gauge(
            "recstream_table_keys", "keys in this worker's table partitions", ["table"], registry=registry
        )
        self.model_info = Gauge(
            "recstream_model_info",
            "1 for the model version that made the latest prediction",
            ["name", "version"],
            registry=registry,
        )
        self._model_in_use: tuple[str, str] | None = None

    def model_in_use(self, name: str, version: str) -> None:
        """``model_info``: one series, the version of the latest prediction (changed only when it changes)."""
        if self._model_in_use != (name, version):
            self.model_info.clear()
            self.model_info.labels(name, version).set(1)
            self._model_in_use = (name, version)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
