"""The cold-start offset: it moves only the cold items' scores, and the metrics count cold and warm targets apart."""

from __future__ import annotations

import numpy as np

from benchmarks.cold_calibration import metrics_at
from trainer.sequences import EvalCases


def test_an_offset_lifts_only_the_cold_items() -> None:
    n = 20
    scores = np.tile(np.linspace(1.0, 0.0, n), (2, 1))  # item row j + 1 scores 1 - j / 19: row 1 best
    targets = np.array([1, 15])  # case 0: a warm target ranked 1st; case 1: a cold target ranked 15th
    cases = EvalCases(arrays={"target_items": targets}, seen=[np.array([], dtype=np.int64)] * 2, user_ids=["w", "c"])
    cold = np.zeros(n)
    cold[14] = 1.0  # item row 15 was never seen in training
    without = metrics_at(scores, cases, cold)
    assert (without["warm_hr@10"], without["cold_hr@10"], without["cold_cases"]) == (1.0, 0.0, 1)
    lifted = metrics_at(scores, cases, cold, offset=0.5)  # 0.263 + 0.5 = 0.763: below the 5 best warm items, 6th
    assert (lifted["warm_hr@10"], lifted["cold_hr@10"]) == (1.0, 1.0)
    assert lifted["ndcg@10"] == (1.0 + 1 / np.log2(1 + 6)) / 2
    above_all = metrics_at(scores, cases, cold, offset=2.0)  # the cold item passes every warm one: warm target 2nd
    assert above_all["ndcg@10"] == (1 / np.log2(1 + 2) + 1.0) / 2, "what the cold target gains, the warm one pays"


def test_a_factor_scales_only_the_cold_items() -> None:
    scores = np.array([[0.9, 0.5, 0.3, -0.2]])  # the cold item (row 3) scores 0.3: 3rd
    cases = EvalCases(arrays={"target_items": np.array([3])}, seen=[np.array([], dtype=np.int64)], user_ids=["c"])
    cold = np.array([0.0, 0.0, 1.0, 0.0])
    assert metrics_at(scores, cases, cold, scale=2.0)["ndcg@10"] == 1 / np.log2(1 + 2)  # 0.6: above 0.5, 2nd
    assert metrics_at(scores, cases, cold, scale=4.0)["ndcg@10"] == 1.0  # 1.2: first
