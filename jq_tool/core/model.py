"""The queue's vocabulary: job states, the Job record, the commands that change the queue and the
results that applying a command returns.

Everything here is plain data (msgspec Structs) so it can be written to the WAL, replicated
through etcd and sent over HTTP without translation. Times are integer milliseconds since the
Unix epoch; every command carries its own `now` so the state machine never reads a clock.

Periodic jobs are schedules (`ScheduleSpec`, `Schedule`): the state machine keeps each one's
definition and where it stands (the last due time it accounted for, the next one), never a
cron expression's meaning. Due times are computed by the proposer (engine/cron.py) and travel
in the commands (`CreateSchedule`, `UpdateSchedule`, `FireSchedule`).
"""

from __future__ import annotations

import enum

import msgspec


class JobState(enum.StrEnum):
    READY = "READY"  # waiting to be leased (a future run_at makes it "scheduled")
    RUNNING = "RUNNING"  # leased by a worker until lease_until
    ACKED = "ACKED"  # finished successfully
    RETRY = "RETRY"  # a failed attempt, waiting out its backoff until run_at
    DEAD = "DEAD"  # retries exhausted
    CANCELLED = "CANCELLED"  # cancelled before it ran
    WAITING = "WAITING"  # waiting for its parents (depends_on) to be ACKED


FINISHED_STATES = frozenset({JobState.ACKED, JobState.DEAD, JobState.CANCELLED})

DEFAULT_QUEUE = "default"


class Job(msgspec.Struct, array_like=True, gc=False):
    """One job as the state machine keeps it.

    array_like and gc=False keep it compact in memory and in snapshots: the state machine holds
    millions of these.
    """

    id: str
    queue: str
    payload: str
    priority: int
    max_retries: int
    attempts: int
    state: JobState
    created_at: int
    run_at: int
    seq: int  # submission order, the final tie-breaker for lease order
    lease_until: int | None = None
    lease_id: str | None = None
    result: str | None = None
    result_error: str | None = None
    idempotency_key: str | None = None
    updated_at: int = 0  # time of the last state change; finished jobs are purged from it
    # The schedule run that made this job (None for a submitted job: one slot, 8 bytes).
    scheduled_by: ScheduleRun | None = None
    # Flow control (issue 18): the parents this job waited or waits for (None: none), and the
    # submitting key's owner ("" for jobs of logs written before it: no key has that owner).
    depends_on: Dependency | None = None
    owner: str = ""
    # The running attempt's last reported progress (issue 19); a new lease clears it.
    progress: JobProgress | None = None

    # The current (or, once acked, the last) attempt's worker id and lease time, from the
    # Lease command; None in logs written before workers named themselves.
    worker: str | None = None
    leased_at: int | None = None
    # The attempts that ended in a failure or an expired lease, the last ATTEMPTS_KEPT
    # (core/attempts.py), oldest first. None while there was none: a job that succeeds at
    # once costs no list.
    history: list[Attempt] | None = None


class ParentFailure(enum.StrEnum):
    CANCEL = "cancel"  # a parent ending DEAD or CANCELLED cancels the child
    RUN = "run"  # the child runs once every parent has finished, however it finished


class Dependency(msgspec.Struct, array_like=True, gc=False):
    """The parents a job waits for (WAITING until every one is ACKED) and what a parent's
    failure does to it."""

    parents: list[str]
    on_parent_failure: ParentFailure = ParentFailure.CANCEL


class UniqueScope(enum.StrEnum):
    QUEUED = "queued"  # while the job is WAITING, READY (scheduled included) or RETRY
    ACTIVE = "active"  # while queued or RUNNING
    PERIOD = "period"  # for unique_period_ms after its submit, whatever its state


class Attempt(msgspec.Struct, array_like=True, gc=False):
    """One attempt of a job that ended (or runs): see core/attempts.py for what is kept."""

    attempt: int  # 1 for the first attempt since the job was submitted or requeued
    worker: str | None  # the worker id the Lease named
    started_at: int | None  # the Lease's now (None: leased by a release before this field)
    ended_at: int | None  # None while running
    outcome: str  # running, acked, failed, expired, released (attempts.OUTCOMES)
    error: str | None = None  # the error text, bounded (attempts.ERROR_TEXT_BYTES)


