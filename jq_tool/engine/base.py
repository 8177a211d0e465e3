"""The Engine API: what the HTTP server, and anything else in-process, may ask of the queue,
and the configuration an engine runs with.

`Engine` is the one declaration of the API. `CommandEngine` (engine/command_engine.py) implements
it once over a state machine and *some* log; LocalEngine (the local WAL) and ClusterEngine (etcd)
only supply the log. Every mutating call turns into one command that is made durable before it
is applied and answered. Errors a client caused come back as `CommandRejected` carrying the state
machine's `ErrorCode`; the HTTP layer maps those to statuses in one table. A write the log
refused before taking it raises `EngineUnavailable` (not done); one the log took without saying
whether it became durable raises `OutcomeUnknown` (maybe done). A schedule whose cron
expression or time zone cannot be used raises `InvalidSchedule`, naming the field.
"""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import msgspec

# The console's vocabulary, re-exported for the server (which imports engine.base, never
# core beyond core.model): a job's attempts and its error split, the search filter, the
# history's minute.
from jq_tool.core.attempts import attempt_history as attempt_history
from jq_tool.core.attempts import split_error as split_error
from jq_tool.core.dead_groups import DeadGroupSummary
from jq_tool.core.explain import Explanation
from jq_tool.core.history import MINUTE_MS as MINUTE_MS
from jq_tool.core.model import (
    DeadGroupAction,
    ErrorCode,
    Job,
    JobState,
    MissedPolicy,
    OverlapPolicy,
    ParentFailure,
    QueueSettings,
    Schedule,
    ScheduleSpec,
    UniqueScope,
)
from jq_tool.core.search import SCHEDULED as SCHEDULED
from jq_tool.core.search import JobFilter
from jq_tool.core.state_machine import QueueStats, ScheduleStats, StateMachineConfig, Stats

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Collection

    from prometheus_client.metrics_core import Metric


class CommandRejected(Exception):
    """The state machine refused the command (not found, stale lease, wrong state)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class EngineUnavailable(Exception):
    """The engine cannot accept writes: stopped, a fatal storage error, or no quorum."""


class OutcomeUnknown(EngineUnavailable):
    """The command was handed to the log and nothing says whether it became durable: an etcd
    put that timed out or lost its connection (a majority lost mid-write), a committed batch
    that did not come back through the watch in time, a local WAL append whose fdatasync (or
    the cut of a failed write) failed. It may take effect, now or after a restart. Not the same
    as EngineUnavailable, which is raised only for what was refused before it reached the log:
    a retry is safe only with the same idempotency key, or after looking the job up."""


class InvalidSchedule(ValueError):
    """A schedule the engine cannot use: a cron expression or time zone it cannot read, or an
    expression with no due time within 50 years. `field` is the request field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class ShardNotHeld(EngineUnavailable):
    """Sharded mode: the call belongs to a shard this node holds no replica of. The server
    forwards the request to one of `urls` (nodes that hold it, server/forward.py); with none,
    it is a 503 like any unavailable engine."""

    def __init__(self, shard: int, urls: list[str]) -> None:
        super().__init__(f"shard {shard} is not held by this node and no node holding it is known")
        self.shard = shard
        self.urls = urls


class MoveRefused(Exception):
    """Sharded mode: a queue move that cannot go on as asked (another move of it, a lost race,
    a queue never placed, a refusal from a shard). Nothing was left that a retry cannot finish."""


class ShardAdmin(Protocol):
    """Sharded mode's admin calls (engine/sharded.py's ShardedEngine), for its admin routes."""

    def placement_view(self) -> dict[str, object]:
        """The placement table as this node sees it and the health of the shards it holds."""
        ...

    async def move_queue(self, queue: str, to: int) -> object:
        """Move a queue to shard `to` (or finish a stopped move of it); the outcome, as a
        Struct. Raises MoveRefused, ShardNotHeld (the request is forwarded)."""
        ...

    def shard_health(self, shard: int) -> Health | None:
        """One shard's health as this node's replica of it sees it (ok: it has a quorum);
        None for no such shard. Raises ShardNotHeld (the request is forwarded)."""
        ...


class StorageFull(EngineUnavailable):
    """The disk is full: the write was refused and nothing was acknowledged. Recoverable."""


