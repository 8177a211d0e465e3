"""The local write-ahead log: a directory of segment files and snapshots that makes commands
durable before the state machine applies them. It owns which files are live, recovery at open
(newest valid snapshot, segment validation, truncating a torn tail, refusing on corruption),
group-committed appends (one write and one fdatasync per batch), segment rotation, and writing
snapshots then deleting what they cover, less one generation kept for a newest snapshot that
the disk damages later (`drop_before`). The byte layout is documented in
`jq_tool.core.wal_format`; `examine()` is the read-only half that `jq wal-inspect` shares, so the
inspector and recovery can never disagree about a directory.

With `preallocate=True` (the engine's choice) segments come from `core/segment_pipeline.py`:
made at full size, zero-filled and synced ahead of need, so appends overwrite zeros and never
change a file's size, and a rotation opens no file. A new directory starts with a small segment
(a WAL that never writes a megabyte never preallocates 64), zero-filled too, of
min(segment_bytes / 4, 1 MiB): an append that grew the file would cost a metadata journal commit on
every fdatasync (measured: ~25% more per sync), and a lone client's submits at a fresh server
would all pay it. The spare is asked for once the current segment holds half of that, and a
small segment is left for the spare as soon as it is ready (or when full: then another small
one is made, if no spare is ready yet, and a plain growing one if the disk has no room left
for its zeros: a nearly full disk takes every record that fits).

What poisons the WAL (refuses every later append, until a new process recovers): a failed
fdatasync or directory fsync, and a write that failed and could not be cut back off. Anything
else that fails (a full disk, no descriptor left for a new segment, no memory) leaves the files
as they were before the call: the caller may retry, and the next call tries again. The WAL keeps
its directory open, so fsyncing it needs no new descriptor either. Every file is created 0600
and a directory the WAL creates 0700: job payloads are nobody else's business.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import msgspec

from jq_tool.core.segment_pipeline import SegmentPipeline, Spare, make_spare
from jq_tool.core.wal_format import (
    BROKEN_SUFFIX,
    RECORD_COMMAND,
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
    SECTOR_SIZE,
    SEGMENT_HEADER_SIZE,
    SEGMENT_SUFFIX,
    SNAPSHOT_SUFFIX,
    TEMP_SUFFIX,
    encode_records,
    encode_segment_header,
    encode_snapshot_header,
    iter_records,
    parse_name,
    read_snapshot,
    read_written,
    scan_file,
    segment_name,
    snapshot_name,
)

__all__ = [
    "RECORD_COMMAND",
    "WAL",
    "Recovery",
    "WalCorruption",
    "WalFailed",
    "WalLocked",
    "WalReport",
    "examine",
    "write_snapshot_file",
]

LOCK_NAME = "LOCK"
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700
# The size of a segment made without a spare (a new directory's first one), zero-filled; the
# spare is asked for once the current segment holds half of it.
_SMALL_SEGMENT = 1 << 20


class WalCorruption(Exception):
    """Corruption before the tail: acknowledged records are damaged or missing. Refuse to start."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"WAL corruption in {path} at offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class WalFailed(Exception):
    """A previous fsync or write failed in a way that leaves the file's durable state unknown:
    the WAL is poisoned and never appends again (the process must restart and recover)."""


class WalLocked(Exception):
    """Another process holds the WAL directory."""


class Recovery(msgspec.Struct):
    snapshot_index: int  # records with index < snapshot_index are inside `snapshot`
    snapshot: memoryview | None  # the state machine snapshot (its file mapped), or None
    truncated: str | None  # what a torn/corrupt tail truncation dropped (file, offset, bytes)
    next_index: int  # index the next appended record will get
    damaged: bool = False  # the dropped tail held a complete record that failed its CRC
    # Newer snapshots recovery could not use ("<name>: <why>"): it restored an older one.
    skipped_snapshots: list[str] = []


class SegmentState(msgspec.Struct):
    path: Path
    first_index: int
    records: int
    size: int  # bytes in the file now
    valid_end: int  # offset past the last valid record: the size after any tail truncation
    type_counts: dict[int, int] = {}


class SnapshotState(msgspec.Struct):
    path: Path
    index: int
    size: int  # bytes of snapshot data
    data: memoryview  # the file, mapped (read_snapshot)


