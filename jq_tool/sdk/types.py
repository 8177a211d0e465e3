"""The typed records the SDK hands back: what docs/api.md's JSON bodies decode into.

These are the SDK's own wire types (it imports nothing from the server side, so it can be
installed alone). Times arrive as RFC 3339 strings and decode into timezone-aware `datetime`s;
unknown fields are ignored so an older SDK keeps working against a newer server.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta

import msgspec


class JobState(enum.StrEnum):
    READY = "READY"
    RUNNING = "RUNNING"
    ACKED = "ACKED"
    RETRY = "RETRY"
    DEAD = "DEAD"
    CANCELLED = "CANCELLED"
    WAITING = "WAITING"  # waiting for its parents (depends_on) to be ACKED


FINISHED_STATES = frozenset({JobState.ACKED, JobState.DEAD, JobState.CANCELLED})


class Attempt(msgspec.Struct, frozen=True):
    """One attempt of a job (`Job.attempt_history`): who ran it, when, how it ended, and the
    error it failed with (`traceback`: the whole error text, at most 8 KiB)."""

    attempt: int
    outcome: str  # running, acked, failed, expired
    worker: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error_class: str | None = None
    error_message: str | None = None
    traceback: str | None = None


class Job(msgspec.Struct, frozen=True):
    """A job as `GET /jobs/{id}` shows it (`payload` is None in list pages, and so is
    `attempt_history`: the attempts kept, the last 10)."""

    job_id: str
    state: JobState
    attempts: int = 0
    max_retries: int = 0
    created_at: datetime | None = None
    result: str | None = None
    result_error: str | None = None
    payload: str | None = None
    queue: str = "default"
    priority: int = 0
    run_at: datetime | None = None
    lease_until: datetime | None = None
    updated_at: datetime | None = None
    idempotency_key: str | None = None
    # The schedule whose run made this job and the due time it ran for (None: submitted).
    schedule: str | None = None
    schedule_due_at: datetime | None = None
    # The parents it waits or waited for, and what a failed parent does ("cancel", "run").
    depends_on: list[str] | None = None
    on_parent_failure: str | None = None
    # The running attempt's last progress report (None until its worker sends one).
    progress: Progress | None = None
    # The current error read into a class and a message; the worker holding the lease.
    error_class: str | None = None
    error_message: str | None = None
    worker: str | None = None
    attempt_history: list[Attempt] | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


class LeasedJob(msgspec.Struct, frozen=True):
    """A job a worker holds: settle it with ack/fail naming `lease_id` before `lease_until`."""

    job_id: str
    payload: str
    lease_until: datetime
    attempt: int
    lease_id: str | None = None
    queue: str = "default"
    priority: int = 0
    max_retries: int = 0
    # The lease's length, as the server granted it (None from a server before it said so):
    # lease_until read against this machine's clock is off by however far the clocks differ.
    lease_ms: int | None = None

    def progress(self, progress: float, note: str = "") -> None:
        """Report how far this attempt has got (0..1) and a short note (200 characters at
        most), from inside a Worker or AsyncWorker handler. It returns at once: the worker
        sends the latest report in the background (reports sent faster than the server
        answers are coalesced, the last one wins). Outside a worker, use
        `Client.progress(job_id, ...)`. Raises ValueError for a value out of bounds."""
        from jq_tool.sdk.worker import report_progress  # the worker imports this module

        report_progress(self, progress, note)


class Page(msgspec.Struct, frozen=True):
    """One page of `GET /jobs`, newest first; pass `next_cursor` back for the next page."""

    jobs: list[Job]
    next_cursor: str | None = None


class Settled(msgspec.Struct, frozen=True):
    """The answer to ack, fail, cancel and requeue: the job's state afterwards."""

    job_id: str
    state: JobState


