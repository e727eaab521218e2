"""Build the :class:`Prediction` of one user from the scorer's answer for the user's window."""

from __future__ import annotations

from stream.batcher import PendingPrediction
from stream.schemas import Prediction, Scored, WindowSummary
from stream.window import span_seconds


def build_prediction(pending: PendingPrediction, scored: Scored, *, top_k: int, now_s: float) -> Prediction:
    """``latency_ms`` runs from the newest Kafka record timestamp among the events the prediction accounts for."""
    window = pending.window
    return Prediction(
        user_id=pending.user_id,
        event_ids=list(pending.event_ids),
        model=scored.model,
        next_items=list(scored.next_items[:top_k]),
        next_action=dict(scored.next_action),
        window=WindowSummary(events=len(window), span_seconds=span_seconds(window)),
        latency_ms=now_s * 1000 - pending.newest_record_ts_ms,
        stages_ms={stage: round(ms, 3) for stage, ms in pending.stages_ms.items()},
        emitted_at=now_s,
    )
