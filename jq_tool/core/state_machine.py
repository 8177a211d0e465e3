"""The deterministic queue state machine: the only code that changes queue state.

`StateMachine.apply(command)` takes the commands of `jq_tool.core.model` in log order and returns
their results; `snapshot()` / `restore()` turn the whole state into msgpack bytes and back. It
never reads a clock, a random source or the environment, and never iterates anything in an order
that depends on hashing, so two machines fed the same log end byte-identical. It also owns the
indexes that keep every command O(log n): a per-queue heap of runnable jobs in lease order, a
per-queue heap of RETRY jobs by run_at, one heap of scheduled (future run_at) READY jobs, one heap
of leases by lease_until and one of finished jobs by finish time. The heaps use lazy deletion: an
entry whose job moved on is skipped when it reaches the top. Indexes are derived data: snapshots
hold jobs, counters, the clock and the idempotency map, and restore rebuilds the rest.

Idempotency keys are remembered per (owner, key) with the fingerprint of the request that
created the job, for the keep time the Submit command carries: the same key and request answers
the first job (duplicate), the same key with another request is refused, and another owner's
key of the same name is another key. A queue index is dropped when a purge empties it, so the
number of queues holding jobs (capped by Submit.max_queues) is the size of one dict.

Schedules (periodic jobs) are kept by name with a heap of their next due times. The machine
never reads a cron expression: each due time comes in a command, computed by the proposer. It
keeps, per schedule, the next due time a firing must name and the last one accounted for, and
refuses a FireSchedule that names any other (a replayed, doubled or stale firing), so each due
time makes at most one job. The overlap policy is decided here, from the state of the
schedule's last job at the moment the firing is applied.

Flow control (issue 18) lives in three small modules this machine calls: `core/flow.py`
(a queue's pause, concurrency and rate limit, consulted by each Lease of that queue: a dict
lookup, no scan), `core/unique.py` (unique keys per owner and their scopes) and
`core/dependencies.py` (which WAITING job waits for which parents). A job with parents is
WAITING, in no heap, until its last parent is ACKED; a parent ending DEAD or CANCELLED
cancels it (and its own children) unless it asked to run anyway.
"""

from __future__ import annotations

import gc
import heapq
import logging
import operator
from array import array
from bisect import bisect_left, bisect_right, insort
from collections import Counter
from collections.abc import Callable, Iterator
from copy import copy
from itertools import compress, islice, repeat
from operator import attrgetter
from typing import Any

import msgspec

from jq_tool.core import flow
from jq_tool.core.attempts import ended_attempt
from jq_tool.core.backoff import retry_backoff_ms
from jq_tool.core.cold_index import (
    ColdIndex,
    ColdJobs,
    ColdRun,
    build_cold_index,
    feed,
    positions,
    ready_entry,
    since_entry,
)
from jq_tool.core.dead_groups import DeadGroup, DeadGroups, DeadGroupSummary
from jq_tool.core.dependencies import Dependencies
from jq_tool.core.history import ACKED, FAILED, SUBMITTED, History, HistorySeries
from jq_tool.core.model import (
    FINISHED_STATES,
    MAX_PROGRESS_NOTE,
    AbortMove,
    Ack,
    AdoptQueue,
    BulkCancel,
    BulkRequeue,
    BulkResult,
    Cancel,
    Command,
    CreateSchedule,
    DeadGroupAction,
    DeadGroupResult,
    DeleteSchedule,
    Dependency,
    Error,
    ErrorCode,
    Expire,
    ExpireResult,
    Extend,
    Fail,
    FenceQueue,
    FireResult,
    FireSchedule,
    ImportJobs,
    Job,
    JobFlow,
    JobProgress,
    JobResult,
    JobState,
    Lease,
    LeaseResult,
    MissedPolicy,
    NewJob,
    OverlapPolicy,
    OwnershipResult,
    ParentFailure,
    Progress,
    Purge,
    PurgeResult,
    QueueResult,
    QueueSettings,
    Release,
    ReleaseQueue,
    Requeue,
    Result,
    Schedule,
    ScheduleResult,
    ScheduleRun,
    ScheduleSpec,
    SetQueue,
    SettleDeadGroup,
    StartShard,
    Submit,
    SubmitResult,
    Submitted,
    UniqueScope,
    UpdateSchedule,
)
from jq_tool.core.ownership import (
    CHUNK_BYTES,
    Ownership,
    OwnershipSnapshot,
    QueueOwner,
    Staged,
    Tombstone,
    export_chunks,
    moving,
    scoped_key,
    staged_import,
)
from jq_tool.core.ownership import command_problem as ownership_problem
from jq_tool.core.retention import HeldJobs
from jq_tool.core.search import JobFilter
from jq_tool.core.unique import UniqueEntry, UniqueKeys

logger = logging.getLogger(__name__)

__all__ = [
    "Counters",
    "ForgetListener",
    "HeldStats",
    "QueueStats",
    "ScheduleStats",
    "StateMachine",
    "StateMachineConfig",
    "Stats",
    "TransitionListener",
]


class StateMachineConfig(msgspec.Struct, frozen=True):
    retry_base_ms: int = 1000  # backoff of the first retry
    retry_max_ms: int = 3_600_000  # backoff cap


class QueueStats(msgspec.Struct):
    """Counts of jobs currently in each state."""

    runnable: int = 0  # READY and due (run_at <= the last `now` the machine saw)
    running: int = 0
    scheduled: int = 0  # READY with a future run_at
    retry: int = 0
    dead: int = 0
    acked: int = 0
    cancelled: int = 0
    total: int = 0
    waiting: int = 0  # WAITING for parents (depends_on)
    # The queue's flow settings (SetQueue): paused, and its limits (0: none).
    paused: bool = False
    concurrency: int = 0
    rate_limit: int = 0
    rate_period_ms: int = 0


class Counters(msgspec.Struct):
    """Monotonic event counts; part of the state, so they survive snapshot/restore."""

    submitted: int = 0
    acked: int = 0
    failed: int = 0
    retried: int = 0
    dead: int = 0
    expired: int = 0
    cancelled: int = 0
    requeued: int = 0
    released: int = 0  # leases given back unfinished (Release); older snapshots decode with 0
    purged: int = 0
    evicted: int = 0  # finished jobs forgotten past the count or bytes bound (to history)
    dead_dropped: int = 0  # DEAD jobs forgotten past the DEAD cap (to history)


class HeldStats(msgspec.Struct):
    """What finished jobs the machine holds in memory (core/retention.py). Bytes are content
    characters (payload, result, error); the per-job overhead is the proposer's to add."""

    finished: int = 0  # ACKED and CANCELLED
    finished_bytes: int = 0
    dead: int = 0
    dead_bytes: int = 0


class ScheduleStats(msgspec.Struct):
    """The schedules at a glance (/stats): how many, how many paused, the next due time of
    those that are not, and the runs, skips and misses of the schedules that exist."""

    count: int = 0
    paused: int = 0
    next_due: int | None = None
    runs: int = 0
    skipped: int = 0
    missed: int = 0


class Stats(msgspec.Struct):
    totals: QueueStats
    queues: dict[str, QueueStats]  # queues holding at least one job (the busiest: see stats)
    counters: Counters
    queue_count: int = 0  # every queue holding at least one job


# (job, previous state or None for a new job, the command's now). Called once per state change,
# and once when a scheduled READY job becomes runnable (previous READY): see _advance.
TransitionListener = Callable[[Job, JobState | None, int], None]
# (the jobs a Purge forgot, in the order it forgot them; the command's now). Called during a
# replay too: whoever keeps history must see every job that leaves memory.
ForgetListener = Callable[[list[Job], int], None]

_READY = JobState.READY
_RUNNING = JobState.RUNNING
_RETRY = JobState.RETRY
_DEAD = JobState.DEAD
_ACKED = JobState.ACKED
_CANCELLED = JobState.CANCELLED
_WAITING = JobState.WAITING

# Indexes into _QueueIndex.counts, in QueueStats field order. READY is split in two buckets by
# whether its run_at has come, so a state alone does not name a bucket.
_B_RUNNABLE, _B_RUNNING, _B_SCHEDULED, _B_RETRY, _B_DEAD, _B_ACKED, _B_CANCELLED, _B_WAITING = (
    range(8)
)
_BUCKETS = 8
_BUCKET_OF_STATE = {
    _RUNNING: _B_RUNNING,
    _RETRY: _B_RETRY,
    _DEAD: _B_DEAD,
    _ACKED: _B_ACKED,
    _CANCELLED: _B_CANCELLED,
    _WAITING: _B_WAITING,
}

# A search label's bucket (core/search.py): READY is the due bucket; SCHEDULED is its own.
_BUCKET_OF_LABEL = {
    _READY.value: _B_RUNNABLE,
    "SCHEDULED": _B_SCHEDULED,
    **{state.value: bucket for state, bucket in _BUCKET_OF_STATE.items()},
}

# Every time and duration stays within +-2**62 so that sums of two fit in a signed 64-bit
# msgpack integer: a snapshot must never fail to encode.
_INT_LIMIT = 2**62 - 1
_LEASE_EXPIRED = "lease expired"
_DONE_STATES = frozenset({_ACKED, _CANCELLED})  # held up to the finished bounds
_DEAD_STATES = frozenset({_DEAD})  # held up to the DEAD cap
_SNAPSHOT_VERSION = 1
AHEAD_COUNTED = 10_000  # runnable_ahead counts this far at most (explain says "at least")
NEVER = 1 << 62  # a time after every due time: take_due_hint() has nothing
MAX_BULK_CHUNK = 10_000  # job ids in one BulkRequeue/BulkCancel

_seq_of = attrgetter("seq")
_id_of = attrgetter("id")
_queue_of = attrgetter("queue")
_state_of = attrgetter("state")

ReadyEntry = tuple[int, int, int, Job]  # (-priority, run_at, seq, job): lease order
TimedEntry = tuple[int, int, Job]  # (time, seq, job)


class _QueueIndex:
    """One queue's runnable and RETRY heaps and its per-bucket job counts."""

    __slots__ = ("name", "ready", "retry", "counts", "since", "cold_ready", "cold_since")

    def __init__(self, name: str) -> None:
        self.name = name  # the canonical string every job of this queue shares
        self.ready: list[ReadyEntry] = []
        # The runnable jobs again, by the time they became runnable (run_at), for the age of
        # the oldest one (a queue's latency): the lease-order heap puts priority first, so its
        # top is not the oldest. Lazy deletion like the others (see _rebuild_since).
        self.since: list[TimedEntry] = []
        self.retry: list[TimedEntry] = []
        self.counts = [0] * _BUCKETS
        # After a cold restore (core/cold_index.py), the runnable jobs not yet in `ready` and
        # `since`, in each heap's order; None once a run is used up.
        self.cold_ready: ColdRun | None = None
        self.cold_since: ColdRun | None = None


class _Snapshot(msgspec.Struct, array_like=True):
    version: int
    now: int
    seq: int
    counters: Counters
    jobs: list[Job]  # in submission order
    # (key, job id, keep end) of the snapshots written before keys had owners: restored with
    # owner "" and no fingerprint. Written empty since.
    idempotency: list[tuple[str, str, int]]
    # (owner, key, job id, fingerprint, keep end) in insertion order.
    idempotency_scoped: list[tuple[str, str, str, str | None, int]] = []
    schedules: list[Schedule] = []  # in creation order
    # Flow control (issue 18): queue settings by name order, unique keys in insertion order,
    # and the parents each WAITING job still waits for, in submission order.
    queue_settings: list[QueueSettings] = []
    unique: list[UniqueEntry] = []
    awaited: list[tuple[str, list[str]]] = []
    history: list[HistorySeries] = []  # per-minute counts (core/history.py)
    # Sharded mode (issue 23, core/ownership.py): None while ownership is off.
    ownership: OwnershipSnapshot | None = None
    # What a restore may leave cold (issue 20, core/cold_index.py); None in older snapshots.
    cold: ColdIndex | None = None


# A job's copy for a result: the Struct's own __copy__, without copy.copy's dispatch (a lease
# and an ack each hand one out).
_copy_job: Callable[[Job], Job] = Job.__copy__  # type: ignore[attr-defined]

_snapshot_encoder = msgspec.msgpack.Encoder()
_snapshot_decoder = msgspec.msgpack.Decoder(_Snapshot)


# ---------------------------------------------------------------------------------------------
# Command validation: everything is checked before anything changes, so apply never half-applies
# and never raises on a malformed command built in-process (Structs do not validate on init).


def _int_problem(value: object, name: str, minimum: int = -_INT_LIMIT) -> str | None:
    if type(value) is not int or not minimum <= value <= _INT_LIMIT:
        return f"{name} must be an integer between {minimum} and 2**62 - 1"
    return None


def _str_problem(
    value: object, name: str, *, optional: bool = False, nonempty: bool = False
) -> str | None:
    if value is None and optional:
        return None
    if type(value) is not str:
        return f"{name} must be a string"
    if nonempty and not value:
        return f"{name} must not be empty"
    if not value.isascii():
        # A lone surrogate would make the snapshot (and the WAL record) unencodable.
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{name} is not valid UTF-8 text"
    return None


def _new_job_problem(nj: object) -> str | None:
    # A submit's usual job, checked in one expression (a batch runs this per job): exactly a
    # NewJob, ASCII strings (which always encode; `isascii` reads a flag), integers in range,
    # and no flow. Anything else takes the full checks, which name the field at fault.
    if type(nj) is NewJob and nj.flow is None:
        job_id, queue, payload, owner = nj.id, nj.queue, nj.payload, nj.owner
        priority, retries, run_at = nj.priority, nj.max_retries, nj.run_at
        key, fingerprint = nj.idempotency_key, nj.fingerprint  # the SDK keys every submit
        if (
            type(job_id) is str
            and job_id
            and job_id.isascii()
            and type(queue) is str
            and queue.isascii()
            and type(payload) is str
            and payload.isascii()
            and type(owner) is str
            and owner.isascii()
            and type(priority) is int
            and -_INT_LIMIT <= priority <= _INT_LIMIT
            and type(retries) is int
            and -_INT_LIMIT <= retries <= _INT_LIMIT
            and (run_at is None or (type(run_at) is int and -_INT_LIMIT <= run_at <= _INT_LIMIT))
            and (key is None or (type(key) is str and key.isascii()))
            and (fingerprint is None or (type(fingerprint) is str and fingerprint.isascii()))
        ):
            return None
    return _new_job_full_problem(nj)


