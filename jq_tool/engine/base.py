"""The Engine API: what the HTTP server, and anything else in-process, may ask of the queue,
and the configuration an engine runs with.

`Engine` is the one declaration of the API. `CommandEngine` (engine/command_engine.py) implements
it once over a state machine and *some* log; LocalEngine (the local WAL) and ClusterEngine (etcd)
only supply the log. Every mutating call turns into one command that is made durable before it
is applied and answered. Errors a client caused come back as `CommandRejected` carrying the state
machine's `ErrorCode`; the HTTP layer maps those to statuses in one table.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import msgspec
from prometheus_client.metrics_core import Metric

from jq_tool.core.model import ErrorCode, Job, JobState
from jq_tool.core.state_machine import StateMachineConfig, Stats


class CommandRejected(Exception):
    """The state machine refused the command (not found, stale lease, wrong state)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class EngineUnavailable(Exception):
    """The engine cannot accept writes: stopped, a fatal storage error, or no quorum."""


class StorageFull(EngineUnavailable):
    """The disk is full: the write was refused and nothing was acknowledged. Recoverable."""


class JobSpec(msgspec.Struct):
    """What a client asks to submit; the engine adds the id and the time."""

    payload: str = ""
    queue: str = "default"
    priority: int = 0
    max_retries: int = 3
    run_at: int | None = None  # epoch ms; None = now (+ delay_ms)
    idempotency_key: str | None = None
    delay_ms: int | None = None  # run_at = the engine's now + delay_ms, when run_at is None


class SubmitOutcome(msgspec.Struct):
    job_id: str | None = None
    duplicate: bool = False  # an idempotency key found an earlier job
    error: str | None = None  # per-entry validation error of a batch


class JobEvent(msgspec.Struct):
    """A state change, published on the event bus for /events."""

    job_id: str
    queue: str
    state: JobState
    previous: JobState | None
    attempts: int
    priority: int
    at: int  # the command's `now`


class Health(msgspec.Struct):
    ok: bool
    role: str  # "single", or "leader"/"follower" in cluster mode
    reason: str | None = None  # why writes are refused, when they are


@dataclass(frozen=True)
class EngineConfig:
    data_dir: Path
    lease_ms: int = 30_000  # default lease when a lease request names none
    tick_ms: int = 5_000  # longest pause between two looks at due leases and jobs
    retention_ms: int = 7 * 24 * 3600 * 1000  # finished jobs are kept this long
    snapshot_every: int = 100_000  # least records between two snapshots (see _snapshot_due)
    segment_bytes: int = 64 << 20
    machine: StateMachineConfig = field(default_factory=StateMachineConfig)


class Engine(Protocol):
    async def start(self) -> None:
        """Recover the state from the log, then serve. Raises when the log cannot be used (a
        locked or damaged WAL): the process must not serve then."""
        ...

    async def stop(self) -> None:
        """Drain: what was proposed is answered, a final snapshot is written, the log closed."""
        ...

    async def submit(self, spec: JobSpec) -> SubmitOutcome: ...

    async def submit_many(self, specs: list[JobSpec]) -> list[SubmitOutcome]:
        """All in one durable write; per-entry outcomes in input order."""
        ...

    async def lease(
        self,
        queue: str,
        *,
        max_jobs: int = 1,
        lease_ms: int | None = None,
        wait_ms: int = 0,
        give_up: Callable[[], Awaitable[object]] | None = None,
    ) -> list[Job]:
        """Up to max_jobs jobs. Tries at once; when none is runnable and wait_ms > 0, waits up
        to wait_ms for one (long poll), unless the awaitable give_up() returns completes first
        (the client went away, the server is draining): then []. give_up is only called when
        the request has to wait."""
        ...

    async def ack(self, job_id: str, *, lease_id: str | None, result: str | None) -> Job: ...

    async def fail(self, job_id: str, *, lease_id: str | None, error: str) -> Job: ...

    async def extend(self, job_id: str, *, lease_id: str | None, lease_ms: int | None) -> Job: ...

    async def cancel(self, job_id: str) -> Job: ...

    async def requeue(self, job_id: str) -> Job: ...

    async def get(self, job_id: str) -> Job | None: ...

    async def list(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """Newest first; returns the page and the cursor of the next page (None at the end)."""
        ...

    def stats(self) -> Stats: ...

    def health(self) -> Health:
        """Whether writes are accepted now, and if not why (a failed fsync, no etcd majority)."""
        ...

    def metrics(self) -> Iterator[Metric]:
        """Prometheus metric families about the log (durable appends, batches, snapshots)."""
        ...

    def subscribe(self) -> AsyncIterator[JobEvent]:
        """Job events from now on, until the consumer stops iterating. A slow consumer drops
        events rather than slowing the engine."""
        ...
