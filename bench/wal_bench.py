"""WAL benchmark (not a test): durable records/s through `WAL.append` on this disk, for batches
of 1, 16, 64 and 256 records of ~200 bytes. Every batch is one write and one fdatasync, so the
batch-of-1 figure is the disk's fdatasync rate and larger batches show what group commit buys.
It first measures the disk's own ceiling (a bare pwrite + fdatasync loop) and the CPU cost of
framing, so the batch figures can be read as ratios on a shared, noisy machine. Also times a
reopen (recovery scan + replay) of everything written.

    .venv/bin/python bench/wal_bench.py                 # 2 s per batch size, in /tmp
    .venv/bin/python bench/wal_bench.py --seconds 5 --dir /data --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from jq_tool.core.wal import RECORD_COMMAND, WAL
from jq_tool.core.wal_format import encode_records

BATCH_SIZES = (1, 16, 64, 256)
RECORD_BYTES = 200


def raw_fdatasync_per_second(directory: Path, seconds: float) -> float:
    """The disk's ceiling in this run: 200-byte pwrite + fdatasync, no WAL code at all."""
    directory.mkdir(parents=True)
    fd = os.open(directory / "raw", os.O_WRONLY | os.O_CREAT, 0o644)
    body = b"r" * RECORD_BYTES
    syncs = 0
    started = time.perf_counter()
    stop_at = started + seconds
    try:
        while time.perf_counter() < stop_at:
            os.pwrite(fd, body, syncs * RECORD_BYTES)
            os.fdatasync(fd)
            syncs += 1
    finally:
        os.close(fd)
    return syncs / (time.perf_counter() - started)


def framing_records_per_second(batch_size: int, seconds: float) -> float:
    """CPU only: how fast append builds a batch buffer (header packing + crc32c)."""
    batch = [(RECORD_COMMAND, b"r" * RECORD_BYTES)] * batch_size
    done = 0
    started = time.perf_counter()
    stop_at = started + seconds
    while time.perf_counter() < stop_at:
        for _ in range(100):
            encode_records(batch)
        done += 100 * batch_size
    return done / (time.perf_counter() - started)


def records_per_second(directory: Path, batch_size: int, seconds: float) -> tuple[float, float]:
    """(records/s, batches/s) of durable appends for `seconds`."""
    wal = WAL(directory)
    wal.open()
    body = b"r" * RECORD_BYTES
    batch = [(RECORD_COMMAND, body)] * batch_size
    batches = 0
    started = time.perf_counter()
    stop_at = started + seconds
    while time.perf_counter() < stop_at:
        wal.append(batch)
        batches += 1
    elapsed = time.perf_counter() - started
    wal.close()
    return batches * batch_size / elapsed, batches / elapsed


def reopen_seconds(directory: Path) -> tuple[float, int]:
    started = time.perf_counter()
    wal = WAL(directory)
    wal.open()
    count = sum(1 for _ in wal.replay())
    wal.close()
    return time.perf_counter() - started, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="run time per batch size")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the WAL (a disk)")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="jq-wal-bench-", dir=args.dir))
    out: dict[str, float] = {}
    try:
        raw = raw_fdatasync_per_second(root / "raw", args.seconds)
        out["raw_fdatasync_per_s"] = raw
        print(f"disk ceiling: {raw:>10,.0f} pwrite+fdatasync/s (no WAL code)", flush=True)
        framing = framing_records_per_second(64, min(args.seconds, 1.0))
        out["framing_records_per_s"] = framing
        print(f"framing only (CPU, batches of 64): {framing:>12,.0f} records/s", flush=True)
        for batch_size in BATCH_SIZES:
            directory = root / f"b{batch_size}"
            rate, batch_rate = records_per_second(directory, batch_size, args.seconds)
            out[f"records_per_s_b{batch_size}"] = rate
            print(
                f"batch of {batch_size:>3} x {RECORD_BYTES} B: {rate:>10,.0f} records/s "
                f"({batch_rate:>7,.0f} appends+fdatasync/s, {batch_rate / raw:.2f} of ceiling)",
                flush=True,
            )
        directory = root / f"b{BATCH_SIZES[-1]}"
        seconds, count = reopen_seconds(directory)
        out["reopen_records_per_s"] = count / seconds
        print(f"reopen + replay of {count:,} records: {seconds:.2f} s", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
