"""The real stack for integration tests: tritonserver and a Faust worker process beside the broker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from recstream.broker import Broker
from recstream.triton import TritonServer
from stream.settings import Settings
from tests.integration.support import WorkerProcess


@pytest.fixture(scope="session")
def triton(stack_settings: Settings) -> Iterator[TritonServer]:
    with TritonServer(stack_settings) as server:
        server.wait_ready()
        yield server


@pytest.fixture(scope="session")
def worker(
    broker: Broker, triton: TritonServer, stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    running = WorkerProcess(stack_settings, tmp_path_factory.mktemp("worker-log") / "worker.log")
    running.start()
    yield running
    running.stop()
