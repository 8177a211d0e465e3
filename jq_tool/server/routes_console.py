"""The console's read routes (issue 17): GET /workers, GET /queues/{name}/overview and GET
/stats/history. Read-only views over the engine's state (and the node's WorkerBook, soft state);
every number that must survive a restart comes from the state machine.

Each route is: authorize (`jobs:read`), decode the query (`wire_console.py`), read the engine,
answer. Bulk actions are `routes_bulk.py`'s.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import cast

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from jq_tool.auth import Scope
from jq_tool.engine.base import MINUTE_MS, Engine
from jq_tool.server.auth_guard import Guard
from jq_tool.server.errors import invalid_field, not_found
from jq_tool.server.requests import check_value, decode_query
from jq_tool.server.validation import QueueName, WorkerId
from jq_tool.server.wire import JSONResponse, rfc3339
from jq_tool.server.wire_console import (
    ForgottenWorker,
    HeldLease,
    HistoryQuery,
    HistoryView,
    QueueDetail,
    QueueDetailQuery,
    Throughput,
    WorkerListQuery,
    WorkerPage,
    WorkerView,
)
from jq_tool.server.workers import WorkerBook

WINDOW_MINUTES = {"1h": 60, "24h": 1440}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class ConsoleRoutes:
    # A plain class, not a frozen dataclass: its six generated methods were ~0.8 ms of every
    # start (issue 20), and a route table needs none of them.
    __slots__ = ("engine", "guard", "workers")

    def __init__(self, engine: Engine, guard: Guard, workers: WorkerBook) -> None:
        self.engine = engine
        self.guard = guard
        self.workers = workers

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/workers", self.list_workers, methods=["GET"]),
            # `path`: a worker id may hold a '/' (any printable ASCII, as X-Jq-Worker).
            Route("/workers/{worker_id:path}", self.forget_worker, methods=["DELETE"]),
            Route("/queues/{name}/overview", self.queue_detail, methods=["GET"]),
            Route("/stats/history", self.history, methods=["GET"]),
        ]

    async def list_workers(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_READ)
        query = decode_query(request.query_params, WorkerListQuery)
        holders = Counter(job.worker for job in self.engine.running() if job.worker is not None)
        rows = self.workers.page(holders, query.cursor, query.limit + 1)
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        return JSONResponse(
            WorkerPage(
                [
                    WorkerView(
                        worker_id=row.worker_id,
                        last_seen=rfc3339(row.last_seen),
                        queues=row.queues,
                        leases=row.leases,
                    )
                    for row in rows
                ],
                rows[-1].worker_id if more and rows else None,
            )
        )

    async def forget_worker(self, request: Request) -> Response:
        """A worker that stopped says so: this node's book of workers (soft state, never
        logged) drops it. Its leases are in the log and keep it listed until they end."""
        await self.guard.require(request, Scope.JOBS_LEASE)
        worker_id = request.path_params["worker_id"]
        check_value(worker_id, WorkerId, "worker_id")
        return JSONResponse(ForgottenWorker(worker_id, self.workers.forget(worker_id)))

    async def queue_detail(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_READ)
        name = request.path_params["name"]
        check_value(name, QueueName, "name")
        query = decode_query(request.query_params, QueueDetailQuery)
        stats = self.engine.queue_stats(name)
        if stats is None:
            raise not_found(f"no queue {name!r} holds jobs")
        now = _now_ms()
        since = self.engine.oldest_runnable_since(name)
        after = None if query.cursor is None else int(query.cursor)
        held = [job for job in self.engine.running(name) if after is None or job.seq > after]
        page = held[: query.limit]
        _, submitted, acked, failed = self.engine.minute_counts(name, 60, now // MINUTE_MS)
        return JSONResponse(
            QueueDetail(
                name=name,
                runnable=stats.runnable,
                running=stats.running,
                scheduled=stats.scheduled,
                retry=stats.retry,
                dead=stats.dead,
                acked=stats.acked,
                cancelled=stats.cancelled,
                total=stats.total,
                waiting=stats.waiting,
                paused=stats.paused,
                oldest_runnable_at=rfc3339(since),
                latency_ms=None if since is None else max(0, now - since),
                throughput=Throughput(
                    start=rfc3339((now // MINUTE_MS - 59) * MINUTE_MS),
                    step_ms=MINUTE_MS,
                    submitted=submitted,
                    acked=acked,
                    failed=failed,
                ),
                leases=[
                    HeldLease(
                        job_id=job.id,
                        worker=job.worker,
                        attempt=job.attempts,
                        since=rfc3339(job.leased_at),
                        until=rfc3339(cast(int, job.lease_until)),
                    )
                    for job in page
                ],
                next_cursor=str(page[-1].seq) if len(held) > query.limit else None,
            )
        )

    async def history(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_READ)
        query = decode_query(request.query_params, HistoryQuery, any_case=())
        minutes = WINDOW_MINUTES.get(query.window)
        if minutes is None:  # pragma: no cover - the Literal refuses it first
            raise invalid_field("window", "window must be 1h or 24h")
        last = _now_ms() // MINUTE_MS
        tracked, submitted, acked, failed = self.engine.minute_counts(query.queue, minutes, last)
        return JSONResponse(
            HistoryView(
                window=query.window,
                queue=query.queue,
                tracked=tracked,
                start=rfc3339((last - minutes + 1) * MINUTE_MS),
                step_ms=MINUTE_MS,
                submitted=submitted,
                acked=acked,
                failed=failed,
            )
        )
