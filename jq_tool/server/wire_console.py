"""The console's requests and answers (docs/api.md, "The operator's console"): the workers
list, one queue's view, the per-minute history, the bulk actions. Declared once here, like
`validation.py` and `wire.py` for the other routes, and published by `openapi.py`."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from jq_tool.server.validation import QueueName, WorkerId
from jq_tool.server.wire import Time

Limit = Annotated[int, msgspec.Meta(ge=1, le=1000)]
SeqCursor = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,20}\Z")]


# --- queries ---------------------------------------------------------------------------------


class WorkerListQuery(msgspec.Struct):
    """GET /workers: `cursor` is the `next_cursor` of the page before (a worker id)."""

    cursor: WorkerId | None = None
    limit: Limit = 100


class QueueDetailQuery(msgspec.Struct):
    """GET /queues/{name}/overview: pages through the leases held (`cursor`: the `next_cursor`)."""

    cursor: SeqCursor | None = None
    limit: Limit = 100


class HistoryQuery(msgspec.Struct):
    """GET /stats/history: the last hour or day, of every queue or one."""

    window: Literal["1h", "24h"] = "1h"
    queue: QueueName | None = None


# --- answers ---------------------------------------------------------------------------------


class WorkerView(msgspec.Struct, kw_only=True):
    """A worker: its leases (from the log) and what this node saw of it (soft state)."""

    worker_id: str
    last_seen: Time | None
    queues: list[str]
    leases: int


class ForgottenWorker(msgspec.Struct):
    """DELETE /workers/{worker_id}: whether this node had it in its book (soft state)."""

    worker_id: str
    forgotten: bool


class WorkerPage(msgspec.Struct):
    """GET /workers: by worker id; `next_cursor` asks for the next page, null on the last."""

    workers: list[WorkerView]
    next_cursor: str | None


class HeldLease(msgspec.Struct, kw_only=True):
    """A lease held now: which job, which worker, since when, until when."""

    job_id: str
    worker: str | None
    attempt: int
    since: Time | None
    until: Time


class HistoryView(msgspec.Struct, kw_only=True):
    """Per-minute counts, oldest first; the last one is the current (partial) minute."""

    window: str
    queue: str | None
    tracked: bool  # False: this queue's counts are not kept (QUEUES_TRACKED), all zeros
    start: Time
    step_ms: int
    submitted: list[int]
    acked: list[int]
    failed: list[int]


class Throughput(msgspec.Struct, kw_only=True):
    """The last hour of one queue's per-minute counts (as GET /stats/history)."""

    start: Time
    step_ms: int
    submitted: list[int]
    acked: list[int]
    failed: list[int]


class QueueDetail(msgspec.Struct, kw_only=True):
    """GET /queues/{name}/overview: counts by state, latency, throughput and the leases held."""

    name: str
    runnable: int
    running: int
    scheduled: int
    retry: int
    dead: int
    acked: int
    cancelled: int
    total: int
    waiting: int  # WAITING for parents
    paused: bool  # the queue's flow settings (GET /queues/{name} has them all)
    oldest_runnable_at: Time | None
    latency_ms: int | None
    throughput: Throughput
    leases: list[HeldLease]
    next_cursor: str | None


# --- bulk actions ----------------------------------------------------------------------------


class BulkBody(msgspec.Struct):
    """POST /jobs/bulk: requeue the DEAD jobs, or cancel the waiting ones, matching a filter."""

    action: Literal["requeue", "cancel"]
    queue: QueueName | None = None
    error: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    id_prefix: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    # cancel only: which waiting jobs (all three when absent)
    states: list[Literal["READY", "RETRY", "SCHEDULED"]] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1_000_000


class BulkAnswer(msgspec.Struct, kw_only=True):
    """What a bulk action did: jobs that matched, jobs changed, chunks (log commands) written."""

    action: str
    matched: int
    changed: int
    chunks: int
