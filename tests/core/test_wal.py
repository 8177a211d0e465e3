"""The local WAL on real files: round trips, rotation, snapshots, recovery from torn tails at every
byte, bit flips, corruption refusal, a real full filesystem, and `jq wal-inspect`."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from jq_tool.cli.wal_inspect import register
from jq_tool.core import wal_format
from jq_tool.core.model import Ack, Expire, NewJob, Submit, decode_command, encode_command
from jq_tool.core.segment_pipeline import make_spare
from jq_tool.core.wal import (
    RECORD_COMMAND,
    WAL,
    Recovery,
    WalCorruption,
    WalFailed,
    WalLocked,
    examine,
    write_snapshot_file,
)
from jq_tool.core.wal_format import (
    MAX_RECORD_BODY,
    RECORD_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    encode_snapshot_header,
    read_snapshot,
    segment_name,
    snapshot_name,
)


def body_for(index: int, size: int = 40) -> bytes:
    return (b"rec-%d|" % index).ljust(size, b"#")


def open_wal(directory: Path, **kwargs: int) -> tuple[WAL, Recovery]:
    wal = WAL(directory, **kwargs)
    return wal, wal.open()


def reopen_records(directory: Path, **kwargs: int) -> tuple[Recovery, list[tuple[int, int, bytes]]]:
    wal, recovery = open_wal(directory, **kwargs)
    try:
        return recovery, list(wal.replay())
    finally:
        wal.close()


def write_records(directory: Path, count: int, *, size: int = 40, **kwargs: int) -> None:
    wal, _ = open_wal(directory, **kwargs)
    for index in range(count):
        assert wal.append([(RECORD_COMMAND, body_for(index, size))]) == index
    wal.close()


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wal"))


# -- round trip, rotation, snapshots -------------------------------------------------------------


def test_fresh_directory_is_created_and_empty(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "wal"
    recovery, records = reopen_records(directory)
    assert recovery == Recovery(snapshot_index=0, snapshot=None, truncated=None, next_index=0)
    assert records == []
    assert [p.name for p in segments(directory)] == [segment_name(0)]


def test_round_trip_batches_in_order(tmp_path: Path) -> None:
    commands = [
        Submit(now=1, jobs=[NewJob(id="j1", payload="x"), NewJob(id="j2", priority=5)]),
        Ack(now=2, job_id="j1", lease_id="l1", result="ok"),
        Expire(now=3),
    ]
    wal, recovery = open_wal(tmp_path)
    assert recovery.next_index == 0
    assert wal.append([(RECORD_COMMAND, encode_command(c)) for c in commands]) == 2
    assert wal.append([(7, b""), (RECORD_COMMAND, encode_command(Expire(now=4)))]) == 4
    assert wal.append([]) == 4
    assert wal.next_index == 5
    wal.close()

    recovery, records = reopen_records(tmp_path)
    assert recovery.next_index == 5 and recovery.truncated is None
    assert [(i, t) for i, t, _ in records] == [(0, 1), (1, 1), (2, 1), (3, 7), (4, 1)]
    assert [decode_command(b) for i, t, b in records if t == RECORD_COMMAND] == [
        *commands,
        Expire(now=4),
    ]
    assert records[3][2] == b""


def test_rotation_names_segments_by_first_index_and_replays_across_them(tmp_path: Path) -> None:
    wal, _ = open_wal(tmp_path, segment_bytes=300)
    for start in range(0, 60, 3):
        batch = [(RECORD_COMMAND, body_for(i)) for i in range(start, start + 3)]
        assert wal.append(batch) == start + 2
    wal.close()
    names = [p.name for p in segments(tmp_path)]
    assert len(names) > 5
    firsts = [int(n.split(".")[0]) for n in names]
    assert firsts[0] == 0 and firsts == sorted(firsts)
    for path in segments(tmp_path)[:-1]:
        assert path.stat().st_size >= 300

    recovery, records = reopen_records(tmp_path, segment_bytes=300)
    assert recovery.next_index == 60
    assert records == [(i, RECORD_COMMAND, body_for(i)) for i in range(60)]


def firsts(directory: Path) -> list[int]:
    return [int(p.name[: -len(".wal")]) for p in segments(directory)]


def test_a_snapshot_keeps_the_one_before_it_and_the_records_since_and_deletes_the_rest(
    tmp_path: Path,
) -> None:
    wal, _ = open_wal(tmp_path, segment_bytes=200)
    for i in range(20):
        wal.append([(RECORD_COMMAND, body_for(i))])
    wal.write_snapshot(12, b"state-before-12")
    # The first snapshot: the log from its start is the generation kept.
    assert [p.name for p in tmp_path.glob("*.snap")] == [snapshot_name(12)]
    assert firsts(tmp_path)[0] == 0
    for i in range(20, 30):
        wal.append([(RECORD_COMMAND, body_for(i))])
    wal.write_snapshot(30, b"state-before-30")
    wal.append([(RECORD_COMMAND, body_for(30))])
    # Kept: snapshot 12 and the segments from the one holding record 12.
    assert sorted(p.name for p in tmp_path.glob("*.snap")) == [snapshot_name(12), snapshot_name(30)]
    kept = firsts(tmp_path)
    assert kept[0] <= 12 < kept[1] and kept[-1] == 30
    wal.write_snapshot(31, b"state-before-31")
    wal.close()
    # A third: 12 and everything it needed go; 30 is the one kept now.
    assert sorted(p.name for p in tmp_path.glob("*.snap")) == [snapshot_name(30), snapshot_name(31)]
    assert firsts(tmp_path) == [30, 31]  # the snapshot at the end of the log started 31
    recovery, records = reopen_records(tmp_path, segment_bytes=200)
    assert recovery.snapshot_index == 31 and recovery.snapshot == b"state-before-31"
    assert recovery.next_index == 31 and records == []


def test_a_flipped_bit_in_the_newest_snapshot_costs_a_longer_replay_not_the_data(
    tmp_path: Path,
) -> None:
    wal, _ = open_wal(tmp_path, segment_bytes=300)
    for i in range(10):
        wal.append([(RECORD_COMMAND, body_for(i))])
    wal.write_snapshot(10, b"state-before-10")
    for i in range(10, 25):
        wal.append([(RECORD_COMMAND, body_for(i))])
    wal.write_snapshot(20, b"state-before-20")
    for i in range(25, 28):
        wal.append([(RECORD_COMMAND, body_for(i))])
    wal.close()
    # A start with a sound newest snapshot reads only it and what follows, and keeps the rest.
    before = sorted(p.name for p in tmp_path.iterdir())
    recovery, records = reopen_records(tmp_path, segment_bytes=300)
    assert recovery.snapshot_index == 20 and [i for i, _, _ in records] == list(range(20, 28))
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    report = examine(tmp_path)
    assert report.kept_snapshot == tmp_path / snapshot_name(10) and report.kept_segments

    newest = tmp_path / snapshot_name(20)
    flip(newest, len(newest.read_bytes()) // 2, 3)
    recovery, records = reopen_records(tmp_path, segment_bytes=300)
    assert (recovery.snapshot_index, recovery.snapshot) == (10, b"state-before-10")
    assert records == [(i, RECORD_COMMAND, body_for(i)) for i in range(10, 28)]

    # Writing on from the fallback: the next snapshot keeps 10's generation, drops the bad one.
    wal, _ = open_wal(tmp_path, segment_bytes=300)
    wal.append([(RECORD_COMMAND, body_for(28))])
    wal.write_snapshot(29, b"state-before-29")
    wal.close()
    assert sorted(p.name for p in tmp_path.glob("*.snap")) == [snapshot_name(10), snapshot_name(29)]
    recovery, records = reopen_records(tmp_path, segment_bytes=300)
    assert recovery.snapshot_index == 29 and records == []


def test_drop_kept_gives_the_fallback_up_and_the_next_snapshot_keeps_one_again(
    tmp_path: Path,
) -> None:
    wal, _ = open_wal(tmp_path, segment_bytes=200)
    for i in range(20):
        wal.append([(RECORD_COMMAND, body_for(i))])
    wal.write_snapshot(8, b"before 8")
    wal.write_snapshot(16, b"before 16")
    kept = firsts(tmp_path)
    assert kept[0] <= 8 and len(kept) > 1
    assert wal.drop_kept() > 0
    assert [p.name for p in tmp_path.glob("*.snap")] == [snapshot_name(16)]
    left = firsts(tmp_path)
    assert left[0] <= 16 and (len(left) == 1 or left[1] > 16)
    assert wal.drop_kept() == 0  # nothing left to give up
    wal.append([(RECORD_COMMAND, body_for(20))])
    wal.write_snapshot(21, b"before 21")
    wal.close()
    assert sorted(p.name for p in tmp_path.glob("*.snap")) == [snapshot_name(16), snapshot_name(21)]
    recovery, records = reopen_records(tmp_path, segment_bytes=200)
    assert recovery.snapshot_index == 21 and records == []


def test_snapshot_in_the_middle_of_a_segment_replays_only_what_follows(tmp_path: Path) -> None:
    wal, _ = open_wal(tmp_path)
    wal.append([(RECORD_COMMAND, body_for(i)) for i in range(10)])
    wal.write_snapshot(4, b"s4")
    wal.close()
    recovery, records = reopen_records(tmp_path)
    assert (recovery.snapshot_index, recovery.snapshot, recovery.next_index) == (4, b"s4", 10)
    assert [i for i, _, _ in records] == list(range(4, 10))
    assert all(body == body_for(i) for i, _, body in records)


def test_replay_steps_over_the_records_a_snapshot_covers_without_reading_them(
    tmp_path: Path,
) -> None:
    # Written in one segment with the snapshot in its middle, as an engine's snapshots land.
    wal, _ = open_wal(tmp_path)
    wal.append([(RECORD_COMMAND, body_for(i, size=1000)) for i in range(10)])
    wal.write_snapshot(6, b"s6")
    wal.close()
    (path,) = segments(tmp_path)
    wal, _ = open_wal(tmp_path)  # validates every record, the covered ones too
    try:
        # Then a covered record's body changes: replay never reads it (it used to read and
        # check the whole segment again), and what follows the snapshot comes out whole.
        with path.open("r+b") as f:
            f.seek(SEGMENT_HEADER_SIZE + 2 * (RECORD_HEADER_SIZE + 1000) + RECORD_HEADER_SIZE)
            f.write(b"X" * 100)
        records = list(wal.replay())
    finally:
        wal.close()
    assert [i for i, _, _ in records] == [6, 7, 8, 9]
    assert all(body == body_for(i, size=1000) for i, _, body in records)


def _mapped_paths() -> set[str]:
    with open("/proc/self/maps") as maps:
        return {line.split(maxsplit=5)[5].strip() for line in maps if len(line.split()) == 6}


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/self/maps")
def test_a_snapshot_is_read_mapped_and_unmapped_once_its_view_goes(tmp_path: Path) -> None:
    """Recovery decodes the snapshot file's pages in place (no copy of a 100 MB file at start):
    the view stays correct when a newer snapshot replaces the file by rename meanwhile, and the
    mapping goes with the last view of it, so a restored server does not keep the file mapped."""
    wal, _ = open_wal(tmp_path)
    wal.append([(RECORD_COMMAND, body_for(i)) for i in range(10)])
    state = os.urandom(100_000)
    wal.write_snapshot(4, state)
    wal.close()
    path = tmp_path / snapshot_name(4)
    loaded = read_snapshot(path)
    assert not isinstance(loaded, str)
    index, view = loaded
    assert (index, view.readonly, view.nbytes) == (4, True, len(state))
    assert str(path) in _mapped_paths()
    # Replaced by rename, as every snapshot file is: the mapped view still reads the old file.
    write_snapshot_file(path, encode_snapshot_header(4, b"newer"), b"newer")
    assert view == state
    del view, loaded
    assert not any(mapped.startswith(str(path)) for mapped in _mapped_paths())
    assert read_snapshot(path) == (4, b"newer")


def test_a_snapshot_that_cannot_be_mapped_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system without mmap (ENODEV, as some FUSE ones answer) gets the file read."""
    wal, _ = open_wal(tmp_path)
    wal.append([(RECORD_COMMAND, body_for(i)) for i in range(10)])
    wal.write_snapshot(4, b"s4")
    wal.close()

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))

    monkeypatch.setattr(wal_format.mmap, "mmap", refuse)
    assert read_snapshot(tmp_path / snapshot_name(4)) == (4, b"s4")
    recovery, records = reopen_records(tmp_path)
    assert (recovery.snapshot_index, recovery.snapshot) == (4, b"s4")


