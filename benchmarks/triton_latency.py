"""Serving latency: ``TritonScorer.score`` against the real tritonserver, for batches of full windows.

    python -m benchmarks.triton_latency --repository model_repository [--batches 1 16 64] [--repeats 30]

Starts Triton (free local ports) on the repository, scores batches of windows of ``--events`` events of
random catalogue items (of the newest version's items.json), and logs the median and p90 of ``--repeats``
timed calls per batch size, after warm-up calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import statistics
import tempfile
import time
from pathlib import Path

from recstream.stack import local_settings
from recstream.triton import TritonServer
from stream.schemas import EventType, WindowEvent
from stream.settings import Settings
from stream.triton_client import TritonScorer

logger = logging.getLogger("benchmarks.triton_latency")


def _windows(items: list[str], batch: int, events: int, rng: random.Random) -> list[list[WindowEvent]]:
    return [
        [
            WindowEvent(
                event_id=f"{b}-{i}",
                item_id=rng.choice(items),
                event_type=rng.choice(list(EventType)),
                timestamp=1_700_000_000.0 + 60.0 * i,
                record_ts_ms=0,
            )
            for i in range(events)
        ]
        for b in range(batch)
    ]


async def _measure(settings: Settings, items: list[str], args: argparse.Namespace) -> list[tuple[int, float, float]]:
    scorer = TritonScorer(settings)
    await scorer.start()
    rng = random.Random(0)
    rows = []
    try:
        for batch in args.batches:
            windows = _windows(items, batch, args.events, rng)
            for _ in range(args.warmup):
                await scorer.score(windows)
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                await scorer.score(windows)
                times.append((time.perf_counter() - started) * 1000)
            p90 = statistics.quantiles(times, n=10)[-1]
            rows.append((batch, statistics.median(times), p90))
            logger.info("batch %3d: median %.1f ms, p90 %.1f ms", batch, rows[-1][1], p90)
    finally:
        await scorer.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    settings = local_settings(
        model_repository=args.repository,
        window_max_events=args.events,
        triton_timeout_s=120.0,
    )
    versions = [p for p in (args.repository / settings.model_name).iterdir() if p.name.isdigit()]
    newest = max(versions, key=lambda p: int(p.name))
    items = json.loads((newest / "items.json").read_bytes())["item_ids"]
    with tempfile.TemporaryDirectory() as work, TritonServer(settings, work_dir=Path(work)) as server:
        server.wait_ready(300)
        rows = asyncio.run(_measure(settings, items, args))
    logger.info("\n| batch (windows of %d events) | median ms | p90 ms |\n|---|---|---|", args.events)
    for batch, median, p90 in rows:
        logger.info("| %d | %.1f | %.1f |", batch, median, p90)
    logger.info("(version %s, %d items)", newest.name, len(items))


if __name__ == "__main__":
    main()
