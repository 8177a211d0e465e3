"""The schedule routes of docs/api.md (periodic jobs, issue 18): create, list, get, change,
delete, pause and resume a schedule. The firings themselves are the engine ticker's; a
schedule's jobs are ordinary jobs (GET /jobs/{id} names the schedule and the due time).

Each route is: authorize (`jobs:submit` to change schedules, since their runs submit jobs;
`jobs:read` to read them), read and decode the body into `validation.py`'s Structs, one engine
call, answer with `wire.py`'s ScheduleView. A cron expression or time zone the engine cannot
read comes back as `InvalidSchedule`, which `errors.py` turns into a 400 naming the field.
"""

from __future__ import annotations

from collections import defaultdict

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from jq_tool.auth import Scope
from jq_tool.core.model import ScheduleSpec
from jq_tool.engine.base import Engine, ScheduleChanges
from jq_tool.server.auth_guard import Guard
from jq_tool.server.errors import not_found
from jq_tool.server.requests import check_size, decode, decode_query, read_body
from jq_tool.server.validation import (
    EmptyBody,
    ScheduleBody,
    ScheduleChangeBody,
    ScheduleListQuery,
)
from jq_tool.server.wire import JSONResponse, SchedulePage, schedule_body
from jq_tool.settings import Settings

UPCOMING = 5  # due times listed by GET /schedules/{name}
_SMALL_BODY = 64 * 1024  # pause and resume take no body


class ScheduleRoutes(msgspec.Struct, frozen=True):
    # A Struct as JobRoutes is, not a frozen dataclass: a dataclass's six generated methods
    # were ~0.8 ms of every start (issue 20); a Struct's are made in C.
    engine: Engine
    guard: Guard
    settings: Settings
    counts: defaultdict[str, int]  # engine commands by type, for /metrics

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/schedules", self.create, methods=["POST"]),
            Route("/schedules", self.list_schedules, methods=["GET"]),
            Route("/schedules/{name}", self.get_schedule, methods=["GET"]),
            Route("/schedules/{name}", self.change, methods=["PATCH"]),
            Route("/schedules/{name}", self.delete, methods=["DELETE"]),
            Route("/schedules/{name}/pause", self.pause, methods=["POST"]),
            Route("/schedules/{name}/resume", self.resume, methods=["POST"]),
        ]

    async def create(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_SUBMIT)
        body = decode(await read_body(request, self.settings.max_body), ScheduleBody)
        check_size(body.payload, self.settings.max_payload, "payload")
        spec = ScheduleSpec(
            name=body.name,
            cron=body.cron,
            timezone=body.timezone,
            payload=body.payload,
            queue=body.queue,
            priority=body.priority,
            max_retries=body.max_retries,
            overlap=body.overlap,
            missed=body.missed,
            grace_ms=body.grace_ms,
        )
        self.counts["schedule_create"] += 1
        schedule, created = await self.engine.create_schedule(spec, paused=body.paused)
        # The same definition again (a retried create) answers 200 with the schedule.
        return JSONResponse(schedule_body(schedule), status_code=201 if created else 200)

    async def list_schedules(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_READ)
        query = decode_query(request.query_params, ScheduleListQuery)
        page = self.engine.schedule_page(query.cursor, query.limit + 1)
        more = len(page) > query.limit
        page = page[: query.limit]
        return JSONResponse(
            SchedulePage([schedule_body(s) for s in page], page[-1].spec.name if more else None)
        )

    async def get_schedule(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_READ)
        schedule = await self.engine.get_schedule(request.path_params["name"])
        if schedule is None:
            raise not_found("schedule not found")
        return JSONResponse(schedule_body(schedule, self.engine.schedule_times(schedule, UPCOMING)))

    async def change(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_SUBMIT)
        body = decode(await read_body(request, self.settings.max_body), ScheduleChangeBody)
        if body.payload is not None:
            check_size(body.payload, self.settings.max_payload, "payload")
        changes = ScheduleChanges(
            cron=body.cron,
            timezone=body.timezone,
            payload=body.payload,
            queue=body.queue,
            priority=body.priority,
            max_retries=body.max_retries,
            overlap=body.overlap,
            missed=body.missed,
            grace_ms=body.grace_ms,
            paused=body.paused,
        )
        return await self._update(request, changes)

    async def pause(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_SUBMIT)
        decode(await read_body(request, _SMALL_BODY), EmptyBody)
        return await self._update(request, ScheduleChanges(paused=True))

    async def resume(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_SUBMIT)
        decode(await read_body(request, _SMALL_BODY), EmptyBody)
        return await self._update(request, ScheduleChanges(paused=False))

    async def _update(self, request: Request, changes: ScheduleChanges) -> Response:
        self.counts["schedule_update"] += 1
        schedule = await self.engine.update_schedule(request.path_params["name"], changes)
        return JSONResponse(schedule_body(schedule))

    async def delete(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_SUBMIT)
        self.counts["schedule_delete"] += 1
        schedule = await self.engine.delete_schedule(request.path_params["name"])
        return JSONResponse(schedule_body(schedule))
