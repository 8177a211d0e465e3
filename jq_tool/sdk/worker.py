"""`Worker` and `AsyncWorker`: lease jobs, run a handler on each, settle every attempt.

Both run the same asyncio core (`BaseWorker`): a long-poll lease loop that never asks for more
jobs than it has free slots, a lease keeper per running job that extends the lease at a third
of its length, and a settle step that acks (or fails) naming the job's lease_id and retries with
capped backoff while the server is unreachable — leases survive a server restart, so an ack sent
again after the restart still lands. A 409 on ack means the lease was lost: the attempt is logged
and never retried as another attempt. The only difference between the two: `Worker` runs sync
handlers in a thread pool of `concurrency` threads, `AsyncWorker` awaits async handlers. How a
worker runs (queue, concurrency, lease length, long poll, grace, timeouts, TLS) is one
`WorkerOptions` value.

A handler returns a value (success: a str is the result, anything else is stored as JSON),
returns `Success(result)` / `Failure(error)` (`Failure(error, retry=False)`: a final failure, DEAD
at once), returns `Snooze(delay)` (the lease given back: the job runs again after `delay`, the
attempt not counted), or raises (failure: the traceback is the job's result_error).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, cast

from jq_tool.sdk.calls import (
    MAX_BATCH,
    MAX_LEASE_JOBS,
    encode_payload,
    progress_problem,
    unencodable,
)
from jq_tool.sdk.client import AsyncClient
from jq_tool.sdk.console import new_worker_id
from jq_tool.sdk.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    JobNotFound,
    JqError,
    PayloadTooLarge,
    ServerUnavailable,
    StorageFull,
    TlsError,
    Unauthorized,
)
from jq_tool.sdk.times import utc_now
from jq_tool.sdk.tls import Verify
from jq_tool.sdk.types import (
    AckResult,
    Failure,
    JobState,
    LeasedJob,
    Settlement,
    Snooze,
    Success,
)

log = logging.getLogger("jq_tool.sdk.worker")

SyncHandler = Callable[[LeasedJob], Any]
AsyncHandler = Callable[[LeasedJob], Awaitable[Any]]

MAX_JOBS_PER_LEASE = MAX_LEASE_JOBS  # the server's limit for max_jobs
# POST /jobs/ack requests a worker keeps in flight: while they are out, finished jobs gather
# for the next one, so a busy worker settles many jobs per request.
SETTLES_IN_FLIGHT = 2
# Per-entry codes of POST /jobs/ack that mean the lease is gone (the single ack's 409/404).
_LEASE_GONE = frozenset({"lease_mismatch", "invalid_state", "not_found"})

# How long a stopping worker waits for each release of a job whose handler it stopped.
RELEASE_AT_STOP_S = 1.0
# How long a stopped worker waits to tell the server it left (GET /workers drops it).
LEAVE_TIMEOUT_S = 1.0

# Errors after which waiting helps: the server is down, restarting or out of disk.
_TRANSIENT = (ServerUnavailable, StorageFull)


def handler_outcome(value: object) -> tuple[str | None, str | None]:
    """(result, error) for what a handler returned; error set means a failed attempt."""
    if isinstance(value, Failure):
        return None, value.error
    if isinstance(value, Success):
        value = value.result
    if value is None:
        return None, None
    if isinstance(value, str):
        return value, None
    try:
        return encode_payload(value), None
    except ValueError:
        return str(value), None


# Modules whose frames stand between the worker's catch and the handler: the worker's task and
# thread hand-off, the thread pool, `jq worker`'s logging wrapper.
_MACHINERY = ("jq_tool.sdk.worker", "jq_tool.cli.worker", "concurrent.futures.", "asyncio.")


def handler_traceback(exc: BaseException) -> str:
    """The traceback of a handler's exception, from the handler's frame on: the worker's own
    frames above it were the same on every job, and spent the error text's bounded bytes
    (the server keeps ERROR_TEXT_BYTES). Raised in that machinery itself, the whole of it."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_globals.get("__name__", "").startswith(_MACHINERY):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


def sendable(result: str | None, error: str | None) -> tuple[str | None, str | None]:
    """(result, error) as JSON can carry them: text with a lone surrogate (a non-UTF-8 file
    name decoded with surrogateescape, as os.listdir does, quoted in an exception's message)
    cannot be encoded, and the settle request failed before it was sent: the job waited for
    its lease to expire ("lease expired" instead of its traceback), and a batch of acks lost
    every other job's settlement with it. An error is diagnostic text: its lone surrogates are
    written as escapes. A result is the job's data: not altered, the attempt fails instead."""
    if error is not None and not error.isascii():  # isascii is O(1): the usual error is ASCII
        error = error.encode("utf-8", "backslashreplace").decode("utf-8")
    if result is not None and not result.isascii():
        try:
            result.encode("utf-8")
        except UnicodeEncodeError as exc:
            error = (
                f"the handler's result is not UTF-8 text ({unencodable(exc)} at character "
                f"{exc.start})"
            )
            result = None
    return result, error


