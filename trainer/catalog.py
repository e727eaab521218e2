"""``recstream add-items``: publish a new version whose catalogue has extra items, embedded from their text
with the parent version's text adapter (the encoder is not retrained; new items have no id embedding, like
the cold items of the evaluation: the adapter's bias already holds the learned unknown-id vector)."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np

from trainer.data import Catalog, default_cache_dir, read_catalog
from trainer.publish import publish
from trainer.text import embed_texts, text_model_named
from trainer.version import (
    CONTEXT_FILE,
    ENCODER_FILE,
    REPORT_FILE,
    TEXT_ADAPTER_FILE,
    AddedItems,
    ItemFiles,
    read_item_files,
    read_report,
    read_text_adapter,
    write_item_files,
    write_report,
)

logger = logging.getLogger(__name__)


def text_item_vectors(version_dir: Path, texts: list[str], cache_dir: Path) -> np.ndarray:
    """float32 [n, H]: the version's text adapter applied to the embeddings of ``texts`` by the text model the
    version was trained with (its report.json's ``text_model``, with its tuned block if it was fine-tuned)."""
    name = read_report(version_dir / REPORT_FILE).text_model
    if name is None:
        raise ValueError(f"{version_dir} was trained without item text: cannot embed new items")
    model = text_model_named(name)
    adapter, tuned = read_text_adapter(version_dir, model.name)
    vectors = embed_texts(texts, cache_dir, model, tuned=tuned)  # [n, D]
    return (vectors @ adapter["weight"].T + adapter["bias"]).astype(np.float32)


def add_items(version_dir: Path, new_items: Catalog, cache_dir: Path | None = None) -> Path:
    """Publish the next version of ``version_dir``'s model with ``new_items`` appended to its catalogue."""
    items = read_item_files(version_dir)
    duplicates = sorted(set(items.item_ids) & set(new_items.item_ids))
    if duplicates or len(set(new_items.item_ids)) != len(new_items):
        raise ValueError(f"item ids already in the catalogue or repeated: {duplicates[:10] or 'repeated ids'}")
    rows = text_item_vectors(version_dir, new_items.texts, cache_dir or default_cache_dir())
    report = read_report(version_dir / REPORT_FILE).model_copy(
        update={
            "parent_version": version_dir.name,
            "created_at": time.time(),
            "added_items": AddedItems(count=len(new_items), item_ids=new_items.item_ids, by="text adapter only"),
            "metrics_note": "metrics are the parent version's; added items are scored through their text only",
        }
    )

    def build(out: Path) -> None:
        for name in (ENCODER_FILE, TEXT_ADAPTER_FILE, CONTEXT_FILE):
            if name != CONTEXT_FILE or (version_dir / name).exists():  # only a use_context version has one
                shutil.copy2(version_dir / name, out / name)
        write_item_files(
            out,
            ItemFiles(
                np.vstack([items.table, rows]), items.item_ids + new_items.item_ids, items.titles + new_items.titles
            ),
        )
        write_report(out / REPORT_FILE, report)

    target = publish(version_dir.parent, build)
    logger.info("%s: %d items added to version %s", target, len(new_items), version_dir.name)
    return target


def add_items_from_file(version_dir: Path, items_path: Path, cache_dir: Path | None = None) -> Path:
    """:func:`add_items` with a CSV/JSONL/Parquet table of ``item_id``, ``title`` and text fields."""
    return add_items(version_dir, read_catalog(items_path), cache_dir)
