"""Typed messages at the edges: what comes in from Kafka, what goes out, and the one internal hop.

All topics carry JSON encoded with orjson. ``EVENT_TYPES`` fixes the order of the model's next-action head.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator


class EventType(StrEnum):
    view = "view"
    click = "click"
    add_to_cart = "add_to_cart"
    purchase = "purchase"


#: Order of the next-action probabilities produced by the model (index i <-> EVENT_TYPES[i]).
EVENT_TYPES: tuple[str, ...] = tuple(e.value for e in EventType)


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


class InputEvent(_Message):
    """A view or click produced by a site to the ``views``/``clicks`` topics."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    user_id: str = Field(min_length=1, max_length=256)
    item_id: str = Field(min_length=1, max_length=256)
    event_type: EventType
    timestamp: float = Field(description="epoch seconds; ISO-8601 strings are accepted and converted")
    event_id: str | None = Field(None, min_length=1, max_length=256)
    session_id: str | None = Field(None, max_length=256)
    context: dict[str, Any] | None = None

    @field_validator("timestamp", mode="before")
    @classmethod
    def _epoch_seconds(cls, value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError("timestamp must be epoch seconds or an ISO-8601 string, not a boolean")
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
                if parsed.tzinfo is None:
                    raise ValueError("ISO-8601 timestamp needs a time zone (e.g. 'Z' or '+00:00')") from None
                return parsed.timestamp()
        return value

    @field_validator("timestamp")
    @classmethod
    def _plausible(cls, value: float) -> float:
        if not 0 <= value < 1e11:  # 1e11 s is year 5138: milliseconds sent by mistake land above it
            raise ValueError("timestamp must be epoch seconds between 1970 and year 5000 (milliseconds?)")
        return value

    @classmethod
    def from_bytes(cls, raw: bytes) -> InputEvent:
        """Parse one record value; raises ``orjson.JSONDecodeError`` or ``pydantic.ValidationError``."""
        return cls.model_validate(orjson.loads(raw))


class WindowEvent(_Message):
    """One event as kept in a user's behaviour window (the internal topic carries these too)."""

    event_id: str = Field(description="the input's event_id, else 'topic:partition:offset'")
    item_id: str
    event_type: EventType
    timestamp: float
    record_ts_ms: int = Field(description="Kafka record timestamp of the input event, for latency_ms")


class KeyedEvent(_Message):
    """Internal hop: a validated input event, re-keyed by user_id so window state is co-partitioned."""

    user_id: str
    event: WindowEvent


class ModelRef(_Message):
    name: str
    version: str


class ScoredItem(_Message):
    item_id: str
    score: float
    title: str | None = None


class WindowSummary(_Message):
    events: int
    span_seconds: float


class Attribution(_Message):
    item_id: str
    event_type: EventType
    weight: float
    title: str | None = None


class Prediction(_Message):
    user_id: str
    event_ids: list[str]
    model: ModelRef
    next_items: list[ScoredItem]
    next_action: dict[str, float]
    window: WindowSummary
    attribution: list[Attribution] = Field(description="how much each window event drove the top item")
    latency_ms: float
    emitted_at: float


class Guidance(_Message):
    user_id: str
    action: str
    items: list[ScoredItem]
    explanation: str
    attribution: list[Attribution]
    event_ids: list[str]
    model: ModelRef
    emitted_at: float


class DeadLetter(_Message):
    topic: str
    partition: int
    offset: int
    error: str
    value: str = Field(description="the original bytes: UTF-8 text, or base64 when not UTF-8")
    value_encoding: str = Field(description="'utf-8' or 'base64'")
    key: str | None = None
    received_at: float
