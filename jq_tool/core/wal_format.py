"""The byte layout of the local write-ahead log: segment headers, record framing, snapshot files,
and the read-only scanner that decides where a segment's valid records end. The directory logic
(which files are live, recovery, rotation, fsync order) lives in `jq_tool.core.wal`.

Format
======

A WAL directory holds segment files and snapshot files::

    00000000000000000000.wal     records 0 .. 41 999
    00000000000000042000.wal     records 42 000 .. (the last segment, the one being appended)
    00000000000000030000.snap    the snapshot before the newest, kept with the records since it
    00000000000000042000.snap    state machine snapshot: the state after records 0 .. 41 999
    LOCK                         flock(2) target: one process owns the directory

Names are the 20-digit decimal index of the segment's first record (or of the snapshot). Record
indexes start at 0 and are not stored per record: a record's index is its segment's first index
plus its position in the segment, so segments must be contiguous (a gap is corruption).

Segment file::

    +-------------------------------- header, 20 bytes --------------------------------+
    | magic "JQWL" (4) | version u16 LE (=1) | reserved u16 (=0) | first_index u64 LE |
    | crc32c u32 LE of the 16 bytes before it                                            |
    +-----------------------------------------------------------------------------------+
    | record | record | record | ...                                                     |

Record (9-byte header, then the body)::

    | length u32 LE | crc32c u32 LE | type u8 | body (length bytes) |

`length` is len(body), at most MAX_RECORD_BODY (64 MiB). The crc32c (Castagnoli) covers the type
byte and the body. `type` 1 (RECORD_COMMAND) is a msgpack-encoded `jq_tool.core.model` command;
other values are reserved for later record kinds and are carried through untouched.

Snapshot file (written to `<name>.snap.tmp`, fsynced, renamed, directory fsynced)::

    | magic "JQSN" (4) | version u16 LE (=1) | reserved u16 (=0) | index u64 LE |
    | length u64 LE | crc32c u32 LE | data (length bytes) |

The snapshot crc32c covers the 24 header bytes before it and the data, so a flipped bit in the
index or the length is caught as well as one in the data.

Preallocated segments: a segment may be longer than its records. The WAL creates the next segment
ahead of need at its full size, zero-filled and synced (`core/segment_pipeline.py`), so that an
append overwrites zeros instead of growing the file (an fdatasync then has no file size to
journal). A record header of nine zero bytes is never a valid record (its crc32c would have to
be that of an empty body, which is not zero for any type byte), so the log ends at the first
record position from which the rest of the file is zero: that is unwritten space, not damage,
and nothing is dropped or reported. Recovery does not read the zeros: `scan_file` reads a
segment in growing prefixes and stops at a zero record header followed by a megabyte of zeros
(ZERO_WINDOW); anything it cannot judge from a prefix makes it read the whole file. A reader
that has only the written part (`read_written`) may pass the file's size: `scan_segment` treats
the bytes after the data, up to that size, as zero.

What a reader does with a bad record depends on where it is: the *tail* of the last segment (a
partial header, a length running past the end of the file, a CRC mismatch with no valid record
after it) is a write that never completed and is dropped (a copy of the dropped bytes is kept
beside the segment as `<segment>.<offset>.broken`); anything else is corruption of records that
were acknowledged, and the WAL refuses to open. A bad tail record is *torn* (a write cut short,
as etcd's decoder tells it) when it runs past the end of the file or one of its pieces between
512-byte sector boundaries is all zero; a record that is all there and still fails its CRC is
*damaged*, which a crash does not explain, so recovery says so at ERROR. The scanner here only
reports facts (where, why, whether a valid record follows, torn or damaged); `wal.py` makes
the decisions.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec

from jq_tool.core.checksum import crc32c

RECORD_COMMAND = 1  # record type byte for a msgpack-encoded jq_tool.core.model command

MAX_RECORD_BODY = 64 << 20

SEGMENT_SUFFIX = ".wal"
SNAPSHOT_SUFFIX = ".snap"
TEMP_SUFFIX = ".tmp"
BROKEN_SUFFIX = ".broken"  # bytes recovery dropped from a segment's tail, kept for a person
NAME_DIGITS = 20

SEGMENT_MAGIC = b"JQWL"
SNAPSHOT_MAGIC = b"JQSN"
FORMAT_VERSION = 1

_SEGMENT_HEAD = struct.Struct("<4sHHQ")
_CRC = struct.Struct("<I")
SEGMENT_HEADER_SIZE = _SEGMENT_HEAD.size + _CRC.size  # 20

RECORD_HEADER = struct.Struct("<IIB")
RECORD_HEADER_SIZE = RECORD_HEADER.size  # 9
_ZERO_HEADER = bytes(RECORD_HEADER_SIZE)

# The unit a disk writes whole: a write cut short by a crash leaves whole sectors unwritten.
SECTOR_SIZE = 512
_ZERO_CHUNK = bytes(1 << 20)
_NON_ZERO = re.compile(rb"[^\x00]")
# What a scan reads: a file's bytes, or (scan_file) a prefix of it that grows.
Data = bytes | bytearray
# Zero bytes after the last record that end a scan of a prefix (scan_file), and its first read.
ZERO_WINDOW = 1 << 20
_FIRST_READ = 4 << 20

_SNAPSHOT_HEAD = struct.Struct("<4sHHQQ")
SNAPSHOT_HEADER_SIZE = _SNAPSHOT_HEAD.size + _CRC.size  # 28

# crc32c(type byte) for every type: a record's CRC continues from it over the body, so framing
# never has to concatenate the type and the body just to checksum them.
_TYPE_CRC = tuple(crc32c(bytes([t])) for t in range(256))


def segment_name(first_index: int) -> str:
    return f"{first_index:0{NAME_DIGITS}d}{SEGMENT_SUFFIX}"


def snapshot_name(index: int) -> str:
    return f"{index:0{NAME_DIGITS}d}{SNAPSHOT_SUFFIX}"


def parse_name(name: str, suffix: str) -> int | None:
    """The index in a segment or snapshot file name, or None if the name is not one of ours."""
    if not name.endswith(suffix):
        return None
    stem = name[: -len(suffix)]
    if len(stem) != NAME_DIGITS or not stem.isdigit():
        return None
    return int(stem)


def encode_segment_header(first_index: int) -> bytes:
    head = _SEGMENT_HEAD.pack(SEGMENT_MAGIC, FORMAT_VERSION, 0, first_index)
    return head + _CRC.pack(crc32c(head))


def decode_segment_header(data: bytes | bytearray | memoryview) -> tuple[int | None, str | None]:
    """(first_index, None) for a valid header, (None, reason) otherwise."""
    if len(data) < SEGMENT_HEADER_SIZE:
        return None, f"partial segment header ({len(data)} of {SEGMENT_HEADER_SIZE} bytes)"
    magic, version, _reserved, first_index = _SEGMENT_HEAD.unpack_from(data, 0)
    (crc,) = _CRC.unpack_from(data, _SEGMENT_HEAD.size)
    if crc32c(data[: _SEGMENT_HEAD.size]) != crc:
        return None, "segment header crc mismatch"
    if magic != SEGMENT_MAGIC:
        return None, f"bad segment magic {magic!r}"
    if version != FORMAT_VERSION:
        return None, f"unsupported segment format version {version}"
    return first_index, None


def encode_records(records: list[tuple[int, bytes]]) -> bytes:
    """Frame a batch of (type, body) records into one buffer, ready for a single write."""
    parts: list[bytes] = []
    append = parts.append
    pack = RECORD_HEADER.pack
    crc = crc32c
    type_crc = _TYPE_CRC
    for record_type, body in records:
        length = len(body)
        if length > MAX_RECORD_BODY:
            raise ValueError(f"record body of {length} bytes exceeds the {MAX_RECORD_BODY} limit")
        if not 0 <= record_type <= 255:
            raise ValueError(f"record type {record_type} is not a byte")
        append(pack(length, crc(body, type_crc[record_type]), record_type))
        append(body)
    return b"".join(parts)


class SegmentScan(msgspec.Struct):
    """What a read-only pass over one segment file found."""

    size: int  # bytes in the file
    first_index: int | None  # from the header; None if the header is invalid
    records: int = 0  # valid records before valid_end
    valid_end: int = 0  # offset just past the last valid record (0 if the header is bad)
    type_counts: dict[int, int] = {}
    error_offset: int | None = None  # where the first invalid byte range starts
    error_reason: str | None = None
    header_error: bool = False  # the error is in the segment header
    zero_fill: bool = False  # everything from error_offset to the end is zero bytes
    valid_record_after: int | None = None  # offset of a valid record after the error, if any
    written: int = 0  # offset just past the last non-zero byte: the rest is zero
    damaged: bool = False  # the bad record is all there and fails its CRC: not a cut-short write
    more: bool = False  # a scan of a prefix stopped where it needs more of the file


def written_end(data: Data, start: int = 0) -> int:
    """Offset just past the last non-zero byte of data[start:], or start when it is all zero."""
    end = len(data)
    while end > start:
        begin = max(start, end - len(_ZERO_CHUNK))
        chunk = data[begin:end]
        if chunk != _ZERO_CHUNK[: end - begin]:
            return begin + len(chunk.rstrip(b"\x00"))
        end = begin
    return start


def _is_zero(data: Data, start: int) -> bool:
    return written_end(data, start) == start


def read_written(path: Path) -> tuple[bytes, int]:
    """(the file's bytes up to its last non-zero byte, the file's size). A preallocated segment
    is mostly zeros: they are checked a chunk at a time from the end and never held in memory."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        end = size
        buffer = bytearray(len(_ZERO_CHUNK))
        while end > 0:
            begin = max(0, end - len(buffer))
            if end - begin < len(buffer):
                buffer = bytearray(end - begin)
            if os.preadv(fd, [buffer], begin) != end - begin:
                raise OSError(f"{path} changed while being read")
            # bytearray == bytes is a memcmp; a memoryview compares item by item (8x slower).
            if buffer != _ZERO_CHUNK[: len(buffer)]:
                end = begin + len(buffer.rstrip(b"\x00"))
                break
            end = begin
        data = os.pread(fd, end, 0) if end else b""
        if len(data) != end:
            raise OSError(f"{path} changed while being read")
        return data, size
    finally:
        os.close(fd)


