from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from stream.schemas import EVENT_TYPES
from tests.trainer.conftest import EVENTS_PER_USER, N_ITEMS, N_USERS, write_csv
from trainer.data import TEST, TRAIN, VALID, load_event_log, read_table, split_by_time


def test_split_last_is_test_second_last_is_valid_ties_keep_row_order() -> None:
    users = ["a", "b", "a", "a", "a", "b", "b"]
    times = [5.0, 1.0, 1.0, 5.0, 3.0, 2.0, 2.0]
    # a: rows 2 (t=1), 4 (t=3), 0 (t=5), 3 (t=5, later row) ; b: rows 1 (t=1), 5 (t=2), 6 (t=2, later row)
    assert split_by_time(users, times).tolist() == [VALID, TRAIN, TRAIN, TEST, TRAIN, VALID, TEST]


def test_split_short_users() -> None:
    # one event: train only; two events: train + test, no validation event
    assert split_by_time(["x", "y", "y"], [1.0, 2.0, 1.0]).tolist() == [TRAIN, TEST, TRAIN]


def test_split_does_not_depend_on_user_order_in_the_file() -> None:
    rng = np.random.default_rng(0)
    users = rng.choice(["a", "b", "c"], size=40).tolist()
    times = rng.integers(0, 5, size=40).astype(float).tolist()
    labels = split_by_time(users, times)
    order = np.argsort(np.array(users), kind="stable")  # same rows grouped by user, row order kept per user
    regrouped = split_by_time([users[i] for i in order], [times[i] for i in order])
    assert regrouped.tolist() == labels[order].tolist()
    for user in set(users):
        assert (labels[np.array(users) == user] == TEST).sum() == 1


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
