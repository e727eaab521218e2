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
from stream.settings import Settings
from tests.model_repository.tiny_version import build_repository

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
