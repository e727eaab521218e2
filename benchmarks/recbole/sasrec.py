"""RecBole 1.2.1 SASRec and a popularity baseline on MovieLens-100K, on exactly recstream's split.

The split comes from ``trainer.data.split_by_time`` (per user, stable sort by (timestamp, file row):
last = test, second-last = validation, rest = train). It is written as RecBole benchmark files (one row per
prediction: ``user_id, item_id_list (last 50 earlier items), item_id``), so RecBole trains and evaluates on
these rows only.

Options use ``--key value`` (RecBole itself parses ``--key=value``). Run from the repository root with the
environment of ``benchmarks/recbole/setup.sh``; see docs/BENCHMARKS.md, "RecBole baselines".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import recbole
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.trainer import Trainer
from recbole.utils import get_model, get_trainer, init_seed
from recbole.utils.logger import RemoveColorFilter

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from trainer.data import TEST, TRAIN, VALID, split_by_time  # noqa: E402  (the project's own split rule)

logger = logging.getLogger("recbole_sasrec")
DATASET = "ml-100k-recstream"  # not "ml-100k": RecBole then forces data_path to its bundled copy
MAX_LEN = 50
K = 10
Sequences = dict[str, list[str]]  # user token -> item tokens, time order


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=12, help="epoch cap (default 12, ~2 min/epoch on 1 CPU thread)")
    p.add_argument("--patience", type=int, default=10, help="early stopping: epochs without valid MRR@10 gain")
    p.add_argument("--work-dir", type=Path, default=Path(".cache/recstream/recbole"))
    p.add_argument("--out", type=Path, default=None, help="results JSON (default <work-dir>/results.json)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 leaves a core to others)")
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument(
        "--checkpoint", type=Path, default=None, help="re-score this saved SASRec checkpoint instead of training one"
    )
    args, unknown = p.parse_known_args()
    if unknown:
        p.error(f"unknown options {unknown} (use '--key value', not '--key=value')")
    sys.argv = sys.argv[:1]  # nothing left for RecBole's own command-line parsing
    return args


def load_sequences(inter_path: Path) -> Sequences:
    """Per-user item sequences in split order (train..., valid, test)."""
    users, items, times = [], [], []
    with inter_path.open(encoding="utf-8") as f:
        next(f)  # typed header: user_id:token item_id:token rating:float timestamp:float
        for line in f:
            user, item, _rating, ts = line.rstrip("\n").split("\t")
            users.append(user)
            items.append(item)
            times.append(float(ts))
    labels = split_by_time(users, times)
    order = np.lexsort((np.asarray(times), np.asarray(users)))  # stable: ties keep file order, as in trainer
    seqs: Sequences = {}
    split_of: dict[str, list[int]] = {}
    for row in order:
        seqs.setdefault(users[row], []).append(items[row])
        split_of.setdefault(users[row], []).append(int(labels[row]))
    for user, lab in split_of.items():  # the labels must agree with this order: train..., valid, test
        assert lab == [TRAIN] * (len(lab) - 2) + [VALID, TEST], user
    return seqs


def write_benchmark_files(seqs: Sequences, folder: Path) -> None:
    """``ml-100k.{train,valid,test}.inter``: the augmentation RecBole would do, restricted to our split."""
    folder.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for user, s in seqs.items():
        n = len(s)
        targets = [("train", j) for j in range(1, n - 2)] + [("valid", n - 2), ("test", n - 1)]
        for part, j in targets:
            rows[part].append(f"{user}\t{' '.join(s[max(0, j - MAX_LEN) : j])}\t{s[j]}")
    for part, lines in rows.items():
        header = "user_id:token\titem_id_list:token_seq\titem_id:token"
        (folder / f"{DATASET}.{part}.inter").write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
        logger.info("%s: %d rows", folder / f"{DATASET}.{part}.inter", len(lines))


def recbole_config(args: argparse.Namespace, work_dir: Path) -> Config:
    return Config(
        model="SASRec",
        dataset=DATASET,
        config_dict={
            "data_path": str(work_dir),
            "benchmark_filename": ["train", "valid", "test"],
            "load_col": {"inter": ["user_id", "item_id_list", "item_id"]},
            "alias_of_item_id": ["item_id_list"],
            "USER_ID_FIELD": "user_id",
            "ITEM_ID_FIELD": "item_id",
            "TIME_FIELD": None,
            "MAX_ITEM_LIST_LENGTH": MAX_LEN,
            "loss_type": "CE",
            "train_neg_sample_args": None,
            "hidden_size": 64,
            "n_layers": 2,
            "n_heads": 2,
            "hidden_dropout_prob": 0.2,
            "attn_dropout_prob": 0.2,
            "learning_rate": 1e-3,
            "train_batch_size": 256,
            "eval_batch_size": 256,
            "epochs": args.epochs,
            "stopping_step": args.patience,
            "eval_step": 1,
            "eval_args": {"mode": "full", "order": "TO", "group_by": "user"},
            "metrics": ["Hit", "NDCG", "MRR"],
            "topk": [K],
            "valid_metric": f"MRR@{K}",
            "seed": args.seed,
            "reproducibility": True,
            "use_gpu": False,
            "device": "cpu",
            "checkpoint_dir": str(work_dir / "saved"),
            "show_progress": False,
            "log_wandb": False,
        },
    )


class EpochLogTrainer(Trainer):
    """RecBole's Trainer (which SASRec uses), recording each epoch's loss, validation result and times."""

    def __init__(self, config: Config, model: torch.nn.Module) -> None:
        super().__init__(config, model)
        self.epoch_log: list[dict[str, Any]] = []

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        loss = super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
        self.epoch_log.append({"epoch": epoch_idx, "train_loss": float(loss), "train_s": time.perf_counter() - start})
        return loss

    def _valid_epoch(self, valid_data, show_progress=False):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        score, result = super()._valid_epoch(valid_data, show_progress)
        self.epoch_log[-1].update(valid={k: float(v) for k, v in result.items()}, valid_s=time.perf_counter() - start)
        return score, result


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, exclude: list[list[int]] | None) -> torch.Tensor:
    """Each row's 1-based target rank; padding (id 0) and, if given, each row's ``exclude`` ids score -inf.
    Rank = 1 + #items scoring higher + #items tied with a lower id (deterministic tie break)."""
    scores = scores.clone().double()
    scores[:, 0] = -torch.inf
    if exclude is not None:
        for r, ids in enumerate(exclude):
            scores[r, ids] = -torch.inf
    target_scores = scores.gather(1, targets[:, None])
    ids = torch.arange(scores.shape[1])[None, :]
    return 1 + (scores > target_scores).sum(1) + ((scores == target_scores) & (ids < targets[:, None])).sum(1)


