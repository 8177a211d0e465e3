"""The next WAL segment, made ahead of need: a file created at the segment's full size,
zero-filled and synced by a background thread, held open until a rotation takes it (etcd's
`file_pipeline.go` does the same for its WAL).

Why: an append into a file whose size does not change needs an fdatasync of the data only; an
append that grows the file also makes the filesystem journal the new size and extents. And a
rotation that finds its file ready opens nothing at the critical moment, so running out of
descriptors (EMFILE) or memory cannot stop it: the spare's descriptor is held from the moment
it is made. Zeros are written for real (not `fallocate`'s unwritten extents, whose first write
is itself a metadata change).

The spare is `next-segment.tmp` in the WAL directory: it ends in `.tmp`, so recovery deletes a
spare that a crash left behind, and it never looks like a segment until the WAL has written its
header and renamed it. One spare at a time; `want()` asks for one, `take()` hands it over. A
failure (EMFILE, ENOSPC) is retried with a growing pause while a spare is wanted; the WAL falls
back to creating a plain segment when none is ready. Files are created 0600.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from pathlib import Path

import msgspec

SPARE_NAME = "next-segment.tmp"
_ZEROS = bytes(1 << 20)
# A spare's zeros are synced this many bytes at a time, not all at its end. An fdatasync of the
# WAL ends with a flush of the device's cache, which waits for every write the device holds:
# 64 MiB of zeros handed over at once by one final fsync held the WAL's appends behind them
# for as long as the disk took to write them (hundreds of ms on this machine's disk, on the
# requests answered meanwhile). Synced 1 MiB at a time, an append waits behind 1 MiB at most.
SYNC_EVERY = 1 << 20
_FIRST_RETRY_S = 0.05
_LAST_RETRY_S = 2.0


class Spare(msgspec.Struct, frozen=True):
    """A zero-filled, synced file of the segment size, open for writing."""

    fd: int
    path: Path
    size: int


def make_spare(
    path: Path, size: int, stop: threading.Event | None = None, *, sync_every: int = SYNC_EVERY
) -> Spare:
    """Create `path` at `size` bytes of zeros, synced. Raises OSError (the file is removed).
    ENOSPC at once, writing nothing, when the file system has not that much room: zeros
    written only to be removed again would take the last free blocks from the WAL's own
    appends for a moment, and refuse records that fit (a nearly full disk retries often)."""
    stats = os.statvfs(path.parent)
    if stats.f_bavail * stats.f_frsize < size:
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: no room for a {size}-byte spare")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        offset = synced = 0
        view = memoryview(_ZEROS)
        while offset < size:
            if stop is not None and stop.is_set():
                raise InterruptedError("the WAL is closing")
            written = os.pwrite(fd, view[: min(len(_ZEROS), size - offset)], offset)
            if written <= 0:
                # A short write that made no progress: the disk is full.
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            offset += written
            if offset - synced >= sync_every and offset < size:
                os.fdatasync(fd)  # a little at a time (SYNC_EVERY)
                synced = offset
        os.fsync(fd)  # fsync, not fdatasync: the file's size is part of what must be durable
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return Spare(fd=fd, path=path, size=size)


class SegmentPipeline:
    """Keeps at most one spare segment file ready, made in a background thread on demand."""

    def __init__(self, directory: Path, size: int) -> None:
        self.path = Path(directory) / SPARE_NAME
        self.size = size
        self._condition = threading.Condition()
        self._stop = threading.Event()
        self._wanted = False
        self._spare: Spare | None = None
        self._thread: threading.Thread | None = None
        self.last_error: OSError | None = None  # why the last attempt failed, for the log

    def want(self) -> None:
        """Ask for a spare; returns at once. A no-op while one is ready or being made."""
        with self._condition:
            if self._stop.is_set() or self._wanted or self._spare is not None:
                return
            self._wanted = True
            if self._thread is None:
                # A daemon: a process that exits without close() must not wait for zero fill.
                self._thread = threading.Thread(target=self._run, name="jq-wal-spare", daemon=True)
                self._thread.start()
            self._condition.notify()

    def take(self) -> Spare | None:
        """The ready spare, now the caller's to rename and close; None if none is ready."""
        with self._condition:
            spare, self._spare = self._spare, None
            return spare

    @property
    def ready(self) -> bool:
        return self._spare is not None

    def descriptors(self) -> list[int]:
        """The spare's descriptor, if one is held (a forked child closes it)."""
        spare = self._spare
        return [spare.fd] if spare is not None else []

    def close(self) -> None:
        """Stop making spares and delete the one held, if any."""
        with self._condition:
            self._stop.set()
            self._condition.notify()
            thread = self._thread
        if thread is not None:
            thread.join()
        spare = self.take()
        if spare is not None:
            with contextlib.suppress(OSError):
                os.close(spare.fd)
            with contextlib.suppress(OSError):
                os.unlink(spare.path)

    def _run(self) -> None:
        pause = _FIRST_RETRY_S
        while True:
            with self._condition:
                while not self._stop.is_set() and not self._wanted:
                    self._condition.wait()
                if self._stop.is_set():
                    return
            try:
                spare = make_spare(self.path, self.size, self._stop)
            except OSError as exc:
                self.last_error = exc
                # Descriptors or space may come back: try again, less and less often.
                with self._condition:
                    self._condition.wait_for(self._stop.is_set, pause)
                pause = min(pause * 2, _LAST_RETRY_S)
                continue
            pause = _FIRST_RETRY_S
            with self._condition:
                self.last_error = None
                self._wanted = False
                if self._stop.is_set():
                    os.close(spare.fd)
                    with contextlib.suppress(OSError):
                        os.unlink(spare.path)
                    return
                self._spare = spare
