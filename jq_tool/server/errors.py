"""The one table from failures to HTTP answers.

Every error the server gives a client goes through here: `ApiError` raised by a route (bad
field, bad key, missing scope, body too large), `CommandRejected` from the engine (the state
machine's ErrorCode), `EngineUnavailable` / `StorageFull`, and `KeyStoreUnavailable` from the
key store. Each becomes a JSON body `{"error", "code"[, "field"]}` (wire.ErrorBody) with its
status, so a route never builds an error response by hand and a client's mistake is never a 500.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from jq_tool.auth import KeyStoreUnavailable
from jq_tool.core.model import ErrorCode
from jq_tool.engine.base import CommandRejected, EngineUnavailable, StorageFull
from jq_tool.server.wire import ErrorBody, encode_json

log = logging.getLogger("jq.server")


class ApiError(Exception):
    """An answer to a request that went wrong, raised anywhere under a route."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def invalid_field(field: str, message: str) -> ApiError:
    return ApiError(400, "invalid_field", message, field)


def not_found(message: str = "job not found") -> ApiError:
    return ApiError(404, "not_found", message)


UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
PAYLOAD_TOO_LARGE = "payload_too_large"

# The state machine's refusals → status. ErrorCode values are already the wire codes.
_COMMAND_STATUS: dict[ErrorCode, int] = {
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.LEASE_MISMATCH: 409,
    ErrorCode.INVALID_STATE: 409,
    ErrorCode.INVALID: 400,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: 422,
    ErrorCode.TOO_MANY_QUEUES: 429,
}
# Refusals that pass: the client may retry later (a queue cap frees up when a purge, every
# minute, empties a queue).
_COMMAND_HEADERS: dict[ErrorCode, dict[str, str]] = {
    ErrorCode.TOO_MANY_QUEUES: {"Retry-After": "60"},
}

_HTTP_CODES: dict[int, str] = {
    400: "bad_request",
    401: UNAUTHORIZED,
    403: FORBIDDEN,
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: PAYLOAD_TOO_LARGE,
    503: "unavailable",
}


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = ErrorBody(message, code) if field is None else ErrorBody(message, code, field)
    return Response(encode_json(body), status, headers, media_type="application/json")


def to_response(exc: BaseException) -> Response:
    """The table. Anything not listed is our bug: logged, and a 500 without internals."""
    if isinstance(exc, ApiError):
        headers = _AUTHENTICATE if exc.status == 401 else _RETRY if exc.status == 503 else None
        return error_response(exc.status, exc.code, exc.message, exc.field, headers)
    if isinstance(exc, CommandRejected):
        status = _COMMAND_STATUS.get(exc.code, 400)
        return error_response(
            status, exc.code.value, exc.message, None, _COMMAND_HEADERS.get(exc.code)
        )
    if isinstance(exc, StorageFull):
        return error_response(507, "storage_full", f"storage full, nothing was written: {exc}")
    if isinstance(exc, EngineUnavailable):
        return error_response(503, "unavailable", f"queue unavailable: {exc}", None, _RETRY)
    if isinstance(exc, KeyStoreUnavailable):
        return error_response(503, "unavailable", "key store unavailable", None, _RETRY)
    if isinstance(exc, ClientDisconnect):
        # Nobody is listening; answer something and keep the log for real problems.
        return error_response(400, "client_disconnected", "the client went away mid-request")
    if isinstance(exc, HTTPException):
        code = _HTTP_CODES.get(exc.status_code, "error")
        # Starlette's own headers, e.g. the `Allow` of a 405.
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, code, str(exc.detail), None, headers)
    log.error("unhandled error", exc_info=exc)
    return error_response(500, "internal", "internal server error")


_RETRY = {"Retry-After": "1"}
_AUTHENTICATE = {"WWW-Authenticate": "Bearer"}


async def handle_exception(request: Request, exc: Exception) -> Response:
    """Starlette exception handler: every error type of the table is registered to this."""
    if isinstance(exc, HTTPException) and exc.status_code == 405:
        # Starlette's Allow names the methods of the first route matching the path only; a
        # path served by two routes (GET and POST /jobs) allows both.
        exc = HTTPException(405, exc.detail, {"Allow": _allowed(request)})
    return to_response(exc)


def _allowed(request: Request) -> str:
    """The methods of the routes the path names: those written exactly as the path when there
    are any (/jobs/lease), else those whose template matches it (/jobs/{id})."""
    path = request.scope["path"]
    routes = [
        route
        for route in request.app.routes
        if isinstance(route, Route) and route.methods and route.path_regex.match(path)
    ]
    exact = [route for route in routes if route.path == path]
    methods: set[str] = set()
    for route in exact or routes:
        methods |= route.methods or set()
    return ", ".join(sorted(methods))


HANDLED_EXCEPTIONS: tuple[type[Exception], ...] = (
    ApiError,
    CommandRejected,
    EngineUnavailable,
    KeyStoreUnavailable,
    HTTPException,
    ClientDisconnect,
    Exception,
)
