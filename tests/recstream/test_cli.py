"""The command line as a user meets it: clear one-line errors, settings from flags and the environment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from recstream.cli import serving
from recstream.errors import StackError
from recstream.processes import free_ports
from recstream.stack import settings_env
from stream.settings import PROJECT_MODEL_REPOSITORY, Settings
from tests.recstream.published import publish_report


def recstream(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "recstream", *args], capture_output=True, text=True, timeout=60, env=env, cwd=cwd
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


def test_config_shows_each_setting_and_where_it_came_from(tmp_path: Path) -> None:
    """Run from another directory: flags beat the environment, which beats .env, which beats the defaults."""
    (tmp_path / ".env").write_text("RECSTREAM_TOP_K=3\nRECSTREAM_MAX_BATCH_SIZE=16\n")
    env = dict(os.environ, RECSTREAM_TOP_K="7", COLUMNS="200")
    result = recstream("--web-port", "7000", "config", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1:3] for line in result.stdout.splitlines()[1:] if line.strip()}
    assert rows["web_port"] == ["7000", "flag"]
    assert rows["top_k"] == ["7", "environment"]
    assert rows["max_batch_size"] == ["16", ".env"]
    assert rows["partitions"] == ["4", "default"]
    assert rows["model_repository"] == [str(PROJECT_MODEL_REPOSITORY), "default"], "found from any directory"


def test_status_names_every_part_that_is_down() -> None:
    broker, grpc, web = free_ports(3)
    env = dict(os.environ, COLUMNS="200")
    args = ["--bootstrap-servers", f"127.0.0.1:{broker}", "--triton-url", f"127.0.0.1:{grpc}", "--web-port", str(web)]
    result = recstream(*args, "status", env=env)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["down", "broker"], ["down", "triton"], ["down", "worker"]]
    assert "Traceback" not in result.stdout + result.stderr


def test_up_with_a_dataset_serves_its_own_model(tmp_path: Path) -> None:
    """`recstream up --dataset ml-1m` serves recstream-ml-1m; without a version of it, one error line."""
    result = recstream("--model-repository", str(tmp_path), "up", "--dataset", "ml-1m", "--no-replay")
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert result.stderr.strip() == (
        f"error: no version of model 'recstream-ml-1m' in {tmp_path / 'recstream-ml-1m'}: train one with "
        "`recstream train --dataset ml-1m`"
    )
    publish_report(tmp_path / "recstream-ml-1m" / "1", max_len=50)
    settings = Settings(model_repository=tmp_path)
    assert serving(settings, "ml-1m").model_name == "recstream-ml-1m"
    chosen = settings.model_copy(update={"model_name": "mine"})
    with pytest.raises(StackError, match="no version of model 'mine'"):
        serving(chosen, "ml-1m")  # --model-name wins over the dataset's model


def test_the_window_holds_the_newest_versions_history(tmp_path: Path) -> None:
    """A version trained on 200-event histories is served 200-event windows; a flag or the environment wins."""
    publish_report(tmp_path / "recstream-ml-1m" / "1", max_len=50)
    publish_report(tmp_path / "recstream-ml-1m" / "2", max_len=200)
    assert Settings().window_max_events == 50
    assert serving(Settings(model_repository=tmp_path), "ml-1m").window_max_events == 200
    assert serving(Settings(model_repository=tmp_path, window_max_events=30), "ml-1m").window_max_events == 30