@dataclass(frozen=True)
class WorkerOptions:
    """How a `Worker` or `AsyncWorker` runs: one value, every field with a default, e.g.
    `WorkerOptions(queue="emails", concurrency=8)`; `dataclasses.replace()` makes variants."""

    queue: str = "default"
    """The queue to lease from."""
    concurrency: int | None = None
    """Jobs at once: threads for `Worker`, tasks for `AsyncWorker`. None: 4 for `Worker`, 16
    for `AsyncWorker`."""
    lease_ms: int | None = None
    """Lease length to ask for (at least 1000); None: the server's default."""
    poll_wait: float = 10.0
    """Seconds each lease request long-polls for jobs (0 to 30)."""
    grace: float = 30.0
    """At stop, seconds running handlers get to finish before their jobs are abandoned."""
    timeout: float = 10.0
    """Seconds each request may take (a lease adds its long poll)."""
    max_backoff: float = 5.0
    """The longest pause between retries while the server is unreachable."""
    verify: Verify = True
    """TLS verification for an https URL, as `Client`'s `verify`."""
    worker_id: str | None = None
    """The id this worker sends with its lease requests (X-Jq-Worker: GET /workers, each
    job's attempt history); None: `<hostname>:<pid>:<random>`."""
    batch_ack: bool = True
    """Settle finished jobs together and lease the next ones in the same request (POST
    /jobs/ack with lease_next: one round trip and one durable write for many jobs). False: one
    ack request per job. A server that does not know the route is detected and handled so."""

    def __post_init__(self) -> None:
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.lease_ms is not None and self.lease_ms < 1000:
            raise ValueError("lease_ms must be at least 1000")


@dataclass
class WorkerCounts:
    """What this worker did since it started."""

    leased: int = 0
    acked: int = 0
    failed: int = 0  # attempts reported as failed (the job retries or goes DEAD)
    lost: int = 0  # settles refused with 409: the lease had expired or moved on
    released: int = 0  # leases given back: a handler's Snooze, or stopped at the end of grace


