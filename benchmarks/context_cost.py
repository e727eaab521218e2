"""What the events' context costs a request to Triton: the same windows scored with and without it, interleaved.

    python -m benchmarks.context_cost                      # the shipped model (version 6 ignores CONTEXT)
    python -m benchmarks.context_cost --repository var/ablation-ctx/ml100k/repo   # a use_context version

The worker sends each window's context as one CONTEXT string per row (``stream.triton_client.row_context``) only
when some event of the request carries any. Here every event of a user carries the same four-key context, as a
MovieLens replay sends its user attributes. The client is the worker's own ``TritonScorer``; each batch size B is
timed ``--rounds`` times per arm, alternating, and the medians and their ratio are printed as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from recstream.stack import local_settings
from recstream.triton import TritonServer
from stream.metrics import Metrics
from stream.schemas import EventType, WindowEvent
from stream.triton_client import TritonScorer
from trainer.version import read_item_files

logger = logging.getLogger(__name__)

USER_CONTEXT = {"age": "25", "gender": "M", "occupation": "technician", "region": "5"}


def windows(item_ids: list[str], count: int, length: int, seed: int) -> list[list[WindowEvent]]:
    rng = np.random.default_rng(seed)
    kinds = [EventType.view, EventType.click]
    return [
        [
            WindowEvent(
                event_id=f"w{w}-{i}",
                item_id=str(rng.choice(item_ids)),
                event_type=kinds[int(rng.integers(2))],
                timestamp=1_700_000_000.0 + 60 * i,
                record_ts_ms=0,
            )
            for i in range(length)
        ]
        for w in range(count)
    ]


async def measure(scorer: TritonScorer, item_ids: list[str], batches: list[int], length: int, rounds: int) -> list:
    rows = []
    for batch in batches:
        plain = windows(item_ids, batch, length, seed=batch)
        with_context = [[e.model_copy(update={"context": USER_CONTEXT}) for e in w] for w in plain]
        seconds: dict[str, list[float]] = {"without": [], "with": []}
        for _ in range(3):  # warm up both shapes
            await scorer.score(plain)
            await scorer.score(with_context)
        for _ in range(rounds):
            for arm, request in (("without", plain), ("with", with_context)):
                started = time.perf_counter()
                await scorer.score(request)
                seconds[arm].append(time.perf_counter() - started)
        without, with_ = (statistics.median(seconds[arm]) * 1e3 for arm in ("without", "with"))
        rows.append(
            {"windows": batch, "events": length, "without_ms": without, "with_ms": with_, "ratio": with_ / without}
        )
        logger.info("B=%d: %.2f ms without context, %.2f ms with (%.2fx)", batch, without, with_, with_ / without)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="model repository")
    parser.add_argument("--model", default="recstream", help="model name (folder) in the repository")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64], help="windows per request")
    parser.add_argument("--events", type=int, default=50, help="events per window")
    parser.add_argument("--rounds", type=int, default=40, help="timed requests per batch size and arm")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model_dir = args.repository / args.model
    newest = max((p for p in model_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    item_ids = read_item_files(newest).item_ids
    settings = local_settings(model_repository=args.repository, model_name=args.model)

    async def run() -> list:
        scorer = TritonScorer(settings, Metrics())
        await scorer.start()
        try:
            return await measure(scorer, item_ids, args.batches, args.events, args.rounds)
        finally:
            await scorer.stop()

    with tempfile.TemporaryDirectory() as work, TritonServer(settings, work_dir=Path(work)) as server:
        server.wait_ready()
        rows = asyncio.run(run())
    json.dump({"model": f"{args.model}/{newest.name}", "results": rows}, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
