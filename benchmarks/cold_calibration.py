"""Cold start, calibrated: the scores of the items never seen in training, shifted by a constant or scaled by a factor,
or their rows moved by a text map, chosen on validation, measured on test.

An item without interactions is scored through its text alone (its id vector is the learned unknown-id vector), and
its logits come out lower than those of items whose id embedding was trained, so it seldom reaches a top 10 even
when its text fits. Two one-number calibrations of that text-only tower are tried: an offset added to a cold item's
logit, and a factor its logit is multiplied by (the same as scaling its vector, which ``add-items`` can write into a
version without changing the served contract). Each is chosen on validation (:func:`choose`): the setting with the
highest cold HR@10 among those that do not lower NDCG@10 over every target (warm and cold, earlier items excluded,
as served), so that what it gains on cold targets is not paid for on warm ones. The third is
``TrainConfig.text_map_ridge`` and ``text_map_scale`` fitted on the version's own rows
(``trainer.modeling.ridge_map`` from the text vectors of the items with an id embedding to their rows' id part, the
same fit as training's, each column on its own, so an ensemble's table gives its members' maps side by side): what a
training run with those settings would serve, without training it again.

    python -m benchmarks.cold_calibration <version folder of a run with items withheld (cold_share > 0)>

Prints one JSON object: the validation curves, the chosen offset, factor and text map, and test metrics without and
with them (HR@10 and NDCG@10 overall, HR@10 on cold and warm targets with Wilson 95 % intervals), beside
popularity's and a random ranking's cold HR@10 on the same cases; and the smallest offset that reaches
``TARGET_COLD_HR`` on validation, with what it costs on test. Same split, ranking routine and tie rule as
``recstream evaluate``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import binomtest

from trainer.data import DEFAULT_DATASET, TEST, VALID, Dataset, default_cache_dir, first_users, load_movielens
from trainer.evaluate import (
    K,
    PublishedVersion,
    case_ranks,
    load_version,
    per_case_metrics,
    popularity,
    random_hit_rate,
    version_dataset,
    version_users,
    wilson_interval,
)
from trainer.modeling import ridge_map
from trainer.sequences import EvalCases, eval_cases
from trainer.text import embed_texts, text_model_named
from trainer.train import items_with_ids
from trainer.version import read_text_adapter

logger = logging.getLogger(__name__)

#: Offsets tried, in units of the spread (standard deviation) of the version's validation logits (beyond half a
#: spread the cold items fill every top 10 on ML-100K: measured with a coarser grid up to 4).
OFFSETS_IN_SPREADS = np.round(np.arange(0.0, 0.501, 0.025), 3)
#: Factors tried on the cold items' logits (beyond 1.25 the same).
SCALES = np.round(np.arange(1.0, 1.251, 0.025), 3)
#: Text maps tried: ``text_map_ridge`` x ``text_map_scale``.
MAP_RIDGES = (0.3, 1.0, 3.0, 10.0, 30.0)
MAP_SCALES = (0.25, 0.5, 0.75, 1.0)
#: The cold-start target of the project's issue: the calibration that reaches it on validation, and its price.
TARGET_COLD_HR = 0.075


def split_scores(version: PublishedVersion, split: int) -> tuple[EvalCases, np.ndarray]:
    cases = eval_cases(version.dataset, split, version.report["config"]["max_len"])
    return cases, version.full_sort(cases.arrays)  # [B, N]


def text_map_tables(
    version_dir: Path, version: PublishedVersion, data: Dataset
) -> dict[tuple[float, float], np.ndarray]:
    """(ridge, scale) -> the version's item table [N+1, H] with every ``MAP_RIDGES`` x ``MAP_SCALES`` text map
    added to the rows of its items without an id embedding (the rows of the rest are the same)."""
    texts_of = dict(zip(data.catalog.item_ids, data.catalog.texts, strict=True))
    model = text_model_named(version.report["text_model"])
    adapter, tuned = read_text_adapter(version_dir, model.name)  # the new-item adapter: text -> a row without id
    texts = embed_texts(
        [texts_of[i] for i in version.dataset.catalog.item_ids], default_cache_dir(), model, tuned=tuned
    )
    id_part = version.table[1:] - (texts @ adapter["weight"].T + adapter["bias"])  # [N, H]: id - unknown id
    has_id = items_with_ids(version.dataset, version.withheld)
    tables = {}
    for ridge in MAP_RIDGES:
        weight, bias = (
            t.numpy() for t in ridge_map(torch.from_numpy(texts[has_id]), torch.from_numpy(id_part[has_id]), ridge)
        )
        moved = texts[~has_id] @ weight.T + bias  # [N', H]
        for scale in MAP_SCALES:
            table = version.table.copy()
            table[1:][~has_id] += scale * moved
            tables[ridge, scale] = table
    return tables


def metrics_at(
    scores: np.ndarray, cases: EvalCases, cold_items: np.ndarray, offset: float = 0.0, scale: float = 1.0
) -> dict[str, Any]:
    """Served metrics (earlier items excluded) with the cold items' scores multiplied by ``scale`` and then
    shifted by ``offset`` (``cold_items`` [N]: 1 for a cold item, 0 else)."""
    calibrated = scores + cold_items * ((scale - 1.0) * scores + offset)  # [B, N]
    _, served = case_ranks(calibrated, cases)
    per_case = per_case_metrics(served)
    cold = cold_targets(cases, cold_items)
    hits = per_case[f"hr@{K}"]
    return {
        "offset": offset,
        "scale": scale,
        f"ndcg@{K}": float(per_case[f"ndcg@{K}"].mean()),
        f"hr@{K}": float(hits.mean()),
        f"cold_hr@{K}": _rate(hits, cold),
        f"cold_hr@{K}_ci95": wilson_interval(int(hits[cold].sum()), int(cold.sum())),
        f"warm_hr@{K}": _rate(hits, ~cold),
        f"warm_hr@{K}_ci95": wilson_interval(int(hits[~cold].sum()), int((~cold).sum())),
        "cold_cases": int(cold.sum()),
    }


def cold_targets(cases: EvalCases, cold_items: np.ndarray) -> np.ndarray:  # bool [B]
    return cold_items[cases.arrays["target_items"] - 1] > 0


def served_hits(scores: np.ndarray, cases: EvalCases) -> np.ndarray:  # bool [B]: the target in the served top 10
    return case_ranks(scores, cases)[1] <= K


def cold_pairs(without: np.ndarray, with_: np.ndarray, cold: np.ndarray) -> dict[str, float]:
    """The cold targets (``cold`` [B]) that only one of two rankings hits (``without``, ``with_``: bool [B], the
    target in the top 10), and the exact sign test's two-sided p on them."""
    gained, lost = int((with_ & ~without & cold).sum()), int((without & ~with_ & cold).sum())
    return {
        "hit_with_only": gained,
        "hit_without_only": lost,
        "sign_test_p": binomtest(gained, gained + lost).pvalue if gained + lost else 1.0,
    }


