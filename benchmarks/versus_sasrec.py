"""A published version against RecBole SASRec, user by user on the same test split, with a paired bootstrap.

    python -m benchmarks.versus_sasrec model_repository/recstream/3 .cache/recstream/recbole/results.json

The SASRec file is what ``benchmarks/recbole/sasrec.py`` writes (its ``test_ranks``: each test user's target
rank, without and with earlier items excluded). The version's ranks come from its served files
(``encoder.onnx`` + ``item_embeddings.npy``), as ``recstream evaluate`` computes them. For each metric the
ratio ours / SASRec and its 95 % paired-bootstrap interval over the 943 test users are printed as JSON: the
interval shows how much of a difference the test set can resolve (it does not include training noise).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from trainer.data import TEST, load_movielens
from trainer.evaluate import case_ranks, encode_all, load_version, paired_ratio, per_case_metrics
from trainer.sequences import eval_cases


def version_ranks(version_dir: Path) -> dict[str, tuple[int, int]]:
    """Each test user's target rank from the version's served files: (not excluding, excluding earlier items)."""
    version = load_version(version_dir, load_movielens())
    cases = eval_cases(version.dataset, TEST, version.report["config"]["max_len"])
    user_vec, _ = encode_all(version.encoder, version.table, cases.arrays)
    ranks = zip(*case_ranks(user_vec @ version.table[1:].T, cases), strict=True)
    return dict(zip(cases.user_ids, ranks, strict=True))


def compare(ours: dict[str, tuple[int, int]], theirs: dict[str, list[int]], resamples: int) -> dict[str, object]:
    if ours.keys() != theirs.keys():
        raise ValueError(f"different test users: {len(ours.keys() ^ theirs.keys())} not in both")
    users = sorted(ours)
    report: dict[str, object] = {"users": len(users), "resamples": resamples}
    for column, suffix in ((0, "_all"), (1, "")):
        mine = per_case_metrics(np.array([ours[u][column] for u in users]))
        sasrec = per_case_metrics(np.array([theirs[u][column] for u in users]))
        for name in mine:
            report[name + suffix] = {
                "ours": float(mine[name].mean()),
                "sasrec": float(sasrec[name].mean()),
                **paired_ratio(mine[name], sasrec[name], resamples),
            }
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("version_dir", type=Path)
    p.add_argument("sasrec_results", type=Path, help="JSON written by benchmarks/recbole/sasrec.py")
    p.add_argument("--resamples", type=int, default=10_000)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    theirs = json.loads(args.sasrec_results.read_text(encoding="utf-8"))["test_ranks"]
    report = compare(version_ranks(args.version_dir), theirs, args.resamples)
    sys.stdout.write(json.dumps({"version": args.version_dir.name, **report}, indent=2) + "\n")


if __name__ == "__main__":
    main()
