"""Served = offline: replay every chosen user's history through the real pipeline and score what it serves against
the held-out event, beside the offline evaluation of the same version on the same users.

    python -m benchmarks.served_vs_offline [--dataset ml-100k] [--split test] [--version FOLDER] [--users N]
        [--rules matched default] [--out var/served-vs-offline] [--json PATH]

For each chosen user (``--users N``: the first N in user-id order; default every user), every event before the
user's split event is produced to the input topics as a site would (keyed by user_id, views to ``views``, the
rest to ``clicks``), all users' events in one time order (:func:`recstream.replay.events_in_time_order`, the
order rule of ``trainer.data``). The predictions topic is read until every replayed event is in a prediction;
the user's last prediction (predictions are keyed by user_id, so one partition holds all of a user's, in the
order they were made) is the one whose window holds everything, and its ``next_items`` are ranked against the
held-out item with the project's ranking routine (:func:`trainer.evaluate.target_ranks`, its tie rule; a target
not among the served items is a miss). The offline side is ``trainer.evaluate``'s "excluded" ranking (every
earlier item left out) of the version's ``encoder.onnx`` on the same users.

The stream and ``trainer.sequences.eval_cases`` keep a history by different rules, and ``--rules`` says which the
worker runs with (each in a fresh broker and worker; one Triton serves them all):

- ``matched``: the stream's rules made equal to the offline ones: a window age limit longer than the replayed
  history spans (offline has none), every event type consumed and room for every history item among the
  consumed items (offline excludes every earlier item). The window keeps ``window_max_events`` events (unless set, the
  version's ``max_len``, as ``recstream up`` serves it: ``recstream.stack.version_window``) and the offline
  history the version's ``max_len``; the offline side uses the smaller of the two (the encoder reads at
  most ``max_len`` events anyway). Every user's served rank must then equal the offline rank.
- ``default``: the settings as configured (``RECSTREAM_*``, ``.env``, the defaults): a window of at most
  ``window_max_age_s`` (30 days) in event time and at most ``consumed_max_items`` (200) consumed items beyond it.

Triton serves the chosen version alone (a model repository under ``--out`` with only that version: Triton
serves the newest); the worker's guidance policy is off (it does not change predictions, only costs CPU).
Prints a markdown table; ``--json`` also writes the whole report, each user who differs included.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer
from pydantic import BaseModel, computed_field
from tqdm import tqdm

from recstream.bench import NO_GUIDANCE, PORT_FIELDS, newest_version
from recstream.broker import Broker, worker_settings
from recstream.errors import StackError
from recstream.processes import spawn, terminate
from recstream.replay import events_in_time_order, replay
from recstream.stack import local_settings, settings_env, version_window, wait_healthy
from recstream.topics import ensure_topics
from recstream.triton import TritonServer
from stream.names import topic_names
from stream.schemas import EventType, InputEvent, Prediction
from stream.settings import Settings
from trainer.data import DEFAULT_DATASET, TEST, VALID, Dataset, UserSequence, first_users, load_movielens
from trainer.evaluate import (
    K,
    PublishedVersion,
    load_version,
    rank_metrics,
    target_ranks,
    version_dataset,
)
from trainer.sequences import eval_cases
from trainer.version import ENCODER_FILE

logger = logging.getLogger(__name__)

SPLITS = {"test": TEST, "valid": VALID}
RULES = ("matched", "default")
#: Settings that reach the Triton of the comparison (one server for every rule set).
TRITON_FIELDS = (
    "triton_http_port",
    "triton_grpc_port",
    "triton_url",
    "triton_metrics_port",
    "model_repository",
    "model_name",
)
#: Settings that decide what a prediction is computed from, copied into the report.
RULE_FIELDS = ("window_max_events", "window_max_age_s", "consumed_event_types", "consumed_max_items", "top_k")


# --- what is replayed -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayPlan:
    """The users of one comparison, and what is replayed of them."""

    version: PublishedVersion
    users: Dataset  # the chosen users, all their events, in the version's catalogue
    split: int
    history: Dataset  # each user's events before the split event (the users with such a case only)
    events: list[InputEvent]  # ``history`` in the replay order


def _head(user: UserSequence, length: int) -> UserSequence:
    return replace(
        user,
        items=user.items[:length],
        event_types=user.event_types[:length],
        timestamps=user.timestamps[:length],
        split=user.split[:length],
        context=user.context[:length],
    )


def plan_replay(version: PublishedVersion, users: Dataset, split: int, source: str) -> ReplayPlan:
    """The events to replay: for every user with a ``split`` case (as :func:`eval_cases` picks them), the events
    before it, in :func:`events_in_time_order` (event ids ``source:user_id:item_id:j``)."""
    cases = eval_cases(users, split, max_len=1)  # only which users, and where each one's history ends
    by_id = {user.user_id: user for user in users.users}
    heads = [_head(by_id[user_id], len(seen)) for user_id, seen in zip(cases.user_ids, cases.seen, strict=True)]
    history = replace(users, users=heads)
    events = list(events_in_time_order(history, source))
    logger.info("%d users with a case, %d events to replay", len(history.users), len(events))
    return ReplayPlan(version, users, split, history, events)


def matched_rules(history: Dataset) -> dict[str, object]:
    """Settings under which the stream keeps and excludes what ``eval_cases`` does: no age limit within the
    history's time span, every event type consumed, and room for every history item among the consumed ones."""
    times = np.concatenate([user.timestamps for user in history.users])
    return {
        "window_max_age_s": float(times.max() - times.min()) + 1.0,
        "consumed_event_types": tuple(EventType),
        "consumed_max_items": max(len(user.items) for user in history.users),
    }


