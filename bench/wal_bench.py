"""WAL benchmark (not a test): durable records/s through `WAL.append` on this disk, for batches
of 1, 16, 64 and 256 records of ~200 bytes. Every batch is one write and one fdatasync, so the
batch-of-1 figure is the disk's fdatasync rate and larger batches show what group commit buys.
It first measures the disk's own ceiling (a bare pwrite + fdatasync loop) and the CPU cost of
framing, so the batch figures can be read as ratios on a shared, noisy machine. Also times a
reopen (recovery scan + replay) of everything written.

Preallocation (issue 20): one writer appending one record at a time, each waiting for its
fdatasync, into plain segments (every append grows the file, so the filesystem journals its new
size) and into preallocated ones (appends overwrite zeros; the file size never changes), in
alternating rounds; the append latency (pwrite + fdatasync) p50/p99 and the rate of each, and
the same two cases without any WAL code (a bare pwrite + fdatasync, appending vs into zeros).

A spare segment being made (issue 20, fourth cut): one writer appending one record at a time
while the pipeline's `make_spare` zero-fills a 64 MiB spare beside it, synced once at its end
(as before) or 1 MiB at a time (`SYNC_EVERY`, now), in alternating rounds: the appends' p99 and
worst latency while the spare is made.

    .venv/bin/python bench/wal_bench.py                 # 2 s per batch size, in /tmp
    .venv/bin/python bench/wal_bench.py --seconds 5 --dir /data --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from jq_tool.core.segment_pipeline import SYNC_EVERY, make_spare
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


def raw_latencies(path: Path, seconds: float, *, prezeroed: bool) -> list[float]:
    """Seconds per 200-byte pwrite + fdatasync, appending (the file grows) or into a file
    already zero-filled and synced (it does not)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    body = b"r" * RECORD_BYTES
    size = 64 << 20
    try:
        if prezeroed:
            zeros = bytes(1 << 20)
            for offset in range(0, size, len(zeros)):
                os.pwrite(fd, zeros, offset)
            os.fsync(fd)
        latencies = []
        stop_at = time.perf_counter() + seconds
        offset = 0
        while time.perf_counter() < stop_at and offset + RECORD_BYTES <= size:
            started = time.perf_counter()
            os.pwrite(fd, body, offset)
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - started)
            offset += RECORD_BYTES
        return latencies
    finally:
        os.close(fd)
        path.unlink()


def single_writer_latencies(directory: Path, seconds: float, *, preallocate: bool) -> list[float]:
    """Seconds per WAL.append of one record (write + fdatasync), after a warm-up that takes a
    preallocating WAL into its first preallocated segment (a new directory starts plain)."""
    wal = WAL(directory, preallocate=preallocate)
    wal.open()
    batch = [(RECORD_COMMAND, b"r" * RECORD_BYTES)]
    try:
        for _ in range(50_000):  # bounded warm-up: past the first plain megabyte
            if wal._file_size >= wal.segment_bytes or (not preallocate and wal._size > 1 << 20):
                break
            wal.append(batch)
            if preallocate and wal._size >= 1 << 20:
                time.sleep(0.001)  # let the pipeline's thread finish the spare
        latencies = []
        stop_at = time.perf_counter() + seconds
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            wal.append(batch)
            latencies.append(time.perf_counter() - started)
        return latencies
    finally:
        wal.close()
        shutil.rmtree(directory, ignore_errors=True)


def _summary(latencies: list[float]) -> tuple[float, float, float]:
    """(appends/s, p50 µs, p99 µs)."""
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return len(ordered) / sum(ordered), statistics.median(ordered) * 1e6, p99 * 1e6


