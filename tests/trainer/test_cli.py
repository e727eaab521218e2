import threading
import time
from pathlib import Path

import pytest
import typer

from trainer.cli import wait_for_file


def test_wait_for_file_returns_once_the_companion_has_written_it(tmp_path: Path) -> None:
    report = tmp_path / "cold.json"
    writer = threading.Timer(0.3, report.write_text, args=("{}",))
    writer.start()
    started = time.monotonic()
    wait_for_file(report, timeout_s=10, poll_s=0.05)
    assert report.is_file() and 0.25 < time.monotonic() - started < 5


def test_wait_for_file_gives_up_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(typer.BadParameter, match="did not appear within"):
        wait_for_file(tmp_path / "never.json", timeout_s=0.2, poll_s=0.05)
