"""``recstream bench``: one command, one run, one report of what the model and the pipeline sustain.

Every part runs in one process tree on free ports (its own broker, Triton and worker), in this order:

1. **ceiling**: the served version's ``encoder.onnx`` and ``item_embeddings.npy`` in this process, with the
   session options of ``config.pbtxt`` (intra/inter-op threads): encoder pass + catalogue scores + top-k, no
   attribution, for batches of 1…512 windows. The windows are real MovieLens-100K sequences (a random user, a
   random run of consecutive events) as long as those the end-to-end phases score (1…events-per-user events),
   and, for comparison, windows of ``window_max_events`` events (a long-time user).
2. **served**: Triton through :meth:`stream.triton_client.TritonScorer.score` (the asyncio gRPC client, only the
   prediction outputs), request batches of 1 and ``max_batch_size`` windows, 1…8 concurrent callers.
3. **end to end**: the worker (``python -m recstream worker``) fed by a producer in this process: fresh
   synthetic users ``bench-<run>-<i>`` (each a MovieLens user's run of consecutive events, timestamps
   increasing, keyed by user_id), sent round robin so that one user's events are far apart and seldom share a
   prediction. First saturated (everything as fast as the producer goes), then steady rates, fractions of the
   measured saturated rate. Latency runs from the producer's ``send`` of the newest event of a prediction to
   the prediction's arrival at this process's consumer (``getmany`` returning); the stages are the worker's
   ``stages_ms`` plus the output hop (arrival minus ``emitted_at``) and ``other`` (what no stage covers).
   The worker runs as configured, its guidance policy included (fresh users are nearly all guided once, each an
   explain request); a phase ends when the worker sends no more Triton requests, so that the policy's backlog
   counts in its own phase. ``--no-guidance`` measures the prediction path alone.
4. **naive baseline**: the same broker and Triton, a plain aiokafka consumer process (``python -m
   recstream.bench naive``) that keeps windows in a dict and calls Triton once per event with the unpadded
   window, producing its predictions to a topic, so that the same consumer-side latency is measured.

Writes ``report.json``, ``report.md`` (tables for docs/BENCHMARKS.md) and ``latency.png`` into ``--out``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import platform
import re
import shlex
import shutil
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import BaseModel, Field
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from threadpoolctl import threadpool_limits

from recstream.broker import Broker
from recstream.errors import StackError
from recstream.processes import log_tail, spawn, terminate
from recstream.stack import local_settings, replica_settings, running_workers, settings_env
from recstream.topics import ensure_topics
from recstream.triton import TritonServer
from stream.kafka import pace_empty_fetches
from stream.metrics import STAGES, Metrics
from stream.names import topic_names
from stream.schemas import EVENT_TYPES, EventType, InputEvent, ModelRef, Prediction, WindowEvent, WindowSummary
from stream.settings import Settings
from stream.triton_client import TritonScorer
from trainer.sequences import ENCODER_OUTPUTS, Arrays, window_arrays
from trainer.version import EMBEDDINGS_FILE, ENCODER_FILE, ITEMS_FILE, read_context

logger = logging.getLogger(__name__)

#: Settings the bench always chooses itself (free ports of its own stack).
PORT_FIELDS = frozenset(
    {
        "broker_port",
        "bootstrap_servers",
        "triton_http_port",
        "triton_grpc_port",
        "triton_url",
        "triton_metrics_port",
        "web_port",
    }
)
#: Stages of a prediction's latency as reported: the worker's, the output hop, and what none of them covers.
REPORT_STAGES = (*STAGES, "output", "other")
#: Settings that shape the numbers, copied into the report.
REPORTED_SETTINGS = (
    "embedded_broker",
    "partitions",
    "max_batch_size",
    "max_wait_ms",
    "max_batches_in_flight",
    "workers",
    "window_max_events",
    "consumer_fetch_max_wait_ms",
    "producer_linger_ms",
    "top_k",
    "guidance_cooldown_s",
)
#: The naive baseline's own input and output topics on the same broker.
NAIVE_TOPICS = {
    "topic_views": "bench-naive-views",
    "topic_clicks": "bench-naive-clicks",
    "topic_predictions": "bench-naive-predictions",
}


# --- options and report --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchOptions:
    users: int = 400  # fresh users per end-to-end phase
    events_per_user: int = 5
    rates: tuple[float, ...] = (0.25, 0.5, 0.75)  # steady phases, fractions of the saturated rate
    min_predictions: int = 1000  # per steady phase
    out: Path = Path("var/bench")
    quick: bool = False
    seed: int = 0
    ceiling_batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
    served_concurrency: tuple[int, ...] = (1, 2, 4, 8)
    ceiling_s: float = 1.0  # timed per ceiling batch size
    served_s: float = 2.0  # timed per served (batch, concurrency)
    naive_rate: float = 0.5  # the naive baseline's steady phase, a fraction of its saturated rate
    guidance: bool = True  # False: the worker's policy never guides (the prediction path alone)

    @classmethod
    def create(
        cls,
        *,
        quick: bool = False,
        out: Path = Path("var/bench"),
        users: int | None = None,
        events_per_user: int | None = None,
        rates: Sequence[float] | None = None,
        min_predictions: int | None = None,
        guidance: bool = True,
    ) -> BenchOptions:
        """A full run, or with ``quick`` a small one of every part (tests, a first look); the options given
        (not None) override either."""
        base = QUICK if quick else cls()
        given = {"users": users, "events_per_user": events_per_user, "min_predictions": min_predictions}
        chosen = {k: v for k, v in given.items() if v is not None} | ({"rates": tuple(rates)} if rates else {})
        return replace(base, out=out, quick=quick, guidance=guidance, **chosen)


QUICK = BenchOptions(
    users=50,
    events_per_user=3,
    rates=(0.5,),
    min_predictions=100,
    ceiling_batches=(1, 8, 64),
    served_concurrency=(1, 4),
    ceiling_s=0.25,
    served_s=0.25,
)


class Percentiles(BaseModel):
    n: int
    p50: float
    p95: float
    p99: float
    mean: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Percentiles | None:
        if len(values) == 0:
            return None
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        return cls(n=len(values), p50=p50, p95=p95, p99=p99, mean=float(np.mean(values)), max=float(np.max(values)))


class CeilingRow(BaseModel):
    batch: int
    windows_per_s: float
    ms_per_call_p50: float
    calls: int


class CeilingReport(BaseModel):
    version: str
    top_k: int
    intra_op_threads: int
    inter_op_threads: int
    blas_threads: int
    window_events: str  # how long the windows were
    window_events_mean: float
    rows: list[CeilingRow]
    best_windows_per_s: float


class ServedRow(BaseModel):
    batch: int
    concurrency: int
    requests: int
    windows_per_s: float
    latency_ms: Percentiles


class ServedReport(BaseModel):
    model: ModelRef
    window_events: str
    rows: list[ServedRow]
    best_windows_per_s: float
    #: share of windows whose top items from Triton equal the in-process ceiling's, in order: that the ceiling
    #: computes what is served
    top_items_agree: float
    top_items_checked: int


class PhaseReport(BaseModel):
    run: Literal["pipeline", "naive"]
    phase: str  # "saturated" or "steady"
    fraction_of_saturated: float | None
    offered_events_per_s: float | None  # None: as fast as the producer goes
    users: int
    events_sent: int
    predictions: int
    events_accounted: int
    events_missing: int
    events_duplicated: int  # in more than one prediction (at least once delivery)
    send_s: float  # first send to last send
    duration_s: float  # first send to the last prediction's arrival
    events_per_s: float  # events_sent / duration_s
    predictions_per_s: float
    events_per_prediction: float
    window_events_mean: float
    latency_ms: Percentiles | None
    stages_ms: dict[str, Percentiles]
    cpu_percent: dict[str, float]  # consumer (worker or naive process), triton, broker, bench, machine; 100 = a core
    rss_mib_peak: float  # of the consumer
    batch_users_mean: float | None = None  # the worker's recstream_batch_size_users over the phase
    guidance: int | None = None  # guidance the worker emitted in the phase (each one costs an explain call)
    drain_s: float | None = None  # after the last prediction, until the worker's guide went quiet
    latencies: list[float] = Field(default_factory=list, exclude=True, repr=False)  # for the plot, not the JSON


class Targets(BaseModel):
    saturated_over_naive: float | None
    predictions_over_served_ceiling: float | None
    predictions_over_inprocess_ceiling: float | None
    half_rate_events_per_s: float | None  # offered
    half_rate_achieved_events_per_s: float | None
    half_rate_latency_p50_ms: float | None
    half_rate_latency_p99_ms: float | None


class Report(BaseModel):
    created_at: float
    command: str
    machine: dict[str, str | int | float]
    settings: dict[str, str | int | float]
    options: dict[str, str | int | float | list[float]]
    ceiling: CeilingReport
    ceiling_full_windows: CeilingReport
    served: ServedReport
    pipeline: list[PhaseReport]
    naive: list[PhaseReport]
    targets: Targets
    elapsed_s: float


# --- realistic windows and events from MovieLens ---------------------------------------------------------


class MovieLensRuns:
    """Runs of consecutive events of random MovieLens-100K users: (item_id, event_type, seconds from the first)."""

    def __init__(self, seed: int) -> None:
        from trainer.data import load_movielens

        dataset = load_movielens()
        self._item_ids = dataset.catalog.item_ids
        self._users = dataset.users
        self._rng = np.random.default_rng(seed)

    def draw(self, length: int) -> list[tuple[str, str, float]]:
        """``length`` consecutive events of a random user with that many (or a whole user's, if none has)."""
        users = [u for u in self._users if len(u.items) >= length] or self._users
        user = users[self._rng.integers(len(users))]
        start = int(self._rng.integers(max(len(user.items) - length, 0) + 1))
        first = user.timestamps[start]
        return [
            # + 1 ms per event: MovieLens has many same-second events; the bench's timestamps strictly increase
            (self._item_ids[user.items[j] - 1], EVENT_TYPES[user.event_types[j] - 1],
             float(user.timestamps[j] - first) + 1e-3 * (j - start))
            for j in range(start, min(start + length, len(user.items)))
        ]  # fmt: skip

    def windows(self, count: int, lengths: Sequence[int]) -> list[list[WindowEvent]]:
        """``count`` windows, their lengths drawn uniformly from ``lengths``."""
        t0 = 1_700_000_000.0
        out = []
        for w in range(count):
            run = self.draw(int(self._rng.choice(lengths)))
            out.append(
                [
                    WindowEvent(event_id=f"w{w}-{i}", item_id=item, event_type=kind, timestamp=t0 + dt, record_ts_ms=0)
                    for i, (item, kind, dt) in enumerate(run)
                ]
            )
        return out


@dataclass(frozen=True)
class PlannedEvent:
    event_id: str
    topic: str
    key: bytes
    value: bytes


def plan_events(
    runs: MovieLensRuns, settings: Settings, run_id: str, first_user: int, users: int, per_user: int
) -> list[PlannedEvent]:
    """``per_user`` events for each of ``users`` fresh users, round robin (all first events, then all second ...)."""
    now = time.time()
    per = []
    for u in range(first_user, first_user + users):
        user_id = f"bench-{run_id}-{u}"
        events = []
        for k, (item, kind, dt) in enumerate(runs.draw(per_user)):
            event = InputEvent(
                user_id=user_id, item_id=item, event_type=kind, timestamp=now + dt, event_id=f"{user_id}-{k}"
            )
            topic = settings.topic_views if event.event_type is EventType.view else settings.topic_clicks
            events.append(PlannedEvent(f"{user_id}-{k}", topic, user_id.encode(), event.to_bytes()))
        per.append(events)
    return [events[k] for k in range(per_user) for events in per if k < len(events)]


# --- 1. the in-process ceiling ---------------------------------------------------------------------------


def config_parameters(config: Path) -> dict[str, str]:
    """The ``parameters`` of a Triton ``config.pbtxt`` (key -> string_value)."""
    pattern = r'parameters:\s*\{\s*key:\s*"([^"]+)"\s*value:\s*\{\s*string_value:\s*"([^"]*)"'
    return dict(re.findall(pattern, config.read_text()))


def newest_version(settings: Settings) -> Path:
    """The version folder Triton serves (``version_policy: latest 1``): the highest number."""
    model_dir = settings.model_repository / settings.model_name
    versions = [p for p in model_dir.iterdir() if p.name.isdigit() and (p / ENCODER_FILE).is_file()]
    if not versions:
        raise StackError(f"bench: no version with an {ENCODER_FILE} in {model_dir}")
    return max(versions, key=lambda p: int(p.name))


class InProcessModel:
    """What model.py computes for a prediction (no attribution), in this process, for any published version
    (its encoder's optional inputs, hour/weekday and context, built as training builds them)."""

    def __init__(self, settings: Settings) -> None:
        import onnxruntime as ort

        self.version_dir = newest_version(settings)
        params = config_parameters(settings.model_repository / settings.model_name / "config.pbtxt")
        self.top_k = int(params.get("top_k", "50"))
        self.intra_op_threads = int(params.get("intra_op_num_threads", "0"))
        self.inter_op_threads = int(params.get("inter_op_num_threads", "0"))
        self.blas_threads = int(params.get("blas_num_threads", "0"))  # 0: numpy's default
        options = ort.SessionOptions()  # as model_repository/recstream/model.py's session_options
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        self.session = ort.InferenceSession(
            str(self.version_dir / ENCODER_FILE), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.context = read_context(self.version_dir)  # None: the version reads no context
        self.embeddings = np.load(self.version_dir / EMBEDDINGS_FILE).astype(np.float32)
        self.catalogue_t = np.ascontiguousarray(self.embeddings[1:].T)
        items = json.loads((self.version_dir / ITEMS_FILE).read_bytes())
        self.item_ids: list[str] = items["item_ids"]
        self.row_of = {item: row for row, item in enumerate(self.item_ids, start=1)}
        self._codes = {name: i + 1 for i, name in enumerate(EVENT_TYPES)}

    def arrays(self, windows: Sequence[Sequence[WindowEvent]]) -> Arrays:
        """``trainer.sequences.window_arrays`` of the windows, left-padded to the longest of the batch, as the
        client and model.py pad."""
        no_context = np.zeros((0, 0), dtype=np.int64)
        return window_arrays(
            [np.array([self.row_of.get(e.item_id, 0) for e in w], dtype=np.int64) for w in windows],
            [np.array([self._codes[e.event_type.value] for e in w], dtype=np.int64) for w in windows],
            [np.array([e.timestamp for e in w], dtype=np.float64) for w in windows],
            [self.context.encode([e.context for e in w]) if self.context else no_context for w in windows],
            max(len(w) for w in windows),
        )

    def score(self, batch: Arrays) -> np.ndarray:
        """Encoder pass, softmax over the catalogue, window items left out, top-k best first: [B, k] item rows."""
        rows = batch["items"]  # 0: padding or an item outside the catalogue
        inputs = {"item_vecs": self.embeddings[rows], **batch}
        user_vec, _ = self.session.run(list(ENCODER_OUTPUTS), {name: inputs[name] for name in self.input_names})
        logits = user_vec @ self.catalogue_t
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        r, pos = np.nonzero(rows)
        probs[r, rows[r, pos] - 1] = -1.0
        k = min(self.top_k, probs.shape[1])
        top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(probs, top, axis=1), axis=1), axis=1)
        return top + 1  # embedding rows, as model.py's TOP_ITEMS