def rank_metrics(ranks: torch.Tensor) -> np.ndarray:
    """[rows, 3]: HR, NDCG, MRR @K of each row's target rank."""
    rank = ranks.double()
    hit = rank <= K
    return torch.stack([hit.double(), hit / torch.log2(rank + 1), hit / rank], 1).numpy()


def summarize(per_row: np.ndarray) -> dict[str, float]:
    hr, ndcg, mrr = per_row.mean(0)
    return {
        f"hit@{K}": round(float(hr), 4),
        f"ndcg@{K}": round(float(ndcg), 4),
        f"mrr@{K}": round(float(mrr), 4),
    }


def main() -> None:
    args = parse_args()
    work_dir = args.work_dir.resolve()
    out = (args.out or work_dir / "results.json").resolve()
    checkpoint_file = args.checkpoint.resolve() if args.checkpoint else None  # before the chdir below
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(RemoveColorFilter())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=[handler])
    warnings.filterwarnings("ignore", category=FutureWarning)  # RecBole 1.2.1 on pandas 2.2 / torch 2.13
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)

    inter_path = Path(recbole.__file__).parent / "dataset_example" / "ml-100k" / "ml-100k.inter"
    seqs = load_sequences(inter_path)
    write_benchmark_files(seqs, work_dir / DATASET)
    os.chdir(work_dir)  # RecBole writes log_tensorboard/ under the working directory

    config = recbole_config(args, work_dir)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)

    # RecBole's own loaded test rows must be exactly our test targets and histories
    test_set = test_data._dataset
    uid_f, iid_f, list_f = dataset.uid_field, dataset.iid_field, dataset.item_id_list_field
    test_users = dataset.id2token(uid_f, test_set.inter_feat[uid_f].numpy())
    test_items = dataset.id2token(iid_f, test_set.inter_feat[iid_f].numpy())
    assert dict(zip(test_users, test_items, strict=True)) == {u: s[-1] for u, s in seqs.items()}
    for u, hist, n in zip(
        test_users,
        test_set.inter_feat[list_f].numpy(),
        test_set.inter_feat[dataset.item_list_length_field].numpy(),
        strict=True,
    ):
        assert list(dataset.id2token(iid_f, hist[:n])) == seqs[u][:-1][-MAX_LEN:], u
    valid_items = dataset.id2token(iid_f, valid_data._dataset.inter_feat[iid_f].numpy())
    valid_users = dataset.id2token(uid_f, valid_data._dataset.inter_feat[uid_f].numpy())
    assert dict(zip(valid_users, valid_items, strict=True)) == {u: s[-2] for u, s in seqs.items()}
    logger.info("split check passed: %d test / valid rows equal trainer.data.split_by_time", len(test_users))

    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    torch.autograd.set_detect_anomaly(False)  # importing RecBole's sine.py turns it on (backward ~2x slower)
    assert get_trainer(config["MODEL_TYPE"], config["model"]) is Trainer
    trainer = EpochLogTrainer(config, model)
    if checkpoint_file:
        trainer.saved_model_file = str(checkpoint_file)
        fit: dict[str, Any] = {"rescored_checkpoint": trainer.saved_model_file}
    else:
        start = time.perf_counter()
        best_valid_score, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
        fit = {
            "epochs_run": len(trainer.epoch_log),
            "best_valid_mrr@10": round(float(best_valid_score), 4),
            "best_valid": {k: round(float(v), 4) for k, v in best_valid.items()},
            "fit_s": round(time.perf_counter() - start, 1),
            "epoch_s_mean": round(float(np.mean([e["train_s"] + e["valid_s"] for e in trainer.epoch_log])), 1),
            "epochs": trainer.epoch_log,
        }

    checkpoint = torch.load(trainer.saved_model_file, map_location="cpu", weights_only=False)
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    recbole_test = trainer.evaluate(test_data, load_best_model=False, show_progress=False)

    # re-score the same checkpoint: with and without the user's earlier items (train + valid) excluded
    inter = test_set.inter_feat
    targets = inter[iid_f]
    earlier = [list(dataset.token2id(iid_f, seqs[u][:-1])) for u in test_users]
    model.eval()
    with torch.no_grad():
        scores = torch.cat([model.full_sort_predict(inter[i : i + 256]) for i in range(0, len(inter), 256)])
    ranks = {"all": target_ranks(scores, targets, None), "excl": target_ranks(scores, targets, earlier)}
    ours = {name: rank_metrics(r) for name, r in ranks.items()}

    counts = Counter(i for s in seqs.values() for i in s[:-2])  # train interactions only
    pop = torch.zeros(dataset.item_num)
    for token, c in counts.items():
        pop[dataset.token2id(iid_f, token)] = c
    pop_scores = pop[None, :].expand(len(targets), -1)
    pop_res = {
        "all": rank_metrics(target_ranks(pop_scores, targets, None)),
        "excl": rank_metrics(target_ranks(pop_scores, targets, earlier)),
    }

    results = {
        "recbole": recbole.__version__,
        "torch": torch.__version__,
        "threads": args.threads,
        "dataset": {
            "users": len(seqs),
            "items": dataset.item_num - 1,
            "rows": {
                "train": len(train_data._dataset),
                "valid": len(valid_data._dataset),
                "test": len(inter),
            },
        },
        "config": {"epochs_cap": args.epochs, "patience": args.patience, "seed": args.seed},
        "best_epoch": int(checkpoint["epoch"]),
        **fit,
        "test": {
            "sasrec_recbole": {k: round(float(v), 4) for k, v in recbole_test.items()},
            "sasrec": summarize(ours["all"]),
            "sasrec_excluding_earlier": summarize(ours["excl"]),
            "pop": summarize(pop_res["all"]),
            "pop_excluding_earlier": summarize(pop_res["excl"]),
        },
        "checkpoint": trainer.saved_model_file,
        # per test user: SASRec's target rank [not excluding, excluding earlier items] (paired comparisons)
        "test_ranks": {u: [int(a), int(e)] for u, a, e in zip(test_users, ranks["all"], ranks["excl"], strict=True)},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    logger.info("test: %s", json.dumps(results["test"]))
    logger.info("results in %s", out)


if __name__ == "__main__":
    main()