class ResourceExhausted(EngineUnavailable):
    """The process ran out of a resource (descriptors, memory) while writing: the write was
    refused, nothing was acknowledged, and writes resume by themselves once it returns."""


class JobSpec(msgspec.Struct):
    """What a client asks to submit; the engine adds the id and the time."""

    payload: str = ""
    queue: str = "default"
    priority: int = 0
    max_retries: int = 3
    run_at: int | None = None  # epoch ms; None = now (+ delay_ms)
    idempotency_key: str | None = None
    delay_ms: int | None = None  # run_at = the engine's now + delay_ms, when run_at is None
    owner: str = ""  # the submitting key's owner id: idempotency keys are that owner's own
    # Flow control (issue 18): a unique key and its scope, and parents. A depends_on entry
    # "$N" names the job of entry N (earlier) of the same batch; the engine resolves it.
    unique_key: str | None = None
    unique_scope: UniqueScope = UniqueScope.QUEUED
    unique_period_ms: int = 0
    depends_on: list[str] = []
    on_parent_failure: ParentFailure = ParentFailure.CANCEL

    def fingerprint(self) -> str:
        """What makes two submits the same request, for an idempotency key: a hash of every
        field that shapes the job (not the key, not the owner, which name the entry). Delay and
        run_at as asked, so a retried `delay_ms` submit is the same request a second later."""
        shape: tuple[object, ...] = (
            self.payload, self.queue, self.priority, self.max_retries, self.run_at, self.delay_ms
        )  # fmt: skip
        if self.unique_key is not None or self.depends_on:
            shape += (self.unique_key, self.unique_scope, self.unique_period_ms,
                      self.depends_on, self.on_parent_failure)  # fmt: skip
        canonical = _fingerprint_encoder.encode(shape)
        return hashlib.blake2b(canonical, digest_size=16).hexdigest()


_fingerprint_encoder = msgspec.msgpack.Encoder()


class ScheduleChanges(msgspec.Struct):
    """What a change of a schedule changes (PATCH /schedules/{name}, pause, resume): None
    leaves a field as it is."""

    cron: str | None = None
    timezone: str | None = None
    payload: str | None = None
    queue: str | None = None
    priority: int | None = None
    max_retries: int | None = None
    overlap: OverlapPolicy | None = None
    missed: MissedPolicy | None = None
    grace_ms: int | None = None
    paused: bool | None = None


class QueueChange(msgspec.Struct):
    """What PUT /queues/{name} (and pause, resume) changes: None leaves a setting as it is,
    0 removes a limit."""

    queue: str
    paused: bool | None = None
    concurrency: int | None = None
    rate_limit: int | None = None
    rate_period_ms: int | None = None
    max_latency_ms: int | None = None  # issue 19: a latency threshold (0 removes it)


class SubmitOutcome(msgspec.Struct):
    job_id: str | None = None
    duplicate: bool = False  # an idempotency key found an earlier job
    unique: bool = False  # a unique key in scope found an earlier job
    error: str | None = None  # why this entry was refused
    code: ErrorCode | None = None  # the state machine's code for that refusal


class Settlement(msgspec.Struct):
    """One lease to settle in `settle_many`: a non-empty `error` fails the attempt (RETRY with
    backoff, or DEAD), else the job is acked with `result`."""

    job_id: str
    lease_id: str | None = None
    result: str | None = None
    error: str | None = None
    retry: bool = True  # False: a failure that is final (DEAD at once)


class LeaseNext(msgspec.Struct):
    """What `settle_many` leases after settling: up to `max_jobs` jobs of `queue`, each for
    `lease_ms` (None: the engine's default)."""

    queue: str = "default"
    max_jobs: int = 1
    lease_ms: int | None = None
    worker: str | None = None  # the worker id kept on each leased job (X-Jq-Worker)


class JobEvent(msgspec.Struct):
    """A state change, published on the event bus for /events."""

    job_id: str
    queue: str
    state: JobState
    previous: JobState | None
    attempts: int
    priority: int
    at: int  # the command's `now`
    # When the job is due: READY with run_at after `at` is scheduled (the console shows it so).
    run_at: int | None = None
    worker: str | None = None  # the lease holder's worker id (RUNNING)
    error: str | None = None  # the current error (result_error), for the list's error column


