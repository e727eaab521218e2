"""RecBole 1.2.1 SASRec and a popularity baseline on MovieLens-100K or -1M, on exactly recstream's split.

The data, the order and the split come from ``trainer.data`` (imported from the repository): each user's events
ordered by (timestamp, item_id as a string), last = test, second-last = validation, rest = train. RecBole gets
them as one atomic file whose ``timestamp`` column is each event's position in that order (0, 1, ...), not its
second, so that RecBole's own time-ordered leave-one-out split and sequential augmentation reproduce our split and
histories exactly (RecBole keeps times as float32, which merges ML-100K's seconds into 64-second steps, and its
sorts need not keep file order among ties; small integer positions have neither problem). Item tokens are our
catalogue rows ("1", "2", ...: ML-1M's item ids are titles with spaces and quotes). The script asserts on
RecBole's own loaded dataset that every user's test target and history and validation target equal ours.

Test ranks, of SASRec and of the popularity baseline, come from ``trainer.evaluate.target_ranks``: the one
ranking routine and tie rule of every comparison (pessimistic: ties count against the target).

``--loss-positions every`` trains RecBole's SASRec network with the loss at every position of one row per
sequence window (``rows.py``) instead of RecBole's one row per prefix: the same prediction terms, ~70x fewer
rows on ML-1M; evaluation, checkpoints and early stopping stay RecBole's.

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import recbole
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.data.interaction import Interaction
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.utils import get_model, get_trainer, init_seed
from recbole.utils.logger import RemoveColorFilter

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
# the project's own data, order rule, split, ranking routine and metrics
from benchmarks.recbole.rows import every_position_rows  # noqa: E402
from trainer.data import (  # noqa: E402
    MOVIELENS,
    ORDER_RULE,
    TEST,
    TRAIN,
    VALID,
    Dataset,
    first_users,
    load_movielens,
)
from trainer.evaluate import TIE_RULE, rank_metrics, target_ranks  # noqa: E402

logger = logging.getLogger("recbole_sasrec")
K = 10
Sequences = dict[str, list[str]]  # user token -> item tokens (catalogue rows), in the order rule


@dataclass(frozen=True)
class SasrecSetup:
    """SASRec's settings for one dataset (the rest is in :func:`recbole_config`: CE loss over the full catalogue,
    no negative sampling, Adam, full-ranking evaluation, early stopping on validation MRR@10)."""

    max_len: int
    """``MAX_ITEM_LIST_LENGTH``: the history a prediction sees, the last this many items."""
    epochs: int
    """default epoch cap (``--epochs``)."""
    hidden: int = 64
    """``hidden_size`` (embeddings and transformer width)."""
    layers: int = 2
    """``n_layers``: transformer blocks."""
    heads: int = 2
    """``n_heads``: attention heads per block."""
    dropout: float = 0.2
    """``hidden_dropout_prob`` and ``attn_dropout_prob``."""
    lr: float = 1e-3
    """Adam learning rate."""
    batch_size: int = 256
    """training and evaluation batch (rows = predictions)."""
    window_batch_size: int = 128
    """training batch with ``--loss-positions every`` (rows = sequence windows of up to ``max_len`` targets)."""


SETUPS: dict[str, SasrecSetup] = {
    # the setup of the measured ML-100K runs (docs/BENCHMARKS.md), ~2.5 min per epoch on one thread
    "ml-100k": SasrecSetup(max_len=50, epochs=12),
    # ML-1M as in the full cross-entropy SASRec literature (Klenitskiy & Vasilev 2023: length 200, CE over all items)
    "ml-1m": SasrecSetup(max_len=200, epochs=12),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(MOVIELENS), default="ml-100k")
    p.add_argument("--epochs", type=int, default=None, help="epoch cap (default: the dataset's, 12)")
    p.add_argument("--patience", type=int, default=10, help="early stopping: epochs without valid MRR@10 gain")
    p.add_argument(
        "--max-users",
        type=int,
        default=None,
        help="only the first N users (user-id order): smoke runs (RecBole then ranks only their items)",
    )
    p.add_argument("--work-dir", type=Path, default=None, help="default .cache/recstream/recbole[-<dataset>]")
    p.add_argument("--out", type=Path, default=None, help="results JSON (default <work-dir>/results.json)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 leaves a core to others)")
    p.add_argument(
        "--gpu", action="store_true", help="train on CUDA device 0 (needs a CUDA torch in the environment; default CPU)"
    )
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument(
        "--loss-positions",
        choices=["last", "every"],
        default="last",
        help="last: RecBole's rows, one per prefix, loss at its end; every: one row per sequence window (rows.py)",
    )
    p.add_argument(
        "--stride", type=int, default=None, help="with --loss-positions every: windows end every N items (max_len/4)"
    )
    p.add_argument(
        "--checkpoint", type=Path, default=None, help="re-score this saved SASRec checkpoint instead of training one"
    )
    args, unknown = p.parse_known_args()
    if unknown:
        p.error(f"unknown options {unknown} (use '--key value', not '--key=value')")
    if args.work_dir is None:
        suffix = "" if args.dataset == "ml-100k" else f"-{args.dataset}"  # ml-100k: the folder of the earlier runs
        args.work_dir = Path(f".cache/recstream/recbole{suffix}")
    sys.argv = sys.argv[:1]  # nothing left for RecBole's own command-line parsing
    return args


def user_sequences(dataset: Dataset) -> Sequences:
    """Per-user item tokens (catalogue rows as strings) in the order rule: train..., valid, test."""
    seqs: Sequences = {}
    for user in dataset.users:  # already in the order rule, and labelled by it
        n = len(user.split)
        assert user.split.tolist() == [TRAIN] * (n - 2) + [VALID, TEST], user.user_id  # every user has >= 3 events
        seqs[user.user_id] = [str(row) for row in user.items]
    return seqs


def write_atomic_file(seqs: Sequences, folder: Path, name: str) -> Path:
    """``<name>.inter``: user, item token and the event's position in the user's sequence as RecBole's time."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.inter"
    with path.open("w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user, items in seqs.items():
            f.writelines(f"{user}\t{item}\t{position}\n" for position, item in enumerate(items))
    logger.info("%s: %d events of %d users", path, sum(map(len, seqs.values())), len(seqs))
    return path


def recbole_config(args: argparse.Namespace, setup: SasrecSetup, work_dir: Path, name: str) -> Config:
    return Config(
        model="SASRec",
        dataset=name,
        config_dict={
            "data_path": str(work_dir),
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "USER_ID_FIELD": "user_id",
            "ITEM_ID_FIELD": "item_id",
            "TIME_FIELD": "timestamp",  # the position in the order rule (write_atomic_file)
            "MAX_ITEM_LIST_LENGTH": setup.max_len,
            "loss_type": "CE",
            "train_neg_sample_args": None,
            "hidden_size": setup.hidden,
            "inner_size": 4 * setup.hidden,
            "n_layers": setup.layers,
            "n_heads": setup.heads,
            "hidden_dropout_prob": setup.dropout,
            "attn_dropout_prob": setup.dropout,
            "learning_rate": setup.lr,
            "train_batch_size": setup.batch_size,
            "eval_batch_size": setup.batch_size,
            "epochs": args.epochs,
            "stopping_step": args.patience,
            "eval_step": 1,
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
            "metrics": ["Hit", "NDCG", "MRR"],
            "topk": [K],
            "valid_metric": f"MRR@{K}",
            "seed": args.seed,
            "reproducibility": True,
            "use_gpu": args.gpu,
            "gpu_id": "0" if args.gpu else "",  # RecBole picks the device from gpu_id: "" = CPU
            "checkpoint_dir": str(work_dir / "saved"),
            "show_progress": False,
            "log_wandb": False,
        },
    )


class EveryPositionSASRec(SASRec):
    """RecBole's SASRec; :meth:`every_position_loss` is the cross-entropy over the full catalogue at every counted
    position of a batch of :class:`WindowBatches` rows (RecBole's ``calculate_loss`` takes the last position)."""

    every_position = False

    def gather_indexes(self, output: torch.Tensor, gather_index: torch.Tensor) -> torch.Tensor:
        # RecBole's forward ends by gathering each row's last position; skipped, it returns every position
        return output if self.every_position else super().gather_indexes(output, gather_index)

    def every_position_loss(self, interaction: Interaction) -> torch.Tensor:
        inputs, targets = interaction["inputs"], interaction["targets"]  # [B, L] item ids, 0 = padding
        self.every_position = True
        try:
            hidden = self.forward(inputs, (inputs > 0).sum(dim=1))  # [B, L, H]
        finally:
            self.every_position = False
        counted = targets > 0
        logits = hidden[counted] @ self.item_embedding.weight.T  # [T, N+1], as RecBole's CE (padding column kept)
        return self.loss_fct(logits, targets[counted])


class WindowBatches:
    """The training rows of ``--loss-positions every``, shuffled each epoch with a seeded generator."""

    shuffle = True

    def __init__(self, rows: list[tuple[list[int], list[int]]], max_len: int, batch_size: int, seed: int) -> None:
        self.inputs = torch.zeros(len(rows), max_len, dtype=torch.long)  # left-aligned, as RecBole's rows
        self.targets = torch.zeros(len(rows), max_len, dtype=torch.long)
        for i, (inputs, targets) in enumerate(rows):
            self.inputs[i, : len(inputs)] = torch.tensor(inputs)
            self.targets[i, : len(targets)] = torch.tensor(targets)
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.inputs) // self.batch_size)

    def __iter__(self):  # type: ignore[no-untyped-def]
        order = torch.randperm(len(self.inputs), generator=self.generator)
        for i in range(0, len(order), self.batch_size):
            rows = order[i : i + self.batch_size]
            yield Interaction({"inputs": self.inputs[rows], "targets": self.targets[rows]})


