"""Scores behaviour windows on Triton (model ``settings.model_name``) over the asyncio gRPC client.

All windows of one ``score`` call travel as one request, left-padded to ``settings.window_max_events`` so
that Triton's dynamic batcher can merge requests of different workers (it merges equal shapes only).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import Counter, Histogram
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.grpc.aio import InferenceServerClient, InferResult
from tritonclient.utils import InferenceServerException

from stream.schemas import EVENT_TYPES, ModelRef, ScoredItem, WindowEvent
from stream.settings import Settings

logger = logging.getLogger(__name__)

OUTPUTS = ("TOP_ITEMS", "TOP_SCORES", "TOP_TITLES", "NEXT_ACTION", "ATTRIBUTION", "INPUT_TITLES")
#: gRPC codes worth another try: the server (re)starting, or no version of the model loaded for a moment
#: (Triton answers NOT_FOUND "... has no available versions"). A plain version swap needs no retry.
RETRY_CODES = frozenset({"StatusCode.UNAVAILABLE", "StatusCode.NOT_FOUND"})
RETRY_DELAYS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)  # about 8 s: a restart or a model (re)load

REQUEST_SECONDS = Histogram(
    "recstream_triton_request_seconds",
    "Latency of one Triton scoring request (all windows of a batch), retries included",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RETRIES = Counter("recstream_triton_retries_total", "Triton requests retried after a transient failure", ["code"])


class ScoringError(Exception):
    """Triton could not score a batch (after the retries, for transient failures)."""


@dataclass(frozen=True)
class Scored:
    """One user's result."""

    model: ModelRef
    next_items: list[ScoredItem]  # the top settings.top_k, best first
    next_action: dict[str, float]  # keys = EVENT_TYPES
    attribution: list[float]  # aligned with the window events passed in (oldest first)
    titles: list[str | None]  # aligned with the window events


class TritonScorer:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: InferenceServerClient | None = None

    async def start(self) -> None:
        self._client = InferenceServerClient(url=self._settings.triton_url)

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

    async def score(self, windows: Sequence[Sequence[WindowEvent]]) -> list[Scored]:
        """Score every window (oldest event first) in one request; raises ScoringError or ValueError."""
        if not windows:
            return []
        inputs = self._inputs(windows)
        started = time.perf_counter()
        result = await self._infer(inputs)
        REQUEST_SECONDS.observe(time.perf_counter() - started)
        return self._parse(result, windows)

    def _inputs(self, windows: Sequence[Sequence[WindowEvent]]) -> list[InferInput]:
        length = self._settings.window_max_events
        ids = np.full((len(windows), length), b"", dtype=object)
        types = np.full((len(windows), length), b"", dtype=object)
        stamps = np.zeros((len(windows), length), dtype=np.float64)
        for row, window in enumerate(windows):
            if not 0 < len(window) <= length:
                raise ValueError(f"a window needs 1..{length} events (window_max_events), got {len(window)}")
            start = length - len(window)
            ids[row, start:] = [e.item_id.encode() for e in window]
            types[row, start:] = [e.event_type.value.encode() for e in window]
            stamps[row, start:] = [e.timestamp for e in window]
        inputs = []
        for name, array, dtype in (
            ("ITEM_IDS", ids, "BYTES"),
            ("EVENT_TYPES", types, "BYTES"),
            ("TIMESTAMPS", stamps, "FP64"),
        ):
            tensor = InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return inputs

    async def _infer(self, inputs: list[InferInput]) -> InferResult:
        client = self._require_client()
        outputs = [InferRequestedOutput(name) for name in OUTPUTS]
        attempt = 0
        while True:
            attempt += 1
            try:
                return await client.infer(
                    self._settings.model_name,
                    inputs,
                    outputs=outputs,
                    client_timeout=self._settings.triton_timeout_s,
                )
            except InferenceServerException as exc:
                if attempt > len(RETRY_DELAYS_S) or exc.status() not in RETRY_CODES:
                    raise ScoringError(
                        f"Triton {self._settings.triton_url} model {self._settings.model_name!r} failed "
                        f"after {attempt} attempt(s): {exc.status()} {exc.message()}"
                    ) from exc
                delay = RETRY_DELAYS_S[attempt - 1]
                RETRIES.labels(code=str(exc.status())).inc()
                logger.warning("Triton: %s %s; retry %d in %.1f s", exc.status(), exc.message(), attempt, delay)
                await asyncio.sleep(delay)

    def _parse(self, result: InferResult, windows: Sequence[Sequence[WindowEvent]]) -> list[Scored]:
        response = result.get_response()
        model = ModelRef(name=response.model_name, version=response.model_version)
        top_items, top_scores, top_titles, next_action, attribution, input_titles = (
            result.as_numpy(name) for name in OUTPUTS
        )
        top_k = self._settings.top_k
        scored = []
        for row, window in enumerate(windows):
            items = [
                ScoredItem(item_id=item.decode(), score=float(score), title=title.decode() or None)
                for item, score, title in zip(top_items[row], top_scores[row], top_titles[row], strict=True)
                if item  # "" marks a slot the catalogue could not fill
            ][:top_k]
            n = len(window)
            scored.append(
                Scored(
                    model=model,
                    next_items=items,
                    next_action=dict(zip(EVENT_TYPES, next_action[row].tolist(), strict=True)),
                    attribution=attribution[row, -n:].tolist(),
                    titles=[title.decode() or None for title in input_titles[row, -n:]],
                )
            )
        return scored
