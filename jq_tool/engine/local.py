"""LocalEngine: one process owning one state machine and its local write-ahead log.

It turns every mutating call into a command, makes the command durable with group commit and
only then applies it and answers: commands that arrive while a flush is in flight wait for the
next one, so one `write` + one `fdatasync` (run off the event loop, in a single WAL thread) serves
a whole batch of callers. It also runs the ticker (lease expiry, scheduled jobs, retention purge),
wakes long-polling lease requests, takes periodic snapshots and publishes job events.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from jq_tool.core.model import (
    Ack,
    Cancel,
    Command,
    Error,
    ErrorCode,
    Expire,
    Extend,
    Fail,
    Job,
    JobResult,
    JobState,
    Lease,
    LeaseResult,
    NewJob,
    Purge,
    Requeue,
    Result,
    Submit,
    Submitted,
    SubmitResult,
    decode_command,
    encode_command,
)
from jq_tool.core.state_machine import StateMachine, StateMachineConfig, Stats
from jq_tool.core.wal import RECORD_COMMAND, WAL, WalFailed
from jq_tool.engine.base import (
    CommandRejected,
    EngineUnavailable,
    Health,
    JobEvent,
    JobSpec,
    StorageFull,
    SubmitOutcome,
)

log = logging.getLogger("jq.engine")

# The ticker never proposes Expire more often than this, however close the next due time is:
# an Expire is a WAL record, and a flood of them would compete with real work.
MIN_TICK_MS = 20
# How often retention is enforced (a Purge record), independent of the lease check interval.
PURGE_EVERY_MS = 60_000
# A slow /events consumer loses events beyond this many rather than slowing the engine.
SUBSCRIBER_QUEUE_SIZE = 10_000


@dataclass(frozen=True)
class EngineConfig:
    data_dir: Path
    lease_ms: int = 30_000  # default lease when a lease request names none
    tick_ms: int = 5_000  # longest pause between two looks at due leases and jobs
    retention_ms: int = 7 * 24 * 3600 * 1000  # finished jobs are kept this long
    snapshot_every: int = 100_000  # records between two snapshots
    segment_bytes: int = 64 << 20
    machine: StateMachineConfig = field(default_factory=StateMachineConfig)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Proposal:
    __slots__ = ("command", "record", "future")

    def __init__(self, command: Command, future: asyncio.Future[Result]) -> None:
        self.command = command
        self.record = encode_command(command)
        self.future = future


class LocalEngine:
    def __init__(self, config: EngineConfig, *, clock: Callable[[], int] = now_ms) -> None:
        self.config = config
        self._clock = clock
        self._wal = WAL(config.data_dir, segment_bytes=config.segment_bytes)
        self._machine = StateMachine(config.machine, on_transition=self._on_transition)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jq-wal")
        self._pending: list[_Proposal] = []
        self._wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._replaying = False
        self._started = False
        self._stopping = False
        self._fatal: str | None = None  # why writes are refused for good (a failed fsync)
        self._records_since_snapshot = 0
        self._last_purge = 0
        # Long-poll lease waiters per queue; woken one per newly runnable job.
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {}
        self._runnable_news: dict[str, int] = {}
        self._subscribers: set[asyncio.Queue[JobEvent]] = set()
        self.recovery_message: str | None = None  # what recovery truncated, if anything

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        replayed = await loop.run_in_executor(self._executor, self._recover)
        log.info(
            "recovered %d jobs (%d log records replayed) in %.2fs",
            self._machine.job_count,
            replayed,
            time.monotonic() - started,
        )
        self._records_since_snapshot = replayed
        self._last_purge = self._clock()
        self._started = True
        self._flusher = asyncio.create_task(self._flush_loop(), name="jq-flusher")
        self._ticker = asyncio.create_task(self._tick_loop(), name="jq-ticker")

    def _recover(self) -> int:
        """Newest valid snapshot + replay. Runs in the WAL thread before anything else."""
        recovery = self._wal.open()
        if recovery.truncated:
            self.recovery_message = recovery.truncated
            log.warning("WAL tail truncated during recovery: %s", recovery.truncated)
        if recovery.snapshot is not None:
            self._machine.restore(recovery.snapshot)
        replayed = 0
        self._replaying = True
        try:
            for _index, record_type, body in self._wal.replay():
                if record_type == RECORD_COMMAND:
                    self._machine.apply(decode_command(body))
                    replayed += 1
        finally:
            self._replaying = False
        return replayed

    async def stop(self) -> None:
        """Drain: everything already proposed is flushed and answered, then a final snapshot."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        if self._ticker:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        self._wakeup.set()
        if self._flusher:
            await self._flusher
        if self._fatal is None and self._records_since_snapshot:
            with contextlib.suppress(Exception):
                await self._write_snapshot()
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._wal.close)
        self._executor.shutdown(wait=True)
        self._started = False

    # ------------------------------------------------------------------ the write path

    async def _propose(self, command: Command) -> Result:
        if self._fatal is not None:
            raise EngineUnavailable(self._fatal)
        if not self._started or self._stopping:
            raise EngineUnavailable("engine is not running")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append(_Proposal(command, future))
        self._wakeup.set()
        # Shielded: a caller that goes away (client disconnect) must not cancel a command that
        # may already be on disk; it is applied either way, only the answer is dropped.
        return await asyncio.shield(future)

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._pending:
                if self._stopping:
                    return
                continue
            batch, self._pending = self._pending, []
            records = [(RECORD_COMMAND, proposal.record) for proposal in batch]
            try:
                await loop.run_in_executor(self._executor, self._wal.append, records)
            except Exception as exc:  # noqa: BLE001 - every storage error is answered, below
                self._refuse_batch(batch, exc)
                continue
            for proposal in batch:
                result = self._machine.apply(proposal.command)
                if not proposal.future.done():
                    proposal.future.set_result(result)
            self._wake_lease_waiters()
            self._records_since_snapshot += len(batch)
            if self._records_since_snapshot >= self.config.snapshot_every:
                try:
                    await self._write_snapshot()
                except Exception as exc:  # noqa: BLE001
                    self._fail_for_good(f"snapshot failed: {exc}")

    def _refuse_batch(self, batch: list[_Proposal], exc: BaseException) -> None:
        """Nothing of a failed batch was acknowledged. A full disk is recoverable (the WAL cut
        the partial batch off); anything else, above all a failed fsync, stops writes for good:
        after a failed fsync the kernel may have dropped the dirty pages, so retrying would
        acknowledge data that is not on disk."""
        error: EngineUnavailable
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            error = StorageFull("disk full: the write was refused; retry when space returns")
            log.error("WAL append refused: disk full (%s)", exc)
        else:
            reason = f"WAL write failed: {exc}" if not isinstance(exc, WalFailed) else str(exc)
            self._fail_for_good(reason)
            error = EngineUnavailable(self._fatal or reason)
        for proposal in batch:
            if not proposal.future.done():
                proposal.future.set_exception(error)
        if self._fatal is not None:
            pending, self._pending = self._pending, []
            for proposal in pending:
                if not proposal.future.done():
                    proposal.future.set_exception(error)

    def _fail_for_good(self, reason: str) -> None:
        if self._fatal is None:
            self._fatal = reason
            log.critical("refusing all writes from now on: %s", reason)

    async def _write_snapshot(self) -> None:
        # Taken on the loop between two batches, so it matches exactly the records before
        # next_index; written to disk in the WAL thread (never concurrently with an append).
        index = self._wal.next_index
        data = self._machine.snapshot()
        self._records_since_snapshot = 0
        started = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(
            self._executor, self._wal.write_snapshot, index, data
        )
        log.info(
            "snapshot at index %d: %d jobs, %d bytes, %.2fs",
            index,
            self._machine.job_count,
            len(data),
            time.monotonic() - started,
        )

    # ------------------------------------------------------------------ events and waiters

    def _on_transition(self, job: Job, previous: JobState | None, now: int) -> None:
        if self._replaying:
            return
        if job.state is JobState.READY and job.run_at <= now:
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
            )
            for queue in self._subscribers:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(event)

    def _wake_lease_waiters(self, *, everyone: bool = False) -> None:
        if everyone:
            for name, waiters in self._waiters.items():
                self._runnable_news[name] = len(waiters)
        for name, count in self._runnable_news.items():
            waiters = self._waiters.get(name)
            while waiters and count > 0:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    count -= 1
        self._runnable_news.clear()

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

    # ------------------------------------------------------------------ the ticker

    async def _tick_loop(self) -> None:
        while True:
            now = self._clock()
            due = self._machine.next_due()
            wait_ms = self.config.tick_ms
            if due is not None:
                wait_ms = min(wait_ms, max(MIN_TICK_MS, due - now))
            await asyncio.sleep(wait_ms / 1000)
            if self._fatal is not None:
                continue
            now = self._clock()
            try:
                due = self._machine.next_due()
                if due is not None and due <= now:
                    await self._propose(Expire(now=now))
                    # Scheduled jobs becoming due change no state, so no transition tells the
                    # waiters: wake them all to look again.
                    self._wake_lease_waiters(everyone=True)
                if now - self._last_purge >= PURGE_EVERY_MS:
                    self._last_purge = now
                    await self._propose(
                        Purge(now=now, finished_before=now - self.config.retention_ms)
                    )
            except EngineUnavailable as exc:
                log.warning("ticker: %s", exc)

    # ------------------------------------------------------------------ the Engine API

    async def submit(self, spec: JobSpec) -> SubmitOutcome:
        return (await self.submit_many([spec]))[0]

    async def submit_many(self, specs: list[JobSpec]) -> list[SubmitOutcome]:
        jobs = [
            NewJob(
                id=str(uuid.uuid4()),
                queue=spec.queue,
                payload=spec.payload,
                priority=spec.priority,
                max_retries=spec.max_retries,
                run_at=spec.run_at,
                idempotency_key=spec.idempotency_key,
            )
            for spec in specs
        ]
        result = await self._propose(Submit(now=self._clock(), jobs=jobs))
        assert isinstance(result, SubmitResult)
        outcomes = []
        for entry in result.entries:
            if isinstance(entry, Submitted):
                outcomes.append(SubmitOutcome(job_id=entry.job_id, duplicate=entry.duplicate))
            else:
                outcomes.append(SubmitOutcome(error=entry.message))
        return outcomes

    async def lease(
        self, queue: str, *, max_jobs: int = 1, lease_ms: int | None = None, wait_ms: int = 0
    ) -> list[Job]:
        lease_ms = lease_ms or self.config.lease_ms
        deadline = time.monotonic() + wait_ms / 1000
        loop = asyncio.get_running_loop()
        while True:
            now = self._clock()
            if self._machine.has_runnable(queue, now):
                lease_ids = [uuid.uuid4().hex for _ in range(max_jobs)]
                result = await self._propose(
                    Lease(now=now, queue=queue, lease_ms=lease_ms, lease_ids=lease_ids)
                )
                assert isinstance(result, LeaseResult)
                if result.jobs:
                    return result.jobs
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stopping:
                return []
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(queue, deque()).append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                pass
            finally:
                if not waiter.done():
                    waiter.cancel()
                waiters = self._waiters.get(queue)
                if waiters is not None:
                    with contextlib.suppress(ValueError):
                        waiters.remove(waiter)
                    if not waiters:
                        del self._waiters[queue]

    async def _settle(self, command: Command) -> Job:
        result = await self._propose(command)
        if isinstance(result, Error):
            raise CommandRejected(result.code, result.message)
        assert isinstance(result, JobResult)
        return result.job

    async def ack(self, job_id: str, *, lease_id: str | None, result: str | None) -> Job:
        self._require_job(job_id)
        return await self._settle(
            Ack(now=self._clock(), job_id=job_id, lease_id=lease_id, result=result)
        )

    async def fail(self, job_id: str, *, lease_id: str | None, error: str) -> Job:
        self._require_job(job_id)
        return await self._settle(
            Fail(now=self._clock(), job_id=job_id, lease_id=lease_id, error=error)
        )

    async def extend(self, job_id: str, *, lease_id: str | None, lease_ms: int | None) -> Job:
        self._require_job(job_id)
        return await self._settle(
            Extend(
                now=self._clock(),
                job_id=job_id,
                lease_ms=lease_ms or self.config.lease_ms,
                lease_id=lease_id,
            )
        )

    async def cancel(self, job_id: str) -> Job:
        self._require_job(job_id)
        return await self._settle(Cancel(now=self._clock(), job_id=job_id))

    async def requeue(self, job_id: str) -> Job:
        self._require_job(job_id)
        return await self._settle(Requeue(now=self._clock(), job_id=job_id))

    def _require_job(self, job_id: str) -> None:
        """Answer an unknown id without writing a doomed command to the log. (The state machine
        still decides for real when the command is applied.)"""
        if self._machine.get(job_id) is None:
            raise CommandRejected(ErrorCode.NOT_FOUND, f"job {job_id} not found")

    async def get(self, job_id: str) -> Job | None:
        job = self._machine.get(job_id)
        return msgspec.structs.replace(job) if job is not None else None

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

    def stats(self) -> Stats:
        return self._machine.stats()

    def health(self) -> Health:
        if self._fatal is not None:
            return Health(ok=False, role="single", reason=self._fatal)
        if not self._started:
            return Health(ok=False, role="single", reason="not started")
        if self._stopping:
            return Health(ok=False, role="single", reason="shutting down")
        return Health(ok=True, role="single")
