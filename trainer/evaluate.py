"""Full-ranking evaluation (no sampled negatives), the popularity baseline, next-action AUC and the
faithfulness of occlusion attributions.

The model is seen only through two functions of window arrays: ``FullSort`` (the score of every item, which the
one ranking routine :func:`target_ranks` ranks) and ``NextAction`` (next-action logits). An in-memory model gives
them through its ``Recommender.full_sort_predict`` and ``encode`` (``trainer.train.batched``), a published version
through its ``encoder.onnx`` and item table (:class:`PublishedVersion`), so ``recstream evaluate`` measures exactly
what is served, with the same code as training. This module does not import torch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stream.schemas import EVENT_TYPES
from trainer.data import DEFAULT_DATASET, TEST, TRAIN, Catalog, Dataset, with_catalog, with_context
from trainer.sequences import (
    ENCODER_OUTPUTS,
    WINDOW_FIELDS,
    Arrays,
    EvalCases,
    encoder_inputs,
    eval_cases,
)
from trainer.version import EMBEDDINGS_FILE, ENCODER_FILE, ITEMS_FILE, REPORT_FILE, read_context

logger = logging.getLogger(__name__)

Encoder = Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]
"""{"item_vecs", "event_types", "age_s", "attention_mask"} -> (user_vec [B, H], action_logits [B, T])."""
FullSort = Callable[[Arrays], np.ndarray]
"""Window arrays (``WINDOW_FIELDS`` [B, L], item rows) -> the score of every item [B, N] (column j = item row j + 1)."""
NextAction = Callable[[Arrays], np.ndarray]
"""Window arrays (``WINDOW_FIELDS`` [B, L], item rows) -> next-action logits [B, T]."""

K = 10
BATCH = 256
CLICK, VIEW = EVENT_TYPES.index("click") + 1, EVENT_TYPES.index("view") + 1


def onnx_encoder(path: Path, threads: int = 2) -> Encoder:
    """A published ``encoder.onnx`` as an ``Encoder`` (onnxruntime, CPU)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]  # ENCODER_INPUTS, and the optional inputs it was trained with

    def run(inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        user_vec, action_logits = session.run(list(ENCODER_OUTPUTS), {n: inputs[n] for n in names})
        return user_vec, action_logits

    return run


# --- metric functions --------------------------------------------------------------------------------


TIE_RULE = (
    "pessimistic: rank = 1 + number of other ranked items scoring higher than or equal to the target, so a tie "
    "never helps the target; excluded items are left out of the ranking, not scored -inf"
)


def target_ranks(
    scores: np.ndarray, targets: np.ndarray, seen: list[np.ndarray] | None = None, chunk: int = 1024
) -> np.ndarray:
    """The one ranking routine of every comparison (our model, SASRec, popularity; ``benchmarks/recbole``
    uses it too): each case's 1-based rank of its target among all items.

    Tie rule (``TIE_RULE``), pessimistic: rank = 1 + the number of OTHER items scoring strictly higher + the
    number of OTHER items scoring exactly equal. A tie never helps the target, the rank does not depend on how
    items are numbered (unlike a tie break by id, which differs between RecBole's ids and ours), and a model that
    scores every item alike gets the last rank, not the first. With float model scores ties are rare; with
    popularity counts they are common, and the rule charges them to the target.

    ``scores`` [B, N] (column j = item row j + 1; no NaN), ``targets`` [B] item rows 1..N; with ``seen``, each
    case's earlier items (item rows; the target itself is never excluded) are left out of the ranking, as when
    served. Returns int64 [B]. Works ``chunk`` cases at a time, so ``scores`` may be a broadcast view.
    """
    scores = np.asarray(scores)
    targets = np.asarray(targets, dtype=np.int64)
    if scores.ndim != 2 or len(scores) != len(targets):
        raise ValueError(f"scores {scores.shape} must be [B, N] with B = {len(targets)} targets")
    if len(targets) and (targets.min() < 1 or targets.max() > scores.shape[1]):
        raise ValueError(f"target rows must lie in 1..{scores.shape[1]}")
    ranks = np.empty(len(targets), dtype=np.int64)
    for start in range(0, len(targets), chunk):
        block = np.array(scores[start : start + chunk], dtype=np.float64)  # [b, N], a copy
        if np.isnan(block).any():
            raise ValueError("scores contain NaN: a rank is undefined")
        cases = np.arange(len(block))
        columns = targets[start : start + chunk] - 1  # [b]
        target_scores = block[cases, columns]  # [b]
        ranked = np.ones(block.shape, dtype=bool)  # [b, N]: the items the target is ranked against
        ranked[cases, columns] = False  # the target itself
        if seen is not None:
            for row, items in enumerate(seen[start : start + chunk]):
                ranked[row, np.asarray(items, dtype=np.int64) - 1] = False
            ranked[cases, columns] = False
        ranks[start : start + chunk] = 1 + ((block >= target_scores[:, None]) & ranked).sum(1)
    return ranks


def rank_metrics(ranks: np.ndarray, k: int = K) -> dict[str, float]:
    """HR@k, NDCG@k (one relevant item: 1 / log2(1 + rank)) and MRR@k from 1-based ranks."""
    return {name: float(values.mean()) for name, values in per_case_metrics(ranks, k).items()}


def per_case_metrics(ranks: np.ndarray, k: int = K) -> dict[str, np.ndarray]:
    """Each case's HR@k, NDCG@k and MRR@k (their means are :func:`rank_metrics`)."""
    hit = ranks <= k
    return {
        f"hr@{k}": hit.astype(float),
        f"ndcg@{k}": np.where(hit, 1 / np.log2(1 + ranks), 0.0),
        f"mrr@{k}": np.where(hit, 1 / ranks, 0.0),
    }


def paired_ratio(ours: np.ndarray, theirs: np.ndarray, resamples: int = 10_000, seed: int = 0) -> dict[str, float]:
    """mean(ours) / mean(theirs) over the same cases, with a paired bootstrap over cases: the median and the
    central 95 % of the ratio when the cases are drawn again with replacement (both models keep their pairs)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(len(ours), size=(resamples, len(ours)))  # [R, n]
    ratios = ours[draws].mean(1) / theirs[draws].mean(1)  # [R]
    low, median, high = np.percentile(ratios, [2.5, 50, 97.5])
    return {"ratio": float(ours.mean() / theirs.mean()), "median": float(median), "ci95": [float(low), float(high)]}


def wilson_interval(hits: int, cases: int, z: float = 1.96) -> list[float]:
    """The 95 % Wilson score interval of a hit rate ``hits / cases`` (a binomial proportion): unlike the normal
    approximation it stays inside [0, 1] and is honest for the few hits of a cold-start evaluation."""
    if cases == 0:
        return [float("nan"), float("nan")]
    p, z2 = hits / cases, z * z
    centre = (p + z2 / (2 * cases)) / (1 + z2 / cases)
    half = z * math.sqrt(p * (1 - p) / cases + z2 / (4 * cases * cases)) / (1 + z2 / cases)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def random_hit_rate(cases: EvalCases, rows: np.ndarray, items: int, k: int = K) -> float:
    """Expected HR@k of a uniformly random ranking over the ``rows`` cases: each case's target is ranked among
    the ``items`` of the catalogue less its earlier items (left out, as when served), so P(hit) = k / candidates."""
    if not len(rows):
        return float("nan")
    targets = cases.arrays["target_items"]
    candidates = np.array([items - len(set(cases.seen[r].tolist()) - {int(targets[r])}) for r in rows])
    return float(np.minimum(1.0, k / candidates).mean())


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC (Mann-Whitney U with average ranks for ties); None when only one class is present."""
    labels = labels.astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores))
    starts = np.flatnonzero(np.append(True, sorted_scores[1:] != sorted_scores[:-1]))
    ends = np.append(starts[1:], len(scores))
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2  # average of the 1-based ranks start+1..end
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# --- running an encoder --------------------------------------------------------------------------------