class EpochLogTrainer(Trainer):
    """RecBole's Trainer (which SASRec uses), recording each epoch's loss, validation result and times; with
    ``windows`` it trains on those rows with :meth:`EveryPositionSASRec.every_position_loss`."""

    def __init__(self, config: Config, model: torch.nn.Module, windows: WindowBatches | None = None) -> None:
        super().__init__(config, model)
        self.epoch_log: list[dict[str, Any]] = []
        self.windows = windows

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        if self.windows is not None:
            train_data, loss_func = self.windows, self.model.every_position_loss
        loss = super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
        self.epoch_log.append({"epoch": epoch_idx, "train_loss": float(loss), "train_s": time.perf_counter() - start})
        logger.info("epoch %d: train %.1f s", epoch_idx, self.epoch_log[-1]["train_s"])
        return loss

    def _valid_epoch(self, valid_data, show_progress=False):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        score, result = super()._valid_epoch(valid_data, show_progress)
        self.epoch_log[-1].update(valid={k: float(v) for k, v in result.items()}, valid_s=time.perf_counter() - start)
        return score, result


def check_split(dataset: Any, valid_data: Any, test_data: Any, seqs: Sequences, max_len: int) -> list[str]:
    """Assert that RecBole's own loaded test rows (target and history) and validation targets are ours.
    Returns the test users in RecBole's row order."""
    test_set = test_data._dataset
    uid_f, iid_f, list_f = dataset.uid_field, dataset.iid_field, dataset.item_id_list_field
    test_users = list(dataset.id2token(uid_f, test_set.inter_feat[uid_f].numpy()))
    test_items = dataset.id2token(iid_f, test_set.inter_feat[iid_f].numpy())
    assert dict(zip(test_users, test_items, strict=True)) == {u: s[-1] for u, s in seqs.items()}
    for u, hist, n in zip(
        test_users,
        test_set.inter_feat[list_f].numpy(),
        test_set.inter_feat[dataset.item_list_length_field].numpy(),
        strict=True,
    ):
        assert list(dataset.id2token(iid_f, hist[:n])) == seqs[u][:-1][-max_len:], u
    valid_items = dataset.id2token(iid_f, valid_data._dataset.inter_feat[iid_f].numpy())
    valid_users = dataset.id2token(uid_f, valid_data._dataset.inter_feat[uid_f].numpy())
    assert dict(zip(valid_users, valid_items, strict=True)) == {u: s[-2] for u, s in seqs.items()}
    logger.info("split check passed: %d test / valid rows equal trainer.data's split", len(test_users))
    return test_users


