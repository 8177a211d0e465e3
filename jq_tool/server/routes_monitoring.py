"""The routes that watch the server rather than change the queue: GET /health (no key: load
balancers and orchestrators probe it), GET /stats, GET /queues, GET /metrics (Prometheus),
and POST /_noop, the benchmark's baseline.

/health answers 503 while submits would be refused, naming every reason: the engine's (a failed
fsync, a full disk, no etcd majority, shutting down) and the key store's (unreachable: every
request would be a 503). The key store is probed in the background once a second
(`KeyStoreProbe`), so /health answers at once even while Redis hangs. /stats shares its body
with the `event: stats` frames of /events (`stats.StatsView`: the busiest queues only); GET
/queues pages through every queue; /metrics renders the app's own registry (`metrics.py`).
Nothing here writes to the engine.
"""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
from msgspec import UNSET
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from jq_tool.auth import KeyStore, Scope
from jq_tool.engine.base import Engine
from jq_tool.server.auth_guard import Guard
from jq_tool.server.latency import LatencyWatch
from jq_tool.server.metrics import PROMETHEUS_CONTENT_TYPE, MetricsRegistry, render
from jq_tool.server.requests import decode_query, read_body
from jq_tool.server.stats import StatsView
from jq_tool.server.validation import QueueListQuery
from jq_tool.server.wire import (
    Health,
    HealthProblem,
    JSONResponse,
    QueuePage,
    QueueView,
    ShardHealth,
)

PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 2.0


class KeyStoreProbe:
    """Whether the key store answers, asked once a second in the background."""

    def __init__(self, keystore: KeyStore) -> None:
        self.keystore = keystore
        self.problem: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="jq-key-store-probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        timeouts = 0
        while True:
            try:
                problem = await asyncio.wait_for(self.keystore.check(), PROBE_TIMEOUT_S)
                timeouts = 0
            except TimeoutError:
                # One late answer may be the event loop's own delay (a long request held it),
                # not the key store's: only two in a row, asked at once, say it hangs.
                timeouts += 1
                if timeouts < 2:
                    continue
                problem = f"no answer within {PROBE_TIMEOUT_S:g}s, twice"
            self.problem = problem and f"key store unreachable: {problem}"
            await asyncio.sleep(PROBE_INTERVAL_S)


class MonitoringRoutes:
    # A plain class, not a frozen dataclass: its six generated methods were ~0.8 ms of every
    # start (issue 20), and a route table needs none of them.
    __slots__ = ("engine", "guard", "stats", "registry", "max_body", "key_store_probe", "latency")

    def __init__(
        self,
        engine: Engine,
        guard: Guard,
        stats: StatsView,
        registry: MetricsRegistry,
        max_body: int,
        key_store_probe: KeyStoreProbe,
        latency: LatencyWatch | None = None,
    ) -> None:
        self.engine = engine
        self.guard = guard
        self.stats = stats
        self.registry = registry
        self.max_body = max_body
        self.key_store_probe = key_store_probe
        self.latency = latency  # max-latency warnings (issue 19)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/health", self.health, methods=["GET"]),
            Route("/stats", self.get_stats, methods=["GET"]),
            Route("/queues", self.list_queues, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/_noop", self.noop, methods=["POST"]),
        ]

    async def health(self, request: Request) -> Response:
        health = self.engine.health()
        problems = []
        if not health.ok:
            problems.append(HealthProblem("engine", health.reason or "writes refused"))
        if self.key_store_probe.problem is not None:
            problems.append(HealthProblem("key_store", self.key_store_probe.problem))
        warnings = self.latency.breaches() if self.latency is not None else []
        shards = (
            UNSET
            if health.shards is None
            else {
                number: ShardHealth(shard.ok, shard.role, shard.reason)
                for number, shard in health.shards.items()
            }
        )
        if not problems:
            return JSONResponse(
                Health("ok", health.role, warnings=warnings or UNSET, shards=shards)
            )
        reason = "; ".join(problem.reason for problem in problems)
        body = Health("unavailable", health.role, reason, problems, warnings or UNSET, shards)
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})

    async def get_stats(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_READ)
        return JSONResponse(self.stats.body())

    async def list_queues(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_READ)
        query = decode_query(request.query_params, QueueListQuery)
        page = self.engine.queue_page(query.cursor, query.limit + 1)
        more = len(page) > query.limit
        page = page[: query.limit]
        views = [QueueView(name=name, **msgspec.structs.asdict(counts)) for name, counts in page]
        return JSONResponse(QueuePage(views, page[-1][0] if more else None))

    async def metrics(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_READ)
        return Response(render(self.registry), media_type=PROMETHEUS_CONTENT_TYPE)

    async def noop(self, request: Request) -> Response:
        """What a request costs without auth or the engine: read the body, answer."""
        await read_body(request, self.max_body)
        return JSONResponse({"ok": True})
