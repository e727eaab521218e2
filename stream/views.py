"""The worker's web views: ``/`` (the live page), ``/live.json`` (its data), ``/health`` (200 only once it
consumes and the model is ready) and ``/metrics`` (Prometheus).

Faust's own views (tables, router, graph, stats) are switched off in ``stream.app``: they would show any
user's window to whoever reaches the port.
"""

from __future__ import annotations

import asyncio
import time

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST

from stream.live import PAGE, LiveFeed
from stream.metrics import Metrics
from stream.schemas import Scorer

#: How long /health waits for ``scorer.ready()``.
READY_TIMEOUT_S = 2.0


async def not_ready_reason(app: faust.App, scorer: Scorer) -> str | None:
    if app.rebalancing or not app.consumer.assignment():
        return "waiting for partition assignment"
    if not app.tables.recovery.completed.is_set():
        return "recovering tables"
    try:
        ready = await asyncio.wait_for(scorer.ready(), READY_TIMEOUT_S)
    except Exception as exc:
        return f"scorer readiness check failed: {exc!r}"
    return None if ready else "scorer not ready"


def add_views(app: faust.App, scorer: Scorer, metrics: Metrics, feed: LiveFeed) -> None:
    page = PAGE.read_bytes()

    @app.page("/")
    async def live(web: View, request: Request) -> Response:
        return web.bytes(page, content_type="text/html", headers={"Cache-Control": "no-store"})

    @app.page("/live.json")
    async def live_data(web: View, request: Request) -> Response:
        return web.json(feed.snapshot(time.time()), headers={"Cache-Control": "no-store"})

    @app.page("/health")
    async def health(web: View, request: Request) -> Response:
        reason = await not_ready_reason(app, scorer)
        if reason is not None:
            return web.json({"status": "unavailable", "reason": reason}, status=503)
        return web.json({"status": "ok"})

    @app.page("/metrics")
    async def prometheus(web: View, request: Request) -> Response:
        return web.bytes(metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})