class Settlement(msgspec.Struct, frozen=True):
    """One lease to settle with `ack_many`: acked with `result` (a str as is, anything else as
    its JSON), or, when `error` is given, a failed attempt with that error."""

    job_id: str
    lease_id: str | None
    result: object = None
    error: str | None = None
    retry: bool = True  # with `error`: False makes the failure final (DEAD at once)


class AckResult(msgspec.Struct, frozen=True):
    """One entry of `ack_many`'s answer: the job's `state` once settled, or why the server
    refused this entry (`error`, `code` as docs/api.md's error table, `field`); the entry's
    lease is then untouched."""

    job_id: str
    state: JobState | None = None
    error: str | None = None
    code: str | None = None
    field: str | None = None

    @property
    def ok(self) -> bool:
        return self.state is not None


class BatchAck(msgspec.Struct, frozen=True):
    """`ack_many`'s answer: a result per settlement in input order, and the jobs leased in the
    same write (`lease_next`)."""

    results: list[AckResult]
    leased: list[LeasedJob] = []


class Extended(msgspec.Struct, frozen=True):
    job_id: str
    lease_until: datetime


class SubmitResult(msgspec.Struct, frozen=True):
    """One entry of a batch submit: a job id, or the error that refused this entry."""

    job_id: str | None = None
    duplicate: bool = False
    unique: bool = False  # a unique_key in scope named this earlier job: none was made
    error: str | None = None
    field: str | None = None

    @property
    def ok(self) -> bool:
        return self.job_id is not None and self.error is None


class QueueStats(msgspec.Struct, frozen=True):
    runnable: int = 0
    running: int = 0
    scheduled: int = 0
    retry: int = 0
    dead: int = 0
    acked: int = 0
    cancelled: int = 0
    total: int = 0
    waiting: int = 0
    # The queue's flow settings (0: no limit).
    paused: bool = False
    concurrency: int = 0
    rate_limit: int = 0
    rate_period_ms: int = 0


class QueueSettings(msgspec.Struct, frozen=True):
    """A queue's flow settings (`GET /queues/{name}`): paused, the most jobs RUNNING at once,
    the most leases per `rate_period_ms` (0: no limit), and its counts when it holds jobs."""

    name: str
    paused: bool = False
    concurrency: int = 0
    rate_limit: int = 0
    rate_period_ms: int = 0
    rate_window_leases: int = 0
    counts: QueueStats | None = None
    max_latency_ms: int = 0  # the queue's latency threshold (0: none)


class Totals(msgspec.Struct, frozen=True):
    submitted: int = 0
    acked: int = 0
    failed: int = 0
    retried: int = 0
    dead: int = 0
    expired: int = 0
    cancelled: int = 0
    requeued: int = 0
    released: int = 0  # leases given back unfinished (POST /jobs/{id}/release)
    purged: int = 0
    evicted: int = 0  # finished jobs moved to the history store past the memory bounds
    dead_dropped: int = 0  # DEAD jobs dropped past the server's --max-dead


class Held(msgspec.Struct, frozen=True):
    """What the server holds beyond live work, in `Stats.held` (docs/api.md GET /stats)."""

    finished_in_memory: int = 0
    dead_in_memory: int = 0
    bytes_in_memory: int = 0
    finished_on_disk: int = 0
    history_bytes: int = 0
    evicted: int = 0
    dead_dropped: int = 0
    idempotency_keys: int = 0


class ScheduleSummary(msgspec.Struct, frozen=True):
    """The schedules at a glance, in `Stats.schedules`."""

    count: int = 0
    paused: int = 0
    next_fire_at: datetime | None = None
    runs: int = 0
    skipped_runs: int = 0
    missed_runs: int = 0


class Stats(msgspec.Struct, frozen=True):
    runnable: int = 0
    running: int = 0
    scheduled: int = 0
    retry: int = 0
    dead: int = 0
    acked: int = 0
    cancelled: int = 0
    total: int = 0
    waiting: int = 0
    queues: dict[str, QueueStats] = {}
    submits_per_sec: float = 0.0
    acks_per_sec: float = 0.0
    totals: Totals = Totals()
    role: str = "single"
    node_id: str | None = None
    uptime_s: float = 0.0
    schedules: ScheduleSummary = ScheduleSummary()
    held: Held = Held()
    # Issue 19: per queue (the 50 busiest and those with a latency threshold).
    latency: dict[str, QueueLatency] = {}


