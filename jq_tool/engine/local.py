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
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from jq_tool.core.model import Command, Result, decode_command, encode_command
from jq_tool.core.state_machine import StateMachineConfig
from jq_tool.core.wal import RECORD_COMMAND, WAL, write_snapshot_file
from jq_tool.core.wal_format import encode_snapshot_header
from jq_tool.engine.base import EngineUnavailable, Health, StorageFull
from jq_tool.engine.command_engine import CommandEngine, now_ms
from jq_tool.engine.forked_snapshot import SnapshotChildFailed, fork_snapshot
from jq_tool.engine.metrics import LogMetrics

log = logging.getLogger("jq.engine")

T = TypeVar("T")


@dataclass(frozen=True)
class EngineConfig:
    data_dir: Path
    lease_ms: int = 30_000  # default lease when a lease request names none
    tick_ms: int = 5_000  # longest pause between two looks at due leases and jobs
    retention_ms: int = 7 * 24 * 3600 * 1000  # finished jobs are kept this long
    snapshot_every: int = 100_000  # least records between two snapshots (see _snapshot_due)
    segment_bytes: int = 64 << 20
    machine: StateMachineConfig = field(default_factory=StateMachineConfig)


class _Proposal:
    __slots__ = ("command", "record", "future")

    def __init__(self, command: Command, future: asyncio.Future[Result]) -> None:
        self.command = command
        self.record = encode_command(command)
        self.future = future


