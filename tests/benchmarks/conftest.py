"""The trainer's tiny event log, for the benchmark tests that train on it."""

from tests.trainer.conftest import tiny_dataset, tiny_files  # noqa: F401 (fixtures)
