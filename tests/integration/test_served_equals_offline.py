"""Served = offline: a slice of ML-100K users' histories, replayed through the real broker, Triton and worker, gives
every user the rank of the held-out item (within the top 10) and the top 10 that ``trainer.evaluate`` gives offline.

The worker runs with the rules that make its window and exclusion equal to ``eval_cases``' (no age limit within the
histories, every history item consumed) and a window of ``WINDOW`` events, shorter than every chosen history, so
that the order of the window, its truncation and the consumed items beyond it all decide the result.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.served_vs_offline import ReplayPlan, compare, matched_rules, plan_replay, served_predictions
from recstream.bench import NO_GUIDANCE, newest_version
from recstream.triton import TritonServer
from stream.settings import Settings
from tests.integration.support import WorkerProcess, own_app_settings
from trainer.data import TEST, load_movielens
from trainer.evaluate import K, load_version

pytestmark = pytest.mark.integration

WINDOW = 10  # events in the stream's window and the offline history
USERS = 30  # the first users (user-id order) with 2-4 windows of history before their test event


@pytest.fixture(scope="module")
def plan(stack_settings: Settings) -> ReplayPlan:
    version = load_version(newest_version(stack_settings), load_movielens())
    chosen = [u for u in version.dataset.users if 2 * WINDOW <= len(u.items) - 1 <= 4 * WINDOW][:USERS]
    return plan_replay(version, replace(version.dataset, users=chosen), TEST, "served-offline")


@pytest.fixture
def matched_worker(
    broker: object, triton: TritonServer, stack_settings: Settings, plan: ReplayPlan, tmp_path: Path
) -> Iterator[WorkerProcess]:
    """A worker of its own app and topics on the session's broker and Triton, with the matched rules."""
    settings = own_app_settings(
        stack_settings,
        "served-offline",
        tmp_path / "state",
        window_max_events=WINDOW,
        **matched_rules(plan.history),
        **NO_GUIDANCE,
    )
    running = WorkerProcess(settings, tmp_path / "worker.log")
    running.start()
    yield running
    running.stop()


async def test_every_served_rank_equals_the_offline_rank(plan: ReplayPlan, matched_worker: WorkerProcess) -> None:
    settings = matched_worker.settings
    served = await served_predictions(settings, plan.events, stall_s=60)
    comparison = compare(plan, settings, served, "matched")

    assert comparison.users == USERS and comparison.offline_max_len == WINDOW
    assert comparison.shorter_window == 0, "every last prediction's window holds the whole offline history"
    assert [(r.user_id, r.offline_rank, r.served_rank) for r in comparison.differing if not r.same_rank] == []
    assert [(r.user_id, r.offline_top, r.served_top) for r in comparison.differing] == []
    assert comparison.served == comparison.offline, "HR, NDCG and MRR equal to the last digit"
    assert comparison.offline[f"hr@{K}"] > 0, "some targets are in the top 10: ranks are compared where they count"