class ScheduleRun(msgspec.Struct, array_like=True, gc=False):
    """Which schedule made a job, and for which of its due times (epoch ms)."""

    name: str
    due: int


class JobProgress(msgspec.Struct, array_like=True, gc=False):
    """How far a worker says its attempt has got: `percent` in 0..1, a short note, and when
    (the command's now)."""

    percent: float
    note: str
    at: int


class OverlapPolicy(enum.StrEnum):
    ALLOW = "allow"  # a due time makes its job whatever the previous run is doing
    SKIP = "skip"  # no job while the previous run's job is READY, RETRY or RUNNING


class MissedPolicy(enum.StrEnum):
    SKIP = "skip"  # due times missed (a downtime) make no job
    RUN_ONCE = "run_once"  # missed due times make one job between them, for the latest


class ScheduleSpec(msgspec.Struct, array_like=True):
    """A periodic job as its creator defined it: when (a cron expression read in a time zone,
    by the proposer, never by the state machine), what (the job template) and the policies."""

    name: str
    cron: str
    timezone: str = "UTC"
    payload: str = ""
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    max_retries: int = 3
    overlap: OverlapPolicy = OverlapPolicy.ALLOW
    missed: MissedPolicy = MissedPolicy.SKIP
    # A due time the ticker reaches more than this late is missed (the missed policy decides);
    # within it, the run is only late (a restart, a ticker failover) and is made as usual.
    grace_ms: int = 60_000


class Schedule(msgspec.Struct, array_like=True):
    """A schedule as the state machine keeps it: its definition and where it stands."""

    spec: ScheduleSpec
    paused: bool
    created_at: int
    updated_at: int
    version: int  # +1 on every change of definition or pause; an update names the one it read
    next_due: int | None  # the due time the next FireSchedule must name; None: never again
    last_due: int | None = None  # the last due time a FireSchedule accounted for
    last_job: str | None = None  # the job of the last run that made one
    last_fired_at: int | None = None  # the `now` of the last FireSchedule
    runs: int = 0  # jobs made
    skipped: int = 0  # due times passed over by the overlap policy
    missed: int = 0  # due times reached more than grace_ms late


# ---------------------------------------------------------------------------------------------
# Commands. Each is tagged so a log record decodes back to the right type.


class NewJob(msgspec.Struct, array_like=True):
    """One job of a Submit: ids are chosen by the proposer, never by the state machine."""

    id: str
    queue: str = DEFAULT_QUEUE
    payload: str = ""
    priority: int = 0
    max_retries: int = 3
    run_at: int | None = None  # None: runnable at the command's `now`
    idempotency_key: str | None = None
    # Idempotency keys are remembered per owner (the owner id of the submitting API key), with
    # a fingerprint of the request (computed by the proposer: engine/base.py), so one key
    # never answers for another owner or for a different request. Logs written before these
    # fields decode with owner "" (which no API key has) and no fingerprint.
    owner: str = ""
    fingerprint: str | None = None
    # Unique key and parents (issue 18), None for a job with neither: one byte in the log.
    flow: JobFlow | None = None


class JobFlow(msgspec.Struct, array_like=True):
    """A new job's unique key and parents.

    Unique jobs: a second submit of this owner's `unique_key` while the first job is in scope
    answers the first job (Submitted.unique). Not the idempotency key: that one is for retries
    of one request, this one for two requests that would make the same work. Dependencies:
    ids of existing jobs of the same owner (the proposer resolved a batch's indexes into ids).
    """

    unique_key: str | None = None
    unique_scope: UniqueScope = UniqueScope.QUEUED
    unique_period_ms: int = 0
    depends_on: list[str] = []
    on_parent_failure: ParentFailure = ParentFailure.CANCEL


class Submit(msgspec.Struct, tag="submit", array_like=True):
    now: int
    jobs: list[NewJob]
    # How long this submit's idempotency keys are remembered. In the command, not in the state
    # machine's configuration, so that changing the setting never changes what a replayed log
    # means; logs written before this field used 24 h, the only value there was.
    idempotency_ms: int = 24 * 3600 * 1000
    # At most this many distinct queues may hold jobs; a job for one more queue is refused
    # (TOO_MANY_QUEUES). 0: no cap (logs written before it).
    max_queues: int = 0