class QueueLatency(msgspec.Struct, frozen=True):
    """A queue's latency in `Stats.latency`: jobs leased and their time in queue over the last
    5 minutes (percentiles in seconds, bucket bounds), leases/s over the last minute, the age
    of its oldest runnable job (None: none runnable) and its threshold (None: none)."""

    leased: int = 0
    wait_p50_s: float | None = None
    wait_p95_s: float | None = None
    wait_p99_s: float | None = None
    drain_per_s: float = 0.0
    oldest_runnable_age_s: float | None = None
    max_latency_s: float | None = None


class JobEvent(msgspec.Struct, frozen=True):
    """An `event: job` of `GET /events`."""

    job_id: str
    state: JobState
    queue: str = "default"
    previous: JobState | None = None
    attempts: int = 0
    priority: int = 0
    at: datetime | int | None = None
    run_at: datetime | None = None  # READY with run_at after `at`: scheduled
    worker: str | None = None  # the lease holder (RUNNING)
    error_class: str | None = None  # the current error, split as in Job
    error_message: str | None = None

    @property
    def finished(self) -> bool:
        """Whether the job reached ACKED, DEAD or CANCELLED with this change."""
        return self.state in FINISHED_STATES


class Schedule(msgspec.Struct, frozen=True):
    """A schedule (a periodic job) as the server shows it: `cron` read in `timezone` says when,
    the job fields what each run submits; `overlap` ("allow"/"skip") and `missed`
    ("skip"/"run_once") the policies. `next_fire_at` is None while paused; `upcoming` is only
    filled by `get_schedule`."""

    name: str
    cron: str
    timezone: str = "UTC"
    payload: str = ""
    queue: str = "default"
    priority: int = 0
    max_retries: int = 3
    overlap: str = "allow"
    missed: str = "skip"
    grace_ms: int = 60_000
    paused: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    next_fire_at: datetime | None = None
    last_due_at: datetime | None = None
    last_fired_at: datetime | None = None
    last_job_id: str | None = None
    runs: int = 0
    skipped_runs: int = 0
    missed_runs: int = 0
    version: int = 0
    upcoming: list[datetime] = []


class SchedulePage(msgspec.Struct, frozen=True):
    """One page of `GET /schedules`, by name; pass `next_cursor` back for the next page."""

    schedules: list[Schedule]
    next_cursor: str | None = None


class Key(msgspec.Struct, frozen=True):
    """An API key as listed: never the secret."""

    key_id: str
    name: str = ""
    owner_id: str = ""
    type: str = ""
    scopes: list[str] = []
    created_at: datetime | None = None
    revoked_at: datetime | None = None
    key_prefix: str | None = None


class CreatedKey(msgspec.Struct, frozen=True):
    """A freshly created key: `key` is the secret, shown this once."""

    key: str
    key_id: str | None = None
    name: str = ""
    owner_id: str = ""
    type: str = ""
    scopes: list[str] = []
    created_at: datetime | None = None


class RevokedKey(msgspec.Struct, frozen=True):
    key: str
    revoked_at: datetime | None = None
    message: str = ""


class JobSpec(msgspec.Struct):
    """One job to submit (for `submit_many`). `payload` is required (the server refuses an
    empty one); one that is not a str is sent as JSON.

    `delay` (seconds or a timedelta) and `run_at` are exclusive. `idempotency_key` defaults to a
    fresh uuid4 per job, so a batch retried after a connection error creates no duplicates.
    """

    payload: object
    queue: str = "default"
    priority: int = 0
    max_retries: int = 3
    delay: float | timedelta | None = None
    run_at: datetime | None = None
    idempotency_key: str | None = None
    # Unique jobs: while the first job of this key is in scope ("queued", "active", "period":
    # for `unique_period` seconds), a submit answers its id. Dependencies: parents by job id,
    # or "$N" for entry N (earlier) of the same submit_many chunk of 1000.
    unique_key: str | None = None
    unique_scope: str | None = None
    unique_period: float | timedelta | None = None
    depends_on: list[str] | None = None
    on_parent_failure: str | None = None


