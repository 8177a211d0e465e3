"""The queue flow routes of docs/api.md (issue 18): read a queue's settings, change them (PUT:
pause, concurrency limit, rate limit), and pause or resume it.

Changing a queue's flow affects every client and worker of it, so these routes want a key that
may both submit and lease (`jobs:submit` and `jobs:lease`: admin keys); reading takes
`jobs:read`. Each change is one logged SetQueue command: paused and limited queues stay so
after a restart, and every node of a cluster applies them. GET /queues (monitoring) lists
queues holding jobs with the same settings beside their counts.
"""

from __future__ import annotations

from collections import defaultdict

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from jq_tool.auth import Scope
from jq_tool.core.model import QueueSettings
from jq_tool.engine.base import Engine, QueueChange
from jq_tool.server.auth_guard import Guard
from jq_tool.server.requests import check_value, decode, read_body
from jq_tool.server.validation import QueueName, QueueSettingsBody
from jq_tool.server.wire import JSONResponse, QueueSettingsView, QueueView
from jq_tool.settings import Settings

_SMALL_BODY = 64 * 1024


class QueueRoutes(msgspec.Struct, frozen=True):
    # A Struct as JobRoutes is, not a frozen dataclass: a dataclass's six generated methods
    # were ~0.8 ms of every start (issue 20); a Struct's are made in C.
    engine: Engine
    guard: Guard
    settings: Settings
    counts: defaultdict[str, int]  # engine commands by type, for /metrics

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/queues/{name}", self.get_queue, methods=["GET"]),
            Route("/queues/{name}", self.put_queue, methods=["PUT"]),
            Route("/queues/{name}/pause", self.pause, methods=["POST"]),
            Route("/queues/{name}/resume", self.resume, methods=["POST"]),
        ]

    async def get_queue(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_READ)
        name = _queue_name(request)
        return JSONResponse(self._view(self.engine.queue_settings(name)))

    async def put_queue(self, request: Request) -> Response:
        body = decode(await self._authorized_body(request), QueueSettingsBody)
        change = QueueChange(
            _queue_name(request),
            paused=body.paused,
            concurrency=body.concurrency,
            rate_limit=body.rate_limit,
            rate_period_ms=body.rate_period_ms,
            max_latency_ms=body.max_latency_ms,
        )
        return await self._change(change)

    async def pause(self, request: Request) -> Response:
        await self._authorized_body(request)
        return await self._change(QueueChange(_queue_name(request), paused=True))

    async def resume(self, request: Request) -> Response:
        await self._authorized_body(request)
        return await self._change(QueueChange(_queue_name(request), paused=False))

    async def _authorized_body(self, request: Request) -> bytes:
        await self.guard.require(request, Scope.JOBS_SUBMIT)
        await self.guard.require(request, Scope.JOBS_LEASE)
        return await read_body(request, _SMALL_BODY)

    async def _change(self, change: QueueChange) -> Response:
        self.counts["queue_set"] += 1
        settings = await self.engine.set_queue(change)  # CommandRejected: errors.py's table
        return JSONResponse(self._view(settings))

    def _view(self, settings: QueueSettings) -> QueueSettingsView:
        counts = None
        stats = self.engine.queue_stats(settings.name)
        if stats is not None:
            counts = QueueView(name=settings.name, **msgspec.structs.asdict(stats))
        return QueueSettingsView(
            name=settings.name,
            paused=settings.paused,
            concurrency=settings.concurrency,
            rate_limit=settings.rate_limit,
            rate_period_ms=settings.rate_period_ms,
            rate_window_leases=len(settings.recent_leases),
            counts=counts,
            max_latency_ms=settings.max_latency_ms,
        )


def _queue_name(request: Request) -> str:
    name = request.path_params["name"]
    check_value(name, QueueName, "name")
    return name
