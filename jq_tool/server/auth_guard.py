"""Who is calling, and may they: Bearer key → ApiKey through the key store, then a scope check.

The key store caches lookups in process, so a request normally pays no Redis round trip here.
A missing, unknown or revoked key is a 401; a key without the route's scope is a 403; a key
store that cannot answer is a 503 (raised by the store as KeyStoreUnavailable), never a 401,
so an outage never looks like a revoked key to a worker.
"""

from __future__ import annotations

from starlette.requests import Request

from jq_tool.auth import ApiKey, KeyStore, Scope
from jq_tool.server.errors import FORBIDDEN, UNAUTHORIZED, ApiError
from jq_tool.server.requests import header

# The messages, not shared exception objects: each refusal raises a new ApiError. Python adds
# every raise's frames to the traceback an exception object carries, so one object raised again
# and again kept every refused request (its frames, its body) alive: ~5 KB a 401.
_MISSING = "missing API key: send 'Authorization: Bearer <key>'"
# Never quotes the header: a bare key sent without its scheme would be echoed back.
_NOT_BEARER = "the Authorization header is not 'Bearer <key>' (one space between them)"
_UNKNOWN = "invalid or revoked API key"


def bearer_token(request: Request) -> str | None:
    """The key of `Authorization: Bearer <key>`, None without the header; a header of another
    form (`Basic …`, `Token …`, a bare key, a tab for the space) is a 401 saying so, not
    "missing"."""
    authorization = header(request, b"authorization")
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, UNAUTHORIZED, _NOT_BEARER)
    return token


class Guard:
    """Authenticates requests against one key store."""

    def __init__(self, keystore: KeyStore) -> None:
        self.keystore = keystore

    async def authenticate(self, request: Request) -> ApiKey:
        token = bearer_token(request)
        if token is None:
            raise ApiError(401, UNAUTHORIZED, _MISSING)
        key = await self.keystore.authenticate(token)
        if key is None:
            raise ApiError(401, UNAUTHORIZED, _UNKNOWN)
        return key

    async def require(self, request: Request, scope: Scope) -> ApiKey:
        key = await self.authenticate(request)
        require_scope(key, scope)
        return key


def require_scope(key: ApiKey, scope: Scope) -> None:
    """A second scope of a key already authenticated (a route that needs two, such as
    ack-and-lease-next): a 403 like `Guard.require`'s, without hashing the secret again."""
    if not key.has(scope):
        raise ApiError(403, FORBIDDEN, f"this key lacks the scope {scope.value!r}")
