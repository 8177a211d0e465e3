"""The HTTP server's assembly: `create_app(engine, keystore, settings)` joins the route groups
(jobs, keys, schedules, monitoring, the /events stream, the OpenAPI document, the dashboard),
the error table, the request-metrics middleware and a lifespan that starts and stops the engine
and closes the key store.

Nothing here is global: every app owns its routes' state (ticket book, metrics registry,
throughput meter), so tests may run several apps in one process. `app.state.draining` is set
when a graceful shutdown begins; long polls and event streams watch it so they end promptly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import cast

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from jq_tool.auth import KeyStore, KeyStoreUnavailable, seed_dev_keys
from jq_tool.engine.base import Engine, ShardAdmin
from jq_tool.server.auth_guard import Guard
from jq_tool.server.dashboard import dashboard_routes
from jq_tool.server.errors import HANDLED_EXCEPTIONS, handle_exception
from jq_tool.server.events import EventRoutes, OpenStreams, StreamSlots, TicketBook
from jq_tool.server.hot_routes import HotRoutes, JobRouteTable, JobsFirst
from jq_tool.server.latency import LatencyWatch
from jq_tool.server.metrics import RequestCounts, RequestMetricsMiddleware, build_registry
from jq_tool.server.openapi_route import openapi_routes
from jq_tool.server.routes_bulk import BulkRoutes
from jq_tool.server.routes_console import ConsoleRoutes
from jq_tool.server.routes_insight import InsightRoutes
from jq_tool.server.routes_jobs import JobRoutes
from jq_tool.server.routes_keys import KeyRoutes
from jq_tool.server.routes_monitoring import KeyStoreProbe, MonitoringRoutes
from jq_tool.server.routes_queues import QueueRoutes
from jq_tool.server.routes_schedules import ScheduleRoutes
from jq_tool.server.routing import answer_wrong_methods
from jq_tool.server.stats import StatsView, ThroughputMeter
from jq_tool.server.workers import WorkerBook
from jq_tool.settings import Settings

log = logging.getLogger("jq.server")


def _shard_routes(engine: Engine, guard: Guard, settings: Settings) -> list[BaseRoute]:
    """Sharded mode's admin routes; nothing (and no import of the sharded engine) otherwise."""
    if not settings.shards:
        return []
    from jq_tool.server.routes_shards import ShardRoutes

    return ShardRoutes(cast(ShardAdmin, engine), guard).routes()


def _forwarding(settings: Settings, counts: RequestCounts, jobs: JobRouteTable) -> list[Middleware]:
    """Sharded mode's forwarding of a request to a node holding its shard, then the job
    routes (see hot_routes.py); nothing (and no import of httpx, ~80 ms of every single-node
    start) otherwise: there the app serves the job routes before any middleware."""
    if not settings.shards:
        return []
    from jq_tool.server.forward import Forwarder

    return [
        Middleware(Forwarder, node_id=settings.node_id, counts=counts),
        Middleware(HotRoutes, table=jobs),
    ]


class StartupFailed(Exception):
    """The engine could not start; raised from the lifespan once the reason has been logged."""


def create_app(engine: Engine, keystore: KeyStore, settings: Settings) -> Starlette:
    guard = Guard(keystore)
    counts = RequestCounts()
    meter = ThroughputMeter(engine)
    latency = LatencyWatch(engine)  # issue 19: per-queue latency and max-latency warnings
    stats = StatsView(engine, meter, settings.node_id, latency)
    draining = asyncio.Event()
    registry = build_registry(engine, counts)
    registry.add(latency)
    tickets = TicketBook(settings.ticket_ttl_ms, keystore)
    slots = StreamSlots(settings.max_streams)
    streams = OpenStreams(keystore)
    keystore.on_revoke(streams.revoked)  # a revoked key's /events streams end at once
    key_store_probe = KeyStoreProbe(keystore)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await engine.start()
        except Exception as exc:
            # Our own errors (WAL locked or corrupt) and OS errors say it all in one line.
            expected = isinstance(exc, OSError) or type(exc).__module__.startswith("jq_tool.")
            log.error("jq cannot start: %s", exc, exc_info=not expected)
            await keystore.close()
            raise StartupFailed(str(exc)) from None
        try:
            if settings.seed_keys:
                try:
                    # Kept for the runner's first-start panel, printed once uvicorn listens.
                    app.state.seeded_keys = await seed_dev_keys(
                        keystore, logging.getLogger("jq.auth")
                    )
                except KeyStoreUnavailable as exc:
                    # Serve anyway: requests get 503 until the store is back.
                    log.error("could not seed the dev keys, key store unavailable: %s", exc)
            meter.start()
            key_store_probe.start()
            log.info(
                "jq serving on http://%s:%d (data dir %s)",
                settings.host,
                settings.port,
                settings.data_dir,
            )
            yield
        finally:
            draining.set()
            await meter.stop()
            await key_store_probe.stop()
            await streams.stop()
            await engine.stop()
            await keystore.close()
            log.info("jq stopped: engine flushed and closed")

    workers = WorkerBook()
    job_routes = [
        *JobRoutes(engine, guard, settings, counts.commands, draining, workers).routes(),
        # Under /jobs/ too: HotRoutes must know the path is not a job id (GET is a 405).
        *BulkRoutes(engine, guard, counts.commands).routes(),
    ]
    jobs = JobRouteTable(job_routes)
    app = JobsFirst(
        routes=answer_wrong_methods(
            [
                *job_routes,
                *KeyRoutes(keystore, guard).routes(),
                *ScheduleRoutes(engine, guard, settings, counts.commands).routes(),
                *QueueRoutes(engine, guard, settings, counts.commands).routes(),
                *InsightRoutes(engine, guard, counts.commands).routes(),
                *MonitoringRoutes(
                    engine, guard, stats, registry, settings.max_body, key_store_probe, latency
                ).routes(),
                *EventRoutes(engine, guard, stats, tickets, draining, slots, streams).routes(),
                *ConsoleRoutes(engine, guard, workers).routes(),
                *_shard_routes(engine, guard, settings),
                *openapi_routes(bool(settings.shards)),
                *dashboard_routes(),
            ]
        ),
        middleware=[
            Middleware(RequestMetricsMiddleware, counts=counts, log_access=settings.access_log),
            # Sharded mode only: requests for a shard not held here go to a node holding it;
            # then the job routes, which skip the router (hot_routes.py).
            *_forwarding(settings, counts, jobs),
        ],
        exception_handlers={exc: handle_exception for exc in HANDLED_EXCEPTIONS},
        lifespan=lifespan,
    )
    if not settings.shards:
        app.jobs_first(jobs, counts, settings.access_log)  # before any middleware: hot_routes.py
    app.state.draining = draining
    app.state.seeded_keys = []  # (ApiKey, secret) of the dev keys this start created
    app.state.engine = engine
    app.state.keystore = keystore
    app.state.settings = settings
    return app