def measure_ceiling(
    model: InProcessModel, pool: list[list[WindowEvent]], label: str, options: BenchOptions, progress: Progress
) -> CeilingReport:
    task = progress.add_task(f"ceiling, {label}", total=len(options.ceiling_batches))
    rows = []
    with threadpool_limits(limits=model.blas_threads or None, user_api="blas"):  # as model.py
        for batch in options.ceiling_batches:
            batches = [model.arrays(pool[s : s + batch]) for s in range(0, len(pool) - batch + 1, batch)][:4]
            model.score(batches[0])  # warm-up
            times: list[float] = []
            while sum(times) < options.ceiling_s or len(times) < 3:
                started = time.perf_counter()
                model.score(batches[len(times) % len(batches)])
                times.append(time.perf_counter() - started)
            rows.append(
                CeilingRow(
                    batch=batch,
                    windows_per_s=batch * len(times) / sum(times),
                    ms_per_call_p50=float(np.median(times)) * 1000,
                    calls=len(times),
                )
            )
            logger.info("ceiling (%s) batch %d: %.0f windows/s", label, batch, rows[-1].windows_per_s)
            progress.advance(task)
    return CeilingReport(
        version=model.version_dir.name,
        top_k=model.top_k,
        intra_op_threads=model.intra_op_threads,
        inter_op_threads=model.inter_op_threads,
        blas_threads=model.blas_threads,
        window_events=label,
        window_events_mean=float(np.mean([len(w) for w in pool])),
        rows=rows,
        best_windows_per_s=max(r.windows_per_s for r in rows),
    )


