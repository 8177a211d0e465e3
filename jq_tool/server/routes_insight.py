"""The insight routes of docs/api.md (issue 19): why a job is where it is, dead letters grouped
by cause (and a whole group requeued or cancelled), a worker's progress report, and each
queue's latency.

Each route is: authorize (`jobs:read` to look; `jobs:ack` for a worker's progress, as for an
extend; `jobs:submit` to requeue or cancel a group, as for one job), decode the body into
`insight_wire.py`'s Structs, one engine call, answer. A group is settled in logged commands of
`chunk` jobs each (engine/insight.py); the answer says how many.
"""

from __future__ import annotations

from collections import defaultdict

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from jq_tool.auth import Scope
from jq_tool.core.model import DeadGroupAction
from jq_tool.engine.base import Engine
from jq_tool.server.auth_guard import Guard
from jq_tool.server.errors import not_found
from jq_tool.server.insight_wire import (
    DeadGroupActionBody,
    DeadGroupList,
    ProgressBody,
    dead_group_body,
    explanation_body,
    progress_body,
    settled_body,
)
from jq_tool.server.requests import decode, read_body
from jq_tool.server.wire import JSONResponse

_SMALL_BODY = 64 * 1024
MAX_GROUPS_LISTED = 1000  # GET /dead/groups lists the biggest groups, up to this many


class InsightRoutes:
    # A plain class, not a frozen dataclass: its six generated methods were ~0.8 ms of every
    # start (issue 20), and a route table needs none of them.
    __slots__ = ("engine", "guard", "counts")

    def __init__(self, engine: Engine, guard: Guard, counts: defaultdict[str, int]) -> None:
        self.engine = engine
        self.guard = guard
        self.counts = counts  # engine commands by type, for /metrics

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/jobs/{id}/explain", self.explain, methods=["GET"]),
            Route("/jobs/{id}/progress", self.progress, methods=["POST"]),
            Route("/dead/groups", self.dead_groups, methods=["GET"]),
            Route("/dead/groups/{fingerprint}/requeue", self.requeue_group, methods=["POST"]),
            Route("/dead/groups/{fingerprint}/cancel", self.cancel_group, methods=["POST"]),
        ]

    async def explain(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_READ)
        explanation = await self.engine.explain(request.path_params["id"])
        if explanation is None:
            raise not_found()
        return JSONResponse(explanation_body(explanation))

    async def progress(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_ACK)
        body = decode(await read_body(request, _SMALL_BODY), ProgressBody)
        self.counts["progress"] += 1
        job = await self.engine.progress(
            request.path_params["id"],
            lease_id=body.lease_id,
            percent=float(body.progress),
            note=body.note,
        )
        return JSONResponse({"job_id": job.id, "progress": progress_body(job.progress)})

    async def dead_groups(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_READ)
        groups = self.engine.dead_groups()
        return JSONResponse(
            DeadGroupList(
                [dead_group_body(g) for g in groups[:MAX_GROUPS_LISTED]],
                len(groups),
                sum(g.count for g in groups),
            )
        )

    async def requeue_group(self, request: Request) -> Response:
        return await self._settle(request, DeadGroupAction.REQUEUE)

    async def cancel_group(self, request: Request) -> Response:
        return await self._settle(request, DeadGroupAction.CANCEL)

    async def _settle(self, request: Request, action: DeadGroupAction) -> Response:
        await self.guard.require(request, Scope.JOBS_SUBMIT)
        body = decode(await read_body(request, _SMALL_BODY), DeadGroupActionBody)
        self.counts[f"dead_group_{action.value}"] += 1
        outcome = await self.engine.settle_dead_group(
            request.path_params["fingerprint"], action, chunk=body.chunk
        )
        return JSONResponse(settled_body(action, outcome))
