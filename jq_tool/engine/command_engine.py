"""CommandEngine: the Engine API (engine/base.py) implemented once, over one state machine and
*some* log.

It owns everything that does not depend on where the log lives: turning calls into commands
(ids and `now` chosen here, never by the state machine), the proposal queue and its group commit
(commands that arrive while the log is busy share the next batch), long-poll lease waiters, the
job event bus, read-only queries, the ticker's round (expiry, purges and the firings of due
schedules), and the snapshot schedule (when to snapshot, a forked child writing it, retrying
one that failed). Schedules' due times are computed here (engine/cron.py, engine/firing.py)
and travel in their commands. A log supplies three things:
`_append` (make a batch durable: the local WAL's write + fdatasync, or an etcd put), where a
snapshot goes (`_snapshot_position`, `_snapshot_path`) and what a written snapshot allows
(`_snapshot_written`). Whatever the log, a caller is answered only after its command was made
durable and applied.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import logging
import os
import time
from abc import abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import msgspec

from jq_tool.core.job_ids import new_job_id, new_lease_id
from jq_tool.core.model import (
    Ack,
    BulkCancel,
    BulkRequeue,
    BulkResult,
    Cancel,
    Command,
    CreateSchedule,
    DeleteSchedule,
    Error,
    ErrorCode,
    Expire,
    Extend,
    Fail,
    FenceQueue,
    FireSchedule,
    ImportJobs,
    Job,
    JobFlow,
    JobResult,
    JobState,
    Lease,
    LeaseResult,
    NewJob,
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
    ScheduleSpec,
    SetQueue,
    Submit,
    SubmitResult,
    Submitted,
    UpdateSchedule,
    encode_command,
)
from jq_tool.core.search import JobFilter
from jq_tool.core.state_machine import QueueStats, ScheduleStats, StateMachine, Stats
from jq_tool.core.wal import write_snapshot_file
from jq_tool.core.wal_format import encode_snapshot_header
from jq_tool.engine.base import (
    CommandRejected,
    Engine,
    EngineConfig,
    EngineUnavailable,
    InvalidSchedule,
    JobEvent,
    JobSpec,
    LeaseNext,
    QueueChange,
    RetentionStats,
    ScheduleChanges,
    Settlement,
    StorageFull,
    SubmitOutcome,
)
from jq_tool.engine.firing import plan_firing
from jq_tool.engine.forked_snapshot import SnapshotChildFailed, fork_snapshot
from jq_tool.engine.history_store import HistoryStore, HistoryWriteFailed
from jq_tool.engine.insight import InsightCalls
from jq_tool.engine.metrics import LogMetrics
from jq_tool.engine.queue_activity import QueueActivityTracker
from jq_tool.units import format_time

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from jq_tool.engine.cron import CronTimes

log = logging.getLogger("jq.engine")
# A write that failed for want of room (a quota is a full disk too).
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT)

# A slow /events consumer loses events beyond this many rather than slowing the engine.
SUBSCRIBER_QUEUE_SIZE = 10_000
# The ticker never proposes Expire more often than this, however close the next due time is:
# an Expire is a log record, and a flood of them would compete with real work.
MIN_TICK_MS = 20
# How often retention is enforced (a Purge record), independent of the lease check interval.
PURGE_EVERY_MS = 60_000
# After a write refused for want of space, /health says "disk full" until a write succeeds or
# the data dir's file system has this much free again (a node taken out of rotation by its
# health check gets no writes that could clear it).
DISK_FREE_TO_RETRY = 1024 * 1024
# Firings proposed in one ticker round (in one batch); more due schedules wait for the next.
FIRINGS_PER_ROUND = 100
# An update computed from a view that changed before it was applied is computed again.
SCHEDULE_UPDATE_TRIES = 5
# Schedules named one line each when a ticker round finds them past their grace; the rest of
# that round's are counted in one more line (an overloaded node must not flood its log).
MISSED_LINES_PER_ROUND = 5
# Under load, one INFO line at most this often sums up what was applied (an idle node: none).
SUMMARY_EVERY_S = 60.0
# Cold jobs moved into the id dict per turn of the event loop after a cold restore (~5 ms).
WARM_CHUNK = 5_000
# What a finished job costs the process beyond its payload, result and error, for the bytes
# bound (into each Purge): the Job object, its strings, its dict, list and heap entries.
# Measured by `python -m bench.soak --rss-per-job`: ~730 bytes of RSS a finished job with a
# 100-byte payload and a 50-byte result, so ~580 beyond its content; rounded up.
FINISHED_JOB_OVERHEAD = 600


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# How often a wall clock behind the applied commands is reported (engine._held_now).
CLOCK_BEHIND_REPORT_S = 60.0
CLOCK_BEHIND_REPORTED_MS = 1_000  # smaller differences are two nodes' clocks, not a step


def _new_job(
    spec: JobSpec, now: int, batch: list[NewJob] | None = None, shard: int | None = None
) -> NewJob:
    run_at = spec.run_at
    if run_at is None and spec.delay_ms:
        run_at = now + spec.delay_ms
    key = spec.idempotency_key
    flow = None
    if spec.unique_key is not None or spec.depends_on:
        flow = JobFlow(
            spec.unique_key,
            spec.unique_scope,
            spec.unique_period_ms,
            [_parent_id(parent, batch) for parent in spec.depends_on],
            spec.on_parent_failure,
        )
    return NewJob(
        new_job_id(shard),
        spec.queue,
        spec.payload,
        spec.priority,
        spec.max_retries,
        run_at,
        key,
        spec.owner,
        # Hashing a payload costs; only a keyed submit can ever be compared with another.
        None if key is None else spec.fingerprint(),
        flow,
    )


def _parent_id(parent: str, batch: list[NewJob] | None) -> str:
    """A depends_on entry as a job id: "$N" is the id of the batch's entry N, which must come
    before the entry naming it (the server checks; here an index out of range is kept as
    written, and the state machine refuses it as an unknown parent)."""
    if batch is not None and parent.startswith("$") and parent[1:].isdigit():
        index = int(parent[1:])
        if index < len(batch):
            return batch[index].id
    return parent


# A placeholder in settle_many's outcomes until its command's result is in.
_UNSETTLED = CommandRejected(ErrorCode.INVALID, "not settled")


def _forget(futures: Iterable[asyncio.Future[Result]]) -> None:
    """Futures whose caller will not read them: cancel the pending ones (their commands are
    still applied, the answers dropped), and mark a refusal as seen so asyncio does not log it
    as never retrieved."""
    for future in futures:
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            future.exception()


def _outcome(entry: Submitted | Error) -> SubmitOutcome:
    if isinstance(entry, Submitted):
        return SubmitOutcome(job_id=entry.job_id, duplicate=entry.duplicate, unique=entry.unique)
    return SubmitOutcome(error=entry.message, code=entry.code)


class Proposal:
    """One command waiting to be made durable, and the caller's answer. The command is encoded
    here, once: the WAL writes these bytes as its record, etcd gets them inside a batch."""

    __slots__ = ("command", "record", "future", "joined")

    def __init__(
        self, command: Command, future: asyncio.Future[Result], joined: bool = False
    ) -> None:
        self.command = command
        self.record = encode_command(command)
        self.future = future
        # Proposed together with the command before it, by the same caller (`_propose_all`):
        # a batch of one caller's commands is as lone as a batch of one (engine/local.py).
        self.joined = joined


class CommandEngine(InsightCalls, Engine):
    # Batches the log may be making durable at once: the WAL writes one at a time (commands
    # that arrive meanwhile form the next batch); etcd takes several puts in flight.
    APPENDS_IN_FLIGHT: ClassVar[int] = 1

    def __init__(self, config: EngineConfig, *, clock: Callable[[], int] = now_ms) -> None:
        self.config = config
        self._wall_clock = clock
        # Every command's `now` comes from here: never before the last one applied.
        self._clock: Callable[[], int] = self._held_now
        self._clock_behind_reported = -CLOCK_BEHIND_REPORT_S
        # Sharded mode: the shard this engine's log is (its job ids name it); None otherwise.
        self.shard: int | None = None
        # Jobs a Purge forgets go to the history store, replayed ones too (history_store.py).
        self.history = HistoryStore(config.data_dir, config.retention_ms, clock=clock)
        self._machine = StateMachine(
            config.machine, on_transition=self._on_transition, on_forget=self.history.add
        )
        self._replaying = False  # no events while recovery replays the log
        self._started = False
        self._stopping = False
        self._fatal: str | None = None  # why writes are refused for good (a failed fsync)
        self._disk_full = False  # the last write was refused for want of space
        # Long-poll lease waiters per queue; each newly runnable job wakes one.
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {}
        self._runnable_news: dict[str, int] = {}
        self._subscribers: set[asyncio.Queue[JobEvent]] = set()
        self._last_purge = clock()
        # The proposal queue: callers append, the flusher hands whole batches to the log.
        self._loop: asyncio.AbstractEventLoop  # set by _serve
        self._pending: list[Proposal] = []
        self._wakeup = asyncio.Event()
        self._append_slots = asyncio.Semaphore(self.APPENDS_IN_FLIGHT)
        self._flusher: asyncio.Task[None] | None = None
        # The ticker's sleep (_ticker_sleep): when it planned to wake (0: not asleep), and the
        # event that wakes it sooner.
        self._ticker_wakes_at = 0
        self._ticker_nudge = asyncio.Event()
        self._warming: asyncio.Task[None] | None = None  # after a cold restore: see _warm_up
        # The snapshot schedule. Positions are log positions: a WAL index, an etcd revision.
        self._records_since_snapshot = 0
        self._snapshot_at = 0  # the position the newest durable snapshot covers
        self._snapshot_task: asyncio.Task[None] | None = None  # a snapshot being written
        self.log_metrics = LogMetrics()
        self._summary_at = time.monotonic()
        self._summary_counters = self._machine.stats(top=0).counters
        self.queue_activity = QueueActivityTracker()  # lease requests, wait times (issue 19)
        # Parsed cron expressions by (expression, time zone); None: not usable any more.
        self._cron: dict[tuple[str, str], CronTimes | None] = {}

    def _held_now(self) -> int:
        """The wall clock, held at the largest `now` applied while it is behind that.

        The state machine's clock never goes back, and it measures leases, delays and
        backoffs from the `now` a command carries. After the system clock stepped back (NTP
        correcting a clock that ran ahead, a data dir from a machine whose clock was ahead),
        commands stamped with it made every new lease end before the machine's clock: expired
        at the next tick while its worker ran the job, each expiry an attempt spent, the
        retries due at once, running jobs DEAD within seconds. Held here instead, time stands
        still until the wall clock catches up, and everything keeps its length from there. In
        a cluster this also lets a node whose clock is a little behind stamp leases from the
        cluster's clock. The commands carry the held time, so replay is unchanged."""
        now = self._wall_clock()
        applied = self._machine.clock
        if now >= applied:
            return now
        if applied - now >= CLOCK_BEHIND_REPORTED_MS:
            seen = time.monotonic()
            if seen - self._clock_behind_reported >= CLOCK_BEHIND_REPORT_S:
                self._clock_behind_reported = seen
                log.warning(
                    "the system clock is %.1f s behind the last time this queue applied (%s):"
                    " its time holds there until the clock catches up, so no lease, delay or"
                    " retry ends early; they end that much later",
                    (applied - now) / 1000,
                    format_time(applied),
                )
        return applied

    # ------------------------------------------------------------------ what a log provides

    @abstractmethod
    async def _append(self, batch: list[Proposal]) -> None:
        """Make `batch` durable, then apply it and answer its callers (`_apply_commands`), or
        refuse it (`_refuse`). Release one `_append_slots` once the log can take another batch:
        the flusher takes the next batch only then, so callers arriving meanwhile share it."""

    async def _catch_up(self) -> None:  # noqa: B027 - a hook; the local log is always current
        """Before a read that must be current: apply everything the log already committed."""

    @abstractmethod
    def _snapshot_position(self) -> int:
        """The log position the state matches now: a snapshot taken now covers everything
        before it."""

    @abstractmethod
    def _snapshot_path(self, position: int) -> Path:
        """Where the snapshot at `position` is written."""

    @abstractmethod
    async def _snapshot_written(self, position: int) -> None:
        """The snapshot at `position` is durable: drop what it covers, tell whoever needs it."""

    def _snapshot_fds(self) -> list[int]:
        """Descriptors a forked snapshot child must close (the WAL's lock and segment)."""
        return []

    # ------------------------------------------------------------------ lifecycle

    def _serve(self) -> None:
        """Called by `start` once the state is recovered: accept proposals from now on."""
        self._loop = asyncio.get_running_loop()
        self._started = True
        # The first summary counts from here, not from the counters recovery restored.
        self._summary_at = time.monotonic()
        self._summary_counters = self._machine.stats(top=0).counters
        self._flusher = asyncio.create_task(self._flush_loop(), name="jq-flusher")
        self._start_warm_up()

    def _start_warm_up(self) -> None:
        """After a restore: warm the cold jobs up, unless a warm-up is still at it."""
        if self._warming is None or self._warming.done():
            self._warming = asyncio.create_task(self._warm_up(), name="jq-warm-up")

    async def _warm_up(self) -> None:
        """After a restore that left jobs cold (core/cold_index.py), move them into the id dict
        a chunk per turn of the loop: a request waits behind one chunk at most (a few ms), and
        soon every lookup is a dict lookup again. Nothing it does changes an answer."""
        while self._machine.warm_step(WARM_CHUNK):
            await asyncio.sleep(0)

    async def _drain(self) -> None:
        """Called by `stop`: refuse new proposals, make the pending ones durable and answer
        them, wait for a snapshot being written."""
        self._stopping = True
        self._wakeup.set()
        if self._flusher:
            await self._flusher
        # The flusher is done once it has handed its last batch over; the log may still be
        # writing it (the local WAL answers from a callback).
        for _ in range(self.APPENDS_IN_FLIGHT):
            await self._append_slots.acquire()
        for _ in range(self.APPENDS_IN_FLIGHT):
            self._append_slots.release()
        if self._snapshot_task:
            await self._snapshot_task

    def _refusal(self) -> str | None:
        """Why writes are refused now, or None when they are accepted."""
        if self._fatal is not None:
            return self._fatal
        if not self._started:
            return "not started"
        if self._stopping:
            return "shutting down"
        return self._disk_problem()

    def _disk_problem(self) -> str | None:
        """ "disk full" while the last write was refused for want of space and the file system
        of the data dir still has less than DISK_FREE_TO_RETRY free."""
        if not self._disk_full:
            return None
        with contextlib.suppress(OSError):
            fs = os.statvfs(self.config.data_dir)
            if fs.f_bavail * fs.f_frsize >= DISK_FREE_TO_RETRY:
                self._disk_full = False
                return None
        return f"disk full: writes to {self.config.data_dir} are refused until space returns"

    def _fail_for_good(self, reason: str) -> None:
        if self._fatal is None:
            self._fatal = reason
            log.critical("refusing all writes from now on: %s", reason)

    # ------------------------------------------------------------------ the write path

    async def _propose(self, command: Command) -> Result:
        """Make the command durable, apply it, return its result."""
        # A caller that goes away (client disconnect) cancels only this future: the command
        # is still made durable and applied (it may already be in the log), its answer dropped.
        return await self._enqueue(command)

    async def _propose_all(self, commands: list[Command]) -> list[asyncio.Future[Result]]:
        """Queue one caller's commands for one batch, in order; their futures (awaited by the
        caller) get the results once they are durable and applied."""
        return [
            self._enqueue(command, joined=position > 0) for position, command in enumerate(commands)
        ]

    def _enqueue(self, command: Command, *, joined: bool = False) -> asyncio.Future[Result]:
        """Queue the command for the next batch; its future gets the result once it is durable
        and applied. Commands enqueued with no await between them share one batch (the flusher
        takes the whole pending list), hence one durable write."""
        if self._fatal is not None:
            raise EngineUnavailable(self._fatal)
        if not self._started or self._stopping:
            raise EngineUnavailable("engine is not running")
        future: asyncio.Future[Result] = self._loop.create_future()
        self._pending.append(Proposal(command, future, joined))
        self._wakeup.set()
        return future

    async def _flush_loop(self) -> None:
        """Group commit: whatever is pending when the log can take a batch becomes one batch."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                await self._append_slots.acquire()
                batch, self._pending = self._pending, []
                await self._append(batch)
            if self._stopping:
                return

    def _apply_commands(self, commands: Iterable[Command], batch: list[Proposal] | None) -> None:
        """Apply durable commands in log order and answer their callers (`batch`, when this
        process proposed them). The log calls `_applied` once the state matches a log position."""
        self._disk_full = False  # these were written
        machine = self._machine
        results = []
        for command in commands:
            results.append(machine.apply(command))
            kind = type(command)
            if kind is SetQueue or kind is FenceQueue or kind is ReleaseQueue:
                # A resume or a raised limit may free the queue: every waiter looks again. A
                # queue fenced or moved away (sharded): every waiter hears it and goes.
                self._runnable_news[command.queue] = 1 << 30  # type: ignore[union-attr]
        if batch is not None:
            for proposal, result in zip(batch, results, strict=True):
                if not proposal.future.done():
                    proposal.future.set_result(result)
        self._records_since_snapshot += len(results)

    def _applied(self) -> None:
        """After applying, where the state matches `_snapshot_position()` exactly: wake lease
        waiters, and start a snapshot when one is due."""
        self._wake_lease_waiters()
        due = self._machine.take_due_hint()
        if due is not None and due < self._ticker_wakes_at:
            self._ticker_nudge.set()  # something new falls due before the ticker would wake
        if self._snapshot_task is None and self._records_since_snapshot >= self._snapshot_due():
            self._start_snapshot()
        if time.monotonic() - self._summary_at >= SUMMARY_EVERY_S:
            self._log_summary()

    def _log_summary(self) -> None:
        """One line for the last minute or more of work, instead of a line per request: what
        changed, and what is held (issue 21). Called only after applying something, so an idle
        node logs nothing."""
        now = time.monotonic()
        counters = self._machine.stats(top=0).counters
        last, elapsed = self._summary_counters, now - self._summary_at
        self._summary_at, self._summary_counters = now, counters
        if counters == last:
            return
        held = self.retention_stats()
        log.info(
            "last %.0fs: %d submitted, %d acked, %d failed, %d dead, %d evicted to history; "
            "held: %d jobs, %d finished and %d DEAD in memory (~%d MiB), %d on disk",
            elapsed,
            counters.submitted - last.submitted,
            counters.acked - last.acked,
            counters.failed - last.failed,
            counters.dead - last.dead,
            counters.evicted - last.evicted,
            self._machine.job_count,
            held.finished_in_memory,
            held.dead_in_memory,
            held.bytes_in_memory >> 20,
            held.finished_on_disk,
        )

    def _refuse(self, batch: Iterable[Proposal], error: EngineUnavailable) -> None:
        """Nothing of `batch` was acknowledged: its callers get `error`."""
        if isinstance(error, StorageFull):
            self._disk_full = True
        for proposal in batch:
            if not proposal.future.done():
                proposal.future.set_exception(error)

    # ------------------------------------------------------------------ snapshots

    def _snapshot_due(self) -> int:
        """Records between two snapshots: `snapshot_every`, or a quarter of the jobs held when
        that is more. A snapshot costs time in proportion to the jobs it holds, so with many
        jobs a fixed interval would spend ever more of the engine on snapshots; a quarter keeps
        that cost per record bounded and the replay after a crash shorter than the snapshot."""
        return max(self.config.snapshot_every, self._machine.job_count // 4)

    def _start_snapshot(self) -> None:
        """Capture the state for a snapshot. Called by `_applied`, where the state matches
        exactly the log before `_snapshot_position()` (and the local WAL thread is idle: it
        has just finished the only append in flight, whose callback is the caller). A forked
        child (engine/forked_snapshot.py) encodes and writes it while the loop goes on; a
        background task waits for the child, then lets the log drop what the snapshot covers."""
        position = self._snapshot_position()
        due = self._snapshot_due()
        self._records_since_snapshot = 0
        if position <= self._snapshot_at:
            return  # nothing new since the last one
        # Everything forgotten before `position` must be on disk before a snapshot without it
        # exists: the replay after a crash starts there (engine/history_store.py). When it
        # cannot be (a full disk), no snapshot: the log keeps what the history lacks.
        try:
            self.history.flush()
        except HistoryWriteFailed as exc:
            self._snapshot_failed(due, exc)
            return
        started = time.monotonic()
        try:
            child = fork_snapshot(
                self._machine.snapshot,
                self._snapshot_path(position),
                position,
                self._snapshot_fds(),
            )
        except OSError as exc:  # no fork: EAGAIN, ENOMEM
            self._snapshot_failed(due, exc)
            return
        self._snapshot_task = asyncio.create_task(
            self._finish_snapshot(position, due, started, asyncio.to_thread(child.wait)),
            name="jq-snapshot",
        )

    async def _write_snapshot_now(self) -> None:
        """Encode and write a snapshot in process, when the state is past the newest one: at
        stop (nobody is served any more, so no fork)."""
        if self._snapshot_task is not None:
            await self._snapshot_task  # one writer of a snapshot file at a time
        position = self._snapshot_position()
        if position <= self._snapshot_at:
            return
        started = time.monotonic()
        self.history.flush()  # as in _start_snapshot
        data = self._machine.snapshot()
        self._records_since_snapshot = 0
        header = encode_snapshot_header(position, data)
        path = self._snapshot_path(position)
        written = asyncio.to_thread(write_snapshot_file, path, header, data)
        await self._finish_snapshot(position, self._snapshot_due(), started, written)

    async def _finish_snapshot(
        self, position: int, due: int, started: float, written: Awaitable[None]
    ) -> None:
        try:
            await written
            await self._snapshot_written(position)
        except (OSError, SnapshotChildFailed) as exc:
            self._snapshot_failed(due, exc)
            return
        except RuntimeError as exc:  # "can't start new thread": out of memory or threads
            self._snapshot_failed(due, exc)
            return
        except Exception as exc:  # noqa: BLE001
            self._fail_for_good(f"snapshot failed: {exc}")
            return
        finally:
            self._snapshot_task = None
        self._snapshot_at = position
        elapsed = time.monotonic() - started
        self.log_metrics.snapshot_seconds.observe(elapsed)
        log.info("snapshot at %d written in %.2fs", position, elapsed)

    def _snapshot_failed(self, due: int, exc: BaseException) -> None:
        # The log itself is intact: a snapshot that could not be written (a full disk, a child
        # the kernel killed) only means a longer replay; try again half an interval later.
        self._records_since_snapshot += due // 2
        log.error("snapshot failed, will retry: %s", exc)
        no_room = (isinstance(exc, OSError) and exc.errno in _NO_ROOM) or (
            isinstance(exc, HistoryWriteFailed) and exc.no_room  # the history's SQLite file
        )
        if no_room and not self._stopping:
            self._make_room()

    def _make_room(self) -> None:  # noqa: B027 - a hook; a log that keeps nothing spare
        """The disk is full: give up what the log keeps but could do without."""

    # ------------------------------------------------------------------ events and waiters

    def _on_transition(self, job: Job, previous: JobState | None, now: int) -> None:
        if self._replaying:
            return
        if previous is JobState.READY and job.state is JobState.RUNNING:
            self.queue_activity.leased(job.queue, now - job.run_at, now)  # time in queue
        if (job.state is JobState.READY and job.run_at <= now) or (
            previous is JobState.RUNNING and self._machine.has_queue_settings(job.queue)
        ):
            # A job finishing in a queue with a concurrency limit frees a slot there.
            self._runnable_news[job.queue] = self._runnable_news.get(job.queue, 0) + 1
        if self._subscribers:
            event = JobEvent(
                job_id=job.id,
                queue=job.queue,
                state=job.state,
                previous=previous,
                attempts=job.attempts,
                priority=job.priority,
                at=now,
                run_at=job.run_at,
                worker=job.worker if job.state is JobState.RUNNING else None,
                error=job.result_error,
            )
            for queue in self._subscribers:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(event)

    def _wake_lease_waiters(self) -> None:
        """Called after applying commands: one waiter per job that became runnable (the state
        machine reports a scheduled job coming due as a READY -> READY transition)."""
        for name, count in self._runnable_news.items():
            self._wake(name, count)
        self._runnable_news.clear()

    def _wake(self, queue: str, count: int) -> None:
        """Wake up to `count` of the queue's waiters, oldest first (those done are dropped)."""
        waiters = self._waiters.get(queue)
        while waiters and count > 0:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                count -= 1

    def _pass_wake_up(self, queue: str, waiter: asyncio.Future[None]) -> None:
        """A woken waiter whose caller gave up passes its wake-up to the next waiter of the
        queue, which a job it was woken for would otherwise leave asleep."""
        if waiter.done() and not waiter.cancelled():  # woken, not timed out or cancelled
            self._wake(queue, 1)

    def _release_all_waiters(self) -> None:
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def subscribe(self) -> AsyncIterator[JobEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[JobEvent]:
        queue: asyncio.Queue[JobEvent] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE_SIZE)
        self._subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)

    # ------------------------------------------------------------------ the ticker's work

    def _ticker_pause_ms(self, longest_ms: int) -> int:
        """How long the ticker sleeps: until the next lease, job or schedule falls due, at
        most `longest_ms`, at least MIN_TICK_MS."""
        due = (self._machine.next_due(), self._machine.next_schedule_due())
        times = [t for t in due if t is not None]
        if not times:
            return longest_ms
        return min(longest_ms, max(MIN_TICK_MS, min(times) - self._clock()))

    async def _ticker_sleep(self, longest_ms: int) -> None:
        """Sleep until the next lease, job or schedule falls due (at most `longest_ms`), or until
        a command applied meanwhile makes something due sooner (`_applied`): a job submitted
        with a 300 ms delay while the ticker slept for 5 s waited the 5 s."""
        self._machine.take_due_hint()  # what is in the state now is in the pause
        pause_ms = self._ticker_pause_ms(longest_ms)
        self._ticker_wakes_at = self._clock() + pause_ms
        nudge = self._ticker_nudge
        nudge.clear()
        # A timer sets the same event, rather than wait_for: 3.11's wait_for loses a cancel that
        # arrives as the event is set (a stop that applied a last command), and the ticker ran on.
        timer = asyncio.get_running_loop().call_later(pause_ms / 1000, nudge.set)
        try:
            await nudge.wait()
        finally:
            timer.cancel()
            self._ticker_wakes_at = 0

    async def _tick_loop(self) -> None:
        """The single node's ticker (the cluster elects one node to run `_tick` instead). It
        ends when the engine stops, should a cancel ever be lost: it would otherwise warn
        "engine is not running" every MIN_TICK_MS, and the stop awaiting it would hang."""
        while not self._stopping:
            await self._ticker_sleep(self.config.lease_check_interval_ms)
            if self._fatal is not None or self._stopping:
                continue
            try:
                await self._tick(self.config.retention_ms)
            except EngineUnavailable as exc:
                log.warning("ticker: %s", exc)

    async def _tick(self, retention_ms: int) -> None:
        """One round of time-driven work, as commands: Expire when a lease or a scheduled/RETRY
        job is due, a FireSchedule per due schedule, and a Purge of finished jobs once a
        minute."""
        now = self._clock()
        due = self._machine.next_due()
        if due is not None and due <= now:
            await self._propose(Expire(now=now))
        await self._fire_schedules(now)
        config = self.config
        bounds = (config.max_finished, config.max_finished_bytes, FINISHED_JOB_OVERHEAD,
                  config.max_dead, config.max_idempotency_keys)  # fmt: skip
        # Past a bound, every round (not once a minute): a busy queue finishes jobs faster
        # than a minute's worth of memory should hold. The machine decides which go.
        if now - self._last_purge >= PURGE_EVERY_MS or self._machine.over_bounds(*bounds):
            self._last_purge = now
            max_finished, max_bytes, overhead, max_dead, max_keys = bounds
            result = await self._propose(
                Purge(now, now - retention_ms, max_finished, max_bytes, overhead, max_dead,
                      None, max_keys)
            )  # fmt: skip
            if isinstance(result, PurgeResult) and result.dead_dropped:
                log.warning(
                    "%d DEAD jobs dropped past the DEAD cap (--max-dead %d); their records "
                    "stay in the history store until retention",
                    result.dead_dropped,
                    max_dead,
                )

    async def _fire_schedules(self, now: int) -> None:
        """Propose the firing of every due schedule (engine/firing.py decides each), in one
        batch. A firing the state machine refuses (it was already fired: a second ticker, a
        replayed proposal) changes nothing and is only logged."""
        firings = []
        for schedule in self._machine.due_schedules(now, FIRINGS_PER_ROUND):
            times = self._cron_times(schedule.spec)
            if times is not None:
                firings.append(plan_firing(schedule, times, now, new_job_id(self.shard)))
        if not firings:
            return
        results = await asyncio.gather(*(self._propose(firing) for firing in firings))
        missed = []
        for firing, result in zip(firings, results, strict=True):
            if isinstance(result, Error):
                log.debug("firing of %r at %d refused: %s", firing.name, firing.due, result.message)
            elif firing.missed:
                missed.append(firing)
        _log_missed(missed)

    def _cron_times(self, spec: ScheduleSpec) -> CronTimes | None:
        """The schedule's times, parsed once per expression and zone. None (logged once) when
        they cannot be read any more (a zone removed from the tz database since): the
        schedule then waits until it is changed."""
        key = (spec.cron, spec.timezone)
        if key in self._cron:
            return self._cron[key]
        if len(self._cron) >= 4 * self.config.max_schedules:
            self._cron.clear()
        from jq_tool.engine.cron import CronTimes  # cronsim and zoneinfo: only once needed

        try:
            times: CronTimes | None = CronTimes(spec.cron, spec.timezone)
        except InvalidSchedule as exc:
            log.error("schedule %r cannot fire: %s", spec.name, exc)
            times = None
        self._cron[key] = times
        return times

    # ------------------------------------------------------------------ the Engine API

    async def submit(self, spec: JobSpec) -> SubmitOutcome:
        # POST /jobs, the server's hottest call: one job, without submit_many's lists.
        now = self._clock()
        config = self.config
        result = await self._propose(
            Submit(
                now,
                [_new_job(spec, now, None, self.shard)],
                config.idempotency_keep_ms,
                config.max_queues,
            )
        )
        assert isinstance(result, SubmitResult)
        return _outcome(result.entries[0])

    async def submit_many(self, specs: list[JobSpec]) -> list[SubmitOutcome]:
        now = self._clock()
        jobs: list[NewJob] = []
        for spec in specs:
            jobs.append(_new_job(spec, now, jobs, self.shard))
        config = self.config
        result = await self._propose(
            Submit(now, jobs, config.idempotency_keep_ms, config.max_queues)
        )
        assert isinstance(result, SubmitResult)
        return [_outcome(entry) for entry in result.entries]

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
        lease_ms = lease_ms or self.config.lease_ms
        self.queue_activity.asked(queue, self._clock())
        await self._catch_up()
        # Try at once: a busy queue answers without the long poll's timer and tasks.
        jobs = await self._lease_now(queue, max_jobs, lease_ms, worker)
        if jobs or wait_ms <= 0 or self._stopping:
            return jobs
        waiting = asyncio.ensure_future(
            self._lease_waiting(queue, max_jobs, lease_ms, wait_ms, worker)
        )
        if give_up is None:
            return await waiting
        giving_up = asyncio.ensure_future(give_up())
        try:
            await asyncio.wait({waiting, giving_up}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            giving_up.cancel()
        if waiting.done():
            return waiting.result()
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            # A lease may have been proposed just before the cancel: it is on disk and applied,
            # and its job waits out its lease like any job whose worker went away.
            return await waiting
        return []

    async def _lease_now(
        self, queue: str, max_jobs: int, lease_ms: int, worker: str | None = None
    ) -> list[Job]:
        now = self._clock()
        # Sharded: a queue this shard does not serve (or that is moving) is refused at once,
        # not waited on; off (one node, one group) this is None at once.
        refusal = self._machine.ownership.queue_refusal(queue)
        if refusal is not None:
            raise CommandRejected(refusal.code, refusal.message)
        # Only a lease that can succeed is written to the log: an empty poll writes nothing.
        if not self._machine.has_runnable(queue, now):
            return []
        lease_ids = [new_lease_id() for _ in range(max_jobs)]
        result = await self._propose(
            Lease(now=now, queue=queue, lease_ms=lease_ms, lease_ids=lease_ids, worker=worker)
        )
        if isinstance(result, Error):  # sharded: fenced or moved since the look above
            raise CommandRejected(result.code, result.message)
        assert isinstance(result, LeaseResult)
        return result.jobs

    async def _lease_waiting(
        self, queue: str, max_jobs: int, lease_ms: int, wait_ms: int, worker: str | None
    ) -> list[Job]:
        """The long poll: wait on the queue's FIFO of waiters; each job that becomes runnable
        wakes one, which tries again (and waits again if another request was faster)."""
        deadline = time.monotonic() + wait_ms / 1000
        loop = asyncio.get_running_loop()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stopping:
                return []
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(queue, deque()).append(waiter)
            now = self._clock()
            free_at = self._machine.lease_blocked_until(queue, now)
            if free_at is not None and free_at > 0:
                # A rate window frees a slot at a time, not on an event: look again then.
                remaining = min(remaining, max(free_at - now, 1) / 1000)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                pass
            except asyncio.CancelledError:
                self._pass_wake_up(queue, waiter)
                raise
            finally:
                waiters = self._waiters.get(queue)
                if waiters is not None:
                    with contextlib.suppress(ValueError):
                        waiters.remove(waiter)
                    if not waiters:
                        del self._waiters[queue]
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # The caller gave up (its client went away) as the waiter was woken, and 3.11's
                # wait_for returned instead of raising: lease nothing for a client gone.
                self._pass_wake_up(queue, waiter)
                raise asyncio.CancelledError
            jobs = await self._lease_now(queue, max_jobs, lease_ms, worker)
            if jobs:
                return jobs

    async def _settle(self, command: Ack | Fail | Extend | Release | Cancel | Requeue) -> Job:
        # Answer an unknown id without writing a doomed command to the log; the state machine
        # still decides everything else when the command is applied.
        if self._machine.get(command.job_id) is None:
            await self._catch_up()
            if self._machine.get(command.job_id) is None:
                # Sharded: a job whose queue moved away leaves a stub naming its new shard.
                moved_to = self._machine.ownership.moved_job(command.job_id)
                if moved_to is not None:
                    message = f"job {command.job_id} moved to shard {moved_to}"
                    raise CommandRejected(ErrorCode.NOT_OWNER, message)
                raise CommandRejected(ErrorCode.NOT_FOUND, f"job {command.job_id} not found")
        result = await self._propose(command)
        if isinstance(result, Error):
            raise CommandRejected(result.code, result.message)
        assert isinstance(result, JobResult)
        return result.job

    async def ack(self, job_id: str, *, lease_id: str | None, result: str | None) -> Job:
        return await self._settle(
            Ack(now=self._clock(), job_id=job_id, lease_id=lease_id, result=result)
        )

    async def fail(
        self, job_id: str, *, lease_id: str | None, error: str, retry: bool = True
    ) -> Job:
        return await self._settle(
            Fail(now=self._clock(), job_id=job_id, lease_id=lease_id, error=error, retry=retry)
        )

    async def settle_many(
        self, settlements: list[Settlement], *, lease_next: LeaseNext | None = None
    ) -> tuple[list[Job | CommandRejected], list[Job]]:
        # Two kinds of commands (an Ack or Fail per settlement, then one Lease), enqueued with
        # no await between them: one batch, one durable write, and no new command type. The
        # Lease is applied whatever the settlements' outcomes, which is what a worker wants (its
        # slots are free either way), so nothing decides it inside the state machine.
        machine = self._machine
        if lease_next is not None:
            self.queue_activity.asked(lease_next.queue, self._clock())
        if lease_next is not None or any(machine.get(s.job_id) is None for s in settlements):
            await self._catch_up()
        now = self._clock()
        outcomes: list[Job | CommandRejected] = []
        commands: list[Command] = []
        positions: list[int] = []  # where each settlement's command answers in `outcomes`
        for settlement in settlements:
            job_id = settlement.job_id
            if machine.get(job_id) is None:  # no doomed command in the log, as in _settle
                outcomes.append(CommandRejected(ErrorCode.NOT_FOUND, f"job {job_id} not found"))
                continue
            if settlement.error:
                commands.append(
                    Fail(now, job_id, settlement.lease_id, settlement.error, settlement.retry)
                )
            else:
                commands.append(Ack(now, job_id, settlement.lease_id, settlement.result))
            positions.append(len(outcomes))
            outcomes.append(_UNSETTLED)
        leasing = lease_next is not None and machine.has_runnable(lease_next.queue, now)
        if leasing:
            assert lease_next is not None
            lease_ids = [new_lease_id() for _ in range(lease_next.max_jobs)]
            lease_ms = lease_next.lease_ms or self.config.lease_ms
            commands.append(Lease(now, lease_next.queue, lease_ms, lease_ids, lease_next.worker))
        if not commands:
            return outcomes, []
        futures = await self._propose_all(commands)
        try:
            for position, future in zip(positions, futures[: len(positions)], strict=True):
                result = await future
                if isinstance(result, Error):
                    outcomes[position] = CommandRejected(result.code, result.message)
                else:
                    assert isinstance(result, JobResult)
                    outcomes[position] = result.job
            leased: list[Job] = []
            if leasing:
                result = await futures[-1]
                if isinstance(result, Error):  # sharded: the queue is elsewhere or moving
                    raise CommandRejected(result.code, result.message)
                assert isinstance(result, LeaseResult)
                leased = result.jobs
        except BaseException:
            # The whole batch was refused, or the caller went away: the other futures are
            # nobody's now (their commands are still applied if they were made durable).
            _forget(futures)
            raise
        return outcomes, leased

    async def extend(self, job_id: str, *, lease_id: str | None, lease_ms: int | None) -> Job:
        return await self._settle(
            Extend(
                now=self._clock(),
                job_id=job_id,
                lease_ms=lease_ms or self.config.lease_ms,
                lease_id=lease_id,
            )
        )

    async def release(self, job_id: str, *, lease_id: str | None, delay_ms: int = 0) -> Job:
        return await self._settle(
            Release(now=self._clock(), job_id=job_id, lease_id=lease_id, delay_ms=delay_ms)
        )

    async def cancel(self, job_id: str) -> Job:
        return await self._settle(Cancel(now=self._clock(), job_id=job_id))

    async def requeue(self, job_id: str) -> Job:
        return await self._settle(Requeue(now=self._clock(), job_id=job_id))

    async def get(self, job_id: str) -> Job | None:
        await self._catch_up()
        job = self._machine.get(job_id)
        return msgspec.structs.replace(job) if job is not None else None

    async def propose(self, command: Command) -> Result:
        """Make one command durable and applied here; its result (an Error is an answer). For
        the move driver (engine/moves.py's ShardLog), which logs ownership commands."""
        return await self._propose(command)

    def export_queue(self, queue: str, move_id: str) -> builtins.list[ImportJobs]:
        """A fenced queue's export from this replica (which applied the fence if it proposed
        it): engine/moves.py's ShardLog.export."""
        return self._machine.export_queue(queue, move_id)

    def holds(self, job_id: str) -> bool:
        """Whether the job is in memory here now (no catch-up): sharded mode routes by it."""
        return self._machine.get(job_id) is not None

    def queue_job_of(self, job_id: str) -> str | None:
        job = self._machine.get(job_id)
        return None if job is None else job.queue

    def queue_of_schedule(self, name: str) -> str | None:
        """The queue of the schedule in memory here now (no catch-up): sharded mode routes by
        it, a schedule living with its queue."""
        schedule = self._machine.get_schedule(name)
        return None if schedule is None else schedule.spec.queue

    async def get_finished(self, job_id: str) -> Job | None:
        if type(job_id) is not str:
            return None
        return self.history.get(job_id)

    def retention_stats(self) -> RetentionStats:
        held = self._machine.held()
        counters = self._machine.stats(top=0).counters
        history = self.history
        return RetentionStats(
            finished_in_memory=held.finished,
            dead_in_memory=held.dead,
            bytes_in_memory=held.finished_bytes
            + held.dead_bytes
            + FINISHED_JOB_OVERHEAD * (held.finished + held.dead),
            finished_on_disk=history.records,
            history_bytes=history.disk_bytes(),
            evicted=counters.evicted,
            dead_dropped=counters.dead_dropped,
            idempotency_keys=self._machine.idempotency_key_count,
        )

    async def list(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        jobs, next_cursor = self._machine.list_jobs(
            state=state, queue=queue, limit=limit, cursor=cursor
        )
        return [msgspec.structs.replace(job) for job in jobs], next_cursor

    def stats(self, top: int | None = None) -> Stats:
        return self._machine.stats(top)

    def queue_page(self, after: str | None, limit: int) -> builtins.list[tuple[str, QueueStats]]:
        return self._machine.queue_page(after, limit)

    def running(self, queue: str | None = None) -> builtins.list[Job]:
        return self._machine.running(queue)

    def oldest_runnable_since(self, queue: str) -> int | None:
        return self._machine.oldest_runnable_since(queue)

    def search(
        self,
        where: JobFilter,
        *,
        limit: int = 50,
        cursor: str | None = None,
        scan_limit: int | None = None,
    ) -> tuple[builtins.list[Job], str | None]:
        jobs, next_cursor = self._machine.search_jobs(
            where, limit=limit, cursor=cursor, scan_limit=scan_limit
        )
        return [msgspec.structs.replace(job) for job in jobs], next_cursor

    async def catch_up(self) -> None:
        await self._catch_up()

    async def bulk(self, action: str, job_ids: builtins.list[str]) -> builtins.list[str]:
        now = self._clock()
        command = BulkRequeue(now, job_ids) if action == "requeue" else BulkCancel(now, job_ids)
        result = await self._propose(command)
        if isinstance(result, Error):
            raise CommandRejected(result.code, result.message)
        assert isinstance(result, BulkResult)
        return result.changed

    def minute_counts(
        self, queue: str | None, minutes: int, last_minute: int
    ) -> tuple[bool, builtins.list[int], builtins.list[int], builtins.list[int]]:
        return self._machine.history(queue, minutes, last_minute)

    def metrics(self) -> Iterator[Metric]:
        """Prometheus metric families about the log and the queues' wait times (the server
        adds them to /metrics)."""
        from prometheus_client.metrics_core import GaugeMetricFamily

        yield from self.log_metrics.collect()
        yield from self.queue_activity.collect()
        behind_ms = max(0, self._machine.clock - self._wall_clock())
        yield GaugeMetricFamily(
            "jq_clock_behind_seconds",
            "How far the system clock is behind the last time this queue applied (0 normally);"
            " while above 0, leases, delays and retries end that much later",
            value=behind_ms / 1000,
        )

    # ------------------------------------------------------------------ schedules

    def _schedule_times(self, spec: ScheduleSpec) -> CronTimes:
        """The spec's times, or InvalidSchedule naming the field at fault."""
        from jq_tool.engine.cron import CronTimes

        times = CronTimes(spec.cron, spec.timezone)  # raises CronError, an InvalidSchedule
        self._cron[(spec.cron, spec.timezone)] = times
        return times

    async def create_schedule(
        self, spec: ScheduleSpec, *, paused: bool = False
    ) -> tuple[Schedule, bool]:
        times = self._schedule_times(spec)
        now = self._clock()
        next_due = _first_due(times, now)
        result = await self._propose(
            CreateSchedule(now, spec, next_due, paused, self.config.max_schedules)
        )
        if isinstance(result, Error):
            raise CommandRejected(result.code, result.message)
        assert isinstance(result, ScheduleResult)
        return result.schedule, result.created

    async def update_schedule(self, name: str, changes: ScheduleChanges) -> Schedule:
        await self._catch_up()
        refusal = ""
        for _ in range(SCHEDULE_UPDATE_TRIES):
            current = self._machine.get_schedule(name)
            if current is None:
                raise CommandRejected(ErrorCode.NOT_FOUND, f"no schedule {name!r}")
            fields = {
                field: value
                for field, value in msgspec.structs.asdict(changes).items()
                if value is not None and field != "paused"
            }
            spec = msgspec.structs.replace(current.spec, **fields)
            paused = current.paused if changes.paused is None else changes.paused
            now = self._clock()
            next_due = current.next_due
            when_changed = (spec.cron, spec.timezone) != (current.spec.cron, current.spec.timezone)
            if when_changed or (current.paused and not paused):
                # A new definition, or a resume, starts from now: what passed is not missed.
                times = self._schedule_times(spec)
                next_due = _first_due(times, max(now, current.last_due or now))
            result = await self._propose(
                UpdateSchedule(now, spec, paused, next_due, current.version)
            )
            if isinstance(result, ScheduleResult):
                return result.schedule
            assert isinstance(result, Error)
            if result.code is not ErrorCode.INVALID_STATE:
                raise CommandRejected(result.code, result.message)
            # It changed (or fired) between reading and applying: read it again.
            refusal = result.message
        raise CommandRejected(ErrorCode.INVALID_STATE, refusal)

    async def delete_schedule(self, name: str) -> Schedule:
        await self._catch_up()
        if self._machine.get_schedule(name) is None:
            raise CommandRejected(ErrorCode.NOT_FOUND, f"no schedule {name!r}")
        result = await self._propose(DeleteSchedule(self._clock(), name))
        if isinstance(result, Error):
            raise CommandRejected(result.code, result.message)
        assert isinstance(result, ScheduleResult)
        return result.schedule

    async def get_schedule(self, name: str) -> Schedule | None:
        await self._catch_up()
        schedule = self._machine.get_schedule(name)
        return None if schedule is None else msgspec.structs.replace(schedule)

    def schedule_page(self, after: str | None, limit: int) -> builtins.list[Schedule]:
        return [msgspec.structs.replace(s) for s in self._machine.schedule_page(after, limit)]

    def schedule_times(self, schedule: Schedule, count: int) -> builtins.list[int]:
        if schedule.paused or schedule.next_due is None or count < 1:
            return []
        times = self._cron_times(schedule.spec)
        if times is None:
            return [schedule.next_due]
        return [schedule.next_due, *times.upcoming(schedule.next_due, count - 1)]

    def schedule_stats(self) -> ScheduleStats:
        return self._machine.schedule_stats()

    # ------------------------------------------------------------------ queue flow settings

    async def set_queue(self, change: QueueChange) -> QueueSettings:
        result = await self._propose(
            SetQueue(
                self._clock(),
                change.queue,
                change.paused,
                change.concurrency,
                change.rate_limit,
                change.rate_period_ms,
                self.config.max_queues,
                change.max_latency_ms,
            )
        )
        if isinstance(result, Error):
            raise CommandRejected(result.code, result.message)
        assert isinstance(result, QueueResult)
        return result.settings

    def queue_settings(self, name: str) -> QueueSettings:
        return self._machine.queue_settings(name)

    def queue_settings_page(self) -> builtins.list[QueueSettings]:
        return self._machine.queue_settings_page()

    def queue_stats(self, name: str) -> QueueStats | None:
        return self._machine.queue_stats(name)


def _log_missed(firings: list[FireSchedule]) -> None:
    """A WARNING for each applied firing that counted missed due times: a downtime, or a node
    so busy that it reached a due time more than the schedule's grace late. Either way the
    operator should know, and `missed_runs` alone does not say when."""
    for firing in firings[:MISSED_LINES_PER_ROUND]:
        log.warning(
            "schedule %r missed %d due time(s) from %s to %s (reached past its grace): %s",
            firing.name,
            firing.missed,
            format_time(firing.due),
            format_time(firing.last_due),
            "ran the latest once" if firing.job_id else "skipped",
        )
    if len(firings) > MISSED_LINES_PER_ROUND:
        log.warning(
            "%d more schedules missed due times in the same round (GET /schedules: missed_runs)",
            len(firings) - MISSED_LINES_PER_ROUND,
        )


def _first_due(times: CronTimes, after: int) -> int:
    due = times.after(after)
    if due is None:
        raise InvalidSchedule("cron", "the cron expression has no due time in the next 50 years")
    return due
