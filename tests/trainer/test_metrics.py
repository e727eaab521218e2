from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.evaluate import paired_ratio, rank_metrics, roc_auc, target_ranks


def test_target_ranks_with_and_without_earlier_items() -> None:
    scores = np.array([[0.9, 0.5, 0.7, 0.1], [0.2, 0.3, 0.4, 0.8]])
    targets = np.array([2, 1])  # item rows (1-based): row 2 has score 0.5, row 1 has score 0.2
    assert target_ranks(scores, targets).tolist() == [3, 4]
    seen = [np.array([1]), np.array([4, 1])]  # the target itself is never excluded
    assert target_ranks(scores, targets, seen).tolist() == [2, 3]


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
