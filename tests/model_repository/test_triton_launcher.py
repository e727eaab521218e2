"""recstream.triton.TritonServer: clear errors before starting, and no processes left after stopping."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from recstream.errors import StackError
from recstream.stack import local_settings
from recstream.triton import TritonServer
from stream.metrics import Metrics
from stream.settings import Settings
from stream.triton_client import TritonScorer
from tests.model_repository.tiny_version import build_repository, write_version
from tests.stream.helpers import event
from trainer.publish import model_folder, model_name

pytestmark = pytest.mark.integration


def _settings(repository: Path) -> Settings:
    return local_settings(model_repository=repository)


def test_a_taken_port_is_a_stack_error(tmp_path: Path) -> None:
    settings = _settings(build_repository(tmp_path / "repo"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", settings.triton_grpc_port))
        taken.listen()
        server = TritonServer(settings, work_dir=tmp_path / "work")
        with pytest.raises(StackError, match=rf"triton gRPC: port 127.0.0.1:{settings.triton_grpc_port} is already"):
            server.start()
    assert not server.running


def test_a_missing_model_is_a_stack_error(tmp_path: Path) -> None:
    server = TritonServer(_settings(tmp_path), work_dir=tmp_path / "work")
    with pytest.raises(StackError, match="no model 'recstream'"):
        server.start()


def test_stop_leaves_no_processes(tmp_path: Path) -> None:
    settings = _settings(build_repository(tmp_path / "repo"))
    with TritonServer(settings, work_dir=tmp_path / "work") as server:
        server.wait_ready(120)
        assert (tmp_path / "repo" / "recstream" / "pyenv").resolve() == Path(sys.prefix).resolve()
        group = server._proc.pid
    with pytest.raises(ProcessLookupError):  # the stub processes were in the server's process group
        os.killpg(group, 0)


async def test_a_datasets_own_model_shares_the_config_and_backend(tmp_path: Path) -> None:
    """ML-1M's versions go to their own model (other item ids), whose config.pbtxt and model.py are links to the
    default model's: Triton serves it by its folder's name, with the same tensors."""
    repository = build_repository(tmp_path / "repo")
    name = model_name("ml-1m")
    assert (name, model_name("ml-100k"), model_name(None)) == ("recstream-ml-1m", "recstream", "recstream")
    folder = model_folder(repository, name)
    assert (folder / "config.pbtxt").read_bytes() == (repository / "recstream" / "config.pbtxt").read_bytes()
    write_version(folder, "1", seed=3)
    settings = local_settings(model_repository=repository, model_name=name)
    with TritonServer(settings, work_dir=tmp_path / "work") as server:
        server.wait_ready(120)
        scorer = TritonScorer(settings, Metrics())
        await scorer.start()
        try:
            [scored] = await scorer.score([[event("e1", 1.0, item_id="item-0001")]])
        finally:
            await scorer.stop()
    assert (scored.model.name, scored.model.version) == (name, "1")
    assert len(scored.next_items) == settings.top_k