# --- the served side ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    last: dict[str, Prediction]  # user_id -> the user's last prediction
    predictions: int  # read in all
    seconds: float  # first send -> every replayed event accounted for


async def served_predictions(
    settings: Settings, events: Sequence[InputEvent], stall_s: float = 120.0, progress: bool = False
) -> Served:
    """Replay ``events`` (as fast as the producer goes) into a running worker and read its predictions topic
    from the beginning until every event is in a prediction; StackError if ``stall_s`` pass without progress."""
    consumer = AIOKafkaConsumer(
        settings.topic_predictions,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    started = time.monotonic()
    pending = {event.event_id for event in events}
    last: dict[str, tuple[int, Prediction]] = {}  # user_id -> (offset, prediction)
    count, total = 0, len(pending)
    try:
        await replay(settings, iter(events), rate=0, limit=None, progress=progress)
        bar = tqdm(total=total, unit=" events", desc="predicted", disable=not progress, dynamic_ncols=True)
        progressed_at = time.monotonic()
        while pending:
            if time.monotonic() - progressed_at > stall_s:
                raise StackError(f"{len(pending)} of {total} replayed events in no prediction after {stall_s:.0f} s")
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    prediction = Prediction.model_validate_json(record.value)
                    count += 1
                    if record.offset > last.get(prediction.user_id, (-1, None))[0]:
                        last[prediction.user_id] = (record.offset, prediction)
                    accounted = pending.intersection(prediction.event_ids)
                    if accounted:
                        pending -= accounted
                        bar.update(len(accounted))
                        progressed_at = time.monotonic()
        bar.close()
    finally:
        await consumer.stop()
    seconds = time.monotonic() - started
    logger.info("%d events in %d predictions in %.1f s", total, count, seconds)
    return Served({user_id: p for user_id, (_, p) in last.items()}, count, seconds)


# --- the comparison -------------------------------------------------------------------------------------


def _in_top(rank: int | None) -> int | None:
    return rank if rank is not None and rank <= K else None


class UserResult(BaseModel):
    user_id: str
    history_events: int  # replayed
    target: str
    offline_rank: int  # among every item, earlier items excluded
    served_rank: int | None  # in the served next_items; None: not among them
    offline_window: int  # events the offline history keeps
    served_window: int  # events in the window of the user's last prediction
    offline_top: list[str]
    served_top: list[str]

    @computed_field
    @property
    def same_rank(self) -> bool:
        """The same rank within the top K, or a miss on both sides."""
        return _in_top(self.offline_rank) == _in_top(self.served_rank)

    @computed_field
    @property
    def same_top(self) -> bool:
        return self.offline_top == self.served_top


class Comparison(BaseModel):
    rules: str
    settings: dict[str, object]  # RULE_FIELDS of the worker (as JSON values)
    offline_max_len: int
    users: int
    events: int
    predictions: int
    replay_s: float
    served: dict[str, float]  # hr@10, ndcg@10, mrr@10 of the served top items
    offline: dict[str, float]  # the same, offline, earlier items excluded
    same_rank: int  # users with the same rank within the top 10 (or a miss) on both sides
    same_top: int  # users whose served top 10 equals the offline top 10, in order
    shorter_window: int  # users whose last prediction's window held fewer events than the offline history
    differing: list[UserResult]  # users whose rank or top 10 differ


def compare(plan: ReplayPlan, settings: Settings, served: Served, rules: str) -> Comparison:
    """Rank each user's held-out item in the served top items and offline, for the users of ``plan``."""
    if settings.top_k < K:
        raise ValueError(f"top_k {settings.top_k} < {K}: the served items cannot give HR@{K} and NDCG@{K}")
    version = plan.version
    max_len = min(version.report["config"]["max_len"], settings.window_max_events)
    cases = eval_cases(plan.users, plan.split, max_len)
    targets = cases.arrays["target_items"]
    missing = [user_id for user_id in cases.user_ids if user_id not in served.last]
    if missing:
        raise StackError(f"{len(missing)} users have no prediction, e.g. {missing[:5]}")

    scores = version.full_sort(cases.arrays).astype(np.float64)  # [B, N]
    offline_ranks = target_ranks(scores, targets, cases.seen)
    for row, seen in enumerate(cases.seen):
        scores[row, seen - 1] = -np.inf  # left out, as target_ranks leaves them out
    offline_top = np.argsort(-scores, axis=1, kind="stable")[:, :K]

    item_ids = version.dataset.catalog.item_ids
    row_of = {item_id: row for row, item_id in enumerate(item_ids, start=1)}
    served_scores = np.full(scores.shape, -np.inf)  # only the served items have a score: any other is a miss
    for row, user_id in enumerate(cases.user_ids):
        for item in served.last[user_id].next_items:
            served_scores[row, row_of[item.item_id] - 1] = item.score
    served_ranks = target_ranks(served_scores, targets)
    top_k = settings.top_k

    results = [
        UserResult(
            user_id=user_id,
            history_events=len(cases.seen[row]),
            target=item_ids[targets[row] - 1],
            offline_rank=int(offline_ranks[row]),
            served_rank=int(served_ranks[row]) if served_ranks[row] <= top_k else None,
            offline_window=int(cases.arrays["attention_mask"][row].sum()),
            served_window=served.last[user_id].window.events,
            offline_top=[item_ids[j] for j in offline_top[row]],
            served_top=[item.item_id for item in served.last[user_id].next_items[:K]],
        )
        for row, user_id in enumerate(cases.user_ids)
    ]

    return Comparison(
        rules=rules,
        settings=settings.model_dump(mode="json", include=set(RULE_FIELDS)),
        offline_max_len=max_len,
        users=len(results),
        events=sum(r.history_events for r in results),
        predictions=served.predictions,
        replay_s=served.seconds,
        served=rank_metrics(served_ranks),
        offline=rank_metrics(offline_ranks),
        same_rank=sum(r.same_rank for r in results),
        same_top=sum(r.same_top for r in results),
        shorter_window=sum(r.served_window < r.offline_window for r in results),
        differing=[r for r in results if not (r.same_rank and r.same_top)],
    )


# --- the stack ------------------------------------------------------------------------------------------


def version_repository(version_dir: Path, target: Path) -> Path:
    """A model repository at ``target`` in which ``version_dir`` is its model's only version (Triton serves the
    newest), beside the model's config.pbtxt and model.py."""
    if not (version_dir / ENCODER_FILE).is_file():
        raise StackError(f"{version_dir} is not a published version (no {ENCODER_FILE})")
    model_dir = target / version_dir.parent.name
    shutil.rmtree(target, ignore_errors=True)
    model_dir.mkdir(parents=True)
    for name in ("config.pbtxt", "model.py"):
        shutil.copy2(version_dir.parent / name, model_dir / name)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(version_dir, model_dir / version_dir.name, symlinks=True, ignore=ignore)
    return target


def rule_settings(base: Settings, served_by: Settings, rules: str, plan: ReplayPlan, data_dir: Path) -> Settings:
    """``base`` on the free ports of a fresh broker and worker, scored by ``served_by``'s Triton, guidance off,
    with the ``matched`` rules (:func:`matched_rules`) or ``base``'s own (``default``)."""
    keep = base.model_dump(exclude={*PORT_FIELDS, *TRITON_FIELDS, "data_dir"})
    triton = {name: getattr(served_by, name) for name in TRITON_FIELDS}
    chosen = matched_rules(plan.history) if rules == "matched" else {}
    return local_settings(**(keep | NO_GUIDANCE | triton | chosen), data_dir=data_dir)


def run_rules(settings: Settings, plan: ReplayPlan, rules: str, work: Path, stall_s: float) -> Comparison:
    """A fresh broker and worker with ``settings``; the replay, then the comparison."""
    log_dir = work / "logs"
    shutil.rmtree(settings.data_dir, ignore_errors=True)
    with Broker(settings, log_dir):
        asyncio.run(ensure_topics(settings, topic_names(settings)))
        log = log_dir / "worker.log"
        argv = [sys.executable, "-m", "recstream", "worker"]
        worker = spawn("worker", argv, log, env=settings_env(worker_settings(settings)))
        try:
            wait_healthy(settings, lambda: worker.poll() is None, log, timeout_s=240)
            served = asyncio.run(served_predictions(settings, plan.events, stall_s, progress=True))
        finally:
            terminate("worker", worker)
    return compare(plan, settings, served, rules)


class Report(BaseModel):
    command: str
    dataset: str
    split: str
    version: str
    started_at: float
    elapsed_s: float
    comparisons: list[Comparison]


def run(
    version_dir: Path | None,
    dataset: str | None,
    split: str,
    users: int | None,
    rules: Sequence[str],
    out: Path,
    stall_s: float,
) -> Report:
    started, started_at = time.monotonic(), time.time()
    base = Settings()
    version_dir = (version_dir or newest_version(base)).resolve()
    base = version_window(base, version_dir)  # the window `recstream up` serves the version with
    name = dataset or version_dataset(version_dir) or DEFAULT_DATASET
    version = load_version(version_dir, load_movielens(dataset=name))
    plan = plan_replay(version, first_users(version.dataset, users), SPLITS[split], name.replace("-", ""))
    repository = version_repository(version_dir, out / "repository")
    served_by = local_settings(model_repository=repository, model_name=version_dir.parent.name)
    with TritonServer(served_by, work_dir=out / "triton") as triton:
        triton.wait_ready(timeout_s=240)
        comparisons = [
            run_rules(rule_settings(base, served_by, r, plan, out / r / "worker-state"), plan, r, out / r, stall_s)
            for r in rules
        ]
    return Report(
        command=shlex.join(["python", "-m", "benchmarks.served_vs_offline", *sys.argv[1:]]),
        dataset=name,
        split=split,
        version=str(version_dir),
        started_at=started_at,
        elapsed_s=time.monotonic() - started,
        comparisons=comparisons,
    )


def markdown(report: Report, max_listed: int = 20) -> str:
    lines = [
        f"`{report.command}`: {report.dataset} {report.split}, version {report.version}, {report.elapsed_s:.0f} s",
        "",
        f"| rules | users | events replayed | predictions | served NDCG@{K} | offline NDCG@{K} | served HR@{K} | "
        f"offline HR@{K} | same rank in top {K} | same top {K} | shorter window | replay s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report.comparisons:
        lines.append(
            f"| {c.rules} | {c.users:,} | {c.events:,} | {c.predictions:,} | {c.served[f'ndcg@{K}']:.4f} | "
            f"{c.offline[f'ndcg@{K}']:.4f} | {c.served[f'hr@{K}']:.4f} | {c.offline[f'hr@{K}']:.4f} | "
            f"{c.same_rank:,} | {c.same_top:,} | {c.shorter_window:,} | {c.replay_s:.0f} |"
        )
    for c in report.comparisons:
        settings = ", ".join(f"{k} {v}" for k, v in c.settings.items())
        lines += ["", f"{c.rules} ({settings}; offline history {c.offline_max_len}): {len(c.differing)} users differ"]
        if c.differing:
            lines += [
                "",
                "| user | history | target | offline rank | served rank | offline window | served window | same top |",
                "|---|---|---|---|---|---|---|---|",
            ]
            lines += [
                f"| {r.user_id} | {r.history_events} | {r.target} | {r.offline_rank} | {r.served_rank or 'miss'} | "
                f"{r.offline_window} | {r.served_window} | {r.same_top} |"
                for r in c.differing[:max_listed]
            ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", type=Path, help="a published version folder (default: the newest served one)")
    parser.add_argument("--dataset", help="ml-100k or ml-1m (default: the version's own)")
    parser.add_argument("--split", choices=sorted(SPLITS), default="test")
    parser.add_argument("--users", type=int, help="only the first N users (user-id order)")
    parser.add_argument("--rules", nargs="+", choices=RULES, default=list(RULES))
    parser.add_argument("--out", type=Path, default=Path("var/served-vs-offline"), help="logs and worker state")
    parser.add_argument("--stall-s", type=float, default=120.0, help="give up after this long without a prediction")
    parser.add_argument("--json", type=Path, help="write the whole report here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    report = run(args.version, args.dataset, args.split, args.users, args.rules, args.out, args.stall_s)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(report.model_dump(mode="json"), option=orjson.OPT_INDENT_2))
        logger.info("wrote %s", args.json)
    sys.stdout.write(markdown(report))


if __name__ == "__main__":
    main()