def test_snapshot_index_outside_the_log_is_refused(tmp_path: Path) -> None:
    wal, _ = open_wal(tmp_path)
    wal.append([(RECORD_COMMAND, b"a")])
    with pytest.raises(ValueError, match="outside"):
        wal.write_snapshot(5, b"x")
    wal.write_snapshot(1, b"x")
    with pytest.raises(ValueError, match="outside"):
        wal.write_snapshot(0, b"x")
    wal.close()


def test_large_records_round_trip_and_oversize_is_refused(tmp_path: Path) -> None:
    big = os.urandom(1 << 20) + b"tail"
    bigger = bytes(range(256)) * (3 << 12)  # 3 MiB
    wal, _ = open_wal(tmp_path, segment_bytes=2 << 20)
    wal.append([(RECORD_COMMAND, big), (RECORD_COMMAND, b"small")])
    wal.append([(RECORD_COMMAND, bigger)])
    size_before = sum(p.stat().st_size for p in segments(tmp_path))
    with pytest.raises(ValueError, match="exceeds"):
        wal.append([(RECORD_COMMAND, b"ok"), (RECORD_COMMAND, bytes(MAX_RECORD_BODY + 1))])
    with pytest.raises(ValueError, match="not a byte"):
        wal.append([(256, b"x")])
    assert sum(p.stat().st_size for p in segments(tmp_path)) == size_before
    assert wal.next_index == 3
    wal.close()
    _, records = reopen_records(tmp_path)
    assert records == [(0, 1, big), (1, 1, b"small"), (2, 1, bigger)]


