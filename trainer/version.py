"""The version folder's format (docs/architecture.md), in one place: its file names, the typed ``report.json``,
and the writers and readers of the trainer's files (the catalogue, the text adapter, the report).
``encoder.onnx`` is written by ``trainer.export``; ``model_repository/recstream/model.py`` reads the served
files on its own (it runs inside Triton and imports nothing from this project).

``Report`` is report.json as the trainer writes it. Sections a version may lack (``cold_start``, the ONNX
parity, ``added_items``) are left out of the file rather than written as null, and unknown keys are kept, so a
report written by an older trainer reads and is written back unchanged."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict

from trainer.data import ContextVocabulary

logger = logging.getLogger(__name__)

ENCODER_FILE = "encoder.onnx"
EMBEDDINGS_FILE = "item_embeddings.npy"
ITEMS_FILE = "items.json"
REPORT_FILE = "report.json"
TEXT_ADAPTER_FILE = "text_adapter.safetensors"
"""The text adapter that ``add-items`` needs (not served)."""
TUNED_PREFIX = "text_model."
"""In the text adapter file, the tensors of a fine-tuned text model's last feed-forward output block."""
CONTEXT_FILE = "context.json"
"""The context vocabulary of a version trained with ``use_context`` (``trainer.data.ContextVocabulary``):
``{"values": {key: [value, ...]}}``, keys and values in string order; model.py reads it too."""

METRIC_KEYS = (
    "ndcg@10",
    "hr@10",
    "mrr@10",
    "ndcg@10_all",
    "hr@10_all",
    "mrr@10_all",
    "cold_hr@10",
    "next_action_auc",
    "pop_ndcg@10",
    "pop_hr@10",
    "pop_mrr@10",
    "pop_cold_hr@10",
)
"""The metrics a summary lists: the CLI's table, the training log, a cold-start companion's entry."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow")


class DataSection(_Section):
    """``data``: what the version was trained and evaluated on."""

    dataset: str | None = None
    """the named dataset (``trainer.data.MOVIELENS``), None for an event log; absent before it was recorded
    (those versions were trained on ml-100k)."""
    events: str
    items: str | None
    max_users: int | None = None
    """a smoke version trained on the first N users only; absent in older versions."""
    users: int
    items_in_catalogue: int
    events_total: int
    order: str | None = None
    split: str
    tie_rule: str | None = None
    withheld_items: list[str]
    """item ids kept out of training (cold start), scored by text only."""
    withheld_note: str


class MemberRun(_Section):
    """One ensemble member's training run."""

    seed: int
    best_epoch: int
    epochs_run: int
    history: list[dict[str, Any]]


class TrainingSection(_Section):
    train_seconds: float
    eval_seconds: float
    members: list[MemberRun]
    early_stopping: str
    machine: str


class Companion(_Section):
    """A run with items withheld whose cold-start metrics a version trained on every item reports."""

    seed: int
    withheld_items: list[str]
    config: dict[str, Any]
    metrics: dict[str, Any]


class ColdStart(_Section):
    """``cold_start``: the companions' cold-start metrics, pooled over their cold test cases."""

    note: str
    cold_share: float
    metrics: dict[str, Any]
    companions: list[Companion]


class AddedItems(_Section):
    """``added_items`` of a version published by ``add-items``."""

    count: int
    item_ids: list[str]
    by: str


class Report(_Section):
    """A version's report.json. Build a changed copy with ``model_copy(update=...)`` (values of the field
    types), so the new keys are written."""

    model: str
    created_at: float
    parent_version: str | None
    metrics: dict[str, Any]
    """``trainer.evaluate.evaluate``'s metrics on the test split (NaN is written as null)."""
    config: dict[str, Any]
    """``TrainConfig.model_dump()`` of the run, as written: an older version may lack settings added since,
    whose defaults then differed, so it is not filled in."""
    seed: int
    text_model: str | None
    data: DataSection
    training: TrainingSection
    cold_start: ColdStart | None = None
    onnx_parity_max_abs_diff: float | None = None
    added_items: AddedItems | None = None
    metrics_note: str | None = None


def write_report(path: Path, report: Report) -> None:
    data = report.model_dump(exclude_unset=True)  # sections not set are absent, not null
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))


def read_report(path: Path) -> Report:
    """A report.json (a version's, or a run's ``--report``)."""
    return Report.model_validate(orjson.loads(path.read_bytes()))


