"""The answers of docs/api.md: every JSON body the server sends, as a msgspec Struct, and the
one way times look on the wire.

Times inside the queue are epoch milliseconds; on the wire they are RFC 3339 UTC strings with
milliseconds (`2026-11-28T10:00:00.123Z`), written by `rfc3339` and read by `parse_rfc3339`
(a submit's `run_at`), the server's only formatter and parser of times. The parser takes RFC
3339 date-times only (no dates alone, week dates, spaces for `T` or missing offsets) between
1970-01-01 and 9999-12-31 UTC; the formatter always writes four-digit years, holding a time
outside years 1-9999 (which only a data dir written before the parser's bounds can hold) at
the nearest end, so whatever the server writes, a client's RFC 3339 parser reads.

The Structs are what the routes encode and what `openapi.py` publishes as response schemas, so
a field is declared once. They are encoded with msgspec: the server's per-request budget is a
few microseconds, and stdlib json would spend most of it. A field that is sometimes absent from
an answer defaults to UNSET, which msgspec leaves out.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any, cast, overload

import msgspec
from msgspec import UNSET, UnsetType
from starlette.responses import Response

from jq_tool.auth import ApiKey, KeyType, Scope
from jq_tool.core.model import (
    Attempt,
    Job,
    JobProgress,
    JobState,
    MissedPolicy,
    OverlapPolicy,
    ParentFailure,
    Schedule,
)
from jq_tool.engine.base import attempt_history, split_error

_encoder = msgspec.json.Encoder()

Time = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})]


class JSONResponse(Response):
    """A JSON response encoded by msgspec (Starlette's own uses stdlib json)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


def encode_json(content: Any) -> bytes:
    return _encoder.encode(content)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
FIRST_RUN_AT_MS = 0  # 1970-01-01T00:00:00.000Z
LAST_RUN_AT_MS = (datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC) - _EPOCH) // _MS
_FIRST_WRITTEN_MS = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // _MS
_YEAR_1000_MS = (datetime(1000, 1, 1, tzinfo=UTC) - _EPOCH) // _MS
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)


@overload
def rfc3339(ms: int) -> str: ...
@overload
def rfc3339(ms: int | None) -> str | None: ...
def rfc3339(ms: int | None) -> str | None:
    global _last_second
    if ms is None:
        return None
    if _YEAR_1000_MS <= ms <= LAST_RUN_AT_MS:  # strftime's %Y has four digits here
        seconds, millis = divmod(ms, 1000)
        last = _last_second
        if last[0] != seconds:
            # Every lease and ack answer formats a time, mostly of the same second: strftime
            # once a second.
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            last = _last_second = (seconds, text)
        return f"{last[1]}.{millis:03d}Z"
    moment = _EPOCH + min(max(ms, _FIRST_WRITTEN_MS), LAST_RUN_AT_MS) * _MS
    return (
        f"{moment.year:04d}"
        + moment.strftime("-%m-%dT%H:%M:%S.")
        + f"{moment.microsecond // 1000:03d}Z"
    )


_last_second: tuple[int, str] = (-1, "")  # replaced whole, so a reader never sees half of it


