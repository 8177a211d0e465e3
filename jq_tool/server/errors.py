"""The one table from failures to HTTP answers.

Every error the server gives a client goes through here: `ApiError` raised by a route (bad
field, bad key, missing scope, body too large), `CommandRejected` from the engine (the state
machine's ErrorCode), `InvalidSchedule` (400 naming `cron` or `timezone`), `EngineUnavailable`
(503 `unavailable`: refused before it reached the log, not done), `OutcomeUnknown` (504
`outcome_unknown`: it reached the log and nothing says whether it became durable, maybe done),
`StorageFull`, and `KeyStoreUnavailable` from the key store. Each becomes a JSON body
`{"error", "code"[, "field"]}` (wire.ErrorBody) with its status, so a route never builds an
error response by hand and a client's mistake is never a 500.
Refusals made before a request reaches the app (server/connections.py: a request head over its
limit, a connection over the cap) are rendered here too, as whole HTTP/1.1 responses.
"""

from __future__ import annotations

import http
import logging

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from jq_tool.auth import KeyStoreUnavailable
from jq_tool.core.model import ErrorCode
from jq_tool.engine.base import (
    CommandRejected,
    EngineUnavailable,
    InvalidSchedule,
    OutcomeUnknown,
    ResourceExhausted,
    ShardNotHeld,
    StorageFull,
)
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
UNSUPPORTED_ENCODING = "unsupported_encoding"  # a body in a coding not read (gzip, …)
OUTCOME_UNKNOWN = "outcome_unknown"
_OUTCOME_ADVICE = (
    "the write reached the log and may or may not have taken effect: retry with the same "
    "Idempotency-Key, or look the job up"
)
HEADER_TOO_LARGE = "header_too_large"
INVALID_HTTP = "invalid_http"  # bytes the HTTP/1.1 parser refused (server/connections.py)
TOO_MANY_CONNECTIONS = "too_many_connections"
TOO_MANY_STREAMS = "too_many_streams"
# Sharded mode: a call for a shard this node does not hold. Never shown to a client: the
# forwarding middleware (server/forward.py) replaces it with the answer of a node holding it.
FORWARD_STATUS = 421
FORWARD_HEADER = "jq-forward-to"  # "<shard> <url> <url>…"

# The state machine's refusals → status. ErrorCode values are already the wire codes.
_COMMAND_STATUS: dict[ErrorCode, int] = {
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.LEASE_MISMATCH: 409,
    ErrorCode.INVALID_STATE: 409,
    ErrorCode.INVALID: 400,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: 422,
    ErrorCode.TOO_MANY_QUEUES: 429,
    ErrorCode.SCHEDULE_EXISTS: 409,
    ErrorCode.TOO_MANY_SCHEDULES: 429,
    ErrorCode.UNKNOWN_PARENT: 422,
    # Sharded mode (issue 23). 421 Misdirected Request: inside the cluster only, the node
    # re-reads the placement and forwards; 503 while a queue is fenced for a move (seconds).
    ErrorCode.NOT_OWNER: 421,
    ErrorCode.QUEUE_MOVING: 503,
}
# Refusals that pass: the client may retry later (a queue cap frees up when a purge, every
# minute, empties a queue).
_COMMAND_HEADERS: dict[ErrorCode, dict[str, str]] = {
    ErrorCode.TOO_MANY_QUEUES: {"Retry-After": "60"},
    ErrorCode.QUEUE_MOVING: {"Retry-After": "1"},
}

_HTTP_CODES: dict[int, str] = {
    400: "bad_request",
    401: UNAUTHORIZED,
    403: FORBIDDEN,
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: PAYLOAD_TOO_LARGE,
    431: HEADER_TOO_LARGE,
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
        headers = _HEADERS_OF_STATUS.get(exc.status)
        return error_response(exc.status, exc.code, exc.message, exc.field, headers)
    if isinstance(exc, CommandRejected):
        status = _COMMAND_STATUS.get(exc.code, 400)
        return error_response(
            status, exc.code.value, exc.message, None, _COMMAND_HEADERS.get(exc.code)
        )
    if isinstance(exc, InvalidSchedule):  # a cron expression or time zone it cannot read
        return error_response(400, "invalid_field", exc.message, exc.field)
    if isinstance(exc, StorageFull):
        return error_response(507, "storage_full", f"storage full, nothing was written: {exc}")
    if isinstance(exc, OutcomeUnknown):
        return error_response(504, OUTCOME_UNKNOWN, f"{_OUTCOME_ADVICE} ({exc})", None, _RETRY)
    if isinstance(exc, ShardNotHeld):
        targets = " ".join([str(exc.shard), *exc.urls])
        return error_response(
            FORWARD_STATUS, "misdirected", str(exc), None, {FORWARD_HEADER: targets}
        )
    if isinstance(exc, ResourceExhausted):
        message = f"nothing was written, retry shortly: {exc}"
        return error_response(503, "resource_exhausted", message, None, _RETRY)
    if isinstance(exc, EngineUnavailable):
        return error_response(503, "unavailable", f"queue unavailable: {exc}", None, _RETRY)
    if isinstance(exc, KeyStoreUnavailable):
        return error_response(503, "unavailable", "key store unavailable", None, _RETRY)
    if isinstance(exc, ClientDisconnect):
        # Nobody is listening; answer something and keep the log for real problems.
        return error_response(400, "client_disconnected", "the client went away mid-request")
    if isinstance(exc, HTTPException):
        # Its headers matter: a 405 says which methods the path takes (`Allow`).
        code = _HTTP_CODES.get(exc.status_code, "error")
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, code, str(exc.detail), None, headers)
    log.error("unhandled error", exc_info=exc)
    return error_response(500, "internal", "internal server error")


_RETRY = {"Retry-After": "1"}
_AUTHENTICATE = {"WWW-Authenticate": "Bearer"}
# RFC 9110 §12.5.3: a 415 for a content coding says which codings are read, so that a client
# can tell it from a media-type problem.
_HEADERS_OF_STATUS = {401: _AUTHENTICATE, 415: {"Accept-Encoding": "identity"}, 503: _RETRY}


def closing_response(status: int, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 error response that closes the connection, for refusals made before a
    request reaches the app (server/connections.py). A 503 carries Retry-After like the rest."""
    body = encode_json(ErrorBody(message, code))
    head = [
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{name.lower()}: {value}" for name, value in _RETRY.items() if status == 503),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


async def handle_exception(request: Request, exc: Exception) -> Response:
    """Starlette exception handler: every error type of the table is registered to this. (A
    wrong method on a known path never reaches Starlette's own 405: server/routing.py answers
    it, with the `Allow` of every route of that path.)"""
    return to_response(exc)


HANDLED_EXCEPTIONS: tuple[type[Exception], ...] = (
    ApiError,
    CommandRejected,
    InvalidSchedule,
    EngineUnavailable,
    KeyStoreUnavailable,
    HTTPException,
    ClientDisconnect,
    Exception,
)
