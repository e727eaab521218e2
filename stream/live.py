"""The live page's data: counters and histograms from the worker's metrics, and the latest guidance.

The page (``static/live.html``, served at ``/``) polls ``/live.json`` every second and works out rates and
recent latency percentiles from the differences between snapshots, so nothing here keeps history but the
last ``RECENT_GUIDANCE`` guidance messages, for display only (processing state lives in the tables).
"""

from __future__ import annotations

from collections import deque
from importlib.resources import files
from typing import Any

from stream.metrics import Metrics
from stream.schemas import Guidance

#: How many of the latest guidance messages the page shows.
RECENT_GUIDANCE = 8
PAGE = files("stream").joinpath("static/live.html")


class LiveFeed:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._guidance: deque[dict[str, Any]] = deque(maxlen=RECENT_GUIDANCE)

    def add_guidance(self, guidance: Guidance) -> None:
        self._guidance.appendleft(guidance.model_dump(mode="json", include={"action", "explanation", "emitted_at"}))

    def snapshot(self, now_s: float) -> dict[str, Any]:
        totals: dict[str, float] = {}
        buckets: list[tuple[float, float]] = []
        versions: list[str] = []
        lag = 0.0
        for family in self._metrics.registry.collect():
            for sample in family.samples:
                if sample.name == "recstream_prediction_latency_seconds_bucket":
                    buckets.append((float(sample.labels["le"]), sample.value))
                elif sample.name == "recstream_consumer_lag":
                    lag += sample.value
                elif sample.name == "recstream_model_info" and sample.value == 1:
                    versions.append(sample.labels["version"])
                elif sample.name.endswith("_total"):
                    totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
        return {
            "now_s": now_s,
            "events_in": totals.get("recstream_events_in_total", 0.0),
            "predictions": totals.get("recstream_predictions_total", 0.0),
            "dead_letters": totals.get("recstream_dead_letters_total", 0.0),
            "latency_buckets_s": buckets,  # cumulative counts per upper bound, +Inf last
            "lag": lag,
            "model_versions": versions,
            "guidance": list(self._guidance),
        }
