"""The SASRec side of a comparison: one ranking routine for both sides, and no results of another split."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.versus_sasrec import baseline_ranks, compare, compare_cold
from trainer.data import ORDER_RULE
from trainer.evaluate import TIE_RULE

SASREC_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "recbole" / "sasrec.py"


def test_the_recbole_script_ranks_with_the_trainers_routine() -> None:
    """benchmarks/recbole/sasrec.py needs RecBole's environment to run; here only its source is checked: it takes
    the split, the ranking routine and the metrics from the trainer and defines no ranking of its own."""
    tree = ast.parse(SASREC_SCRIPT.read_text(encoding="utf-8"))
    imported = {
        (node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    assert {("trainer.evaluate", "target_ranks"), ("trainer.evaluate", "rank_metrics")} <= imported
    assert ("trainer.data", "load_movielens") in imported
    defined = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    assert not {name for name in defined if "rank" in name}
    calls = [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    assert calls.count("target_ranks") == 4  # SASRec and popularity, each with and without earlier items


def results_file(tmp_path: Path, **changes: object) -> Path:
    results = {
        "dataset": {"name": "ml-1m", "order": ORDER_RULE},
        "tie_rule": TIE_RULE,
        "test_ranks": {"1m_1": [3, 2], "1m_2": [20, 11]},
    }
    for key, value in changes.items():
        results[key] = value
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    return path


def test_results_of_the_same_dataset_order_and_tie_rule_are_read(tmp_path: Path) -> None:
    assert baseline_ranks(results_file(tmp_path), "ml-1m") == ({"1m_1": (3, 2), "1m_2": (20, 11)}, None)


def test_results_of_another_dataset_or_an_older_split_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is of ml-1m"):
        baseline_ranks(results_file(tmp_path), "ml-100k")
    with pytest.raises(ValueError, match="rerun"):  # made before the order rule: no order, no tie rule
        baseline_ranks(results_file(tmp_path, dataset={"users": 943}, tie_rule=None), "ml-100k")


def test_compare_pairs_users_and_refuses_other_users() -> None:
    ours = {"a": (1, 1), "b": (5, 2), "c": (30, 12)}
    theirs = {"a": (2, 1), "b": (5, 4), "c": (9, 9)}  # every case a hit: no resample divides by 0
    report = compare(ours, {"sasrec": theirs}, resamples=200)
    hr = report["hr@10_all"]["sasrec"]
    assert hr["ours"] == pytest.approx(2 / 3) and hr["theirs"] == 1.0 and hr["ratio"] == pytest.approx(2 / 3)
    assert report["ndcg@10"]["sasrec"]["ours"] == pytest.approx(np.mean([1, 1 / np.log2(3), 0]))
    with pytest.raises(ValueError, match="different test users"):
        compare(ours, {"sasrec": {"a": (1, 1)}}, resamples=10)


def test_cold_targets_are_compared_user_by_user_on_the_excluded_rank() -> None:
    """Only the cold users count, a hit is rank <= 10 with earlier items excluded (the second rank), and the sign
    test sees the users one side alone hits: 10 against 5 gives p = 0.30 (exact binomial, two-sided)."""
    cold = frozenset(f"c{i}" for i in range(20))
    ours = {f"c{i}": (50, 3) for i in range(12)} | {f"c{i}": (2, 40) for i in range(12, 20)} | {"w": (1, 1)}
    theirs = {f"c{i}": (50, 3) for i in range(2)} | {f"c{i}": (50, 11) for i in range(2, 12)}
    theirs |= {f"c{i}": (50, 9) for i in range(12, 17)} | {f"c{i}": (1, 30) for i in range(17, 20)} | {"w": (1, 1)}
    result = compare_cold(ours, theirs, cold)
    assert result["cases"] == 20
    assert (result["hits_ours_only"], result["hits_theirs_only"], result["hits_both"]) == (10, 5, 2)
    assert result["ours"] == 12 / 20
    assert result["theirs"] == 7 / 20
    assert result["sign_test_p"] == pytest.approx(0.3018, abs=1e-4)
