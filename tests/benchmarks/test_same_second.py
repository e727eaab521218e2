"""The same-second measure: which targets share their second, and the successor-popularity rule's order."""

from __future__ import annotations

import numpy as np

from benchmarks.same_second import shares_its_second, successor_scores
from trainer.data import TEST, TRAIN, Catalog, Dataset, UserSequence
from trainer.evaluate import target_ranks
from trainer.sequences import EvalCases


def user(user_id: str, timestamps: list[float]) -> UserSequence:
    n = len(timestamps)
    return UserSequence(
        user_id=user_id,
        items=np.arange(1, n + 1, dtype=np.int64),
        event_types=np.ones(n, dtype=np.int64),
        timestamps=np.array(timestamps, dtype=np.float64),
        split=np.array([TRAIN] * (n - 1) + [TEST], dtype=np.int8),
        context=np.zeros((n, 0), dtype=np.int64),
    )


def test_a_target_shares_its_second_only_with_the_event_just_before_it() -> None:
    catalog = Catalog(["a", "b", "c"], [None] * 3, ["a", "b", "c"])
    users = [user("burst", [1.0, 2.0, 2.0]), user("apart", [1.0, 1.0, 3.0])]  # "apart": an earlier pair only
    cases = EvalCases(arrays={}, seen=[], user_ids=["apart", "burst"])
    assert shares_its_second(Dataset(catalog, users), cases, TEST).tolist() == [False, True]


def test_successor_popularity_puts_the_ids_after_the_last_item_first() -> None:
    counts = np.array([5.0, 9.0, 1.0])  # rows 1, 2, 3 = ids "B", "A", "C"
    scores = successor_scores(["B", "A", "C"], np.array([1, 3]), counts)  # last items "B" and "C"
    # after "B" only "C" sorts later: it comes first although it is the least popular; then "A" (9) before "B" (5)
    assert target_ranks(scores, np.array([3, 3])).tolist() == [1, 3]
    assert target_ranks(scores, np.array([2, 2])).tolist() == [2, 1]  # after "C" nothing: plain popularity
