"""POST /jobs/bulk (issue 17): requeue every DEAD job, or cancel every waiting job, matching a
filter, in chunks of BULK_CHUNK jobs, each chunk one logged command (BulkRequeue/BulkCancel:
atomic, replayed, replicated).

The chunks go one at a time: the next is selected (a cursor walk of the state machine's
submission order, newest first) and proposed only once the one before is durable and applied,
so a submit arriving meanwhile joins the next group commit instead of waiting behind the whole
action. A job that left the state between selection and apply is skipped by the state machine,
never changed twice; a bulk action cut short (a crash, a 503) leaves its written chunks done,
and sending it again does the rest.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from jq_tool.auth import Scope
from jq_tool.engine.base import SCHEDULED, Engine, JobFilter
from jq_tool.server.auth_guard import Guard
from jq_tool.server.requests import decode, read_body
from jq_tool.server.wire import JSONResponse
from jq_tool.server.wire_console import BulkAnswer, BulkBody

BULK_CHUNK = 500  # jobs per logged command
BULK_SCAN_LIMIT = 20_000  # jobs examined to select one chunk, as a GET /jobs search
BULK_PAUSE_S = 0.005  # between two chunks: 100,000 jobs take ~1 s longer, submits wait less
_WAITING = frozenset({"READY", "RETRY", SCHEDULED})
_BODY = 64 * 1024


class BulkRoutes:
    # A plain class, not a frozen dataclass: its six generated methods were ~0.8 ms of every
    # start (issue 20), and a route table needs none of them.
    __slots__ = ("engine", "guard", "counts")

    def __init__(self, engine: Engine, guard: Guard, counts: defaultdict[str, int]) -> None:
        self.engine = engine
        self.guard = guard
        self.counts = counts  # engine commands by type, for /metrics

    def routes(self) -> list[BaseRoute]:
        return [Route("/jobs/bulk", self.bulk, methods=["POST"])]

    async def bulk(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_SUBMIT)
        body = decode(await read_body(request, _BODY), BulkBody)
        if body.action == "requeue":
            labels = frozenset({"DEAD"})
        else:
            labels = _WAITING if body.states is None else frozenset(body.states)
        where = JobFilter(labels, body.queue, body.id_prefix, body.error)
        matched = changed = chunks = 0
        cursor: str | None = None
        # In cluster mode this node's copy may not have applied a write another node just
        # acknowledged (a submit, an ack): the action must see it, as a single node's would.
        await self.engine.catch_up()
        while matched < body.limit:
            # A bounded scan each step, like a GET /jobs search: jobs that do not match (a
            # million ACKED ones) never hold the loop for long either.
            page, cursor = self.engine.search(
                where,
                limit=min(BULK_CHUNK, body.limit - matched),
                cursor=cursor,
                scan_limit=BULK_SCAN_LIMIT,
            )
            if page:
                matched += len(page)
                self.counts[f"bulk_{body.action}"] += 1
                changed += len(await self.engine.bulk(body.action, [job.id for job in page]))
                chunks += 1
            if cursor is None:
                break
            # A pause between chunks: requests that arrive meanwhile are written and answered
            # without waiting behind a chunk (bench/bulk_bench.py measures it).
            await asyncio.sleep(BULK_PAUSE_S)
        return JSONResponse(
            BulkAnswer(action=body.action, matched=matched, changed=changed, chunks=chunks)
        )