class Success(msgspec.Struct, frozen=True):
    """A handler's explicit success; `result` is stored as the job's result."""

    result: object = None


class Failure(msgspec.Struct, frozen=True):
    """A handler's explicit failed attempt; `error` becomes the job's result_error. The job
    retries with backoff (DEAD when its retries are spent); `retry=False` makes the failure
    final: DEAD at once."""

    error: str = "failed"
    retry: bool = True


class Snooze(msgspec.Struct, frozen=True):
    """A handler's "not now": the worker gives the lease back (POST /jobs/{id}/release) and
    the job is READY again after `delay` seconds (a float or a timedelta). The attempt is not
    counted, so snoozing never brings a job closer to DEAD (River's JobSnooze, beanstalkd's
    release with a delay): for a rate-limited upstream, a resource another job holds."""

    delay: float | timedelta = 0.0


# -- insight (issue 19) ------------------------------------------------------------------------

MAX_PROGRESS_NOTE = 200  # characters of a progress note, as the server enforces


class Progress(msgspec.Struct, frozen=True):
    """A running attempt's last progress report: `progress` from 0 to 1, a note, and when."""

    progress: float
    note: str = ""
    at: datetime | None = None


class Explanation(msgspec.Struct, frozen=True):
    """`GET /jobs/{id}/explain`: why the job is where it is. `reason` is one of "scheduled",
    "waiting_for_parents", "paused", "concurrency_limit", "rate_limit", "no_worker", "queued",
    "next", "running", "retry_wait", "dead", "acked", "cancelled" (a newer server may add
    more); `summary` says it in one sentence; the other fields are what the sentence was made
    of, None when they do not apply."""

    job_id: str
    state: JobState
    reason: str
    summary: str
    queue: str = "default"
    run_at: datetime | None = None
    ahead: int | None = None
    drain_per_s: float | None = None
    expected_at: datetime | None = None
    last_asked_at: datetime | None = None
    asked_queues: list[str] | None = None
    lease_id: str | None = None
    leased_at: datetime | None = None
    lease_until: datetime | None = None
    attempt: int | None = None
    max_attempts: int | None = None
    error: str | None = None
    fingerprint: str | None = None
    finished_at: datetime | None = None
    progress: Progress | None = None
    worker: str | None = None
    parents: list[str] | None = None
    parent_states: dict[str, str] | None = None
    running: int | None = None
    concurrency: int | None = None
    rate_limit: int | None = None
    rate_period_ms: int | None = None
    blocked_until: datetime | None = None


class DeadGroup(msgspec.Struct, frozen=True):
    """DEAD jobs whose last error has one fingerprint: the exception type and the message with
    numbers, ids, paths and quoted values replaced (`pattern`)."""

    fingerprint: str
    error_type: str
    pattern: str
    count: int
    first_seen: datetime
    last_seen: datetime
    queues: dict[str, int] = {}
    sample_job_id: str = ""
    sample_error: str = ""


class DeadGroups(msgspec.Struct, frozen=True):
    """`GET /dead/groups`: the biggest groups first (1000 at most), how many groups there
    are, and how many DEAD jobs in all."""

    groups: list[DeadGroup]
    group_count: int = 0
    dead: int = 0


class DeadGroupSettled(msgspec.Struct, frozen=True):
    """What requeueing or cancelling a group did: jobs settled, logged commands used, and
    jobs left in the group (those that died after the request began)."""

    action: str
    settled: int
    commands: int = 0
    remaining: int = 0
