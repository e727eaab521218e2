"""Build the :class:`Prediction` of one user from the scorer's answer for the user's window."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stream.batcher import PendingPrediction
from stream.schemas import Attribution, Prediction, WindowSummary
from stream.window import span_seconds

if TYPE_CHECKING:
    from stream.triton_client import Scored

#: How many window events a prediction names in ``attribution`` (heaviest first).
ATTRIBUTION_TOP_N = 5


def build_prediction(pending: PendingPrediction, scored: Scored, *, top_k: int, now_s: float) -> Prediction:
    """``latency_ms`` runs from the newest Kafka record timestamp among the events the prediction accounts for."""
    window = pending.window
    by_weight = sorted(
        zip(window, scored.attribution, scored.titles, strict=True), key=lambda row: row[1], reverse=True
    )
    return Prediction(
        user_id=pending.user_id,
        event_ids=list(pending.event_ids),
        model=scored.model,
        next_items=list(scored.next_items[:top_k]),
        next_action=dict(scored.next_action),
        window=WindowSummary(events=len(window), span_seconds=span_seconds(window)),
        attribution=[
            Attribution(item_id=event.item_id, event_type=event.event_type, weight=weight, title=title)
            for event, weight, title in by_weight[:ATTRIBUTION_TOP_N]
        ],
        latency_ms=now_s * 1000 - pending.newest_record_ts_ms,
        emitted_at=now_s,
    )
