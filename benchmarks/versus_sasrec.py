"""A published version against RecBole SASRec runs (or another version), user by user on the same test split,
with a paired bootstrap.

    python -m benchmarks.versus_sasrec model_repository/recstream/4 \\
        .cache/recstream/recbole/{rescored,results-seed2021,results-seed2022}.json
    python -m benchmarks.versus_sasrec model_repository/recstream/5 model_repository/recstream/4  # new vs last
    python -m benchmarks.versus_sasrec var/ml-1m/recstream/1 .cache/recstream/recbole-ml-1m/results.json  # ML-1M

Each baseline is a JSON file that ``benchmarks/recbole/sasrec.py`` writes (its ``test_ranks``: each test user's
target rank, without and with earlier items excluded) or a published version's folder. A version's ranks come
from its served files (``encoder.onnx`` + ``item_embeddings.npy``) on the dataset it was trained on (its
report.json; ``--dataset`` names it), as ``recstream evaluate`` computes them, with the ranking routine and tie rule
(``trainer.evaluate.target_ranks``) that the SASRec script uses too. A results JSON must be of the same dataset,
order rule and tie rule: older files, made before them, are refused (their test targets differ). For each
baseline and metric, the ratio ours / baseline and its 95 % paired-bootstrap interval over the test users
are printed as JSON; with several baselines (e.g. SASRec's seeds), also the ratio to their mean. The interval
shows how much of a difference the test set can resolve (it does not include training noise).

When the version and a baseline version withheld the same items from training (``cold_share``, the same seed),
their cold test targets are the same users, and ``cold_hr@10`` compares them too: the targets each one alone hits
in its top 10 and an exact two-sided sign test on those (McNemar's exact test).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from itertools import compress
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from trainer.data import DEFAULT_DATASET, MOVIELENS, ORDER_RULE, TEST, first_users, load_movielens
from trainer.evaluate import (
    TIE_RULE,
    K,
    case_ranks,
    load_version,
    paired_ratio,
    per_case_metrics,
    version_dataset,
    version_users,
)
from trainer.sequences import eval_cases

logger = logging.getLogger(__name__)

Ranks = dict[str, tuple[int, int]]  # test user -> target rank (not excluding, excluding earlier items)


def version_ranks(version_dir: Path, dataset: str | None = None) -> tuple[Ranks, frozenset[str]]:
    """Each test user's target rank from the version's served files, on ``dataset`` (default: its own), and the
    test users whose target is an item the version withheld from training (its cold cases)."""
    name = dataset or version_dataset(version_dir) or DEFAULT_DATASET
    data = first_users(load_movielens(dataset=name), version_users(version_dir))
    version = load_version(version_dir, data)
    cases = eval_cases(version.dataset, TEST, version.report["config"]["max_len"])
    ranks = zip(*case_ranks(version.full_sort(cases.arrays), cases), strict=True)
    cold = compress(cases.user_ids, version.withheld[cases.arrays["target_items"] - 1])
    return dict(zip(cases.user_ids, ranks, strict=True)), frozenset(cold)


def baseline_ranks(path: Path, dataset: str) -> tuple[Ranks, frozenset[str] | None]:
    """A published version's folder (ranks and cold cases), or the results JSON of ``benchmarks/recbole/sasrec.py``
    (ranks only; it must be of ``dataset``, with this order rule and tie rule)."""
    if path.is_dir():
        return version_ranks(path, dataset)
    results = json.loads(path.read_text(encoding="utf-8"))
    made = results.get("dataset", {})
    if made.get("order") != ORDER_RULE or results.get("tie_rule") != TIE_RULE:
        raise ValueError(
            f"{path} was made before the order rule and tie rule of this comparison (another split): rerun "
            "benchmarks/recbole/sasrec.py"
        )
    if made.get("name") != dataset:
        raise ValueError(f"{path} is of {made.get('name')}, the version of {dataset}")
    return {user: tuple(ranks) for user, ranks in results["test_ranks"].items()}, None


def compare_cold(ours: Ranks, theirs: Ranks, cold: frozenset[str]) -> dict[str, object]:
    """Cold HR@10 (earlier items excluded, as served) of both on the same cold test users, the users only one of
    them hits, and the exact sign test's two-sided p on those discordant users."""
    hit_ours = {u for u in cold if ours[u][1] <= K}
    hit_theirs = {u for u in cold if theirs[u][1] <= K}
    only_ours, only_theirs = len(hit_ours - hit_theirs), len(hit_theirs - hit_ours)
    discordant = only_ours + only_theirs
    return {
        "cases": len(cold),
        "ours": len(hit_ours) / len(cold),
        "theirs": len(hit_theirs) / len(cold),
        "hits_ours_only": only_ours,
        "hits_theirs_only": only_theirs,
        "hits_both": len(hit_ours & hit_theirs),
        "sign_test_p": binomtest(only_ours, discordant).pvalue if discordant else 1.0,
    }


def compare(ours: Ranks, baselines: dict[str, Ranks], resamples: int) -> dict[str, object]:
    """Per baseline (and their mean, if several) and metric: both means, the ratio and its paired interval."""
    for name, theirs in baselines.items():
        if ours.keys() != theirs.keys():
            raise ValueError(f"{name}: different test users, {len(ours.keys() ^ theirs.keys())} not in both")
    users = sorted(ours)
    report: dict[str, object] = {"users": len(users), "resamples": resamples}
    for column, suffix in ((0, "_all"), (1, "")):
        mine = per_case_metrics(np.array([ours[u][column] for u in users]))
        theirs = {
            name: per_case_metrics(np.array([ranks[u][column] for u in users])) for name, ranks in baselines.items()
        }
        if len(theirs) > 1:
            theirs["mean of the baselines"] = {m: np.mean([t[m] for t in theirs.values()], axis=0) for m in mine}
        for metric in mine:
            report[metric + suffix] = {
                name: {
                    "ours": float(mine[metric].mean()),
                    "theirs": float(t[metric].mean()),
                    **paired_ratio(mine[metric], t[metric], resamples),
                }
                for name, t in theirs.items()
            }
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("version_dir", type=Path)
    p.add_argument("baselines", type=Path, nargs="+", help="sasrec.py results JSON files or version folders")
    p.add_argument("--resamples", type=int, default=10_000)
    p.add_argument(
        "--dataset", choices=sorted(MOVIELENS), default=None, help="default: the one the version was trained on"
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    dataset = args.dataset or version_dataset(args.version_dir) or DEFAULT_DATASET
    logger.info("comparing on %s", dataset)
    ours, cold = version_ranks(args.version_dir, dataset)
    read = {str(path): baseline_ranks(path, dataset) for path in args.baselines}
    report = compare(ours, {name: ranks for name, (ranks, _) in read.items()}, args.resamples)
    if cold:
        same = {name: ranks for name, (ranks, theirs) in read.items() if theirs == cold}
        report[f"cold_hr@{K}"] = {name: compare_cold(ours, ranks, cold) for name, ranks in same.items()}
    sys.stdout.write(json.dumps({"version": args.version_dir.name, "dataset": dataset, **report}, indent=2) + "\n")


if __name__ == "__main__":
    main()
