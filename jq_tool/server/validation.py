"""What a valid request is: the msgspec Structs that request bodies (and the job list's query)
are decoded into, with every limit declared once, on the type.

The limits are msgspec `Meta` annotations, so one declaration serves twice: the decoder refuses
a value past a limit (`requests.decode` turns that into a 400 naming the field), and
`openapi.py` publishes the same Structs as the request schemas of /openapi.json through
`msgspec.json.schema_components`. A docstring here becomes the schema's description.
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from jq_tool.auth import LABEL_PATTERN, KeyType, Scope
from jq_tool.core.model import MissedPolicy, OverlapPolicy, ParentFailure, UniqueScope

MAX_LEASE_WAIT_MS = 30_000
MAX_BATCH = 1000
MAX_PARENTS = 1000  # depends_on entries of one job
ParentRef = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
UniquePeriodMs = Annotated[int, msgspec.Meta(ge=1, le=365 * 86_400_000)]

# The one queue name pattern, as docs/api.md and /openapi.json publish it. JSON Schema reads
# `$` the ECMAScript way (the very end); Python's `$` also matches before a final newline, which
# let "abc\n" through, so the decoder's pattern ends in `\Z` (openapi.py publishes it as `$`).
QUEUE_NAME_PATTERN = "^[A-Za-z0-9_.:-]{1,128}$"
QueueName = Annotated[str, msgspec.Meta(pattern=QUEUE_NAME_PATTERN.removesuffix("$") + r"\Z")]
QUEUE_NAME_RULE = "1-128 characters of A-Z, a-z, 0-9, '_', '.', ':', '-'"
LeaseMs = Annotated[int, msgspec.Meta(ge=1000, le=3_600_000)]
Priority = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
MaxRetries = Annotated[int, msgspec.Meta(ge=0, le=1000)]
DelayMs = Annotated[int, msgspec.Meta(ge=0, le=10 * 365 * 86_400_000)]
# The same limit for the `idempotency_key` field and the `Idempotency-Key` header.
IdempotencyKey = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
# The X-Jq-Worker header: a worker's id (the SDK sends hostname:pid:random).
WorkerId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[!-~]+\Z")]
# A key's name and owner id (auth's one rule: not blank, no control characters).
Label = Annotated[
    str, msgspec.Meta(min_length=1, max_length=200, pattern=LABEL_PATTERN.removesuffix("$") + r"\Z")
]
# Checked by wire.parse_rfc3339, the server's one parser of times: RFC 3339 only, between
# 1970-01-01 and 9999-12-31 UTC (400 naming the field otherwise). The published pattern says
# the same to a client: years 1971-9998 with any offset; 1970 and 9999 with an offset that
# keeps the instant inside (only the first and last day can leave it).
_TIME = r"[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?"
_ANY_OFFSET = r"([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
_DAY = r"(0[1-9]|[12][0-9]|3[01])"
RUN_AT_PATTERN = (
    r"^((197[1-9]|19[89][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])"
    rf"-(0[1-9]|1[0-2])-{_DAY}{_TIME}{_ANY_OFFSET}"
    rf"|1970-((0[2-9]|1[0-2])-{_DAY}|01-(0[2-9]|[12][0-9]|3[01])){_TIME}{_ANY_OFFSET}"
    rf"|1970-01-01{_TIME}([Zz]|-([01][0-9]|2[0-3]):[0-5][0-9]|\+00:00)"
    rf"|9999-((0[1-9]|1[01])-{_DAY}|12-([0-2][0-9]|30)){_TIME}{_ANY_OFFSET}"
    rf"|9999-12-31{_TIME}([Zz]|\+([01][0-9]|2[0-3]):[0-5][0-9]|-00:00))$"
)
RFC3339Time = Annotated[
    str,
    msgspec.Meta(
        max_length=64, extra_json_schema={"format": "date-time", "pattern": RUN_AT_PATTERN}
    ),
]
# The one message for a missing or empty payload (the original server's contract).
PAYLOAD_REQUIRED = "payload is required"


class SubmitBody(msgspec.Struct):
    """A job to submit: `payload` is required and not empty. `delay_ms` or `run_at` (not
    both) schedules it for later."""

    payload: Annotated[str, msgspec.Meta(min_length=1)]
    max_retries: MaxRetries = 3
    priority: Priority = 0
    delay_ms: DelayMs | None = None
    run_at: RFC3339Time | None = None  # read by wire.parse_rfc3339, the server's one parser
    queue: QueueName = "default"
    idempotency_key: IdempotencyKey | None = None
    # Flow control (issue 18): a unique key (per owner) and its scope; parents by job id, or
    # "$N" for entry N (earlier) of the same batch.
    unique_key: IdempotencyKey | None = None
    unique_scope: UniqueScope = UniqueScope.QUEUED
    unique_period_ms: UniquePeriodMs | None = None
    depends_on: Annotated[list[ParentRef], msgspec.Meta(max_length=MAX_PARENTS)] = []
    on_parent_failure: ParentFailure = ParentFailure.CANCEL


class BatchBody(msgspec.Struct):
    """Up to 1000 jobs submitted in one durable write; each entry is a SubmitRequest."""

    # Raw entries: each is decoded on its own so one bad entry does not sink the batch.
    jobs: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class LeaseBody(msgspec.Struct):
    """Which queue to lease from, how long to wait for a job, how many jobs, for how long."""

    queue: QueueName = "default"
    wait_ms: Annotated[int, msgspec.Meta(ge=0, le=MAX_LEASE_WAIT_MS)] = 0
    max_jobs: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None
    lease_ms: LeaseMs | None = None


class AckBody(msgspec.Struct):
    """Settle a lease: `result` acks the job, a non-empty `result_error` fails the attempt
    (RETRY with backoff, or DEAD when retries are spent). `"retry": false` with a
    `result_error` makes the failure final: DEAD at once, as the original Go server treated
    every `result_error`; without a `result_error` it changes nothing."""

    result: str | None = None
    result_error: str | None = None
    lease_id: str | None = None
    retry: bool = True


class AckEntry(msgspec.Struct):
    """One lease to settle in POST /jobs/ack: the body of POST /jobs/{id}/ack plus `job_id`."""

    job_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    result: str | None = None
    result_error: str | None = None
    lease_id: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    retry: bool = True  # as on POST /jobs/{id}/ack: False makes a failure final


class LeaseNextBody(msgspec.Struct):
    """What POST /jobs/ack leases in the same durable write, after settling: up to `max_jobs`
    jobs of `queue`, without waiting (none runnable now: none leased)."""

    queue: QueueName = "default"
    max_jobs: Annotated[int, msgspec.Meta(ge=1, le=100)] = 1
    lease_ms: LeaseMs | None = None


class AckBatchBody(msgspec.Struct):
    """Settle up to 1000 leases in one durable write (batch ack); with `lease_next`, lease the
    next jobs in the same write (ack-and-lease-next)."""

    acks: Annotated[list[AckEntry], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]
    lease_next: LeaseNextBody | None = None


class ExtendBody(msgspec.Struct):
    """Move a lease's end to now + `lease_ms` (default: the server's lease duration)."""

    lease_id: str | None = None
    lease_ms: LeaseMs | None = None
    # Issue 19: a progress report sent with the extension (as POST /jobs/{id}/progress).
    progress: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    note: Annotated[str, msgspec.Meta(max_length=200)] = ""


class ReleaseBody(msgspec.Struct):
    """Give a lease back unfinished: the job is READY again after `delay_ms` (default 0: at
    once), and the attempt its lease began is not counted."""

    lease_id: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    delay_ms: DelayMs = 0


class KeyCreateBody(msgspec.Struct):
    """A new API key; `scopes` narrows the type's default scopes."""

    name: Label
    owner_id: Label
    type: KeyType
    scopes: Annotated[list[Scope], msgspec.Meta(min_length=1)] | None = None