class Lease(msgspec.Struct, tag="lease", array_like=True):
    """Lease up to len(lease_ids) runnable jobs of `queue`, one fresh lease id each."""

    now: int
    queue: str
    lease_ms: int
    lease_ids: list[str]
    # The worker id the lease request named (X-Jq-Worker), kept on each leased job; None for
    # clients that send none and in logs written before it.
    worker: str | None = None


class Ack(msgspec.Struct, tag="ack", array_like=True):
    now: int
    job_id: str
    lease_id: str | None = None  # None settles whatever lease is current
    result: str | None = None


class Fail(msgspec.Struct, tag="fail", array_like=True):
    """A failed attempt: ack with result_error. Retries with backoff, or DEAD when retries are
    spent; `retry=False` makes this failure final (DEAD at once, as the original Go server
    treated every result_error). Logs written before `retry` existed decode with True."""

    now: int
    job_id: str
    lease_id: str | None = None
    error: str = ""
    retry: bool = True


class Extend(msgspec.Struct, tag="extend", array_like=True):
    now: int
    job_id: str
    lease_ms: int
    lease_id: str | None = None


class Release(msgspec.Struct, tag="release", array_like=True):
    """Give a lease back unfinished: the RUNNING job is READY again, runnable at `now` +
    `delay_ms` (scheduled until then), and the attempt its lease began is not counted, so a
    release never brings a job closer to DEAD (beanstalkd's `release` with a delay, River's
    snooze, SQS's visibility set to the delay; a worker stopping gives back what it holds)."""

    now: int
    job_id: str
    lease_id: str | None = None
    delay_ms: int = 0


class Cancel(msgspec.Struct, tag="cancel", array_like=True):
    now: int
    job_id: str


class Requeue(msgspec.Struct, tag="requeue", array_like=True):
    now: int
    job_id: str


class Expire(msgspec.Struct, tag="expire", array_like=True):
    """The ticker's command: expire due leases, make due RETRY/scheduled jobs runnable."""

    now: int


class Purge(msgspec.Struct, tag="purge", array_like=True):
    """Forget finished jobs settled at or before `finished_before`, and idempotency keys whose
    keep time (Submit.idempotency_ms) ended at or before `now`.

    The bounds on what stays in memory (core/retention.py) travel here, decided by the
    proposer: beyond `max_finished` ACKED/CANCELLED jobs, or `max_finished_bytes` of them
    (content characters + `job_overhead_bytes` a job), the oldest finished go; DEAD jobs go
    beyond `max_dead`, or once settled at or before `dead_before` (None: `finished_before`,
    as every Purge written before these fields meant). 0: no bound. Every job forgotten is
    handed to the state machine's forget listener (the engine's history store)."""

    now: int
    finished_before: int
    max_finished: int = 0
    max_finished_bytes: int = 0
    job_overhead_bytes: int = 0
    max_dead: int = 0
    dead_before: int | None = None
    # Beyond this many idempotency keys remembered, those whose keep time ends first are
    # forgotten early (0: no bound): keys are held by time, and this bounds them by count.
    max_idempotency_keys: int = 0


class CreateSchedule(msgspec.Struct, tag="schedule_create", array_like=True):
    """Create a schedule; its first due time (after `now`) was computed by the proposer. A
    schedule of that name with the same definition answers as it is (a retried create)."""

    now: int
    spec: ScheduleSpec
    next_due: int | None
    paused: bool = False
    max_schedules: int = 0  # refuse a new schedule when this many exist; 0: no cap


class UpdateSchedule(msgspec.Struct, tag="schedule_update", array_like=True):
    """Replace a schedule's definition and paused flag, and its next due time (computed by the
    proposer from `version`, the version it read: another version refuses the command)."""

    now: int
    spec: ScheduleSpec
    paused: bool
    next_due: int | None
    version: int


class DeleteSchedule(msgspec.Struct, tag="schedule_delete", array_like=True):
    now: int
    name: str