def test_a_torn_tail_of_a_large_record_is_truncated(tmp_path: Path) -> None:
    wal, _ = open_wal(tmp_path)
    wal.append([(RECORD_COMMAND, b"first")])
    wal.append([(RECORD_COMMAND, os.urandom(1 << 20))])
    wal.close()
    path = segments(tmp_path)[0]
    full = path.stat().st_size
    for cut in (full - 1, full - (1 << 19), SEGMENT_HEADER_SIZE + RECORD_HEADER_SIZE + 5 + 12):
        work = tmp_path / f"cut{cut}"
        work.mkdir()
        (work / path.name).write_bytes(path.read_bytes()[:cut])
        recovery, records = reopen_records(work)
        assert recovery.truncated is not None and recovery.next_index == 1
        assert records == [(0, 1, b"first")]


def test_segments_left_by_a_crash_after_a_snapshot_are_cleaned_at_open(tmp_path: Path) -> None:
    wal, _ = open_wal(tmp_path, segment_bytes=150)
    for i in range(5):
        wal.append([(RECORD_COMMAND, body_for(i))])
    wal.write_snapshot(5, b"five")  # the first: the log from its start is kept
    for i in range(5, 10):
        wal.append([(RECORD_COMMAND, body_for(i))])
    saved = {p.name: p.read_bytes() for p in segments(tmp_path)}
    wal.write_snapshot(10, b"ten")  # now 5's generation is kept, the older segments go
    wal.append([(RECORD_COMMAND, body_for(10))])
    wal.close()
    expected = [p.name for p in segments(tmp_path)]
    assert len(expected) < len(saved)
    # As if the process died after the snapshot's rename but before it deleted anything.
    for name, data in saved.items():
        (tmp_path / name).write_bytes(data)
    recovery, records = reopen_records(tmp_path, segment_bytes=150)
    assert (recovery.snapshot_index, recovery.snapshot, recovery.next_index) == (10, b"ten", 11)
    assert records == [(10, 1, body_for(10))]
    assert [p.name for p in segments(tmp_path)] == expected


