"""Preallocated WAL segments (issue 20) and what recovery does at a segment's end (issue 15 #10),
on real files: segments made ahead of need at full size, appends that never change a file's
size, zeros told apart from torn and damaged records, dropped bytes kept beside the segment,
a rotation under descriptor exhaustion (issue 14), and private file modes."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from jq_tool.cli.wal_inspect import register
from jq_tool.core.segment_pipeline import SPARE_NAME
from jq_tool.core.wal import RECORD_COMMAND, WAL, Recovery
from jq_tool.core.wal_format import RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE, segment_name

SEGMENT = 64 << 10


def body(index: int, size: int = 300) -> bytes:
    return (b"rec-%d|" % index).ljust(size, b"#")


def open_wal(directory: Path, **kwargs: object) -> tuple[WAL, Recovery]:
    wal = WAL(directory, segment_bytes=SEGMENT, preallocate=True, **kwargs)  # type: ignore[arg-type]
    return wal, wal.open()


def replayed(directory: Path) -> tuple[Recovery, list[tuple[int, int, bytes]]]:
    wal, recovery = open_wal(directory)
    try:
        return recovery, list(wal.replay())
    finally:
        wal.close()


def wait_for_spare(wal: WAL, timeout: float = 10.0) -> Path:
    """Wait until the WAL's pipeline holds a ready (zero-filled, synced) next segment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if wal._pipeline is not None and wal._pipeline.ready:
            return wal.directory / SPARE_NAME
        time.sleep(0.01)
    raise AssertionError("no preallocated segment appeared")


def wal_segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wal"))