def cold_start_section(companions: list[Report]) -> ColdStart:
    """Cold-start metrics of companion runs that withheld items (same data and split), pooled over their cold
    test cases: each companion draws other items (its seed), so pooling several gives more cases and does not
    hang on one draw's few cold titles. Raises ValueError for companions that withhold different shares or
    have no cold test case."""
    shares = {run.config["cold_share"] for run in companions}
    if len(shares) != 1:
        raise ValueError(f"companion runs withhold different shares of items: {sorted(shares)}")
    cases = [run.metrics["cold_cases"] for run in companions]
    if not all(cases):
        raise ValueError("a companion run has no cold test cases (cold_share=0?)")
    hits = {
        key: sum(round(run.metrics[key] * n) for run, n in zip(companions, cases, strict=True))
        for key in ("cold_hr@10", "pop_cold_hr@10")
    }
    return ColdStart(
        note="measured on companion models trained with these items withheld; this model saw every item",
        cold_share=shares.pop(),
        metrics={key: hit / sum(cases) for key, hit in hits.items()}
        | {"cold_cases": sum(cases), "cold_hits@10": hits["cold_hr@10"]},
        companions=[
            Companion(
                seed=run.config["seed"],
                withheld_items=run.data.withheld_items,
                config=run.config,
                metrics={k: run.metrics[k] for k in METRIC_KEYS} | {"cold_cases": n},
            )
            for run, n in zip(companions, cases, strict=True)
        ],
    )


class ItemFiles(NamedTuple):
    """``item_embeddings.npy`` and ``items.json``: row r of ``table`` is item ``item_ids[r - 1]``."""

    table: np.ndarray  # float32 [N+1, H], row 0 zeros (padding)
    item_ids: list[str]
    titles: list[str | None]


def write_item_files(out: Path, items: ItemFiles) -> None:
    if len(items.table) != len(items.item_ids) + 1 or np.any(items.table[0]):
        raise ValueError("the item table needs one zero padding row plus one row per item")
    np.save(out / EMBEDDINGS_FILE, items.table.astype(np.float32))
    (out / ITEMS_FILE).write_bytes(orjson.dumps({"item_ids": items.item_ids, "titles": items.titles}))


def read_item_files(version_dir: Path) -> ItemFiles:
    items = orjson.loads((version_dir / ITEMS_FILE).read_bytes())
    return ItemFiles(np.load(version_dir / EMBEDDINGS_FILE), items["item_ids"], items["titles"])


def write_text_adapter(
    out: Path, adapter: dict[str, np.ndarray], text_model: str, tuned: dict[str, np.ndarray] | None = None
) -> None:
    """The linear map from ``text_model``'s embeddings to item vectors (``weight`` [H, D], ``bias`` [H]) and, for
    a version that fine-tuned the text model (``text_lora_rank``), its tuned block (``TunedTextTop.merged``)."""
    from safetensors.numpy import save_file  # the train extra, as every user of the adapter

    tensors = adapter | {TUNED_PREFIX + name: values for name, values in (tuned or {}).items()}
    save_file(tensors, str(out / TEXT_ADAPTER_FILE), metadata={"text_model": text_model})
    (out / TEXT_ADAPTER_FILE).chmod(0o644)  # safetensors writes 0600; the server may be another user


def read_text_adapter(version_dir: Path, text_model: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """(the version's text adapter, its tuned text-model block or None if the text model was frozen);
    ValueError if it has none (trained without item text) or it was trained on the embeddings of another text
    model than ``text_model``."""
    from safetensors.numpy import load_file, safe_open

    path = version_dir / TEXT_ADAPTER_FILE
    if not path.exists():
        raise ValueError(
            f"{version_dir} has no {TEXT_ADAPTER_FILE} (trained without item text): cannot embed new items"
        )
    with safe_open(str(path), framework="numpy") as f:
        trained_on = f.metadata().get("text_model")
    if trained_on != text_model:
        raise ValueError(f"{path} was trained on {trained_on!r} text embeddings, this trainer has {text_model!r}")
    tensors = load_file(str(path))
    tuned = {name.removeprefix(TUNED_PREFIX): v for name, v in tensors.items() if name.startswith(TUNED_PREFIX)}
    return {name: v for name, v in tensors.items() if not name.startswith(TUNED_PREFIX)}, tuned or None


def write_context(out: Path, vocabulary: ContextVocabulary) -> None:
    (out / CONTEXT_FILE).write_bytes(orjson.dumps({"values": vocabulary.values}))


def read_context(version_dir: Path) -> ContextVocabulary | None:
    """The version's context vocabulary; None for a version that reads no context."""
    path = version_dir / CONTEXT_FILE
    if not path.exists():
        return None
    values = orjson.loads(path.read_bytes())["values"]
    return ContextVocabulary({key: tuple(v) for key, v in values.items()})