def _new_job_full_problem(nj: object) -> str | None:
    if not isinstance(nj, NewJob):
        return "each job must be a NewJob"
    return (
        _str_problem(nj.id, "job id", nonempty=True)
        or _str_problem(nj.queue, "queue")
        or _str_problem(nj.payload, "payload")
        or _int_problem(nj.priority, "priority")
        or _int_problem(nj.max_retries, "max_retries")
        or (None if nj.run_at is None else _int_problem(nj.run_at, "run_at"))
        or _str_problem(nj.idempotency_key, "idempotency_key", optional=True)
        or _str_problem(nj.owner, "owner")
        or _str_problem(nj.fingerprint, "fingerprint", optional=True)
        or _flow_fields_problem(nj)
    )


def _flow_fields_problem(nj: NewJob) -> str | None:
    """The unique-job and dependency fields of a NewJob (issue 18)."""
    jf = nj.flow
    if jf is None:
        return None
    if not isinstance(jf, JobFlow):
        return "flow must be a JobFlow"
    problem = _str_problem(jf.unique_key, "unique_key", optional=True, nonempty=True)
    if problem:
        return problem
    if not isinstance(jf.unique_scope, UniqueScope):
        return "unique_scope must be queued, active or period"
    problem = _int_problem(jf.unique_period_ms, "unique_period_ms", 0)
    if problem:
        return problem
    if jf.unique_scope is UniqueScope.PERIOD and jf.unique_key and jf.unique_period_ms <= 0:
        return "unique_scope period needs unique_period_ms above 0"
    if type(jf.depends_on) is not list:
        return "depends_on must be a list of job ids"
    for parent in jf.depends_on:
        problem = _str_problem(parent, "depends_on entry", nonempty=True)
        if problem:
            return problem
    if not isinstance(jf.on_parent_failure, ParentFailure):
        return "on_parent_failure must be cancel or run"
    return None


def _schedule_spec_problem(spec: object) -> str | None:
    if not isinstance(spec, ScheduleSpec):
        return "spec must be a ScheduleSpec"
    return (
        _str_problem(spec.name, "schedule name", nonempty=True)
        or _str_problem(spec.cron, "cron", nonempty=True)
        or _str_problem(spec.timezone, "timezone", nonempty=True)
        or _str_problem(spec.payload, "payload")
        or _str_problem(spec.queue, "queue")
        or _int_problem(spec.priority, "priority")
        or _int_problem(spec.max_retries, "max_retries")
        or (None if isinstance(spec.overlap, OverlapPolicy) else "overlap must be allow or skip")
        or (None if isinstance(spec.missed, MissedPolicy) else "missed must be skip or run_once")
        or _int_problem(spec.grace_ms, "grace_ms", 0)
    )


def _optional_int_problem(value: object, name: str) -> str | None:
    return None if value is None else _int_problem(value, name)


def _schedule_command_problem(command: Any) -> str | None:
    if isinstance(command, CreateSchedule):
        return (
            _schedule_spec_problem(command.spec)
            or _optional_int_problem(command.next_due, "next_due")
            or (None if type(command.paused) is bool else "paused must be true or false")
            or _int_problem(command.max_schedules, "max_schedules", 0)
            or (
                "next_due must be after now"
                if command.next_due is not None and command.next_due <= command.now
                else None
            )
        )
    if isinstance(command, UpdateSchedule):
        return (
            _schedule_spec_problem(command.spec)
            or _optional_int_problem(command.next_due, "next_due")
            or (None if type(command.paused) is bool else "paused must be true or false")
            or _int_problem(command.version, "version", 0)
        )
    if isinstance(command, DeleteSchedule):
        return _str_problem(command.name, "schedule name")
    # FireSchedule
    problem = (
        _str_problem(command.name, "schedule name")
        or _int_problem(command.due, "due")
        or _int_problem(command.last_due, "last_due", command.due)
        or _optional_int_problem(command.next_due, "next_due")
        or _str_problem(command.job_id, "job id", optional=True, nonempty=True)
        or _int_problem(command.missed, "missed", 0)
    )
    if problem is None and command.last_due > command.now:
        return "a firing names due times that have come: last_due must not be after now"
    if problem is None and command.next_due is not None and command.next_due <= command.last_due:
        return "next_due must be after last_due"
    return problem


_SCHEDULE_COMMANDS = (CreateSchedule, UpdateSchedule, DeleteSchedule, FireSchedule)
_OWNERSHIP_COMMANDS = (StartShard, AdoptQueue, FenceQueue, ImportJobs, ReleaseQueue, AbortMove)
_JOB_COMMANDS = (Ack, Fail, Extend, Release, Cancel, Requeue, Progress)


def _ownership_refusal(own: Ownership, command: Any, jobs: dict[str, Job]) -> Error | None:
    """Sharded (ownership on): NOT_OWNER for a command on a queue this shard does not serve,
    QUEUE_MOVING for one on a fenced queue. Submit is checked per job, in _submit."""
    if isinstance(command, (Lease, SetQueue)):
        return own.queue_refusal(command.queue)
    if isinstance(command, _JOB_COMMANDS):
        return own.job_refusal(command.job_id, jobs.get(command.job_id))
    if not own.fenced:
        if isinstance(command, (CreateSchedule, UpdateSchedule)):
            return own.queue_refusal(command.spec.queue)
        return None
    if isinstance(command, (BulkRequeue, BulkCancel)):
        # A chunk is atomic: a job of a fenced queue in it holds the whole chunk back.
        for job_id in command.job_ids:
            job = jobs.get(job_id)
            if job is not None and job.queue in own.fenced:
                return moving(job.queue)
    elif isinstance(command, SettleDeadGroup):
        # A group spans queues; while any queue is moving, its settling waits (seconds).
        return moving(next(iter(own.fenced)))
    elif isinstance(command, (CreateSchedule, UpdateSchedule)):
        return own.queue_refusal(command.spec.queue)
    return None


_INSIGHT_COMMANDS = (Progress, SettleDeadGroup)


def _insight_command_problem(command: Any) -> str | None:
    if isinstance(command, Progress):
        percent = command.percent
        problem = _str_problem(command.job_id, "job id") or _str_problem(
            command.lease_id, "lease id", optional=True
        )
        if problem:
            return problem
        # An int is a float here (0 and 1 decode as ints); NaN fails both comparisons.
        if type(percent) not in (int, float) or not 0.0 <= percent <= 1.0:
            return "percent must be a number between 0 and 1"
        problem = _str_problem(command.note, "note")
        if problem is None and len(command.note) > MAX_PROGRESS_NOTE:
            return f"note must be at most {MAX_PROGRESS_NOTE} characters"
        return problem
    # SettleDeadGroup
    return (
        _str_problem(command.fingerprint, "fingerprint", nonempty=True)
        or (
            None
            if isinstance(command.action, DeadGroupAction)
            else "action must be requeue or cancel"
        )
        or _int_problem(command.limit, "limit", 1)
        or _int_problem(command.dead_before, "dead_before")
    )


def _lease_problem(command: Lease) -> str | None:
    queue, lease_ms, worker, lease_ids = (
        command.queue,
        command.lease_ms,
        command.worker,
        command.lease_ids,
    )
    # The usual Lease (ASCII queue and worker, one ASCII lease id) without a call per field.
    if (
        type(lease_ids) is list
        and len(lease_ids) == 1
        and type(lease_id := lease_ids[0]) is str
        and lease_id
        and lease_id.isascii()
        and type(queue) is str
        and queue.isascii()
        and type(lease_ms) is int
        and -_INT_LIMIT <= lease_ms <= _INT_LIMIT
        and (worker is None or (type(worker) is str and worker.isascii()))
    ):
        return None
    problem = (
        _str_problem(command.queue, "queue")
        or _int_problem(command.lease_ms, "lease_ms")
        or _str_problem(command.worker, "worker", optional=True)
    )
    if problem:
        return problem
    if type(command.lease_ids) is not list:
        return "lease_ids must be a list"
    for lease_id in command.lease_ids:
        problem = _str_problem(lease_id, "lease id", nonempty=True)
        if problem:
            return problem
    if len(set(command.lease_ids)) != len(command.lease_ids):
        return "lease ids must be distinct"
    return None


def _ack_problem(command: Ack) -> str | None:
    job_id, lease_id, result = command.job_id, command.lease_id, command.result
    # The usual Ack (ASCII ids, no result or an ASCII one) passes without a call per field.
    if (
        type(job_id) is str
        and job_id.isascii()
        and (lease_id is None or (type(lease_id) is str and lease_id.isascii()))
        and (result is None or (type(result) is str and result.isascii()))
    ):
        return None
    return (
        _str_problem(job_id, "job id")
        or _str_problem(lease_id, "lease id", optional=True)
        or _str_problem(result, "result", optional=True)
    )


def _fail_problem(command: Fail) -> str | None:
    return (
        _str_problem(command.job_id, "job id")
        or _str_problem(command.lease_id, "lease id", optional=True)
        or _str_problem(command.error, "error")
        or (None if type(command.retry) is bool else "retry must be true or false")
    )


def _command_problem(command: Any) -> str | None:
    problem = _int_problem(command.now, "now", 0)
    if problem:
        return problem
    # A worker's cycle (lease, ack or fail) is most of what is applied: straight to its check
    # by exact type (apply reaches here only for a type in _HANDLERS), not down the chain of
    # isinstance below, which therefore has no branch for them.
    check = _CYCLE_PROBLEMS.get(type(command))
    if check is not None:
        return check(command)
    if isinstance(command, _SCHEDULE_COMMANDS):
        return _schedule_command_problem(command)
    if isinstance(command, _OWNERSHIP_COMMANDS):
        return ownership_problem(command)
    if isinstance(command, Submit):
        if type(command.jobs) is not list:
            return "jobs must be a list"
        return _int_problem(command.idempotency_ms, "idempotency_ms", 0) or _int_problem(
            command.max_queues, "max_queues", 0
        )
    if isinstance(command, Expire):
        return None
    if isinstance(command, (BulkRequeue, BulkCancel)):
        if type(command.job_ids) is not list or len(command.job_ids) > MAX_BULK_CHUNK:
            return f"job_ids must be a list of at most {MAX_BULK_CHUNK} ids"
        for job_id in command.job_ids:
            problem = _str_problem(job_id, "job id")
            if problem:
                return problem
        return None
    if isinstance(command, _INSIGHT_COMMANDS):
        return _insight_command_problem(command)
    if isinstance(command, Purge):
        return (
            _int_problem(command.finished_before, "finished_before")
            or _int_problem(command.max_finished, "max_finished", 0)
            or _int_problem(command.max_finished_bytes, "max_finished_bytes", 0)
            or _int_problem(command.job_overhead_bytes, "job_overhead_bytes", 0)
            or _int_problem(command.max_dead, "max_dead", 0)
            or _optional_int_problem(command.dead_before, "dead_before")
            or _int_problem(command.max_idempotency_keys, "max_idempotency_keys", 0)
        )
    if isinstance(command, SetQueue):
        return _str_problem(command.queue, "queue") or flow.set_queue_problem(command)
    problem = _str_problem(command.job_id, "job id")
    if problem:
        return problem
    if isinstance(command, Release):
        return (
            _str_problem(command.lease_id, "lease id", optional=True)
            or _int_problem(command.delay_ms, "delay_ms", 0)
            or _int_problem(command.now + command.delay_ms, "now + delay_ms", 0)
        )
    if isinstance(command, Extend):
        return _str_problem(command.lease_id, "lease id", optional=True) or _int_problem(
            command.lease_ms, "lease_ms"
        )
    return None  # Cancel, Requeue: job id only


_CYCLE_PROBLEMS: dict[type, Callable[[Any], str | None]] = {
    Lease: _lease_problem,
    Ack: _ack_problem,
    Fail: _fail_problem,
}


# ---------------------------------------------------------------------------------------------