def preallocation_rows(root: Path, seconds: float, rounds: int) -> dict[str, float]:
    """Plain vs preallocated, WAL and bare, in alternating rounds; medians of the rounds."""
    cases = {
        "bare_appending": lambda d: raw_latencies(d / "raw", seconds, prezeroed=False),
        "bare_prezeroed": lambda d: raw_latencies(d / "raw", seconds, prezeroed=True),
        "wal_plain": lambda d: single_writer_latencies(d / "wal", seconds, preallocate=False),
        "wal_preallocated": lambda d: single_writer_latencies(d / "wal", seconds, preallocate=True),
    }
    measured: dict[str, list[tuple[float, float, float]]] = {name: [] for name in cases}
    for round_number in range(rounds):
        for name, run in cases.items():
            directory = root / f"pre-{name}-{round_number}"
            directory.mkdir(parents=True)
            measured[name].append(_summary(run(directory)))
            shutil.rmtree(directory, ignore_errors=True)
    out: dict[str, float] = {}
    for name, results in measured.items():
        rate, p50, p99 = (statistics.median(r[i] for r in results) for i in range(3))
        out[f"{name}_per_s"], out[f"{name}_p50_us"], out[f"{name}_p99_us"] = rate, p50, p99
        print(
            f"one writer, {name.replace('_', ' '):>17}: {rate:>8,.0f} appends/s, "
            f"p50 {p50:>5.0f} µs, p99 {p99:>6.0f} µs (median of {rounds} rounds)",
            flush=True,
        )
    for kind in ("bare", "wal"):
        after = "prezeroed" if kind == "bare" else "preallocated"
        before = "appending" if kind == "bare" else "plain"
        ratio = out[f"{kind}_{after}_per_s"] / out[f"{kind}_{before}_per_s"]
        out[f"{kind}_preallocation_ratio"] = ratio
        print(f"{kind}: {after}/{before} = {ratio:.2f}x appends/s", flush=True)
    return out


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


def appends_beside_a_spare(directory: Path, *, sync_every: int) -> list[float]:
    """Seconds per 200-byte pwrite + fdatasync into a zero-filled file, for as long as a 64 MiB
    spare is being made beside it with `sync_every`."""
    path = directory / "appends"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.pwrite(fd, bytes(8 << 20), 0)
        os.fsync(fd)
        body = b"r" * RECORD_BYTES
        done = threading.Event()

        def spare() -> None:
            try:
                made = make_spare(directory / "spare.tmp", 64 << 20, sync_every=sync_every)
                os.close(made.fd)
            finally:
                done.set()

        maker = threading.Thread(target=spare)
        latencies = []
        offset = 0
        maker.start()
        while not done.is_set() and offset + RECORD_BYTES <= 8 << 20:
            started = time.perf_counter()
            os.pwrite(fd, body, offset)
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - started)
            offset += RECORD_BYTES
        maker.join()
        return latencies
    finally:
        os.close(fd)
        shutil.rmtree(directory, ignore_errors=True)


def spare_rows(root: Path, rounds: int) -> dict[str, float]:
    """Appends beside a spare synced at its end vs SYNC_EVERY bytes at a time, alternating."""
    cases = {"synced_at_end": 64 << 20, "synced_in_steps": SYNC_EVERY}
    measured: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for round_number in range(rounds):
        for name, sync_every in cases.items():
            directory = root / f"spare-{name}-{round_number}"
            directory.mkdir(parents=True)
            ordered = sorted(appends_beside_a_spare(directory, sync_every=sync_every))
            p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
            measured[name].append((p99 * 1e3, ordered[-1] * 1e3))
    out: dict[str, float] = {}
    for name, results in measured.items():
        p99, worst = (statistics.median(r[i] for r in results) for i in range(2))
        out[f"spare_{name}_p99_ms"], out[f"spare_{name}_max_ms"] = p99, worst
        print(
            f"appends beside a spare {name.replace('_', ' '):>15}: p99 {p99:>6.1f} ms, "
            f"worst {worst:>6.1f} ms (median of {rounds} rounds)",
            flush=True,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="run time per batch size")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the WAL (a disk)")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds of the preallocation rows"
    )
    parser.add_argument(
        "--only-preallocation", action="store_true", help="only plain vs preallocated segments"
    )
    parser.add_argument(
        "--only-spare", action="store_true", help="only appends beside a spare being made"
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="jq-wal-bench-", dir=args.dir))
    out: dict[str, float] = {}
    try:
        out.update(spare_rows(root, args.rounds))
        if args.only_spare:
            return
        out.update(preallocation_rows(root, args.seconds, args.rounds))
        if args.only_preallocation:
            return
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
