"""LocalEngine: the Engine API over the local write-ahead log (core/wal.py) in the data dir.

What is local here is the log: recovery (the newest snapshot, then replay) and appending a
batch, one `write` + one `fdatasync`, without the event loop waiting for the disk: the write
from the loop and the sync queued to the kernel (Linux AIO, core/aio_sync.py), or where that is
not available, both in a dedicated WAL thread (one lone caller's commands are appended in the
loop itself: see `_append`).
Everything else (the proposal queue and its group commit, applying, waiters, the ticker, when to
snapshot) is CommandEngine's (engine/command_engine.py).

Segments are preallocated (core/segment_pipeline.py): appends overwrite zeros, and the next
segment is ready, descriptor and all, before a rotation needs it.

Storage errors: a full disk (`ENOSPC`, `EDQUOT`) refuses that batch (`StorageFull`) and the WAL
cuts it off, so service resumes when space returns. Running out of a resource (`EMFILE`,
`ENFILE`, `ENOMEM`, `EAGAIN`, `ENOBUFS`: no descriptor for a new segment, no memory) refuses
that batch too (`ResourceExhausted`, 503 with Retry-After); `/health` reports it until a probe
(the rotation that failed, tried again every half second) or a write succeeds. Only a failed
`fdatasync` (or a write that could not be cut back off, or any other I/O error) stops writes for
good (`EngineUnavailable`): after a failed fsync the kernel may have dropped the dirty pages. The
batch whose fdatasync failed is answered `OutcomeUnknown`: its records are in the file, and a
restart may find them on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Collection
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from jq_tool.core.aio_sync import AioSyncer, open_syncer
from jq_tool.core.model import Command, Result, decode_command
from jq_tool.core.wal import RECORD_COMMAND, WAL, UnsyncedWrite, fdatasync_error
from jq_tool.engine.base import (
    EngineConfig,
    EngineUnavailable,
    Health,
    OutcomeUnknown,
    ResourceExhausted,
    StorageFull,
)
from jq_tool.engine.command_engine import CommandEngine, Proposal, now_ms
from jq_tool.runtime import collector_paused

log = logging.getLogger("jq.engine")

T = TypeVar("T")

# Errors that mean "not now", not "never": the resource comes back when others release it.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.ENOBUFS})
# How often a temporarily refusing engine tries again on its own, so that /health turns ok
# without waiting for a client to write.
PROBE_INTERVAL_S = 0.5
# A lone batch is appended in the event loop only while appends take less than this: a disk
# that slows down (another process's writes, a full journal) must not stall the loop.
INLINE_APPEND_UNDER_S = 0.002


class _WorkerThread:
    """One thread that runs calls in order and hands each result back to the event loop. Every
    group commit crosses this boundary twice, so it is leaner than run_in_executor (no
    concurrent.futures.Future, no wrap_future, no executor locks): measured here, that took a
    lone submit from 41 µs to 24 µs of event-loop CPU."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        # Calls handed over whose answer the loop has not run yet: counted by the loop alone.
        self._unanswered = 0
        # A daemon: an interpreter that exits without stop() must not hang on it. Stopping
        # mid-append is then the same as a crash, which recovery handles.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def idle(self) -> bool:
        """Nothing queued or running here (asked from the event loop, which alone hands calls
        over and runs their answers): the loop may use what this thread owns meanwhile."""
        return self._unanswered == 0

    def call(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._unanswered += 1
        self._calls.put((loop, _settle, future, fn, args))
        return future

    def call_then(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        done: Callable[[Any, T | None, BaseException | None], None],
        context: Any,
    ) -> None:
        """Run fn(*args) here, then done(context, result, exception) in the event loop: one
        callback, where `call` costs a future and a turn of the loop more to wake its awaiter."""
        self._unanswered += 1
        self._calls.put((asyncio.get_running_loop(), done, context, fn, args))

    def close(self) -> None:
        self._calls.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (item := self._calls.get()) is not None:
            loop, done, context, fn, args = item
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                loop.call_soon_threadsafe(self._answer, done, context, None, exc)
            else:
                loop.call_soon_threadsafe(self._answer, done, context, result, None)

    def _answer(
        self,
        done: Callable[[Any, Any, BaseException | None], None],
        context: Any,
        result: Any,
        exc: BaseException | None,
    ) -> None:
        self._unanswered -= 1
        done(context, result, exc)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.cancelled():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class LocalEngine(CommandEngine):
    def __init__(self, config: EngineConfig, *, clock: Callable[[], int] = now_ms) -> None:
        super().__init__(config, clock=clock)
        self._wal = WAL(config.data_dir, segment_bytes=config.segment_bytes, preallocate=True)
        # The WAL thread owns the WAL: appends, recovery, deleting what a snapshot covers.
        self._wal_thread: _WorkerThread | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.recovery_message: str | None = None  # what recovery truncated, if anything
        self._temporary: str | None = None  # why writes are refused for now (a resource)
        self._probe: asyncio.Task[None] | None = None
        # Whether a lone batch may be appended in the loop itself (see _append).
        self._lone_before = False
        # The HTTP server's in-flight request tasks (watch_requests): none until it says.
        self._requests: Collection[asyncio.Task[None]] = ()
        # The request task whose batch last skipped the yield (once per request: see
        # _propose_lone).
        self._unyielded: asyncio.Task[Any] | None = None
        self._quick_disk = True
        # The kernel's queued fdatasyncs (None: not available here, the WAL thread syncs), and
        # the batch whose sync is queued, with its _appended context.
        self._syncer: AioSyncer | None = None
        self._syncing: tuple[UnsyncedWrite, tuple[list[Proposal], float]] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._wal_thread = _WorkerThread("jq-wal")
        started = time.monotonic()
        try:
            # Before recovery: replayed Purges hand the jobs they forget to the history store.
            await self._wal_thread.call(self.history.open)
            replayed = await self._wal_thread.call(self._recover)
        except BaseException:
            self.history.close()
            self._wal_thread.close()
            raise
        log.info(
            "recovered %d jobs (%d log records replayed) in %.2fs",
            self._machine.job_count,
            replayed,
            time.monotonic() - started,
        )
        self._records_since_snapshot = replayed
        self._syncer = open_syncer()
        if self._syncer is not None:
            asyncio.get_running_loop().add_reader(self._syncer.fileno, self._synced)
        self._serve()
        self._ticker = asyncio.create_task(self._tick_loop(), name="jq-ticker")

    def _recover(self) -> int:
        """Newest valid snapshot + replay. Runs in the WAL thread before anything else."""
        with collector_paused():
            return self._recover_state()

    def _recover_state(self) -> int:
        recovery = self._wal.open()
        if recovery.truncated:
            self.recovery_message = recovery.truncated
            # A torn write is what a crash leaves; a whole record failing its CRC is not.
            level = logging.ERROR if recovery.damaged else logging.WARNING
            log.log(level, "WAL tail truncated during recovery: %s", recovery.truncated)
        for skipped in recovery.skipped_snapshots:
            # Written whole and fsynced before its rename, a snapshot that fails its check was
            # damaged on the disk since: the WAL kept the one before it and the log since.
            log.error(
                "snapshot %s: not used; restored from %s and the log after it (was the disk "
                "damaged?)",
                skipped,
                f"the snapshot at index {recovery.snapshot_index}"
                if recovery.snapshot is not None
                else "the start of the log",
            )
        if recovery.snapshot is not None:
            self._machine.restore(recovery.snapshot)
        self._snapshot_at = recovery.snapshot_index
        replayed = 0
        self._replaying = True
        try:
            with self.history.replaying():
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
        self._ticker_nudge.set()  # a ticker that missed its cancel sees _stopping at once
        for task in (self._ticker, self._probe, self._warming):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._drain()
        if self._fatal is None:
            try:
                await self._write_snapshot_now()
            except Exception:
                # The log has every record: a restart replays them. Closing must still happen.
                log.exception("final snapshot failed")
        self._release_all_waiters()
        self._close_syncer()  # nothing is queued: _drain waited for the last append
        assert self._wal_thread is not None
        await self._wal_thread.call(self.history.close)
        await self._wal_thread.call(self._wal.close)
        self._wal_thread.close()
        self._started = False

    def health(self) -> Health:
        reason = self._refusal() or self._temporary
        return Health(ok=reason is None, role="single", reason=reason)

    # ------------------------------------------------------------------ the log

    async def _append(self, batch: list[Proposal]) -> None:
        """Hand the batch to the WAL thread and return: `_appended` answers it, in the loop,
        as soon as the thread is done (the flusher waits for the append slot, which
        `_appended` releases, before it takes the next batch). A lone batch (this batch
        and the one before it each one caller's commands, the WAL thread idle, the last
        append quick) is written and synced right here instead: a client waiting for each answer
        then pays no hand-off to the thread and back (two thread switches, and the GIL
        changing hands: ~40 µs of a ~300 µs call with the disk out of the way). Blocking the
        loop for that fdatasync costs nobody anything: no other command is waiting, and one
        that arrives meanwhile would have to wait for the next batch anyway (one append at a
        time); as soon as commands arrive together, the loop keeps reading requests while the
        disk works: it writes the batch and queues its sync to the kernel (`_append_queued`),
        or where it cannot, hands both to the thread."""
        assert self._wal_thread is not None
        one_caller = all(proposal.joined for proposal in islice(batch, 1, None))
        lone = one_caller and self._lone_before and self._quick_disk
        self._lone_before = one_caller
        if lone and self._wal_thread.idle:
            self._append_in_loop(batch)
            return
        records = _records(batch)
        queue_sync = self._syncer is not None and self._temporary is None and self._wal_thread.idle
        if queue_sync and self._append_queued(batch, records):
            return
        context = (batch, time.perf_counter())
        try:
            self._wal_thread.call_then(self._wal.append, (records,), self._appended, context)
        except BaseException:
            self._append_slots.release()
            raise

    def _append_in_loop(self, batch: list[Proposal]) -> None:
        """Write and sync `batch` right here, in the event loop, then apply and answer it (the
        append slot is held; `_appended` releases it)."""
        self.log_metrics.appends_in_loop += 1
        context = (batch, time.perf_counter())
        try:
            last_index = self._wal.append(_records(batch))
        except Exception as exc:  # noqa: BLE001 - answered as the thread's would be
            self._appended(context, None, exc)
        else:
            self._appended(context, last_index, None)

    def _append_queued(self, batch: list[Proposal], records: list[tuple[int, bytes]]) -> bool:
        """Write `batch` here and queue its fdatasync to the kernel; `_synced` applies and
        answers it when the sync is done (the append slot is held until then). Why not the WAL
        thread: its hand-off alone took longer than the disk's sync (waking, then waiting for
        the GIL while the loop read requests), and the two threads together spent more CPU a
        cycle than the loop alone does now (core/aio_sync.py). False, with nothing written, when
        the batch needs a rotation first (rare: the thread does it, with its syncs)."""
        assert self._syncer is not None
        context = (batch, time.perf_counter())
        try:
            written = self._wal.write_unsynced(records)
        except Exception as exc:  # noqa: BLE001 - answered as the thread's would be
            self._appended(context, None, exc)
            return True
        if written is None:
            return False
        try:
            self._syncer.submit(written.fd)
        except OSError as exc:
            # The kernel would not queue it: this batch is synced right here. No memory for
            # the request is for now; a file system that queues no sync (EINVAL) is for good,
            # and the WAL thread syncs from then on.
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                log.warning("WAL syncs go to the WAL thread: the kernel queues none here (%s)", exc)
                self._close_syncer()
            self._finish_sync(written, context, fdatasync_error(written.fd))
            return True
        self.log_metrics.appends_queued += 1
        self._syncing = (written, context)
        return True

    def _close_syncer(self) -> None:
        if self._syncer is not None:
            asyncio.get_running_loop().remove_reader(self._syncer.fileno)
            self._syncer.close()
            self._syncer = None

    def _synced(self) -> None:
        """The syncer's eventfd is readable: finish the batch whose sync completed."""
        assert self._syncer is not None
        try:
            finished = self._syncer.completed()
        except OSError as exc:
            # The kernel would not say how the sync went: as a failed fdatasync, the outcome
            # of what is in flight is unknown, and no later append may build on it.
            finished = [(-1, exc.errno or errno.EIO)]
        for _request, error in finished:
            if self._syncing is None:
                break
            (written, context), self._syncing = self._syncing, None
            sync_error = OSError(error, f"fdatasync: {os.strerror(error)}") if error else None
            self._finish_sync(written, context, sync_error)

    def _finish_sync(
        self,
        written: UnsyncedWrite,
        context: tuple[list[Proposal], float],
        sync_error: OSError | None,
    ) -> None:
        try:
            last_index = self._wal.synced(written, sync_error)
        except OSError as exc:
            self._appended(context, None, exc)
        else:
            self._appended(context, last_index, None)

    async def _propose(self, command: Command) -> Result:
        # `_propose_all([command])` would do the same with one coroutine more: ~1% of a lone
        # submit's server instructions (callgrind), on the path every request takes.
        if not self._lone_append_now(pending=0):
            return await super()._propose(command)
        (future,) = await self._propose_lone([command])
        return await future

    async def _propose_all(self, commands: list[Command]) -> list[asyncio.Future[Result]]:
        if not self._lone_append_now(pending=0):
            return await super()._propose_all(commands)
        return await self._propose_lone(commands)

    def watch_requests(self, requests: Collection[asyncio.Task[None]]) -> None:
        self._requests = requests

    async def _propose_lone(self, commands: list[Command]) -> list[asyncio.Future[Result]]:
        """One caller's commands (a submit, or a settlement and the lease of the next job) are
        appended in the caller's own coroutine (issue 20, third cut): no wake-up of the flusher
        task, no future to wake this one, so the request that proposed them answers in the
        same step of its task. Called when `_lone_append_now` says they would be a lone batch.

        The first batch of the one request the HTTP server is answering (watch_requests) is
        appended at once: no other request has been read that could join it (uvicorn starts a
        request's task as soon as its head is read). Only the first: a request that proposes
        again (a bulk action's chunks) yields as any caller does, so it cannot keep the loop
        from reading other requests. Any other caller (another request in flight, the ticker,
        an in-process caller) first queues them without waking the flusher and lets the loop
        run once (a yield), so that a caller proposing in a loop never starves the loop's other
        tasks; commands proposed meanwhile (other requests read in the same turn) queue behind
        them and wake the flusher: they share one batch, group commit as before. If they are
        still alone, they are written, synced, applied and answered right here, and the
        futures returned are done. Under load (batches of several callers) nothing changes: no
        yield, the proposal queue."""
        group = [
            Proposal(command, self._loop.create_future(), joined=position > 0)
            for position, command in enumerate(commands)
        ]
        futures = [proposal.future for proposal in group]
        requests, task = self._requests, asyncio.current_task()
        if len(requests) == 1 and task in requests and task is not self._unyielded:
            self._unyielded = task
        else:
            self._pending.extend(group)
            try:
                await asyncio.sleep(0)
            except BaseException:
                # Cancelled (the caller went away): the flusher still makes them durable, as
                # any queued command; nobody reads the answers.
                for future in futures:
                    future.cancel()
                self._wakeup.set()
                raise
            # Only the flusher takes from `_pending`, all of it: the group is still there,
            # alone, when its first command is first and the count is the group's.
            if not (self._lone_append_now(pending=len(group)) and self._pending[0] is group[0]):
                # Others joined them (or writes stopped): the flusher's batch.
                self._wakeup.set()
                return futures
            self._pending = []
        await self._append_slots.acquire()  # free (not locked): returns at once
        self._append_in_loop(group)
        return futures

    def _lone_append_now(self, pending: int) -> bool:
        """What `_append` checks for a lone batch, before the flusher is woken: the batches
        before were lone and quick, `pending` commands are queued, no append is in flight
        (nor waited for by the flusher), the WAL thread is idle, and writes are accepted."""
        thread = self._wal_thread
        return (
            self._lone_before
            and self._quick_disk
            and len(self._pending) == pending
            and not self._append_slots.locked()
            and thread is not None
            and thread.idle
            and self._fatal is None
            and self._started
            and not self._stopping
        )

    def _appended(
        self,
        context: tuple[list[Proposal], float],
        _last_index: int | None,
        exc: BaseException | None,
    ) -> None:
        batch, started = context
        try:
            if exc is not None:
                if not isinstance(exc, Exception):
                    raise exc
                self.log_metrics.append_failures += 1
                self._refuse_batch(batch, exc)
                return
            took = time.perf_counter() - started
            self._quick_disk = took < INLINE_APPEND_UNDER_S
            self.log_metrics.append_seconds.observe(took)
            self.log_metrics.batch_commands.observe(len(batch))
            if self._temporary is not None:
                self._writable_again()
            self._apply_commands([proposal.command for proposal in batch], batch)
            self._applied()
        finally:
            self._append_slots.release()

    def _refuse_batch(self, batch: list[Proposal], exc: BaseException) -> None:
        """Nothing of a failed batch was acknowledged. A full disk is recoverable (the WAL cut
        the partial batch off); anything else, above all a failed fsync, stops writes for good:
        after a failed fsync the kernel may have dropped the dirty pages, so retrying would
        acknowledge data that is not on disk."""
        error: EngineUnavailable
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            error = StorageFull("disk full: the write was refused; retry when space returns")
            log.error("WAL append refused: disk full (%s)", exc)
        elif (
            isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS and self._wal.failure is None
        ):
            reason = f"writes refused for now: {_describe(exc)}; retrying"
            error = ResourceExhausted(reason)
            self._refuse_temporarily(reason)
        else:
            # The WAL says why it gave up for good (e.g. "fsync failed: …"), when it did.
            reason = self._wal.failure or f"WAL write failed: {exc}"
            # This batch poisoned the WAL (its fdatasync, or the cut of its failed write,
            # failed): its records are in the file and what reached the disk is unknown, so a
            # restart may replay them. Its callers are told the outcome is unknown; a batch
            # the WAL cut off cleanly, or refused once poisoned, was not written.
            written = self._wal.failure is not None and self._fatal is None
            self._fail_for_good(reason)
            error = (OutcomeUnknown if written else EngineUnavailable)(self._fatal or reason)
        self._refuse(batch, error)
        if self._fatal is not None:
            pending, self._pending = self._pending, []
            self._refuse(pending, error)

    def _refuse_temporarily(self, reason: str) -> None:
        if self._temporary is None:
            log.error("WAL append refused: %s", reason)
        self._temporary = reason
        if self._probe is None:
            self._probe = asyncio.create_task(self._probe_until_writable(), name="jq-wal-probe")

    def _writable_again(self) -> None:
        self._temporary = None
        log.info("WAL writes accepted again")

    async def _probe_until_writable(self) -> None:
        """Try what failed (a rotation: WAL.ready) every PROBE_INTERVAL_S, in the WAL thread,
        until it works, so that /health says ok without a client having to write first."""
        assert self._wal_thread is not None
        try:
            while self._temporary is not None and self._fatal is None and not self._stopping:
                await asyncio.sleep(PROBE_INTERVAL_S)
                try:
                    await self._wal_thread.call(self._wal.ready)
                except OSError as exc:
                    if exc.errno in RESOURCE_ERRNOS:
                        self._temporary = f"writes refused for now: {_describe(exc)}; retrying"
                    continue
                except Exception:  # noqa: BLE001 - a poisoned WAL: the next append says why
                    return
                if self._temporary is not None:
                    self._writable_again()
        finally:
            self._probe = None

    # ------------------------------------------------------------------ where snapshots go

    def _snapshot_position(self) -> int:
        return self._wal.next_index

    def _snapshot_path(self, position: int) -> Path:
        return self._wal.snapshot_path(position)

    def _snapshot_fds(self) -> list[int]:
        syncer = self._syncer
        return self._wal.descriptors() + ([syncer.fileno] if syncer is not None else [])

    async def _snapshot_written(self, position: int) -> None:
        assert self._wal_thread is not None
        await self._wal_thread.call(self._wal.drop_before, position)

    def _make_room(self) -> None:
        """A snapshot found the disk full: the generation the WAL keeps for a damaged snapshot
        goes first (WAL.drop_kept), in the WAL thread like every deletion."""
        if self._wal_thread is not None:
            self._wal_thread.call_then(self._wal.drop_kept, (), _kept_dropped, None)


def _kept_dropped(_context: None, deleted: int | None, exc: BaseException | None) -> None:
    if exc is not None:
        log.warning("the disk is full; the files kept for a fallback stay: %s", exc)
    elif deleted:
        log.warning(
            "the disk is full: deleted the snapshot and log kept for a fallback (%d files); "
            "one is kept again after the next snapshot",
            deleted,
        )


def _records(batch: list[Proposal]) -> list[tuple[int, bytes]]:
    """The WAL records of a batch, in order."""
    return [(RECORD_COMMAND, proposal.record) for proposal in batch]


def _describe(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "error")
    return f"{exc.strerror or exc} ({name})"
