from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.data import TRAIN
from trainer.evaluate import (
    paired_ratio,
    popularity,
    popularity_baseline,
    random_hit_rate,
    rank_metrics,
    roc_auc,
    target_ranks,
    wilson_interval,
)
from trainer.sequences import EvalCases


def test_target_ranks_with_and_without_earlier_items() -> None:
    scores = np.array([[0.9, 0.5, 0.7, 0.1], [0.2, 0.3, 0.4, 0.8]])
    targets = np.array([2, 1])  # item rows (1-based): row 2 has score 0.5, row 1 has score 0.2
    assert target_ranks(scores, targets).tolist() == [3, 4]
    seen = [np.array([1]), np.array([4, 1])]  # the target itself is never excluded
    assert target_ranks(scores, targets, seen).tolist() == [2, 3]


def test_ties_count_against_the_target_whatever_the_item_numbering() -> None:
    """The tie rule: rank = 1 + other items scoring higher + other items scoring equal."""
    scores = np.array([[0.5, 0.9, 0.5, 0.5, 0.1]])
    assert target_ranks(scores, np.array([1])).tolist() == [4]  # 0.9 above, two others tie with it
    assert target_ranks(scores, np.array([3])).tolist() == [4]  # the same for every tied item: no id tie break
    assert target_ranks(scores, np.array([2])).tolist() == [1]
    assert target_ranks(scores, np.array([5])).tolist() == [5]
    assert target_ranks(scores, np.array([1]), [np.array([3, 2])]).tolist() == [2]  # excluded items leave
    constant = np.zeros((1, 6))
    assert target_ranks(constant, np.array([4])).tolist() == [6]  # a constant scorer gets the last rank
    reordered = scores[:, [4, 3, 2, 1, 0]]  # renumber the items: the target keeps its rank
    assert target_ranks(reordered, np.array([5])).tolist() == [4]


def test_excluded_items_are_left_out_not_scored_minus_infinity() -> None:
    scores = np.array([[-np.inf, -np.inf, 0.3, -np.inf]])  # a target scored -inf ties with nothing excluded
    assert target_ranks(scores, np.array([1]), [np.array([2, 4])]).tolist() == [2]
    assert target_ranks(scores, np.array([1])).tolist() == [4]


def test_target_ranks_in_chunks_of_a_broadcast_view_and_bad_input() -> None:
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 5, size=30).astype(float)  # popularity-like: many ties
    targets = rng.integers(1, 31, size=50)
    seen = [rng.choice(30, size=3, replace=False) + 1 for _ in range(50)]
    view = np.broadcast_to(counts, (50, 30))
    expected = [
        1 + sum(counts[j] >= counts[t - 1] for j in range(30) if j != t - 1 and j + 1 not in s)
        for t, s in zip(targets, seen, strict=True)
    ]
    np.testing.assert_array_equal(target_ranks(view, targets, seen, chunk=7), expected)
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(np.array([[0.1, np.nan]]), np.array([1]))
    with pytest.raises(ValueError, match="target rows"):
        target_ranks(np.array([[0.1, 0.2]]), np.array([3]))


def test_popularity_is_raw_train_counts(tiny_dataset) -> None:
    withheld = np.zeros(len(tiny_dataset.catalog), dtype=bool)
    withheld[0] = True
    counts = popularity(tiny_dataset, withheld)
    expected = np.zeros(len(tiny_dataset.catalog))
    for user in tiny_dataset.users:
        np.add.at(expected, user.items[user.split == TRAIN] - 1, 1)
    expected[0] = 0
    np.testing.assert_array_equal(counts, expected)
    report = popularity_baseline(tiny_dataset)
    assert report["cases"] == len(tiny_dataset.users) and 0 <= report["pop_hr@10_all"] <= report["pop_hr@10"] <= 1


def test_rank_metrics_hand_checked() -> None:
    metrics = rank_metrics(np.array([1, 3, 11, 10]))
    assert metrics["hr@10"] == pytest.approx(3 / 4)
    assert metrics["ndcg@10"] == pytest.approx((1 + 1 / 2 + 1 / math.log2(11)) / 4)  # rank 3: 1/log2(4)
    assert metrics["mrr@10"] == pytest.approx((1 + 1 / 3 + 1 / 10) / 4)


def test_roc_auc_hand_checked_with_ties() -> None:
    assert roc_auc(np.array([1, 1, 0, 0]), np.array([0.9, 0.8, 0.3, 0.1])) == 1.0
    assert roc_auc(np.array([1, 0]), np.array([0.1, 0.9])) == 0.0
    # pairs (pos, neg): (0.5, 0.5) tie = 1/2, (0.5, 0.2) = 1, (0.7, 0.5) = 1, (0.7, 0.2) = 1 -> 3.5 / 4
    assert roc_auc(np.array([1, 0, 1, 0]), np.array([0.5, 0.5, 0.7, 0.2])) == pytest.approx(3.5 / 4)
    assert roc_auc(np.array([1, 1]), np.array([0.1, 0.2])) is None


def test_paired_ratio_holds_pairs_together_and_narrows_with_more_cases() -> None:
    rng = np.random.default_rng(1)
    theirs = rng.random(200)
    same = paired_ratio(theirs, theirs.copy(), resamples=500)
    assert same["ratio"] == pytest.approx(1.0) and same["ci95"] == pytest.approx([1.0, 1.0])  # pairs move together
    assert paired_ratio(theirs * 1.2, theirs, resamples=500)["ci95"] == pytest.approx([1.2, 1.2])
    few = paired_ratio(theirs + rng.normal(0.1, 0.5, 200), theirs, resamples=2000)
    many = paired_ratio(np.tile(theirs, 20) + rng.normal(0.1, 0.5, 4000), np.tile(theirs, 20), resamples=2000)
    for result in (few, many):
        low, high = result["ci95"]
        assert low < result["median"] < high and low < result["ratio"] < high
    assert many["ci95"][1] - many["ci95"][0] < (few["ci95"][1] - few["ci95"][0]) / 2  # 20x the cases


def test_wilson_interval_hand_checked_and_inside_0_1() -> None:
    low, high = wilson_interval(9, 362)  # version 4's pooled cold-start hits
    assert (round(low, 4), round(high, 4)) == (0.0131, 0.0466)
    assert wilson_interval(0, 50)[0] == 0.0 and 0 < wilson_interval(0, 50)[1] < 0.08  # no hit: not [0, 0]
    assert wilson_interval(50, 50)[1] == 1.0
    wide, narrow = wilson_interval(5, 100), wilson_interval(50, 1000)
    assert narrow[1] - narrow[0] < wide[1] - wide[0], "more cases, narrower"


def test_random_hit_rate_counts_the_candidates_left_after_exclusion() -> None:
    targets = np.array([3, 7, 2])
    seen = [np.array([1, 2]), np.array([7]), np.arange(1, 18)]  # case 1 re-consumes its target: it stays a candidate
    cases = EvalCases(arrays={"target_items": targets}, seen=seen, user_ids=["a", "b", "c"])
    # 20 items: case 0 ranks its target among 18, case 1 among 20, case 2 among 4 (10 > 4: a sure hit)
    assert random_hit_rate(cases, np.array([0, 1]), items=20) == pytest.approx((10 / 18 + 10 / 20) / 2)
    assert random_hit_rate(cases, np.array([2]), items=20) == 1.0
    assert math.isnan(random_hit_rate(cases, np.array([], dtype=int), items=20))