def encode_all(encoder: Encoder, table: np.ndarray, arrays: Arrays) -> tuple[np.ndarray, np.ndarray]:
    """user_vec [B, H] and action_logits [B, T] of every row of ``arrays``, in batches."""
    users, actions = [], []
    for start in range(0, len(arrays["items"]), BATCH):
        user_vec, action_logits = encoder(encoder_inputs(arrays, table, slice(start, start + BATCH)))
        users.append(user_vec)
        actions.append(action_logits)
    return np.concatenate(users), np.concatenate(actions)


def popularity(dataset: Dataset, withheld: np.ndarray) -> np.ndarray:
    """[N] train-event counts per item (withheld items: 0); ties are left to :func:`target_ranks`' rule, as in
    the RecBole baseline's popularity."""
    counts = np.zeros(len(dataset.catalog))
    for user in dataset.users:
        train_items = user.items[user.split == TRAIN]
        np.add.at(counts, train_items - 1, 1)
    counts[withheld] = 0
    return counts


def case_ranks(scores: np.ndarray, cases: EvalCases) -> tuple[np.ndarray, np.ndarray]:
    """Each case's target rank [B]: earlier items not excluded (``_all``), and excluded (as served)."""
    targets = cases.arrays["target_items"]
    return target_ranks(scores, targets), target_ranks(scores, targets, cases.seen)


