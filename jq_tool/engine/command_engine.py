"""CommandEngine: the Engine API on top of one state machine and *some* log.

It owns what both engines share: turning calls into commands (ids and `now` chosen here, never
by the state machine), long-poll lease waiters, the job event bus, and read-only queries. How a
command becomes durable and applied is the subclass's `_propose`: the local WAL (LocalEngine)
or etcd (ClusterEngine). Whatever the log, a caller is answered only after its command was made
durable and applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import msgspec
from prometheus_client.metrics_core import Metric

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
    SubmitResult,
    Submitted,
)
from jq_tool.core.state_machine import StateMachine, StateMachineConfig, Stats
from jq_tool.engine.base import CommandRejected, Health, JobEvent, JobSpec, SubmitOutcome
from jq_tool.engine.metrics import LogMetrics

# A slow /events consumer loses events beyond this many rather than slowing the engine.
SUBSCRIBER_QUEUE_SIZE = 10_000
# The ticker never proposes Expire more often than this, however close the next due time is:
# an Expire is a log record, and a flood of them would compete with real work.
MIN_TICK_MS = 20
# How often retention is enforced (a Purge record), independent of the lease check interval.
PURGE_EVERY_MS = 60_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class _RandomHex:
    """Random hex digits fetched from the OS 4 KiB at a time: one getrandom() system call per
    128 ids instead of one per id, on the hot submit path. Only the event loop thread uses it."""

    def __init__(self) -> None:
        self._buffer = ""
        self._offset = 0

    def take(self, digits: int) -> str:
        if self._offset + digits > len(self._buffer):
            self._buffer, self._offset = os.urandom(2048).hex(), 0
        start = self._offset
        self._offset += digits
        return self._buffer[start : self._offset]


_random_hex = _RandomHex()


def new_job_id() -> str:
    """A random (version 4) UUID string, without uuid.UUID's costly constructor."""
    h = _random_hex.take(32)
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"


def new_lease_id() -> str:
    return _random_hex.take(32)


def _new_job(spec: JobSpec, now: int) -> NewJob:
    run_at = spec.run_at
    if run_at is None and spec.delay_ms:
        run_at = now + spec.delay_ms
    return NewJob(
        new_job_id(),
        spec.queue,
        spec.payload,
        spec.priority,
        spec.max_retries,
        run_at,
        spec.idempotency_key,
    )


def _outcome(entry: Submitted | Error) -> SubmitOutcome:
    if isinstance(entry, Submitted):
        return SubmitOutcome(job_id=entry.job_id, duplicate=entry.duplicate)
    return SubmitOutcome(error=entry.message)