# --- 2. served: Triton through the worker's client ------------------------------------------------------


async def _served_cell(
    scorer: TritonScorer, pool: list[list[WindowEvent]], batch: int, concurrency: int, measure_s: float
) -> tuple[ServedRow, ModelRef]:
    """``concurrency`` callers, each sending its next request of ``batch`` windows when the last one returned."""
    latencies: list[float] = []
    models: list[ModelRef] = []

    async def caller(k: int, deadline: float) -> int:
        windows_done, i = 0, k * batch
        while True:
            windows = [pool[(i + j) % len(pool)] for j in range(batch)]
            i += batch * concurrency
            started = time.perf_counter()
            scored = await scorer.score(windows)
            latencies.append((time.perf_counter() - started) * 1000)
            models.append(scored[0].model)
            windows_done += batch
            if time.perf_counter() >= deadline:
                return windows_done

    await asyncio.gather(*(caller(k, 0.0) for k in range(concurrency)))  # warm-up: one request each
    latencies.clear()
    started = time.perf_counter()
    done = await asyncio.gather(*(caller(k, started + measure_s) for k in range(concurrency)))
    elapsed = time.perf_counter() - started
    row = ServedRow(
        batch=batch,
        concurrency=concurrency,
        requests=len(latencies),
        windows_per_s=sum(done) / elapsed,
        latency_ms=Percentiles.of(latencies),
    )
    return row, models[-1]


