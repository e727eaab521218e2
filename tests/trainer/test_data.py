from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from stream.schemas import EVENT_TYPES
from tests.trainer.conftest import EVENTS_PER_USER, N_ITEMS, N_USERS, write_csv
from trainer.data import TEST, TRAIN, VALID, event_order, first_users, load_event_log, read_table, split_by_time


def test_split_last_is_test_second_last_is_valid_same_second_events_by_item_id() -> None:
    users = ["a", "b", "a", "a", "a", "b", "b"]
    times = [5.0, 1.0, 1.0, 5.0, 3.0, 2.0, 2.0]
    items = ["x", "p", "q", "w", "r", "t", "s"]
    # a: q (t=1), r (t=3), w (t=5), x (t=5: "x" > "w"); b: p (t=1), s (t=2), t (t=2: "t" > "s")
    assert split_by_time(users, times, items).tolist() == [TEST, TRAIN, TRAIN, VALID, TRAIN, TEST, VALID]


def test_same_second_items_compare_as_strings_not_numbers() -> None:
    # "10" < "9" as strings: the order rule is the stream window's (stream.window.order_key), not numeric
    assert split_by_time(["u"] * 3, [7.0, 7.0, 7.0], ["9", "10", "100"]).tolist() == [TEST, TRAIN, VALID]
    assert event_order(["u"] * 3, [7.0, 7.0, 7.0], ["9", "10", "100"]).tolist() == [1, 2, 0]


def test_split_short_users() -> None:
    # one event: train only; two events: train + test, no validation event
    assert split_by_time(["x", "y", "y"], [1.0, 2.0, 1.0], ["i", "j", "k"]).tolist() == [TRAIN, TEST, TRAIN]


def test_split_does_not_depend_on_the_file_order_of_same_second_events() -> None:
    """The same events in scrambled file order (users interleaved, same-second events shuffled) get the same
    labels: the order rule uses only (user, timestamp, item id)."""
    rng = np.random.default_rng(0)
    n = 60
    users = rng.choice(["a", "b", "c"], size=n)
    times = rng.integers(0, 4, size=n).astype(float)  # many events share their second
    items = np.array([f"i{k}" for k in rng.permutation(n)])  # distinct items, so no two events are equal
    labels = split_by_time(users.tolist(), times.tolist(), items.tolist())
    for seed in range(5):
        perm = np.random.default_rng(seed + 1).permutation(n)
        scrambled = split_by_time(users[perm].tolist(), times[perm].tolist(), items[perm].tolist())
        assert scrambled.tolist() == labels[perm].tolist()
    for user in set(users.tolist()):
        mine = users == user
        assert (labels[mine] == TEST).sum() == 1 and (labels[mine] == VALID).sum() == 1
        last = max(zip(times[mine], items[mine], strict=True))  # the greatest (timestamp, item id)
        assert items[mine][labels[mine] == TEST][0] == last[1]


def test_rows_equal_in_user_time_and_item_keep_their_row_order() -> None:
    order = event_order(["u", "u", "u", "u"], [2.0, 1.0, 2.0, 2.0], ["b", "z", "a", "b"])
    assert order.tolist() == [1, 2, 0, 3]  # z (t=1), a, then the two (t=2, "b") rows in row order


def test_datasets_are_ordered_by_the_rule_whatever_the_file_order(tmp_path: Path) -> None:
    header = ["user_id", "item_id", "event_type", "timestamp"]
    rows = [["u", "b", "view", 5], ["v", "x", "view", 1], ["u", "a", "click", 5], ["u", "c", "view", 1]]
    first = load_event_log(write_csv(tmp_path / "one.csv", header, rows))
    second = load_event_log(write_csv(tmp_path / "two.csv", header, rows[::-1]))
    for dataset in (first, second):
        (u,) = (user for user in dataset.users if user.user_id == "u")
        assert [dataset.catalog.item_ids[i - 1] for i in u.items] == ["c", "a", "b"]
        assert u.split.tolist() == [TRAIN, VALID, TEST]


def test_first_users_keeps_whole_users_and_the_whole_catalogue(tiny_dataset) -> None:
    subset = first_users(tiny_dataset, 5)
    assert [u.user_id for u in subset.users] == [u.user_id for u in tiny_dataset.users[:5]]
    assert subset.catalog == tiny_dataset.catalog
    assert first_users(tiny_dataset, None) is tiny_dataset
    with pytest.raises(ValueError, match="at least 1"):
        first_users(tiny_dataset, 0)


def test_csv_log_becomes_time_ordered_sequences(tiny_dataset) -> None:
    assert len(tiny_dataset.users) == N_USERS
    assert tiny_dataset.catalog.item_ids == [f"i{i}" for i in range(N_ITEMS)]
    assert tiny_dataset.catalog.titles[3] == "Item 3"
    assert tiny_dataset.catalog.texts[3] == "Item 3 genre 0"
    user = next(u for u in tiny_dataset.users if u.user_id == "u5")
    assert [tiny_dataset.catalog.item_ids[i - 1] for i in user.items[:3]] == ["i5", "i6", "i7"]
    assert user.event_types[0] == 1 + EVENT_TYPES.index("view")  # item 5 is odd: a view
    assert user.event_types[1] == 1 + EVENT_TYPES.index("click")
    assert np.all(np.diff(user.timestamps) > 0)
    assert user.split.tolist() == [TRAIN] * (EVENTS_PER_USER - 2) + [VALID, TEST]


def test_jsonl_and_csv_load_the_same(tmp_path: Path, tiny_files, tiny_dataset) -> None:
    events, items = tiny_files
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_bytes(b"\n".join(orjson.dumps(row) for row in read_table(events)))
    from_jsonl = load_event_log(jsonl, items)
    assert from_jsonl.catalog == tiny_dataset.catalog
    for a, b in zip(from_jsonl.users, tiny_dataset.users, strict=True):
        assert a.user_id == b.user_id
        assert a.items.tolist() == b.items.tolist() and a.split.tolist() == b.split.tolist()


def test_iso_timestamps_unknown_items_and_bad_rows(tmp_path: Path) -> None:
    header = ["user_id", "item_id", "event_type", "timestamp"]
    rows = [["u", "new", "purchase", "1970-01-01T00:00:10Z"], ["u", "x", "view", "5"]]
    dataset = load_event_log(write_csv(tmp_path / "e.csv", header, rows))
    assert dataset.catalog.item_ids == ["new", "x"]  # no item table: ids become the catalogue and text
    assert dataset.catalog.texts == ["new", "x"]
    assert dataset.users[0].items.tolist() == [2, 1]  # by time: x (t=5) before new (t=10)
    with pytest.raises(ValueError, match="row 1"):
        load_event_log(write_csv(tmp_path / "bad.csv", header, [["u", "x", "like", "5"]]))


def test_unsupported_table_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        list(read_table(tmp_path / "events.xlsx"))
