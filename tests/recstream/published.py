"""A stand-in for a published version where a test needs only its report.json: the shipped ML-1M version's."""

from __future__ import annotations

from pathlib import Path

from stream.settings import PROJECT_MODEL_REPOSITORY
from trainer.version import REPORT_FILE, read_report, write_report


def publish_report(version_dir: Path, max_len: int) -> None:
    """A version folder holding the shipped ML-1M version 1's report.json, trained (it says) on ``max_len``."""
    report = read_report(PROJECT_MODEL_REPOSITORY / "recstream-ml-1m" / "1" / REPORT_FILE)
    version_dir.mkdir(parents=True)
    write_report(version_dir / REPORT_FILE, report.model_copy(update={"config": report.config | {"max_len": max_len}}))
