from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.evaluate import rank_metrics, roc_auc, target_ranks


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
