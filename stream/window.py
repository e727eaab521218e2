"""A user's behaviour window: the last ``max_events`` events within ``max_age_s`` of the user's newest event.

Pure functions, no Faust. Events are ordered by :func:`order_key`: event time (``timestamp``), then
``item_id``, the one rule that the split, training, evaluation and the baselines use too (arrival order across
two topics is not reproducible); a late event is inserted in order. Age is measured in event time from the
newest event in the window, so a late event older than ``max_age_s`` is accepted but not kept.

A window is stored in the ``windows`` table as :meth:`UserWindow.to_bytes` (JSON written and read by
pydantic-core in one call, not event by event: a window is read and written for every event): the events
plus ``last_offsets``,
per source topic (an input topic, or the internal events topic for re-keyed records), the offset of the last
record from it that changed the window. Since every record of one user that reaches the window lies in one
partition of its topic, a redelivered record (same event_id, offset not after its topic's last offset) is told
apart from a genuine duplicate (same event_id sent again, a later offset, or another topic): the first is
re-emitted, because the crash that caused the redelivery may have happened before its prediction went out;
the second is dropped.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from pydantic import TypeAdapter

from stream.schemas import EventType, WindowEvent


class Outcome(Enum):
    """What :func:`apply_event` did with an event."""

    added = "added"  #: a new event: the window changed, predict
    replayed = "replayed"  #: a redelivered record already in the window: predict again, window unchanged
    duplicate = "duplicate"  #: an event_id already in the window, sent again: drop


@dataclass(frozen=True)
class UserWindow:
    events: tuple[WindowEvent, ...] = ()
    last_offsets: Mapping[str, int] = field(default_factory=dict)
    #: items of consumed events, oldest first, older than the window too (bounded): never recommended again
    consumed: tuple[str, ...] = ()

    def to_bytes(self) -> bytes:
        return _WINDOW.dump_json(self, exclude_defaults=True)  # an event without context stores none

    @classmethod
    def from_bytes(cls, value: bytes | None) -> UserWindow:
        return cls() if value is None else _WINDOW.validate_json(value)


_WINDOW = TypeAdapter(UserWindow)


def order_key(event: WindowEvent) -> tuple[float, str]:
    """The order of a user's events: by time, same-second events by item id."""
    return event.timestamp, event.item_id


def insert_event(
    events: Sequence[WindowEvent], event: WindowEvent, *, max_events: int, max_age_s: float
) -> tuple[WindowEvent, ...]:
    """Insert ``event`` in event-time order into the (ordered) ``events``, then apply the age and count bounds."""
    merged = list(events)
    bisect.insort_right(merged, event, key=order_key)
    newest_s = merged[-1].timestamp
    kept = [e for e in merged if newest_s - e.timestamp <= max_age_s]
    return tuple(kept[-max_events:])


def apply_event(
    window: UserWindow,
    event: WindowEvent,
    topic: str,
    offset: int,
    *,
    max_events: int,
    max_age_s: float,
    consumed_types: Collection[EventType] = (),
    max_consumed: int = 0,
) -> tuple[UserWindow, Outcome]:
    """Apply one record (read from ``topic`` at ``offset``) to a user's window; an event of one of the
    ``consumed_types`` adds its item to the user's ``max_consumed`` newest consumed items."""
    last_offset = window.last_offsets.get(topic, -1)
    if any(e.event_id == event.event_id for e in window.events):
        outcome = Outcome.replayed if offset <= last_offset else Outcome.duplicate
        return window, outcome
    events = insert_event(window.events, event, max_events=max_events, max_age_s=max_age_s)
    consumed = window.consumed
    if event.event_type in consumed_types and max_consumed > 0:
        consumed = (*(i for i in consumed if i != event.item_id), event.item_id)[-max_consumed:]
    offsets = {**window.last_offsets, topic: max(offset, last_offset)}
    return UserWindow(events, offsets, consumed), Outcome.added


def span_seconds(events: Sequence[WindowEvent]) -> float:
    """Event-time span of an ordered window (0 for fewer than two events)."""
    return events[-1].timestamp - events[0].timestamp if events else 0.0


def cart_items(events: Sequence[WindowEvent]) -> list[str]:
    """Items added to the cart in the window and not purchased after that, in order of their last addition."""
    in_cart: dict[str, None] = {}
    for e in events:
        if e.event_type == EventType.add_to_cart:
            in_cart.pop(e.item_id, None)
            in_cart[e.item_id] = None
        elif e.event_type == EventType.purchase:
            in_cart.pop(e.item_id, None)
    return list(in_cart)