class RetentionStats(msgspec.Struct):
    """The finished jobs held (issue 21): in memory up to the bounds, on disk beyond them."""

    finished_in_memory: int = 0  # ACKED and CANCELLED
    dead_in_memory: int = 0
    bytes_in_memory: int = 0  # the bound's estimate: content + overhead a job, finished + DEAD
    finished_on_disk: int = 0  # records in the history store
    history_bytes: int = 0  # the history store's files
    evicted: int = 0  # finished jobs moved to disk past the count or bytes bound
    dead_dropped: int = 0  # DEAD jobs dropped past the DEAD cap (their records go to disk)
    idempotency_keys: int = 0  # idempotency keys remembered


class Health(msgspec.Struct):
    ok: bool
    role: str  # "single", or "leader"/"follower" in cluster mode
    reason: str | None = None  # why writes are refused, when they are
    # Sharded mode: each shard this node holds, by its number (docs/scaling.md §2.7).
    shards: dict[str, Health] | None = None


class ClusterConfig(msgspec.Struct, frozen=True):
    """Where this node's etcd member is and who its peers are (cluster mode)."""

    node_id: str
    raft_addr: str  # this node's etcd peer address host:port
    peers: dict[str, str]  # every member's etcd peer address, this node included
    http_peers: dict[str, str]  # id -> jq HTTP base URL
    bootstrap: bool
    etcd_client_addr: str  # this node's etcd client address host:port
    etcd_endpoints: tuple[str, ...]  # an existing etcd cluster: start no member
    etcd_cluster_token: str

    def endpoints(self) -> list[str]:
        """etcd client URLs, this node's own member first."""
        if self.etcd_endpoints:
            return list(self.etcd_endpoints)
        own = f"http://{self.etcd_client_addr}"
        others = [
            f"http://{client_addr_for(addr)}"
            for node, addr in sorted(self.peers.items())
            if node != self.node_id
        ]
        return [own, *others]


def client_addr_for(peer_addr: str) -> str:
    """A member's etcd client address: its peer port + 1, on the same host (the seed named only
    Raft addresses, so the client port is derived from them)."""
    host, _, port = peer_addr.rpartition(":")
    return f"{host}:{int(port) + 1}"


class EngineConfig(msgspec.Struct, frozen=True):
    """What an engine runs with. `engine_config` (engine/factory.py) derives it from Settings,
    whose fields of the same names hold the defaults."""

    data_dir: Path
    lease_ms: int  # default lease when a lease request names none
    lease_check_interval_ms: int  # longest pause between two looks at due leases and jobs
    retention_ms: int  # finished jobs are kept this long
    snapshot_every: int  # least records between two snapshots (see _snapshot_due)
    segment_bytes: int  # WAL segment size
    cluster: ClusterConfig | None = None  # None: the local WAL; else etcd
    machine: StateMachineConfig = msgspec.field(default_factory=StateMachineConfig)
    idempotency_keep_ms: int = 24 * 3600 * 1000  # into each Submit command
    max_queues: int = 10_000  # into each Submit command; 0: no cap
    max_schedules: int = 10_000  # into each CreateSchedule command
    # Bounds on the finished jobs held in memory, into each Purge (core/retention.py);
    # beyond them the oldest go to the history store on disk. 0: no bound.
    max_finished: int = 100_000
    max_finished_bytes: int = 256 * 1024 * 1024
    max_dead: int = 100_000
    max_idempotency_keys: int = 200_000


# -- insight (issue 19) ------------------------------------------------------------------------


class DeadGroupOutcome(msgspec.Struct):
    """What settling a group did: how many jobs, in how many commands, and what is left of
    the group (jobs that died after the request began stay)."""

    settled: int
    commands: int
    remaining: int


