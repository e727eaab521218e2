"""Requests to the running workers through the control topic (``settings.topic_control``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from stream.schemas import ForgetUser
from stream.settings import Settings

logger = logging.getLogger(__name__)


async def forget_users(settings: Settings, user_ids: Sequence[str]) -> None:
    """Ask the workers to delete every state they keep of these users (one record each, keyed by user_id, so
    it reaches the partition, and with it the worker, that holds the user)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        now_s = time.time()
        for user_id in user_ids:
            request = ForgetUser(user_id=user_id, requested_at=now_s)
            await producer.send_and_wait(settings.topic_control, request.to_bytes(), key=user_id.encode())
    finally:
        await producer.stop()
    logger.info("asked the workers to forget %d user(s)", len(user_ids))