class ListState(enum.StrEnum):
    """A job state to list (GET /jobs), or SCHEDULED: READY with a future run_at."""

    READY = "READY"
    RUNNING = "RUNNING"
    ACKED = "ACKED"
    RETRY = "RETRY"
    DEAD = "DEAD"
    CANCELLED = "CANCELLED"
    WAITING = "WAITING"
    SCHEDULED = "SCHEDULED"


class ListQuery(msgspec.Struct):
    """The query of GET /jobs: `state` in any case (the route upper-cases it); an empty
    parameter counts as absent. `id_prefix` and `error` make it a bounded search."""

    state: ListState | None = None
    queue: QueueName | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 50
    cursor: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,20}\Z")] | None = None
    id_prefix: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    error: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


class QueueListQuery(msgspec.Struct):
    """The query of GET /queues: `cursor` is the `next_cursor` of the page before."""

    cursor: QueueName | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100


class EmptyBody(msgspec.Struct):
    pass


class QueueSettingsBody(msgspec.Struct):
    """PUT /queues/{name}: a queue's flow settings; a field left out stays as it is, 0 removes
    a limit. A rate limit counts leases in a sliding window of rate_period_ms."""

    paused: bool | None = None
    concurrency: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    rate_limit: Annotated[int, msgspec.Meta(ge=0, le=100_000)] | None = None
    rate_period_ms: Annotated[int, msgspec.Meta(ge=0, le=7 * 86_400_000)] | None = None
    # Issue 19: past it, /health warns and jq_queue_latency_breached is 1 (0 removes it).
    max_latency_ms: Annotated[int, msgspec.Meta(ge=0, le=7 * 86_400_000)] | None = None