def test_segments_are_made_ahead_at_full_size_and_appends_never_grow_them(tmp_path: Path) -> None:
    wal, _ = open_wal(tmp_path)
    index = 0
    # A new directory starts with a small zero-filled segment (a quarter of a segment, at most
    # 1 MiB) that appends do not grow either; the spare is asked for once it holds half.
    first = tmp_path / segment_name(0)
    assert first.stat().st_size == SEGMENT // 4 and not any(first.read_bytes()[4096:])
    while wal._size < SEGMENT // 8:
        wal.append([(RECORD_COMMAND, body(index))])
        index += 1
    assert first.stat().st_size == SEGMENT // 4
    spare = wait_for_spare(wal)
    assert stat.S_IMODE(spare.stat().st_mode) == 0o600
    assert not any(spare.read_bytes())
    # The next append leaves the plain segment for the preallocated one.
    wal.append([(RECORD_COMMAND, body(index))])
    index += 1
    current = wal_segments(tmp_path)[-1]
    assert current.name == segment_name(index - 1) and current.stat().st_size == SEGMENT
    grew = []
    for _ in range(3 * SEGMENT // 300):
        before = {p.name: p.stat().st_size for p in wal_segments(tmp_path)}
        wal.append([(RECORD_COMMAND, body(index))])
        index += 1
        for path in wal_segments(tmp_path):
            if path.name in before and path.stat().st_size != before[path.name]:
                grew.append(path.name)
        if wal._size >= SEGMENT // 2:
            wait_for_spare(wal)  # the test outruns the pipeline's thread otherwise
    wal.close()
    assert grew == []  # every append overwrote zeros; no file changed size
    sizes = [p.stat().st_size for p in wal_segments(tmp_path)]
    assert sizes[1:] == [SEGMENT] * (len(sizes) - 1) and len(sizes) >= 4
    assert not (tmp_path / SPARE_NAME).exists()  # close() deletes the spare
    recovery, records = replayed(tmp_path)
    assert recovery.truncated is None and recovery.next_index == index
    assert records == [(i, RECORD_COMMAND, body(i)) for i in range(index)]


def test_zeros_after_the_last_record_are_unwritten_space_and_stay(tmp_path: Path) -> None:
    # Records whose bodies end in zero bytes, or are all zero, round-trip: the reader that
    # skips a preallocated segment's zeros must not cut them off.
    wal, _ = open_wal(tmp_path)
    bodies = [b"x" + bytes(700), bytes(2000), b"ends in a zero\x00", b"plain"]
    for data in bodies:
        wal.append([(RECORD_COMMAND, data)])
    start = wal.next_index
    index = until_preallocated(wal, tmp_path)
    wal.append([(RECORD_COMMAND, bytes(300))])  # in a preallocated segment
    wal.close()
    expected = [*bodies, *[body(i) for i in range(start, index)], bytes(300)]
    for _ in range(2):  # and again: recovery changed nothing
        recovery, records = replayed(tmp_path)
        assert recovery.truncated is None and not recovery.damaged
        assert [r[2] for r in records] == expected
        assert wal_segments(tmp_path)[-1].stat().st_size == SEGMENT
        assert not list(tmp_path.glob("*.broken"))


def until_preallocated(wal: WAL, directory: Path) -> int:
    """Append 300-byte records until the WAL writes into a preallocated segment (a fresh one
    starts plain); returns the next index. Bounded: a plain segment is left at half full."""
    index = wal.next_index
    for _ in range(2 * SEGMENT // 300):
        if wal._file_size == SEGMENT:
            return index
        if wal._size >= SEGMENT // 2:
            wait_for_spare(wal)
        wal.append([(RECORD_COMMAND, body(index))])
        index += 1
    raise AssertionError("never reached a preallocated segment")


def _preallocated_with_records(directory: Path, count: int) -> tuple[Path, int]:
    """A WAL whose last segment is preallocated and holds `count` records; returns the
    segment and the offset where its records end."""
    wal, _ = open_wal(directory)
    index = until_preallocated(wal, directory)
    for offset in range(count - 1):
        wal.append([(RECORD_COMMAND, body(index + offset))])
    end = wal._size
    wal.close()
    path = wal_segments(directory)[-1]
    assert path.stat().st_size == SEGMENT
    return path, end


def test_a_torn_record_in_a_preallocated_segment_is_dropped_and_kept(tmp_path: Path) -> None:
    path, end = _preallocated_with_records(tmp_path, 3)
    _, before = replayed(tmp_path)
    # A write cut short by a crash: a 1000-byte record of which only the sectors up to the
    # next sector boundary reached the disk; the rest of it is still the preallocated zeros.
    boundary = (end // 512 + 1) * 512
    torn = (1000).to_bytes(4, "little") + bytes.fromhex("11223344") + b"\x01"
    torn = torn.ljust(boundary - end, b"z")
    with path.open("r+b") as f:
        f.seek(end)
        f.write(torn)
    recovery, records = replayed(tmp_path)
    assert records == before and not recovery.damaged
    assert recovery.truncated is not None
    message = recovery.truncated
    assert f"torn tail at offset {end}" in message and "0 complete records" in message
    kept = path.with_name(f"{path.name}.{end}.broken")
    assert str(kept) in message and kept.read_bytes() == torn
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    # Only what was written is called dropped; the zeros after it were never data.
    assert f"dropped {len(torn)} bytes" in message
    assert f"the {SEGMENT - boundary} zero bytes after them were unwritten space" in message
    # The log goes on where the torn record was.
    wal, again = open_wal(tmp_path)
    next_index = len(before)
    assert again.truncated is None and wal.append([(RECORD_COMMAND, b"after")]) == next_index
    wal.close()
    assert replayed(tmp_path)[1][-1] == (next_index, RECORD_COMMAND, b"after")


def test_a_damaged_last_record_is_reported_as_damage_and_kept(tmp_path: Path) -> None:
    path, end = _preallocated_with_records(tmp_path, 3)
    last = end - (RECORD_HEADER_SIZE + 300)
    with path.open("r+b") as f:  # one flipped bit in the last acknowledged record's body
        f.seek(last + RECORD_HEADER_SIZE + 100)
        byte = f.read(1)[0]
        f.seek(last + RECORD_HEADER_SIZE + 100)
        f.write(bytes([byte ^ 0x04]))
    _, before = open_plain_replay(tmp_path, last)
    recovery, records = replayed(tmp_path)
    assert records == before and recovery.damaged
    assert recovery.truncated is not None
    assert "damaged tail" in recovery.truncated and "1 complete record:" in recovery.truncated
    assert "failed its CRC" in recovery.truncated
    kept = path.with_name(f"{path.name}.{last}.broken")
    assert kept.read_bytes()[RECORD_HEADER_SIZE:].startswith(b"rec-%d|" % len(before))

    # `jq wal-inspect` lists what an earlier recovery kept.
    app = typer.Typer()
    register(app)

    @app.callback()
    def root() -> None:
        pass

    result = CliRunner().invoke(app, ["wal-inspect", "--json", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f'"name": "{kept.name}"' in result.stdout


def test_wal_inspect_tells_a_damaged_tail_from_a_torn_one(tmp_path: Path) -> None:
    path, end = _preallocated_with_records(tmp_path, 2)
    with path.open("r+b") as f:
        f.seek(end - 5)
        f.write(b"\xff")
    app = typer.Typer()
    register(app)

    @app.callback()
    def root() -> None:
        pass

    result = CliRunner().invoke(app, ["wal-inspect", "--json", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert '"damaged": true' in result.stdout and '"complete_records": 1' in result.stdout
    assert f'"kept_in": "{path.name}.{end - RECORD_HEADER_SIZE - 300}.broken"' in result.stdout
    assert not list(tmp_path.glob("*.broken"))  # inspecting writes nothing


@contextlib.contextmanager
def descriptors_exhausted(spare: int = 0) -> Iterator[list[int]]:
    """Lower this process's soft descriptor limit to what is open now plus a few, and fill the
    table until open() fails with EMFILE; `spare` descriptors are then given back. Restores
    everything after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 64, hard))
    filler: list[int] = []
    try:
        with pytest.raises(OSError) as caught:  # bounded: the limit is 64 above what was open
            for _ in range(200):
                filler.append(os.open("/dev/null", os.O_RDONLY))
        assert caught.value.errno == errno.EMFILE
        for _ in range(spare):
            os.close(filler.pop())
        yield filler
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_plain_replay(directory: Path, end: int) -> tuple[None, list[tuple[int, int, bytes]]]:
    """The records before offset `end` of the last segment, read without recovering."""
    from jq_tool.core.wal_format import iter_records

    paths = wal_segments(directory)
    records: list[tuple[int, int, bytes]] = []
    for path in paths:
        first = int(path.name.split(".")[0])
        data = path.read_bytes()
        stop = end if path == paths[-1] else len(data.rstrip(b"\x00"))
        for offset, (record_type, data_body) in enumerate(
            iter_records(data, SEGMENT_HEADER_SIZE, stop)
        ):
            records.append((first + offset, record_type, data_body))
    return None, records


def _append_until_rotation(wal: WAL, start: int) -> int:
    """Append records until the next one needs a new segment; returns the next index."""
    index = start
    for _ in range(1000):
        if wal._rotation_due(RECORD_HEADER_SIZE + 300):
            return index
        wal.append([(RECORD_COMMAND, body(index))])
        index += 1
    raise AssertionError("no rotation came due")


def test_emfile_at_rotation_refuses_the_write_and_the_wal_goes_on(tmp_path: Path) -> None:
    wal = WAL(tmp_path, segment_bytes=8 << 10)  # plain segments: a rotation opens a file
    wal.open()
    index = _append_until_rotation(wal, 0)
    with descriptors_exhausted():
        with pytest.raises(OSError) as caught:
            wal.append([(RECORD_COMMAND, body(index))] * 30)
        assert caught.value.errno == errno.EMFILE
        assert wal.failure is None and wal.next_index == index  # not poisoned, nothing written
        with pytest.raises(OSError):
            wal.ready()  # the rotation is still due and still cannot be done
    wal.ready()  # descriptors are back: the rotation happens without a write
    assert wal_segments(tmp_path)[-1].name == segment_name(index)
    assert wal.append([(RECORD_COMMAND, body(index))]) == index
    wal.close()
    reopened = WAL(tmp_path, segment_bytes=8 << 10)
    reopened.open()
    records = list(reopened.replay())
    reopened.close()
    assert records == [(i, RECORD_COMMAND, body(i)) for i in range(index + 1)]


def test_a_preallocated_segment_lets_a_rotation_through_emfile(tmp_path: Path) -> None:
    wal, _ = open_wal(tmp_path)
    index = until_preallocated(wal, tmp_path)
    index = _append_until_rotation(wal, index)  # the preallocated segment is full
    wait_for_spare(wal)
    with descriptors_exhausted():
        # The next segment's file and the directory are already open: no open() is needed.
        assert wal.append([(RECORD_COMMAND, body(index))]) == index
        assert wal_segments(tmp_path)[-1].name == segment_name(index)
    wal.close()
    assert replayed(tmp_path)[1][-1] == (index, RECORD_COMMAND, body(index))


def test_files_are_private(tmp_path: Path) -> None:
    previous = os.umask(0o002)  # a permissive umask: the WAL must not rely on the caller's
    try:
        directory = tmp_path / "new" / "wal"
        wal, _ = open_wal(directory)
        until_preallocated(wal, directory)
        wal.append([(RECORD_COMMAND, body(0))] * 120)
        wait_for_spare(wal)
        wal.write_snapshot(wal.next_index - 1, b"state")  # no rotation: the spare stays
        names = {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}
        wal.close()
    finally:
        os.umask(previous)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert {"LOCK", SPARE_NAME} <= set(names)
    assert any(n.endswith(".snap") for n in names) and any(n.endswith(".wal") for n in names)
    assert all(mode == 0o600 for mode in names.values()), names


def _records_then_zeros(directory: Path, bodies: list[bytes], size: int) -> Path:
    """A plain WAL segment holding `bodies`, then extended with zeros to `size` bytes (as a
    preallocated segment is); returns it."""
    wal = WAL(directory)
    wal.open()
    for data in bodies:
        wal.append([(RECORD_COMMAND, data)])
    wal.close()
    [path] = wal_segments(directory)
    os.truncate(path, size)
    return path


def test_recovery_reads_records_and_a_window_of_zeros_not_the_whole_segment(
    tmp_path: Path,
) -> None:
    from jq_tool.core.wal_format import ZERO_WINDOW, read_written, scan_file

    bodies = [body(i, 1000) for i in range(1000)]  # ~1 MiB of records in a 64 MiB file
    path = _records_then_zeros(tmp_path, bodies, 64 << 20)
    end = path.stat().st_size - (64 << 20) + len(read_written(path)[0])
    # Garbage far past the window is beyond what an unacknowledged batch leaves: not read.
    with path.open("r+b") as f:
        f.seek(40 << 20)
        f.write(b"garbage")
    scan = scan_file(path, search_after_error=True)
    assert scan.error_offset is None and scan.records == 1000 and not scan.more
    recovery, records = replayed(tmp_path)
    assert recovery.truncated is None and len(records) == 1000
    # Within the window after the last record it is seen, and judged (here a torn tail).
    with path.open("r+b") as f:
        f.seek(end + ZERO_WINDOW // 2)
        f.write(b"torn")
    recovery, records = replayed(tmp_path)
    assert recovery.truncated is not None and len(records) == 1000


def test_records_past_the_first_read_and_zero_filled_bodies_are_read_whole(
    tmp_path: Path,
) -> None:
    from jq_tool.core.wal_format import scan_file

    # 6 MiB of records (the first read is 4 MiB), one of them 2 MiB of zeros that straddles
    # the first read's end: a run of zeros inside a record is never taken for the log's end.
    bodies = [body(i, 100_000) for i in range(40)] + [bytes(2 << 20)]
    bodies += [body(i, 100_000) for i in range(20)]
    path = _records_then_zeros(tmp_path, bodies, 16 << 20)
    scan = scan_file(path, search_after_error=True)
    assert scan.error_offset is None and scan.records == len(bodies)
    recovery, records = replayed(tmp_path)
    assert recovery.truncated is None and [r[2] for r in records] == bodies


def test_damage_past_the_first_read_is_judged_on_the_whole_file(tmp_path: Path) -> None:
    from jq_tool.core.wal import WalCorruption

    bodies = [body(i, 100_000) for i in range(60)]  # ~6 MiB
    path = _records_then_zeros(tmp_path, bodies, 16 << 20)
    record = RECORD_HEADER_SIZE + 100_000
    with path.open("r+b") as f:  # a flipped byte in record 50 (past the first 4 MiB read)
        f.seek(SEGMENT_HEADER_SIZE + 50 * record + 500)
        byte = f.read(1)[0]
        f.seek(-1, 1)
        f.write(bytes([byte ^ 1]))
    try:
        replayed(tmp_path)
    except WalCorruption as exc:
        assert exc.offset == SEGMENT_HEADER_SIZE + 50 * record
        assert "a valid record follows" in exc.reason
    else:
        raise AssertionError("damage before the last record was not refused")


def test_a_spare_is_synced_a_megabyte_at_a_time(tmp_path: Path, monkeypatch: Any) -> None:
    """make_spare syncs its zeros SYNC_EVERY bytes at a time, so a WAL append's fdatasync (whose
    device flush waits for every write the device holds) never waits behind a whole segment of
    zeros handed over at once; the file is the same: the size asked for, all zeros, synced."""
    import jq_tool.core.segment_pipeline as pipeline

    synced: list[int] = []
    real_fdatasync = os.fdatasync

    def counting_fdatasync(fd: int) -> None:
        synced.append(os.fstat(fd).st_size)
        real_fdatasync(fd)

    monkeypatch.setattr(pipeline.os, "fdatasync", counting_fdatasync)
    size = 3 * pipeline.SYNC_EVERY + 5
    spare = pipeline.make_spare(tmp_path / "next-segment.tmp", size)
    os.close(spare.fd)
    assert synced == [pipeline.SYNC_EVERY, 2 * pipeline.SYNC_EVERY, 3 * pipeline.SYNC_EVERY]
    data = spare.path.read_bytes()
    assert len(data) == size and data.count(0) == size
    synced.clear()
    small = pipeline.make_spare(tmp_path / "small.tmp", 64 << 10)  # one step: its final fsync
    os.close(small.fd)
    assert synced == [] and small.path.stat().st_size == 64 << 10