class StateMachine:
    """Applies commands to the queue state; see the module docstring for the guarantees."""

    def __init__(
        self,
        config: StateMachineConfig = StateMachineConfig(),
        on_transition: TransitionListener | None = None,
        on_forget: ForgetListener | None = None,
    ) -> None:
        self._config = config
        self._on_transition = on_transition
        self._on_forget = on_forget
        self._now = 0  # the largest `now` of any applied command
        # The earliest due time added since take_due_hint() (NEVER: none). Not state.
        self._due_hint = NEVER
        self._seq = 0  # the last submission number handed out
        # After a cold restore: the ids of the snapshot's jobs (seq up to _cold_seq) that came
        # back to READY since, for the cold `since` runs (_load_cold); None once those are fed.
        self._returned: set[str] | None = None
        self._cold_seq = 0
        self._counters = Counters()
        self._jobs: dict[str, Job] = {}  # insertion order is submission order
        # Jobs in submission order for list_jobs paging by seq; purged jobs linger until
        # compaction and are recognised by no longer being the job stored under their id.
        self._order: list[Job] = []
        self._order_purged = 0
        self._queues: dict[str, _QueueIndex] = {}
        self._scheduled: list[TimedEntry] = []  # READY jobs whose run_at has not come
        self._leases: list[TimedEntry] = []  # RUNNING jobs by lease_until
        self._leases_stale = 0  # entries left behind by ack, fail and extend
        self._waiting_stale = 0  # ready/retry/scheduled entries left behind by cancel
        self._done = HeldJobs(_DONE_STATES)  # ACKED/CANCELLED jobs by finish time
        self._dead = HeldJobs(_DEAD_STATES)  # DEAD jobs by finish time
        # (owner, key) -> (job id, fingerprint, keep end)
        self._idempotency: dict[tuple[str, str], tuple[str, str | None, int]] = {}
        self._idempotency_expiry: list[tuple[int, str, str]] = []  # (keep end, owner, key)
        self._schedules: dict[str, Schedule] = {}  # creation order
        self._schedule_names: list[str] = []  # sorted, for paging by name
        # (next due, name) of schedules that are not paused; an entry whose schedule moved on
        # (fired, changed, paused, deleted) is skipped when it reaches the top.
        self._schedule_due: list[tuple[int, str]] = []
        # Flow control (issue 18): settings of queues that have any (by name), unique keys,
        # the parents WAITING jobs wait for, and one string per owner (jobs share it).
        self._flow: dict[str, QueueSettings] = {}
        self._unique = UniqueKeys()
        self._deps = Dependencies()
        self._owners: dict[str, str] = {}
        self._dead_groups = DeadGroups()  # DEAD jobs by their last error's fingerprint
        self._history = History()  # per-minute submitted/acked/failed (GET /stats/history)
        self._own = Ownership()  # sharded mode only (issue 23); off: every queue served

    # -- the mutating surface ------------------------------------------------------------------

    def apply(self, command: Command) -> Result:
        """Apply one command and return its result. Never raises for any command value: a
        malformed command, or one the current state does not allow, is an Error result and
        changes nothing."""
        handler = _HANDLERS.get(type(command))
        if handler is None:
            return Error(ErrorCode.INVALID, f"unknown command type {type(command).__name__}")
        problem = _command_problem(command)
        if problem:
            return Error(ErrorCode.INVALID, problem)
        own = self._own
        if own.shard is not None:
            refusal = _ownership_refusal(own, command, self._jobs)
            if refusal is not None:
                return refusal
        return handler(self, command)

    def snapshot(self) -> bytes:
        """The whole state as msgpack; byte-identical for identical histories, however far a
        cold restore's warm-up went (core/cold_index.py)."""
        jobs = self._jobs
        if isinstance(jobs, ColdJobs):
            # Cold jobs entered the dict in the order they were touched: submission order is
            # the order list's, without the forgotten jobs it still holds.
            jobs.take_all()
            order = self._order
            if len(order) == len(jobs):
                # The order list holds each job once, and the forgotten ones until it is
                # compacted: with none of those, it is the submission order as it is (looking
                # every job up was ~0.5 s of a million: a cache miss each).
                all_jobs = list(order)
            else:
                present = dict.get  # every job is in the dict now: no need to look past it
                all_jobs = [job for job in order if present(jobs, job.id) is job]
        else:
            all_jobs = list(jobs.values())  # insertion order is submission order
        return _snapshot_encoder.encode(
            _Snapshot(
                version=_SNAPSHOT_VERSION,
                now=self._now,
                seq=self._seq,
                counters=self._counters,
                jobs=all_jobs,
                idempotency=[],
                idempotency_scoped=[
                    (owner, key, job_id, fingerprint, end)
                    for (owner, key), (job_id, fingerprint, end) in self._idempotency.items()
                ],
                schedules=list(self._schedules.values()),
                queue_settings=[self._flow[name] for name in sorted(self._flow)],
                unique=self._unique.dump(),
                awaited=self._deps.dump(),
                history=self._history.dump(),
                ownership=self._own.dump(),
                cold=build_cold_index(all_jobs, self._now),
            )
        )

    def warm_step(self, count: int) -> bool:
        """After a cold restore, move up to `count` more cold jobs into the id dict; whether
        any are left. Changes no answer (core/cold_index.py): the engine calls it a chunk at a
        time after the start, so that lookups are plain dict lookups again soon."""
        jobs = self._jobs
        return isinstance(jobs, ColdJobs) and jobs.warm_step(count)

    def _index_all(self) -> None:
        """Every cold job into the id dict, for what walks the submission-order list."""
        jobs = self._jobs
        if isinstance(jobs, ColdJobs):
            jobs.take_all()

    def restore(self, data: bytes | memoryview) -> None:
        """Replace the whole state with a snapshot. Raises ValueError (and keeps the current
        state) when the data is not a valid snapshot."""
        rebuilt = StateMachine(self._config, self._on_transition, self._on_forget)
        # A million fresh objects would trigger many collections that find nothing: the jobs
        # are gc=False and the index tuples hold only jobs and ints.
        collecting = gc.isenabled()
        gc.disable()
        try:
            try:
                snap = _snapshot_decoder.decode(data)
            except (msgspec.DecodeError, TypeError) as exc:
                raise ValueError(f"not a state machine snapshot: {exc}") from exc
            if snap.version != _SNAPSHOT_VERSION:
                raise ValueError(f"unsupported snapshot version {snap.version}")
            rebuilt._load(snap)
        finally:
            if collecting:
                gc.enable()
        self.__dict__.update(rebuilt.__dict__)

    # -- read-only queries ---------------------------------------------------------------------
    # They may drop stale heap entries on the way: that is housekeeping of derived indexes and
    # never changes anything a command or query can observe.

    def get(self, job_id: str) -> Job | None:
        """The live job (callers must not mutate it), or None."""
        if type(job_id) is not str:
            return None
        return self._jobs.get(job_id)

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """Jobs newest submission first (live objects: do not mutate), and the cursor of the
        next page or None at the end. Raises ValueError for a bad limit, state or cursor.

        A filtered page costs O(jobs passed over to fill it), but the passing over runs in C
        (about 50 ns a job), and a filter that the per-state counts say matches nothing
        returns at once."""
        if type(limit) is not int or limit < 1:
            raise ValueError("limit must be a positive integer")
        if state is not None:
            state = JobState(state)
        order = self._order
        if cursor is None:
            end = len(order)
        else:
            if (
                type(cursor) is not str
                or not (cursor.isascii() and cursor.isdigit())
                or len(cursor) > 20
            ):
                raise ValueError("invalid cursor")
            end = bisect_left(order, int(cursor), key=_seq_of)
        matching = self._matching_count(state, queue)
        if matching == 0:
            return [], None

        newest_first: Iterator[Job] = islice(reversed(order), len(order) - end, None)
        if state is not None:
            states = map(_state_of, islice(reversed(order), len(order) - end, None))
            newest_first = compress(newest_first, map(operator.is_, states, repeat(state)))
        elif queue is not None:
            queues = map(_queue_of, islice(reversed(order), len(order) - end, None))
            newest_first = compress(newest_first, map(operator.eq, queues, repeat(queue)))
        jobs = self._jobs
        page: list[Job] = []
        for job in newest_first:
            if jobs.get(job.id) is not job:
                continue  # purged
            if queue is not None and job.queue != queue:
                continue
            if len(page) == limit:
                return page, str(page[-1].seq)
            page.append(job)
            if cursor is None and len(page) == matching:
                break  # that was the oldest match: no need to scan the rest
        return page, None

    def search_jobs(
        self,
        where: JobFilter,
        *,
        limit: int = 50,
        cursor: str | None = None,
        scan_limit: int | None = None,
    ) -> tuple[list[Job], str | None]:
        """Jobs matching `where`, newest submission first, and the cursor of the next page
        (None at the end). Examines at most `scan_limit` jobs (None: no bound): when it stops
        there, the page may be short and the cursor says where to go on. Live objects: do not
        mutate. Raises ValueError for a bad limit or cursor. The cursor is a submission number,
        so pages stay stable under inserts (new jobs are newer than any cursor)."""
        if type(limit) is not int or limit < 1:
            raise ValueError("limit must be a positive integer")
        self._index_all()  # a scan may pass over every job: a dict hit each, not a bisection
        order = self._order
        if cursor is None:
            end = len(order)
        else:
            if (
                type(cursor) is not str
                or not (cursor.isascii() and cursor.isdigit())
                or len(cursor) > 20
            ):
                raise ValueError("invalid cursor")
            end = bisect_left(order, int(cursor), key=_seq_of)
        if where.labels is not None and not self._label_count(where.labels, where.queue):
            return [], None  # the counts say nothing has those states: no scan at all
        jobs = self._jobs
        now = self._now
        matches = where.matches
        page: list[Job] = []
        examined = 0
        for i in range(end - 1, -1, -1):
            job = order[i]
            if scan_limit is not None and examined == scan_limit:
                return page, str(order[i + 1].seq)
            examined += 1
            if jobs.get(job.id) is not job or not matches(job, now):
                continue
            page.append(job)
            if len(page) == limit:
                return page, (str(job.seq) if i > 0 else None)
        return page, None

    def _label_count(self, labels: frozenset[str], queue: str | None) -> int:
        """How many jobs (of `queue`, or all) have one of the search labels: O(queues)."""
        buckets = [_BUCKET_OF_LABEL[label] for label in labels if label in _BUCKET_OF_LABEL]
        if queue is not None:
            q = self._queues.get(queue)
            counted = [] if q is None else [q.counts]
        else:
            counted = [q.counts for q in self._queues.values()]
        return sum(counts[b] for counts in counted for b in buckets)

    def _matching_count(self, state: JobState | None, queue: str | None) -> int:
        if queue is not None:
            q = self._queues.get(queue)
            if q is None:
                return False
            counted = [q.counts]
        else:
            counted = [q.counts for q in self._queues.values()]
        if state is None:
            buckets = list(range(_BUCKETS))
        elif state is _READY:
            buckets = [_B_RUNNABLE, _B_SCHEDULED]
        else:
            buckets = [_BUCKET_OF_STATE[state]]
        return sum(counts[b] for counts in counted for b in buckets)

    def has_runnable(self, queue: str, now: int) -> bool:
        """Whether Lease(now, queue) would find a job, counting RETRY and scheduled jobs that
        are due by `now`, and the queue's flow settings (paused, at a limit: no)."""
        q = self._queues.get(queue) if type(queue) is str else None
        if q is None:
            return False
        if queue in self._flow and self.lease_blocked_until(queue, now) is not None:
            return False
        if _valid_ready_top(q, self._jobs) is not None:
            return True
        cutoff = max(self._now, now) if type(now) is int else self._now
        top = _valid_timed_top(q.retry, _RETRY)
        if top is not None and top[0] <= cutoff:
            return True
        if cutoff <= self._now:
            return False  # every scheduled job due by self._now is already in q.ready
        return _scheduled_due_in(self._scheduled, queue, cutoff)

    def oldest_runnable_since(self, queue: str) -> int | None:
        """The run_at of the queue's oldest runnable job (READY and due: waiting since then),
        or None when it has none. O(log n) amortized: the top of the queue's `since` heap,
        dropping entries of jobs that moved on (leased, cancelled) on the way. A queue's
        latency is `now - this`."""
        q = self._queues.get(queue) if type(queue) is str else None
        if q is None:
            return None
        since = q.since
        while True:
            if q.cold_since is not None and not feed(
                q.cold_since, since, since_entry, returned=self._returned
            ):
                q.cold_since = None
                if not any(other.cold_since for other in self._queues.values()):
                    self._returned = None  # no cold `since` run is left to pass them over
            if not since:
                return None
            run_at, _, job = since[0]
            if job.state is _READY and job.run_at == run_at:
                return run_at
            heapq.heappop(since)

    def running(self, queue: str | None = None) -> list[Job]:
        """The RUNNING jobs (of `queue`, or all), by submission order: the leases held now.
        Walks the lease heap, O(running jobs); live objects, callers must not mutate them."""
        held = {
            job.id: job
            for lease_until, _, job in self._leases
            if job.state is _RUNNING
            and job.lease_until == lease_until
            and (queue is None or job.queue == queue)
        }
        return sorted(held.values(), key=_seq_of)

    def history(
        self, queue: str | None, minutes: int, last_minute: int
    ) -> tuple[bool, list[int], list[int], list[int]]:
        """(whether the queue is tracked, then submitted, acked, failed per minute) for the
        `minutes` minutes ending with `last_minute` (epoch ms // 60000): core/history.py."""
        history = self._history
        return (history.tracked(queue), *history.window(queue, minutes, last_minute))

    def next_due(self) -> int | None:
        """The earliest time at which Expire would change something: a lease running out or a
        scheduled/RETRY job becoming due. None when nothing is pending."""
        times: list[int] = []
        top = _valid_timed_top(self._leases, _RUNNING)
        if top is not None:
            times.append(top[0])
        top = _valid_timed_top(self._scheduled, _READY)
        if top is not None:
            times.append(top[0])
        for q in self._queues.values():
            top = _valid_timed_top(q.retry, _RETRY)
            if top is not None:
                times.append(top[0])
        return min(times) if times else None

    def stats(self, top: int | None = None) -> Stats:
        """Counts per state, per queue and in total, and the counters. O(number of queues).

        `top`: only that many queues in `queues`, the busiest (most jobs not yet finished, then
        most jobs, then name), so that an answer stays small however many queues there are;
        `queue_count` always counts them all."""
        held = [(name, q.counts) for name, q in self._queues.items() if any(q.counts)]
        queue_count = len(held)
        totals = list(map(sum, zip(*[counts for _, counts in held], strict=True)))
        if top is not None and queue_count > top:
            # Busiest first: most jobs not yet finished (runnable, running, scheduled, retry),
            # then most jobs, then the name. Tuples, not a key function: 20,000 queues in ms.
            ranked = [(-(c[0] + c[1] + c[2] + c[3]), -sum(c), name, c) for name, c in held]
            held = [(name, c) for _, _, name, c in heapq.nsmallest(top, ranked)]
        held.sort()
        return Stats(
            totals=_queue_stats(totals or [0] * _BUCKETS),
            queues={name: self._with_flow(name, _queue_stats(counts)) for name, counts in held},
            counters=copy(self._counters),
            queue_count=queue_count,
        )

    def queue_page(self, after: str | None, limit: int) -> list[tuple[str, QueueStats]]:
        """Up to `limit` queues holding jobs, by name, after the name `after` (None: from the
        first): the whole list in pages, which stats() no longer gives at once."""
        names = sorted(
            name
            for name, q in self._queues.items()
            if (after is None or name > after) and any(q.counts)
        )
        return [
            (name, self._with_flow(name, _queue_stats(self._queues[name].counts)))
            for name in names[:limit]
        ]

    def queue_stats(self, name: str) -> QueueStats | None:
        """One queue's counts and flow settings; None when it holds no job."""
        q = self._queues.get(name) if type(name) is str else None
        if q is None or not any(q.counts):
            return None
        return self._with_flow(name, _queue_stats(q.counts))

    def _with_flow(self, name: str, stats: QueueStats) -> QueueStats:
        settings = self._flow.get(name)
        if settings is not None:
            stats.paused = settings.paused
            stats.concurrency = settings.concurrency
            stats.rate_limit = settings.rate_limit
            stats.rate_period_ms = settings.rate_period_ms
        return stats

    @property
    def job_count(self) -> int:
        return len(self._jobs)

    def take_due_hint(self) -> int | None:
        """The earliest time at which something added since the last call falls due (a lease's
        end, a scheduled or RETRY job's run_at, a schedule's next run), or None; and forget it.
        Not state (never in a snapshot, in no result): the engine's ticker sleeps until a moment
        it chose before these commands, and wakes earlier when one of them is due sooner."""
        hint = self._due_hint
        if hint == NEVER:
            return None
        self._due_hint = NEVER
        return hint

    @property
    def clock(self) -> int:
        """The largest `now` of any applied command (the machine's clock never goes back)."""
        return self._now

    def held(self) -> HeldStats:
        """The finished and DEAD jobs held in memory, and their content bytes. O(1)."""
        done, dead = self._done, self._dead
        return HeldStats(done.count, done.bytes, dead.count, dead.bytes)

    def over_bounds(self, max_finished: int, max_finished_bytes: int, overhead: int,
                    max_dead: int, max_idempotency_keys: int = 0) -> bool:  # fmt: skip
        """Whether a Purge with these bounds would forget a job or key beyond them. O(1): the
        ticker asks every round, and proposes a Purge only when it would do something."""
        return (
            self._done.over(max_finished, max_finished_bytes, overhead)
            or self._dead.over(max_dead, 0, 0)
            or bool(max_idempotency_keys and len(self._idempotency) > max_idempotency_keys)
        )

    @property
    def idempotency_key_count(self) -> int:
        return len(self._idempotency)

    # -- schedule queries (live objects: callers must not mutate them) --------------------------

    def get_schedule(self, name: str) -> Schedule | None:
        if type(name) is not str:
            return None
        return self._schedules.get(name)

    def schedule_page(self, after: str | None, limit: int) -> list[Schedule]:
        """Up to `limit` schedules by name, after the name `after` (None: from the first)."""
        names = self._schedule_names
        start = 0 if after is None else bisect_right(names, after)
        return [self._schedules[name] for name in names[start : start + max(limit, 0)]]

    def next_schedule_due(self) -> int | None:
        """The earliest next due time of a schedule that is not paused, or None."""
        top = self._valid_schedule_top()
        return None if top is None else top[0]

    def due_schedules(self, now: int, limit: int = 100) -> list[Schedule]:
        """Schedules that are not paused and whose next due time is at or before `now`,
        earliest first (then by name), at most `limit`. Walks only the due part of the heap."""
        if self._valid_schedule_top() is None:
            return []
        heap = self._schedule_due
        found: dict[str, int] = {}
        stack = [0]
        while stack:
            i = stack.pop()
            if i >= len(heap) or heap[i][0] > now:
                continue
            due, name = heap[i]
            if self._schedule_entry_valid(due, name) and (
                self._own.shard is None or self._schedule_refusal(self._schedules[name]) is None
            ):
                found[name] = due
            stack.append(2 * i + 1)
            stack.append(2 * i + 2)
        ordered = sorted((due, name) for name, due in found.items())
        return [self._schedules[name] for _, name in ordered[:limit]]

    def schedule_stats(self) -> ScheduleStats:
        """Counts over every schedule: O(number of schedules)."""
        stats = ScheduleStats(count=len(self._schedules), next_due=self.next_schedule_due())
        for schedule in self._schedules.values():
            stats.paused += schedule.paused
            stats.runs += schedule.runs
            stats.skipped += schedule.skipped
            stats.missed += schedule.missed
        return stats

    def _schedule_entry_valid(self, due: int, name: str) -> bool:
        schedule = self._schedules.get(name)
        return schedule is not None and not schedule.paused and schedule.next_due == due

    def _valid_schedule_top(self) -> tuple[int, str] | None:
        heap = self._schedule_due
        while heap:
            if self._schedule_entry_valid(*heap[0]):
                return heap[0]
            heapq.heappop(heap)
        return None

    # -- command handlers ----------------------------------------------------------------------

    def _submit(self, cmd: Submit) -> Result:
        now = cmd.now
        self._advance(now)
        entries: list[Submitted | Error] = []
        keep_end = min(now + cmd.idempotency_ms, _INT_LIMIT)
        max_queues = cmd.max_queues
        jobs = self._jobs
        queues = self._queues
        # Entries of this submit answered with an earlier job (an idempotency key or a unique
        # key): a later entry naming one as a parent (a batch's "$N") means that job.
        answered: dict[str, str] | None = None
        own = self._own
        sharded = own.shard is not None
        for nj in cmd.jobs:
            problem = _new_job_problem(nj)
            if problem:
                entries.append(Error(ErrorCode.INVALID, problem))
                continue
            if sharded:
                refusal = own.queue_refusal(nj.queue)
                if refusal is not None:
                    entries.append(refusal)
                    continue
            key = nj.idempotency_key
            # Sharded, a key is remembered per queue: it moves with its queue (ownership.py).
            map_key = key if key is None or not sharded else scoped_key(nj.queue, key)
            if key is not None and map_key is not None:
                mapped = self._idempotency.get((nj.owner, map_key))
                if mapped is not None and self._now < mapped[2]:
                    entry = _remembered(mapped, nj.fingerprint, key)
                    entries.append(entry)
                    if isinstance(entry, Submitted):
                        answered = answered or {}
                        answered[nj.id] = entry.job_id
                    continue
            jf = nj.flow
            unique_key = None if jf is None else jf.unique_key
            if unique_key is not None and sharded:
                unique_key = scoped_key(nj.queue, unique_key)  # per queue, as idempotency keys
            if unique_key is not None:
                holder = self._unique.holder(nj.owner, unique_key, self._now, jobs)
                if holder is not None:
                    entries.append(Submitted(job_id=holder, unique=True))
                    answered = answered or {}
                    answered[nj.id] = holder
                    continue
            if nj.id in jobs:
                entries.append(Error(ErrorCode.INVALID, f"duplicate job id {nj.id!r}"))
                continue
            parents = None if jf is None else jf.depends_on
            if parents and answered:
                parents = [answered.get(parent, parent) for parent in parents]
            if parents:
                refusal = self._parents_problem(parents, nj.owner)
                if refusal is None and sharded:
                    refusal = self._parents_elsewhere(parents, nj.queue)
                if refusal is not None:
                    entries.append(refusal)
                    continue
            if max_queues and nj.queue not in queues and len(queues) >= max_queues:
                entries.append(
                    Error(
                        ErrorCode.TOO_MANY_QUEUES,
                        f"{len(queues)} queues already hold jobs, the most allowed "
                        f"(max queues {max_queues}): submit to an existing queue, or retry "
                        "once a queue's jobs have finished and been purged",
                    )
                )
                continue
            q = self._queue(nj.queue)
            self._seq += 1
            run_at = now if nj.run_at is None else nj.run_at
            job = Job(
                nj.id,
                q.name,
                nj.payload,
                nj.priority,
                nj.max_retries,
                0,
                _READY,
                now,
                run_at,
                self._seq,
                None,
                None,
                None,
                None,
                key,
                now,
                None,
                None,
                self._owners.setdefault(nj.owner, nj.owner),
            )
            if parents:
                assert jf is not None
                self._place_child(job, q, parents, jf.on_parent_failure, now)
            else:
                self._enter_ready(q, job)
            if unique_key is not None:
                assert jf is not None
                scope = jf.unique_scope
                until = now + jf.unique_period_ms if scope is UniqueScope.PERIOD else 0
                self._unique.take(nj.owner, unique_key, job.id, scope, until)
            if map_key is not None:
                self._idempotency[(nj.owner, map_key)] = (job.id, nj.fingerprint, keep_end)
                heapq.heappush(self._idempotency_expiry, (keep_end, nj.owner, map_key))
            jobs[job.id] = job
            self._order.append(job)
            self._counters.submitted += 1
            self._history.count(q.name, self._now, SUBMITTED)
            self._notify(job, None, now)
            entries.append(Submitted(job_id=job.id))
        return SubmitResult(entries=entries)

    def _parents_problem(self, parents: list[str], owner: str) -> Error | None:
        jobs = self._jobs
        for parent_id in parents:
            parent = jobs.get(parent_id)
            if parent is None or parent.owner != owner:
                # Another owner's job is not told apart from a missing one: ids do not leak.
                return Error(
                    ErrorCode.UNKNOWN_PARENT,
                    f"depends_on names {parent_id!r}, which is not a job of yours (it does not "
                    "exist, or was purged)",
                )
        return None

    def _parents_elsewhere(self, parents: list[str], queue: str) -> Error | None:
        """Sharded, a job's parents are of its own queue, so a queue's dependencies move whole
        (a parent on another shard could never release its children)."""
        jobs = self._jobs
        for parent_id in parents:
            if jobs[parent_id].queue != queue:
                return Error(
                    ErrorCode.INVALID,
                    f"depends_on names {parent_id!r}, a job of another queue: with shards, "
                    "parents must be in the child's queue",
                )
        return None

    def _place_child(
        self, job: Job, q: _QueueIndex, parents: list[str], on_failure: ParentFailure, now: int
    ) -> None:
        """A new job with parents: WAITING for the unfinished ones; CANCELLED at once when a
        parent already failed (unless it runs anyway); READY when all have finished."""
        job.depends_on = Dependency(list(parents), on_failure)
        jobs = self._jobs
        pending: list[str] = []
        for parent_id in parents:
            parent = jobs[parent_id]
            state = parent.state
            if state is _DEAD or state is _CANCELLED:
                if on_failure is ParentFailure.CANCEL:
                    q.counts[_B_WAITING] += 1  # left at once by _cancel_child
                    job.state = _WAITING
                    self._cancel_child(job, parent, now, notify=False)
                    return
            elif state is not _ACKED:
                pending.append(parent_id)
        if pending:
            job.state = _WAITING
            q.counts[_B_WAITING] += 1
            self._deps.wait(job.id, pending)
            return
        q.counts[_B_WAITING] += 1
        job.state = _WAITING
        self._release_child(job, now, notify=False)

    def _enter_ready(self, q: _QueueIndex, job: Job) -> None:
        """A job just made READY (submitted, its parents done, released) joins its queue's
        runnable heaps, or the scheduled heap while its run_at is ahead of the clock."""
        run_at = job.run_at
        if run_at <= self._now:
            heapq.heappush(q.ready, (-job.priority, run_at, job.seq, job))
            heapq.heappush(q.since, (run_at, job.seq, job))
            q.counts[_B_RUNNABLE] += 1
        else:
            heapq.heappush(self._scheduled, (run_at, job.seq, job))
            q.counts[_B_SCHEDULED] += 1
            if run_at < self._due_hint:
                self._due_hint = run_at

    def _release_child(self, job: Job, now: int, *, notify: bool = True) -> None:
        """A WAITING job whose parents are done becomes READY (scheduled if run_at is ahead)."""
        q = self._queues[job.queue]
        q.counts[_B_WAITING] -= 1
        job.state = _READY
        self._enter_ready(q, job)
        if notify:
            job.updated_at = now
            self._notify(job, _WAITING, now)

    def _cancel_child(self, job: Job, parent: Job, now: int, *, notify: bool = True) -> None:
        """A WAITING job is cancelled because `parent` ended DEAD or CANCELLED."""
        q = self._queues[job.queue]
        q.counts[_B_WAITING] -= 1
        q.counts[_B_CANCELLED] += 1
        job.state = _CANCELLED
        job.result_error = f"parent {parent.id} is {parent.state.value}"
        job.updated_at = now
        self._done.add(job)
        self._counters.cancelled += 1
        if notify:  # a new job's submit is its only transition
            self._notify(job, _WAITING, now)

    def _job_finished(self, job: Job, now: int) -> None:
        """`job` just became ACKED, DEAD or CANCELLED: its WAITING children stop waiting for
        it; each is released, left waiting for its other parents, or cancelled (and then its
        own children in turn), in submission order, breadth first."""
        deps = self._deps
        if job.id not in deps.children:
            return
        jobs = self._jobs
        work = [job]
        i = 0
        while i < len(work):
            parent = work[i]
            i += 1
            for child_id, free in deps.parent_finished(parent.id):
                child = jobs[child_id]
                dependency = child.depends_on
                runs_anyway = (
                    dependency is not None and dependency.on_parent_failure is ParentFailure.RUN
                )
                if parent.state is _ACKED or runs_anyway:
                    if free:
                        self._release_child(child, now)
                    continue
                deps.drop(child_id)
                self._cancel_child(child, parent, now)
                if child_id in deps.children:
                    work.append(child)

    def _lease(self, cmd: Lease) -> Result:
        now = cmd.now
        self._advance(now)
        q = self._queues.get(cmd.queue)
        leased: list[Job] = []
        if q is None or not cmd.lease_ids:
            return LeaseResult(jobs=leased)
        self._promote_retries(q, now)
        counts = q.counts
        lease_ids = cmd.lease_ids
        settings = self._flow.get(cmd.queue)
        if settings is not None:
            allowed = flow.allowance(settings, counts[_B_RUNNING], self._now, len(lease_ids))
            if allowed < len(lease_ids):
                lease_ids = lease_ids[:allowed]
        worker = cmd.worker
        for lease_id in lease_ids:
            job = _pop_ready(q, self._jobs)
            if job is None:
                break
            counts[_B_RUNNABLE] -= 1
            counts[_B_RUNNING] += 1
            job.state = _RUNNING
            job.attempts += 1
            job.lease_id = lease_id
            job.lease_until = now + cmd.lease_ms
            job.updated_at = now
            job.worker = worker
            job.leased_at = now
            if job.progress is not None:
                job.progress = None  # the last attempt's progress is not this one's
            heapq.heappush(self._leases, (job.lease_until, job.seq, job))
            self._notify(job, _READY, now)
            leased.append(_copy_job(job))
        if leased and now + cmd.lease_ms < self._due_hint:
            self._due_hint = now + cmd.lease_ms
        if len(q.since) > 2 * counts[_B_RUNNABLE] + 1024:
            _rebuild_since(q)  # the leased jobs' entries stay behind until then
        if settings is not None:
            flow.record_leases(settings, self._now, len(leased))
        return LeaseResult(jobs=leased)

    def _ack(self, cmd: Ack) -> Result:
        job = self._running_job(cmd.job_id, cmd.lease_id)
        if isinstance(job, Error):
            return job
        now = cmd.now
        self._advance(now)
        q = self._queues[job.queue]
        q.counts[_B_RUNNING] -= 1
        q.counts[_B_ACKED] += 1
        job.state = _ACKED
        job.result = cmd.result
        job.result_error = None  # the current error only: the failures are in its history
        job.lease_id = None
        job.lease_until = None
        job.updated_at = now
        self._lease_left_behind()
        self._done.add(job)
        self._counters.acked += 1
        self._history.count(job.queue, self._now, ACKED)
        self._notify(job, _RUNNING, now)
        self._job_finished(job, now)
        return JobResult(job=_copy_job(job))

    def _fail(self, cmd: Fail) -> Result:
        job = self._running_job(cmd.job_id, cmd.lease_id)
        if isinstance(job, Error):
            return job
        self._advance(cmd.now)
        self._lease_left_behind()
        self._fail_attempt(job, cmd.error, cmd.now, final=not cmd.retry, outcome="failed")
        return JobResult(job=_copy_job(job))

    def _extend(self, cmd: Extend) -> Result:
        job = self._running_job(cmd.job_id, cmd.lease_id)
        if isinstance(job, Error):
            return job
        self._advance(cmd.now)
        lease_until = cmd.now + cmd.lease_ms
        if lease_until != job.lease_until:
            job.lease_until = lease_until
            self._lease_left_behind()
            heapq.heappush(self._leases, (lease_until, job.seq, job))
            if lease_until < self._due_hint:
                self._due_hint = lease_until
        return JobResult(job=_copy_job(job))

    def _release(self, cmd: Release) -> Result:
        """The lease given back: READY again (scheduled while `delay_ms` runs), the attempt the
        lease began not counted (recorded in the history as `released`), nothing added to the
        job's failures."""
        job = self._running_job(cmd.job_id, cmd.lease_id)
        if isinstance(job, Error):
            return job
        now = cmd.now
        self._advance(now)
        self._lease_left_behind()
        q = self._queues[job.queue]
        q.counts[_B_RUNNING] -= 1
        # In the history (who held it, from when to when), but not counted: `attempts` goes
        # back, so the next lease is this attempt again.
        job.history = ended_attempt(job, now, "released", None)
        job.state = _READY
        job.attempts -= 1
        job.lease_id = None
        job.lease_until = None
        job.worker = None
        job.leased_at = None
        job.updated_at = now
        job.run_at = now + cmd.delay_ms
        self._enter_ready(q, job)
        self._counters.released += 1
        self._notify(job, _RUNNING, now)
        return JobResult(job=_copy_job(job))

    def _cancel(self, cmd: Cancel) -> Result:
        job = self._jobs.get(cmd.job_id)
        if job is None:
            return _not_found(cmd.job_id)
        previous = job.state
        if previous is not _READY and previous is not _RETRY and previous is not _WAITING:
            return _wrong_state(job, "READY, RETRY or WAITING")
        now = cmd.now
        self._advance(now)
        if previous is _WAITING:
            self._deps.drop(job.id)
        # Its heap entry stays behind and is skipped: CANCELLED never leaves CANCELLED.
        self._queues[job.queue].counts[self._bucket(job)] -= 1
        self._queues[job.queue].counts[_B_CANCELLED] += 1
        job.state = _CANCELLED
        job.updated_at = now
        self._done.add(job)
        self._counters.cancelled += 1
        self._notify(job, previous, now)
        if previous is not _WAITING:  # a WAITING job has no heap entry
            self._cancel_left_behind()
        self._job_finished(job, now)
        return JobResult(job=_copy_job(job))

    def _requeue(self, cmd: Requeue) -> Result:
        job = self._jobs.get(cmd.job_id)
        if job is None:
            return _not_found(cmd.job_id)
        if job.state is not _DEAD:
            return _wrong_state(job, "DEAD")
        now = cmd.now
        self._advance(now)
        q = self._queues[job.queue]
        q.counts[_B_DEAD] -= 1
        q.counts[_B_RUNNABLE] += 1
        self._dead.leave(job)
        job.state = _READY
        job.attempts = 0
        job.run_at = now  # <= self._now, so runnable at once
        job.updated_at = now
        heapq.heappush(q.ready, (-job.priority, now, job.seq, job))
        heapq.heappush(q.since, (now, job.seq, job))
        self._counters.requeued += 1
        self._notify(job, _DEAD, now)
        return JobResult(job=_copy_job(job))

    def _expire(self, cmd: Expire) -> Result:
        now = cmd.now
        promoted = self._advance(now)
        expired = 0
        leases = self._leases
        cutoff = self._now
        # A queue fenced for a move (sharded mode) is frozen: its leases wait for its new shard.
        fenced = self._own.fenced
        frozen: list[TimedEntry] = []
        while leases and leases[0][0] <= cutoff:
            entry = heapq.heappop(leases)
            lease_until, _, job = entry
            if job.state is not _RUNNING or job.lease_until != lease_until:
                self._leases_stale -= 1
                continue
            if fenced and job.queue in fenced:
                frozen.append(entry)
                continue
            self._fail_attempt(job, _LEASE_EXPIRED, now, outcome="expired")
            self._counters.expired += 1
            expired += 1
        for entry in frozen:
            heapq.heappush(leases, entry)
        # After expiry, so a zero backoff comes back in the same Expire. By queue name, so the
        # transitions come in the same order after a restore, which rebuilds queues in another
        # order.
        for name in sorted(self._queues):
            if fenced and name in fenced:
                continue
            promoted += self._promote_retries(self._queues[name], now)
        return ExpireResult(expired=expired, promoted=promoted)

    def _purge(self, cmd: Purge) -> Result:
        self._advance(cmd.now)
        jobs = self._jobs
        forgotten: list[Job] = []
        done, dead = self._done, self._dead
        dead_before = cmd.finished_before if cmd.dead_before is None else cmd.dead_before
        # A queue fenced for a move (sharded mode) is frozen: its jobs and keys are the export.
        fenced = self._own.fenced
        frozen: list[tuple[HeldJobs, Job]] = []

        def forget_oldest(held: HeldJobs) -> None:
            job = held.take_oldest()
            if fenced and job.queue in fenced:
                frozen.append((held, job))
                return
            forgotten.append(job)
            del jobs[job.id]

        # By age first, then the oldest beyond the bounds: each set forgets its oldest.
        # Each job leaves `jobs` as it is taken: a job with two live-looking entries (requeued
        # and DEAD again within one ms) is then recognised as gone at its second.
        for held, before in ((done, cmd.finished_before), (dead, dead_before)):
            while (top := held.oldest(jobs)) is not None and top[0] <= before:
                forget_oldest(held)
        aged = len(forgotten)
        overhead = cmd.job_overhead_bytes
        while done.over(cmd.max_finished, cmd.max_finished_bytes, overhead):
            if done.oldest(jobs) is None:
                break
            forget_oldest(done)
        evicted = len(forgotten) - aged
        while dead.over(cmd.max_dead, 0, 0):
            if dead.oldest(jobs) is None:
                break
            forget_oldest(dead)
        dead_dropped = len(forgotten) - aged - evicted
        for held, job in frozen:
            held.add(job)

        unique_keys = self._unique
        for job in forgotten:
            if unique_keys:
                unique_keys.job_purged(job.id, self._now)
            if job.state is _DEAD:
                self._dead_groups.remove(job)
            counts = self._queues[job.queue].counts
            counts[_BUCKET_OF_STATE[job.state]] -= 1
            if not any(counts):
                # No job left: forget the queue, so it no longer counts against max_queues.
                # Its heaps can only hold entries of cancelled jobs, now purged.
                del self._queues[job.queue]
        purged = len(forgotten)
        counters = self._counters
        counters.purged += purged
        counters.evicted += evicted
        counters.dead_dropped += dead_dropped
        self._forget_from_order(purged)
        if forgotten and self._on_forget is not None:
            try:
                self._on_forget(forgotten, cmd.now)
            except Exception:
                logger.exception("on_forget listener failed")

        keys = 0
        expiry = self._idempotency_expiry
        remembered = self._idempotency
        most = cmd.max_idempotency_keys
        frozen_keys: list[tuple[int, str, str]] = []
        # Keys whose keep time is over, then (a bound) those whose keep time ends first.
        while expiry and (expiry[0][0] <= self._now or (most and len(remembered) > most)):
            keep_end, owner, key = entry = heapq.heappop(expiry)
            mapped = remembered.get((owner, key))
            if mapped is not None and mapped[2] == keep_end:
                if fenced and self._own.key_fenced(key):
                    frozen_keys.append(entry)
                    continue
                del remembered[(owner, key)]
                keys += 1
        for entry in frozen_keys:
            heapq.heappush(expiry, entry)
        if unique_keys:
            unique_keys.expire(self._now, jobs)
        return PurgeResult(purged, keys, evicted, dead_dropped)

    # -- schedules -----------------------------------------------------------------------------

    def _create_schedule(self, cmd: CreateSchedule) -> Result:
        spec = cmd.spec
        existing = self._schedules.get(spec.name)
        if existing is not None:
            if existing.spec == spec:
                return ScheduleResult(schedule=copy(existing), created=False)
            return Error(
                ErrorCode.SCHEDULE_EXISTS,
                f"a schedule named {spec.name!r} exists with another definition: change it "
                "(PATCH), or delete it first",
            )
        if cmd.max_schedules and len(self._schedules) >= cmd.max_schedules:
            return Error(
                ErrorCode.TOO_MANY_SCHEDULES,
                f"{len(self._schedules)} schedules exist, the most allowed: delete one first",
            )
        now = cmd.now
        self._advance(now)
        schedule = Schedule(spec, cmd.paused, now, now, 1, cmd.next_due)
        self._schedules[spec.name] = schedule
        insort(self._schedule_names, spec.name)
        self._schedule_moved(schedule)
        return ScheduleResult(schedule=copy(schedule), created=True)

    def _update_schedule(self, cmd: UpdateSchedule) -> Result:
        schedule = self._schedules.get(cmd.spec.name)
        if schedule is None:
            return _no_schedule(cmd.spec.name)
        if schedule.version != cmd.version:
            return Error(
                ErrorCode.INVALID_STATE,
                f"schedule {cmd.spec.name!r} changed meanwhile (version {schedule.version}, "
                f"not {cmd.version})",
            )
        last = schedule.last_due
        if cmd.next_due is not None and last is not None and cmd.next_due <= last:
            return Error(
                ErrorCode.INVALID_STATE,
                f"schedule {cmd.spec.name!r} has accounted for its due time {last}: the next "
                "one must be later",
            )
        self._advance(cmd.now)
        schedule.spec = cmd.spec
        schedule.paused = cmd.paused
        schedule.next_due = cmd.next_due
        schedule.updated_at = cmd.now
        schedule.version += 1
        self._schedule_moved(schedule)
        return ScheduleResult(schedule=copy(schedule))

    def _delete_schedule(self, cmd: DeleteSchedule) -> Result:
        schedule = self._schedules.get(cmd.name)
        if schedule is None:
            return _no_schedule(cmd.name)
        refusal = self._schedule_refusal(schedule)
        if refusal is not None:
            return refusal
        del self._schedules[cmd.name]
        self._advance(cmd.now)
        names = self._schedule_names
        del names[bisect_left(names, cmd.name)]
        # Its heap entry is skipped from now on; the jobs it made stay.
        return ScheduleResult(schedule=copy(schedule))

    def _schedule_refusal(self, schedule: Schedule) -> Error | None:
        """Sharded: a schedule of a fenced queue is frozen with it (the move exports it), and
        one of a queue this shard does not serve makes nothing here (an older log's)."""
        own = self._own
        return None if own.shard is None else own.queue_refusal(schedule.spec.queue)

    def _fire_schedule(self, cmd: FireSchedule) -> Result:
        schedule = self._schedules.get(cmd.name)
        if schedule is None:
            return _no_schedule(cmd.name)
        refusal = self._schedule_refusal(schedule)
        if refusal is not None:
            return refusal
        if schedule.paused:
            return Error(ErrorCode.INVALID_STATE, f"schedule {cmd.name!r} is paused")
        if schedule.next_due != cmd.due:
            # Already fired (a replay, a second ticker) or computed from a stale view.
            return Error(
                ErrorCode.INVALID_STATE,
                f"schedule {cmd.name!r} is not due at {cmd.due}: its next due time is "
                f"{schedule.next_due}",
            )
        if cmd.job_id is not None and cmd.job_id in self._jobs:
            return Error(ErrorCode.INVALID, f"duplicate job id {cmd.job_id!r}")
        now = cmd.now
        self._advance(now)
        spec = schedule.spec
        job: Job | None = None
        overlap_skipped = False
        if cmd.job_id is not None:
            if spec.overlap is OverlapPolicy.SKIP and self._unfinished(schedule.last_job):
                overlap_skipped = True
                schedule.skipped += 1
            else:
                # The job is made as a submit makes it (one path for every new job), with no
                # queue cap: schedules have their own (CreateSchedule.max_schedules).
                new_job = NewJob(cmd.job_id, spec.queue, spec.payload, spec.priority,
                                 spec.max_retries)  # fmt: skip
                self._submit(Submit(now, [new_job]))
                job = self._jobs.get(cmd.job_id)
                if job is not None:
                    job.scheduled_by = ScheduleRun(cmd.name, cmd.last_due)
                    schedule.last_job = job.id
                    schedule.runs += 1
        schedule.missed += cmd.missed
        schedule.last_due = cmd.last_due
        schedule.next_due = cmd.next_due
        schedule.last_fired_at = now
        self._schedule_moved(schedule)
        return FireResult(
            schedule=copy(schedule),
            job=None if job is None else copy(job),
            overlap_skipped=overlap_skipped,
        )

    # -- queue flow settings ---------------------------------------------------------------------

    def _set_queue(self, cmd: SetQueue) -> Result:
        settings = self._flow.get(cmd.queue)
        if settings is None:
            if cmd.max_queues and len(self._flow) >= cmd.max_queues:
                return Error(
                    ErrorCode.TOO_MANY_QUEUES,
                    f"{len(self._flow)} queues already have settings, the most allowed (max "
                    "queues): clear one (resume it, remove its limits) first",
                )
            settings = QueueSettings(cmd.queue)
        problem = flow.apply_settings(settings, cmd)
        if problem:  # the queue's state refuses it: the same command is fine once it has a window
            return Error(ErrorCode.INVALID_STATE, problem)
        self._advance(cmd.now)
        if flow.is_default(settings):
            self._flow.pop(cmd.queue, None)
        else:
            self._flow[cmd.queue] = settings
        return QueueResult(settings=_settings_copy(settings))

    def queue_settings(self, name: str) -> QueueSettings:
        """The queue's flow settings (a copy; defaults for a queue without any)."""
        settings = self._flow.get(name) if type(name) is str else None
        return QueueSettings(name) if settings is None else _settings_copy(settings)

    def queue_settings_page(self) -> list[QueueSettings]:
        """Every queue with settings of its own, by name: copies without their lease times
        (up to rate_limit of them each; /stats reads this every second). queue_settings(name)
        has them."""
        return [
            msgspec.structs.replace(self._flow[name], recent_leases=[])
            for name in sorted(self._flow)
        ]

    def has_queue_settings(self, queue: str) -> bool:
        return queue in self._flow

    def lease_blocked_until(self, queue: str, now: int) -> int | None:
        """None when the queue's flow settings let a Lease at `now` take a job; otherwise the
        time its rate window frees a slot, or -1 when only a change (resume, a running job
        finishing) can."""
        settings = self._flow.get(queue) if type(queue) is str else None
        if settings is None:
            return None
        q = self._queues.get(queue)
        running = 0 if q is None else q.counts[_B_RUNNING]
        return flow.blocked_until(settings, running, max(self._now, now))

    # -- bulk actions ---------------------------------------------------------------------------

    def _bulk(self, cmd: BulkRequeue | BulkCancel) -> Result:
        """One chunk of a bulk action: each job moved as its own Requeue or Cancel would move
        it (the same events, counters and indexes); a job in another state is skipped."""
        single = self._requeue if isinstance(cmd, BulkRequeue) else self._cancel
        kind = Requeue if isinstance(cmd, BulkRequeue) else Cancel
        self._advance(cmd.now)
        changed = [
            job_id
            for job_id in cmd.job_ids
            if not isinstance(single(kind(cmd.now, job_id)), Error)  # type: ignore[arg-type]
        ]
        return BulkResult(changed=changed)

    def _unfinished(self, job_id: str | None) -> bool:
        """Whether that job is pending or running (READY, RETRY, RUNNING)."""
        job = None if job_id is None else self._jobs.get(job_id)
        return job is not None and job.state not in FINISHED_STATES

    def _schedule_moved(self, schedule: Schedule) -> None:
        """Index the schedule's (new) next due time. Entries left behind are skipped when they
        reach the top; once they could outnumber the live ones, the heap is rebuilt."""
        if schedule.paused or schedule.next_due is None:
            return
        heap = self._schedule_due
        heapq.heappush(heap, (schedule.next_due, schedule.spec.name))
        if schedule.next_due < self._due_hint:
            self._due_hint = schedule.next_due
        if len(heap) > 1024 and len(heap) > 2 * len(self._schedules):
            self._schedule_due = [
                (s.next_due, name)
                for name, s in self._schedules.items()
                if not s.paused and s.next_due is not None
            ]
            heapq.heapify(self._schedule_due)

    # -- insight (issue 19): progress, dead-letter groups, where a job stands ------------------

    def _progress(self, cmd: Progress) -> Result:
        job = self._running_job(cmd.job_id, cmd.lease_id)
        if isinstance(job, Error):
            return job
        self._advance(cmd.now)
        job.progress = JobProgress(float(cmd.percent), cmd.note, cmd.now)
        return JobResult(job=_copy_job(job))

    def _settle_dead_group(self, cmd: SettleDeadGroup) -> Result:
        now = cmd.now
        self._advance(now)
        groups = self._dead_groups
        taken = groups.take(cmd.fingerprint, cmd.limit, cmd.dead_before)
        for job in taken:
            if cmd.action is DeadGroupAction.REQUEUE:
                self._requeue(Requeue(now, job.id))
                continue
            q = self._queues[job.queue]
            q.counts[_B_DEAD] -= 1
            q.counts[_B_CANCELLED] += 1
            self._dead.leave(job)  # its DEAD entry is skipped from now on (the state moved)
            job.state = _CANCELLED
            job.updated_at = now
            self._done.add(job)
            self._counters.cancelled += 1
            self._notify(job, _DEAD, now)
        group = groups.get(cmd.fingerprint)
        return DeadGroupResult(
            job_ids=[job.id for job in taken], remaining=0 if group is None else len(group.jobs)
        )

    def dead_groups(self) -> list[DeadGroupSummary]:
        """The dead letters grouped by their last error's fingerprint, biggest first."""
        return self._dead_groups.summaries()

    def dead_group(self, fingerprint: str) -> DeadGroup | None:
        """One group (live: callers must not mutate it), or None."""
        return self._dead_groups.get(fingerprint) if type(fingerprint) is str else None

    def dead_fingerprint(self, job_id: str) -> str | None:
        """The group of a DEAD job, or None."""
        return self._dead_groups.fingerprint_of(job_id)

    def runnable_ahead(self, job: Job, limit: int = AHEAD_COUNTED) -> int:
        """How many runnable jobs of its queue a Lease would take before this READY job:
        higher priority, or the same priority and earlier run_at or submission; counted up
        to `limit` (the answer is then "at least limit"). Walks only the part of the lease
        heap ahead of the job (a heap node is never ahead of its parent), so it costs
        O(min(answer, limit)), never the whole queue: a question about one job."""
        q = self._queues.get(job.queue)
        if q is None:
            return 0
        key = (-job.priority, job.run_at, job.seq)
        ready = q.ready
        size = len(ready)
        stack = [0]
        ahead = 0
        while stack:
            i = stack.pop()
            if i >= size:
                continue
            entry = ready[i]
            if (entry[0], entry[1], entry[2]) >= key:
                continue  # it and everything below it come after the job
            if entry[3].state is _READY:
                ahead += 1
                if ahead >= limit:
                    return ahead
            stack.append(2 * i + 1)
            stack.append(2 * i + 2)
        if q.cold_ready is not None:  # the entries still cold come after the heap's, in order
            ahead += q.cold_ready.ahead_of(key, limit - ahead)
        return ahead

    def awaited_parents(self, job_id: str) -> list[str]:
        """The parents a WAITING job still waits for, in the order given (a copy)."""
        return list(self._deps.awaited.get(job_id, ()))

    def running_in(self, queue: str) -> int:
        """How many jobs of the queue are RUNNING."""
        q = self._queues.get(queue) if type(queue) is str else None
        return 0 if q is None else q.counts[_B_RUNNING]

    # -- sharding (issue 23): ownership of queues, moves (core/ownership.py) --------------------

    @property
    def ownership(self) -> Ownership:
        """The ownership table (read-only for callers): `shard` None while ownership is off."""
        return self._own

    def export_queue(self, queue: str, move_id: str, limit: int = CHUNK_BYTES) -> list[ImportJobs]:
        """The export of a queue fenced by `move_id`: its jobs in submission order, its keys,
        settings and awaited parents as ImportJobs chunks with one crc (ownership.py). Every
        replica that applied the fence answers the same (nothing changes a fenced queue).
        Raises ValueError when the queue is not fenced by that move."""
        owner = self._own.queues.get(queue)
        if owner is None or owner.fence != move_id:
            raise ValueError(f"queue {queue!r} is not fenced by move {move_id!r} here")
        self._index_all()
        jobs = self._jobs
        queue_jobs = [job for job in self._order if job.queue == queue and jobs.get(job.id) is job]
        awaited = [
            (child, parents)
            for child, parents in self._deps.awaited.items()
            if jobs[child].queue == queue
        ]
        return export_chunks(
            move_id,
            queue,
            queue_jobs,
            self._own.queue_keys(self._idempotency, queue),
            self._flow.get(queue),
            awaited,
            self._unique.with_prefix(scoped_key(queue, "")),
            limit,
            self._schedules_of(queue),
        )

    def _schedules_of(self, queue: str) -> list[Schedule]:
        """The queue's schedules, by name (sharded, they live and move with their queue)."""
        schedules = self._schedules
        return [schedules[n] for n in self._schedule_names if schedules[n].spec.queue == queue]

    def _ownership_off(self) -> Error | None:
        if self._own.shard is None:
            return Error(
                ErrorCode.INVALID_STATE,
                "ownership is off: this log is not a shard's (StartShard comes first)",
            )
        return None

    def _start_shard(self, cmd: StartShard) -> Result:
        own = self._own
        if own.shard is not None:
            if own.shard == cmd.shard:
                return OwnershipResult("", False, repeated=True)
            return Error(
                ErrorCode.INVALID_STATE, f"this log is shard {own.shard}'s, not {cmd.shard}'s"
            )
        if self._jobs or self._idempotency or self._schedules or self._flow:
            return Error(
                ErrorCode.INVALID_STATE, "a shard's log starts empty: this one holds queue state"
            )
        self._advance(cmd.now)
        own.shard = cmd.shard
        return OwnershipResult("", False)

    def _adopt_queue(self, cmd: AdoptQueue) -> Result:
        off = self._ownership_off()
        if off is not None:
            return off
        own = self._own
        name, move_id = cmd.queue, cmd.move_id
        owner = own.queues.get(name)
        if owner is not None and owner.epoch == cmd.epoch and owner.move_id == move_id:
            return _standing(name, owner, repeated=True)
        if owner is not None:
            return Error(
                ErrorCode.INVALID_STATE,
                f"queue {name!r} is on this shard already (epoch {owner.epoch})",
            )
        if not move_id:  # a new queue, created here
            self._advance(cmd.now)
            owner = own.queues[name] = QueueOwner(cmd.epoch)
            own.tombstones.pop(name, None)
            return _standing(name, owner)
        ended = own.ended.get(move_id)
        if ended is not None:
            how = "aborted" if ended else "adopted (and its queue released since)"
            return Error(ErrorCode.INVALID_STATE, f"move {move_id!r} was {how} here")
        staged = own.staged.get(move_id)
        if staged is None or any(chunk.queue != name for chunk in staged.values()):
            return Error(
                ErrorCode.INVALID_STATE, f"no chunk of move {move_id!r} for {name!r} is staged"
            )
        got = staged_import(staged)
        if isinstance(got, str):
            return Error(ErrorCode.INVALID_STATE, f"move {move_id!r}: {got}")
        jobs = self._jobs
        seen: set[str] = set()
        for job in got.jobs:
            if job.id in jobs or job.id in seen:
                return Error(ErrorCode.INVALID, f"move {move_id!r} repeats job id {job.id!r}")
            seen.add(job.id)
        for schedule in got.schedules:
            # Names are checked per shard when a schedule is made: this shard may hold one of
            # the same name for a queue of its own, which the move must not replace.
            held = self._schedules.get(schedule.spec.name)
            if held is not None and held.spec.queue != name:
                return Error(
                    ErrorCode.SCHEDULE_EXISTS,
                    f"move {move_id!r}: schedule {schedule.spec.name!r} of {name!r} is the name "
                    f"of this shard's schedule for queue {held.spec.queue!r}: rename one of "
                    "them, then move again",
                )
        self._advance(cmd.now)
        self._import(name, got, cmd.now)
        owner = own.queues[name] = QueueOwner(cmd.epoch, move_id)
        own.tombstones.pop(name, None)
        del own.staged[move_id]
        own.ended[move_id] = False
        return _standing(name, owner, jobs=len(got.jobs))

    def _import(self, name: str, got: Staged, now: int) -> None:
        """Make a move's jobs live in one step, after this shard's last seq in their order,
        keeping their states, attempts, leases and results; then their keys and settings."""
        q = self._queue(name)
        jobs = self._jobs
        owners = self._owners
        counts = q.counts
        stubs = self._own.stubs
        runnable: list[Job] = []
        for job in got.jobs:
            self._seq += 1
            job.seq = self._seq
            job.queue = q.name
            job.owner = owners.setdefault(job.owner, job.owner)
            state = job.state
            if state is _READY:
                if job.run_at <= self._now:
                    heapq.heappush(q.ready, (-job.priority, job.run_at, job.seq, job))
                    heapq.heappush(q.since, (job.run_at, job.seq, job))
                    counts[_B_RUNNABLE] += 1
                    runnable.append(job)
                else:
                    heapq.heappush(self._scheduled, (job.run_at, job.seq, job))
                    counts[_B_SCHEDULED] += 1
            elif state is _RUNNING:
                assert job.lease_until is not None  # checked by ownership.command_problem
                heapq.heappush(self._leases, (job.lease_until, job.seq, job))
                counts[_B_RUNNING] += 1
            elif state is _RETRY:
                heapq.heappush(q.retry, (job.run_at, job.seq, job))
                counts[_B_RETRY] += 1
            else:
                counts[_BUCKET_OF_STATE[state]] += 1
                if state is _DEAD:
                    self._dead.add(job)
                    self._dead_groups.add(job)
                elif state is _ACKED or state is _CANCELLED:
                    self._done.add(job)
            jobs[job.id] = job
            self._order.append(job)
            if stubs:
                stubs.pop(job.id, None)  # a queue moving back: its jobs are here again
        deps = self._deps
        for child, parents in got.awaited:
            if child in jobs and jobs[child].state is _WAITING:
                deps.wait(child, parents)
        for key in got.keys:
            self._idempotency[(key.owner, key.key)] = (key.job_id, key.fingerprint, key.keep_end)
            heapq.heappush(self._idempotency_expiry, (key.keep_end, key.owner, key.key))
        if got.unique:
            self._unique.load(got.unique)
        if got.settings is not None:
            got.settings.name = name
            self._flow[name] = got.settings
        for schedule in got.schedules:
            # One of that name here already is this queue's own, left from an earlier stay
            # (AdoptQueue refuses a name another queue's schedule holds): it is replaced.
            if schedule.spec.name not in self._schedules:
                insort(self._schedule_names, schedule.spec.name)
            self._schedules[schedule.spec.name] = schedule
            self._schedule_moved(schedule)
        # Lease waiters on this shard learn of the runnable jobs as of a scheduled job coming
        # due (previous READY): the same wake-up, no new kind of event.
        for job in runnable:
            self._notify(job, _READY, now)

    def _fence_queue(self, cmd: FenceQueue) -> Result:
        off = self._ownership_off()
        if off is not None:
            return off
        own = self._own
        name, move_id = cmd.queue, cmd.move_id
        owner = own.queues.get(name)
        if owner is None:
            return own.queue_refusal(name) or Error(ErrorCode.NOT_OWNER, name)
        if owner.fence == move_id:
            return _standing(name, owner, repeated=True)
        if owner.fence:
            return moving(name)
        if move_id in own.ended:
            return Error(ErrorCode.INVALID_STATE, f"move {move_id!r} has ended here")
        self._advance(cmd.now)
        owner.fence = move_id
        own.fenced[name] = move_id
        return _standing(name, owner)

    def _import_jobs(self, cmd: ImportJobs) -> Result:
        off = self._ownership_off()
        if off is not None:
            return off
        own = self._own
        name, move_id = cmd.queue, cmd.move_id
        ended = own.ended.get(move_id)
        if ended is False:  # adopted already: a late, retried chunk
            return OwnershipResult(name, name in own.queues, repeated=True)
        if ended:
            return Error(ErrorCode.INVALID_STATE, f"move {move_id!r} was aborted here")
        if name in own.queues:
            return Error(ErrorCode.INVALID_STATE, f"queue {name!r} is on this shard already")
        staged = own.staged.get(move_id)
        if staged:
            first = next(iter(staged.values()))
            if first.queue != name or first.total != cmd.total or first.crc != cmd.crc:
                return Error(
                    ErrorCode.INVALID,
                    f"chunk {cmd.chunk} of move {move_id!r} disagrees with the chunks staged",
                )
            if cmd.chunk in staged:
                return OwnershipResult(name, False, staged=len(staged), repeated=True)
        self._advance(cmd.now)
        chunks = own.staged.setdefault(move_id, {})
        chunks[cmd.chunk] = cmd
        return OwnershipResult(name, False, staged=len(chunks))

    def _release_queue(self, cmd: ReleaseQueue) -> Result:
        off = self._ownership_off()
        if off is not None:
            return off
        own = self._own
        name, move_id = cmd.queue, cmd.move_id
        tomb = own.tombstones.get(name)
        if tomb is not None and tomb.move_id == move_id:
            return OwnershipResult(name, False, tomb.epoch, repeated=True)
        owner = own.queues.get(name)
        if owner is None:
            return own.queue_refusal(name) or Error(ErrorCode.NOT_OWNER, name)
        # The source releases the queue its move fenced; a target releases a queue it adopted
        # by that move and never served (an abort after step 3). Without a move, only an empty
        # queue created here is given back (a placement CAS lost to another node, §2.2).
        if not move_id and not owner.fence and not owner.move_id:
            q = self._queues.get(name)
            if q is not None and any(q.counts):
                return Error(
                    ErrorCode.INVALID_STATE,
                    f"queue {name!r} holds jobs: only an empty queue is given back without a move",
                )
        elif owner.fence != move_id and (owner.fence or owner.move_id != move_id):
            return Error(
                ErrorCode.INVALID_STATE, f"queue {name!r} is not held for move {move_id!r}"
            )
        self._advance(cmd.now)
        dropped = self._drop_queue(name)
        stubs = own.stubs
        for job_id in dropped:
            stubs[job_id] = cmd.target
        epoch = owner.epoch + 1
        own.tombstones[name] = Tombstone(cmd.target, epoch, move_id)
        del own.queues[name]
        own.fenced.pop(name, None)
        return OwnershipResult(name, False, epoch, jobs=len(dropped))

    def _drop_queue(self, name: str) -> list[str]:
        """Forget every job, key and setting of a queue (it now lives on another shard); the
        ids of the jobs dropped, in submission order. O(jobs): once per move."""
        self._index_all()
        jobs = self._jobs
        dropped = [job for job in self._order if job.queue == name and jobs.get(job.id) is job]
        for job in dropped:
            del jobs[job.id]
            if job.state is _DEAD:
                self._dead_groups.remove(job)
            elif job.state is _WAITING:
                self._deps.drop(job.id)
        self._unique.drop_prefix(scoped_key(name, ""))
        for schedule in self._schedules_of(name):  # they went with the queue
            del self._schedules[schedule.spec.name]
            names = self._schedule_names
            del names[bisect_left(names, schedule.spec.name)]
        self._order = [job for job in self._order if jobs.get(job.id) is job]
        self._order_purged = 0
        self._scheduled = [entry for entry in self._scheduled if entry[2].queue != name]
        heapq.heapify(self._scheduled)
        self._leases = [entry for entry in self._leases if entry[2].queue != name]
        heapq.heapify(self._leases)
        for held in (self._done, self._dead):
            live = {
                entry[2].id: entry[2]
                for entry in held.heap
                if entry[2].queue != name
                and entry[2].state in held.states
                and entry[2].updated_at == entry[0]
                and jobs.get(entry[2].id) is entry[2]
            }
            held.rebuild(list(live.values()))
        self._queues.pop(name, None)
        self._flow.pop(name, None)
        prefix = scoped_key(name, "")
        for map_key in [k for k in self._idempotency if k[1].startswith(prefix)]:
            del self._idempotency[map_key]  # their expiry entries are skipped when due
        return [job.id for job in dropped]

    def _abort_move(self, cmd: AbortMove) -> Result:
        off = self._ownership_off()
        if off is not None:
            return off
        own = self._own
        name, move_id = cmd.queue, cmd.move_id
        if own.ended.get(move_id) is False:
            return Error(
                ErrorCode.INVALID_STATE,
                f"move {move_id!r} was adopted here: release the queue (ReleaseQueue) instead",
            )
        owner = own.queues.get(name)
        fenced = owner is not None and owner.fence == move_id
        staged = move_id in own.staged
        if not fenced and not staged and own.ended.get(move_id):
            return OwnershipResult(name, owner is not None, repeated=True)
        self._advance(cmd.now)
        if fenced:
            assert owner is not None
            owner.fence = ""
            del own.fenced[name]
        own.staged.pop(move_id, None)
        own.ended[move_id] = True
        if owner is None:
            return OwnershipResult(name, False)
        return _standing(name, owner)

    # -- shared steps --------------------------------------------------------------------------

    def _advance(self, now: int) -> int:
        """Move the clock to `now` (it never goes back) and make scheduled READY jobs that are
        now due runnable; returns how many.

        Every command does this, not only Lease and Expire, so that stats count a job as
        scheduled exactly while its run_at is ahead of the clock. The job stays READY, but the
        listener still hears of it (previous READY): whoever waits for work on that queue must
        learn that there is some, whichever command brought the clock past run_at."""
        if now > self._now:
            self._now = now
        cutoff = self._now
        scheduled = self._scheduled
        promoted = 0
        while scheduled and scheduled[0][0] <= cutoff:
            run_at, _, job = heapq.heappop(scheduled)
            if job.state is not _READY or job.run_at != run_at:
                continue  # cancelled while scheduled
            q = self._queues[job.queue]
            q.counts[_B_SCHEDULED] -= 1
            q.counts[_B_RUNNABLE] += 1
            heapq.heappush(q.ready, (-job.priority, run_at, job.seq, job))
            heapq.heappush(q.since, (run_at, job.seq, job))
            self._notify(job, _READY, now)
            promoted += 1
        return promoted

    def _promote_retries(self, q: _QueueIndex, now: int) -> int:
        """RETRY jobs of `q` whose backoff is over become READY; returns how many."""
        retry = q.retry
        cutoff = self._now
        promoted = 0
        while retry and retry[0][0] <= cutoff:
            run_at, _, job = heapq.heappop(retry)
            if job.state is not _RETRY or job.run_at != run_at:
                continue  # cancelled while waiting
            q.counts[_B_RETRY] -= 1
            q.counts[_B_RUNNABLE] += 1
            job.state = _READY
            job.updated_at = now
            heapq.heappush(q.ready, (-job.priority, run_at, job.seq, job))
            heapq.heappush(q.since, (run_at, job.seq, job))
            self._notify(job, _RETRY, now)
            promoted += 1
        return promoted

    def _fail_attempt(
        self, job: Job, error: str, now: int, *, final: bool = False, outcome: str
    ) -> None:
        """A RUNNING job's attempt failed: RETRY after a backoff, or DEAD when retries are
        spent or the failure is `final` (an ack with `"retry": false`). The caller has already
        accounted for the job's lease heap entry."""
        q = self._queues[job.queue]
        q.counts[_B_RUNNING] -= 1
        job.history = ended_attempt(job, now, outcome, error)
        job.worker = None
        job.leased_at = None
        job.result_error = error
        job.lease_id = None
        job.lease_until = None
        job.updated_at = now
        self._counters.failed += 1
        self._history.count(job.queue, self._now, FAILED)
        if final or job.attempts > job.max_retries:
            job.state = _DEAD
            q.counts[_B_DEAD] += 1
            self._counters.dead += 1
            self._dead.add(job)
            self._notify(job, _RUNNING, now)
            self._job_finished(job, now)
            return
        else:
            config = self._config
            job.state = _RETRY
            job.run_at = now + retry_backoff_ms(
                job.id, job.attempts, config.retry_base_ms, config.retry_max_ms
            )
            q.counts[_B_RETRY] += 1
            self._counters.retried += 1
            heapq.heappush(q.retry, (job.run_at, job.seq, job))
            if job.run_at < self._due_hint:
                self._due_hint = job.run_at
        self._notify(job, _RUNNING, now)

    def _forget_from_order(self, purged: int) -> None:
        """`purged` more jobs of the submission-order index are gone. Each lingering entry
        keeps a whole forgotten job (payload, result) alive, so they must not pile up: with
        compaction only at half the index, RSS followed a high-water mark of twice the jobs
        held (issue 21's soak: 80-99 MiB with 20k held). Jobs mostly finish in submission
        order (FIFO), so a purged prefix is cut at once (one memmove); the rest is compacted
        once it could be an eighth of the index (a pass over it every len/8 purges)."""
        order = self._order
        jobs = self._jobs
        head = 0
        end = len(order)
        while head < end and jobs.get((job := order[head]).id) is not job:
            head += 1
        if head:
            del order[:head]
        self._order_purged += purged - head
        if self._order_purged > 1024 and self._order_purged * 8 > len(order):
            self._index_all()
            self._order = [job for job in order if jobs.get(job.id) is job]
            self._order_purged = 0

    def _lease_left_behind(self) -> None:
        """One more lease heap entry no longer matches its job. Rebuild the heap once stale
        entries outnumber live ones, so long leases settled early do not pile up."""
        self._leases_stale += 1
        if self._leases_stale > 1024 and self._leases_stale * 2 > len(self._leases):
            self._leases = [
                (job.lease_until, job.seq, job)
                for _, _, job in self._leases
                if job.state is _RUNNING and job.lease_until is not None
            ]
            # A job may have had several live-looking entries; keep one per job.
            unique = {entry[2].id: entry for entry in self._leases}
            self._leases = list(unique.values())
            heapq.heapify(self._leases)
            self._leases_stale = 0

    def _cancel_left_behind(self) -> None:
        """One more waiting-job heap entry belongs to a cancelled job. Drop them all once they
        could be half the entries, so mass cancels (and the purges after) free their memory."""
        self._waiting_stale += 1
        if self._waiting_stale <= 1024 or self._waiting_stale * 2 <= self._waiting_entries():
            return
        for q in self._queues.values():
            q.ready = [entry for entry in q.ready if entry[3].state is not _CANCELLED]
            q.retry = [entry for entry in q.retry if entry[2].state is not _CANCELLED]
            heapq.heapify(q.ready)
            heapq.heapify(q.retry)
            _rebuild_since(q)
        self._scheduled = [entry for entry in self._scheduled if entry[2].state is not _CANCELLED]
        heapq.heapify(self._scheduled)
        self._waiting_stale = 0

    def _waiting_entries(self) -> int:
        entries = len(self._scheduled)
        for q in self._queues.values():
            entries += len(q.ready) + len(q.retry)
        return entries

    def _running_job(self, job_id: str, lease_id: str | None) -> Job | Error:
        job = self._jobs.get(job_id)
        if job is None:
            return _not_found(job_id)
        if job.state is not _RUNNING:
            return _wrong_state(job, "RUNNING")
        if lease_id is not None and lease_id != job.lease_id:
            return Error(
                ErrorCode.LEASE_MISMATCH, f"the lease named is not the current lease of {job_id!r}"
            )
        return job

    def _bucket(self, job: Job) -> int:
        if job.state is _READY:
            return _B_RUNNABLE if job.run_at <= self._now else _B_SCHEDULED
        return _BUCKET_OF_STATE[job.state]

    def _queue(self, name: str) -> _QueueIndex:
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = _QueueIndex(name)
        return q

    def _notify(self, job: Job, previous: JobState | None, now: int) -> None:
        # Every state change passes here, so the dead-letter groups (issue 19) follow each way
        # into and out of DEAD, whichever command took it; a purge, which forgets jobs without
        # a transition, tells them itself.
        returned = self._returned
        if (
            returned is not None
            and job.state is _READY
            and previous is not None
            and previous is not _READY  # a scheduled job come due, never in a cold run
            and previous is not _WAITING  # nor one whose parents finished
            and job.seq <= self._cold_seq
        ):
            returned.add(job.id)  # see _load_cold
        if previous is _DEAD:
            self._dead_groups.remove(job)
        if job.state is _DEAD:
            self._dead_groups.add(job)
        listener = self._on_transition
        if listener is None:
            return
        # The state change has happened; a broken listener must not undo half a command.
        try:
            listener(job, previous, now)
        except Exception:
            logger.exception("on_transition listener failed for job %r", job.id)

    def _load(self, snap: _Snapshot) -> None:
        """Fill this fresh machine from a decoded snapshot, rebuilding every index.

        One pass over the jobs does all the per-job work (checking submission order, making the
        queue indexes, sharing strings and ints, the runnable, since and scheduled entries), and
        whole-list passes (map, Counter, heapify) do the rest: each extra pass over a million
        jobs costs 50-100 ms, and restoring them is what a restart waits for."""
        now = snap.now
        self._now = now
        self._seq = snap.seq
        self._counters = snap.counters
        all_jobs = snap.jobs
        cold = snap.cold
        if cold is None:  # a snapshot of an older version: every job is indexed here
            warm_jobs = all_jobs
            self._order = all_jobs
        else:
            warm_positions = positions(cold.warm, len(all_jobs))
            warm_jobs = list(map(all_jobs.__getitem__, warm_positions))
            # A copy: _order loses its purged prefix in place, the cold runs keep positions.
            self._order = list(all_jobs)
        jobs = dict(zip(map(_id_of, warm_jobs), warm_jobs, strict=True))
        if len(jobs) != len(warm_jobs):
            raise ValueError("snapshot repeats a job id")
        self._jobs = jobs

        queues = self._queues
        owners = self._owners
        scheduled = self._scheduled
        # The other states, each in submission order (READY goes straight into its entries).
        by_state: dict[JobState, list[Job]] = {state: [] for state in JobState}
        last_seq = -(2**63)  # below any seq: a msgpack int is a signed 64-bit one at least
        for job in warm_jobs:
            seq = job.seq
            if seq <= last_seq:
                raise ValueError("snapshot jobs are not in submission order")
            last_seq = seq
            # Share the strings and ints a live Submit shares: it saves ~100 bytes a job.
            q = queues.get(job.queue)
            if q is None:
                q = queues[job.queue] = _QueueIndex(job.queue)
            job.queue = q.name
            owner = job.owner
            if owner:  # "" is one string already
                job.owner = owners.setdefault(owner, owner)
            created_at = job.created_at
            run_at = job.run_at
            if run_at == created_at:
                job.run_at = run_at = created_at
            if job.updated_at == created_at:
                job.updated_at = created_at
            state = job.state
            if state is _READY:
                if run_at <= now:
                    q.ready.append((-job.priority, run_at, seq, job))
                    q.since.append((run_at, seq, job))
                else:
                    scheduled.append((run_at, seq, job))
            else:
                by_state[state].append(job)
        if last_seq > snap.seq:
            raise ValueError("snapshot jobs are not in submission order")

        running = by_state[_RUNNING]
        if any(job.lease_until is None for job in running):
            raise ValueError("snapshot has a RUNNING job without a lease")
        self._leases = [(job.lease_until, job.seq, job) for job in running]  # type: ignore[misc]
        for job in by_state[_RETRY]:
            queues[job.queue].retry.append((job.run_at, job.seq, job))
        self._done.rebuild(by_state[_ACKED] + by_state[_CANCELLED])
        self._dead.rebuild(by_state[_DEAD])
        finished_jobs = by_state[_ACKED] + by_state[_DEAD] + by_state[_CANCELLED]
        by_waiting = by_state[_WAITING]
        self._dead_groups.rebuild(by_state[_DEAD])
        del by_state, running

        for q in queues.values():
            _make_heap(q.ready)
            _make_heap(q.retry)
            _make_heap(q.since)
        _make_heap(self._scheduled)
        _make_heap(self._leases)

        if cold is not None:
            self._load_cold(cold, all_jobs, jobs, warm_positions)
        for q in queues.values():
            q.counts[_B_RUNNABLE] = len(q.ready) + (len(q.cold_ready) if q.cold_ready else 0)
            q.counts[_B_RETRY] = len(q.retry)
        for bucket, entries in ((_B_SCHEDULED, self._scheduled), (_B_RUNNING, self._leases)):
            for name, n in Counter(entry[2].queue for entry in entries).items():
                queues[name].counts[bucket] = n
        for name, n in Counter(job.queue for job in by_waiting).items():
            queues[name].counts[_B_WAITING] = n
        finished = Counter((job.queue, job.state) for job in finished_jobs)
        for (name, state), n in finished.items():
            queues[name].counts[_BUCKET_OF_STATE[state]] = n

        self._idempotency = {
            ("", key): (job_id, None, end) for key, job_id, end in snap.idempotency
        }
        for owner, key, job_id, fingerprint, end in snap.idempotency_scoped:
            self._idempotency[(owner, key)] = (job_id, fingerprint, end)
        self._idempotency_expiry = [
            (v[2], owner, key) for (owner, key), v in self._idempotency.items()
        ]
        heapq.heapify(self._idempotency_expiry)

        self._schedules = {schedule.spec.name: schedule for schedule in snap.schedules}
        if len(self._schedules) != len(snap.schedules):
            raise ValueError("snapshot repeats a schedule name")
        self._schedule_names = sorted(self._schedules)
        self._schedule_due = [
            (s.next_due, name)
            for name, s in self._schedules.items()
            if not s.paused and s.next_due is not None
        ]
        heapq.heapify(self._schedule_due)
        self._history = History.load(snap.history)

        self._flow = {settings.name: settings for settings in snap.queue_settings}
        self._unique.load(snap.unique)
        self._deps.load(snap.awaited)
        self._own.load(snap.ownership)

    def _load_cold(
        self,
        cold: ColdIndex,
        all_jobs: list[Job],
        warm: dict[str, Job],
        warm_positions: array[int],
    ) -> None:
        """Leave the runnable jobs cold (core/cold_index.py): each queue's runs in lease and
        `since` order, the id dict behind which they are found. Checked here: the arrays' sizes
        and ranges, which together cover every job once (the CRC covers their bytes); what
        `_load` checks per job applies to the warm ones, the writer made the runs from READY
        jobs that were due."""
        size = len(all_jobs)
        by_id = positions(cold.by_id, size)
        if len(by_id) + len(warm) != size:
            raise ValueError("the snapshot's cold index does not cover its jobs")
        runnable = 0
        for entry in cold.queues:
            lease_order = positions(entry.lease_order, size)
            since_order = positions(entry.since_order, size) if entry.since_order else lease_order
            if len(since_order) != len(lease_order) or not lease_order:
                raise ValueError(f"the snapshot's cold index of queue {entry.name!r} is malformed")
            runnable += len(lease_order)
            q = self._queue(entry.name)
            q.cold_ready = ColdRun(all_jobs, lease_order)
            q.cold_since = ColdRun(all_jobs, since_order)
        if runnable != len(by_id):
            raise ValueError("the snapshot's cold index does not cover its runnable jobs")
        if cold.queues:
            # The snapshot's jobs that come back to READY from now on (retried, their lease
            # expired), until every cold `since` run is fed: their entries in those runs are
            # passed over (cold_index.feed).
            self._returned = set()
            self._cold_seq = self._seq
        if by_id:
            self._jobs = ColdJobs(warm, all_jobs, by_id, warm_positions, self._share_values)

    def _share_values(self, job: Job) -> None:
        """What `_load` does to each job it indexes, for a cold one when it is indexed: share
        the strings and ints a live Submit shares (~100 bytes a job)."""
        job.queue = self._queue(job.queue).name
        owner = job.owner
        if owner:
            job.owner = self._owners.setdefault(owner, owner)
        created_at = job.created_at
        if job.run_at == created_at:
            job.run_at = created_at
        if job.updated_at == created_at:
            job.updated_at = created_at