def ranking_report(scores: np.ndarray, cases: EvalCases, withheld: np.ndarray, prefix: str = "") -> dict[str, float]:
    """HR/NDCG/MRR@10 with earlier items excluded, the same without (``_all``), and cold HR@10."""
    ranks_all, served = case_ranks(scores, cases)
    report = {prefix + k: v for k, v in rank_metrics(served).items()}
    report |= {f"{prefix}{k}_all": v for k, v in rank_metrics(ranks_all).items()}
    cold = withheld[cases.arrays["target_items"] - 1]
    report[f"{prefix}cold_hr@{K}"] = float((served[cold] <= K).mean()) if cold.any() else float("nan")
    return report


def evaluate(
    full_sort: FullSort,
    next_action: NextAction,
    dataset: Dataset,
    withheld: np.ndarray,
    max_len: int,
    split: int = TEST,
    faithfulness_users: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics of the model seen through ``full_sort`` and ``next_action`` (the module docstring) on ``split``
    (one case per user): ``ndcg@10, hr@10, mrr@10`` (earlier items excluded), the ``_all`` variants (not
    excluded), ``cold_hr@10``, ``next_action_auc``, the popularity baseline (``pop_*``) and, with
    ``faithfulness_users`` > 0, the occlusion faithfulness check."""
    cases = eval_cases(dataset, split, max_len)
    cold_rows = np.flatnonzero(withheld[cases.arrays["target_items"] - 1])
    report: dict[str, Any] = {
        "cases": len(cases.user_ids),
        "cold_cases": len(cold_rows),
        f"random_cold_hr@{K}": random_hit_rate(cases, cold_rows, len(dataset.catalog)),
    }
    report |= ranking_report(full_sort(cases.arrays), cases, withheld)
    types = cases.arrays["target_types"]
    clicks_or_views = np.isin(types, [CLICK, VIEW])
    action_logits = next_action(cases.arrays)  # [B, T]
    click_margin = action_logits[:, CLICK - 1] - action_logits[:, VIEW - 1]  # [B]
    report["next_action_auc"] = roc_auc(types[clicks_or_views] == CLICK, click_margin[clicks_or_views])
    pop_scores = np.broadcast_to(popularity(dataset, withheld), (len(types), len(dataset.catalog)))
    report |= ranking_report(pop_scores, cases, withheld, prefix="pop_")
    if faithfulness_users:
        report["faithfulness"] = occlusion_faithfulness(full_sort, cases, faithfulness_users, seed)
    return report


def popularity_baseline(dataset: Dataset, split: int = TEST) -> dict[str, Any]:
    """The popularity baseline alone (train-event counts, no model), on ``split``: ``pop_hr@10, pop_ndcg@10,
    pop_mrr@10`` with the user's earlier items excluded and the ``_all`` variants without; the same numbers as
    the ``pop_*`` of :func:`evaluate` and of the RecBole baseline script on the same split. Seconds, even on
    ML-1M."""
    cases = eval_cases(dataset, split, max_len=1)  # the history window is not used; ``seen`` is every earlier item
    withheld = np.zeros(len(dataset.catalog), dtype=bool)
    scores = np.broadcast_to(popularity(dataset, withheld), (len(cases.user_ids), len(dataset.catalog)))
    report: dict[str, Any] = {"cases": len(cases.user_ids), "items": len(dataset.catalog), "tie_rule": TIE_RULE}
    report |= {k: v for k, v in ranking_report(scores, cases, withheld, prefix="pop_").items() if "cold" not in k}
    return report


# --- faithfulness of occlusion attribution ---------------------------------------------------------------


def occlude(arrays: Arrays, row: int) -> Arrays:
    """One copy of case ``row`` per real window position, with that event masked out (as if absent)."""
    positions = np.flatnonzero(arrays["attention_mask"][row])
    out = {name: np.repeat(arrays[name][row : row + 1], len(positions), axis=0) for name in WINDOW_FIELDS}
    copies = np.arange(len(positions))
    for name in WINDOW_FIELDS:  # every field of the event, as padding has it
        out[name][copies, positions] = 0
    return out


def occlusion_faithfulness(full_sort: FullSort, cases: EvalCases, users: int, seed: int) -> dict[str, Any]:
    """For ``users`` random test cases: the attribution of a window event is the drop of the top item's
    logit when that event is masked out (what the served model reports). Removing the top-attributed event
    vs a random other event: mean logit drop, mean drop of the top item's softmax probability, and the
    share of cases where the top item falls out of the top 10 (the last two are not what attribution
    maximises, so they test it rather than restate it)."""
    rng = np.random.default_rng(seed)
    rows = [r for r in range(len(cases.user_ids)) if cases.arrays["attention_mask"][r].sum() >= 2]
    rows = sorted(rng.choice(rows, size=min(users, len(rows)), replace=False))
    stats: dict[str, list[float]] = {
        k: [] for k in ("logit_top", "logit_random", "prob_top", "prob_random", "out_top", "out_random")
    }
    for row in rows:
        single = {name: cases.arrays[name][row : row + 1] for name in WINDOW_FIELDS}
        base_logits = full_sort(single)  # [1, N]
        base_logits[0, cases.seen[row] - 1] = -np.inf
        top = int(base_logits.argmax())
        occluded = occlude(cases.arrays, row)
        logits = full_sort(occluded)  # [P, N]
        logits[:, cases.seen[row] - 1] = -np.inf
        drops = base_logits[0, top] - logits[:, top]  # [P]: the attribution of each window event
        chosen = {
            "top": int(drops.argmax()),
            "random": int(rng.choice(np.delete(np.arange(len(drops)), drops.argmax()))),
        }
        base_prob = _softmax(base_logits[0])[top]
        for name, p in chosen.items():
            stats[f"logit_{name}"].append(float(drops[p]))
            stats[f"prob_{name}"].append(float(base_prob - _softmax(logits[p])[top]))
            rank = target_ranks(logits[p : p + 1], np.array([top + 1]), [cases.seen[row]])[0]
            stats[f"out_{name}"].append(float(rank > K))
    top_prob, random_prob = np.array(stats["prob_top"]), np.array(stats["prob_random"])
    return {
        "users": len(rows),
        "mean_logit_drop_top": float(np.mean(stats["logit_top"])),
        "mean_logit_drop_random": float(np.mean(stats["logit_random"])),
        "mean_prob_drop_top": float(top_prob.mean()),
        "mean_prob_drop_random": float(random_prob.mean()),
        "share_prob_drop_top_gt_random": float((top_prob > random_prob).mean()),
        "share_top_item_leaves_top10_top": float(np.mean(stats["out_top"])),
        "share_top_item_leaves_top10_random": float(np.mean(stats["out_random"])),
    }


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max())
    return z / z.sum()


# --- a published version --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishedVersion:
    """What a version folder serves, with ``dataset`` renumbered to its catalogue."""

    report: dict[str, Any]  # its report.json
    dataset: Dataset
    withheld: np.ndarray  # bool [N]: items kept out of its training (cold-start evaluation)
    table: np.ndarray  # item_embeddings.npy [N+1, H]
    encoder: Encoder  # encoder.onnx through onnxruntime

    def full_sort(self, arrays: Arrays) -> np.ndarray:  # [B, N]
        """The served scores: encoder.onnx's user vectors @ the item table (a ``FullSort``)."""
        return encode_all(self.encoder, self.table, arrays)[0] @ self.table[1:].T

    def next_action(self, arrays: Arrays) -> np.ndarray:  # [B, T]
        """encoder.onnx's next-action logits (a ``NextAction``)."""
        return encode_all(self.encoder, self.table, arrays)[1]


def version_dataset(version_dir: Path) -> str | None:
    """The named dataset (``trainer.data.MOVIELENS``) a version was trained on, from its report.json's
    ``data.dataset``; versions from before that field were trained on ml-100k. None for an event log."""
    data = orjson.loads((version_dir / REPORT_FILE).read_bytes()).get("data", {})
    if "dataset" in data:
        return data["dataset"]
    return DEFAULT_DATASET if str(data.get("events", "")).startswith("movielens-100k") else None


def version_users(version_dir: Path) -> int | None:
    """``data.max_users`` of a version's report.json: a smoke version trained on the first N users only."""
    return orjson.loads((version_dir / REPORT_FILE).read_bytes()).get("data", {}).get("max_users")


def load_version(version_dir: Path, dataset: Dataset, threads: int = 2) -> PublishedVersion:
    report = orjson.loads((version_dir / REPORT_FILE).read_bytes())
    items = orjson.loads((version_dir / ITEMS_FILE).read_bytes())
    catalog = Catalog(items["item_ids"], items["titles"], texts=items["item_ids"])  # texts are not needed here
    withheld = np.isin(catalog.item_ids, report["data"]["withheld_items"])
    table = np.load(version_dir / EMBEDDINGS_FILE)
    dataset = with_catalog(dataset, catalog)
    if (vocabulary := read_context(version_dir)) is not None:
        dataset = with_context(dataset, vocabulary)  # the events' context as the version's tokens
    return PublishedVersion(report, dataset, withheld, table, onnx_encoder(version_dir / ENCODER_FILE, threads))


def evaluate_version(
    version_dir: Path, dataset: Dataset, faithfulness_users: int = 0, split: int = TEST
) -> dict[str, Any]:
    """Evaluate the served artifacts of a version folder (encoder.onnx + item_embeddings.npy) on the test
    (or validation) split, with the withheld (cold) items and window length recorded in its report.json. A
    version trained on every item has no cold items of its own: its test ``cold_hr@10`` and the popularity
    baseline's are the companion models', recorded in report.json's ``cold_start`` section at training time
    (``cold_hr@10_source`` says so)."""
    version = load_version(version_dir, dataset)
    report, withheld = version.report, version.withheld
    metrics = evaluate(
        version.full_sort,
        version.next_action,
        version.dataset,
        withheld,
        report["config"]["max_len"],
        faithfulness_users=faithfulness_users,
        seed=report["config"]["seed"],
        split=split,
    )
    if split == TEST and not withheld.any() and "cold_start" in report:
        metrics |= companion_cold_start(report["cold_start"], version.dataset, report["config"]["max_len"])
    return metrics


def companion_cold_start(cold: dict[str, Any], dataset: Dataset, max_len: int) -> dict[str, Any]:
    """The cold-start metrics of a version trained on every item: its companions' pooled ``cold_hr@10`` (report.json's
    ``cold_start``) with its Wilson interval, beside popularity's and a random ranking's on the same cold cases
    (each companion's withheld items, its test targets)."""
    cases = eval_cases(dataset, TEST, max_len)
    targets = cases.arrays["target_items"]
    randoms, weights = [], []
    for companion in cold["companions"]:
        withheld = np.isin(dataset.catalog.item_ids, companion["withheld_items"])
        rows = np.flatnonzero(withheld[targets - 1])
        randoms.append(random_hit_rate(cases, rows, len(dataset.catalog)))
        weights.append(len(rows))
    pooled = cold["metrics"]
    return {
        f"cold_hr@{K}": pooled[f"cold_hr@{K}"],
        f"cold_hr@{K}_ci95": wilson_interval(pooled[f"cold_hits@{K}"], pooled["cold_cases"]),
        f"pop_cold_hr@{K}": pooled[f"pop_cold_hr@{K}"],
        f"random_cold_hr@{K}": float(np.average(randoms, weights=weights)),
        f"cold_hr@{K}_source": (
            f"companion models, {cold['cold_share']:.0%} of items withheld, {pooled['cold_cases']} cold cases"
        ),
    }
