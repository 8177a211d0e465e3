"""The console's routes for SDK users (docs/api.md, "The operator's console"): the typed
answers of GET /workers, GET /queues/{name}/overview, GET /stats/history and POST /jobs/bulk, the
calls that ask for them, and the worker id a worker sends with its lease requests."""

from __future__ import annotations

import os
import socket
from datetime import datetime
from typing import Any

import msgspec

from jq_tool.sdk.calls import Call, _decoder, segment
from jq_tool.sdk.errors import NotFound


def new_worker_id() -> str:
    """`<hostname>:<pid>:<random>`: what a worker sends as `X-Jq-Worker` unless told."""
    host = "".join(c for c in socket.gethostname() if "!" <= c <= "~")[:64] or "host"
    return f"{host}:{os.getpid()}:{os.urandom(3).hex()}"


class Worker(msgspec.Struct, frozen=True):
    """A live worker: the leases it holds (every node agrees), when this node last saw it ask
    for work and for which queues (soft state of that node)."""

    worker_id: str
    leases: int = 0
    last_seen: datetime | None = None
    queues: list[str] = []


class WorkerPage(msgspec.Struct, frozen=True):
    workers: list[Worker]
    next_cursor: str | None = None


class ForgottenWorker(msgspec.Struct, frozen=True):
    """Whether the node had the worker in its list (soft state: when it last polled)."""

    worker_id: str
    forgotten: bool = False


class HeldLease(msgspec.Struct, frozen=True):
    job_id: str
    until: datetime
    attempt: int = 0
    worker: str | None = None
    since: datetime | None = None


class History(msgspec.Struct, frozen=True):
    """Per-minute counts, oldest first; the last one is the current (partial) minute."""

    start: datetime
    step_ms: int
    submitted: list[int]
    acked: list[int]
    failed: list[int]
    window: str = "1h"
    queue: str | None = None
    tracked: bool = True


class QueueDetail(msgspec.Struct, frozen=True):
    """One queue: counts by state, latency (age of the oldest runnable job), the last hour's
    throughput, and a page of the leases held now."""

    name: str
    throughput: History
    runnable: int = 0
    running: int = 0
    scheduled: int = 0
    retry: int = 0
    dead: int = 0
    acked: int = 0
    cancelled: int = 0
    total: int = 0
    waiting: int = 0
    paused: bool = False
    oldest_runnable_at: datetime | None = None
    latency_ms: int | None = None
    leases: list[HeldLease] = []
    next_cursor: str | None = None


class BulkResult(msgspec.Struct, frozen=True):
    """What a bulk action did: jobs matched, jobs changed, chunks (logged commands) written."""

    action: str
    matched: int
    changed: int
    chunks: int


class QueueNotFound(NotFound):
    """No queue of that name holds jobs."""


def workers_call(cursor: str | None, limit: int | None) -> Call[WorkerPage]:
    params = {k: v for k, v in {"cursor": cursor, "limit": limit}.items() if v is not None}
    return Call("GET", "/workers", _decoder(WorkerPage), params=params, retry=True)


def forget_worker_call(worker_id: str) -> Call[ForgottenWorker]:
    """DELETE /workers/{id}: a worker that stopped leaves GET /workers at once (idempotent)."""
    return Call("DELETE", f"/workers/{segment(worker_id)}", _decoder(ForgottenWorker), retry=True)


def queue_call(name: str, cursor: str | None, limit: int | None) -> Call[QueueDetail]:
    params = {k: v for k, v in {"cursor": cursor, "limit": limit}.items() if v is not None}
    return Call(
        "GET",
        f"/queues/{segment(name)}/overview",
        _decoder(QueueDetail),
        params=params,
        not_found=QueueNotFound,
        retry=True,
    )


def history_call(window: str, queue: str | None) -> Call[History]:
    params = {"window": window, **({"queue": queue} if queue is not None else {})}
    return Call("GET", "/stats/history", _decoder(History), params=params, retry=True)


def bulk_call(action: str, **filters: Any) -> Call[BulkResult]:
    """POST /jobs/bulk. Retried on a 503: chunks already done are not done twice (a job that
    left the state is skipped), so sending it again only does the rest."""
    body = {"action": action, **{k: v for k, v in filters.items() if v is not None}}
    if body.get("states") is not None:
        body["states"] = [str(s).upper() for s in body["states"]]
    return Call("POST", "/jobs/bulk", _decoder(BulkResult), body=body, retry=True)
