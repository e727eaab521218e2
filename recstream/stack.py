"""The embedded stack: the one place that builds broker, Triton and worker and runs them together.

Parts start in dependency order (broker and topics, Triton with the model ready, worker healthy) and stop in
reverse order on Ctrl-C, SIGTERM or an optional duration, each child in its own process group (no orphans).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import Popen

from pydantic import SecretStr

from recstream.broker import Broker, worker_settings
from recstream.errors import StackError
from recstream.processes import free_ports, http_ok, log_tail, spawn, terminate
from recstream.topics import cluster_stack_id, ensure_topics, reset_stale_state
from recstream.triton import TritonServer
from stream.names import topic_names
from stream.settings import Settings
from trainer.version import REPORT_FILE, read_report

logger = logging.getLogger(__name__)

LOG_DIR = Path("var/log")


def version_window(settings: Settings, version_dir: Path) -> Settings:
    """``settings`` with ``window_max_events`` = the history length ``version_dir`` was trained on (its
    report.json's ``max_len``: the encoder reads no more), unless a flag or the environment set it. Read once, at
    start: a later version with another length is served with this window until the worker restarts."""
    if "window_max_events" in settings.model_fields_set:
        return settings
    history = read_report(version_dir / REPORT_FILE).config["max_len"]
    if history != settings.window_max_events:
        logger.info("window_max_events %d: the history length of %s", history, version_dir)
    return settings.model_copy(update={"window_max_events": history})


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C so every part is stopped by the same clean-up path."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process exactly these settings (lists as JSON, as pydantic reads)."""
    env = dict(os.environ)
    for name, value in settings.model_dump(mode="json").items():
        variable = f"RECSTREAM_{name.upper()}"
        secret = getattr(settings, name)
        if value is None:
            env.pop(variable, None)
        elif isinstance(secret, SecretStr):
            env[variable] = secret.get_secret_value()
        else:
            env[variable] = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return env


def worker_name(index: int) -> str:
    """Worker ``index``'s name in logs and its log file's stem."""
    return "worker" if index == 0 else f"worker-{index}"


def replica_settings(settings: Settings, index: int) -> Settings:
    """The settings of worker ``index`` of ``settings.workers`` on this machine: worker 0 is ``settings`` itself,
    worker i > 0 gets its own web port (web_port + i), table state (data_dir + "-i") and, when one is set, static
    group member id (+ "-i")."""
    if index == 0:
        return settings
    update: dict[str, object] = {
        "web_port": settings.web_port + index,
        "data_dir": settings.data_dir.with_name(f"{settings.data_dir.name}-{index}"),
    }
    if settings.group_instance_id:
        update["group_instance_id"] = f"{settings.group_instance_id}-{index}"
    return settings.model_copy(update=update)


@contextlib.contextmanager
def running_workers(settings: Settings, log_dir: Path, timeout_s: float = 120.0) -> Iterator[list[Popen[bytes]]]:
    """Start ``settings.workers`` workers (``replica_settings``), wait until every one is healthy, yield their
    processes, and stop them all (the last started first) on the way out."""
    workers: list[tuple[str, Popen[bytes]]] = []
    try:
        for index in range(settings.workers):
            name = worker_name(index)
            replica = worker_settings(replica_settings(settings, index))
            log = log_dir / f"{name}.log"
            worker = spawn(name, [sys.executable, "-m", "recstream", "worker"], log, env=settings_env(replica))
            workers.append((name, worker))
            wait_healthy(replica, lambda w=worker: w.poll() is None, log, timeout_s)
        yield [worker for _, worker in workers]
    finally:
        for name, worker in reversed(workers):
            terminate(name, worker)


def local_settings(**overrides: object) -> Settings:
    """Settings whose broker, Triton and worker ports are all free on this machine (tests, benchmarks)."""
    broker, http, grpc, metrics, web = free_ports(5)
    ports = {
        "broker_port": broker,
        "bootstrap_servers": f"127.0.0.1:{broker}",
        "triton_http_port": http,
        "triton_grpc_port": grpc,
        "triton_url": f"127.0.0.1:{grpc}",
        "triton_metrics_port": metrics,
        "web_port": web,
    }
    return Settings(**(ports | overrides))


def _wait_forever(name: str, proc_alive: Callable[[], bool], log_path: Path) -> None:
    while proc_alive():
        time.sleep(0.5)
    raise StackError(f"{name} exited unexpectedly:\n{log_tail(log_path)}")


def run_broker(settings: Settings) -> None:
    with _sigterm_as_interrupt(), Broker(settings, LOG_DIR) as broker:
        asyncio.run(ensure_topics(settings, topic_names(settings)))
        logger.info("broker serving on 127.0.0.1:%d (Ctrl-C stops)", settings.broker_port)
        _wait_forever("broker", lambda: broker.running, LOG_DIR / "broker.log")


def run_triton(settings: Settings) -> None:
    with _sigterm_as_interrupt(), TritonServer(settings) as server:
        server.wait_ready()
        logger.info("Triton serving %s (gRPC %s, Ctrl-C stops)", settings.model_name, settings.triton_grpc_port)
        _wait_forever("triton", lambda: server.running, server.log_path)


def run_worker(settings: Settings) -> None:
    """Make sure the topics exist, drop table state of a vanished cluster, then run the Faust worker."""
    from stream.app import run_worker as run_faust_worker

    asyncio.run(ensure_topics(settings, topic_names(settings)))
    if reset_stale_state(settings.data_dir, asyncio.run(cluster_stack_id(settings))):
        logger.info("started with empty table state: the broker is a new cluster")
    run_faust_worker(settings)


def wait_healthy(
    settings: Settings, worker_alive: Callable[[], bool], log_path: Path, timeout_s: float = 120.0
) -> None:
    url = f"http://127.0.0.1:{settings.web_port}/health"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not worker_alive():
            raise StackError(f"worker exited during start-up:\n{log_tail(log_path)}")
        if http_ok(url):
            return
        time.sleep(0.5)
    raise StackError(f"worker: {url} not healthy after {timeout_s:.0f} s:\n{log_tail(log_path)}")


def run_stack(
    settings: Settings,
    *,
    replay: bool,
    rate: float,
    limit: int | None,
    duration_s: float | None,
    dataset: str = "ml-100k",
) -> None:
    from recstream.replay import replay_movielens
    from recstream.watch import watch_outputs

    with _sigterm_as_interrupt(), Broker(settings, LOG_DIR), TritonServer(settings) as triton:
        asyncio.run(ensure_topics(settings, topic_names(settings)))
        triton.wait_ready()
        with running_workers(settings, LOG_DIR) as workers:
            health = [f"http://127.0.0.1:{replica_settings(settings, i).web_port}/health" for i in range(len(workers))]
            logger.info("stack ready: worker health on %s", ", ".join(health))

            async def watchdog() -> None:
                while all(worker.poll() is None for worker in workers) and triton.running:
                    await asyncio.sleep(1)
                logs = [LOG_DIR / f"{worker_name(i)}.log" for i in range(len(workers))]
                tails = "".join(f"\n{log.name}:\n{log_tail(log)}" for log in logs)
                raise StackError(f"a part of the stack exited unexpectedly; worker logs:{tails}")

            async def show() -> None:
                tasks = [asyncio.create_task(watch_outputs(settings)), asyncio.create_task(watchdog())]
                if replay:
                    replaying = replay_movielens(settings, rate=rate, limit=limit, dataset=dataset)
                    tasks.append(asyncio.create_task(replaying))
                try:
                    await asyncio.wait_for(asyncio.gather(*tasks), duration_s)
                except TimeoutError:
                    logger.info("ran for %.0f s: stopping", duration_s)

            asyncio.run(show())
