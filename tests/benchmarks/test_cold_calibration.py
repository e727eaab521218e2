"""The cold-start calibrations: an offset and a factor move only the cold items' scores, the metrics count cold and
warm targets apart, the choice costs nothing overall, and the text map is the one training fits."""

from __future__ import annotations

import numpy as np

from benchmarks.cold_calibration import MAP_RIDGES, MAP_SCALES, choose, cold_pairs, metrics_at, text_map_tables
from tests.trainer.conftest import TINY, fake_embed_texts
from trainer.evaluate import load_version
from trainer.export import export_version, item_table
from trainer.publish import publish
from trainer.sequences import EvalCases
from trainer.train import train_report


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


def row(ndcg: float, cold: float, **setting: float) -> dict[str, float]:
    return {"ndcg@10": ndcg, "cold_hr@10": cold, **setting}


def test_the_choice_takes_the_most_cold_hits_that_cost_nothing_overall() -> None:
    baseline = row(0.100, 0.07)
    curve = [
        row(0.099, 0.20, ridge=1),
        row(0.101, 0.09, ridge=3),
        row(0.100, 0.09, ridge=10),
        row(0.102, 0.08, ridge=30),
    ]
    assert choose(curve, baseline)["ridge"] == 3  # 0.20 costs NDCG; of the rest 0.09, the higher NDCG among equals
    assert choose([row(0.09, 0.3, ridge=1)], baseline) is baseline


def test_cold_pairs_count_only_the_cold_targets_one_side_hits() -> None:
    without = np.array([1, 0, 0, 1, 1, 0], dtype=bool)
    with_ = np.array([0, 1, 1, 1, 0, 1], dtype=bool)
    cold = np.array([1, 1, 1, 1, 0, 0], dtype=bool)  # the last two are warm: not counted
    pairs = cold_pairs(without, with_, cold)
    assert (pairs["hit_with_only"], pairs["hit_without_only"]) == (2, 1)
    assert pairs["sign_test_p"] == 1.0  # 2 against 1 of 3 discordant: nothing to tell
    assert cold_pairs(without, without, cold)["sign_test_p"] == 1.0


def test_the_text_map_fitted_on_a_version_is_what_training_with_it_serves(tiny_dataset, tmp_path, monkeypatch) -> None:
    """``text_map_tables`` on a version trained without the map (an ensemble of two) gives, for each setting, the
    item table that training with ``text_map_ridge`` and ``text_map_scale`` exports: the same weights (training
    is deterministic) and the same fit."""
    monkeypatch.setattr("trainer.train.embed_texts", fake_embed_texts)
    monkeypatch.setattr("benchmarks.cold_calibration.embed_texts", fake_embed_texts)
    cfg = TINY.model_copy(update={"members": 2})
    model, report = train_report(tiny_dataset, cfg, None, None, faithfulness_users=0)
    (tmp_path / "recstream").mkdir()
    folder = publish(tmp_path / "recstream", lambda out: export_version(model, tiny_dataset, report, out))
    version = load_version(folder, tiny_dataset)
    tables = text_map_tables(folder, version, tiny_dataset)
    assert set(tables) == {(r, s) for r in MAP_RIDGES for s in MAP_SCALES}
    mapped, _ = train_report(
        tiny_dataset, cfg.model_copy(update={"text_map_ridge": 3.0, "text_map_scale": 0.5}), None, None, 0
    )
    expected = item_table(mapped)
    np.testing.assert_allclose(tables[3.0, 0.5], expected, atol=1e-5)
    assert np.abs(tables[3.0, 0.5] - version.table).max() > 1e-3  # the map moved the withheld items