class BaseWorker:
    """The shared core; subclasses only decide how the handler is called."""

    default_concurrency: ClassVar[int] = 4
    # Whether cancelling a handler's task stops the handler: then a job whose handler the end
    # of the grace period stopped is given back at once (released, the attempt not counted)
    # rather than left to its lease's expiry. Not for a sync handler: its thread runs on, and
    # the job must not run twice at the same time.
    stops_with_its_task: ClassVar[bool] = False

    def __init__(
        self,
        url: str,
        key: str | None,
        handler: Callable[[LeasedJob], Any],
        options: WorkerOptions | None = None,
    ) -> None:
        self.url = url
        self.key = key
        self.handler = handler
        self.options = options = options or WorkerOptions()
        self.queue = options.queue
        self.concurrency = options.concurrency or self.default_concurrency
        self.poll_wait = max(0.0, min(30.0, options.poll_wait))
        self.counts = WorkerCounts()
        self.worker_id = options.worker_id or new_worker_id()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_requested = threading.Event()
        self._drain_deadline: float | None = None
        self._settler: _BatchSettler | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, queue={self.queue!r})"

    def stop(self) -> None:
        """Stop leasing, let in-flight handlers finish (up to `grace` seconds), then return
        from run(). Safe to call from any thread or a signal handler."""
        self._stop_requested.set()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            # RuntimeError: the loop just closed, and run() is returning anyway.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)

    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()

    async def call_handler(self, job: LeasedJob) -> Any:
        raise NotImplementedError

    async def run_loop(self, *, install_signal_handlers: bool = False) -> None:
        """The worker until stop(): lease, run, settle; then drain within the grace period.

        Lease requests run concurrently, each asking for the slots that were free when it
        started (`max_jobs`), so their sum never exceeds the free slots: a slot that frees up
        while a long poll is pending gets its own request at once instead of waiting for the
        poll, and the server commits concurrent leases together. With `batch_ack` (the
        default), finished jobs are settled by `_BatchSettler`, whose requests also lease the
        jobs that take their slots: on a busy queue the worker makes one request per batch of
        jobs instead of two per job, and long-polls only when the queue runs dry.
        """
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._drain_deadline = None
        if self._stop_requested.is_set():
            self._stop.set()
        if install_signal_handlers:
            self._install_signal_handlers()
        in_flight: set[asyncio.Task[None]] = set()
        self._in_flight = in_flight
        slot_freed = asyncio.Event()

        def finished(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            slot_freed.set()

        client = AsyncClient(
            self.url,
            self.key,
            timeout=self.options.timeout,
            retries=0,
            max_backoff=self.options.max_backoff,
            max_connections=self.concurrency * 2 + 2,
            verify=self.options.verify,
            worker_id=self.worker_id,
        )
        # pending lease request -> (slots it reserved, when it was sent)
        leases: dict[asyncio.Future[list[LeasedJob]], tuple[int, float]] = {}

        def free_slots() -> int:
            reserved = sum(n for n, _ in leases.values())
            return self.concurrency - len(in_flight) - settler.occupied - reserved

        settler = _BatchSettler(
            self,
            client,
            start=lambda job: self._start(client, job, in_flight, finished),
            free_slots=lambda: 0 if self.stopping else free_slots(),
            changed=slot_freed.set,
        )
        settler.batch = self.options.batch_ack
        self._settler = settler
        stopped = asyncio.ensure_future(self._stop.wait())
        batch = max(1, min(MAX_JOBS_PER_LEASE, self.concurrency // 4))
        try:
            failures = 0
            next_lease_at = 0.0
            while not self._stop.is_set():
                now = time.monotonic()
                free = free_slots()
                # With a request already out, wait for a few free slots before asking again:
                # one lease per freed slot would double the requests of a busy worker.
                enough = free >= (batch if leases else 1)
                if enough and now >= next_lease_at:
                    ask = min(free, MAX_JOBS_PER_LEASE)
                    pending = asyncio.ensure_future(
                        client.lease(
                            queue=self.queue,
                            wait=self.poll_wait,
                            max_jobs=ask,
                            lease_ms=self.options.lease_ms,
                        )
                    )
                    leases[pending] = (ask, now)
                    continue
                slot_freed.clear()
                slot_wait = asyncio.ensure_future(slot_freed.wait())
                timeout = next_lease_at - now if enough else None
                waits: set[asyncio.Future[Any]] = {stopped, slot_wait, *leases}
                await asyncio.wait(
                    waits,
                    timeout=timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                slot_wait.cancel()
                for done in [lease for lease in leases if lease.done()]:
                    _, sent_at = leases.pop(done)
                    try:
                        jobs = done.result()
                    except _TRANSIENT as exc:
                        failures += 1
                        next_lease_at = time.monotonic() + client.backoff_delay(failures - 1)
                        level = logging.WARNING if failures == 1 else logging.DEBUG
                        log.log(level, "lease failed (%s); retrying until the server is back", exc)
                        continue
                    except (Unauthorized, Forbidden, BadRequest, TlsError) as exc:
                        log.error("lease refused, the worker stops: %s", exc)
                        raise
                    if failures:
                        log.info("server reachable again")
                        failures = 0
                    quick = min(self.poll_wait, 1.0) / 2
                    if not jobs and time.monotonic() - sent_at < quick:
                        # "None" at once despite wait_ms: do not spin on such a server.
                        next_lease_at = time.monotonic() + quick
                    for job in jobs:
                        self._start(client, job, in_flight, finished)
            self._drain_deadline = time.monotonic() + self.options.grace
            await self._finish_leases(client, leases, in_flight, finished)
            await self._drain(in_flight, settler)
            await self._leave(client)
        finally:
            stopped.cancel()
            for lease in leases:
                lease.cancel()
            settler.close()
            await client.aclose()
            self._loop = None

    async def _finish_leases(
        self,
        client: AsyncClient,
        leases: dict[asyncio.Future[list[LeasedJob]], tuple[int, float]],
        in_flight: set[asyncio.Task[None]],
        finished: Callable[[asyncio.Task[None]], None],
    ) -> None:
        """At stop, hang up pending long polls (the server then stops waiting and leases
        nothing) and run what polls that already answered brought."""
        for lease in list(leases):
            if not lease.done():
                lease.cancel()
        if leases:
            await asyncio.wait(set(leases), timeout=self._grace_left())
        for lease in list(leases):
            leases.pop(lease)
            if lease.done() and not lease.cancelled() and lease.exception() is None:
                for job in lease.result():
                    self._start(client, job, in_flight, finished)

    def _start(
        self,
        client: AsyncClient,
        job: LeasedJob,
        in_flight: set[asyncio.Task[None]],
        finished: Callable[[asyncio.Task[None]], None],
    ) -> None:
        self.counts.leased += 1
        task = asyncio.ensure_future(self._process(client, job))
        in_flight.add(task)
        task.add_done_callback(finished)

    def _grace_left(self) -> float:
        if self._drain_deadline is None:
            return self.options.grace
        return max(0.0, self._drain_deadline - time.monotonic())

    async def _drain(self, in_flight: set[asyncio.Task[None]], settler: _BatchSettler) -> None:
        """Within the grace period: running handlers finish and their jobs are settled (jobs a
        settle request leased meanwhile run too); whatever is left then is stopped, and given
        back (`stops_with_its_task`) or abandoned to its lease's expiry."""
        if in_flight or not settler.idle:
            log.info(
                "stopping: waiting up to %.0fs for %d job(s)",
                self._grace_left(),
                len(in_flight) + settler.occupied,
            )
        while (in_flight or not settler.idle) and (left := self._grace_left()) > 0:
            tasks = set(in_flight) | settler.tasks
            if tasks:
                await asyncio.wait(tasks, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            else:  # only settles waiting out a backoff
                await asyncio.sleep(min(left, 0.05))
        pending = set(in_flight)
        for task in pending:
            task.cancel()
        if pending:
            log.warning(
                "grace period over: %d job(s) left unsettled; %s",
                len(pending),
                "giving them back" if self.stops_with_its_task else "their leases will expire",
            )
            await asyncio.wait(pending, timeout=RELEASE_AT_STOP_S + 0.5)
        settler.give_up()

    async def _process(self, client: AsyncClient, job: LeasedJob) -> None:
        reporter = _ProgressReporter(client, job, asyncio.get_running_loop())
        _reporters[(job.job_id, job.lease_id)] = reporter
        try:
            await self._process_job(client, job)
        finally:
            _reporters.pop((job.job_id, job.lease_id), None)
            reporter.close()

    async def _process_job(self, client: AsyncClient, job: LeasedJob) -> None:
        # Most handlers finish long before a third of the lease: a timer is cheaper than a
        # keeper task per job, and the keeper starts only if the timer fires.
        keeper: list[asyncio.Task[None]] = []
        interval = max(0.3, self._lease_seconds(job) / 3)
        timer = asyncio.get_running_loop().call_later(
            interval,
            lambda: keeper.append(asyncio.ensure_future(self._keep_lease(client, job, interval))),
        )
        result: str | None = None
        error: str | None = None
        retry = True
        snooze: Snooze | None = None
        try:
            value = await self.call_handler(job)
            if isinstance(value, Snooze):
                snooze = value
            else:
                result, error = handler_outcome(value)
                retry = not isinstance(value, Failure) or value.retry
        except asyncio.CancelledError:
            if self.stopping and self.stops_with_its_task:
                timer.cancel()
                for task in keeper:
                    task.cancel()
                await self._release_at_stop(client, job)
            raise
        except Exception as exc:
            error = handler_traceback(exc)
        finally:
            timer.cancel()
            for task in keeper:
                task.cancel()
        if snooze is not None:
            await self._release(client, job, snooze.delay)
            return
        result, error = sendable(result, error)
        if self._settler is not None and self._settler.batch:
            # The job's slot passes to the settler now, not when this task's done callbacks
            # run: its next request must see the slot as its own to fill with lease_next.
            self._in_flight.discard(cast("asyncio.Task[None]", asyncio.current_task()))
            self._settler.add(_Unsettled(job, result, error, retry))
        else:
            await self._settle(client, job, result, error, retry)

    async def _release(self, client: AsyncClient, job: LeasedJob, delay: float | timedelta) -> None:
        """Give the lease back for a handler's Snooze, tried again while the server is
        unreachable, a few times: a release that never lands leaves the job to its lease's
        expiry, which counts the attempt but loses nothing."""
        unsure = False  # a try whose answer was lost may have landed
        for attempt in range(4):
            try:
                await client.release(job.job_id, lease_id=job.lease_id, delay=delay)
            except (ValueError, BadRequest) as exc:
                # A delay below zero or past the server's bound: the handler's mistake, which
                # is reported as a failed attempt (the job must not sit out its lease unseen).
                log.error("job %s: snooze refused: %s", job.job_id, exc)
                await self._settle(client, job, None, f"Snooze refused: {exc}")
                return
            except (Conflict, JobNotFound) as exc:
                if unsure:  # most likely our own earlier try, whose answer was lost
                    self.counts.released += 1
                    return
                self.counts.lost += 1
                log.warning("job %s: lease lost, not released: %s", job.job_id, exc)
                return
            except _TRANSIENT as exc:
                unsure = True
                if attempt == 3:
                    log.warning("job %s: not released (%s); its lease will expire", job.job_id, exc)
                    return
                await asyncio.sleep(client.backoff_delay(attempt))
            else:
                self.counts.released += 1
                return

    async def _leave(self, client: AsyncClient) -> None:
        """Tell the server this worker stopped, so its list of workers drops it at once. A
        courtesy, tried once and briefly: without it the entry goes 5 minutes after the last
        poll (an older server, without the route, answers 404 or 405)."""
        try:
            await client.forget_worker(self.worker_id, timeout=LEAVE_TIMEOUT_S)
        except JqError as exc:
            log.debug("the server was not told that this worker stopped: %s", exc)

    async def _release_at_stop(self, client: AsyncClient, job: LeasedJob) -> None:
        """The grace period ended with this job's handler stopped: give the job back now, so
        another worker runs it without waiting out the lease. One try, briefly: the worker is
        leaving, and a job not given back still comes back when its lease expires."""
        try:
            await client.release(job.job_id, lease_id=job.lease_id, timeout=RELEASE_AT_STOP_S)
        except JqError as exc:
            log.warning("job %s: not given back (%s); its lease will expire", job.job_id, exc)
        else:
            self.counts.released += 1
            log.info("job %s: given back unfinished", job.job_id)

    def _lease_seconds(self, job: LeasedJob) -> float:
        if self.options.lease_ms is not None:
            return self.options.lease_ms / 1000
        if job.lease_ms is not None:
            return job.lease_ms / 1000
        # An older server: lease_until against this machine's clock (as good as the clocks).
        return max(1.0, (job.lease_until - utc_now()).total_seconds())

    async def _keep_lease(self, client: AsyncClient, job: LeasedJob, interval: float) -> None:
        """Extend the lease every third of its length while the handler runs, so a slow job
        is not leased to someone else. Starts a third of the lease after the job began."""
        while True:
            try:
                await client.extend(
                    job.job_id, lease_id=job.lease_id, lease_ms=self.options.lease_ms
                )
            except (Conflict, JobNotFound) as exc:
                log.warning("job %s: lease lost while running (%s)", job.job_id, exc)
                return
            except JqError as exc:
                # Try again sooner: the lease still has two thirds of its time.
                log.warning("job %s: extend failed (%s)", job.job_id, exc)
                await asyncio.sleep(min(interval, 1.0))
                continue
            await asyncio.sleep(interval)

    async def _settle(
        self,
        client: AsyncClient,
        job: LeasedJob,
        result: str | None,
        error: str | None,
        retry: bool = True,
    ) -> None:
        attempt = 0
        unsure = False  # a try whose answer was lost may have landed
        while True:
            try:
                if error is None:
                    await client.ack(job.job_id, result, lease_id=job.lease_id)
                    self.counts.acked += 1
                else:
                    await client.fail(job.job_id, error, lease_id=job.lease_id, retry=retry)
                    self.counts.failed += 1
                if attempt:
                    log.info("job %s: settled after %d retries", job.job_id, attempt)
                return
            except (Conflict, JobNotFound) as exc:
                if unsure and await self._landed_earlier(client, job, error):
                    return
                self.counts.lost += 1
                log.warning("job %s: lease lost, this attempt is not settled: %s", job.job_id, exc)
                return
            except (PayloadTooLarge, BadRequest) as exc:
                if error is not None:
                    log.error("job %s: failure report refused: %s", job.job_id, exc)
                    error = error[-4000:] if len(error) > 4000 else "handler failed"
                    if attempt > 3:
                        return
                else:
                    error, result = f"result refused by the server: {exc}", None
                attempt += 1
            except _TRANSIENT as exc:
                unsure = True
                delay = client.backoff_delay(attempt)
                if self._drain_deadline is not None and time.monotonic() + delay > (
                    self._drain_deadline
                ):
                    log.error("job %s: giving up settling at shutdown: %s", job.job_id, exc)
                    return
                # One warning per job and outage; the retries themselves are routine.
                level = logging.WARNING if attempt == 0 else logging.DEBUG
                log.log(level, "job %s: settle failed (%s); retrying", job.job_id, exc)
                await asyncio.sleep(delay)
                attempt += 1
            except JqError as exc:
                # 401/403 and the like: retrying cannot help; the lease will expire.
                self.counts.lost += 1
                log.error("job %s: settle refused: %s", job.job_id, exc)
                return

    async def _landed_earlier(self, client: AsyncClient, job: LeasedJob, error: str | None) -> bool:
        """After a lost answer, a 409 may be our own earlier ack: the job is settled, still at
        our attempt number, the way we settled it."""
        try:
            current = await client.get(job.job_id)
        except JqError:
            return False
        if current.attempts != job.attempt:
            return False
        if error is None and current.state is JobState.ACKED:
            self.counts.acked += 1
        elif error is not None and current.result_error == error:
            self.counts.failed += 1
        else:
            return False
        log.info("job %s: an earlier settle had landed", job.job_id)
        return True

    def _install_signal_handlers(self) -> None:
        assert self._loop is not None
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                self._loop.add_signal_handler(signum, self._on_signal, signum)
            except (NotImplementedError, RuntimeError, ValueError):
                log.debug("cannot install a handler for %s here", signum)

    def _on_signal(self, signum: int) -> None:
        if self.stopping:
            log.warning("second signal: leaving now")
            raise SystemExit(1)
        log.info("%s received: finishing in-flight jobs", signal.Signals(signum).name)
        self.stop()


@dataclass
class _Unsettled:
    """A finished job whose settle has not landed yet."""

    job: LeasedJob
    result: str | None
    error: str | None  # set: a failed attempt
    retry: bool = True  # False: the handler's Failure(retry=False), final
    attempt: int = 0  # tries so far
    unsure: bool = False  # a try whose answer was lost may have landed
    not_before: float = 0.0  # monotonic time of the next try (backoff)

    def settlement(self) -> Settlement:
        return Settlement(self.job.job_id, self.job.lease_id, self.result, self.error, self.retry)


class _BatchSettler:
    """A worker's settles, in batches: every finished job waiting when a request can go is in
    it (POST /jobs/ack), and its `lease_next` asks for the slots those jobs free and any other
    free slot, so one round trip and one durable write settle a batch and bring the next jobs.
    At most SETTLES_IN_FLIGHT requests at once; what finishes meanwhile waits for the next one.

    Each entry's outcome is handled as `BaseWorker._settle` handles a single ack: a lease gone
    is a lost attempt (unless a lost answer had landed it), a refused result is sent again as a
    failure, and a request the server could not take is sent again after a backoff, with the
    same entries. A server without the route (404/405) turns batching off: each job is then
    settled on its own, as before."""

    def __init__(
        self,
        worker: BaseWorker,
        client: AsyncClient,
        *,
        start: Callable[[LeasedJob], None],
        free_slots: Callable[[], int],
        changed: Callable[[], None],
    ) -> None:
        self.batch = True
        self._worker = worker
        self._client = client
        self._start = start
        self._free_slots = free_slots
        self._changed = changed
        self._unsent: list[_Unsettled] = []
        self._requests: dict[asyncio.Task[None], int] = {}  # request -> the slots it holds
        self._others: set[asyncio.Task[None]] = set()  # single settles and lookups
        self._pump_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._failures = 0

    @property
    def occupied(self) -> int:
        """Slots held: finished jobs not settled yet, and the jobs a request may lease."""
        return len(self._unsent) + sum(self._requests.values())

    @property
    def idle(self) -> bool:
        return not self._unsent and not self._requests and not self._others

    @property
    def tasks(self) -> set[asyncio.Task[None]]:
        return set(self._requests) | self._others

    def add(self, entry: _Unsettled) -> None:
        self._unsent.append(entry)
        if not self._pump_scheduled:
            # On the next loop turn: handlers that finish in this one share the request.
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        """Send what may go now, if a request slot is free."""
        self._pump_scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.batch:  # the server has no POST /jobs/ack: what waits goes one by one
            unsent, self._unsent = self._unsent, []
            for entry in unsent:
                self._spawn(
                    self._worker._settle(self._client, entry.job, entry.result, entry.error)
                )
            return
        now = time.monotonic()
        while self._unsent and len(self._requests) < SETTLES_IN_FLIGHT:
            ready = [e for e in self._unsent if e.not_before <= now][:MAX_BATCH]
            if not ready:
                break
            taken = {id(e) for e in ready}
            self._unsent = [e for e in self._unsent if id(e) not in taken]
            # The sent jobs' slots are free now; the request holds them (and any other free
            # slot) for the jobs it leases.
            lease_next = max(0, min(MAX_JOBS_PER_LEASE, self._free_slots()))
            request = asyncio.ensure_future(self._send(ready, lease_next))
            self._requests[request] = max(len(ready), lease_next)
            request.add_done_callback(self._sent)
        if self._unsent and self._timer is None:
            wake = min(e.not_before for e in self._unsent)
            self._timer = asyncio.get_running_loop().call_at(
                asyncio.get_running_loop().time() + max(0.0, wake - now), self._pump
            )

    def _sent(self, request: asyncio.Task[None]) -> None:
        self._requests.pop(request, None)
        if not request.cancelled() and request.exception() is not None:
            log.error("settle request failed", exc_info=request.exception())
        self._changed()
        self._pump()

    async def _send(self, entries: list[_Unsettled], lease_next: int) -> None:
        worker, client = self._worker, self._client
        try:
            answer = await client.ack_many(
                [entry.settlement() for entry in entries],
                lease_next=lease_next,
                queue=worker.queue,
                lease_ms=worker.options.lease_ms,
            )
        except _TRANSIENT as exc:
            self._failed(entries, exc)
            return
        except JqError as exc:
            if exc.status in (404, 405):
                log.info("the server has no POST /jobs/ack: settling one job at a time")
                self.batch = False
                for entry in entries:
                    self._spawn(worker._settle(client, entry.job, entry.result, entry.error))
                return
            # 401/403 and the like: retrying cannot help; the leases will expire.
            worker.counts.lost += len(entries)
            log.error("settling %d job(s) refused: %s", len(entries), exc)
            return
        if self._failures:
            log.info("settles land again")
            self._failures = 0
        for entry, result in zip(entries, answer.results, strict=False):
            self._settled(entry, result)
        for job in answer.leased:
            self._start(job)

    def _settled(self, entry: _Unsettled, result: AckResult) -> None:
        """One entry's outcome, handled as `BaseWorker._settle` handles a single ack's."""
        worker, job = self._worker, entry.job
        if result.ok:
            if entry.error is None:
                worker.counts.acked += 1
            else:
                worker.counts.failed += 1
            if entry.attempt:
                log.info("job %s: settled after %d retries", job.job_id, entry.attempt)
            return
        if result.code in _LEASE_GONE:
            if entry.unsure:
                self._spawn(self._check_landed(entry, result))
                return
            worker.counts.lost += 1
            log.warning("job %s: lease lost, this attempt is not settled: %s", job.job_id, result)
            return
        # The result or the error was refused (too large, invalid): report a failure instead.
        if entry.error is not None:
            log.error("job %s: failure report refused: %s", job.job_id, result.error)
            entry.error = entry.error[-4000:] if len(entry.error) > 4000 else "handler failed"
            if entry.attempt > 3:
                return
        else:
            entry.error, entry.result = f"result refused by the server: {result.error}", None
        entry.attempt += 1
        self._unsent.append(entry)

    async def _check_landed(self, entry: _Unsettled, result: AckResult) -> None:
        worker = self._worker
        if await worker._landed_earlier(self._client, entry.job, entry.error):
            return
        worker.counts.lost += 1
        log.warning("job %s: lease lost, this attempt is not settled: %s", entry.job.job_id, result)

    def _failed(self, entries: list[_Unsettled], exc: JqError) -> None:
        """The request got no usable answer: each entry may have landed; try again later."""
        self._failures += 1
        delay = self._client.backoff_delay(min(entry.attempt for entry in entries))
        deadline = self._worker._drain_deadline
        if deadline is not None and time.monotonic() + delay > deadline:
            log.error("giving up settling %d job(s) at shutdown: %s", len(entries), exc)
            return
        # One warning per outage; the retries themselves are routine.
        level = logging.WARNING if self._failures == 1 else logging.DEBUG
        log.log(level, "settling %d job(s) failed (%s); retrying", len(entries), exc)
        retry_at = time.monotonic() + delay
        for entry in entries:
            entry.unsure = True
            entry.attempt += 1
            entry.not_before = retry_at
        self._unsent.extend(entries)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._others.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._others.discard(task)
            self._changed()

        task.add_done_callback(done)

    def give_up(self) -> None:
        """The grace period is over: what is still unsettled is left to its lease's expiry."""
        if self._unsent:
            log.error("grace period over: %d job(s) not settled", len(self._unsent))
            self._unsent.clear()
        self.close()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in self.tasks:
            task.cancel()


class Worker(BaseWorker):
    """Runs a sync handler in `concurrency` threads. `run()` blocks until stop() or
    SIGTERM/SIGINT."""

    default_concurrency = 4

    def __init__(
        self,
        url: str,
        key: str | None,
        handler: SyncHandler,
        options: WorkerOptions | None = None,
    ) -> None:
        super().__init__(url, key, handler, options)
        if inspect.iscoroutinefunction(handler):
            raise ValueError("an async def handler needs AsyncWorker")
        self._threads: ThreadPoolExecutor | None = None
        self._busy = 0
        self._busy_lock = threading.Lock()

    def run(self, *, install_signal_handlers: bool | None = None) -> None:
        """Block until stopped. Signal handlers are installed when called on the main thread."""
        if install_signal_handlers is None:
            install_signal_handlers = threading.current_thread() is threading.main_thread()
        self._threads = ThreadPoolExecutor(self.concurrency, thread_name_prefix="jq-worker")
        try:
            asyncio.run(self.run_loop(install_signal_handlers=install_signal_handlers))
        finally:
            # A handler still running after the grace period keeps its thread; do not wait.
            self._threads.shutdown(wait=False, cancel_futures=True)

    @property
    def handlers_running(self) -> bool:
        """Whether a handler is still busy in its thread (after run(): past the grace)."""
        return self._busy > 0

    def _run_handler(self, job: LeasedJob) -> Any:
        with self._busy_lock:
            self._busy += 1
        try:
            return self.handler(job)
        finally:
            with self._busy_lock:
                self._busy -= 1

    async def call_handler(self, job: LeasedJob) -> Any:
        assert self._threads is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self._run_handler, job)


class AsyncWorker(BaseWorker):
    """Awaits an async handler; up to `concurrency` jobs at once. `await run()`."""

    default_concurrency = 16
    stops_with_its_task = True  # a cancelled coroutine stops where it awaits

    def __init__(
        self,
        url: str,
        key: str | None,
        handler: AsyncHandler,
        options: WorkerOptions | None = None,
    ) -> None:
        super().__init__(url, key, handler, options)

    async def run(self, *, install_signal_handlers: bool = False) -> None:
        await self.run_loop(install_signal_handlers=install_signal_handlers)

    async def call_handler(self, job: LeasedJob) -> Any:
        value = self.handler(job)
        if inspect.isawaitable(value):
            value = await value
        return value


# -- progress reports (issue 19): job.progress(0.4, "resized 4/10") from a handler --------------

# The reporter of each job a worker is running, by (job id, lease id): LeasedJob.progress finds
# its own here. Handlers run on the event loop (AsyncWorker) or in threads (Worker).
_reporters: dict[tuple[str, str | None], _ProgressReporter] = {}


class _ProgressReporter:
    """Sends a running job's progress reports, one request at a time, always the latest: a
    handler never waits for the server, and reports sent faster than it answers are coalesced.
    A report that fails is logged and dropped (progress is a hint; the next one corrects it)."""

    def __init__(self, client: AsyncClient, job: LeasedJob, loop: asyncio.AbstractEventLoop):
        self.client = client
        self.job = job
        self.loop = loop
        self._latest: tuple[float, str] | None = None
        self._sending: asyncio.Task[None] | None = None
        self._lock = threading.Lock()
        self._closed = False

    def report(self, progress: float, note: str) -> None:
        with self._lock:
            self._latest = (float(progress), note)
        if self._on_loop():
            self._start()
        else:
            self.loop.call_soon_threadsafe(self._start)

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def _start(self) -> None:
        if self._sending is None and not self._closed:
            self._sending = asyncio.ensure_future(self._send())

    async def _send(self) -> None:
        try:
            while True:
                with self._lock:
                    latest, self._latest = self._latest, None
                if latest is None:
                    return
                try:
                    await self.client.progress(self.job.job_id, latest[0], latest[1],
                                               lease_id=self.job.lease_id)  # fmt: skip
                except JqError as exc:
                    log.warning("job %s: progress report failed (%s)", self.job.job_id, exc)
        finally:
            self._sending = None

    def close(self) -> None:
        """The attempt is over: a report still queued is dropped, one in flight finishes."""
        self._closed = True


def report_progress(job: LeasedJob, progress: float, note: str) -> None:
    problem = progress_problem(progress, note)
    if problem:
        raise ValueError(problem)
    reporter = _reporters.get((job.job_id, job.lease_id))
    if reporter is None:
        raise RuntimeError(
            "job.progress() works inside a Worker or AsyncWorker handler; elsewhere use "
            "Client.progress(job_id, progress, note, lease_id=...)"
        )
    reporter.report(progress, note)
