"""Users' own Kafka clients against the embedded stack: produce an event, consume its prediction.

aiokafka, confluent-kafka (librdkafka) and Debian's kcat (librdkafka too). librdkafka's default partitioner
is not Kafka's murmur2, so its records usually land outside their user's partition and take the re-key path.
"""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import subprocess
import time
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, Producer

from stream.settings import Settings
from tests.integration.support import WorkerProcess
from tests.integration.test_end_to_end import event

pytestmark = pytest.mark.integration

TIMEOUT_S = 60.0


def _mine(value: bytes | None, event_id: str) -> bool:
    return value is not None and event_id in orjson.loads(value)["event_ids"]


async def test_aiokafka(worker: WorkerProcess, stack_settings: Settings) -> None:
    s, user = stack_settings, f"aio-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers)
    consumer = AIOKafkaConsumer(s.topic_predictions, bootstrap_servers=s.bootstrap_servers, group_id=user)
    await producer.start()
    await consumer.start()
    try:
        await producer.send_and_wait(
            s.topic_views, event(user, "50", 1_700_000_000, "view", event_id=user), user.encode()
        )
        async with asyncio.timeout(TIMEOUT_S):
            async for record in consumer:
                if _mine(record.value, user):
                    break
    finally:
        await producer.stop()
        await consumer.stop()


def test_confluent_kafka(worker: WorkerProcess, stack_settings: Settings) -> None:
    s, user = stack_settings, f"ck-{uuid.uuid4().hex[:8]}"
    consumer = Consumer({"bootstrap.servers": s.bootstrap_servers, "group.id": user, "auto.offset.reset": "earliest"})
    consumer.subscribe([s.topic_predictions])
    producer = Producer({"bootstrap.servers": s.bootstrap_servers})
    producer.produce(s.topic_clicks, event(user, "172", 1_700_000_000, event_id=user), key=user)
    assert producer.flush(10) == 0
    deadline, found = time.monotonic() + TIMEOUT_S, False
    try:
        while not found and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            found = message is not None and message.error() is None and _mine(message.value(), user)
    finally:
        consumer.close()
    assert found, "confluent-kafka's consumer group got the prediction"


def test_kcat(worker: WorkerProcess, stack_settings: Settings) -> None:
    kcat = shutil.which("kcat")
    assert kcat, "Debian's kcat is needed (scripts/test installs it)"
    s, user = stack_settings, f"kcat-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [kcat, "-b", s.bootstrap_servers, "-P", "-t", s.topic_views, "-K", "\t"],
        input=user.encode() + b"\t" + event(user, "181", 1_700_000_000, "view", event_id=user) + b"\n",
        check=True,
        timeout=30,
    )
    # every partition from the beginning (kcat's consumer-group mode joined slowly on noida-db now and then)
    command = [kcat, "-b", s.bootstrap_servers, "-C", "-t", s.topic_predictions, "-o", "beginning", "-u"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as consumer:
        try:
            deadline, found, pending = time.monotonic() + TIMEOUT_S, False, b""
            assert consumer.stdout is not None
            fd = consumer.stdout.fileno()  # read the pipe itself: lines in a Python buffer would not wake select
            while not found and time.monotonic() < deadline:
                if select.select([fd], [], [], 0.5)[0]:  # never block past the deadline
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:  # kcat exited
                        break
                    *lines, pending = (pending + chunk).split(b"\n")
                    found = any(line and _mine(line, user) for line in lines)
        finally:
            consumer.terminate()
    assert found, "kcat read the prediction"