# ---------------------------------------------------------------------------------------------
# Heap reading with lazy deletion.


def _make_heap(entries: list[Any]) -> None:
    """heapify, but a list already in order is left as it is (a sorted list is a heap). Restored
    entries come in submission order, which is often lease order too (one priority, run_at
    rising with seq): checking that takes one comparison per entry and stops at the first one
    out of order, where heapify's sift always walks down to a leaf and back (measured on 1M
    runnable jobs: ~0.05 s against ~0.15 s a heap)."""
    if not all(map(operator.lt, entries, islice(entries, 1, None))):
        heapq.heapify(entries)


def _pop_ready(q: _QueueIndex, jobs: dict[str, Job]) -> Job | None:
    """Pop the next job in lease order, skipping entries of jobs cancelled while READY."""
    top = _valid_ready_top(q, jobs)
    if top is None:
        return None
    heapq.heappop(q.ready)
    return top[3]


def _feed_ready(q: _QueueIndex, jobs: dict[str, Job]) -> None:
    """Bring the queue's cold entries that come before the heap's top into it."""
    assert q.cold_ready is not None
    if not feed(q.cold_ready, q.ready, ready_entry, jobs if isinstance(jobs, ColdJobs) else None):
        q.cold_ready = None


def _rebuild_since(q: _QueueIndex) -> None:
    """Drop the `since` heap's stale entries: a lease leaves its job's entry behind (popping it
    would cost every lease a heap operation), and once those could outnumber the live entries
    they are dropped all at once: O(1) amortized per lease. The valid entries are kept, not
    made again from the lease-order heap: after a cold restore a job's `since` entry may be in
    this heap while its lease-order entry is still in its cold run (core/cold_index.py)."""
    q.since = [e for e in q.since if e[2].state is _READY and e[2].run_at == e[0]]
    heapq.heapify(q.since)


