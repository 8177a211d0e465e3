"""The API key routes of docs/api.md: create and list (admin), list own, revoke.

A secret leaves the server exactly once, in the answer to POST /admin/keys (`wire.CreatedKey`);
every other answer is a `wire.KeyView`, which has no field for it. A key is revoked by its
public id (`key_id`, shown in every listing), never by its secret: a URL ends up in proxy and
browser logs, so a secret in the path is refused with a 400 that says to use the id. Who may
revoke what: a key with `keys:revoke` (an admin) any key; any other key with `keys:read` the
keys of its own owner; and an admin key only a key with `keys:create`. Revocation through the
store also drops the key from every server's auth cache and ends its /events streams.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from jq_tool.auth import KeyFieldError, KeyStore, KeyType, Scope, is_key_id, looks_like_secret
from jq_tool.server.auth_guard import Guard
from jq_tool.server.errors import FORBIDDEN, ApiError, invalid_field, not_found
from jq_tool.server.requests import decode, read_body
from jq_tool.server.validation import KeyCreateBody
from jq_tool.server.wire import JSONResponse, created_key_body, key_body, revoked_body

_KEY_BODY_LIMIT = 64 * 1024


class KeyRoutes:
    # A plain class, not a frozen dataclass: its six generated methods were ~0.8 ms of every
    # start (issue 20), and a route table needs none of them.
    __slots__ = ("keystore", "guard")

    def __init__(self, keystore: KeyStore, guard: Guard) -> None:
        self.keystore = keystore
        self.guard = guard

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/admin/keys", self.create, methods=["POST"]),
            Route("/admin/keys", self.list_all, methods=["GET"]),
            Route("/keys", self.list_own, methods=["GET"]),
            Route("/keys/{key}", self.revoke, methods=["DELETE"]),
        ]

    async def create(self, request: Request) -> Response:
        await self.guard.require(request, Scope.KEYS_CREATE)
        body = decode(await read_body(request, _KEY_BODY_LIMIT), KeyCreateBody)
        try:
            key, secret = await self.keystore.create(
                name=body.name, owner_id=body.owner_id, type=body.type, scopes=body.scopes
            )
        except KeyFieldError as exc:
            raise invalid_field(exc.field, str(exc)) from None
        return JSONResponse(created_key_body(key, secret), status_code=201)

    async def list_all(self, request: Request) -> Response:
        await self.guard.require(request, Scope.KEYS_CREATE)
        return JSONResponse([key_body(key) for key in await self.keystore.list_all()])

    async def list_own(self, request: Request) -> Response:
        caller = await self.guard.require(request, Scope.KEYS_READ)
        keys = await self.keystore.list_owner(caller.owner_id)
        return JSONResponse([key_body(key) for key in keys])

    async def revoke(self, request: Request) -> Response:
        caller = await self.guard.authenticate(request)
        key_id = request.path_params["key"]
        if not is_key_id(key_id):
            if looks_like_secret(key_id):
                raise invalid_field(
                    "key",
                    "that is a secret key, not a key id: revoke a key by its key_id (GET /keys "
                    "and `jq keys list` show it); a secret must never be put in a URL",
                )
            raise not_found("key not found")
        if not (caller.has(Scope.KEYS_REVOKE) or caller.has(Scope.KEYS_READ)):
            raise ApiError(403, FORBIDDEN, "revoking a key needs the scope 'keys:read'")
        target = await self.keystore.get(key_id)
        if target is None:
            raise not_found("key not found")
        if not caller.has(Scope.KEYS_REVOKE) and caller.owner_id != target.owner_id:
            raise ApiError(403, FORBIDDEN, "a key may only revoke keys of its own owner")
        if target.type is KeyType.ADMIN and not caller.has(Scope.KEYS_CREATE):
            raise ApiError(
                403, FORBIDDEN, "only a key with the scope 'keys:create' may revoke an admin key"
            )
        revoked = await self.keystore.revoke(target.key_id)
        if revoked is None:
            raise not_found("key not found")
        return JSONResponse(revoked_body(revoked))
