"""Create the topics the stack needs, with their partition counts, before any worker starts.

Auto-created topics would get the broker's default partition count, and Faust refuses a table whose
changelog differs, so every topic is created here explicitly.

The ``<app_id>-stack`` topic holds one id per broker cluster lifetime. A worker keeps that id beside its
RocksDB state; when they differ the broker is a new one (the embedded broker keeps nothing across its
restarts) and the state on disk belongs to a cluster that no longer exists, so it is wiped, not resurrected.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from recstream.errors import StackError
from stream.names import changelog_topics
from stream.settings import Settings

logger = logging.getLogger(__name__)

STACK_ID_FILE = "stack-id"


def stack_topic(settings: Settings) -> str:
    return f"{settings.app_id}-stack"


async def ensure_topics(settings: Settings, topics: dict[str, int], timeout_s: float = 20.0) -> None:
    """Create missing topics; raise StackError if an existing one has another partition count."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=10_000)
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except (TimeoutError, KafkaConnectionError):
        raise StackError(f"broker: cannot reach Kafka at {settings.bootstrap_servers}") from None
    try:
        existing = set(await admin.list_topics())
        compacted = changelog_topics(settings)
        missing = [
            NewTopic(name, count, 1, topic_configs={"cleanup.policy": "compact"} if name in compacted else {})
            for name, count in topics.items()
            if name not in existing
        ]
        if missing:
            response = await admin.create_topics(missing)
            for name, code, message in (e[:3] for e in response.topic_errors):
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise StackError(f"broker: cannot create topic {name}: error {code} {message or ''}")
            logger.info("created topics: %s", ", ".join(t.name for t in missing))
        described = await admin.describe_topics(list(topics))
        for topic in described:
            want, got = topics[topic["topic"]], len(topic["partitions"])
            if got != want:
                raise StackError(
                    f"broker: topic {topic['topic']} has {got} partitions, the stack is configured for {want}"
                )
    finally:
        await admin.close()


async def cluster_stack_id(settings: Settings) -> str:
    """The id of this broker cluster's lifetime: the first record of the stack topic, written if absent."""
    await ensure_topics(settings, {stack_topic(settings): 1})
    partition = TopicPartition(stack_topic(settings), 0)
    for attempt in range(2):
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([partition])
            await consumer.seek_to_beginning(partition)
            if (await consumer.end_offsets([partition]))[partition] > 0:
                record = await consumer.getone()
                return record.value.decode()
        finally:
            await consumer.stop()
        if attempt == 0:  # empty: propose an id; whoever wrote first wins, so read it back
            producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
            await producer.start()
            try:
                await producer.send_and_wait(partition.topic, uuid.uuid4().hex.encode(), partition=0)
            finally:
                await producer.stop()
    raise StackError("broker: could not read the stack id back")


def reset_stale_state(data_dir: Path, stack_id: str) -> bool:
    """Wipe the worker's table state if it was built against another broker cluster. True if wiped."""
    id_file = data_dir / STACK_ID_FILE
    stale = data_dir.exists() and (not id_file.exists() or id_file.read_text().strip() != stack_id)
    if stale:
        logger.warning("table state in %s belongs to another broker cluster: wiping it", data_dir)
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    id_file.write_text(stack_id)
    return stale
