"""Builders shared by the stream unit tests."""

from __future__ import annotations

from stream.schemas import EventType, ModelRef, Scored, ScoredItem, WindowEvent

MODEL = ModelRef(name="recstream", version="1")


def event(
    event_id: str, timestamp: float, item_id: str = "i1", event_type: EventType = EventType.view, record_ts_ms: int = 0
) -> WindowEvent:
    return WindowEvent(
        event_id=event_id, item_id=item_id, event_type=event_type, timestamp=timestamp, record_ts_ms=record_ts_ms
    )


def scored() -> Scored:
    return Scored(
        model=MODEL,
        next_items=[ScoredItem(item_id=f"n{i}", score=0.5 / (i + 1), title=f"Next {i}") for i in range(12)],
        next_action={"view": 0.4, "click": 0.3, "add_to_cart": 0.2, "purchase": 0.1},
    )
