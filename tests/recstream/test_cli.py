"""The command line as a user meets it: clear one-line errors, settings from flags and the environment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from recstream.stack import settings_env
from stream.settings import Settings


def recstream(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "recstream", *args], capture_output=True, text=True, timeout=60, env=env
    )


def test_a_taken_port_is_one_error_line_not_a_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = recstream("--broker-port", str(port), "broker")
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: broker: port 127.0.0.1:{port} is already in use (Address already in use)"
    assert "Traceback" not in result.stdout + result.stderr


def test_settings_round_trip_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(partitions=7, topic_views="site-views", window_max_age_s=60.0, top_k=5)
    assert Settings() != settings
    for key, value in settings_env(settings).items():
        if key.startswith("RECSTREAM_"):
            monkeypatch.setenv(key, value)
    assert Settings() == settings, "a child process started with settings_env sees the same settings"


def test_a_missing_broker_binary_is_one_error_line() -> None:
    env = dict(os.environ, CALF_TANSU_BIN="/nonexistent/tansu", RECSTREAM_EMBEDDED_BROKER="tansu")
    result = recstream("broker", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: broker: tansu binary not found") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