def summarize(ranks: np.ndarray) -> dict[str, float]:
    return {k: round(v, 4) for k, v in rank_metrics(ranks, K).items()}


def main() -> None:
    args = parse_args()
    setup = SETUPS[args.dataset]
    args.epochs = args.epochs or setup.epochs
    args.stride = args.stride or setup.max_len // 4
    work_dir = args.work_dir.resolve()
    out = (args.out or work_dir / "results.json").resolve()
    checkpoint_file = args.checkpoint.resolve() if args.checkpoint else None  # before the chdir below
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(RemoveColorFilter())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=[handler])
    warnings.filterwarnings("ignore", category=FutureWarning)  # RecBole 1.2.1 on pandas 2.2 / torch 2.13
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)

    started = time.perf_counter()
    data = first_users(load_movielens(dataset=args.dataset), args.max_users)  # fetched into the cache if needed
    seqs = user_sequences(data)
    name = f"{args.dataset}-recstream"  # not "ml-100k"/"ml-1m": RecBole would read (or download) its own copy
    write_atomic_file(seqs, work_dir / name, name)
    os.chdir(work_dir)  # RecBole writes log_tensorboard/ under the working directory

    config = recbole_config(args, setup, work_dir, name)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    test_users = check_split(dataset, valid_data, test_data, seqs, setup.max_len)
    prepare_s = time.perf_counter() - started

    windows = None
    if args.loss_positions == "every":
        iid_f = dataset.iid_field
        rows = [
            row
            for s in seqs.values()
            for row in every_position_rows(dataset.token2id(iid_f, s[:-2]).tolist(), setup.max_len, args.stride)
        ]
        windows = WindowBatches(rows, setup.max_len, setup.window_batch_size, args.seed)
        logger.info(
            "%d training windows (stride %d) instead of RecBole's %d rows",
            len(rows),
            args.stride,
            len(train_data._dataset),
        )

    init_seed(config["seed"], config["reproducibility"])
    assert get_model(config["model"]) is SASRec
    model = EveryPositionSASRec(config, train_data._dataset).to(config["device"])
    torch.autograd.set_detect_anomaly(False)  # importing RecBole's sine.py turns it on (backward ~2x slower)
    assert get_trainer(config["MODEL_TYPE"], config["model"]) is Trainer
    trainer = EpochLogTrainer(config, model, windows)
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

    # re-score the same checkpoint with the shared ranking routine: with and without the user's earlier items
    # (train + valid) excluded. Columns of scores[:, 1:] are RecBole item ids 1.. (0 is padding, not ranked).
    iid_f = dataset.iid_field
    inter = test_data._dataset.inter_feat
    targets = inter[iid_f].numpy()
    earlier = [np.asarray(dataset.token2id(iid_f, seqs[u][:-1]), dtype=np.int64) for u in test_users]
    model.eval()
    with torch.no_grad():
        batches = range(0, len(inter), setup.batch_size)
        scores = torch.cat(
            [model.full_sort_predict(inter[i : i + setup.batch_size].to(config["device"])).cpu() for i in batches]
        )
    scores = scores.reshape(len(targets), -1)[:, 1:].double().numpy()
    ranks = {"all": target_ranks(scores, targets), "excl": target_ranks(scores, targets, earlier)}

    counts = np.zeros(dataset.item_num)
    for s in seqs.values():  # train events only
        np.add.at(counts, dataset.token2id(iid_f, s[:-2]), 1)
    pop_scores = np.broadcast_to(counts[1:], scores.shape)
    pop_ranks = {"all": target_ranks(pop_scores, targets), "excl": target_ranks(pop_scores, targets, earlier)}

    results = {
        "recbole": recbole.__version__,
        "torch": torch.__version__,
        "threads": args.threads,
        "device": str(config["device"]),
        "dataset": {
            "name": args.dataset,
            "max_users": args.max_users,
            "order": ORDER_RULE,
            "users": len(seqs),
            "items": dataset.item_num - 1,
            "rows": {
                "train": len(train_data._dataset),
                "valid": len(valid_data._dataset),
                "test": len(inter),
            },
        },
        "tie_rule": TIE_RULE,
        "config": {
            # a re-score did not train: its command line's cap and patience say nothing of the checkpoint's fit
            "epochs_cap": None if checkpoint_file else args.epochs,
            "patience": None if checkpoint_file else args.patience,
            "seed": args.seed,
            "loss_positions": args.loss_positions,
            **({"stride": args.stride, "training_windows": len(windows.inputs)} if windows else {}),
            **asdict(setup),
        },
        "prepare_s": round(prepare_s, 1),
        "best_epoch": int(checkpoint["epoch"]),
        **fit,
        "test": {
            "sasrec_recbole": {k: round(float(v), 4) for k, v in recbole_test.items()},
            "sasrec": summarize(ranks["all"]),
            "sasrec_excluding_earlier": summarize(ranks["excl"]),
            "pop": summarize(pop_ranks["all"]),
            "pop_excluding_earlier": summarize(pop_ranks["excl"]),
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
