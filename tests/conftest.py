"""Fixtures shared by the test packages: settings on free local ports and the real embedded broker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from recstream.broker import Broker
from recstream.stack import local_settings
from recstream.topics import ensure_topics
from stream.names import topic_names
from stream.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return local_settings(
        model_repository=ROOT / "model_repository",
        data_dir=tmp_path_factory.mktemp("worker"),
        max_wait_ms=50,
        guidance_cooldown_s=3600,
        recommend_min_score=0.0,
    )


@pytest.fixture(scope="session")
def broker(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with Broker(stack_settings, tmp_path_factory.mktemp("log")) as running:
        asyncio.run(ensure_topics(stack_settings, topic_names(stack_settings)))
        yield running


@pytest.fixture(scope="session")
def tiny_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The real tritonserver serving a tiny generated model version; yields settings that reach it."""
    from tests.model_repository.tiny_version import build_repository, serve  # needs onnx (train extra)

    repository = build_repository(tmp_path_factory.mktemp("tiny_repository"))
    with serve(repository, tmp_path_factory.mktemp("triton")) as settings:
        yield settings


@pytest.fixture(scope="session")
def context_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The real tritonserver serving a tiny version whose encoder takes context (use_context, context.json)."""
    from tests.model_repository.tiny_version import build_repository, serve

    repository = build_repository(tmp_path_factory.mktemp("context_repository"), seed=4, use_context=True)
    with serve(repository, tmp_path_factory.mktemp("context_triton")) as settings:
        yield settings