def _valid_ready_top(q: _QueueIndex, jobs: dict[str, Job]) -> ReadyEntry | None:
    """The queue's next entry in lease order, its cold run's included, dropping stale ones."""
    ready = q.ready
    while True:
        if q.cold_ready is not None:
            _feed_ready(q, jobs)
        if not ready:
            return None
        if ready[0][3].state is _READY:
            return ready[0]
        heapq.heappop(ready)


def _valid_timed_top(heap: list[TimedEntry], state: JobState) -> TimedEntry | None:
    """The first entry whose job is still in `state` with that time (run_at or lease_until)."""
    while heap:
        time, _, job = heap[0]
        if job.state is state and (job.lease_until if state is _RUNNING else job.run_at) == time:
            return heap[0]
        heapq.heappop(heap)
    return None


def _scheduled_due_in(scheduled: list[TimedEntry], queue: str, cutoff: int) -> bool:
    """Whether a live scheduled job of `queue` has run_at <= cutoff. Walks only the part of
    the heap that is due, since a heap node is never earlier than its parent."""
    stack = [0]
    size = len(scheduled)
    while stack:
        i = stack.pop()
        if i >= size:
            continue
        run_at, _, job = scheduled[i]
        if run_at > cutoff:
            continue
        if job.queue == queue and job.state is _READY and job.run_at == run_at:
            return True
        stack.append(2 * i + 1)
        stack.append(2 * i + 2)
    return False


