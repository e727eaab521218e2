"""Prometheus metrics of one worker, in a registry of their own (so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events_in = Counter("recstream_events_in", "input records read", ["topic"], registry=self.registry)
        self.dead_letters = Counter(
            "recstream_dead_letters", "input records sent to the dead-letter topic", registry=self.registry
        )
        self.duplicates = Counter(
            "recstream_duplicate_events",
            "events dropped because their event_id was in the window",
            registry=self.registry,
        )
        self.predictions = Counter("recstream_predictions", "predictions emitted", registry=self.registry)
        self.guidance = Counter("recstream_guidance", "guidance emitted", ["action"], registry=self.registry)
        self.scorer_failures = Counter(
            "recstream_scorer_failures", "failed scoring or emission attempts (retried)", registry=self.registry
        )
        self.batch_size_users = Histogram(
            "recstream_batch_size_users",
            "users per scoring request",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.latency_ms = Histogram(
            "recstream_prediction_latency_ms",
            "input record timestamp to prediction emission",
            buckets=(5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
