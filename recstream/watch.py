"""Show what the stack emits: a line per prediction (cut to the terminal's width), guidance and dead letter."""

from __future__ import annotations

import logging

import orjson
from aiokafka import AIOKafkaConsumer
from rich.console import Console

from stream.kafka import pace_empty_fetches
from stream.settings import Settings
from stream.titles import readable_title

logger = logging.getLogger(__name__)


def describe(topic: str, message: dict, settings: Settings) -> str:
    """A one-line, human-readable summary of an output message."""
    if topic == settings.topic_predictions:
        items = ", ".join(
            readable_title(i["title"]) if i.get("title") else i["item_id"] for i in message["next_items"][:3]
        )
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
    pace_empty_fetches(consumer, settings.consumer_empty_fetch_pause_ms)
    try:
        async for record in consumer:
            line = describe(record.topic, orjson.loads(record.value), settings)
            # a prediction is one line, cut to fit; guidance and dead letters wrap, their text is the point
            one_line = record.topic == settings.topic_predictions
            console.print(line, highlight=False, no_wrap=one_line, overflow="ellipsis" if one_line else "fold")
    finally:
        await consumer.stop()
