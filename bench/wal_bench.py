"""WAL benchmark (not a test): durable records/s through `WAL.append` on this disk, for batches
of 1, 16, 64 and 256 records of ~200 bytes. Every batch is one write and one fdatasync, so the
batch-of-1 figure is the disk's fdatasync rate and larger batches show what group commit buys.
Also times a reopen (recovery scan + replay) of everything written.

    .venv/bin/python bench/wal_bench.py                 # 2 s per batch size, in /tmp
    .venv/bin/python bench/wal_bench.py --seconds 5 --dir /data --json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from jq_tool.core.wal import RECORD_COMMAND, WAL

BATCH_SIZES = (1, 16, 64, 256)
RECORD_BYTES = 200


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
        for batch_size in BATCH_SIZES:
            directory = root / f"b{batch_size}"
            rate, batch_rate = records_per_second(directory, batch_size, args.seconds)
            out[f"records_per_s_b{batch_size}"] = rate
            print(
                f"batch of {batch_size:>3} x {RECORD_BYTES} B: {rate:>10,.0f} records/s "
                f"({batch_rate:>7,.0f} appends+fdatasync/s)",
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