class FireSchedule(msgspec.Struct, tag="schedule_fire", array_like=True):
    """The ticker's firing of a schedule. `due` must be the schedule's next due time: a firing
    replayed, proposed twice (a ticker failover) or computed from a stale view is refused, so
    each due time is accounted for once. It accounts for the due times `due` .. `last_due`
    (one, unless a downtime passed several: `missed` of them were missed) and makes one job
    `job_id` (None: none, the missed policy skips them); the overlap policy may still decide
    against the job. `next_due` (after `last_due`) is the due time after them."""

    now: int
    name: str
    due: int
    last_due: int
    next_due: int | None
    job_id: str | None
    missed: int = 0


class SetQueue(msgspec.Struct, tag="queue_set", array_like=True):
    """Change a queue's flow settings: paused (leases skip it, submits still land), the most
    jobs RUNNING at once (`concurrency`) and the most leases in any `rate_period_ms` window
    (`rate_limit`). None leaves a setting as it is; 0 removes a limit. A queue back to its
    defaults is forgotten. `max_queues`: refuse settings for one more queue when this many
    queues have settings (0: no cap)."""

    now: int
    queue: str
    paused: bool | None = None
    concurrency: int | None = None
    rate_limit: int | None = None
    rate_period_ms: int | None = None
    max_queues: int = 0
    # Issue 19: how long the queue's oldest runnable job may wait before /health warns (0: no
    # threshold). After max_queues: logs written before it decode with None (unchanged).
    max_latency_ms: int | None = None


class QueueSettings(msgspec.Struct, array_like=True):
    """A queue's flow settings as the state machine keeps them, with the times of its leases
    in the current rate window (at most rate_limit of them)."""

    name: str
    paused: bool = False
    concurrency: int = 0  # 0: no limit
    rate_limit: int = 0  # 0: no limit
    rate_period_ms: int = 0
    updated_at: int = 0
    recent_leases: list[int] = []
    max_latency_ms: int = 0  # issue 19: 0 = no latency threshold


# -- insight (issue 19): progress reports and whole dead-letter groups ---------------------------

MAX_PROGRESS_NOTE = 200  # characters of a progress note (the server refuses longer ones)


class Progress(msgspec.Struct, tag="progress", array_like=True):
    """A worker's progress report on its running attempt: percent in 0..1 and a short note."""

    now: int
    job_id: str
    lease_id: str | None = None
    percent: float = 0.0
    note: str = ""


class DeadGroupAction(enum.StrEnum):
    REQUEUE = "requeue"  # DEAD -> READY with attempts reset, as Requeue does one job
    CANCEL = "cancel"  # DEAD -> CANCELLED: given up for good, out of the dead letters


class SettleDeadGroup(msgspec.Struct, tag="dead_group", array_like=True):
    """Requeue or cancel up to `limit` jobs of one dead-letter group (by error fingerprint),
    earliest death first, among those that died at or before `dead_before` (the time the
    request began: a job that dies again meanwhile is not taken twice). Atomic: all of them
    or, for a malformed command, none. The proposer sends a group in chunks of `limit`."""

    now: int
    fingerprint: str
    action: DeadGroupAction
    limit: int
    dead_before: int


class BulkRequeue(msgspec.Struct, tag="bulk_requeue", array_like=True):
    """Requeue each DEAD job of `job_ids` (one chunk of a bulk action: atomic); a job that is
    not DEAD (any more) is skipped, so a chunk applied twice changes nothing twice."""

    now: int
    job_ids: list[str]


class BulkCancel(msgspec.Struct, tag="bulk_cancel", array_like=True):
    """Cancel each READY or RETRY job of `job_ids` (one chunk of a bulk action); others are
    skipped."""

    now: int
    job_ids: list[str]


# -- sharding (issue 23, docs/scaling.md §2.1, §2.6): ownership of queues by a shard's log -------
# A shard's state machine serves only the queues its own log adopted. Single-node and one-group
# cluster mode never write these commands, so their machines keep ownership off (every queue
# served) and replay exactly as before. core/ownership.py holds the table; all fields after the
# first few have defaults so the commands can grow.


class ImportedKey(msgspec.Struct, array_like=True):
    """One idempotency key travelling with its queue in a move: (owner, key) as the machine
    keeps it (sharded: the key is scoped by queue, core/ownership.py), its job and keep end."""

    owner: str
    key: str
    job_id: str
    fingerprint: str | None
    keep_end: int


