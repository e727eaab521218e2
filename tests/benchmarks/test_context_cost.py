"""benchmarks/context_cost.py against the real tritonserver: both arms scored, the context really sent."""

from __future__ import annotations

import pytest

from benchmarks.context_cost import USER_CONTEXT, measure, windows
from stream.metrics import Metrics
from stream.settings import Settings
from stream.triton_client import TritonScorer, row_context
from tests.model_repository.tiny_version import item_ids

pytestmark = pytest.mark.integration


def test_windows_are_distinct_users_with_full_windows() -> None:
    made = windows(item_ids(), count=4, length=7, seed=1)
    assert [len(w) for w in made] == [7] * 4
    assert len({tuple(e.item_id for e in w) for w in made}) == 4
    assert row_context([e.model_copy(update={"context": USER_CONTEXT}) for e in made[0]]).count(b"technician") == 1


async def test_both_arms_are_timed_on_a_version_that_reads_context(context_triton: Settings) -> None:
    scorer = TritonScorer(context_triton, Metrics())
    await scorer.start()
    try:
        rows = await measure(scorer, item_ids(), batches=[1, 3], length=5, rounds=2)
    finally:
        await scorer.stop()
    assert [r["windows"] for r in rows] == [1, 3]
    assert all(r["without_ms"] > 0 and r["with_ms"] > 0 and r["ratio"] == r["with_ms"] / r["without_ms"] for r in rows)