def test_second_open_of_the_same_directory_is_refused(tmp_path: Path) -> None:
    wal, _ = open_wal(tmp_path)
    with pytest.raises(WalLocked):
        WAL(tmp_path).open()
    wal.close()
    other, _ = open_wal(tmp_path)
    other.close()


# -- torn tails at every byte --------------------------------------------------------------------


def test_cut_at_every_offset_of_the_last_record_recovers_the_prefix(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_records(source, 5, size=30)
    data = segments(source)[0].read_bytes()
    last_start = len(data) - (RECORD_HEADER_SIZE + 30)
    for cut in range(last_start, len(data)):
        work = tmp_path / f"cut-{cut}"
        work.mkdir()
        (work / segment_name(0)).write_bytes(data[:cut])
        recovery, records = reopen_records(work)
        assert records == [(i, 1, body_for(i, 30)) for i in range(4)], cut
        assert recovery.next_index == 4
        if cut == last_start:
            assert recovery.truncated is None  # ends exactly on a record boundary
        else:
            assert recovery.truncated is not None
            assert segment_name(0) in recovery.truncated
            assert f"offset {last_start}" in recovery.truncated
            assert f"dropped {cut - last_start} bytes" in recovery.truncated
        assert (work / segment_name(0)).stat().st_size == last_start
        # The log keeps working after the repair and the new record survives a reopen.
        wal, _ = open_wal(work)
        assert wal.append([(RECORD_COMMAND, b"after-repair")]) == 4
        wal.close()
        recovery, records = reopen_records(work)
        assert recovery.truncated is None and recovery.next_index == 5
        assert records[-1] == (4, 1, b"after-repair")
        shutil.rmtree(work)


def test_cut_inside_the_segment_header_recovers_an_empty_segment(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_records(source, 8, size=30, segment_bytes=100)
    paths = segments(source)
    assert len(paths) >= 3
    last = paths[-1]
    last_first = int(last.name.split(".")[0])
    for only_segment in (True, False):
        for cut in range(SEGMENT_HEADER_SIZE):
            work = tmp_path / f"hdr-{only_segment}-{cut}"
            if only_segment:
                work.mkdir()
                (work / segment_name(0)).write_bytes(paths[0].read_bytes()[:cut])
                expected_next = 0
            else:
                shutil.copytree(source, work)
                (work / last.name).write_bytes(last.read_bytes()[:cut])
                expected_next = last_first
            recovery, records = reopen_records(work, segment_bytes=100)
            assert recovery.next_index == expected_next
            assert [i for i, _, _ in records] == list(range(expected_next))
            assert recovery.truncated is not None
            wal, _ = open_wal(work, segment_bytes=100)
            assert wal.append([(RECORD_COMMAND, b"new")]) == expected_next
            wal.close()
            _, records = reopen_records(work, segment_bytes=100)
            assert records[-1] == (expected_next, 1, b"new")
            shutil.rmtree(work)


def test_a_zero_tail_is_unwritten_space_not_a_torn_tail(tmp_path: Path) -> None:
    # Issue 20: segments are preallocated with zeros, so zeros after the last record are where
    # the next append goes, not a torn write: nothing is reported, dropped or truncated.
    write_records(tmp_path, 3)
    path = segments(tmp_path)[0]
    size = path.stat().st_size
    with path.open("ab") as f:
        f.write(bytes(4096))
    recovery, records = reopen_records(tmp_path)
    assert recovery.truncated is None and not recovery.damaged
    assert len(records) == 3 and path.stat().st_size == size + 4096
    assert not list(tmp_path.glob("*.broken"))
    # The next record overwrites the zeros; the file keeps its size.
    wal, _ = open_wal(tmp_path)
    assert wal.append([(RECORD_COMMAND, b"into the zeros")]) == 3
    wal.close()
    recovery, records = reopen_records(tmp_path)
    assert recovery.truncated is None and records[-1] == (3, 1, b"into the zeros")
    assert path.stat().st_size == size + 4096


# -- bit flips and corruption --------------------------------------------------------------------


def flip(path: Path, position: int, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 1 << bit
    path.write_bytes(bytes(data))


def test_a_flipped_bit_at_any_position_is_never_accepted(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_records(source, 4, size=24)
    data = segments(source)[0].read_bytes()
    last_start = len(data) - (RECORD_HEADER_SIZE + 24)
    expected = [(i, 1, body_for(i, 24)) for i in range(4)]
    work = tmp_path / "work"
    for position in range(len(data)):
        for bit in (position % 8, 7 - position % 8):
            work.mkdir()
            (work / segment_name(0)).write_bytes(data)
            flip(work / segment_name(0), position, bit)
            if position < last_start:
                with pytest.raises(WalCorruption) as caught:
                    reopen_records(work)
                assert segment_name(0) in str(caught.value)
                assert (work / segment_name(0)).read_bytes() != data  # not repaired away
            else:
                recovery, records = reopen_records(work)
                assert recovery.truncated is not None, (position, bit)
                assert records == expected[:3]
            shutil.rmtree(work)


def test_corrupt_middle_record_names_file_and_offset(tmp_path: Path) -> None:
    write_records(tmp_path, 5, size=30)
    path = segments(tmp_path)[0]
    second = SEGMENT_HEADER_SIZE + (RECORD_HEADER_SIZE + 30)
    flip(path, second + RECORD_HEADER_SIZE + 3, 0)
    before = path.read_bytes()
    with pytest.raises(WalCorruption) as caught:
        WAL(tmp_path).open()
    error = caught.value
    assert error.path == path and error.offset == second
    assert str(path) in str(error) and f"offset {second}" in str(error)
    assert "crc" in error.reason
    assert path.read_bytes() == before
    # A refused open leaves the directory unlocked for the operator's tools.
    with pytest.raises(WalCorruption):
        WAL(tmp_path).open()


def test_damage_at_the_end_of_a_non_last_segment_is_corruption(tmp_path: Path) -> None:
    write_records(tmp_path, 12, size=30, segment_bytes=100)
    first = segments(tmp_path)[0]
    flip(first, first.stat().st_size - 1, 2)
    with pytest.raises(WalCorruption, match="not the last segment") as caught:
        WAL(tmp_path, segment_bytes=100).open()
    assert caught.value.path == first


def test_a_missing_middle_segment_is_a_gap(tmp_path: Path) -> None:
    write_records(tmp_path, 12, size=30, segment_bytes=100)
    paths = segments(tmp_path)
    assert len(paths) >= 3
    paths[1].unlink()
    with pytest.raises(WalCorruption, match="gap") as caught:
        WAL(tmp_path, segment_bytes=100).open()
    assert caught.value.path == paths[2]


def test_segment_header_that_disagrees_with_its_name_is_corruption(tmp_path: Path) -> None:
    write_records(tmp_path, 3)
    path = segments(tmp_path)[0]
    path.rename(tmp_path / segment_name(0).replace("0.wal", "5.wal"))
    with pytest.raises(WalCorruption):
        WAL(tmp_path).open()


def test_corrupt_newest_snapshot_falls_back_when_segments_remain(tmp_path: Path) -> None:
    wal, _ = open_wal(tmp_path)
    wal.append([(RECORD_COMMAND, body_for(i)) for i in range(10)])
    wal.write_snapshot(3, b"older")
    older = (tmp_path / snapshot_name(3)).read_bytes()
    wal.write_snapshot(8, b"newer")  # mid-segment: segment 0 stays
    wal.close()
    (tmp_path / snapshot_name(3)).write_bytes(older)
    flip(tmp_path / snapshot_name(8), 30, 1)
    recovery, records = reopen_records(tmp_path)
    assert (recovery.snapshot_index, recovery.snapshot) == (3, b"older")
    assert [i for i, _, _ in records] == list(range(3, 10))

    # With no valid snapshot left, the log must be replayed from index 0: still possible here.
    (tmp_path / snapshot_name(3)).write_bytes(older[:-1])
    recovery, records = reopen_records(tmp_path)
    assert (recovery.snapshot_index, recovery.snapshot) == (0, None)
    assert [i for i, _, _ in records] == list(range(10))


def test_corrupt_newest_snapshot_refuses_when_segments_are_gone(tmp_path: Path) -> None:
    wal, _ = open_wal(tmp_path)
    for start in (0, 5, 10):
        wal.append([(RECORD_COMMAND, body_for(i)) for i in range(start, start + 5)])
        wal.write_snapshot(start + 5, f"before {start + 5}".encode())
    wal.close()
    # Each snapshot at the end of the log started a segment; kept: 10's generation and 15.
    assert [p.name for p in segments(tmp_path)] == [segment_name(10), segment_name(15)]
    newest = tmp_path / snapshot_name(15)
    flip(newest, len(newest.read_bytes()) - 1, 0)
    recovery, records = reopen_records(tmp_path)
    assert (recovery.snapshot_index, recovery.snapshot) == (10, b"before 10")
    assert records == [(i, RECORD_COMMAND, body_for(i)) for i in range(10, 15)]
    kept = tmp_path / snapshot_name(10)
    flip(kept, len(kept.read_bytes()) - 1, 0)
    with pytest.raises(WalCorruption, match="invalid") as caught:
        WAL(tmp_path).open()
    assert "oldest segment starts at 10" in str(caught.value)


def test_snapshot_with_all_its_segments_deleted_is_corruption(tmp_path: Path) -> None:
    wal, _ = open_wal(tmp_path)
    wal.append([(RECORD_COMMAND, b"x")])
    wal.write_snapshot(1, b"one")
    wal.close()
    for path in segments(tmp_path):
        path.unlink()
    with pytest.raises(WalCorruption, match="no segment"):
        WAL(tmp_path).open()


# -- a real full filesystem ------------------------------------------------------------------------


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / f"tiny-{uuid.uuid4().hex[:8]}"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a 1 MiB tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        # Lazy: a test that failed with a WAL still open must not leave the mount behind (its
        # files keep it busy; pytest's later clean-ups of old temp dirs then fail on it).
        subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


def test_enospc_truncates_the_batch_and_the_wal_recovers_once_space_returns(
    tiny_filesystem: Path,
) -> None:
    directory = tiny_filesystem / "wal"
    filler = tiny_filesystem / "filler"
    filler.write_bytes(bytes(400 << 10))
    wal, _ = open_wal(directory)
    segment = segments(directory)[0]
    acknowledged = 0
    failed = None
    for _attempt in range(100):
        batch = [(RECORD_COMMAND, body_for(acknowledged + i, 30 << 10)) for i in range(4)]
        size_before = segment.stat().st_size
        try:
            acknowledged = wal.append(batch) + 1
        except OSError as exc:
            failed = exc
            break
    assert failed is not None and failed.errno == errno.ENOSPC, failed
    # Part of the batch may have reached the file before ENOSPC: it was cut back off.
    assert segment.stat().st_size == size_before
    assert wal.next_index == acknowledged

    filler.unlink()
    last = wal.append([(RECORD_COMMAND, body_for(acknowledged + i, 30 << 10)) for i in range(4)])
    assert last == acknowledged + 3
    wal.close()

    recovery, records = reopen_records(directory)
    assert recovery.truncated is None and recovery.next_index == acknowledged + 4
    assert records == [(i, 1, body_for(i, 30 << 10)) for i in range(acknowledged + 4)]


def test_a_rotation_on_a_nearly_full_disk_takes_a_plain_segment_and_every_record_that_fits(
    tiny_filesystem: Path,
) -> None:
    # Too little room left for a zero-filled segment (64 KiB here) but room for records: the
    # rotation makes a plain segment instead of refusing appends that would fit.
    directory = tiny_filesystem / "wal"
    wal, _ = open_wal(directory, segment_bytes=256 << 10, preallocate=True)
    record = 8 << 10
    free = os.statvfs(tiny_filesystem).f_bavail * os.statvfs(tiny_filesystem).f_frsize
    (tiny_filesystem / "filler").write_bytes(bytes(free - (40 << 10)))
    acknowledged = 0
    failed = None
    for _attempt in range(40):
        try:
            acknowledged = wal.append([(RECORD_COMMAND, body_for(acknowledged, record))]) + 1
        except OSError as exc:
            failed = exc
            break
    assert failed is not None and failed.errno == errno.ENOSPC, failed
    assert len(segments(directory)) == 2, "no second segment: the rotation was refused"
    first_segment_holds = (64 << 10) // record
    assert acknowledged >= first_segment_holds + 3, acknowledged  # ~40 KiB more landed
    wal.close()
    recovery, records = reopen_records(directory)
    assert recovery.truncated is None and recovery.next_index == acknowledged
    assert records == [(i, 1, body_for(i, record)) for i in range(acknowledged)]


def test_a_spare_with_no_room_is_refused_before_a_byte_is_written(tiny_filesystem: Path) -> None:
    # The pipeline retries a spare often on a full disk; zeros written only to be removed would
    # take the WAL's last free blocks for a moment each time.
    before = os.statvfs(tiny_filesystem).f_bfree
    with pytest.raises(OSError) as refused:
        make_spare(tiny_filesystem / "next-segment.tmp", 2 << 20)
    assert refused.value.errno == errno.ENOSPC
    assert list(tiny_filesystem.iterdir()) == []
    assert os.statvfs(tiny_filesystem).f_bfree == before
    spare = make_spare(tiny_filesystem / "next-segment.tmp", 64 << 10)  # room for this one
    os.close(spare.fd)
    assert spare.path.stat().st_size == 64 << 10


def test_a_closed_wal_refuses_appends_and_snapshots(tmp_path: Path) -> None:
    wal, _ = open_wal(tmp_path)
    wal.append([(RECORD_COMMAND, b"x")])
    wal.close()
    with pytest.raises(RuntimeError, match="not open"):
        wal.append([(RECORD_COMMAND, b"y")])
    with pytest.raises(RuntimeError, match="not open"):
        wal.write_snapshot(1, b"s")
    _, records = reopen_records(tmp_path)
    assert records == [(0, 1, b"x")]


def test_a_failed_truncate_after_a_failed_write_poisons_the_wal(tmp_path: Path) -> None:
    wal, _ = open_wal(tmp_path)
    wal.append([(RECORD_COMMAND, b"kept")])
    # A descriptor gone bad under the WAL: the write fails and so does the truncate-back, so
    # the file's state is unknown and nothing may be appended on top of it.
    assert wal._fd is not None
    os.close(wal._fd)
    with pytest.raises(OSError) as caught:
        wal.append([(RECORD_COMMAND, b"lost")])
    assert caught.value.errno == errno.EBADF
    with pytest.raises(WalFailed, match="truncate failed"):
        wal.append([(RECORD_COMMAND, b"never")])
    with pytest.raises(WalFailed):
        wal.write_snapshot(1, b"s")
    wal.close()
    with pytest.raises(WalFailed):
        wal.open()
    recovery, records = reopen_records(tmp_path)
    assert recovery.truncated is None and records == [(0, 1, b"kept")]


@pytest.fixture
def failing_block_device(tmp_path: Path) -> Iterator[Path]:
    """An ext4 filesystem on a 64 MiB sparse image that lives on a 3 MiB tmpfs: once the tmpfs
    is full, writeback fails at the block layer and fdatasync returns EIO. Yields the ext4 root."""
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        pytest.skip("needs root and mkfs.ext4 for a loop-mounted ext4")
    backing, mount_point = tmp_path / "backing", tmp_path / "ext4"
    backing.mkdir()
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(backing)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        image = backing / "disk.img"
        subprocess.run(["truncate", "-s", "64M", str(image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
        looped = subprocess.run(
            ["mount", "-o", "loop", str(image), str(mount_point)], capture_output=True
        )
        if looped.returncode != 0:
            pytest.skip(f"cannot loop-mount here: {looped.stderr.decode().strip()}")
        try:
            yield mount_point
        finally:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
    finally:
        subprocess.run(["umount", "-l", str(backing)], capture_output=True)


def test_a_failed_fdatasync_poisons_the_wal(failing_block_device: Path) -> None:
    wal, _ = open_wal(failing_block_device / "wal")
    acknowledged = 0
    with pytest.raises(OSError) as caught:  # the loop runs until the device is full
        for _ in range(500):
            acknowledged = wal.append([(RECORD_COMMAND, bytes(64 << 10))] * 2) + 1
    assert caught.value.errno == errno.EIO
    assert acknowledged > 0
    with pytest.raises(WalFailed, match="fsync failed: fdatasync"):
        wal.append([(RECORD_COMMAND, b"after")])
    assert wal.next_index == acknowledged
    wal.close()


# -- jq wal-inspect ------------------------------------------------------------------------------


def inspect(*args: str) -> tuple[int, str, str]:
    app = typer.Typer()
    register(app)

    @app.callback()
    def root() -> None:  # a callback keeps `wal-inspect` a named subcommand, as under `jq`
        pass

    result = CliRunner().invoke(app, ["wal-inspect", *args])
    return result.exit_code, result.stdout, result.stderr


def snapshot_of_directory(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_inspect_clean_directory(tmp_path: Path) -> None:
    wal, _ = open_wal(tmp_path, segment_bytes=200)
    for i in range(12):
        wal.append([(RECORD_COMMAND, encode_command(Expire(now=i)))])
    wal.write_snapshot(12, b"state")
    wal.append([(RECORD_COMMAND, encode_command(Expire(now=12))), (9, b"opaque")])
    wal.close()
    code, out, _ = inspect(str(tmp_path))
    assert code == 0, out
    assert segment_name(12) in out and "clean" in out
    assert "command" in out and "unknown(9)" in out
    assert snapshot_name(12) in out and "index 12" in out

    code, out, _ = inspect(str(tmp_path), "--json")
    summary = json.loads(out)
    assert summary["status"] == "clean"
    assert summary["snapshot"] == {"name": snapshot_name(12), "index": 12, "bytes": 5}
    assert summary["record_types"] == {"command": 1, "unknown(9)": 1}
    assert summary["next_index"] == 14
    assert summary["segments"][0]["first_index"] == 12
    # The first snapshot keeps the log from its start for a fallback; listed, not read.
    kept = summary["kept_generation"]
    assert kept["snapshot"] is None and kept["segments"][0] == segment_name(0)
    assert segment_name(12) not in kept["segments"]
    code, out, _ = inspect(str(tmp_path))
    assert "kept for a fallback" in out


def test_inspect_torn_tail_reports_without_truncating(tmp_path: Path) -> None:
    write_records(tmp_path, 4)
    path = segments(tmp_path)[0]
    full = path.read_bytes()
    path.write_bytes(full[:-7])
    before = snapshot_of_directory(tmp_path)
    code, out, _ = inspect(str(tmp_path), "--json")
    assert code == 1
    summary = json.loads(out)
    assert summary["status"] == "torn_tail"
    last_start = len(full) - (RECORD_HEADER_SIZE + 40)
    assert summary["torn_tail"]["offset"] == last_start
    assert summary["last_valid"] == {"file": path.name, "offset": last_start}
    code, out, _ = inspect(str(tmp_path))
    assert code == 1 and "torn tail" in out
    assert snapshot_of_directory(tmp_path) == before


def test_inspect_corrupt_middle_exits_2_naming_file_and_offset(tmp_path: Path) -> None:
    write_records(tmp_path, 4)
    path = segments(tmp_path)[0]
    flip(path, SEGMENT_HEADER_SIZE + RECORD_HEADER_SIZE + 2, 4)
    before = snapshot_of_directory(tmp_path)
    code, out, _ = inspect(str(tmp_path))
    assert code == 2
    assert "corrupt" in out and path.name in out and f"offset {SEGMENT_HEADER_SIZE}" in out
    code, out, _ = inspect(str(tmp_path), "--json")
    assert json.loads(out)["corruption"]["offset"] == SEGMENT_HEADER_SIZE
    assert snapshot_of_directory(tmp_path) == before


def test_inspect_records_dumps_json_lines(tmp_path: Path) -> None:
    commands = [
        Submit(now=10, jobs=[NewJob(id="a", payload="p")]),
        Ack(now=11, job_id="a", lease_id="l", result="done"),
    ]
    wal, _ = open_wal(tmp_path)
    wal.append([(RECORD_COMMAND, encode_command(c)) for c in commands])
    wal.append([(RECORD_COMMAND, b"\xc1 not msgpack")])
    wal.close()
    code, out, err = inspect(str(tmp_path), "--records")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["index"] for line in lines] == [0, 1, 2]
    assert lines[0]["type"] == "command"
    # Submit and NewJob grew fields at their ends (owner, fingerprint; keep time, queue cap).
    assert lines[0]["command"] == [
        "submit", 10, [["a", "default", "p", 0, 3, None, None, "", None, None]], 86_400_000, 0
    ]  # fmt: skip
    assert lines[1]["command"] == ["ack", 11, "a", "l", "done"]
    assert lines[2]["command"] is None and "undecodable" in lines[2]["error"]
    assert "clean" in err  # the summary stays off stdout


def test_inspect_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    code, _, err = inspect(str(tmp_path / "nope"))
    assert code == 2 and "not a directory" in err


def test_examine_agrees_with_open(tmp_path: Path) -> None:
    write_records(tmp_path, 3)
    report = examine(tmp_path)
    assert report.corruption is None and report.tail is None and report.next_index == 3