class CommandEngine(ABC):
    def __init__(
        self,
        *,
        lease_ms: int,
        machine_config: StateMachineConfig,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.default_lease_ms = lease_ms
        self._clock = clock
        self._machine = StateMachine(machine_config, on_transition=self._on_transition)
        self._replaying = False  # no events while recovery replays the log
        self._stopping = False
        # Long-poll lease waiters per queue; each newly runnable job wakes one.
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {}
        self._runnable_news: dict[str, int] = {}
        self._subscribers: set[asyncio.Queue[JobEvent]] = set()
        self._last_purge = clock()

    # ------------------------------------------------------------------ what a log provides

    @abstractmethod
    async def _propose(self, command: Command) -> Result:
        """Make the command durable, apply it, return its result."""

    async def _catch_up(self) -> None:  # noqa: B027 - a hook; the local log is always current
        """Before a read that must be current: apply everything the log already committed."""

    log_metrics: LogMetrics

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    def health(self) -> Health: ...

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

    def _wake_lease_waiters(self) -> None:
        """Called after applying commands: one waiter per job that became runnable (the state
        machine reports a scheduled job coming due as a READY -> READY transition)."""
        for name, count in self._runnable_news.items():
            waiters = self._waiters.get(name)
            while waiters and count > 0:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    count -= 1
        self._runnable_news.clear()

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
        """How long the ticker sleeps: until the next lease or job falls due, at most
        `longest_ms`, at least MIN_TICK_MS."""
        due = self._machine.next_due()
        if due is None:
            return longest_ms
        return min(longest_ms, max(MIN_TICK_MS, due - self._clock()))

    async def _tick(self, retention_ms: int) -> None:
        """One round of time-driven work, as commands: Expire when a lease or a scheduled/RETRY
        job is due, and a Purge of finished jobs once a minute."""
        now = self._clock()
        due = self._machine.next_due()
        if due is not None and due <= now:
            await self._propose(Expire(now=now))
        if now - self._last_purge >= PURGE_EVERY_MS:
            self._last_purge = now
            await self._propose(Purge(now=now, finished_before=now - retention_ms))

    # ------------------------------------------------------------------ the Engine API

    async def submit(self, spec: JobSpec) -> SubmitOutcome:
        # POST /jobs, the server's hottest call: one job, without submit_many's lists.
        now = self._clock()
        result = await self._propose(Submit(now=now, jobs=[_new_job(spec, now)]))
        assert isinstance(result, SubmitResult)
        return _outcome(result.entries[0])

    async def submit_many(self, specs: list[JobSpec]) -> list[SubmitOutcome]:
        now = self._clock()
        jobs = [_new_job(spec, now) for spec in specs]
        result = await self._propose(Submit(now=now, jobs=jobs))
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
    ) -> list[Job]:
        lease_ms = lease_ms or self.default_lease_ms
        await self._catch_up()
        # Try at once: a busy queue answers without the long poll's timer and tasks.
        jobs = await self._lease_now(queue, max_jobs, lease_ms)
        if jobs or wait_ms <= 0 or self._stopping:
            return jobs
        waiting = asyncio.ensure_future(self._lease_waiting(queue, max_jobs, lease_ms, wait_ms))
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

    async def _lease_now(self, queue: str, max_jobs: int, lease_ms: int) -> list[Job]:
        now = self._clock()
        # Only a lease that can succeed is written to the log: an empty poll writes nothing.
        if not self._machine.has_runnable(queue, now):
            return []
        lease_ids = [new_lease_id() for _ in range(max_jobs)]
        result = await self._propose(
            Lease(now=now, queue=queue, lease_ms=lease_ms, lease_ids=lease_ids)
        )
        assert isinstance(result, LeaseResult)
        return result.jobs

    async def _lease_waiting(
        self, queue: str, max_jobs: int, lease_ms: int, wait_ms: int
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
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                pass
            finally:
                waiters = self._waiters.get(queue)
                if waiters is not None:
                    with contextlib.suppress(ValueError):
                        waiters.remove(waiter)
                    if not waiters:
                        del self._waiters[queue]
            jobs = await self._lease_now(queue, max_jobs, lease_ms)
            if jobs:
                return jobs

    async def _settle(self, command: Ack | Fail | Extend | Cancel | Requeue) -> Job:
        # Answer an unknown id without writing a doomed command to the log; the state machine
        # still decides everything else when the command is applied.
        if self._machine.get(command.job_id) is None:
            await self._catch_up()
            if self._machine.get(command.job_id) is None:
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

    async def fail(self, job_id: str, *, lease_id: str | None, error: str) -> Job:
        return await self._settle(
            Fail(now=self._clock(), job_id=job_id, lease_id=lease_id, error=error)
        )

    async def extend(self, job_id: str, *, lease_id: str | None, lease_ms: int | None) -> Job:
        return await self._settle(
            Extend(
                now=self._clock(),
                job_id=job_id,
                lease_ms=lease_ms or self.default_lease_ms,
                lease_id=lease_id,
            )
        )

    async def cancel(self, job_id: str) -> Job:
        return await self._settle(Cancel(now=self._clock(), job_id=job_id))

    async def requeue(self, job_id: str) -> Job:
        return await self._settle(Requeue(now=self._clock(), job_id=job_id))

    async def get(self, job_id: str) -> Job | None:
        await self._catch_up()
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

    def metrics(self) -> Iterator[Metric]:
        """Prometheus metric families about the log (the server adds them to /metrics)."""
        return self.log_metrics.collect()
