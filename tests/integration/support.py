"""Helpers of the integration tests: the worker as a process, producing input, reading output topics."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from recstream.processes import free_ports, spawn, terminate
from recstream.stack import settings_env, wait_healthy
from recstream.topics import ensure_topics
from stream.names import topic_names
from stream.settings import Settings


def own_app_settings(stack_settings: Settings, name: str, data_dir: Path, **updates: object) -> Settings:
    """Settings of a worker with an app (consumer group, changelogs) and topics of its own, ``<name>-<topic>``,
    on the session's broker and Triton, its own web port and state; the topics are created."""
    (web_port,) = free_ports(1)
    topics = {
        f"topic_{t}": f"{name}-{t}"
        for t in ("views", "clicks", "events", "predictions", "guidance", "dead_letters", "control")
    }
    settings = stack_settings.model_copy(
        update={"app_id": f"recstream-{name}", "web_port": web_port, "data_dir": data_dir, **topics, **updates}
    )
    asyncio.run(ensure_topics(settings, topic_names(settings)))
    return settings


class WorkerProcess:
    """`recstream worker` in its own process, as a user runs it."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings, self.log_path, self.proc = settings, log_path, None

    def start(self) -> None:
        self.proc = spawn(
            "worker", [sys.executable, "-m", "recstream", "worker"], self.log_path, env=settings_env(self.settings)
        )
        wait_healthy(self.settings, lambda: self.proc.poll() is None, self.log_path, timeout_s=180)

    def stop(self) -> None:
        terminate("worker", self.proc, timeout_s=30)


async def produce(settings: Settings, records: list[tuple[str, bytes | None, bytes]]) -> list[RecordMetadata]:
    """Send (topic, key, value) records and wait until the broker has them; returns where each landed."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        return [await producer.send_and_wait(topic, value, key=key) for topic, key, value in records]
    finally:
        await producer.stop()


class OutputReader:
    """Reads an output topic from the beginning, across calls, so tests can wait for what they expect."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings, self.topic, self.messages = settings, topic, []
        self._consumer: AIOKafkaConsumer | None = None

    async def read_until(self, done, timeout_s: float = 60.0) -> list[dict]:
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(
                self.topic,
                bootstrap_servers=self.settings.bootstrap_servers,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
            )
            await self._consumer.start()
        deadline = time.monotonic() + timeout_s
        while not done(self.messages) and time.monotonic() < deadline:
            batches = await self._consumer.getmany(timeout_ms=500)
            for records in batches.values():
                self.messages.extend(orjson.loads(r.value) | {"_key": r.key} for r in records)
        return self.messages

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