async def measure_served(
    settings: Settings,
    pool: list[list[WindowEvent]],
    label: str,
    inprocess: InProcessModel,
    options: BenchOptions,
    progress: Progress,
) -> ServedReport:
    batches = sorted({1, min(settings.max_batch_size, len(pool))})
    task = progress.add_task("served (Triton)", total=len(batches) * len(options.served_concurrency))
    scorer = TritonScorer(settings, Metrics())
    await scorer.start()
    rows = []
    try:
        sample = pool[:32]
        served_top = [[item.item_id for item in s.next_items] for s in await scorer.score(sample)]
        local_top = [[inprocess.item_ids[row - 1] for row in top] for top in inprocess.score(inprocess.arrays(sample))]
        agree = np.mean([s == local[: len(s)] for s, local in zip(served_top, local_top, strict=True)])
        for batch in batches:
            for concurrency in options.served_concurrency:
                row, model = await _served_cell(scorer, pool, batch, concurrency, options.served_s)
                rows.append(row)
                logger.info(
                    "served batch %d x %d callers: %.0f windows/s, p50 %.1f ms",
                    batch,
                    concurrency,
                    row.windows_per_s,
                    row.latency_ms.p50,
                )
                progress.advance(task)
    finally:
        await scorer.stop()
    return ServedReport(
        model=model,
        window_events=label,
        rows=rows,
        best_windows_per_s=max(r.windows_per_s for r in rows),
        top_items_agree=float(agree),
        top_items_checked=len(sample),
    )


# --- 3./4. end to end and the naive baseline ------------------------------------------------------------


@dataclass
class Phase:
    """One phase's events, when each was sent, and the predictions that came back for them."""

    run: Literal["pipeline", "naive"]
    name: str
    events: list[PlannedEvent]
    users: int
    fraction: float | None = None
    rate: float | None = None  # events/s; None = as fast as possible
    sent: dict[str, float] = field(default_factory=dict)
    arrivals: list[tuple[float, dict]] = field(default_factory=list)
    accounted: dict[str, int] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, arrival: float, prediction: dict) -> None:
        self.arrivals.append((arrival, prediction))
        for event_id in prediction["event_ids"]:
            self.accounted[event_id] = self.accounted.get(event_id, 0) + 1
        if len(self.accounted) >= len(self.events):
            self.done.set()


class Collector:
    """Reads a predictions topic from the start; hands each prediction, with its arrival time, to its phase."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
        )
        self._partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        self._pause_ms = settings.consumer_empty_fetch_pause_ms
        self._phase_of: dict[str, Phase] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        pace_empty_fetches(self._consumer, self._pause_ms)  # else it spins on noida, taking the worker's CPU
        self._consumer.assign(self._partitions)
        self._task = asyncio.create_task(self._run(), name="collector")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    def expect(self, phase: Phase) -> None:
        self._phase_of.update((e.event_id, phase) for e in phase.events)

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            arrival = time.time()
            for records in batches.values():
                for record in records:
                    prediction = orjson.loads(record.value)
                    phase = self._phase_of.get(prediction["event_ids"][0])
                    if phase is not None:
                        phase.add(arrival, prediction)


_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """utime + stime of a process (fields 14 and 15 of /proc/<pid>/stat); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def _rss_mib(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0.0)


def _machine_busy_s() -> float:
    """CPU seconds all cores spent not idle since boot (every process on the machine, others' too)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / _TICKS_PER_S  # minus idle and iowait; guest is in user


def stack_pids(settings: Settings) -> dict[str, list[int]]:
    """tritonserver with its python-backend stubs, and the broker: found by the ports in their command lines."""
    parents, argvs = {}, {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argvs[int(proc.name)] = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
                parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    triton = [pid for pid, argv in argvs.items() if f"--grpc-port={settings.triton_grpc_port}" in argv]
    port = str(settings.broker_port)
    broker = [pid for pid, argv in argvs.items() if any(a == port or a.endswith(f":{port}") for a in argv[1:])]
    children = [pid for pid, parent in parents.items() if parent in triton]
    return {"triton": triton + children, "broker": broker}


class Usage:
    """CPU of the consumers (the workers, or the naive process), Triton, broker, this process and the whole machine
    over a phase (100 % = one core), and the consumers' peak RSS (summed over them)."""

    def __init__(self, consumer_pids: list[int], others: dict[str, list[int]]) -> None:
        self._consumers = consumer_pids
        self._groups = {"consumer": consumer_pids, **others, "bench": [os.getpid()]}
        self._start: dict[str, float] = {}
        self._wall = 0.0
        self.rss_peak_mib = 0.0

    def _now(self) -> dict[str, float]:
        return {name: sum(_cpu_s(pid) for pid in pids) for name, pids in self._groups.items()} | {
            "machine": _machine_busy_s()
        }

    def begin(self) -> None:
        self._start, self._wall, self.rss_peak_mib = self._now(), time.monotonic(), self._rss_mib()

    def _rss_mib(self) -> float:
        return sum(_rss_mib(pid) for pid in self._consumers)

    def sample(self) -> None:
        self.rss_peak_mib = max(self.rss_peak_mib, self._rss_mib())

    def cpu_percent(self) -> dict[str, float]:
        elapsed = max(time.monotonic() - self._wall, 1e-9)
        return {name: 100 * (cpu - self._start[name]) / elapsed for name, cpu in self._now().items()}


def worker_counters(web_ports: Sequence[int]) -> dict[str, float]:
    """Sums of the workers' batch-size histograms, guidance and Triton request counters (their /metrics)."""
    text = ""
    for port in web_ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text += response.read().decode()
    sums = {
        "recstream_batch_size_users_sum": 0.0,
        "recstream_batch_size_users_count": 0.0,
        "recstream_guidance_total": 0.0,
        "recstream_triton_request_seconds_count": 0.0,  # score and explain requests
    }
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in sums:
            sums[name] += float(line.rsplit(" ", 1)[1])
    return sums


async def drain(web_ports: Sequence[int], quiet_s: float = 1.0, timeout_s: float = 120.0) -> dict[str, float]:
    """Wait until the workers sent no Triton request for ``quiet_s``: the guide explains the guided users' windows
    after their predictions were emitted, so it may still be working when the last prediction of a phase
    arrived. Its work is counted in its phase, not in the next. Returns the counters then."""
    deadline = time.monotonic() + timeout_s
    counters = await asyncio.to_thread(worker_counters, web_ports)
    while time.monotonic() < deadline:
        await asyncio.sleep(quiet_s)
        latest = await asyncio.to_thread(worker_counters, web_ports)
        if latest["recstream_triton_request_seconds_count"] == counters["recstream_triton_request_seconds_count"]:
            return latest
        counters = latest
    logger.warning("the worker still sends Triton requests %.0f s after the phase", timeout_s)
    return counters