class QueueLatency(msgspec.Struct):
    """A queue's recent time in queue (seconds, over the window; None: nothing leased in it),
    the age of its oldest runnable job, and its threshold."""

    leased: int = 0  # jobs leased in the window
    wait_p50_s: float | None = None
    wait_p95_s: float | None = None
    wait_p99_s: float | None = None
    drain_per_s: float = 0.0
    oldest_runnable_age_s: float | None = None
    max_latency_s: float | None = None  # the queue's threshold, when it has one


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
        worker: str | None = None,
    ) -> list[Job]:
        """Up to max_jobs jobs, each marked as held by `worker` (a worker id, or None). Tries
        at once; when none is runnable and wait_ms > 0, waits up to wait_ms for one (long
        poll), unless the awaitable give_up() returns completes first (the client went away,
        the server is draining): then []. give_up is only called when the request has to
        wait."""
        ...

    async def ack(self, job_id: str, *, lease_id: str | None, result: str | None) -> Job: ...

    async def fail(
        self, job_id: str, *, lease_id: str | None, error: str, retry: bool = True
    ) -> Job:
        """A failed attempt: RETRY with backoff, or DEAD when retries are spent; DEAD at once
        when `retry` is False (the failure is final)."""
        ...

    async def settle_many(
        self, settlements: list[Settlement], *, lease_next: LeaseNext | None = None
    ) -> tuple[list[Job | CommandRejected], list[Job]]:
        """Settle every lease (ack, or fail when its `error` is set) and, with `lease_next`,
        lease up to `lease_next.max_jobs` more jobs, all in one durable write. Returns each
        settlement's outcome in input order (the job afterwards, or why it was refused: one
        refusal does not stop the others) and the leased jobs. The lease does not depend on
        the outcomes (a worker's slot is free whether its ack landed or its lease was lost),
        and it never waits: nothing runnable now leases nothing."""
        ...

    async def extend(self, job_id: str, *, lease_id: str | None, lease_ms: int | None) -> Job: ...

    async def release(self, job_id: str, *, lease_id: str | None, delay_ms: int = 0) -> Job:
        """Give a lease back unfinished: the job is READY again after `delay_ms`, and the
        attempt its lease began is not counted."""
        ...

    async def cancel(self, job_id: str) -> Job: ...

    async def requeue(self, job_id: str) -> Job: ...

    async def get(self, job_id: str) -> Job | None: ...

    async def get_finished(self, job_id: str) -> Job | None:
        """A job the queue no longer holds in memory, from the history store (its final
        record), or None. The caller decides who may see it (Job.owner)."""
        ...

    def retention_stats(self) -> RetentionStats:
        """What finished jobs are held, in memory and on disk (docs/api.md /stats)."""
        ...

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

    def stats(self, top: int | None = None) -> Stats:
        """Counts and counters; with `top`, only the busiest `top` queues (queue_count still
        counts every queue holding jobs)."""
        ...

    def queue_page(self, after: str | None, limit: int) -> builtins.list[tuple[str, QueueStats]]:
        """Queues holding jobs by name, `limit` at most, after the name `after`."""
        ...

    def running(self, queue: str | None = None) -> builtins.list[Job]:
        """The RUNNING jobs (of `queue`, or all) by submission order: the leases held now,
        each with its worker id. O(running jobs). Read-only: callers must not change them."""
        ...

    def search(
        self,
        where: JobFilter,
        *,
        limit: int = 50,
        cursor: str | None = None,
        scan_limit: int | None = None,
    ) -> tuple[builtins.list[Job], str | None]:
        """Jobs matching `where`, newest first, examining at most `scan_limit` jobs (None: no
        bound); the cursor of the next page or None. Raises ValueError for a bad cursor."""
        ...

    async def catch_up(self) -> None:
        """Apply everything the log committed before this call, before a read that selects
        jobs to change (cluster mode: what other nodes wrote; a single node is always
        current). Raises EngineUnavailable when the log cannot be reached."""
        ...

    async def bulk(self, action: str, job_ids: builtins.list[str]) -> builtins.list[str]:
        """One chunk of a bulk action ("requeue" DEAD jobs, "cancel" waiting ones) as one
        logged command; returns the ids it changed (the others had left that state)."""
        ...

    def minute_counts(
        self, queue: str | None, minutes: int, last_minute: int
    ) -> tuple[bool, builtins.list[int], builtins.list[int], builtins.list[int]]:
        """Per-minute (tracked, submitted, acked, failed) ending with `last_minute`."""
        ...

    def oldest_runnable_since(self, queue: str) -> int | None:
        """The run_at of the queue's oldest runnable job (its latency is now minus this), or
        None when nothing is runnable. O(log n)."""
        ...

    def health(self) -> Health:
        """Whether writes are accepted now, and if not why (a failed fsync, no etcd majority)."""
        ...

    def watch_requests(self, requests: Collection[asyncio.Task[None]]) -> None:
        """The HTTP server's tasks of the requests it is answering now (uvicorn's, one each),
        live: an engine may tell by them a request that is alone from concurrent ones
        (engine/local.py). Engines that do not care ignore them."""
        return None

    # -- schedules (periodic jobs): the ticker fires them; these define them -------------------

    async def create_schedule(
        self, spec: ScheduleSpec, *, paused: bool = False
    ) -> tuple[Schedule, bool]:
        """Create a schedule; returns it and whether it is new (False: a schedule of that name
        with the same definition existed, e.g. a retried create). Raises InvalidSchedule,
        CommandRejected (SCHEDULE_EXISTS with another definition, TOO_MANY_SCHEDULES)."""
        ...

    async def update_schedule(self, name: str, changes: ScheduleChanges) -> Schedule:
        """Change a schedule's definition or pause it: a new cron expression or time zone, or
        a resume, starts from the next due time after now; otherwise its next due time stays.
        Raises InvalidSchedule, CommandRejected (NOT_FOUND)."""
        ...

    async def delete_schedule(self, name: str) -> Schedule:
        """Delete a schedule (the jobs it made stay). Raises CommandRejected (NOT_FOUND)."""
        ...

    async def get_schedule(self, name: str) -> Schedule | None: ...

    def schedule_page(self, after: str | None, limit: int) -> builtins.list[Schedule]:
        """Schedules by name, `limit` at most, after the name `after`."""
        ...

    def schedule_times(self, schedule: Schedule, count: int) -> builtins.list[int]:
        """The schedule's next `count` due times (epoch ms), from its next one; [] when paused
        or when it has none."""
        ...

    def schedule_stats(self) -> ScheduleStats:
        """How many schedules, how many paused, the next due time, runs/skips/misses."""
        ...

    # -- queue flow settings (issue 18): pause, concurrency and rate limits --------------------

    async def set_queue(self, change: QueueChange) -> QueueSettings:
        """Change a queue's flow settings (None fields stay). Raises CommandRejected (INVALID,
        TOO_MANY_QUEUES)."""
        ...

    def queue_settings(self, name: str) -> QueueSettings:
        """A queue's flow settings (defaults for a queue without any)."""
        ...

    def queue_settings_page(self) -> builtins.list[QueueSettings]:
        """Every queue with settings of its own, by name (without their rate window's lease
        times: `queue_settings(name)` has them)."""
        ...

    def queue_stats(self, name: str) -> QueueStats | None:
        """One queue's counts and settings, None when it holds no job."""
        ...

    def metrics(self) -> Iterator[Metric]:
        """Prometheus metric families about the log (durable appends, batches, snapshots)."""
        ...

    def subscribe(self) -> AsyncIterator[JobEvent]:
        """Job events from now on, until the consumer stops iterating. A slow consumer drops
        events rather than slowing the engine."""
        ...

    # -- insight (issue 19): explain, dead-letter groups, progress, latency ---------------------

    async def explain(self, job_id: str) -> Explanation | None:
        """Why the job is where it is (core/explain.py), or None for an unknown job."""
        ...

    def dead_groups(self) -> builtins.list[DeadGroupSummary]:
        """The DEAD jobs grouped by their last error's fingerprint, biggest first."""
        ...

    async def settle_dead_group(
        self, fingerprint: str, action: DeadGroupAction, *, chunk: int = 500
    ) -> DeadGroupOutcome:
        """Requeue or cancel every job of the group that died before now, `chunk` jobs per
        logged command. Raises CommandRejected (NOT_FOUND) for an unknown group."""
        ...

    async def progress(
        self, job_id: str, *, lease_id: str | None, percent: float, note: str
    ) -> Job:
        """Record a running attempt's progress. Raises CommandRejected like extend."""
        ...

    def queue_latency(self, queue: str) -> QueueLatency:
        """The queue's recent time in queue, drain rate and oldest runnable job's age."""
        ...
