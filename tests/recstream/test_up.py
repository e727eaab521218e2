"""``recstream up`` as a user runs it: the whole stack, two workers sharing the partitions, comes up healthy and
SIGTERM leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from recstream.stack import local_settings, replica_settings, settings_env

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and str(os.getpid()) != proc.name:
                found.append(cmdline)
    return found


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_up_runs_the_stack_and_sigterm_stops_every_part(tmp_path: Path) -> None:
    settings = local_settings(model_repository=ROOT / "model_repository", data_dir=tmp_path / "worker", workers=2)
    web_ports = [replica_settings(settings, i).web_port for i in range(settings.workers)]
    env = settings_env(settings) | {"PYTHONPATH": str(ROOT)}  # runs in tmp_path: its var/ (logs) goes there
    up = subprocess.Popen(
        [sys.executable, "-m", "recstream", "up", "--no-replay"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        healthy = False  # every worker: healthy means it holds partitions, so the two share them
        while time.monotonic() < deadline and up.poll() is None and not healthy:
            healthy = all(_healthy(port) for port in web_ports)
            time.sleep(0 if healthy else 1)
        assert healthy, up.stdout.read().decode() if up.poll() is not None else "not healthy in time"
        assert (tmp_path / "worker-1").is_dir(), "the second worker keeps its own table state"
        ports = [str(settings.broker_port), str(settings.triton_grpc_port)]
        assert all(_processes_mentioning(port) for port in ports), "broker and Triton run as children"

        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=90) == 0
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
    time.sleep(1)
    for port in (str(settings.broker_port), str(settings.triton_grpc_port)):
        assert not _processes_mentioning(port), f"a process of the stack (port {port}) outlived SIGTERM"
    assert not any(_healthy(port) for port in web_ports), "no worker outlived SIGTERM"
    assert not _processes_mentioning("pyenv/bin/python"), "no python backend stub left"
