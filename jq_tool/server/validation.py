"""What a valid request is: the msgspec Structs that request bodies (and the job list's query)
are decoded into, with every limit declared once, on the type.

The limits are msgspec `Meta` annotations, so one declaration serves twice: the decoder refuses
a value past a limit (`requests.decode` turns that into a 400 naming the field), and
`openapi.py` publishes the same Structs as the request schemas of /openapi.json through
`msgspec.json.schema_components`. A docstring here becomes the schema's description.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from jq_tool.auth import KeyType, Scope
from jq_tool.core.model import JobState

MAX_LEASE_WAIT_MS = 30_000
MAX_BATCH = 1000

QueueName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
LeaseMs = Annotated[int, msgspec.Meta(ge=1000, le=3_600_000)]
Priority = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
MaxRetries = Annotated[int, msgspec.Meta(ge=0, le=1000)]
DelayMs = Annotated[int, msgspec.Meta(ge=0, le=10 * 365 * 86_400_000)]
# The same limit for the `idempotency_key` field and the `Idempotency-Key` header.
IdempotencyKey = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
RFC3339Time = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})]


class SubmitBody(msgspec.Struct):
    """A job to submit. `delay_ms` or `run_at` (not both) schedules it for later."""

    payload: str = ""
    max_retries: MaxRetries = 3
    priority: Priority = 0
    delay_ms: DelayMs | None = None
    run_at: RFC3339Time | None = None  # read by wire.parse_rfc3339, the server's one parser
    queue: QueueName = "default"
    idempotency_key: IdempotencyKey | None = None


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
    """Settle a lease: `result` acks the job, a non-empty `result_error` fails the attempt."""

    result: str | None = None
    result_error: str | None = None
    lease_id: str | None = None


class AckEntry(msgspec.Struct):
    """One lease to settle in POST /jobs/ack: the body of POST /jobs/{id}/ack plus `job_id`."""

    job_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    result: str | None = None
    result_error: str | None = None
    lease_id: Annotated[str, msgspec.Meta(max_length=256)] | None = None


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


class KeyCreateBody(msgspec.Struct):
    """A new API key; `scopes` narrows the type's default scopes."""

    name: Label
    owner_id: Label
    type: KeyType
    scopes: list[Scope] | None = None


class ListQuery(msgspec.Struct):
    """The query of GET /jobs: `state` in any case (the route upper-cases it); an empty
    parameter counts as absent."""

    state: JobState | None = None
    queue: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 50
    cursor: str | None = None


class EmptyBody(msgspec.Struct):
    pass
