"""A tiny synthetic event log and a model trained on it for one epoch (seconds, no text-model download)."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from trainer.config import TrainConfig
from trainer.data import Dataset, load_event_log
from trainer.text import MINILM, TextModel
from trainer.version import Report

N_USERS, N_ITEMS, EVENTS_PER_USER = 24, 30, 14
TINY = TrainConfig(
    hidden=16,
    layers=1,
    heads=1,
    max_len=8,
    epochs=1,
    batch_size=16,
    window_stride=4,
    cold_share=0.1,
    seed=7,
    members=1,
    ema_decay=0.0,
)


def fake_embed_texts(
    texts: list[str], cache_dir: Path, model: TextModel = MINILM, batch_size: int = 128, tuned: dict | None = None
) -> np.ndarray:
    """Deterministic stand-in for a frozen text model: a unit vector of its size seeded by the model and the
    text (a tuned one needs the real model)."""
    if tuned:
        raise ValueError("the fake text model has no top to tune")
    rows = []
    for text in texts:
        seed = int.from_bytes(hashlib.sha256(f"{model.name}\n{text}".encode()).digest()[:4], "little")
        vector = np.random.default_rng(seed).normal(size=model.dim)
        rows.append(vector / np.linalg.norm(vector))
    return np.array(rows, dtype=np.float32).reshape(len(texts), model.dim)


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """events.csv (user u walks the items u, u+1, ... with clicks on even items) and items.csv."""
    folder = tmp_path_factory.mktemp("tiny_data")
    events = [
        [f"u{u}", f"i{(u + k) % N_ITEMS}", "click" if (u + k) % 2 == 0 else "view", 1_000_000 + 60 * k + u]
        for u in range(N_USERS)
        for k in range(EVENTS_PER_USER)
    ]
    items = [[f"i{i}", f"Item {i}", f"genre {i % 3}"] for i in range(N_ITEMS)]
    return (
        write_csv(folder / "events.csv", ["user_id", "item_id", "event_type", "timestamp"], events),
        write_csv(folder / "items.csv", ["item_id", "title", "text"], items),
    )


@pytest.fixture(scope="session")
def tiny_dataset(tiny_files: tuple[Path, Path]) -> Dataset:
    return load_event_log(*tiny_files)


@dataclass
class Trained:
    model: object
    withheld: np.ndarray
    dataset: Dataset
    report: Report


@pytest.fixture(scope="session")
def trained(tiny_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("trainer.train.embed_texts", fake_embed_texts)
        from trainer.train import train_report

        model, report = train_report(tiny_dataset, TINY, None, None, faithfulness_users=5)
    return Trained(model, np.isin(tiny_dataset.catalog.item_ids, report.data.withheld_items), tiny_dataset, report)
