"""The SDK's typed exceptions and the one table that maps an HTTP answer, or the lack of one, to
them.

Every error the server can return (docs/api.md: status + machine `code`) becomes exactly one
exception class here, so callers catch `LeaseLost` or `JobNotFound` instead of inspecting status
codes. A request the server refused before doing anything (503 `unavailable`), or that never
reached it (connection refused), is `ServerUnavailable`: not done, retry later. A write whose
outcome is unknown (504 `outcome_unknown`: it reached the server's log and nothing says whether
it became durable; or the connection broke after the request was sent) is `OutcomeUnknown`, a
kind of `ServerUnavailable` that says "maybe done": retry it only with the same idempotency key
(the SDK's submits carry one and reuse it), or look the job up. A server certificate that TLS
verification refused is `TlsError`, which no retry can help.
"""

from __future__ import annotations

from typing import Any

from jq_tool.sdk.wire import AnswerLost, CertificateRefused, TransportFailure


class JqError(Exception):
    """Base of every error the SDK raises for a request the server (or the network) refused."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.field = field

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        status = f"{self.status} " if self.status is not None else ""
        code = f"{self.code}: " if self.code else ""
        return f"{status}{code}{self.message}{where}"


class BadRequest(JqError):
    """400: the request body or a field is invalid; `field` names it when the server did."""


class Unauthorized(JqError):
    """401: no key, an unknown key or a revoked key."""


class Forbidden(JqError):
    """403: the key lacks the scope the route needs."""


class NotFound(JqError):
    """404: no such job or key."""


class JobNotFound(NotFound):
    """404 on a job route: no job with that id (it may have been purged)."""


class KeyNotFound(NotFound):
    """404 on a key route: no key with that id."""


class ScheduleNotFound(NotFound):
    """404 on a schedule route: no schedule of that name."""


class Conflict(JqError):
    """409: the job's state or lease does not allow the request."""


class LeaseLost(Conflict):
    """409 lease_mismatch: the lease named is no longer the job's current lease (it expired and
    the job was leased again, or it was settled). The attempt must not be retried."""


class InvalidState(Conflict):
    """409 invalid_state: e.g. ack of a job that is not RUNNING, cancel of a RUNNING job, a rate
    limit on a queue with no rate period."""


class ScheduleExists(Conflict):
    """409 schedule_exists: a schedule of that name exists with another definition; change it
    (`update_schedule`) or delete it first. The same definition again is not an error."""


class IdempotencyKeyReused(BadRequest):
    """422 idempotency_key_reused: this owner's idempotency key was already used for a
    different request (another payload, queue, priority, ...). Use a new key for a new job."""


class UnknownParent(BadRequest):
    """422 unknown_parent: a depends_on entry is not a job of this key's owner (it does not
    exist, was purged, or is another owner's)."""


class TooManyQueues(JqError):
    """429 too_many_queues: the server's cap on queues holding jobs (--max-queues) is reached;
    submit to an existing queue, or retry once queues have been emptied and purged."""


class TooManySchedules(JqError):
    """429 too_many_schedules: the server holds as many schedules as it allows (10,000);
    delete one first."""


class PayloadTooLarge(JqError):
    """413: the body or payload is over the server's --max-payload."""


class ServerUnavailable(JqError):
    """503 `unavailable`, or the server could not be reached: the request was refused before
    anything was done; retry later. (Its subclass `OutcomeUnknown` says "maybe done".)"""


class OutcomeUnknown(ServerUnavailable):
    """504 `outcome_unknown`, or the connection broke after a write was sent: the write may or
    may not have taken effect. Retry it with the same idempotency key (a submit then answers
    the job it made, if it made one), or look the job up. A submit that gives up with this
    error carries its key in `idempotency_key`; catch this before `ServerUnavailable`."""

    idempotency_key: str | None = None


class TlsError(JqError):
    """TLS verification refused the server's certificate or host name: not retried. Trust the
    server's CA with the client's `verify="/path/ca.pem"` (or `SSL_CERT_FILE`)."""


class StorageFull(JqError):
    """507: the server's disk is full; nothing was written. Retry later."""


class WaitTimeout(JqError, TimeoutError):
    """wait_for_completion gave up before the job reached a finished state."""


# The one mapping table: (status, code) first, then status alone.
_BY_STATUS_AND_CODE: dict[tuple[int, str], type[JqError]] = {
    (409, "lease_mismatch"): LeaseLost,
    (409, "invalid_state"): InvalidState,
    (422, "idempotency_key_reused"): IdempotencyKeyReused,
    (409, "schedule_exists"): ScheduleExists,
    (429, "too_many_schedules"): TooManySchedules,
    (422, "unknown_parent"): UnknownParent,
}
_BY_STATUS: dict[int, type[JqError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: BadRequest,
    429: TooManyQueues,
    503: ServerUnavailable,
    504: OutcomeUnknown,  # ours, and a proxy's gateway timeout: both mean "maybe done"
    507: StorageFull,
}


def error_for_response(status: int, body: Any, *, not_found: type[NotFound] = NotFound) -> JqError:
    """The exception for an error answer; `not_found` narrows a 404 to the route's resource."""
    message = f"HTTP {status}"
    code: str | None = None
    field: str | None = None
    if isinstance(body, dict):
        message = str(body.get("error") or body.get("message") or message)
        code = body.get("code") if isinstance(body.get("code"), str) else None
        field = body.get("field") if isinstance(body.get("field"), str) else None
    elif isinstance(body, str) and body.strip():
        message = body.strip()[:500]
    cls = _BY_STATUS_AND_CODE.get((status, code or ""))
    if cls is None:
        cls = not_found if status == 404 else _BY_STATUS.get(status)
    if cls is None:
        cls = ServerUnavailable if status >= 500 else JqError
    return cls(message, status=status, code=code, field=field)


def error_for_failure(what: str, failure: TransportFailure, *, write: bool = False) -> JqError:
    """The exception for a request that got no answer (`what` names the request; `write`: it
    may change something, so an answer lost after sending it leaves the outcome unknown)."""
    message = f"{what}: {type(failure).__name__}: {failure or 'no answer'}"
    if isinstance(failure, CertificateRefused):
        return TlsError(message)
    if write and isinstance(failure, AnswerLost):
        return OutcomeUnknown(message)
    return ServerUnavailable(message)
