"""Whole-pipeline throughput and latency on the embedded stack, with and without batching, in one run.

    python -m benchmarks.pipeline [--events 3000] [--batch-sizes 1 64] [--max-wait-ms 20] [--rate 0]

Starts one Triton (the shipped model) and, per batch size, a fresh broker and worker; replays the first
``--events`` MovieLens-100K events at ``--rate`` events/s (0: as fast as the producer goes) and reads
``predictions`` until every event is accounted for. Reports events/s (first send to last prediction) and
the median and p95 of the predictions' ``latency_ms`` (Kafka record time of the newest event to emission).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer

from recstream.broker import Broker
from recstream.processes import spawn, terminate
from recstream.replay import events_in_time_order, replay
from recstream.stack import local_settings, settings_env, wait_healthy
from recstream.topics import ensure_topics
from recstream.triton import TritonServer
from stream.names import topic_names
from stream.settings import Settings
from trainer.data import load_movielens

logger = logging.getLogger("benchmarks.pipeline")


async def _measure(settings: Settings, events: list, rate: float) -> dict[str, float]:
    consumer = AIOKafkaConsumer(
        settings.topic_predictions,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        sender = asyncio.create_task(replay(settings, iter(events), rate=rate, limit=None))
        started = time.monotonic()
        wanted, seen, latencies = {e.event_id for e in events}, set(), []
        while not wanted <= seen:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    prediction = orjson.loads(record.value)
                    seen.update(prediction["event_ids"])
                    latencies.append(prediction["latency_ms"])
        elapsed_s = time.monotonic() - started
        await sender
    finally:
        await consumer.stop()
    return {
        "events_per_s": len(events) / elapsed_s,
        "predictions": len(latencies),
        "latency_ms_p50": statistics.median(latencies),
        "latency_ms_p95": statistics.quantiles(latencies, n=20)[-1],
    }


def run_one(base: Settings, batch_size: int, events: list, rate: float, work: Path) -> dict[str, float]:
    settings = local_settings(
        **(
            base.model_dump(exclude={"broker_port", "bootstrap_servers", "web_port"})
            | {"max_batch_size": batch_size, "data_dir": work / f"worker-{batch_size}"}
        )
    )
    log = work / f"worker-{batch_size}.log"
    with Broker(settings, work):
        asyncio.run(ensure_topics(settings, topic_names(settings)))
        worker = spawn("worker", [sys.executable, "-m", "recstream", "worker"], log, env=settings_env(settings))
        try:
            wait_healthy(settings, lambda: worker.poll() is None, log, timeout_s=240)
            result = asyncio.run(_measure(settings, events, rate))
        finally:
            terminate("worker", worker)
    logger.info("max_batch_size %d: %s", batch_size, result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--max-wait-ms", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=0.0, help="events per second; 0 = as fast as possible")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    dataset = load_movielens()
    events = list(events_in_time_order(dataset, "bench"))[: args.events]
    base = local_settings(model_repository=Path("model_repository"), max_wait_ms=args.max_wait_ms)
    results = {}
    with tempfile.TemporaryDirectory() as tmp, TritonServer(base, work_dir=Path(tmp) / "triton") as triton:
        triton.wait_ready()
        for batch_size in args.batch_sizes:
            results[batch_size] = run_one(base, batch_size, events, args.rate, Path(tmp))
    first = results[args.batch_sizes[0]]
    sys.stdout.write("| max_batch_size | events/s | predictions | latency_ms p50 | latency_ms p95 | throughput |\n")
    sys.stdout.write("|---|---|---|---|---|---|\n")
    for batch_size, r in results.items():
        sys.stdout.write(
            f"| {batch_size} | {r['events_per_s']:.0f} | {r['predictions']} | {r['latency_ms_p50']:.0f} | "
            f"{r['latency_ms_p95']:.0f} | {r['events_per_s'] / first['events_per_s']:.2f}x |\n"
        )


if __name__ == "__main__":
    main()
