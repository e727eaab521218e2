"""TritonScorer against the real tritonserver serving a tiny generated model version."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import tritonclient.grpc.aio as aioclient

from recstream.processes import free_ports
from stream.metrics import Metrics
from stream.schemas import EVENT_TYPES, EventType, Scored, ScoringError, TransientScoringError, WindowEvent
from stream.settings import Settings
from stream.triton_client import TritonScorer
from tests.model_repository.tiny_version import build_repository, item_ids, serve, write_version
from trainer.publish import load_in_triton

pytestmark = pytest.mark.integration

IDS = item_ids()
T0 = 1_700_000_000.0


def window(n: int, seed: int, unknown: bool = False) -> list[WindowEvent]:
    rng = random.Random(seed)
    events = [
        WindowEvent(
            event_id=f"e{seed}-{i}",
            item_id="not-in-catalogue" if unknown and i == 0 else rng.choice(IDS),
            event_type=rng.choice(list(EventType)),
            timestamp=T0 + i * rng.uniform(1, 5000),
            record_ts_ms=0,
        )
        for i in range(n)
    ]
    return events


@pytest.fixture
async def scorer(tiny_triton: Settings) -> AsyncIterator[TritonScorer]:
    running = TritonScorer(tiny_triton, Metrics())
    await running.start()
    yield running
    await running.stop()


def assert_same(a: Scored, b: Scored) -> None:
    assert [i.item_id for i in a.next_items] == [i.item_id for i in b.next_items]
    assert all(math.isclose(x.score, y.score, rel_tol=1e-4) for x, y in zip(a.next_items, b.next_items, strict=True))
    assert all(math.isclose(a.next_action[k], b.next_action[k], rel_tol=1e-4) for k in EVENT_TYPES)


async def test_ready(scorer: TritonScorer) -> None:
    assert await scorer.ready()


async def test_not_ready_without_a_server() -> None:
    (port,) = free_ports(1)
    scorer = TritonScorer(Settings(triton_url=f"127.0.0.1:{port}"), Metrics())
    await scorer.start()
    try:
        assert not await scorer.ready()
    finally:
        await scorer.stop()


async def test_score(scorer: TritonScorer, tiny_triton: Settings) -> None:
    windows = [window(50, seed=1), window(3, seed=2, unknown=True), window(1, seed=3)]
    results = await scorer.score(windows)
    assert len(results) == 3
    for events, result in zip(windows, results, strict=True):
        assert (result.model.name, result.model.version) == ("recstream", "1")
        assert len(result.next_items) == tiny_triton.top_k
        scores = [item.score for item in result.next_items]
        assert scores == sorted(scores, reverse=True) and sum(scores) <= 1.0
        assert not {item.item_id for item in result.next_items} & {e.item_id for e in events}
        assert list(result.next_action) == list(EVENT_TYPES)
        assert math.isclose(sum(result.next_action.values()), 1.0, rel_tol=1e-5)
    assert all(item.title is None for item in results[0].next_items if int(item.item_id[5:]) % 7 == 0)


async def test_consumed_items_are_left_out_of_the_top_items(scorer: TritonScorer) -> None:
    """Items the user consumed before the window (EXCLUDE_IDS) are never recommended, like the window's own."""
    events = window(5, seed=11)
    plain = (await scorer.score([events]))[0]
    consumed = [item.item_id for item in plain.next_items[:3]]
    excluded, other = await scorer.score([events, window(4, seed=12)], [consumed, []])
    assert not set(consumed) & {item.item_id for item in excluded.next_items}
    assert [i.item_id for i in excluded.next_items[:3]] == [i.item_id for i in plain.next_items[3:6]]
    assert_same(other, (await scorer.score([window(4, seed=12)]))[0])


