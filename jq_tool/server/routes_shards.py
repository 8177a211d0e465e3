"""Sharded mode's routes (docs/scaling.md §7): `GET /admin/shards` (the placement table as
this node sees it, and the health of the shards it holds) and `POST /admin/queues/{name}/move`
(move a queue to another shard, §2.6), admin keys only (the `keys:create` scope, which only
admin keys have); and `GET /health/shards/{id}` (§2.7), with no key like /health: 503 while
that shard has no quorum, so a probe can watch one shard (a node not holding it forwards).
Registered only in sharded mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from jq_tool.auth import Scope
from jq_tool.engine.base import MoveRefused, ShardAdmin
from jq_tool.server.auth_guard import Guard
from jq_tool.server.errors import ApiError
from jq_tool.server.requests import check_value, decode, read_body
from jq_tool.server.validation import QueueName
from jq_tool.server.wire import Health, JSONResponse

_SMALL_BODY = 64 * 1024


class MoveBody(msgspec.Struct, forbid_unknown_fields=True):
    to: int


@dataclass(frozen=True)
class ShardRoutes:
    engine: ShardAdmin
    guard: Guard

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/admin/shards", self.shards, methods=["GET"]),
            Route("/admin/queues/{name}/move", self.move, methods=["POST"]),
            Route("/health/shards/{shard}", self.shard_health, methods=["GET"]),
        ]

    async def shard_health(self, request: Request) -> Response:
        number = request.path_params["shard"]
        health = self.engine.shard_health(int(number)) if number.isdigit() else None
        if health is None:
            raise ApiError(404, "not_found", f"no shard {number}")
        if health.ok:
            return JSONResponse(Health("ok", health.role))
        reason = health.reason or "writes refused"
        body = Health("unavailable", health.role, reason)
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})

    async def shards(self, request: Request) -> Response:
        await self.guard.require(request, Scope.KEYS_CREATE)
        return JSONResponse(self.engine.placement_view())

    async def move(self, request: Request) -> Response:
        await self.guard.require(request, Scope.KEYS_CREATE)
        name = request.path_params["name"]
        check_value(name, QueueName, "name")
        body = decode(await read_body(request, _SMALL_BODY), MoveBody)
        shards = self.engine.placement_view()["shards"]
        if not isinstance(shards, dict) or str(body.to) not in shards:
            raise ApiError(400, "invalid_field", f"no shard {body.to}", "to")
        try:
            outcome = await self.engine.move_queue(name, body.to)
        except MoveRefused as exc:
            raise ApiError(409, "move_refused", str(exc)) from None
        return JSONResponse(outcome)
