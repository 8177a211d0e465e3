"""The routes that watch the server rather than change the queue: GET /health (no key: load
balancers and orchestrators probe it), GET /stats, GET /metrics (Prometheus), and POST /_noop,
the benchmark's baseline.

/stats shares its body with the `event: stats` frames of /events (`stats.StatsView`); /metrics
renders the app's own registry (`metrics.py`). Nothing here writes to the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from jq_tool.auth import Scope
from jq_tool.engine.base import Engine
from jq_tool.server.auth_guard import Guard
from jq_tool.server.metrics import PROMETHEUS_CONTENT_TYPE, MetricsRegistry, render
from jq_tool.server.requests import read_body
from jq_tool.server.stats import StatsView
from jq_tool.server.wire import Health, JSONResponse


@dataclass(frozen=True)
class MonitoringRoutes:
    engine: Engine
    guard: Guard
    stats: StatsView
    registry: MetricsRegistry
    max_body: int

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/health", self.health, methods=["GET"]),
            Route("/stats", self.get_stats, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/_noop", self.noop, methods=["POST"]),
        ]

    async def health(self, request: Request) -> Response:
        health = self.engine.health()
        if health.ok:
            return JSONResponse(Health("ok", health.role))
        return JSONResponse(Health("unavailable", health.role, health.reason), status_code=503)

    async def get_stats(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_READ)
        return JSONResponse(self.stats.body())

    async def metrics(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_READ)
        return Response(render(self.registry), media_type=PROMETHEUS_CONTENT_TYPE)

    async def noop(self, request: Request) -> Response:
        """What a request costs without auth or the engine: read the body, answer."""
        await read_body(request, self.max_body)
        return JSONResponse({"ok": True})