async def produce(producer: AIOKafkaProducer, phase: Phase) -> None:
    """Send the phase's events at its rate (or as fast as possible), recording each send time."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deliveries = []
    for i, event in enumerate(phase.events):
        if phase.rate:
            if (ahead_s := started + i / phase.rate - loop.time()) > 0:
                await asyncio.sleep(ahead_s)
        elif i % 50 == 0:
            await asyncio.sleep(0)  # let the collector stamp arrivals while the producer runs flat out
        sent_ms = int(time.time() * 1000)  # the record timestamp, from which the worker's stages are measured
        phase.sent[event.event_id] = sent_ms / 1000
        deliveries.append(await producer.send(event.topic, event.value, key=event.key, timestamp_ms=sent_ms))
    await asyncio.gather(*deliveries)


async def run_phase(
    producer: AIOKafkaProducer,
    collector: Collector,
    phase: Phase,
    usage: Usage,
    progress: Progress,
    web_ports: Sequence[int] = (),
) -> PhaseReport:
    """One phase; ``web_ports``: the workers' web servers (their /metrics), none for the naive baseline."""
    label = f"{phase.run} {phase.name}" + (f" {phase.rate:.0f}/s" if phase.rate else "")
    task = progress.add_task(label, total=len(phase.events))
    collector.expect(phase)
    before = await asyncio.to_thread(worker_counters, web_ports) if web_ports else None
    usage.begin()
    # steady: the sending time and then as long again (at least a minute); saturated: at least 10 events/s
    expected_s = len(phase.events) / phase.rate if phase.rate else len(phase.events) / 10
    deadline = time.monotonic() + max(60.0, 2 * expected_s)
    sender = asyncio.create_task(produce(producer, phase))
    while not (phase.done.is_set() and sender.done()) and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        usage.sample()
        progress.update(task, completed=len(phase.accounted))
        if sender.done() and sender.exception() is not None:
            await sender  # raises the producer's error
    cpu = usage.cpu_percent()
    if not phase.done.is_set():
        logger.warning(
            "%s: %d of %d events not in any prediction after the deadline",
            label,
            len(phase.events) - len(phase.accounted),
            len(phase.events),
        )
    await sender
    drained_at = time.monotonic()
    after = await drain(web_ports) if web_ports else None
    report = summarize(phase, cpu, usage.rss_peak_mib, before, after)
    report.drain_s = time.monotonic() - drained_at if web_ports else None
    logger.info(
        "%s: %.0f events/s, %.0f predictions/s, latency p50 %.0f ms, p99 %.0f ms",
        label,
        report.events_per_s,
        report.predictions_per_s,
        report.latency_ms.p50 if report.latency_ms else -1,
        report.latency_ms.p99 if report.latency_ms else -1,
    )
    return report


def summarize(
    phase: Phase,
    cpu_percent: dict[str, float],
    rss_mib: float,
    before: dict[str, float] | None,
    after: dict[str, float] | None,
) -> PhaseReport:
    first_send, last_send = min(phase.sent.values()), max(phase.sent.values())
    last_arrival = max((a for a, _ in phase.arrivals), default=last_send)
    duration_s = max(last_arrival - first_send, 1e-9)
    latencies, stages = [], {stage: [] for stage in REPORT_STAGES}
    for arrival, prediction in phase.arrivals:
        total_ms = (arrival - max(phase.sent[e] for e in prediction["event_ids"])) * 1000
        latencies.append(total_ms)
        stage_ms = dict(prediction["stages_ms"]) | {"output": (arrival - prediction["emitted_at"]) * 1000}
        stage_ms["other"] = total_ms - sum(stage_ms.values())
        for stage, ms in stage_ms.items():
            stages.setdefault(stage, []).append(ms)
    batch_users_mean = guidance = None
    if before is not None and after is not None:
        batches = after["recstream_batch_size_users_count"] - before["recstream_batch_size_users_count"]
        users = after["recstream_batch_size_users_sum"] - before["recstream_batch_size_users_sum"]
        batch_users_mean = users / batches if batches else None
        guidance = round(after["recstream_guidance_total"] - before["recstream_guidance_total"])
    return PhaseReport(
        run=phase.run,
        phase=phase.name,
        fraction_of_saturated=phase.fraction,
        offered_events_per_s=phase.rate,
        users=phase.users,
        events_sent=len(phase.sent),
        predictions=len(phase.arrivals),
        events_accounted=sum(1 for e in phase.events if e.event_id in phase.accounted),
        events_missing=sum(1 for e in phase.events if e.event_id not in phase.accounted),
        events_duplicated=sum(1 for n in phase.accounted.values() if n > 1),
        send_s=last_send - first_send,
        duration_s=duration_s,
        events_per_s=len(phase.sent) / duration_s,
        predictions_per_s=len(phase.arrivals) / duration_s,
        events_per_prediction=len(phase.accounted) / max(len(phase.arrivals), 1),
        window_events_mean=float(np.mean([p["window"]["events"] for _, p in phase.arrivals])) if phase.arrivals else 0,
        latency_ms=Percentiles.of(latencies),
        latencies=latencies,
        stages_ms={stage: p for stage, values in stages.items() if (p := Percentiles.of(values)) is not None},
        cpu_percent=cpu_percent,
        rss_mib_peak=rss_mib,
        batch_users_mean=batch_users_mean,
        guidance=guidance,
    )


@dataclass
class _Planner:
    """Fresh users for every phase: ``bench-<run>-<i>`` with i counting on across phases."""

    runs: MovieLensRuns
    run_id: str
    next_user: int = 0

    def phase(
        self, settings: Settings, run: Literal["pipeline", "naive"], name: str, users: int, per_user: int
    ) -> Phase:
        events = plan_events(self.runs, settings, self.run_id, self.next_user, users, per_user)
        self.next_user += users
        return Phase(run=run, name=name, events=events, users=users)


