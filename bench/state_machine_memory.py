"""Memory and speed of the state machine with a million queued jobs.

Submits N READY jobs (empty payloads, 26-character ids like the engine's) in batches of 1000
through `apply`, and prints: resident memory per queued job, lease+ack cycles per second with
1k and with N jobs queued, submit throughput, and snapshot/restore times and size for N jobs.
Run: `.venv/bin/python bench/state_machine_memory.py [--jobs 1000000]`.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time

from jq_tool.core.model import Ack, Lease, NewJob, Submit
from jq_tool.core.state_machine import StateMachine

BATCH = 1000
T0 = 1_800_000_000_000


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def job_id(i: int) -> str:
    return f"01J{i:023d}"  # the length of a ULID


def fill(sm: StateMachine, count: int, start: int = 0) -> float:
    """Submit `count` jobs; returns the seconds spent in apply."""
    spent = 0.0
    for first in range(start, start + count, BATCH):
        jobs = [NewJob(job_id(i)) for i in range(first, min(first + BATCH, start + count))]
        command = Submit(T0, jobs)
        began = time.perf_counter()
        sm.apply(command)
        spent += time.perf_counter() - began
    return spent


def lease_ack_rate(sm: StateMachine, cycles: int) -> float:
    """Lease+ack cycles per second; each acked job is replaced so the depth stays put."""
    spent = 0.0
    next_id = 10**9 + sm.job_count
    for i in range(cycles):
        lease = Lease(T0 + 1, "default", 30_000, [f"lease-{i}"])
        began = time.perf_counter()
        (job,) = sm.apply(lease).jobs  # type: ignore[union-attr]
        sm.apply(Ack(T0 + 1, job.id, job.lease_id))
        spent += time.perf_counter() - began
        sm.apply(Submit(T0 + 1, [NewJob(job_id(next_id + i))]))
    return cycles / spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--cycles", type=int, default=50_000)
    parser.add_argument("--restore-from", help="only time and measure restoring this snapshot")
    args = parser.parse_args()
    if args.restore_from:
        measure_restore(args.restore_from)
        return

    small = StateMachine()
    fill(small, 1000)
    rate_small = lease_ack_rate(small, args.cycles)
    del small

    gc.collect()
    base = rss_bytes()
    sm = StateMachine()
    submit_s = fill(sm, args.jobs)
    gc.collect()
    per_job = (rss_bytes() - base) / args.jobs
    print(f"jobs queued           {args.jobs:,}")
    print(f"RSS per READY job     {per_job:.0f} bytes (payload empty)")
    print(f"submit                {args.jobs / submit_s:,.0f} jobs/s (batches of {BATCH})")
    print(f"lease+ack, 1k queued  {rate_small:,.0f} cycles/s")
    print(f"lease+ack, {args.jobs // 1000}k queued {lease_ack_rate(sm, args.cycles):,.0f} cycles/s")

    began, cpu = time.perf_counter(), time.process_time()
    data = sm.snapshot()
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    print(f"snapshot              {wall:.2f} s ({cpu:.2f} s CPU), {len(data) >> 20} MiB")
    del sm
    with tempfile.NamedTemporaryFile(suffix=".snapshot") as file:
        file.write(data)
        file.flush()
        del data
        # A fresh process, so memory freed here does not blur the restored machine's RSS.
        subprocess.run([sys.executable, __file__, "--restore-from", file.name], check=True)


def measure_restore(path: str) -> None:
    with open(path, "rb") as file:
        data = file.read()
    gc.collect()
    base = rss_bytes()
    sm = StateMachine()
    began, cpu = time.perf_counter(), time.process_time()
    sm.restore(data)
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    # CPU time too: on a shared machine the wall clock also measures the neighbours.
    print(f"restore               {wall:.2f} s ({cpu:.2f} s CPU)")
    del data
    gc.collect()
    print(f"RSS per job restored  {(rss_bytes() - base) / sm.job_count:.0f} bytes")


if __name__ == "__main__":
    main()
