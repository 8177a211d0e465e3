"""Core benchmark (not a test): the engine with its real WAL on this disk.

It runs the engine as `jq serve` does (uvloop, the same garbage collector thresholds) and
prints durable submits/s with 1, 16 and 256 concurrent submitters (group commit is what makes
256 fast), lease+ack cycles/s with 1k and with 1M jobs queued (the 1M figure should be within 2x
of the 1k one: O(log n)), restart time with 1M jobs, and RSS per queued job beyond its payload.

    .venv/bin/python bench/core_bench.py            # full (1M jobs, a few minutes)
    .venv/bin/python bench/core_bench.py --quick    # 100k jobs
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from jq_tool.engine.base import JobSpec
from jq_tool.engine.factory import engine_config
from jq_tool.engine.local import LocalEngine
from jq_tool.runtime import tune_gc_for_serving
from jq_tool.settings import Settings


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


async def submits_per_second(data_dir: Path, concurrency: int, seconds: float) -> float:
    engine = LocalEngine(engine_config(Settings(data_dir=data_dir, snapshot_every=10**9)))
    await engine.start()
    done = 0
    stop_at = time.monotonic() + seconds

    async def submitter() -> None:
        nonlocal done
        spec = JobSpec(payload="x" * 100)
        while time.monotonic() < stop_at:
            await engine.submit(spec)
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(submitter() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    await engine.stop()
    return done / elapsed


async def fill(engine: LocalEngine, jobs: int, payload: str) -> None:
    batch = 1000
    for start in range(0, jobs, batch):
        specs = [JobSpec(payload=payload) for _ in range(min(batch, jobs - start))]
        await engine.submit_many(specs)


async def lease_ack_per_second(
    engine: LocalEngine, seconds: float, *, jobs: int | None = None, workers: int = 32
) -> tuple[int, float]:
    """Lease+ack cycles by `workers` concurrent loops, for `seconds` or until `jobs` jobs are
    done; returns (done, elapsed seconds)."""
    done = 0
    stop_at = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < stop_at and (jobs is None or done < jobs):
            leased = await engine.lease("default")
            if not leased:
                return  # the queue is empty: this round is over
            for job in leased:
                await engine.ack(job.id, lease_id=job.lease_id, result=None)
                done += 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return done, time.monotonic() - started


async def lease_ack_per_second_near(engine: LocalEngine, depth: int, seconds: float) -> float:
    """Lease+ack rate with about `depth` jobs queued: refill to `depth` (untimed), drain it
    (timed), until `seconds` of draining have passed."""
    done, elapsed = 0, 0.0
    while elapsed < seconds:
        await fill(engine, depth, "x")
        round_done, round_elapsed = await lease_ack_per_second(engine, seconds, jobs=depth)
        done += round_done
        elapsed += round_elapsed
    return done / elapsed


async def main(args: argparse.Namespace) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="jq-core-bench-", dir=args.dir))
    out: dict[str, float] = {}
    try:
        # Memory first, while the process is fresh: freed arenas of earlier phases would be
        # reused and hide the cost.
        payload = "p" * 16
        gc.collect()
        before = rss_bytes()
        big_dir = root / "big"
        big = LocalEngine(engine_config(Settings(data_dir=big_dir, snapshot_every=10**9)))
        await big.start()
        await fill(big, args.jobs, payload)
        gc.collect()
        per_job = (rss_bytes() - before) / args.jobs - len(payload)
        out["rss_bytes_per_job"] = per_job
        print(f"RSS per queued job beyond payload: {per_job:>8,.0f} bytes", flush=True)
        done, elapsed = await lease_ack_per_second(big, args.seconds)
        out["lease_ack_per_s_big"] = done / elapsed
        print(f"lease+ack/s with {args.jobs:,} queued: {out['lease_ack_per_s_big']:>10,.0f}")
        await big.stop()  # writes a snapshot
        started = time.monotonic()
        again = LocalEngine(engine_config(Settings(data_dir=big_dir, snapshot_every=10**9)))
        await again.start()
        out["restart_s"] = time.monotonic() - started
        print(f"restart with {again.stats().totals.total:,} jobs: {out['restart_s']:.2f} s")
        await again.stop()
        for concurrency in (1, 16, 256):
            rate = await submits_per_second(root / f"s{concurrency}", concurrency, args.seconds)
            out[f"submits_per_s_c{concurrency}"] = rate
            print(f"durable submits/s, {concurrency:>3} submitters: {rate:>10,.0f}", flush=True)

        small = LocalEngine(engine_config(Settings(data_dir=root / "small", snapshot_every=10**9)))
        await small.start()
        out["lease_ack_per_s_1k"] = await lease_ack_per_second_near(small, 1000, args.seconds)
        await small.stop()
        print(f"lease+ack/s with <=1k queued:    {out['lease_ack_per_s_1k']:>10,.0f}", flush=True)

        ratio = out["lease_ack_per_s_big"] / out["lease_ack_per_s_1k"]
        print(f"lease+ack/s ratio, {args.jobs:,} queued vs 1k: {ratio:.2f} (target >= 0.5)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k jobs, 2 s per rate")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--dir", default=os.environ.get("TMPDIR", "/var/tmp"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.jobs = args.jobs or (100_000 if args.quick else 1_000_000)
    args.seconds = args.seconds or (2.0 if args.quick else 5.0)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    tune_gc_for_serving()  # the collector thresholds `jq serve` serves with
    results = asyncio.run(main(args))
    if args.json:
        json.dump(results, sys.stdout)
        print()