async def measure_pipeline(
    settings: Settings,
    run: Literal["pipeline", "naive"],
    usage: Usage,
    planner: _Planner,
    options: BenchOptions,
    fractions: Sequence[float],
    progress: Progress,
) -> list[PhaseReport]:
    """Warm-up, saturated, then one steady phase per fraction of the saturated rate, fresh users each."""
    # the workers' /metrics
    web_ports = [replica_settings(settings, i).web_port for i in range(settings.workers)] if run == "pipeline" else []
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    collector = Collector(settings, settings.topic_predictions)
    await producer.start()
    await collector.start()
    reports = []
    try:
        warmup = planner.phase(settings, run, "warm-up", min(options.users, 50), 1)
        await run_phase(producer, collector, warmup, usage, progress, web_ports)
        saturated = planner.phase(settings, run, "saturated", options.users, options.events_per_user)
        reports.append(await run_phase(producer, collector, saturated, usage, progress, web_ports))
        for fraction in fractions:
            # enough users for min_predictions, at least --users of them, round robin: one user's events far apart
            users = max(
                math.ceil(options.min_predictions / options.events_per_user), options.users if run == "pipeline" else 0
            )
            steady = planner.phase(settings, run, "steady", users, options.events_per_user)
            steady.fraction, steady.rate = fraction, fraction * reports[0].events_per_s
            reports.append(await run_phase(producer, collector, steady, usage, progress, web_ports))
    finally:
        await collector.stop()
        await producer.stop()
    return reports


# --- the naive baseline process -------------------------------------------------------------------------


async def run_naive(settings: Settings, ready_file: Path) -> None:
    """One event at a time: window in a dict, one Triton call with the unpadded window, one prediction out."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    scorer = TritonScorer(settings, Metrics())
    await consumer.start()
    pace_empty_fetches(consumer, settings.consumer_empty_fetch_pause_ms)  # as the worker: the broker's quirk
    await producer.start()
    await scorer.start()
    consumer.assign(
        [
            TopicPartition(t, p)
            for t in (settings.topic_views, settings.topic_clicks)
            for p in range(settings.partitions)
        ]
    )
    windows: dict[str, list[WindowEvent]] = {}
    try:
        while not await scorer.ready():
            await asyncio.sleep(0.2)
        ready_file.write_text("ready")
        async for record in consumer:
            received_s = time.time()
            event = InputEvent.from_bytes(record.value)
            window = windows.setdefault(event.user_id, [])
            window.append(
                WindowEvent(
                    event_id=event.event_id or f"{record.topic}:{record.partition}:{record.offset}",
                    item_id=event.item_id,
                    event_type=event.event_type,
                    timestamp=event.timestamp,
                    record_ts_ms=record.timestamp,
                )
            )
            del window[: -settings.window_max_events]
            windowed_s = time.time()
            (scored,) = await scorer.score([window])
            scored_s = time.time()
            prediction = Prediction(
                user_id=event.user_id,
                event_ids=[window[-1].event_id],
                model=scored.model,
                next_items=scored.next_items[: settings.top_k],
                next_action=scored.next_action,
                window=WindowSummary(events=len(window), span_seconds=window[-1].timestamp - window[0].timestamp),
                latency_ms=scored_s * 1000 - record.timestamp,
                stages_ms={
                    "ingest": received_s * 1000 - record.timestamp,
                    "window": (windowed_s - received_s) * 1000,
                    "triton": (scored_s - windowed_s) * 1000,
                    "emit": (time.time() - scored_s) * 1000,
                },
                emitted_at=time.time(),
            )
            await producer.send(settings.topic_predictions, prediction.to_bytes(), key=event.user_id.encode())
    finally:
        await scorer.stop()
        await producer.stop()
        await consumer.stop()


@contextmanager
def naive_process(settings: Settings, log_dir: Path) -> Iterator[int]:
    """``python -m recstream.bench naive`` with these settings; yields its pid once it is ready."""
    ready = log_dir / "naive.ready"
    ready.unlink(missing_ok=True)
    log = log_dir / "naive.log"
    proc = spawn("naive", [sys.executable, "-m", "recstream.bench", "naive", str(ready)], log, settings_env(settings))
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise StackError(f"naive baseline did not start:\n{log_tail(log)}")
            time.sleep(0.1)
        yield proc.pid
    finally:
        terminate("naive", proc)


# --- the run ---------------------------------------------------------------------------------------------


def _console() -> Console:
    """The console the CLI's log handler writes to, so that log lines and the progress bar do not mix."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, RichHandler):
            return handler.console
    return Console(stderr=True)


#: Policy thresholds that no prediction meets in practice (stream.policy.decide): a probability of 1 does not come
#: out of a softmax (the settings allow no higher threshold), and the bench sends no add_to_cart events anyway.
NO_GUIDANCE = {"checkout_min_purchase_prob": 1.0, "retain_max_engage_prob": 0.0, "recommend_min_score": 1.0}


def bench_settings(base: Settings, options: BenchOptions) -> Settings:
    """The user's settings (batching, broker kind, ...) on free ports, state under ``out``."""
    keep = base.model_dump(exclude=set(PORT_FIELDS) | {"data_dir", "model_repository"})
    keep |= {} if options.guidance else NO_GUIDANCE
    return local_settings(
        **keep, data_dir=options.out / "worker-state", model_repository=base.model_repository.resolve()
    )