class StartShard(msgspec.Struct, tag="shard_start", array_like=True):
    """The first command of a shard's log: ownership on, this log is shard `shard`'s. From here
    on a command on a queue the shard has not adopted answers NOT_OWNER. Repeated with the same
    shard: no change; refused on a machine that already holds jobs or is another shard."""

    shard: int
    now: int = 0


class AdoptQueue(msgspec.Struct, tag="queue_adopt", array_like=True):
    """The shard owns `queue` from now on, at `epoch`. Without a move id: a new (empty) queue.
    With one: the end of an import: every staged chunk of that move is checked (all `total`
    present, one crc) and their jobs and keys become live in one step, appended after this
    shard's last seq in their own order, with their states, attempts, lease ids and
    lease_until. Repeating an adoption that happened answers it again and changes nothing."""

    queue: str
    epoch: int
    move_id: str = ""
    now: int = 0


class FenceQueue(msgspec.Struct, tag="queue_fence", array_like=True):
    """The source of a move freezes `queue`: from this log index every command on it answers
    QUEUE_MOVING and Expire/Purge leave it alone, so its state here is the move's export."""

    queue: str
    move_id: str
    now: int = 0


class ImportJobs(msgspec.Struct, tag="jobs_import", array_like=True):
    """One chunk (0 .. total-1) of a move's export, staged on the target, invisible until
    AdoptQueue names the move. A chunk staged already is ignored (a retried put). `crc` is the
    export's (core/ownership.py: export_queue), the same in every chunk; `settings` the queue's
    flow settings (chunk 0 carries them, None: defaults) and chunk 0 its schedules. Sharded, a
    job's parents are of its own queue, so the queue's dependencies move whole."""

    move_id: str
    queue: str
    chunk: int
    total: int
    jobs: list[Job] = []
    keys: list[ImportedKey] = []
    crc: int = 0
    settings: QueueSettings | None = None
    # The parents each WAITING job of the queue still waits for (chunk 0), as the machine
    # keeps them (a parent requeued after DEAD no longer counts).
    awaited: list[tuple[str, list[str]]] = []
    # The queue's unique keys (chunk 0): (owner, key scoped by queue, job id, scope, until).
    unique: list[tuple[str, str, str, UniqueScope, int]] = []
    now: int = 0
    # The queue's schedules (chunk 0): they live with their queue (appended: older logs replay).
    schedules: list[Schedule] = []


class ReleaseQueue(msgspec.Struct, tag="queue_release", array_like=True):
    """After the placement flip, the source drops the queue's jobs, keys and settings and keeps
    a tombstone queue -> (target, epoch) and a stub per moved job id (job id -> target), so
    late requests are told where the queue went (NOT_OWNER). Also the target's way back out of
    an adoption the placement never pointed to (an aborted move after step 3), and, with no
    move id, the way to give back an empty queue adopted here whose placement another shard
    won (docs/scaling.md §2.2)."""

    queue: str
    move_id: str
    target: int
    now: int = 0


class AbortMove(msgspec.Struct, tag="move_abort", array_like=True):
    """Give a move up: the source unfences the queue, the target discards the staged chunks.
    A move the shard never heard of (or already aborted) is no change."""

    queue: str
    move_id: str
    now: int = 0


Command = (
    Submit
    | Lease
    | Ack
    | Fail
    | Extend
    | Release
    | Cancel
    | Requeue
    | Expire
    | Purge
    | CreateSchedule
    | UpdateSchedule
    | DeleteSchedule
    | FireSchedule
    | SetQueue
    | Progress
    | SettleDeadGroup
    | BulkRequeue
    | BulkCancel
    | StartShard
    | AdoptQueue
    | FenceQueue
    | ImportJobs
    | ReleaseQueue
    | AbortMove
)


# ---------------------------------------------------------------------------------------------
# Results. Errors are values: the HTTP layer maps ErrorCode to a status in one table.