def _settings_copy(settings: QueueSettings) -> QueueSettings:
    copied = copy(settings)
    copied.recent_leases = list(settings.recent_leases)
    return copied


def _queue_stats(counts: list[int]) -> QueueStats:
    return QueueStats(
        runnable=counts[_B_RUNNABLE],
        running=counts[_B_RUNNING],
        scheduled=counts[_B_SCHEDULED],
        retry=counts[_B_RETRY],
        dead=counts[_B_DEAD],
        acked=counts[_B_ACKED],
        cancelled=counts[_B_CANCELLED],
        total=sum(counts),
        waiting=counts[_B_WAITING],
    )


def _remembered(
    mapped: tuple[str, str | None, int], fingerprint: str | None, key: str
) -> Submitted | Error:
    """The answer to a submit whose (owner, idempotency key) is remembered: the earlier job
    when the request is the same, a refusal when it differs. An entry or a command without a
    fingerprint (a log written before fingerprints) matches any request, as it did then."""
    job_id, remembered, _ = mapped
    if remembered is None or fingerprint is None or remembered == fingerprint:
        return Submitted(job_id=job_id, duplicate=True)
    return Error(
        ErrorCode.IDEMPOTENCY_KEY_REUSED,
        f"idempotency key {key!r} was already used for a different request (job {job_id}); "
        "use a new key for a new job",
    )