def _crc(view: memoryview, start: int, end: int, crc: int = 0) -> int:
    """crc32c of the bytes [start, end) of a segment of which `view` holds the written part:
    past len(view) every byte is zero."""
    written = len(view)
    crc = crc32c(view[min(start, written) : min(end, written)], crc)
    missing = end - max(start, written)
    while missing > 0:
        step = min(missing, len(_ZERO_CHUNK))
        crc = crc32c(_ZERO_CHUNK[:step], crc)
        missing -= step
    return crc


def is_torn(data: Data, start: int, end: int) -> bool:
    """Whether the record in [start, end) looks like a write cut short, as etcd's decoder tells
    it: one of its pieces between sector boundaries is all zero (never written). Bytes past
    len(data) are zero."""
    offset = start
    while offset < end:
        piece_end = min(end, (offset // SECTOR_SIZE + 1) * SECTOR_SIZE)
        if offset >= len(data) or _is_zero(data[offset : min(piece_end, len(data))], 0):
            return True
        offset = piece_end
    return False


def find_valid_record(data: Data, start: int, size: int | None = None) -> int | None:
    """The first offset >= start where a whole record with a matching CRC begins, or None.

    Used after an error to tell a torn tail (nothing valid follows) from damage in the middle of
    acknowledged records. Checking the length against the bytes left before computing a CRC keeps
    this cheap on text or random garbage, where most candidate lengths are huge. When `size`
    exceeds len(data) the bytes in between are zero: a record may end in them, but none can start
    there (a zero header is never valid).
    """
    written = len(data)
    size = written if size is None else max(size, written)
    view = memoryview(data)
    unpack = RECORD_HEADER.unpack_from
    crc = crc32c
    # A record's header holds a non-zero CRC, so none starts after the last non-zero byte, and
    # none in a run of zeros: those are skipped in C (a preallocated segment is mostly zeros).
    stop = min(written_end(data, min(start, written)), size - RECORD_HEADER_SIZE + 1)
    offset = start - 1
    while (offset := offset + 1) < stop:
        if offset + RECORD_HEADER_SIZE <= written:
            length, checksum, record_type = unpack(data, offset)
        else:
            head = data[offset:] + _ZERO_HEADER[: RECORD_HEADER_SIZE - (written - offset)]
            length, checksum, record_type = unpack(head, 0)
        if checksum == 0 and length == 0 and record_type == 0:
            found = _NON_ZERO.search(data, offset)
            if found is None:
                return None
            offset = max(offset, found.start() - RECORD_HEADER_SIZE)
            continue
        end = offset + RECORD_HEADER_SIZE + length
        if end > size or length > MAX_RECORD_BODY:
            continue
        body_start = offset + RECORD_HEADER_SIZE - 1
        whole = end <= written
        if (crc(view[body_start:end]) if whole else _crc(view, body_start, end)) == checksum:
            return offset
    return None


def scan_segment(
    data: Data,
    *,
    search_after_error: bool,
    size: int | None = None,
    complete: bool = True,
    resume: SegmentScan | None = None,
) -> SegmentScan:
    """Validate a segment file's bytes. Never raises on bad data: it reports.

    `complete`: `data` is the whole file, or stops short of its `size` only where the rest is
    zero (what `read_written` returns for a preallocated segment): the scan treats those bytes
    as zero. Not complete: `data` is a prefix of the file (see `scan_file`); the scan stops with
    `more` set at the first record it cannot judge from the prefix alone, and ends cleanly only
    at a zero record header followed by ZERO_WINDOW zero bytes. `resume` continues a scan that
    stopped for more, from where it stopped.
    """
    size = len(data) if size is None else max(size, len(data))
    if resume is None:
        header = data[:SEGMENT_HEADER_SIZE]
        if len(header) < min(size, SEGMENT_HEADER_SIZE):  # the rest of a short header is zero
            header += bytes(min(size, SEGMENT_HEADER_SIZE) - len(header))
        first_index, reason = decode_segment_header(header)
        if first_index is None:
            return SegmentScan(
                size=size,
                first_index=None,
                error_offset=0,
                error_reason=reason,
                header_error=True,
                zero_fill=_is_zero(data, 0),
                valid_record_after=(
                    find_valid_record(data, SEGMENT_HEADER_SIZE, size)
                    if search_after_error
                    else None
                ),
                written=written_end(data),
            )
        scan = SegmentScan(size=size, first_index=first_index, valid_end=SEGMENT_HEADER_SIZE)
    else:
        scan = resume
        scan.more = False
    # Complete: from `written` on everything is zero, unwritten space. A prefix: unknown yet.
    written = scan.written = written_end(data) if complete else len(data)
    view = memoryview(data)
    unpack = RECORD_HEADER.unpack_from
    crc = crc32c
    counts = scan.type_counts
    offset = scan.valid_end
    records = scan.records
    error: str | None = None
    while offset < written:
        if size - offset < RECORD_HEADER_SIZE:
            error = f"partial record header ({size - offset} of {RECORD_HEADER_SIZE} bytes)"
            break
        if len(data) - offset >= RECORD_HEADER_SIZE:
            length, checksum, record_type = unpack(data, offset)
        elif not complete:
            scan.more = True
            break
        else:
            head = data[offset:] + _ZERO_HEADER[: RECORD_HEADER_SIZE - (len(data) - offset)]
            length, checksum, record_type = unpack(head, 0)
        if length == 0 and checksum == 0 and record_type == 0:
            if not complete:
                # The end of the log, if what follows is zero: enough of it to be sure.
                if len(data) - offset >= ZERO_WINDOW and written_end(data, offset) == offset:
                    scan.written = offset
                else:
                    scan.more = True
                break
            error = "unwritten (zero) record header with data after it"
            break
        if length > MAX_RECORD_BODY:
            error = f"record length {length} exceeds the {MAX_RECORD_BODY}-byte limit"
            break
        end = offset + RECORD_HEADER_SIZE + length
        if end > size:
            present = size - offset - RECORD_HEADER_SIZE
            error = f"record length {length} runs past the end of the file ({present} present)"
            break
        body_start = offset + RECORD_HEADER_SIZE - 1
        # Past len(data) a record's last bytes are zeros that read_written left out.
        whole = end <= len(data)
        if not whole and not complete:
            scan.more = True
            break
        checked = crc(view[body_start:end]) if whole else _crc(view, body_start, end)
        if checked != checksum:
            error = "record crc mismatch"
            scan.damaged = not is_torn(data, offset, end)
            break
        counts[record_type] = counts.get(record_type, 0) + 1
        records += 1
        offset = end
    del view  # the caller may grow `data` (a bytearray) and scan on
    scan.records = records
    scan.valid_end = offset
    if error is not None and not complete:
        # Damage, or the end of what was read: only the whole file can tell which, and what.
        scan.more = True
    elif error is not None:
        scan.error_offset = offset
        scan.error_reason = error
        scan.zero_fill = _is_zero(data, offset)
        if search_after_error and not scan.zero_fill:
            scan.valid_record_after = find_valid_record(data, offset + 1, size)
    return scan


def scan_file(path: Path, *, search_after_error: bool) -> SegmentScan:
    """scan_segment of a segment file, without reading a preallocated segment's zeros: the file
    is read in growing prefixes until its records end at a zero header with ZERO_WINDOW zero
    bytes after it, or anything else needs the whole file (damage, a torn record, records
    running to the end), which is then scanned exactly as scan_segment scans all its bytes.

    What this does not read is never a record an append acknowledged: an append writes its
    batch at the end of the valid records, so acknowledged records are contiguous from the
    header; past a megabyte of zeros after them there can only be the far end of a batch that
    was never acknowledged (or damage far beyond what a crash leaves), as etcd's decoder, which
    stops at the first zero record, also assumes.
    """
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        data = bytearray(f.read(min(size, _FIRST_READ)))
        scan = scan_segment(
            data, search_after_error=search_after_error, size=size, complete=len(data) >= size
        )
        while scan.more:
            data += f.read(min(size - len(data), max(len(data), _FIRST_READ)))
            complete = len(data) >= size
            if not complete and len(data) == scan.size:  # pragma: no cover - shrank meanwhile
                raise OSError(f"{path} changed while being read")
            scan = scan_segment(
                data,
                search_after_error=search_after_error,
                size=size,
                complete=complete,
                resume=scan,
            )
        return scan


def iter_records(data: bytes, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(type, body) of each record in data[start:end], which a scan already found valid.

    The CRC is checked again: the file is re-read for replay, and a record is never handed to
    the state machine unchecked.
    """
    view = memoryview(data)
    unpack = RECORD_HEADER.unpack_from
    crc = crc32c
    offset = start
    while offset < end:
        length, checksum, record_type = unpack(data, offset)
        body_end = offset + RECORD_HEADER_SIZE + length
        if body_end > end or crc(view[offset + RECORD_HEADER_SIZE - 1 : body_end]) != checksum:
            raise ValueError(f"record at offset {offset} changed since it was validated")
        yield record_type, data[offset + RECORD_HEADER_SIZE : body_end]
        offset = body_end


def encode_snapshot_header(index: int, data: bytes) -> bytes:
    head = _SNAPSHOT_HEAD.pack(SNAPSHOT_MAGIC, FORMAT_VERSION, 0, index, len(data))
    return head + _CRC.pack(crc32c(data, crc32c(head)))


def read_snapshot(path: Path) -> tuple[int, memoryview] | str:
    """(index, data) of a valid snapshot file, or the reason it is invalid.

    The data is a read-only view of the file mapped into memory, not a copy of it: reading a
    1M-job snapshot (113 MB) into bytes took ~0.1 s of a ~1.3 s restart, and held the snapshot
    twice at the peak (the bytes beside the state decoded from them). The decoder reads the page
    cache itself; the mapping goes when the last view of it does. Snapshot files are replaced by
    rename, never rewritten in place, so a mapped file does not change under its reader.
    """
    with path.open("rb") as f:
        head = f.read(SNAPSHOT_HEADER_SIZE)
        if len(head) < SNAPSHOT_HEADER_SIZE:
            return f"partial snapshot header ({len(head)} of {SNAPSHOT_HEADER_SIZE} bytes)"
        magic, version, _reserved, index, length = _SNAPSHOT_HEAD.unpack_from(head, 0)
        (checksum,) = _CRC.unpack_from(head, _SNAPSHOT_HEAD.size)
        if magic != SNAPSHOT_MAGIC:
            return f"bad snapshot magic {magic!r}"
        if version != FORMAT_VERSION:
            return f"unsupported snapshot format version {version}"
        size = os.fstat(f.fileno()).st_size
        if SNAPSHOT_HEADER_SIZE + length != size:
            return f"snapshot length {length} does not match the file ({size} bytes)"
        data = _mapped(f, size)[SNAPSHOT_HEADER_SIZE:]
    if crc32c(data, crc32c(head[: _SNAPSHOT_HEAD.size])) != checksum:
        return "snapshot crc mismatch"
    return index, data


def _mapped(file: BinaryIO, size: int) -> memoryview:
    """The whole file mapped read-only, the kernel asked to read it ahead as one read() of it
    would have; read into memory where it cannot be mapped (a file system without mmap, or a
    file that shrank since its size was taken: then the CRC check fails on what was read)."""
    try:
        mapped = mmap.mmap(file.fileno(), size, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return memoryview(os.pread(file.fileno(), size, 0))
    if hasattr(mmap, "MADV_WILLNEED"):  # Linux, macOS
        mapped.madvise(mmap.MADV_WILLNEED)
    return memoryview(mapped)