async def test_explain(scorer: TritonScorer) -> None:
    windows = [window(50, seed=1), window(3, seed=2, unknown=True), window(1, seed=3)]
    results = await scorer.explain(windows)
    for events, result in zip(windows, results, strict=True):
        assert (result.model.name, result.model.version) == ("recstream", "1")
        assert len(result.weights) == len(result.titles) == len(events)
        for event, title in zip(events, result.titles, strict=True):
            row = IDS.index(event.item_id) if event.item_id in IDS else None
            # tiny_version: item i has title "Titré i" unless i % 7 == 0
            assert title == (None if row is None or row % 7 == 0 else f"Titré {row}")
    assert results[2].weights[0] != 0, "a window's only event gets the whole logit"


async def test_a_batch_is_padded_to_its_longest_window_only(scorer: TritonScorer) -> None:
    """A short window scores the same alone (no padding) as beside a full one (padded to 50)."""
    short = window(7, seed=4)
    alone = (await scorer.score([short]))[0]
    beside_long = (await scorer.score([window(50, seed=5), short]))[1]
    assert_same(alone, beside_long)


async def settled_stats(
    client: aioclient.InferenceServerClient, model: str, successes: int, wait_s: float = 5.0
) -> dict:
    """The model's statistics once they count ``successes`` (or ``wait_s`` later): the python backend reports an
    execution's statistics after its responses have gone, so a read right after the answers can miss them."""
    deadline = time.monotonic() + wait_s
    while True:
        stats = (await client.get_inference_statistics(model, as_json=True))["model_stats"][0]
        if int(stats["inference_stats"]["success"]["count"]) >= successes or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.05)


async def quiet_stats(client: aioclient.InferenceServerClient, model: str, quiet_s: float = 0.5) -> dict:
    """The model's statistics once they have not moved for ``quiet_s``: every earlier execution counted."""
    stats = (await client.get_inference_statistics(model, as_json=True))["model_stats"][0]
    while True:
        await asyncio.sleep(quiet_s)
        again = (await client.get_inference_statistics(model, as_json=True))["model_stats"][0]
        if (
            again["inference_stats"] == stats["inference_stats"]
            and again["execution_count"] == stats["execution_count"]
        ):
            return again
        stats = again


async def test_concurrent_calls_are_batched_and_each_gets_its_own_result(
    scorer: TritonScorer, tiny_triton: Settings
) -> None:
    windows = [[window(50, seed=100 + i)] for i in range(20)]
    alone = [(await scorer.score(w))[0] for w in windows]
    client = aioclient.InferenceServerClient(tiny_triton.triton_url)
    try:
        before = await quiet_stats(client, tiny_triton.model_name)  # the calls above all counted
        together = await asyncio.gather(*(scorer.score(w) for w in windows))
        expected = int(before["inference_stats"]["success"]["count"]) + len(windows)
        after = await settled_stats(client, tiny_triton.model_name, expected)
    finally:
        await client.close()
    for single, batched in zip(alone, together, strict=True):
        assert len(batched) == 1
        assert_same(single, batched[0])
    requests = int(after["inference_stats"]["success"]["count"]) - int(before["inference_stats"]["success"]["count"])
    executions = int(after["execution_count"]) - int(before["execution_count"])
    assert requests == 20 and executions < 20  # the dynamic batcher merged requests


async def test_batch_of_64(scorer: TritonScorer) -> None:
    windows = [window(1 + i % 50, seed=200 + i) for i in range(64)]
    assert len(await scorer.score(windows)) == 64
    assert [len(r.weights) for r in await scorer.explain(windows)] == [len(w) for w in windows]


async def test_invalid_windows(scorer: TritonScorer) -> None:
    assert await scorer.score([]) == []
    with pytest.raises(ValueError, match=r"1\.\.50 events"):
        await scorer.score([window(51, seed=5)])
    with pytest.raises(ValueError, match=r"1\.\.50 events"):
        await scorer.score([[]])


