import threading
import time
from pathlib import Path

import pytest
import typer

from trainer.cli import METRIC_KEYS, cold_start_section, wait_for_file


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


def companion(seed: int, cold_share: float, cold_cases: int, cold_hits: int) -> dict:
    metrics = dict.fromkeys(METRIC_KEYS, 0.1) | {"cold_cases": cold_cases}
    metrics |= {"cold_hr@10": cold_hits / cold_cases if cold_cases else float("nan"), "pop_cold_hr@10": 0.0}
    return {
        "config": {"seed": seed, "cold_share": cold_share},
        "data": {"withheld_items": [f"i{seed}"]},
        "metrics": metrics,
    }


def test_cold_start_pools_the_companions_cases() -> None:
    section = cold_start_section([companion(1, 0.2, 173, 3), companion(2, 0.2, 150, 9), companion(3, 0.2, 7, 1)])
    assert section["metrics"]["cold_cases"] == 330 and section["metrics"]["cold_hits@10"] == 13
    assert section["metrics"]["cold_hr@10"] == pytest.approx(13 / 330)  # not the mean of the three rates
    assert section["metrics"]["pop_cold_hr@10"] == 0.0 and section["cold_share"] == 0.2
    assert [c["seed"] for c in section["companions"]] == [1, 2, 3]
    assert section["companions"][1]["metrics"]["cold_hr@10"] == pytest.approx(9 / 150)


def test_cold_start_refuses_companions_that_do_not_measure_the_same_thing() -> None:
    with pytest.raises(typer.BadParameter, match="different shares"):
        cold_start_section([companion(1, 0.2, 173, 3), companion(2, 0.05, 49, 1)])
    with pytest.raises(typer.BadParameter, match="no cold test cases"):
        cold_start_section([companion(1, 0.0, 0, 0)])
