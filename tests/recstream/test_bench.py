"""``recstream bench --quick`` end to end on the real stack: every section of the report, with sane numbers."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from recstream.bench import BenchOptions, InProcessModel, bench_settings, config_parameters
from stream.metrics import Metrics
from stream.policy import decide
from stream.schemas import EventType, ModelRef, Prediction, ScoredItem, WindowEvent, WindowSummary
from stream.settings import Settings
from stream.triton_client import TritonScorer

ROOT = Path(__file__).resolve().parents[2]

STAGES = ("ingest", "window", "batch_wait", "triton", "emit", "output")


def test_quick_options_are_small_and_given_options_win() -> None:
    quick = BenchOptions.create(quick=True, users=70)
    assert quick.users == 70 and quick.events_per_user < BenchOptions().events_per_user
    assert BenchOptions.create(rates=[0.5]).rates == (0.5,)


def test_no_guidance_settings_guide_nobody(tmp_path: Path) -> None:
    settings = bench_settings(Settings(), BenchOptions(out=tmp_path, guidance=False))
    window = [WindowEvent(event_id="e", item_id="1", event_type="add_to_cart", timestamp=1.0, record_ts_ms=0)]
    for purchase, click in ((0.99, 0.0), (0.0, 0.0), (0.0, 0.99)):
        prediction = Prediction(
            user_id="u",
            event_ids=["e"],
            model=ModelRef(name="recstream", version="1"),
            next_items=[ScoredItem(item_id="2", score=0.999)],
            next_action={"view": 1 - purchase - click, "click": click, "add_to_cart": 0.0, "purchase": purchase},
            window=WindowSummary(events=1, span_seconds=0.0),
            latency_ms=1.0,
            stages_ms={},
            emitted_at=1.0,
        )
        assert decide(prediction, window, None, settings) is None
    assert bench_settings(Settings(), BenchOptions(out=tmp_path)).recommend_min_score == Settings().recommend_min_score


def test_the_ceiling_reads_the_served_session_options() -> None:
    parameters = config_parameters(ROOT / "model_repository" / "recstream" / "config.pbtxt")
    assert int(parameters["intra_op_num_threads"]) >= 0
    assert int(parameters["top_k"]) > 0


@pytest.mark.integration
async def test_the_ceiling_feeds_a_time_and_context_version_as_triton_does(tmp_path: Path) -> None:
    """A version whose encoder also takes hour, weekday and context (tests/model_repository/tiny_version.py):
    the in-process ceiling ranks every window as the real Triton serves it."""
    from tests.model_repository.tiny_version import build_repository, item_ids, serve  # needs onnx (train extra)

    rng = random.Random(3)
    contexts = [{}, {"device": "tv"}, {"device": "web", "region": "2"}, {"region": "1"}, {"colour": "red"}]
    windows = [
        [
            WindowEvent(
                event_id=f"w{w}-{i}",
                item_id=rng.choice(item_ids()),
                event_type=rng.choice(list(EventType)),
                timestamp=1_700_000_000.0 + w * 7_000 + i * rng.uniform(60, 20_000),
                record_ts_ms=0,
                context=rng.choice(contexts),
            )
            for i in range(rng.randint(1, 6))
        ]
        for w in range(12)
    ]
    repository = build_repository(tmp_path / "repository", seed=2, use_time=True, use_context=True)
    with serve(repository, tmp_path / "triton") as settings:
        model = InProcessModel(settings)
        assert {"hour", "weekday", "context"} <= set(model.input_names)
        scorer = TritonScorer(settings, Metrics())
        await scorer.start()
        try:
            served = [[item.item_id for item in s.next_items] for s in await scorer.score(windows)]
        finally:
            await scorer.stop()
    local = [[model.item_ids[row - 1] for row in top] for top in model.score(model.arrays(windows))]
    assert all(s for s in served)
    assert [top[: len(s)] for top, s in zip(local, served, strict=True)] == served


@pytest.mark.integration
def test_quick_bench_reports_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = subprocess.run(
        [sys.executable, "-m", "recstream", "bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = orjson.loads((out / "report.json").read_bytes())
    options = report["options"]

    for section in ("ceiling", "ceiling_full_windows"):
        rows = report[section]["rows"]
        assert [r["batch"] for r in rows] == [1, 8, 64]
        assert all(r["windows_per_s"] > 0 and r["calls"] >= 3 for r in rows)
        assert report[section]["intra_op_threads"] == int(
            config_parameters(ROOT / "model_repository" / "recstream" / "config.pbtxt")["intra_op_num_threads"]
        )
    assert report["ceiling_full_windows"]["window_events_mean"] == report["settings"]["window_max_events"]
    assert report["ceiling"]["window_events_mean"] <= options["events_per_user"]

    served = report["served"]
    assert {(r["batch"], r["concurrency"]) for r in served["rows"]} == {(1, 1), (1, 4), (64, 1), (64, 4)}
    assert all(r["windows_per_s"] > 0 and r["latency_ms"]["p50"] <= r["latency_ms"]["p99"] for r in served["rows"])
    assert served["top_items_agree"] >= 0.9, "the in-process ceiling computes what Triton serves"

    for run in ("pipeline", "naive"):
        phases = report[run]
        assert [p["phase"] for p in phases] == ["saturated", "steady"]
        for p in phases:
            assert p["events_sent"] == p["users"] * options["events_per_user"]
            assert p["events_accounted"] == p["events_sent"] and p["events_missing"] == 0, "every event accounted for"
            assert p["users"] >= (options["users"] if run == "pipeline" or p["phase"] == "saturated" else 1)
            assert p["events_per_s"] > 0 and p["predictions"] >= p["events_sent"] / options["events_per_user"]
            lat = p["latency_ms"]
            assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
            assert set(STAGES) - ({"batch_wait"} if run == "naive" else set()) <= set(p["stages_ms"])
            assert p["cpu_percent"]["consumer"] > 0 and p["cpu_percent"]["triton"] > 0 and p["rss_mib_peak"] > 0
        steady = phases[1]
        assert steady["offered_events_per_s"] == pytest.approx(
            steady["fraction_of_saturated"] * phases[0]["events_per_s"]
        )
    assert report["pipeline"][0]["batch_users_mean"] >= 1

    targets = report["targets"]
    for name in ("saturated_over_naive", "predictions_over_served_ceiling", "predictions_over_inprocess_ceiling"):
        assert targets[name] > 0, name
    assert 0 < targets["half_rate_latency_p50_ms"] <= targets["half_rate_latency_p99_ms"]

    markdown = (out / "report.md").read_text()
    assert "| end-to-end saturated throughput ÷ naive |" in markdown
    assert "| run | phase | ingest | rekey | window | batch_wait | triton | emit | output | other | total |" in markdown
    assert markdown.strip() in result.stdout.replace("\r", "")
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