def run_bench(base: Settings, options: BenchOptions) -> Report:
    started, load_at_start = time.monotonic(), os.getloadavg()[0]
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    log_dir = out / "logs"
    shutil.rmtree(out / "worker-state", ignore_errors=True)
    settings = bench_settings(base, options)
    naive_settings = settings.model_copy(update=NAIVE_TOPICS)
    run_id = uuid.uuid4().hex[:6]
    logger.info("bench %s: %s broker, results in %s", run_id, settings.embedded_broker, out)
    runs = MovieLensRuns(options.seed)
    short = list(range(1, options.events_per_user + 1))
    short_label = f"{short[0]}–{short[-1]} events" if len(short) > 1 else "1 event"
    pool = runs.windows(2 * max(options.ceiling_batches), short)
    full_pool = runs.windows(max(options.ceiling_batches), [settings.window_max_events])
    planner = _Planner(runs, run_id)

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=_console()
    ) as progress:
        model = InProcessModel(settings)
        ceiling = measure_ceiling(model, pool, short_label, options, progress)
        ceiling_full = measure_ceiling(model, full_pool, f"{settings.window_max_events} events", options, progress)
        with Broker(settings, log_dir), TritonServer(settings, work_dir=log_dir / "triton") as triton:
            topics = topic_names(settings) | dict.fromkeys(NAIVE_TOPICS.values(), settings.partitions)
            asyncio.run(ensure_topics(settings, topics))
            triton.wait_ready()
            served = asyncio.run(measure_served(settings, pool, short_label, model, options, progress))

            with running_workers(settings, log_dir, timeout_s=240) as workers:
                usage = Usage([worker.pid for worker in workers], stack_pids(settings))
                pipeline = asyncio.run(
                    measure_pipeline(settings, "pipeline", usage, planner, options, options.rates, progress)
                )
            with naive_process(naive_settings, log_dir) as pid:
                usage = Usage([pid], stack_pids(settings))
                naive = asyncio.run(
                    measure_pipeline(naive_settings, "naive", usage, planner, options, [options.naive_rate], progress)
                )

    report = Report(
        created_at=time.time(),
        command=shlex.join(["recstream", *sys.argv[1:]]),
        machine={
            "cpus": os.cpu_count() or 0,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_avg_1m_at_start": load_at_start,
            "load_avg_1m_at_end": os.getloadavg()[0],
        },
        settings={k: v for k, v in settings.model_dump(mode="json").items() if k in REPORTED_SETTINGS},
        options={
            "users": options.users,
            "events_per_user": options.events_per_user,
            "rates": list(options.rates),
            "min_predictions": options.min_predictions,
            "quick": int(options.quick),
            "guidance": int(options.guidance),
        },
        ceiling=ceiling,
        ceiling_full_windows=ceiling_full,
        served=served,
        pipeline=pipeline,
        naive=naive,
        targets=targets(ceiling, served, pipeline, naive),
        elapsed_s=time.monotonic() - started,
    )
    write_report(report, out)
    return report


def targets(
    ceiling: CeilingReport, served: ServedReport, pipeline: list[PhaseReport], naive: list[PhaseReport]
) -> Targets:
    saturated = next((p for p in pipeline if p.phase == "saturated"), None)
    naive_saturated = next((p for p in naive if p.phase == "saturated"), None)
    steady = [p for p in pipeline if p.fraction_of_saturated is not None]
    half = min(steady, key=lambda p: abs(p.fraction_of_saturated - 0.5), default=None)  # type: ignore[operator]
    return Targets(
        saturated_over_naive=saturated.events_per_s / naive_saturated.events_per_s
        if saturated and naive_saturated
        else None,
        predictions_over_served_ceiling=saturated.predictions_per_s / served.best_windows_per_s if saturated else None,
        predictions_over_inprocess_ceiling=saturated.predictions_per_s / ceiling.best_windows_per_s
        if saturated
        else None,
        half_rate_events_per_s=half.offered_events_per_s if half else None,
        half_rate_achieved_events_per_s=half.events_per_s if half else None,
        half_rate_latency_p50_ms=half.latency_ms.p50 if half and half.latency_ms else None,
        half_rate_latency_p99_ms=half.latency_ms.p99 if half and half.latency_ms else None,
    )


# --- output ----------------------------------------------------------------------------------------------


def write_report(report: Report, out: Path) -> None:
    (out / "report.json").write_bytes(orjson.dumps(report.model_dump(mode="json"), option=orjson.OPT_INDENT_2))
    (out / "report.md").write_text(markdown(report))
    plot(report, out / "latency.png")
    logger.info("wrote %s, %s and %s", out / "report.json", out / "report.md", out / "latency.png")


