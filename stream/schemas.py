"""Typed messages at the edges: what comes in from Kafka, what goes out, and the one internal hop.

All topics carry JSON encoded with orjson. ``EVENT_TYPES`` fixes the order of the model's next-action head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, Protocol

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
    context: dict[str, Any] | None = Field(
        None, description="any JSON object; the model reads its short scalar values (model_context)"
    )

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


#: Bounds of the context kept with an event (:func:`model_context`).
CONTEXT_MAX_KEYS = 16
CONTEXT_MAX_CHARS = 64


def model_context(context: dict[str, Any] | None) -> dict[str, str]:
    """The part of an event's ``context`` a model can read: each value that is a string, a number or a boolean,
    as text (``true``/``false``, integral numbers without ``.0``: ``25.0`` -> ``25``), keys and texts of at most
    ``CONTEXT_MAX_CHARS`` characters, the first ``CONTEXT_MAX_KEYS`` keys in string order. Everything else
    (null, lists, objects, long texts) is allowed in the input and left out here: a version reads the keys and
    values it was trained with (its ``context.json``) and ignores unknown ones, so this is no error."""
    kept: dict[str, str] = {}
    for key in sorted(context or {}):
        value = context[key]  # type: ignore[index]
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            text = str(int(value))
        elif isinstance(value, float | str):
            text = str(value).strip()
        else:
            continue
        if 0 < len(key) <= CONTEXT_MAX_CHARS and 0 < len(text) <= CONTEXT_MAX_CHARS:
            kept[key] = text
            if len(kept) == CONTEXT_MAX_KEYS:
                break
    return kept


class WindowEvent(_Message):
    """One event as kept in a user's behaviour window (the internal topic carries these too)."""

    event_id: str = Field(description="the input's event_id, else 'topic:partition:offset'")
    item_id: str
    event_type: EventType
    timestamp: float
    record_ts_ms: int = Field(description="Kafka record timestamp of the input event, for latency_ms")
    context: dict[str, str] = Field(
        default_factory=dict, description="the input's context as the model reads it (model_context)"
    )


class KeyedEvent(_Message):
    """A validated input event of a user; re-keyed through the internal topic when its record was not keyed
    so that it landed in the user's partition."""

    user_id: str
    event: WindowEvent
    ingest_ms: float = Field(0.0, description="record timestamp of the input to the worker reading it")


class ForgetUser(_Message):
    """A record of the control topic, keyed by user_id: delete every state the workers keep of the user."""

    action: Literal["forget"] = "forget"
    user_id: str = Field(min_length=1, max_length=256)
    requested_at: float


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
    latency_ms: float = Field(description="Kafka record timestamp of the newest event to emission")
    stages_ms: dict[str, float] = Field(
        description="where latency_ms went: ingest (Kafka hop in), rekey (internal hop, re-keyed events only), "
        "window, batch_wait, triton, emit"
    )
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
    reason: str = Field(description="'invalid' (the record) or 'rejected' (the model refused the window)")
    event_ids: list[str] = Field(default_factory=list, description="the events it accounts for, when valid")
    topic: str
    partition: int
    offset: int
    error: str
    value: str = Field(description="the original bytes: UTF-8 text, or base64 when not UTF-8")
    value_encoding: str = Field(description="'utf-8' or 'base64'")
    key: str | None = None
    received_at: float


# --- the scorer: what the batcher and the policy need from a model server -------------------------------


@dataclass(frozen=True)
class Scored:
    """One user's result."""

    model: ModelRef
    next_items: list[ScoredItem]  # the top settings.top_k, best first
    next_action: dict[str, float]  # keys = EVENT_TYPES


@dataclass(frozen=True)
class Explained:
    """How much each event of a window drove its top item (occlusion), aligned with the window, oldest first."""

    model: ModelRef
    weights: list[float]
    titles: list[str | None]


class ScoringError(Exception):
    """The model server rejected a batch for good (the input, or the model): retrying will not help."""


class TransientScoringError(ScoringError):
    """The model server cannot answer now (down, restarting, model loading): retry the same batch later."""


class Scorer(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ready(self) -> bool: ...

    async def score(
        self, windows: Sequence[Sequence[WindowEvent]], consumed: Sequence[Sequence[str]] = ()
    ) -> list[Scored]:
        """Next items and actions of every window, leaving out the window's items and ``consumed[i]`` (items
        user i consumed before the window); raises ScoringError / TransientScoringError."""
        ...

    async def explain(self, windows: Sequence[Sequence[WindowEvent]]) -> list[Explained]:
        """The attribution of every window (costs about 1 + attribution_max_events encoder passes each)."""
        ...