class ErrorCode(enum.StrEnum):
    NOT_FOUND = "not_found"  # no such job
    LEASE_MISMATCH = "lease_mismatch"  # the named lease is not the job's current lease
    INVALID_STATE = "invalid_state"  # the job's state does not allow this command
    INVALID = "invalid"  # the command itself is malformed (e.g. duplicate job id)
    # An idempotency key of this owner, still remembered, was given with a different request.
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    TOO_MANY_QUEUES = "too_many_queues"  # Submit.max_queues queues already hold jobs
    # A schedule of that name exists with another definition.
    SCHEDULE_EXISTS = "schedule_exists"
    TOO_MANY_SCHEDULES = "too_many_schedules"  # CreateSchedule.max_schedules exist
    # A depends_on names a job that does not exist (or was purged) or is another owner's.
    UNKNOWN_PARENT = "unknown_parent"
    # Sharded mode (issue 23): the queue (or the job's queue) is not this shard's: never adopted
    # here, or moved away (the message names the shard it went to). Inside the cluster only: the
    # node re-reads the placement and sends the request on.
    NOT_OWNER = "not_owner"
    # The queue is fenced for a move: every command on it waits for the move to end.
    QUEUE_MOVING = "queue_moving"


class Error(msgspec.Struct, tag="error"):
    code: ErrorCode
    message: str


class Submitted(msgspec.Struct, tag="submitted"):
    """Per entry of a Submit: the job id, and whether an idempotency key found an earlier job."""

    job_id: str
    duplicate: bool = False
    unique: bool = False  # a unique_key in scope found this earlier job


class SubmitResult(msgspec.Struct, tag="submit_result"):
    entries: list[Submitted | Error]


class LeaseResult(msgspec.Struct, tag="lease_result"):
    jobs: list[Job]  # copies: the caller may keep them


class JobResult(msgspec.Struct, tag="job_result"):
    """The job after Ack, Fail, Extend, Release, Cancel or Requeue (a copy)."""

    job: Job


class ExpireResult(msgspec.Struct, tag="expire_result"):
    expired: int  # leases that ran out (attempts that failed)
    promoted: int  # RETRY/scheduled jobs that became runnable


class PurgeResult(msgspec.Struct, tag="purge_result"):
    jobs: int  # every job forgotten, for whatever reason
    idempotency_keys: int
    evicted: int = 0  # of `jobs`: ACKED/CANCELLED jobs past the count or bytes bound
    dead_dropped: int = 0  # of `jobs`: DEAD jobs past the DEAD cap


class ScheduleResult(msgspec.Struct, tag="schedule_result"):
    """A schedule after CreateSchedule, UpdateSchedule or DeleteSchedule (a copy); `created`
    is False for a create that found the same schedule."""

    schedule: Schedule
    created: bool = False


class FireResult(msgspec.Struct, tag="fire_result"):
    """What a FireSchedule did: the job it made (a copy) or None, and whether the overlap
    policy passed this run over."""

    schedule: Schedule
    job: Job | None
    overlap_skipped: bool = False


class QueueResult(msgspec.Struct, tag="queue_result"):
    """A queue's flow settings after SetQueue (a copy)."""

    settings: QueueSettings


class DeadGroupResult(msgspec.Struct, tag="dead_group_result"):
    """What a SettleDeadGroup did: the ids of the jobs it requeued or cancelled, in order, and
    how many jobs the group still holds."""

    job_ids: list[str]
    remaining: int


class BulkResult(msgspec.Struct, tag="bulk_result"):
    """What a BulkRequeue/BulkCancel changed: the ids of the jobs it moved, in command order."""

    changed: list[str]


class OwnershipResult(msgspec.Struct, tag="ownership_result"):
    """Where a queue stands on this shard after an ownership command (issue 23)."""

    queue: str
    owned: bool  # the shard serves or holds the queue (fenced included)
    epoch: int = 0
    fenced: bool = False
    staged: int = 0  # chunks of the move staged here (ImportJobs)
    jobs: int = 0  # jobs made live (AdoptQueue) or dropped (ReleaseQueue)
    repeated: bool = False  # the command had been applied before: nothing changed


Result = (
    Error
    | SubmitResult
    | LeaseResult
    | JobResult
    | ExpireResult
    | PurgeResult
    | ScheduleResult
    | FireResult
    | QueueResult
    | DeadGroupResult
    | BulkResult
    | OwnershipResult
)


# One encoder/decoder pair for the log: msgpack, the compact form for the WAL and etcd.
_command_encoder = msgspec.msgpack.Encoder()
_command_decoder = msgspec.msgpack.Decoder(Command)


def encode_command(command: Command) -> bytes:
    return _command_encoder.encode(command)


def decode_command(data: bytes) -> Command:
    return _command_decoder.decode(data)