def parse_rfc3339(text: str) -> int:
    """An RFC 3339 date-time (`2030-01-01T00:00:00Z`, `2030-01-01t00:00:00.5+02:00`) → epoch
    ms, fractions past the millisecond dropped. Raises ValueError saying what is wrong: not
    that form, not a real date or time, or not between 1970-01-01 and 9999-12-31 (the date
    written, and the instant in UTC)."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not an RFC 3339 date-time (e.g. 2030-01-01T09:30:00Z or "
            "2030-01-01T09:30:00.250+02:00)"
        )
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    date = (int(year), int(month), int(day))
    # The date as written is inside the range, and on its first and last day the offset may
    # not carry the instant out of it: one rule a JSON Schema pattern can state exactly
    # (validation.RUN_AT_PATTERN), and a little stricter than the instant alone.
    zero_offset = sign is None or (off_h, off_m) == ("00", "00")
    if not (1970, 1, 1) <= date <= (9999, 12, 31):
        raise ValueError(f"{text!r} is outside the years 1970 to 9999")
    if (date == (1970, 1, 1) and sign == "+" and not zero_offset) or (
        date == (9999, 12, 31) and sign == "-" and not zero_offset
    ):
        raise ValueError(
            f"{text!r}: on 1970-01-01 an offset must be Z or negative, on 9999-12-31 Z or "
            "positive (the time must fall between 1970-01-01T00:00:00Z and "
            "9999-12-31T23:59:59.999Z)"
        )
    try:
        offset = UTC
        if sign is not None:
            delta = timedelta(hours=int(off_h), minutes=int(off_m))
            if int(off_m) > 59:
                raise ValueError("offset minutes past 59")
            offset = timezone(-delta if sign == "-" else delta)
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=offset
        )
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid date-time: {exc}") from None
    ms = (moment - _EPOCH) // _MS + (int(fraction[:3].ljust(3, "0")) if fraction else 0)
    if not FIRST_RUN_AT_MS <= ms <= LAST_RUN_AT_MS:
        raise ValueError(f"{text!r} is outside 1970-01-01T00:00:00Z .. 9999-12-31T23:59:59.999Z")
    return ms


# --- errors ----------------------------------------------------------------------------------


class ErrorBody(msgspec.Struct):
    """Every refusal: a message, a stable code, and the field at fault when there is one,
    by its path in the body when it is nested (`acks[1].lease_id`, `lease_next.max_jobs`)."""

    error: str
    code: str
    field: str | UnsetType = UNSET


# --- jobs ------------------------------------------------------------------------------------


class SubmitAnswer(msgspec.Struct):
    """POST /jobs (201, or 200 with `duplicate` when the idempotency key was seen before), and
    each accepted entry of POST /jobs/batch (always with `duplicate`)."""

    job_id: str
    duplicate: bool | UnsetType = UNSET
    # A unique_key in scope found this earlier job (200); no new job was made.
    unique: bool | UnsetType = UNSET


class BatchRefusal(msgspec.Struct):
    """A refused entry of POST /jobs/batch: the others are submitted all the same. `code` is
    the one a POST /jobs of that entry would have been refused with."""

    error: str
    field: str | None
    code: str


class LeasedJob(msgspec.Struct, kw_only=True):
    """One job handed to a worker by POST /jobs/lease."""

    job_id: str
    payload: str
    lease_until: Time
    # The lease's length: a worker whose clock differs from the server's cannot tell it from
    # lease_until, and would extend the lease too late.
    lease_ms: int
    attempt: int
    lease_id: str
    queue: str
    priority: int
    max_retries: int


def leased_body(job: Job) -> LeasedJob:
    # A leased job has all three: the Lease command sets them.
    lease_until = cast(int, job.lease_until)
    return LeasedJob(
        job_id=job.id,
        payload=job.payload,
        lease_until=rfc3339(lease_until),
        lease_ms=lease_until - cast(int, job.leased_at),
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
    """GET /jobs/{id}; GET /jobs lists the same without the payload. A job a schedule made
    also names the schedule and the due time it ran for."""

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
    # The schedule whose run made the job, and the due time it ran for: only on such jobs.
    schedule: str | UnsetType = UNSET
    schedule_due_at: Time | UnsetType = UNSET
    # The parents it waits or waited for, and what a failed parent does: only on such jobs.
    depends_on: list[str] | UnsetType = UNSET
    on_parent_failure: ParentFailure | UnsetType = UNSET
    # A running attempt's last progress report (issue 19): only once its worker sent one.
    progress: ProgressView | UnsetType = UNSET

    # The current error split for a list column (core/attempts.split_error), the worker id
    # holding the current lease, and (GET /jobs/{id} only) the attempts kept.
    error_class: str | None = None
    error_message: str | None = None
    worker: str | None = None
    attempt_history: list[AttemptView] | UnsetType = UNSET


class ProgressView(msgspec.Struct):
    """A running attempt's last reported progress."""

    progress: float
    note: str
    at: Time


def _progress_view(progress: JobProgress) -> ProgressView:
    return ProgressView(progress.percent, progress.note, rfc3339(progress.at))


def progress_body(progress: JobProgress | None) -> ProgressView | None:
    return None if progress is None else _progress_view(progress)


class AttemptView(msgspec.Struct, kw_only=True):
    """One attempt of a job (GET /jobs/{id}'s `attempt_history`)."""

    attempt: int
    worker: str | None
    started_at: Time | None
    ended_at: Time | None
    outcome: str  # running, acked, failed, expired, released
    error_class: str | None
    error_message: str | None
    traceback: str | None  # the attempt's whole error text, at most 8 KiB


def attempt_body(attempt: Attempt) -> AttemptView:
    error_class, error_message = split_error(attempt.error)
    return AttemptView(
        attempt=attempt.attempt,
        worker=attempt.worker,
        started_at=rfc3339(attempt.started_at),
        ended_at=rfc3339(attempt.ended_at),
        outcome=attempt.outcome,
        error_class=error_class,
        error_message=error_message,
        traceback=attempt.error,
    )


def job_body(job: Job, *, with_payload: bool = True) -> JobView:
    run = job.scheduled_by
    error_class, error_message = split_error(job.result_error)
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
        schedule=UNSET if run is None else run.name,
        schedule_due_at=UNSET if run is None else rfc3339(run.due),
        depends_on=UNSET if job.depends_on is None else job.depends_on.parents,
        on_parent_failure=UNSET if job.depends_on is None else job.depends_on.on_parent_failure,
        progress=UNSET if job.progress is None else _progress_view(job.progress),
        error_class=error_class,
        error_message=error_message,
        worker=job.worker if job.state is JobState.RUNNING else None,
        attempt_history=(
            [attempt_body(a) for a in attempt_history(job)] if with_payload else UNSET
        ),
    )