# --- schedules (periodic jobs) -----------------------------------------------------------------

# A schedule's name follows the queue name rule (it goes into URLs and job views).
ScheduleName = QueueName
# A cron expression: 5 fields, 6 with seconds first, or an alias (@hourly); read by
# engine/cron.py, which refuses (400 on `cron`) what it cannot read.
CronExpression = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=256,
        description="5 fields (minute hour day month weekday), 6 with seconds first, or "
        "@yearly/@annually/@monthly/@weekly/@daily/@midnight/@hourly; read by the server, "
        "which answers 400 on `cron` for one it cannot read or that never comes",
    ),
]
# An IANA time zone name; one the tz database does not have is a 400 on `timezone`.
TIMEZONE_PATTERN = "^[A-Za-z0-9_+/-]{1,64}$"
TimeZoneName = Annotated[
    str,
    msgspec.Meta(
        pattern=TIMEZONE_PATTERN.removesuffix("$") + r"\Z",
        description="an IANA time zone name (UTC, Europe/Berlin); one the server's tz "
        "database does not have is a 400 on `timezone`",
    ),
]
GraceMs = Annotated[int, msgspec.Meta(ge=0, le=7 * 86_400_000)]
Payload = Annotated[str, msgspec.Meta(min_length=1)]


class ScheduleBody(msgspec.Struct):
    """A periodic job: `cron` read in `timezone` says when, the job fields (as in POST /jobs)
    say what each run submits; `overlap` and `missed` say what happens to a run while the
    previous one is unfinished, and to runs missed for longer than `grace_ms` (a downtime)."""

    name: ScheduleName
    cron: CronExpression
    payload: Payload
    timezone: TimeZoneName = "UTC"
    queue: QueueName = "default"
    priority: Priority = 0
    max_retries: MaxRetries = 3
    overlap: OverlapPolicy = OverlapPolicy.ALLOW
    missed: MissedPolicy = MissedPolicy.SKIP
    grace_ms: GraceMs = 60_000
    paused: bool = False


class ScheduleChangeBody(msgspec.Struct):
    """The fields of a schedule to change (PATCH); absent or null ones stay as they are. A new
    `cron` or `timezone` starts from the next due time after now."""

    cron: CronExpression | None = None
    timezone: TimeZoneName | None = None
    payload: Payload | None = None
    queue: QueueName | None = None
    priority: Priority | None = None
    max_retries: MaxRetries | None = None
    overlap: OverlapPolicy | None = None
    missed: MissedPolicy | None = None
    grace_ms: GraceMs | None = None
    paused: bool | None = None


class ScheduleListQuery(msgspec.Struct):
    """The query of GET /schedules: `cursor` is the `next_cursor` of the page before."""

    cursor: ScheduleName | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100