async def test_unreachable_server_is_a_transient_error() -> None:
    """No retries here: the batcher is the one retry layer, and it retries only transient errors."""
    (port,) = free_ports(1)
    scorer = TritonScorer(Settings(triton_url=f"127.0.0.1:{port}"), Metrics())
    await scorer.start()
    try:
        with pytest.raises(TransientScoringError, match=r"StatusCode.UNAVAILABLE"):
            await scorer.score([window(2, seed=6)])
    finally:
        await scorer.stop()


async def test_a_rejected_request_is_a_permanent_error(scorer: TritonScorer) -> None:
    bad = [window(3, seed=7)[0].model_copy(update={"timestamp": math.nan})]
    with pytest.raises(ScoringError, match="TIMESTAMPS must be finite") as raised:
        await scorer.score([bad])
    assert not isinstance(raised.value, TransientScoringError)


async def test_version_swap_keeps_answering(tmp_path: Path) -> None:
    """Publish version 2 atomically and load it: every call in flight is answered, then by version 2;
    a moment without any loaded version is a transient error (which the batcher retries)."""
    repository = build_repository(tmp_path / "repo")
    with serve(repository, tmp_path / "work") as settings:
        scorer = TritonScorer(settings, Metrics())
        await scorer.start()
        versions: list[str] = []
        stop = asyncio.Event()

        async def keep_scoring() -> None:
            while not stop.is_set():
                versions.extend(r.model.version for r in await scorer.score([window(20, seed=7)]))

        loop = asyncio.create_task(keep_scoring())
        client = aioclient.InferenceServerClient(settings.triton_url)
        try:
            await asyncio.sleep(0.5)
            write_version(repository / settings.model_name, "2", seed=1)
            # what `recstream train --load` does
            await asyncio.to_thread(load_in_triton, settings.triton_url, settings.model_name)
            await asyncio.sleep(0.5)
            stop.set()
            await loop  # raises if any call failed
            assert (await scorer.score([window(5, seed=8)]))[0].model.version == "2"
            assert versions[0] == "1" and versions[-1] == "2"
            # no version loaded for a moment: Triton answers NOT_FOUND, a transient error
            await client.unload_model(settings.model_name)
            while await client.is_model_ready(settings.model_name):  # unloading finishes in the background
                await asyncio.sleep(0.01)
            with pytest.raises(TransientScoringError, match=r"NOT_FOUND|UNAVAILABLE"):
                await scorer.score([window(5, seed=9)])
            await client.load_model(settings.model_name)
            assert (await scorer.score([window(5, seed=9)]))[0].model.version == "2"
        finally:
            stop.set()
            await client.close()
            await scorer.stop()


def with_context(events: list[WindowEvent], contexts: list[dict[str, str]]) -> list[WindowEvent]:
    return [e.model_copy(update={"context": c}) for e, c in zip(events, contexts, strict=True)]


async def test_each_event_s_context_reaches_a_version_that_reads_it(context_triton: Settings) -> None:
    """tests/model_repository/tiny_version.py's context version knows device (mobile, tv, web) and region (1, 2)."""
    scorer = TritonScorer(context_triton, Metrics())
    await scorer.start()
    try:
        events = window(4, seed=5)
        known = with_context(events, [{"device": "tv"}, {}, {"region": "2", "device": "web"}, {"region": "1"}])
        unknown = with_context(events, [{"colour": "red"}, {}, {"device": "fridge"}, {"region": "9"}])
        plain, read, ignored = await scorer.score([events, known, unknown])
        assert_same(ignored, plain)  # what the version does not know is no context at all
        assert not math.isclose(read.next_items[0].score, plain.next_items[0].score, rel_tol=1e-3)
        # a window's context is its own: batched with others or alone, the same scores
        (alone,) = await scorer.score([known])
        assert_same(alone, read)
    finally:
        await scorer.stop()


async def test_a_version_without_context_scores_it_as_none(scorer: TritonScorer) -> None:
    events = window(5, seed=6)
    plain, given = await scorer.score([events, with_context(events, [{"device": "tv"}] * 5)])
    assert_same(given, plain)