class JobPage(msgspec.Struct):
    """GET /jobs: newest first; `next_cursor` asks for the next page, null on the last."""

    jobs: list[JobView]
    next_cursor: str | None


class HealthProblem(msgspec.Struct):
    """One condition that refuses work: `engine` (a failed fsync, a full disk, no etcd
    majority, shutting down) or `key_store` (unreachable: every request would be a 503)."""

    check: str
    reason: str


class ShardHealth(msgspec.Struct):
    """One shard's health in GET /health (sharded mode): whether its log takes writes."""

    ok: bool
    role: str
    reason: str | None = None


class Health(msgspec.Struct):
    """GET /health: 200 `ok` while the server takes work; 503 `unavailable` while submits
    would be refused, with every reason (`reason` joins them, `problems` lists them)."""

    status: str
    role: str
    reason: str | UnsetType = UNSET
    problems: list[HealthProblem] | UnsetType = UNSET
    # Conditions that do not refuse work but need a look: a queue past its max latency.
    warnings: list[HealthProblem] | UnsetType = UNSET
    # Sharded mode: each shard this node holds, by number: {ok, role, reason} (a shard down
    # does not make the node unhealthy: it still routes, docs/scaling.md §2.7).
    shards: dict[str, ShardHealth] | UnsetType = UNSET


class QueueView(msgspec.Struct, kw_only=True):
    """One queue holding jobs, with its counts by state (GET /queues)."""

    name: str
    runnable: int
    running: int
    scheduled: int
    retry: int
    dead: int
    acked: int
    cancelled: int
    total: int
    waiting: int = 0
    paused: bool = False
    concurrency: int = 0  # 0: no limit
    rate_limit: int = 0  # 0: no limit
    rate_period_ms: int = 0


class QueueSettingsView(msgspec.Struct, kw_only=True):
    """A queue's flow settings (GET/PUT /queues/{name}, pause, resume), with its job counts
    when it holds jobs. `rate_window_leases`: leases counted in the current rate window."""

    name: str
    paused: bool
    concurrency: int
    rate_limit: int
    rate_period_ms: int
    rate_window_leases: int
    counts: QueueView | None = None
    max_latency_ms: int = 0  # issue 19: the latency threshold (0: none)


class QueuePage(msgspec.Struct):
    """GET /queues: queues by name; `next_cursor` asks for the next page, null on the last."""

    queues: list[QueueView]
    next_cursor: str | None


class ScheduleView(msgspec.Struct, kw_only=True):
    """A schedule (periodic job): its definition as given, and where it stands. `next_fire_at`
    is null while paused or when the expression has no later time; `upcoming` (GET
    /schedules/{name} only) lists the next due times."""

    name: str
    cron: str
    timezone: str
    payload: str
    queue: str
    priority: int
    max_retries: int
    overlap: OverlapPolicy
    missed: MissedPolicy
    grace_ms: int
    paused: bool
    created_at: Time
    updated_at: Time
    next_fire_at: Time | None
    last_due_at: Time | None  # the last due time accounted for (run, skipped or missed)
    last_fired_at: Time | None  # when the ticker last fired it
    last_job_id: str | None  # the job of the last run that made one
    runs: int  # jobs made
    skipped_runs: int  # due times passed over by the overlap policy
    missed_runs: int  # due times reached more than grace_ms late
    version: int
    upcoming: list[Time] | UnsetType = UNSET


def schedule_body(schedule: Schedule, upcoming: list[int] | None = None) -> ScheduleView:
    spec = schedule.spec
    return ScheduleView(
        name=spec.name,
        cron=spec.cron,
        timezone=spec.timezone,
        payload=spec.payload,
        queue=spec.queue,
        priority=spec.priority,
        max_retries=spec.max_retries,
        overlap=spec.overlap,
        missed=spec.missed,
        grace_ms=spec.grace_ms,
        paused=schedule.paused,
        created_at=rfc3339(schedule.created_at),
        updated_at=rfc3339(schedule.updated_at),
        next_fire_at=None if schedule.paused else rfc3339(schedule.next_due),
        last_due_at=rfc3339(schedule.last_due),
        last_fired_at=rfc3339(schedule.last_fired_at),
        last_job_id=schedule.last_job,
        runs=schedule.runs,
        skipped_runs=schedule.skipped,
        missed_runs=schedule.missed,
        version=schedule.version,
        upcoming=UNSET if upcoming is None else [rfc3339(t) for t in upcoming],
    )


class SchedulePage(msgspec.Struct):
    """GET /schedules: schedules by name; `next_cursor` asks for the next page, null on the
    last."""

    schedules: list[ScheduleView]
    next_cursor: str | None


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
