"""Fixtures shared by the test packages: settings on free local ports and the real embedded broker."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from recstream.broker import Broker
from recstream.topics import ensure_topics
from stream.app import topic_names
from stream.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    broker_port = free_port()
    grpc_port = free_port()
    return Settings(
        broker_port=broker_port,
        bootstrap_servers=f"127.0.0.1:{broker_port}",
        triton_http_port=free_port(),
        triton_grpc_port=grpc_port,
        triton_metrics_port=free_port(),
        triton_url=f"127.0.0.1:{grpc_port}",
        web_port=free_port(),
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
