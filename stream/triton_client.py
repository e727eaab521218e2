"""Scores behaviour windows on Triton (model ``settings.model_name``) over the asyncio gRPC client.

All windows of one call travel as one request, left-padded with "" to the longest window of the batch (not to
``window_max_events``: a batch of short windows costs short windows). ``score`` asks only for the outputs a
prediction needs, so the served model runs the encoder once; ``explain`` asks for ``ATTRIBUTION`` too, which
costs one more encoder pass per attributed event, and is used only for the users the policy guides.

Errors are classified, not retried, here: the batcher is the one retry layer. UNAVAILABLE (server down or
restarting), NOT_FOUND (no version loaded for a moment during a model swap) and a client time-out are
:class:`TransientScoringError`; anything else (INVALID_ARG, a failing model) is :class:`ScoringError`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import orjson
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.grpc.aio import InferenceServerClient, InferResult
from tritonclient.utils import InferenceServerException

from stream.metrics import Metrics
from stream.schemas import (
    EVENT_TYPES,
    Explained,
    ModelRef,
    Scored,
    ScoredItem,
    ScoringError,
    TransientScoringError,
    WindowEvent,
)
from stream.settings import Settings

logger = logging.getLogger(__name__)

PREDICT_OUTPUTS = ("TOP_ITEMS", "TOP_SCORES", "TOP_TITLES", "NEXT_ACTION")
EXPLAIN_OUTPUTS = ("TOP_ITEMS", "ATTRIBUTION", "INPUT_TITLES")
#: gRPC codes worth another try: the server (re)starting, no version of the model loaded for a moment (Triton
#: answers NOT_FOUND "... has no available versions"), or a time-out.
#: round_robin: with several Triton replicas behind one DNS name, spread requests over all of them. Reconnect
#: backoff at most 1 s: gRPC's default grows to 120 s, so after an outage the channel kept answering "connection
#: refused" for over a minute while Triton was back (docs/RELIABILITY.md).
CHANNEL_ARGS = [
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
TRANSIENT_CODES = frozenset({"StatusCode.UNAVAILABLE", "StatusCode.NOT_FOUND", "StatusCode.DEADLINE_EXCEEDED"})


class TritonScorer:
    """:class:`stream.schemas.Scorer` on Triton."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._client: InferenceServerClient | None = None

    async def start(self) -> None:
        self._client = InferenceServerClient(url=self._settings.triton_url, channel_args=CHANNEL_ARGS)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _require_client(self) -> InferenceServerClient:
        if self._client is None:
            raise RuntimeError("TritonScorer.start() was not called")
        return self._client

    async def ready(self) -> bool:
        """Server live and the model ready."""
        client = self._require_client()
        try:
            return await client.is_server_live() and await client.is_model_ready(self._settings.model_name)
        except InferenceServerException:
            return False

    async def score(
        self, windows: Sequence[Sequence[WindowEvent]], consumed: Sequence[Sequence[str]] = ()
    ) -> list[Scored]:
        if not windows:
            return []
        result = await self._infer(windows, PREDICT_OUTPUTS, "score", consumed, top_k=self._settings.top_k)
        model = _model_of(result)
        top_items, top_scores, top_titles, next_action = (result.as_numpy(name) for name in PREDICT_OUTPUTS)
        top_scores = top_scores.tolist()
        return [
            Scored(
                model=model,
                next_items=[
                    ScoredItem(item_id=item.decode(), score=score, title=title.decode() or None)
                    for item, score, title in zip(top_items[row], top_scores[row], top_titles[row], strict=True)
                    if item  # "" marks a slot the catalogue could not fill (always the last ones)
                ],
                next_action=dict(zip(EVENT_TYPES, next_action[row].tolist(), strict=True)),
            )
            for row in range(len(windows))
        ]

    async def explain(self, windows: Sequence[Sequence[WindowEvent]]) -> list[Explained]:
        if not windows:
            return []
        result = await self._infer(windows, EXPLAIN_OUTPUTS, "explain")
        model = _model_of(result)
        attribution, titles = result.as_numpy("ATTRIBUTION"), result.as_numpy("INPUT_TITLES")
        explained = []
        for row, window in enumerate(windows):
            n = len(window)
            explained.append(
                Explained(
                    model=model,
                    weights=attribution[row, -n:].tolist(),
                    titles=[title.decode() or None for title in titles[row, -n:]],
                )
            )
        return explained

    def _inputs(
        self, windows: Sequence[Sequence[WindowEvent]], consumed: Sequence[Sequence[str]] = ()
    ) -> list[InferInput]:
        limit = self._settings.window_max_events
        for window in windows:
            if not 0 < len(window) <= limit:
                raise ValueError(f"a window needs 1..{limit} events (window_max_events), got {len(window)}")
        length = max(len(window) for window in windows)
        ids = np.full((len(windows), length), b"", dtype=object)
        types = np.full((len(windows), length), b"", dtype=object)
        stamps = np.zeros((len(windows), length), dtype=np.float64)
        for row, window in enumerate(windows):
            start = length - len(window)
            ids[row, start:] = [e.item_id.encode() for e in window]
            types[row, start:] = [e.event_type.value.encode() for e in window]
            stamps[row, start:] = [e.timestamp for e in window]
        arrays = [("ITEM_IDS", ids, "BYTES"), ("EVENT_TYPES", types, "BYTES"), ("TIMESTAMPS", stamps, "FP64")]
        if any(e.context for window in windows for e in window):
            arrays.append(("CONTEXT", np.array([[row_context(w)] for w in windows], dtype=object), "BYTES"))
        if any(consumed):
            if len(consumed) != len(windows):
                raise ValueError(f"{len(consumed)} consumed lists for {len(windows)} windows")
            excluded = np.full((len(windows), max(len(c) for c in consumed)), b"", dtype=object)
            for row, items in enumerate(consumed):
                excluded[row, : len(items)] = [item.encode() for item in items]
            arrays.append(("EXCLUDE_IDS", excluded, "BYTES"))
        inputs = []
        for name, array, dtype in arrays:
            tensor = InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return inputs

    async def _infer(
        self,
        windows: Sequence[Sequence[WindowEvent]],
        outputs: Sequence[str],
        kind: str,
        consumed: Sequence[Sequence[str]] = (),
        top_k: int | None = None,
    ) -> InferResult:
        """One request; ``top_k``: how many top items the model returns (its request parameter)."""
        client = self._require_client()
        inputs = self._inputs(windows, consumed)
        started = time.perf_counter()
        try:
            result = await client.infer(
                self._settings.model_name,
                inputs,
                outputs=[InferRequestedOutput(name) for name in outputs],
                client_timeout=self._settings.triton_timeout_s,
                parameters=None if top_k is None else {"top_k": top_k},
            )
        except InferenceServerException as exc:
            status = str(exc.status())
            error = TransientScoringError if status in TRANSIENT_CODES else ScoringError
            raise error(
                f"Triton {self._settings.triton_url} model {self._settings.model_name!r}: {status} {exc.message()}"
            ) from exc
        self._metrics.triton_request_seconds.labels(kind).observe(time.perf_counter() - started)
        return result


def row_context(window: Sequence[WindowEvent]) -> bytes:
    """A window's CONTEXT: its distinct contexts once each, and each event's index into them (oldest first), so
    a user whose events all carry the same context costs one object, not one per event; b"" when none has any."""
    index: dict[tuple[tuple[str, str], ...], int] = {}
    events = [index.setdefault(tuple(e.context.items()), len(index)) for e in window]
    if not any(index):
        return b""
    return orjson.dumps({"values": [dict(pairs) for pairs in index], "events": events})


def _model_of(result: InferResult) -> ModelRef:
    response = result.get_response()
    return ModelRef(name=response.model_name, version=response.model_version)