def _rate(hits: np.ndarray, cases: np.ndarray) -> float:
    return float(hits[cases].mean()) if cases.any() else float("nan")


def choose(curve: list[dict[str, Any]], baseline: dict[str, Any]) -> dict[str, Any]:
    """The validation row of ``curve`` with the highest cold HR@10 among those whose NDCG@10 over every target is
    at least ``baseline``'s (no calibration), the higher NDCG@10 among equals; ``baseline`` if there is none."""
    allowed = [row for row in curve if row[f"ndcg@{K}"] >= baseline[f"ndcg@{K}"]]
    return max(allowed, key=lambda row: (row[f"cold_hr@{K}"], row[f"ndcg@{K}"]), default=baseline)


def calibrate(version_dir: Path, data: Dataset) -> dict[str, Any]:
    """The offset chosen on validation and the test metrics without and with it (the module docstring)."""
    version = load_version(version_dir, data)
    cold_items = version.withheld.astype(np.float64)  # [N]: 1 for the items kept out of training
    if not cold_items.any():
        raise SystemExit(f"{version_dir} withheld no items (cold_share 0): nothing to calibrate on")
    valid_cases, valid_scores = split_scores(version, VALID)
    baseline = metrics_at(valid_scores, valid_cases, cold_items)
    spread = float(valid_scores.std())
    offsets = [metrics_at(valid_scores, valid_cases, cold_items, offset=float(k * spread)) for k in OFFSETS_IN_SPREADS]
    scales = [metrics_at(valid_scores, valid_cases, cold_items, scale=float(f)) for f in SCALES]
    tables = text_map_tables(version_dir, version, data)
    mapped = [
        {"ridge": ridge, "map_scale": scale}
        | metrics_at(replace(version, table=table).full_sort(valid_cases.arrays), valid_cases, cold_items)
        for (ridge, scale), table in tables.items()
    ]
    curves = {"offset": offsets, "scale": scales, "text_map": mapped}
    best = {kind: choose(curve, baseline) for kind, curve in curves.items()}
    test_cases, test_scores = split_scores(version, TEST)
    mapped_test = {
        setting: replace(version, table=table).full_sort(test_cases.arrays) for setting, table in tables.items()
    }
    chosen_scores = mapped_test.get((best["text_map"].get("ridge"), best["text_map"].get("map_scale")), test_scores)
    cold_rows = np.flatnonzero(version.withheld[test_cases.arrays["target_items"] - 1])
    pop = np.broadcast_to(popularity(version.dataset, version.withheld), test_scores.shape)
    _, pop_served = case_ranks(pop, test_cases)
    return {
        "version": str(version_dir),
        "logit_spread": spread,
        "valid_offsets": offsets,
        "valid_scales": scales,
        "valid_text_maps": mapped,
        "chosen": {
            kind: {k: row[k] for k in ("offset", "scale", "ridge", "map_scale") if k in row}
            for kind, row in best.items()
        },
        "test_without": metrics_at(test_scores, test_cases, cold_items),
        "test_with_offset": metrics_at(test_scores, test_cases, cold_items, offset=best["offset"]["offset"]),
        "test_with_scale": metrics_at(test_scores, test_cases, cold_items, scale=best["scale"]["scale"]),
        "test_with_text_map": metrics_at(chosen_scores, test_cases, cold_items),
        "test_text_map_cold_pairs": cold_pairs(
            served_hits(test_scores, test_cases),
            served_hits(chosen_scores, test_cases),
            cold_targets(test_cases, cold_items),
        ),
        "test_text_maps": [  # every setting on test, for how much the choice matters (it is made on validation)
            {"ridge": ridge, "map_scale": scale} | metrics_at(scores, test_cases, cold_items)
            for (ridge, scale), scores in mapped_test.items()
        ],
        "target_cold_hr": TARGET_COLD_HR,
        "test_at_target_offset": next(
            (
                metrics_at(test_scores, test_cases, cold_items, offset=row["offset"])
                for row in offsets
                if row[f"cold_hr@{K}"] >= TARGET_COLD_HR
            ),
            None,
        ),
        f"test_pop_cold_hr@{K}": float((pop_served[cold_rows] <= K).mean()),
        f"test_random_cold_hr@{K}": random_hit_rate(test_cases, cold_rows, len(version.dataset.catalog)),
    }


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version", type=Path, help="version folder of a run with cold_share > 0")
    parser.add_argument("--dataset", default=None, help="default: the version's own (its report.json)")
    args = parser.parse_args()
    name = args.dataset or version_dataset(args.version) or DEFAULT_DATASET
    data = first_users(load_movielens(dataset=name), version_users(args.version))
    json.dump({"dataset": name} | calibrate(args.version, data), sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
