"""The answers of docs/api.md: every JSON body the server sends, as a msgspec Struct, and the
one way times look on the wire.

Times inside the queue are epoch milliseconds; on the wire they are RFC 3339 UTC strings with
milliseconds (`2026-11-28T10:00:00.123Z`), written by `rfc3339` and read by `parse_rfc3339`
(a submit's `run_at`), the server's only formatter and parser of times. The Structs are what
the routes encode and what `openapi.py` publishes as response schemas, so a field is declared
once. They are encoded with msgspec: the server's per-request budget is a few microseconds, and
stdlib json would spend most of it. A field that is sometimes absent from an answer defaults to
UNSET, which msgspec leaves out.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any, cast, overload

import msgspec
from msgspec import UNSET, UnsetType
from starlette.responses import Response

from jq_tool.auth import ApiKey, KeyType, Scope
from jq_tool.core.model import Job, JobState

_encoder = msgspec.json.Encoder()

Time = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})]


class JSONResponse(Response):
    """A JSON response encoded by msgspec (Starlette's own uses stdlib json)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


def encode_json(content: Any) -> bytes:
    return _encoder.encode(content)


@overload
def rfc3339(ms: int) -> str: ...
@overload
def rfc3339(ms: int | None) -> str | None: ...
def rfc3339(ms: int | None) -> str | None:
    global _last_second
    if ms is None:
        return None
    seconds, millis = divmod(ms, 1000)
    last = _last_second
    if last[0] != seconds:
        # Every lease and ack answer formats a time, mostly of the same second: strftime once.
        last = _last_second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{last[1]}.{millis:03d}Z"


_last_second: tuple[int, str] = (-1, "")  # replaced whole, so a reader never sees half of it


def parse_rfc3339(text: str) -> int:
    """RFC 3339 → epoch ms. A time without an offset is taken as UTC. Raises ValueError."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


# --- errors ----------------------------------------------------------------------------------


class ErrorBody(msgspec.Struct):
    """Every refusal: a message, a stable code, and the field at fault when there is one."""

    error: str
    code: str
    field: str | UnsetType = UNSET


# --- jobs ------------------------------------------------------------------------------------


class SubmitAnswer(msgspec.Struct):
    """POST /jobs (201, or 200 with `duplicate` when the idempotency key was seen before), and
    each accepted entry of POST /jobs/batch (always with `duplicate`)."""

    job_id: str
    duplicate: bool | UnsetType = UNSET


class BatchRefusal(msgspec.Struct):
    """A refused entry of POST /jobs/batch: the others are submitted all the same."""

    error: str
    field: str | None


class LeasedJob(msgspec.Struct, kw_only=True):
    """One job handed to a worker by POST /jobs/lease."""

    job_id: str
    payload: str
    lease_until: Time
    attempt: int
    lease_id: str
    queue: str
    priority: int
    max_retries: int


def leased_body(job: Job) -> LeasedJob:
    # A leased job has both: the Lease command sets them.
    return LeasedJob(
        job_id=job.id,
        payload=job.payload,
        lease_until=rfc3339(cast(int, job.lease_until)),
        attempt=job.attempts,
        lease_id=cast(str, job.lease_id),
        queue=job.queue,
        priority=job.priority,
        max_retries=job.max_retries,
    )


class SettledJob(msgspec.Struct):
    """A job's state after ack/fail, cancel or requeue."""

    job_id: str
    state: JobState


class AckResult(msgspec.Struct):
    """One entry of POST /jobs/ack, in input order: the job's `state` once settled, or why this
    entry was refused (`error`, `code` as in the error table, `field` when one is at fault).
    A refused entry does not stop the others."""

    job_id: str
    state: JobState | UnsetType = UNSET
    error: str | UnsetType = UNSET
    code: str | UnsetType = UNSET
    field: str | UnsetType = UNSET


class AckBatchAnswer(msgspec.Struct):
    """POST /jobs/ack: a result per entry, and the jobs `lease_next` leased (none without it)."""

    results: list[AckResult]
    leased: list[LeasedJob]


class ExtendedLease(msgspec.Struct):
    """POST /jobs/{id}/extend: when the lease now ends."""

    job_id: str
    lease_until: Time


def extended_body(job: Job) -> ExtendedLease:
    return ExtendedLease(job.id, rfc3339(cast(int, job.lease_until)))


class JobView(msgspec.Struct, kw_only=True):
    """GET /jobs/{id}; GET /jobs lists the same without the payload."""

    job_id: str
    state: JobState
    attempts: int
    max_retries: int
    created_at: Time
    result: str | None
    result_error: str | None
    queue: str
    priority: int
    run_at: Time
    lease_until: Time | None
    updated_at: Time | None
    idempotency_key: str | None
    payload: str | UnsetType = UNSET


def job_body(job: Job, *, with_payload: bool = True) -> JobView:
    return JobView(
        job_id=job.id,
        state=job.state,
        attempts=job.attempts,
        max_retries=job.max_retries,
        created_at=rfc3339(job.created_at),
        result=job.result,
        result_error=job.result_error,
        queue=job.queue,
        priority=job.priority,
        run_at=rfc3339(job.run_at),
        lease_until=rfc3339(job.lease_until),
        updated_at=rfc3339(job.updated_at) if job.updated_at else None,
        idempotency_key=job.idempotency_key,
        payload=job.payload if with_payload else UNSET,
    )


class JobPage(msgspec.Struct):
    """GET /jobs: newest first; `next_cursor` asks for the next page, null on the last."""

    jobs: list[JobView]
    next_cursor: str | None


class Health(msgspec.Struct):
    """GET /health: 200 when the engine accepts writes, 503 with the reason when not."""

    status: str
    role: str
    reason: str | None | UnsetType = UNSET


class StreamTicket(msgspec.Struct):
    """POST /events/ticket: a short-lived, read-only token for GET /events?ticket=."""

    ticket: str
    expires_at: Time


# --- keys ------------------------------------------------------------------------------------


class KeyView(msgspec.Struct, kw_only=True):
    """An API key as listed: never its secret."""

    key_id: str
    key_prefix: str
    name: str
    owner_id: str
    type: KeyType
    scopes: list[Scope]
    created_at: Time
    revoked_at: Time | None


class CreatedKey(KeyView, kw_only=True):
    """POST /admin/keys: the one answer that carries the secret (`key`)."""

    key: str


def key_body(key: ApiKey) -> KeyView:
    return KeyView(
        key_id=key.key_id,
        key_prefix=key.key_prefix,
        name=key.name,
        owner_id=key.owner_id,
        type=key.type,
        scopes=list(key.scopes),
        created_at=rfc3339(key.created_at),
        revoked_at=rfc3339(key.revoked_at),
    )


def created_key_body(key: ApiKey, secret: str) -> CreatedKey:
    return CreatedKey(key=secret, **msgspec.structs.asdict(key_body(key)))


class RevokedKey(msgspec.Struct):
    """DELETE /keys/{key}."""

    message: str
    key: str
    revoked_at: Time


def revoked_body(key: ApiKey) -> RevokedKey:
    # A key the store has just revoked carries its revocation time.
    return RevokedKey(
        message="Key revoked successfully",
        key=key.key_id,
        revoked_at=rfc3339(cast(int, key.revoked_at)),
    )
