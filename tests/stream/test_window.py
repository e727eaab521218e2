from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream.schemas import EventType
from stream.window import Outcome, UserWindow, apply_event, cart_items, insert_event, span_seconds
from tests.stream.helpers import event

MAX_AGE_S = 100.0

# (event_id, timestamp): few ids so that duplicates are common
records = st.lists(st.tuples(st.integers(0, 15), st.floats(0, 400, allow_nan=False)), max_size=40)
max_events = st.integers(1, 8)


def _run(rows: list[tuple[int, float]], n: int) -> tuple[UserWindow, list[Outcome]]:
    window, outcomes = UserWindow(), []
    for offset, (event_id, ts) in enumerate(rows):
        window, outcome = apply_event(
            window, event(str(event_id), ts), "views", offset, max_events=n, max_age_s=MAX_AGE_S
        )
        outcomes.append(outcome)
    return window, outcomes


@given(records, max_events)
def test_bounds_order_and_uniqueness(rows: list[tuple[int, float]], n: int) -> None:
    window, _ = _run(rows, n)
    stamps = [e.timestamp for e in window.events]
    assert stamps == sorted(stamps)
    assert len(window.events) <= n
    assert all(stamps[-1] - ts <= MAX_AGE_S for ts in stamps)
    assert len({e.event_id for e in window.events}) == len(window.events)
    if rows:
        assert window.events, "the newest event is always kept"


@given(st.lists(st.floats(0, 400, allow_nan=False), max_size=30), max_events)
def test_distinct_events_give_last_n_within_age_in_event_time(stamps: list[float], n: int) -> None:
    """With distinct ids the incremental window equals the bounds applied to all events at once."""
    window, outcomes = _run(list(enumerate(stamps)), n)
    assert set(outcomes) <= {Outcome.added}
    # every event here has item "i1": equal order keys keep arrival order (a stable sort)
    ordered = sorted(enumerate(stamps), key=lambda row: row[1])
    expected = [str(i) for i, ts in ordered if stamps and max(stamps) - ts <= MAX_AGE_S][-n:]
    assert [e.event_id for e in window.events] == expected


@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from("abcdef")), max_size=12, unique=True), st.randoms())
def test_same_second_events_are_ordered_by_item_whatever_their_arrival(rows: list[tuple[int, str]], rng) -> None:
    """The window's order is a function of the events, not of the order in which they arrived."""
    events = [event(f"{ts}{item}", ts, item_id=item) for ts, item in rows]
    arrived = list(events)
    rng.shuffle(arrived)
    window = ()
    for e in arrived:
        window = insert_event(window, e, max_events=100, max_age_s=MAX_AGE_S)
    assert [(e.timestamp, e.item_id) for e in window] == sorted(rows)


def test_late_event_is_inserted_in_order() -> None:
    events = insert_event([event("a", 10), event("c", 30)], event("b", 20), max_events=5, max_age_s=MAX_AGE_S)
    assert [e.event_id for e in events] == ["a", "b", "c"]


def test_late_event_older_than_max_age_is_accepted_but_not_kept() -> None:
    window = UserWindow((event("new", 500),), {"views": 0})
    updated, outcome = apply_event(window, event("old", 1), "views", 1, max_events=5, max_age_s=MAX_AGE_S)
    assert outcome is Outcome.added
    assert [e.event_id for e in updated.events] == ["new"]
    assert updated.last_offsets == {"views": 1}


def test_duplicate_versus_redelivered_record() -> None:
    window, _ = apply_event(UserWindow(), event("a", 1), "views", 7, max_events=5, max_age_s=MAX_AGE_S)
    again = {"max_events": 5, "max_age_s": MAX_AGE_S}
    assert apply_event(window, event("a", 1), "views", 7, **again) == (window, Outcome.replayed)
    assert apply_event(window, event("a", 1), "views", 9, **again) == (window, Outcome.duplicate)


def test_offsets_are_kept_per_source_topic() -> None:
    """A user's records reach the window from an input topic directly or re-keyed through the internal topic:
    their offsets are not comparable, so a record is a redelivery only by its own topic's last offset."""
    again = {"max_events": 5, "max_age_s": MAX_AGE_S}
    window, _ = apply_event(UserWindow(), event("a", 1), "views", 7, **again)
    window, _ = apply_event(window, event("b", 2), "recstream-events", 3, **again)
    assert window.last_offsets == {"views": 7, "recstream-events": 3}
    assert apply_event(window, event("b", 2), "recstream-events", 3, **again)[1] is Outcome.replayed
    assert apply_event(window, event("b", 2), "clicks", 1, **again)[1] is Outcome.duplicate
    assert apply_event(window, event("a", 1), "recstream-events", 5, **again)[1] is Outcome.duplicate


def test_bytes_round_trip() -> None:
    window = UserWindow((event("a", 1.5), event("b", 2, event_type=EventType.click)), {"views": 3, "clicks": 1})
    assert UserWindow.from_bytes(window.to_bytes()) == window
    assert UserWindow.from_bytes(None) == UserWindow()


def test_span_and_cart() -> None:
    events = [
        event("1", 10, "x", EventType.add_to_cart),
        event("2", 20, "y", EventType.add_to_cart),
        event("3", 30, "x", EventType.purchase),
        event("4", 40, "z", EventType.view),
    ]
    assert span_seconds(events) == 30
    assert span_seconds([]) == 0
    assert cart_items(events) == ["y"]


def test_consumed_items_are_kept_beyond_the_window_newest_last_and_bounded() -> None:
    bounds = {"max_events": 2, "max_age_s": MAX_AGE_S, "consumed_types": {EventType.click}, "max_consumed": 3}
    window = UserWindow()
    for offset, (item, event_type) in enumerate(
        [("a", EventType.click), ("b", EventType.view), ("c", EventType.click), ("a", EventType.click),
         ("d", EventType.click), ("e", EventType.click)]
    ):  # fmt: skip
        window, _ = apply_event(window, event(f"e{offset}", offset, item, event_type), "views", offset, **bounds)
    assert [e.item_id for e in window.events] == ["d", "e"]
    assert window.consumed == ("a", "d", "e"), "views do not count; a repeat moves to the end; the oldest go"
    assert UserWindow.from_bytes(window.to_bytes()) == window
