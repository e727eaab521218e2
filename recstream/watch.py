"""Show what the stack emits: one line per prediction, guidance and dead letter."""

from __future__ import annotations

import logging

import orjson
from aiokafka import AIOKafkaConsumer
from rich.console import Console

from stream.settings import Settings

logger = logging.getLogger(__name__)


def describe(topic: str, message: dict, settings: Settings) -> str:
    """A one-line, human-readable summary of an output message."""
    if topic == settings.topic_predictions:
        items = ", ".join(i.get("title") or i["item_id"] for i in message["next_items"][:3])
        action = max(message["next_action"], key=message["next_action"].get)
        return (
            f"[cyan]prediction[/] user {message['user_id']} ({message['window']['events']} events, "
            f"{len(message['event_ids'])} new, {message['latency_ms']:.0f} ms): next {items} | likely {action}"
        )
    if topic == settings.topic_guidance:
        return f"[green]guidance[/]   user {message['user_id']}: {message['action']}: {message['explanation']}"
    return f"[red]dead letter[/] {message['topic']}:{message['partition']}:{message['offset']}: {message['error']}"


async def watch_outputs(settings: Settings, console: Console | None = None) -> None:
    console = console or Console()
    topics = (settings.topic_predictions, settings.topic_guidance, settings.topic_dead_letters)
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=settings.bootstrap_servers, auto_offset_reset="latest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        async for record in consumer:
            console.print(describe(record.topic, orjson.loads(record.value), settings), highlight=False)
    finally:
        await consumer.stop()