class TornTail(msgspec.Struct):
    path: Path
    offset: int
    dropped: int  # bytes that truncation removes (not counting unwritten zeros after them)
    reason: str
    header: bool  # the segment header itself is torn: the file is rewritten to a fresh header
    records: int = 0  # complete records in the dropped bytes (the bad one, if whole, included)
    damaged: bool = False  # a complete record failed its CRC: not what a crash leaves
    unwritten: int = 0  # zero bytes after the dropped ones (preallocated space), cut off too
    kept: Path | None = None  # where recovery copied the dropped bytes

    @property
    def broken_path(self) -> Path:
        """Where recovery keeps a copy of the dropped bytes (etcd's repair keeps `.broken`)."""
        return self.path.with_name(f"{self.path.name}.{self.offset}{BROKEN_SUFFIX}")

    def describe(self) -> str:
        kind = "damaged" if self.damaged else "torn"
        text = (
            f"{self.path}: truncated {kind} tail at offset {self.offset}, "
            f"dropped {self.dropped} bytes ({self.reason}) holding {self.records} complete "
            f"record{'' if self.records == 1 else 's'}"
        )
        if self.damaged:
            text += ": a complete record failed its CRC check, which a crash does not explain"
        if self.unwritten:
            text += f"; the {self.unwritten} zero bytes after them were unwritten space"
        if self.kept is not None:
            text += f"; the dropped bytes are kept in {self.kept}"
        return text


class WalReport(msgspec.Struct):
    """Everything a read-only look at a WAL directory found."""

    directory: Path
    snapshot: SnapshotState | None = None
    skipped_snapshots: list[tuple[Path, str]] = []
    segments: list[SegmentState] = []  # live: from the snapshot on
    # The generation kept for a fallback (WAL.drop_before), not read: the snapshot before the
    # one in use (None before a second was written), and the segments from the one holding
    # its index (or from the first) up to the live ones.
    kept_snapshot: Path | None = None
    kept_segments: list[Path] = []
    stale_segments: list[Path] = []  # wholly covered by the snapshot and the kept one
    next_index: int = 0
    tail: TornTail | None = None
    corruption: WalCorruption | None = None
    broken_files: list[Path] = []  # tails dropped by earlier recoveries

    @property
    def snapshot_index(self) -> int:
        return self.snapshot.index if self.snapshot is not None else 0


def _list_indexed(directory: Path, suffix: str) -> list[tuple[int, Path]]:
    found = []
    for entry in os.scandir(directory):
        index = parse_name(entry.name, suffix)
        if index is not None and entry.is_file():
            found.append((index, Path(entry.path)))
    found.sort()
    return found


def _holding(segments: list[tuple[int, Path]], index: int) -> int | None:
    """The position of the segment that holds record `index` (the last one starting at or
    before it) in a list sorted by first index, or None when every segment starts after it."""
    found = None
    for position, (first, _path) in enumerate(segments):
        if first <= index:
            found = position
    return found