def _n(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _phase_label(p: PhaseReport) -> str:
    if p.fraction_of_saturated is None:
        return "saturated"
    return f"steady {p.fraction_of_saturated:.0%} ({p.offered_events_per_s:,.0f}/s)"


def markdown(r: Report) -> str:
    t, s = r.targets, r.settings
    sat = next((p for p in r.pipeline if p.phase == "saturated"), None)
    nsat = next((p for p in r.naive if p.phase == "saturated"), None)
    lines = [
        f"`{r.command}` — {time.strftime('%Y-%m-%d %H:%M', time.localtime(r.created_at))}, "
        f"{r.machine['cpus']} CPUs, {s['embedded_broker']} broker, model version {r.served.model.version}, "
        f"max_batch_size {s['max_batch_size']}, max_wait_ms {s['max_wait_ms']}, "
        f"max_batches_in_flight {s['max_batches_in_flight']}, {s['partitions']} partitions, "
        f"{s['workers']} worker(s); "
        f"guidance {'on' if r.options['guidance'] else 'off (--no-guidance)'}; "
        f"{r.elapsed_s:.0f} s in all; load average {r.machine['load_avg_1m_at_start']:.1f} at the start, "
        f"{r.machine['load_avg_1m_at_end']:.1f} at the end.",
        "",
        "| target | measured |",
        "|---|---|",
        f"| end-to-end saturated throughput ÷ naive | **{_n(t.saturated_over_naive, 2)}×** "
        f"({_n(sat and sat.events_per_s)} vs {_n(nsat and nsat.events_per_s)} events/s) |",
        "| end-to-end predictions/s ÷ served ceiling (Triton, best row below) | "
        f"**{_n(t.predictions_over_served_ceiling, 2)}** "
        f"({_n(sat and sat.predictions_per_s)} vs {_n(r.served.best_windows_per_s)} windows/s) |",
        f"| end-to-end predictions/s ÷ in-process ceiling (onnxruntime, best row below) | "
        f"**{_n(t.predictions_over_inprocess_ceiling, 2)}** "
        f"({_n(sat and sat.predictions_per_s)} vs {_n(r.ceiling.best_windows_per_s)} windows/s) |",
        f"| latency p50 / p99 at half the saturated rate ({_n(t.half_rate_events_per_s)} events/s offered, "
        f"{_n(t.half_rate_achieved_events_per_s)} achieved) | "
        f"**{_n(t.half_rate_latency_p50_ms)} / {_n(t.half_rate_latency_p99_ms)} ms** |",
        "",
        f"Ceiling: onnxruntime in this process, version {r.ceiling.version}'s encoder + catalogue scores + "
        f"top-{r.ceiling.top_k}, no attribution, intra-op threads {r.ceiling.intra_op_threads}, "
        f"BLAS threads {r.ceiling.blas_threads} (config.pbtxt); "
        "MovieLens-100K windows.",
        "",
        f"| batch | windows/s ({r.ceiling.window_events}) | ms per call | "
        f"windows/s ({r.ceiling_full_windows.window_events}) | ms per call |",
        "|---|---|---|---|---|",
    ]
    full = {row.batch: row for row in r.ceiling_full_windows.rows}
    for row in r.ceiling.rows:
        f = full.get(row.batch)
        lines.append(
            f"| {row.batch} | {_n(row.windows_per_s)} | {_n(row.ms_per_call_p50, 1)} | "
            f"{_n(f and f.windows_per_s)} | {_n(f and f.ms_per_call_p50, 1)} |"
        )
    lines += [
        "",
        f"Served: Triton (python backend, onnxruntime) through `TritonScorer.score`, windows of "
        f"{r.served.window_events}, as many callers as the concurrency each sending its next request when the "
        "last one returns; Triton's top items equal the in-process ceiling's for "
        f"{r.served.top_items_agree:.0%} of {r.served.top_items_checked} windows.",
        "",
        "| request batch | concurrency | windows/s | latency p50 | p95 | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {row.batch} | {row.concurrency} | {_n(row.windows_per_s)} | {_n(row.latency_ms.p50, 1)} | "
        f"{_n(row.latency_ms.p95, 1)} | {_n(row.latency_ms.p99, 1)} |"
        for row in r.served.rows
    ]
    lines += [
        "",
        f"End to end: {r.options['users']} fresh users × {r.options['events_per_user']} events per phase (more in "
        f"steady phases, for ≥ {r.options['min_predictions']} predictions), sent round robin; latency = producer "
        "send of the newest event → the prediction's arrival at the bench's consumer.",
        "",
        "| run | phase | events | events/s | predictions/s | events per prediction | latency p50 | p95 | p99 ms "
        "| missing / duplicated |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in [*r.pipeline, *r.naive]:
        lat = p.latency_ms
        lines.append(
            f"| {p.run} | {_phase_label(p)} | {p.events_sent:,} | {_n(p.events_per_s)} | {_n(p.predictions_per_s)} | "
            f"{p.events_per_prediction:.2f} | {_n(lat and lat.p50)} | {_n(lat and lat.p95)} | {_n(lat and lat.p99)} | "
            f"{p.events_missing} / {p.events_duplicated} |"
        )
    lines += [
        "",
        "Resources over each phase: CPU % (100 = one core; machine = every process on it, others' too; worker = "
        "all workers together) and the workers' (naive: its process's) peak RSS, summed; users per Triton request "
        "and guidance emitted, from the workers' /metrics; drain = after the phase's last prediction until the "
        "workers sent no more Triton requests (the guide explaining the guided users' windows).",
        "",
        "| run | phase | users per batch | guidance | drain s | worker CPU % | Triton CPU % | broker CPU % "
        "| bench CPU % | machine CPU % | worker RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in [*r.pipeline, *r.naive]:
        cpu = [_n(p.cpu_percent.get(k)) for k in ("consumer", "triton", "broker", "bench", "machine")]
        lines.append(
            f"| {p.run} | {_phase_label(p)} | {_n(p.batch_users_mean, 1)} | {_n(p.guidance)} | {_n(p.drain_s, 1)} | "
            + " | ".join(cpu)
            + f" | {p.rss_mib_peak:.0f} |"
        )
    lines += [
        "",
        "Where the latency goes, p50 / p99 ms per stage (ingest = Kafka hop in, rekey = internal hop of re-keyed "
        "events only, output = `emitted_at` → arrival, other = total − the stages):",
        "",
        "| run | phase | " + " | ".join(REPORT_STAGES) + " | total |",
        "|---|---|" + "---|" * (len(REPORT_STAGES) + 1),
    ]
    for p in [*r.pipeline, *r.naive]:
        cells = [f"{st.p50:,.1f} / {st.p99:,.1f}" if (st := p.stages_ms.get(stage)) else "–" for stage in REPORT_STAGES]
        total = f"{p.latency_ms.p50:,.0f} / {p.latency_ms.p99:,.0f}" if p.latency_ms else "–"
        lines.append(f"| {p.run} | {_phase_label(p)} | " + " | ".join(cells) + f" | {total} |")
    return "\n".join(lines) + "\n"


def plot(report: Report, path: Path) -> None:
    """Latency percentiles against the achieved rate (pipeline and naive), and each phase's latency CDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run, phases, marker, color in (
        ("pipeline", report.pipeline, "o", "tab:blue"),
        ("naive", report.naive, "s", "tab:orange"),
    ):
        phases = sorted((p for p in phases if p.latency_ms), key=lambda p: p.events_per_s)
        for pct, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
            left.plot(
                [p.events_per_s for p in phases],
                [getattr(p.latency_ms, pct) for p in phases],
                style,
                marker=marker,
                color=color,
                label=f"{run} {pct}",
            )
    left.set(
        xlabel="events/s achieved",
        ylabel="latency ms (send → arrival)",
        yscale="log",
        title="latency vs rate (rightmost point of a run: saturated)",
    )
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    for p in [*report.pipeline, *report.naive]:
        if p.latencies:
            values = np.sort(p.latencies)
            right.plot(values, np.arange(1, len(values) + 1) / len(values) * 100, label=f"{p.run} {_phase_label(p)}")
    right.set(
        xlabel="latency ms (send → arrival)",
        ylabel="% of predictions at or below",
        xscale="log",
        title="latency CDF per phase",
    )
    right.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=7)
    fig.suptitle(f"recstream bench: {report.settings['embedded_broker']} broker, model {report.served.model.version}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _naive_main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    asyncio.run(run_naive(Settings(), Path(argv[1])))


if __name__ == "__main__":
    if sys.argv[1:2] != ["naive"] or len(sys.argv) != 3:
        raise SystemExit("usage: python -m recstream.bench naive READY_FILE (started by `recstream bench`)")
    _naive_main(sys.argv[1:])