def _standing(
    name: str, owner: QueueOwner, *, repeated: bool = False, jobs: int = 0
) -> OwnershipResult:
    return OwnershipResult(
        name, True, owner.epoch, fenced=bool(owner.fence), jobs=jobs, repeated=repeated
    )


def _not_found(job_id: str) -> Error:
    return Error(ErrorCode.NOT_FOUND, f"no job {job_id!r}")


def _no_schedule(name: str) -> Error:
    return Error(ErrorCode.NOT_FOUND, f"no schedule {name!r}")


def _wrong_state(job: Job, wanted: str) -> Error:
    return Error(ErrorCode.INVALID_STATE, f"job {job.id!r} is {job.state.value}, not {wanted}")


_HANDLERS: dict[type, Callable[[StateMachine, Any], Result]] = {
    Submit: StateMachine._submit,
    Lease: StateMachine._lease,
    Ack: StateMachine._ack,
    Fail: StateMachine._fail,
    Extend: StateMachine._extend,
    Release: StateMachine._release,
    Cancel: StateMachine._cancel,
    Requeue: StateMachine._requeue,
    Expire: StateMachine._expire,
    Purge: StateMachine._purge,
    CreateSchedule: StateMachine._create_schedule,
    UpdateSchedule: StateMachine._update_schedule,
    DeleteSchedule: StateMachine._delete_schedule,
    FireSchedule: StateMachine._fire_schedule,
    SetQueue: StateMachine._set_queue,
    Progress: StateMachine._progress,
    SettleDeadGroup: StateMachine._settle_dead_group,
    BulkRequeue: StateMachine._bulk,
    BulkCancel: StateMachine._bulk,
    StartShard: StateMachine._start_shard,
    AdoptQueue: StateMachine._adopt_queue,
    FenceQueue: StateMachine._fence_queue,
    ImportJobs: StateMachine._import_jobs,
    ReleaseQueue: StateMachine._release_queue,
    AbortMove: StateMachine._abort_move,
}