def examine(directory: Path) -> WalReport:
    """Inspect a WAL directory without changing it: pick the snapshot recovery would use,
    validate the live segments, and say whether opening it would truncate a tail or refuse."""
    report = WalReport(directory=directory)
    if not directory.is_dir():
        report.corruption = WalCorruption(directory, 0, "not a directory")
        return report
    report.broken_files = sorted(
        Path(entry.path)
        for entry in os.scandir(directory)
        if entry.name.endswith(BROKEN_SUFFIX) and entry.is_file()
    )

    snapshots = _list_indexed(directory, SNAPSHOT_SUFFIX)
    for _index, path in reversed(snapshots):
        decoded = read_snapshot(path)
        if isinstance(decoded, str):
            report.skipped_snapshots.append((path, decoded))
            continue
        index, data = decoded
        if path.name != snapshot_name(index):
            report.skipped_snapshots.append((path, f"holds index {index}, not its name's"))
            continue
        report.snapshot = SnapshotState(path=path, index=index, size=len(data), data=data)
        break
    base = report.snapshot_index

    segments = _list_indexed(directory, SEGMENT_SUFFIX)
    if not segments:
        if report.snapshot is not None or report.skipped_snapshots:
            report.corruption = WalCorruption(
                directory, 0, f"no segment files, but records from index {base} are needed"
            )
        return report

    start = _holding(segments, base)
    if start is None:
        why = f"records from index {base} are needed but the oldest segment starts at "
        why += f"{segments[0][0]}"
        if report.skipped_snapshots:
            bad_path, bad_reason = report.skipped_snapshots[0]
            why = f"snapshot {bad_path.name} is invalid ({bad_reason}); {why}"
        report.corruption = WalCorruption(segments[0][1], 0, why)
        return report
    # The generation WAL.drop_before keeps for a newest snapshot that fails its CRC later: the
    # next older snapshot file (not read: a start reads one snapshot) and the segments from the
    # one holding its index; with no older snapshot, the log from its first segment.
    older = [(index, path) for index, path in snapshots if index < base]
    kept_from = older[-1][0] if older else 0
    report.kept_snapshot = older[-1][1] if older else None
    kept_start = min(_holding(segments, kept_from) or 0, start)
    report.stale_segments = [path for _first, path in segments[:kept_start]]
    report.kept_segments = [path for _first, path in segments[kept_start:start]]

    expected = segments[start][0]
    live = segments[start:]
    for position, (first, path) in enumerate(live):
        last = position == len(live) - 1
        if first != expected:
            report.corruption = WalCorruption(
                path, 0, f"gap in the log: expected a segment starting at index {expected}"
            )
            return report
        scan = scan_file(path, search_after_error=last)
        if scan.first_index is not None and scan.first_index != first:
            report.corruption = WalCorruption(
                path, 0, f"header says first index {scan.first_index}, the name says {first}"
            )
            return report
        report.segments.append(
            SegmentState(
                path=path,
                first_index=first,
                records=scan.records,
                size=scan.size,
                valid_end=scan.valid_end if scan.first_index is not None else 0,
                type_counts=scan.type_counts,
            )
        )
        expected = first + scan.records
        if scan.error_offset is None:
            continue
        assert scan.error_reason is not None
        torn = last and (scan.zero_fill or scan.valid_record_after is None)
        if scan.header_error and scan.size > SEGMENT_HEADER_SIZE and not scan.zero_fill:
            # A header is written whole (temp file + rename) before any record: a bad header
            # with bytes after it is damage, not an unfinished write.
            torn = False
        if not torn:
            reason = scan.error_reason
            if scan.valid_record_after is not None:
                reason += f"; a valid record follows at offset {scan.valid_record_after}"
            elif not last:
                reason += " (not the last segment)"
            report.corruption = WalCorruption(path, scan.error_offset, reason)
            return report
        if scan.header_error:
            data_end = scan.size
        else:
            # Up to the sector of the last byte written; the zeros after it were never data.
            sectors = -(-scan.written // SECTOR_SIZE)
            data_end = max(scan.error_offset, min(scan.size, sectors * SECTOR_SIZE))
        report.tail = TornTail(
            path=path,
            offset=scan.error_offset,
            dropped=data_end - scan.error_offset,
            reason=scan.error_reason + (", zero fill" if scan.zero_fill else ""),
            header=scan.header_error,
            # A tail holds at most one complete record, the damaged one: a valid record after
            # the error would make it corruption instead.
            records=int(scan.damaged),
            damaged=scan.damaged,
            unwritten=scan.size - data_end,
        )
        report.segments[-1].valid_end = scan.error_offset
    report.next_index = expected
    if base > expected:
        report.corruption = WalCorruption(
            report.snapshot.path if report.snapshot else directory,
            0,
            f"snapshot index {base} is past the end of the log (next index {expected})",
        )
    return report


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_snapshot_file(path: Path, header: bytes, data: bytes) -> None:
    """Write header + data to `path` atomically and durably: a temp file, fsync, rename, then
    an fsync of the directory so the rename itself survives a crash."""
    temp = path.with_name(path.name + TEMP_SUFFIX)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        _pwrite_all(fd, header, 0)
        _pwrite_all(fd, data, len(header))
        os.fsync(fd)
        os.rename(temp, path)
    except OSError:
        temp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    _fsync_directory(path.parent)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    # A write to a nearly full filesystem may be short before it fails; finish it or fail.
    view = memoryview(data)
    done = 0
    while done < len(data):
        written = os.pwrite(fd, view[done:], offset + done)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done += written


def fdatasync_error(fd: int) -> OSError | None:
    """fdatasync `fd`; the error it raised, or None. For `WAL.synced`, which takes either."""
    try:
        os.fdatasync(fd)
    except OSError as exc:
        return exc
    return None


class UnsyncedWrite(msgspec.Struct, frozen=True):
    """A batch written into the current segment (`WAL.write_unsynced`), waiting for its sync."""

    fd: int
    end: int  # the segment's valid size once it is synced
    records: int


class WAL:
    """The write side of a WAL directory. Not thread-safe: the engine calls its methods one call
    at a time, from its WAL thread or, while that thread is idle, from the event loop (a lone
    append, or a write whose sync the kernel makes: `write_unsynced` then `synced`, meanwhile
    only `drop_before` may run, which touches the older segments and the base alone);
    write_snapshot_file, which touches no WAL state, may run in another thread; the segment
    pipeline has its own thread and lock."""

    def __init__(
        self, directory: Path, *, segment_bytes: int = 64 << 20, preallocate: bool = False
    ) -> None:
        if segment_bytes <= SEGMENT_HEADER_SIZE:
            raise ValueError(f"segment_bytes must exceed {SEGMENT_HEADER_SIZE}")
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.preallocate = preallocate
        self._lock_fd: int | None = None
        self._dir_fd: int | None = None
        self._fd: int | None = None
        self._segments: list[tuple[int, Path]] = []  # (first index, path), oldest first
        self._valid_ends: dict[int, int] = {}  # first index -> end of records, from recovery
        self._size = 0  # bytes of the current (last) segment that hold valid records
        self._file_size = 0  # bytes in the current segment's file (more when preallocated)
        self._next_index = 0
        self._base = 0  # snapshot index: replay starts here
        self._failed: str | None = None
        self._pipeline: SegmentPipeline | None = None
        self._spare_wanted = False
        self._small_segment = max(min(segment_bytes // 4, _SMALL_SEGMENT), SEGMENT_HEADER_SIZE)
        self._want_spare_at = self._small_segment // 2

    # -- open and recovery -------------------------------------------------------------------

    def open(self) -> Recovery:
        if self._lock_fd is not None:
            raise RuntimeError("WAL is already open")
        if self._failed is not None:
            # The page cache may still show what the disk lost: recover in a new process.
            raise WalFailed(self._failed)
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True, mode=DIRECTORY_MODE)
            # The directory's own entry must survive a power cut, not only the files in it.
            _fsync_directory(self.directory.parent)
        self._lock()
        try:
            self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            if self.preallocate:
                self._pipeline = SegmentPipeline(self.directory, self.segment_bytes)
            return self._recover()
        except BaseException:
            self.close()
            raise

    def _lock(self) -> None:
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WalLocked(f"{self.directory} is in use by another process") from None
        self._lock_fd = fd

    def _recover(self) -> Recovery:
        self._segments = []
        self._size = 0
        for entry in os.scandir(self.directory):
            # Leftovers of a rotation or snapshot that crashed before its rename, and a spare.
            if entry.name.endswith(TEMP_SUFFIX) and entry.is_file():
                os.unlink(entry.path)
        report = examine(self.directory)
        if report.corruption is not None:
            raise report.corruption
        if report.stale_segments:
            # A crash between a snapshot's rename and the deletions it allows leaves these.
            for stale in report.stale_segments:
                stale.unlink(missing_ok=True)
            self._fsync_directory()
        truncated = None
        if report.tail is not None:
            self._repair_tail(report.tail, report.segments[-1].first_index)
            truncated = report.tail.describe()
        if not report.segments:
            self._create_segment(0)
        else:
            self._segments = [(s.first_index, s.path) for s in report.segments]
            self._valid_ends = {s.first_index: s.valid_end for s in report.segments}
            last = report.segments[-1]
            self._fd = os.open(last.path, os.O_WRONLY)
            self._size = max(last.valid_end, SEGMENT_HEADER_SIZE)
            self._file_size = os.fstat(self._fd).st_size
        self._next_index = report.next_index
        self._base = report.snapshot_index
        return Recovery(
            snapshot_index=report.snapshot_index,
            snapshot=report.snapshot.data if report.snapshot is not None else None,
            truncated=truncated,
            next_index=report.next_index,
            damaged=report.tail.damaged if report.tail is not None else False,
            skipped_snapshots=[f"{path.name}: {why}" for path, why in report.skipped_snapshots],
        )

    def _repair_tail(self, tail: TornTail, first_index: int) -> None:
        if tail.dropped > 0 and not tail.header:
            # Keep what is dropped beside the segment, for a person to look at (and for
            # `jq wal-inspect` to list): it may hold the last acknowledged record.
            with tail.path.open("rb") as source:
                source.seek(tail.offset)
                dropped = source.read(tail.dropped)
            if any(dropped):
                write_snapshot_file(tail.broken_path, b"", dropped)
                tail.kept = tail.broken_path
        fd = os.open(tail.path, os.O_WRONLY)
        try:
            if tail.header:
                os.ftruncate(fd, 0)
                _pwrite_all(fd, encode_segment_header(first_index), 0)
            os.ftruncate(fd, max(tail.offset, SEGMENT_HEADER_SIZE))
            os.fsync(fd)
        finally:
            os.close(fd)

    def replay(self) -> Iterator[tuple[int, int, bytes]]:
        """(index, type, body) of every record at or after the snapshot index, in log order."""
        if self._lock_fd is None:
            raise RuntimeError("WAL is not open")
        for position, (first, path) in enumerate(list(self._segments)):
            last = position == len(self._segments) - 1
            # Only the records: a preallocated segment's zeros are never read.
            end = self._size if last else self._valid_ends.get(first)
            if end is None:
                data, start, index = _read_prefix(path, end), SEGMENT_HEADER_SIZE, first
            else:
                data, start, index = _read_records_from(path, first, self._base, end)
            try:
                for record_type, body in iter_records(data, start, len(data)):
                    if index >= self._base:
                        yield index, record_type, body
                    index += 1
            except ValueError as exc:
                raise WalCorruption(path, 0, str(exc)) from None

    # -- append ------------------------------------------------------------------------------

    @property
    def next_index(self) -> int:
        return self._next_index

    def _check_writable(self) -> int:
        if self._failed is not None:
            raise WalFailed(self._failed)
        if self._fd is None:
            raise RuntimeError("WAL is not open")
        return self._fd

    def _poison(self, why: str) -> None:
        self._failed = f"WAL unusable after an earlier failure: {why}"

    def descriptors(self) -> list[int]:
        """The open descriptors of this WAL (its directory lock, the directory, its current
        segment, a spare segment): a forked child closes them, so that it never holds the lock
        past its parent."""
        held = [fd for fd in (self._lock_fd, self._dir_fd, self._fd) if fd is not None]
        if self._pipeline is not None:
            held.extend(self._pipeline.descriptors())
        return held

    @property
    def failure(self) -> str | None:
        """Why the WAL refuses appends for good (poisoned), or None while it is usable."""
        return self._failed

    @property
    def spare_error(self) -> OSError | None:
        """Why the last attempt to make a preallocated segment failed, while it keeps failing."""
        return self._pipeline.last_error if self._pipeline is not None else None

    def append(self, records: list[tuple[int, bytes]]) -> int:
        """Make a batch of (type, body) records durable: one write, one fdatasync. Returns the
        index of the last record. A failed write leaves no partial record behind."""
        self._check_writable()
        if not records:
            return self._next_index - 1
        batch = encode_records(records)
        if self._rotation_due(len(batch)):
            self._create_segment(self._next_index)
        written = self._write(batch, len(records))
        return self.synced(written, fdatasync_error(written.fd))

    def write_unsynced(self, records: list[tuple[int, bytes]]) -> UnsyncedWrite | None:
        """The first half of `append` for a caller that syncs some other way (an AIO
        fdatasync): the batch written into the current segment, not yet synced, nor counted.
        The caller syncs `fd`, then calls `synced` before anything else touches this WAL. None
        (nothing written) when the batch needs a rotation first, whose own syncs `append` does.
        A failed write raises, as in `append`."""
        self._check_writable()
        if not records:
            return None
        batch = encode_records(records)
        if self._rotation_due(len(batch)):
            return None
        return self._write(batch, len(records))

    def synced(self, written: UnsyncedWrite, sync_error: OSError | None = None) -> int:
        """The second half: the sync of `written` returned (`sync_error` if it failed). Counts
        the records in and returns the index of the last; raises `sync_error`, poisoning the
        WAL, if the sync failed."""
        if sync_error is not None:
            # After a failed fdatasync the kernel may have dropped the dirty pages: what is on
            # disk is unknown, so no later append may be acknowledged on top of it.
            self._poison(f"fsync failed: fdatasync returned {sync_error}")
            raise sync_error
        self._size = written.end
        self._file_size = max(self._file_size, self._size)
        self._next_index += written.records
        pipeline = self._pipeline
        if pipeline is not None and not self._spare_wanted and self._size >= self._want_spare_at:
            self._spare_wanted = True
            pipeline.want()
        return self._next_index - 1

    def _write(self, batch: bytes, records: int) -> UnsyncedWrite:
        fd = self._check_writable()
        before = self._size
        try:
            _pwrite_all(fd, batch, before)
        except OSError as write_error:
            try:
                os.ftruncate(fd, before)
            except OSError as truncate_error:
                self._poison(f"write failed ({write_error}), then truncate failed")
                raise write_error from truncate_error
            self._file_size = before
            raise
        return UnsyncedWrite(fd, before + len(batch), records)

    def _rotation_due(self, batch_bytes: int) -> bool:
        if self._next_index == self._segments[-1][0]:
            return False  # the current segment is empty: a batch always fits there
        if self._size >= self.segment_bytes:
            return True
        if self._file_size > self._size and self._size + batch_bytes > self._file_size:
            return True  # the batch would grow a preallocated file
        # A plain segment (the first one, or one made while no spare was ready) is left for a
        # preallocated one as soon as there is one.
        pipeline = self._pipeline
        return pipeline is not None and pipeline.ready and self._file_size < self.segment_bytes

    def ready(self) -> None:
        """Do now a rotation that the next append would have to do first (e.g. one that failed
        for want of a descriptor). Raises the OSError if it still cannot be done."""
        self._check_writable()
        if self._rotation_due(0):
            self._create_segment(self._next_index)

    def _create_segment(self, first_index: int) -> None:
        path = self.directory / segment_name(first_index)
        header = encode_segment_header(first_index)
        spare = self._pipeline.take() if self._pipeline is not None else None
        self._spare_wanted = False
        if spare is None and self._pipeline is not None:
            spare = self._small_spare(path)
        if spare is not None:
            # A preallocated file: its header goes over its first zeros (the size stays).
            fd, file_size = spare.fd, spare.size
            try:
                _pwrite_all(fd, header, 0)
                os.fdatasync(fd)
                os.rename(spare.path, path)
            except OSError:
                os.close(fd)
                spare.path.unlink(missing_ok=True)
                raise
        else:
            temp = path.with_name(path.name + TEMP_SUFFIX)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            file_size = SEGMENT_HEADER_SIZE
            try:
                _pwrite_all(fd, header, 0)
                os.fsync(fd)
                os.rename(temp, path)
            except OSError:
                os.close(fd)
                temp.unlink(missing_ok=True)
                raise
        try:
            self._fsync_directory()
        except OSError as exc:
            os.close(fd)
            self._poison(f"directory fsync after creating {path.name} failed ({exc})")
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self._size = SEGMENT_HEADER_SIZE
        self._file_size = file_size
        self._segments.append((first_index, path))

    def _small_spare(self, path: Path) -> Spare | None:
        """No spare is ready: make a small zero-filled one now, on the append path (a new
        directory's first segment, or a rotation that outran the pipeline). None when the disk
        has no room for it: then a plain segment, which grows with each append, so a nearly
        full disk still takes every record that fits (refusing them for want of a megabyte of
        zeros would make the disk full early)."""
        try:
            return make_spare(path.with_name(path.name + TEMP_SUFFIX), self._small_segment)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                return None
            assert self._pipeline is not None
            # No descriptor now (EMFILE): the pipeline keeps trying to make a spare, whose
            # descriptor the next attempt will find already open.
            self._spare_wanted = True
            self._pipeline.want()
            raise

    def _fsync_directory(self) -> None:
        if self._dir_fd is None:
            raise RuntimeError("WAL is not open")
        os.fsync(self._dir_fd)

    # -- snapshots ---------------------------------------------------------------------------

    def write_snapshot(self, index: int, data: bytes) -> None:
        """Durably store the state after all records < index, then delete the segments and
        snapshots it makes unnecessary."""
        self._check_snapshot_index(index)
        if index == self._next_index and self._segments[-1][0] < index:
            self._create_segment(index)
        # Nothing is deleted until the rename is durable: until then the old files are recovery.
        write_snapshot_file(self.snapshot_path(index), encode_snapshot_header(index, data), data)
        self.drop_before(index)

    def snapshot_path(self, index: int) -> Path:
        """Where the snapshot of the state after all records < index goes. A caller may write it
        (write_snapshot_file) in another thread while appends go on, then call drop_before."""
        return self.directory / snapshot_name(index)

    def drop_before(self, index: int) -> None:
        """After the snapshot at `index` is durable: replay starts there from now on. One
        generation before it is kept: the previous snapshot and the segments from the one
        holding its index (before the first snapshot, the log from its start), so that a newest
        snapshot that later fails its CRC (a bad sector, a stray write) costs a longer replay,
        not the data dir: recovery falls back to the older one (`examine`). Everything older
        is deleted. The segment that holds record `index` stays, even when it also holds older
        records (replay skips those)."""
        self._check_snapshot_index(index)
        if not self.snapshot_path(index).is_file():
            raise ValueError(f"no snapshot file for index {index} in {self.directory}")
        kept = self._base
        self._base = index
        self._delete_older(kept, index, keep_snapshot=kept)
        self._fsync_directory()

    def drop_kept(self) -> int:
        """Delete the generation drop_before keeps behind the snapshot in use; the number of
        files deleted. For a full disk: the log's appends and the next snapshot need that room
        more than a snapshot the disk might damage needs a fallback."""
        self._check_writable()
        deleted = self._delete_older(self._base, self._base, keep_snapshot=None)
        if deleted:
            self._fsync_directory()
        return deleted

    def _delete_older(self, record: int, below: int, *, keep_snapshot: int | None) -> int:
        """Delete the segments before the one that holds `record` and the snapshots below
        `below` but `keep_snapshot`; the number of files deleted. By their names, not by
        self._segments: the segments recovery left for the generation it kept are not live."""
        on_disk = _list_indexed(self.directory, SEGMENT_SUFFIX)
        holding = _holding(on_disk, record)
        first_kept = on_disk[holding][0] if holding is not None else 0
        old = [path for first, path in on_disk if first < first_kept]
        old += [
            path
            for index, path in _list_indexed(self.directory, SNAPSHOT_SUFFIX)
            if index < below and index != keep_snapshot
        ]
        for path in old:
            path.unlink(missing_ok=True)
        self._segments = [(first, path) for first, path in self._segments if first >= first_kept]
        return len(old)

    def _check_snapshot_index(self, index: int) -> None:
        self._check_writable()
        if not self._base <= index <= self._next_index:
            raise ValueError(
                f"snapshot index {index} outside [{self._base}, {self._next_index}] of this WAL"
            )

    def close(self) -> None:
        # Closing must also work on a WAL poisoned by a broken descriptor, so errors are dropped:
        # nothing here affects durability (every acknowledged batch was already synced).
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None
        for fd in (self._fd, self._dir_fd, self._lock_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = None
        self._dir_fd = None
        self._lock_fd = None


def _read_records_from(path: Path, first: int, base: int, end: int) -> tuple[bytes, int, int]:
    """(data, offset in it, index of the record there) for replaying a segment from record
    `base` up to byte `end`. The records before `base` are inside the snapshot, and open()
    has validated them: they are stepped over by their headers alone, never read. The segment
    a snapshot lands in keeps everything written before it, up to a whole segment (64 MiB)
    that replay used to read, check and copy again for nothing."""
    fd = os.open(path, os.O_RDONLY)
    try:
        offset, index = SEGMENT_HEADER_SIZE, first
        while index < base and offset < end:
            head = os.pread(fd, RECORD_HEADER_SIZE, offset)
            if len(head) != RECORD_HEADER_SIZE:
                raise WalCorruption(path, offset, "segment shorter than its valid records")
            offset += RECORD_HEADER_SIZE + RECORD_HEADER.unpack(head)[0]
            index += 1
        if offset > end:
            raise WalCorruption(path, offset, f"a record runs past the valid end {end}")
        data = os.pread(fd, end - offset, offset)
    finally:
        os.close(fd)
    if len(data) != end - offset:
        raise WalCorruption(path, offset + len(data), f"segment shorter than its {end} valid bytes")
    return data, 0, index


def _read_prefix(path: Path, end: int | None) -> bytes:
    """The first `end` bytes of a file (all of it up to its last non-zero byte when None)."""
    if end is None:
        return read_written(path)[0]
    with path.open("rb") as f:
        data = f.read(end)
    if len(data) != end:
        raise WalCorruption(path, len(data), f"segment shorter than its {end} valid bytes")
    return data
