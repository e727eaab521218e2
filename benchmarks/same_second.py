"""The same-second question: how much of a version's score comes from the one order rule's tie order?

MovieLens stores ratings per second, and a user often rates several films in one second. The one order rule
(``trainer.data.ORDER_RULE``) puts such events in item-id order, so a target that shares its second with the event
before it always has an id that sorts after that event's. A model can learn that order instead of behaviour. This
measures, on one split of a published version, with the project's ranking routine and tie rule
(``trainer.evaluate.target_ranks``, earlier items excluded, as served):

- the share of targets that share their second with the event before them, and the version's HR/NDCG/MRR@10 on
  those targets and on the rest;
- ``successor popularity``, a rule that knows nothing of behaviour beyond popularity: the items whose id sorts after
  the user's last item first, each group ordered by popularity (train counts), beside plain popularity.

    python -m benchmarks.same_second <version folder> [--dataset ml-1m] [--split test]

Prints one JSON object. Where successor popularity beats popularity, the tie order carries signal, and a figure
measured under this rule cannot be set beside one measured under another (RecBole's published runs keep the files'
row order within a second).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from trainer.data import DEFAULT_DATASET, TEST, VALID, Dataset, load_movielens
from trainer.evaluate import load_version, popularity, rank_metrics, target_ranks, version_dataset
from trainer.sequences import EvalCases, eval_cases

SPLITS = {"test": TEST, "valid": VALID}


def shares_its_second(dataset: Dataset, cases: EvalCases, split: int) -> np.ndarray:
    """bool [B]: whether each case's target has the timestamp of the user's event just before it."""
    users = {u.user_id: u for u in dataset.users}
    flags = []
    for user_id in cases.user_ids:
        user = users[user_id]
        target = int(np.flatnonzero(user.split == split)[0])  # eval_cases keeps only users with target > 0
        flags.append(bool(user.timestamps[target] == user.timestamps[target - 1]))
    return np.array(flags, dtype=bool)


def successor_scores(item_ids: list[str], last_items: np.ndarray, counts: np.ndarray) -> np.ndarray:  # [B, N]
    """Popularity, with every item whose id sorts after the case's last item (``last_items`` [B], rows 1..N) ranked
    above every item whose id does not."""
    ids = np.asarray(item_ids)
    after = ids[None, :] > ids[last_items - 1][:, None]  # [B, N]
    return counts[None, :] + np.where(after, counts.max() + 1.0, 0.0)


def same_second_report(version_dir: Path, data: Dataset, split: int) -> dict[str, Any]:
    version = load_version(version_dir, data)
    cases = eval_cases(version.dataset, split, version.report["config"]["max_len"])
    targets = cases.arrays["target_items"]
    same = shares_its_second(version.dataset, cases, split)
    ranks = target_ranks(version.full_sort(cases.arrays), targets, cases.seen)
    counts = popularity(version.dataset, version.withheld)
    plain = np.broadcast_to(counts, (len(targets), len(counts)))  # [B, N]
    last_items = np.array([seen[-1] for seen in cases.seen], dtype=np.int64)
    return {
        "cases": len(targets),
        "same_second_share": float(same.mean()),
        "version": {
            "all": rank_metrics(ranks),
            "same_second": rank_metrics(ranks[same]),
            "other": rank_metrics(ranks[~same]),
        },
        "popularity": rank_metrics(target_ranks(plain, targets, cases.seen)),
        "successor_popularity": rank_metrics(
            target_ranks(successor_scores(version.dataset.catalog.item_ids, last_items, counts), targets, cases.seen)
        ),
    }


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version", type=Path, help="a published version folder")
    parser.add_argument("--dataset", default=None, help="default: the version's own (its report.json)")
    parser.add_argument("--split", choices=sorted(SPLITS), default="test")
    args = parser.parse_args()
    name = args.dataset or version_dataset(args.version) or DEFAULT_DATASET
    report = same_second_report(args.version, load_movielens(dataset=name), SPLITS[args.split])
    json.dump({"dataset": name, "split": args.split} | report, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
