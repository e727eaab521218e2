"""Experiment: for items scored through their text alone (cold start), is fine-tuning MiniLM better than the
frozen-LM linear adapter?

Both arms start from a published version and train only the text tower, with the version's sequence encoder
frozen: user vectors of train-split prefixes are computed once with ``encoder.onnx``, and the text tower learns
to rank each prefix's next item first among the text-only vectors of that item and sampled negatives.

* ``frozen``: MiniLM frozen, the linear adapter (initialised from the version) trained.
* ``finetune``: the adapter plus the feed-forward block of MiniLM's last layer trained (attention outputs of
  that layer precomputed; the FFN holds 2/3 of the layer's weights; the whole LM does not fit this CPU budget).

Same steps, batches, negatives and optimiser; both are evaluated by full ranking on the test split with every
item scored by text only (``text_*``), and with only the withheld items replaced (``cold_hr@10``).

    python -m benchmarks.lm_compare model_repository/recstream/4 --steps 60
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import orjson
import torch
import typer
from torch import nn
from torch.nn import functional as F

from trainer.data import DEFAULT_DATASET, TEST, TRAIN, Dataset, default_cache_dir, load_movielens
from trainer.evaluate import encode_all, load_version, rank_metrics, target_ranks, version_dataset
from trainer.sequences import EvalCases, eval_cases, window_arrays
from trainer.text import MINILM, tokenize
from trainer.version import read_text_adapter

logger = logging.getLogger(__name__)


class TextTower(nn.Module):
    """Precomputed last-layer attention outputs of MiniLM -> (trainable) last FFN -> mean pool -> adapter."""

    def __init__(self, texts: list[str], adapter: dict[str, np.ndarray]) -> None:
        super().__init__()
        tokenizer, lm = MINILM.load(default_cache_dir())
        last = lm.encoder.layer[-1]
        captured: list[torch.Tensor] = []
        hook = last.intermediate.register_forward_hook(lambda _m, args, _out: captured.append(args[0]))
        tokens = tokenize(tokenizer, texts)
        with torch.inference_mode():
            for start in range(0, len(texts), 256):
                lm(**{k: v[start : start + 256] for k, v in tokens.items()})
        hook.remove()
        mask = tokens["attention_mask"].bool()  # [N, T]
        self.register_buffer("attended", torch.cat(captured)[mask].clone())  # [tokens, 384]: real tokens only
        self.register_buffer("token_item", mask.nonzero()[:, 0])  # [tokens]: the item of each token
        self.register_buffer("counts", mask.sum(1, keepdim=True).float())  # [N, 1]
        self.intermediate, self.output = copy.deepcopy(last.intermediate), copy.deepcopy(last.output)
        self.adapter = nn.Linear(adapter["weight"].shape[1], adapter["weight"].shape[0])
        with torch.no_grad():
            self.adapter.weight.copy_(torch.from_numpy(adapter["weight"]))
            self.adapter.bias.copy_(torch.from_numpy(adapter["bias"]))

    def forward(self, items: torch.Tensor) -> torch.Tensor:  # items [M]: sorted, unique, 0-based -> [M, H]
        selected = torch.isin(self.token_item, items)  # [tokens]
        attended = self.attended[selected]  # [t, 384]
        hidden = self.output(self.intermediate(attended), attended)  # [t, 384]: the last layer's FFN block
        slot = torch.searchsorted(items, self.token_item[selected])  # [t]: each token's row in items
        pooled = torch.zeros(len(items), hidden.shape[1]).index_add(0, slot, hidden) / self.counts[items]  # [M, 384]
        return self.adapter(F.normalize(pooled, dim=-1))  # [M, H]

    def all_items(self) -> np.ndarray:  # [N, H]
        with torch.no_grad():
            n = len(self.counts)
            return torch.cat([self(torch.arange(s, min(s + 256, n))) for s in range(0, n, 256)]).numpy()


def train_prefixes(
    dataset: Dataset, withheld: np.ndarray, max_len: int, per_user: int, seed: int
) -> dict[str, np.ndarray]:
    """Up to ``per_user`` random train events per user (withheld items skipped) with their history."""
    rng = np.random.default_rng(seed)
    items, types, times, contexts, targets = [], [], [], [], []
    for user in dataset.users:
        train = (user.split == TRAIN) & ~withheld[user.items - 1]
        (positions,) = np.nonzero(train[1:])
        for t in rng.choice(positions + 1, size=min(per_user, len(positions)), replace=False):
            items.append(user.items[:t])
            types.append(user.event_types[:t])
            times.append(user.timestamps[:t])
            contexts.append(user.context[:t])
            targets.append(user.items[t])
    arrays = window_arrays(items, types, times, contexts, max_len)
    arrays["target_items"] = np.array(targets, dtype=np.int64)
    return arrays


def text_only_report(
    tower: TextTower, user_vecs: np.ndarray, cases: EvalCases, table: np.ndarray, withheld: np.ndarray
) -> dict[str, float]:
    text = tower.all_items()  # [N, H]
    targets = cases.arrays["target_items"]
    report = {f"text_{k}": v for k, v in rank_metrics(target_ranks(user_vecs @ text.T, targets, cases.seen)).items()}
    cold = withheld[targets - 1]
    if not cold.any():  # a version trained on every item: no cold test cases
        return report
    served = table[1:].copy()
    served[withheld] = text[withheld]
    seen = [s for s, c in zip(cases.seen, cold, strict=True) if c]
    ranks = target_ranks(user_vecs[cold] @ served.T, targets[cold], seen)
    return report | {"cold_hr@10": float((ranks <= 10).mean())}


def run(version_dir: Path, steps: int, batch_size: int, negatives: int, per_user: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    movielens = load_movielens(dataset=version_dataset(version_dir) or DEFAULT_DATASET)  # the version's MovieLens
    version = load_version(version_dir, movielens, threads=1)
    report, dataset, withheld = version.report, version.dataset, version.withheld
    table, encoder = version.table, version.encoder
    texts = movielens.catalog.texts  # same item order as the version's catalogue
    max_len, seed = report["config"]["max_len"], report["config"]["seed"]
    prefixes = train_prefixes(dataset, withheld, max_len, per_user, seed)
    user_vecs = torch.from_numpy(encode_all(encoder, table, prefixes)[0])  # [P, H]
    targets = torch.from_numpy(prefixes["target_items"] - 1)  # [P], 0-based
    cases = eval_cases(dataset, TEST, max_len)
    test_vecs = encode_all(encoder, table, cases.arrays)[0]
    base = TextTower(texts, read_text_adapter(version_dir, MINILM.name)[0])
    results: dict[str, Any] = {"before": text_only_report(base, test_vecs, cases, table, withheld)}
    for arm in ("frozen", "finetune"):
        tower = copy.deepcopy(base)
        trainable = [*tower.adapter.parameters()]
        if arm == "finetune":
            trainable += [*tower.intermediate.parameters(), *tower.output.parameters()]
        for p in tower.parameters():
            p.requires_grad_(any(p is q for q in trainable))
        optimizer = torch.optim.Adam(trainable, lr=1e-4 if arm == "finetune" else 1e-3)
        rng = torch.Generator().manual_seed(seed)
        started = time.monotonic()
        for step in range(steps):
            rows = torch.randint(len(targets), (batch_size,), generator=rng)
            pool = torch.unique(torch.cat([targets[rows], torch.randint(len(withheld), (negatives,), generator=rng)]))
            pool = pool[~torch.from_numpy(withheld)[pool]]  # withheld items are never trained on
            logits = user_vecs[rows] @ tower(pool).T  # [b, |pool|]
            loss = F.cross_entropy(logits, torch.searchsorted(pool, targets[rows]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % 10 == 0:
                logger.info("%s step %d: loss %.3f", arm, step, loss.item())
        results[arm] = text_only_report(tower, test_vecs, cases, table, withheld)
        results[arm]["seconds"] = round(time.monotonic() - started, 1)
        logger.info("%s: %s", arm, results[arm])
    return {"version": version_dir.name, "steps": steps, "batch_size": batch_size, "negatives": negatives, **results}


def main(
    version_dir: Path,
    steps: Annotated[int, typer.Option()] = 60,
    batch_size: Annotated[int, typer.Option()] = 256,
    negatives: Annotated[int, typer.Option()] = 256,
    per_user: Annotated[int, typer.Option(help="train prefixes per user")] = 20,
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    typer.echo(
        orjson.dumps(run(version_dir, steps, batch_size, negatives, per_user), option=orjson.OPT_INDENT_2).decode()
    )


if __name__ == "__main__":
    typer.run(main)
