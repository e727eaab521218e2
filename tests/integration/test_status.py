"""`recstream status` against the running stack (real broker, Triton and worker)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from recstream.stack import settings_env
from stream.settings import Settings
from tests.integration.support import WorkerProcess

pytestmark = pytest.mark.integration


def test_status_of_a_running_stack(worker: WorkerProcess, stack_settings: Settings) -> None:
    env = settings_env(stack_settings) | {"COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "recstream", "status"], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split()[1]: line for line in result.stdout.splitlines()}
    assert set(lines) == {"broker", "triton", "worker"}
    assert all(line.split()[0] == "ok" for line in lines.values())
    shipped = max(int(p.name) for p in (stack_settings.model_repository / "recstream").iterdir() if p.name.isdigit())
    assert f"version {shipped}" in lines["triton"]
    assert "healthy, lag" in lines["worker"]


def test_status_checks_every_worker_it_is_told_of(worker: WorkerProcess, stack_settings: Settings) -> None:
    """Told of two workers where one runs, status names the missing one (its port: web_port + 1) and fails."""
    env = settings_env(stack_settings.model_copy(update={"workers": 2})) | {"COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "recstream", "status"], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode != 0
    lines = {line.split()[1]: line for line in result.stdout.splitlines()}
    assert lines["worker"].split()[0] == "ok"
    assert lines["worker-1"].split()[0] != "ok" and f":{stack_settings.web_port + 1}" in lines["worker-1"]
