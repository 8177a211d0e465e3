"""Hooks on a LocalEngine's WAL for tests that count or break its appends, whichever of its
three paths an append takes: the WAL thread's `WAL.append`, a lone caller's `WAL.append` in the
event loop, or the write in the loop whose fdatasync is queued to the kernel
(`WAL.write_unsynced`, then `WAL.synced`).

Failures are injected where the real ones come from: `os.pwrite` (a full disk), `os.fdatasync`
(the thread's and the loop's sync), and the AIO completion's result (the kernel's queued sync,
which tests/chaos/test_chaos_disk_faults.py also makes fail for real on a broken device).
"""

from __future__ import annotations

import errno
import os
import threading

import pytest

from jq_tool.core.aio_sync import AioSyncer
from jq_tool.core.wal import UnsyncedWrite
from jq_tool.engine.local import LocalEngine


def count_appends(engine: LocalEngine) -> list[int]:
    """Records per WAL append from now on (each append is one write + one fdatasync)."""
    appends: list[int] = []
    wal = engine._wal
    real_append, real_write_unsynced = wal.append, wal.write_unsynced

    def counting_append(records: list[tuple[int, bytes]]) -> int:
        appends.append(len(records))
        return real_append(records)

    def counting_write_unsynced(records: list[tuple[int, bytes]]) -> UnsyncedWrite | None:
        written = real_write_unsynced(records)
        if written is not None:  # None: a rotation first, then `append` (counted there)
            appends.append(len(records))
        return written

    wal.append = counting_append  # type: ignore[method-assign]
    wal.write_unsynced = counting_write_unsynced  # type: ignore[method-assign]
    return appends


def fail_writes(monkeypatch: pytest.MonkeyPatch, code: int, message: str) -> None:
    """Every `os.pwrite` fails with `code` until monkeypatch.undo() (or setattr back)."""

    def failing_pwrite(fd: int, data: bytes, offset: int) -> int:
        raise OSError(code, message)

    monkeypatch.setattr(os, "pwrite", failing_pwrite)


def fail_syncs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every fdatasync fails with EIO, called (`os.fdatasync`) or queued to the kernel (its
    completion reports EIO, as a broken device's does), until monkeypatch.undo()."""

    def failing_fdatasync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    real_completed = AioSyncer.completed

    def failing_completed(self: AioSyncer) -> list[tuple[int, int]]:
        return [(request, errno.EIO) for request, _ in real_completed(self)]

    monkeypatch.setattr(os, "fdatasync", failing_fdatasync)
    monkeypatch.setattr(AioSyncer, "completed", failing_completed)


def refuse_queued_syncs(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """io_submit refuses every sync with `code` (ENOMEM: for now; EINVAL: this file system
    queues none), until monkeypatch.undo()."""

    def refused(self: AioSyncer, fd: int) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(AioSyncer, "submit", refused)


def record_syncing_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread of every `os.fdatasync` call from now on (the loop's, or the WAL
    thread's "jq-wal"), until monkeypatch.undo()."""
    names: list[str] = []
    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        names.append(threading.current_thread().name)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    return names