class _WorkerThread:
    """One thread that runs calls in order and hands each result back to the event loop. Every
    group commit crosses this boundary twice, so it is leaner than run_in_executor (no
    concurrent.futures.Future, no wrap_future, no executor locks)."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        # A daemon: an interpreter that exits without stop() must not hang on it. Stopping
        # mid-append is then the same as a crash, which recovery handles.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put((loop, future, fn, args))
        return future

    def close(self) -> None:
        self._calls.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (item := self._calls.get()) is not None:
            loop, future, fn, args = item
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, future, result, None)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.cancelled():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class LocalEngine(CommandEngine):
    def __init__(self, config: EngineConfig, *, clock: Callable[[], int] = now_ms) -> None:
        super().__init__(lease_ms=config.lease_ms, machine_config=config.machine, clock=clock)
        self.config = config
        self._wal = WAL(config.data_dir, segment_bytes=config.segment_bytes)
        # The WAL thread owns the WAL (appends, recovery, deleting what a snapshot covers); the
        # snapshot thread writes snapshot files, which can take a while, so appends go on.
        self._wal_thread: _WorkerThread | None = None
        self._snapshot_thread: _WorkerThread | None = None
        self._snapshot_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[_Proposal] = []
        self._wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._started = False
        self._fatal: str | None = None  # why writes are refused for good (a failed fsync)
        self._records_since_snapshot = 0
        self.recovery_message: str | None = None  # what recovery truncated, if anything
        self.log_metrics = LogMetrics()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wal_thread = _WorkerThread("jq-wal")
        started = time.monotonic()
        try:
            replayed = await self._wal_thread.call(self._recover)
        except BaseException:
            self._wal_thread.close()
            raise
        self._snapshot_thread = _WorkerThread("jq-snapshot")
        log.info(
            "recovered %d jobs (%d log records replayed) in %.2fs",
            self._machine.job_count,
            replayed,
            time.monotonic() - started,
        )
        self._records_since_snapshot = replayed
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
        if self._snapshot_task:
            await self._snapshot_task
        if self._fatal is None and self._records_since_snapshot:
            try:
                await self._final_snapshot()
            except Exception:
                # The log has every record: a restart replays them. Closing must still happen.
                log.exception("final snapshot failed")
        self._release_all_waiters()
        assert self._wal_thread is not None and self._snapshot_thread is not None
        self._snapshot_thread.close()
        await self._wal_thread.call(self._wal.close)
        self._wal_thread.close()
        self._started = False

    # ------------------------------------------------------------------ the write path

    async def _propose(self, command: Command) -> Result:
        if self._fatal is not None:
            raise EngineUnavailable(self._fatal)
        if not self._started or self._stopping:
            raise EngineUnavailable("engine is not running")
        assert self._loop is not None
        future: asyncio.Future[Result] = self._loop.create_future()
        self._pending.append(_Proposal(command, future))
        self._wakeup.set()
        # A caller that goes away (client disconnect) cancels only this future: the command
        # is still written and applied (it may already be on disk), its answer is dropped.
        return await future

    async def _flush_loop(self) -> None:
        assert self._wal_thread is not None
        wal_thread = self._wal_thread
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._pending:
                if self._stopping:
                    return
                continue
            batch, self._pending = self._pending, []
            records = [(RECORD_COMMAND, proposal.record) for proposal in batch]
            started = time.perf_counter()
            try:
                await wal_thread.call(self._wal.append, records)
            except Exception as exc:  # noqa: BLE001 - every storage error is answered, below
                self.log_metrics.append_failures += 1
                self._refuse_batch(batch, exc)
                continue
            self.log_metrics.append_seconds.observe(time.perf_counter() - started)
            self.log_metrics.batch_commands.observe(len(batch))
            for proposal in batch:
                result = self._machine.apply(proposal.command)
                if not proposal.future.done():
                    proposal.future.set_result(result)
            self._wake_lease_waiters()
            self._records_since_snapshot += len(batch)
            if self._snapshot_task is None and self._records_since_snapshot >= self._snapshot_due():
                self._start_snapshot()

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
            # The WAL says why it gave up for good (e.g. "fsync failed: …"), when it did.
            reason = self._wal.failure or f"WAL write failed: {exc}"
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

    def _snapshot_due(self) -> int:
        """Records between two snapshots: `snapshot_every`, or a quarter of the jobs held when
        that is more. A snapshot costs time in proportion to the jobs it holds, so with many
        jobs a fixed interval would spend ever more of the engine on snapshots; a quarter keeps
        that cost per record bounded and the replay after a crash shorter than the snapshot."""
        return max(self.config.snapshot_every, self._machine.job_count // 4)

    def _start_snapshot(self) -> None:
        """Capture the state for a snapshot. Called by the flusher between two batches: the
        state then matches exactly the records before next_index, and the WAL thread is idle
        (only the flusher appends). A forked child encodes and writes it while the loop goes
        on; waiting for the child and letting the WAL drop what the snapshot covers is left to
        a background task."""
        assert self._snapshot_thread is not None
        index = self._wal.next_index
        due = self._snapshot_due()
        started = time.monotonic()
        self._records_since_snapshot = 0
        try:
            child = fork_snapshot(
                self._machine.snapshot,
                self._wal.snapshot_path(index),
                index,
                self._wal.descriptors(),
            )
        except OSError as exc:  # no fork: EAGAIN, ENOMEM
            self._snapshot_failed(due, exc)
            return
        self._snapshot_task = asyncio.create_task(
            self._finish_snapshot(index, due, started, self._snapshot_thread.call(child.wait)),
            name="jq-snapshot",
        )

    async def _final_snapshot(self) -> None:
        """At stop, nobody is served any more: encode and write in process, no fork."""
        assert self._snapshot_thread is not None
        index = self._wal.next_index
        started = time.monotonic()
        data = self._machine.snapshot()
        self._records_since_snapshot = 0
        header = encode_snapshot_header(index, data)
        path = self._wal.snapshot_path(index)
        written = self._snapshot_thread.call(write_snapshot_file, path, header, data)
        await self._finish_snapshot(index, self._snapshot_due(), started, written)

    async def _finish_snapshot(
        self, index: int, due: int, started: float, written: Awaitable[None]
    ) -> None:
        assert self._wal_thread is not None
        try:
            await written
            await self._wal_thread.call(self._wal.drop_before, index)
        except (OSError, SnapshotChildFailed) as exc:
            self._snapshot_failed(due, exc)
            return
        except Exception as exc:  # noqa: BLE001
            self._fail_for_good(f"snapshot failed: {exc}")
            return
        finally:
            self._snapshot_task = None
        elapsed = time.monotonic() - started
        self.log_metrics.snapshot_seconds.observe(elapsed)
        log.info("snapshot at index %d written in %.2fs", index, elapsed)

    def _snapshot_failed(self, due: int, exc: BaseException) -> None:
        # The log itself is intact: a snapshot that could not be written (a full disk, a child
        # the kernel killed) only means a longer replay; try again half an interval later.
        self._records_since_snapshot += due // 2
        log.error("snapshot failed, will retry: %s", exc)

    # ------------------------------------------------------------------ the ticker

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self._ticker_pause_ms(self.config.tick_ms) / 1000)
            if self._fatal is not None:
                continue
            try:
                await self._tick(self.config.retention_ms)
            except EngineUnavailable as exc:
                log.warning("ticker: %s", exc)

    def health(self) -> Health:
        if self._fatal is not None:
            return Health(ok=False, role="single", reason=self._fatal)
        if not self._started:
            return Health(ok=False, role="single", reason="not started")
        if self._stopping:
            return Health(ok=False, role="single", reason="shutting down")
        return Health(ok=True, role="single")
