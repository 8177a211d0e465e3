"""Restore probe (a benchmark, not a test): the costs behind docs/fast-restart.md's design for a
restart with a million jobs, measured on jq's own `Job` Structs and msgspec, without a server.

Today a restore decodes every job into a `Job` and indexes them all by id before `/health`
answers. The design keeps each job as its msgpack bytes (`msgspec.Raw`) until it is touched,
finds a cold job by a 64-bit key of its id in a sorted index the snapshot carries, and decodes
the rest in chunks after the start. This prints what each of those steps costs here:

    .venv/bin/python bench/restore_probe.py                 # 1M jobs, best of 3
    .venv/bin/python bench/restore_probe.py --jobs 100000 --markdown
"""

from __future__ import annotations

import argparse
import bisect
import gc
import hashlib
import random
import time
from array import array
from collections.abc import Callable
from typing import TypeVar

import msgspec

from jq_tool.core.job_ids import new_job_id
from jq_tool.core.model import Job, JobState

T = TypeVar("T")
NOW = 1_764_000_000_000
WARM_CHUNK = 10_000  # jobs decoded per turn of the event loop after the start


KEY_BITS = 40  # of an id's key; the other 24 bits of an index entry are the job's position


def id_key(job_id: str) -> int:
    """A stable 40-bit key of any id (not `hash()`: that changes with each process): the last 10
    hex digits of a UUID-shaped id (random in every id jq makes, sharded ones too), else a
    blake2b of the id. Equal keys are told apart by comparing the ids."""
    if len(job_id) == 36 and job_id[23] == "-":
        try:
            return int(job_id[26:], 16)
        except ValueError:
            pass
    digest = hashlib.blake2b(job_id.encode(), digest_size=5).digest()
    return int.from_bytes(digest, "little")


def best_of(rounds: int, step: Callable[[], T]) -> tuple[float, T]:
    best, result = float("inf"), None
    for _ in range(rounds):
        started = time.perf_counter()
        result = step()
        best = min(best, time.perf_counter() - started)
    assert result is not None
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    n, rounds = args.jobs, args.rounds
    gc.disable()  # as a restore runs (StateMachine.restore)
    jobs = [
        Job(id=new_job_id(), queue=f"q{i % 8}", payload=f'{{"n": {i}, "kind": "email"}}',
            priority=0, max_retries=3, attempts=0, state=JobState.READY, created_at=NOW + i,
            run_at=NOW + i, seq=i, owner="dev-client")
        for i in range(n)
    ]  # fmt: skip
    blob = msgspec.msgpack.encode(jobs)
    ids = [job.id for job in jobs]
    rows: list[tuple[str, str]] = []

    def row(what: str, seconds: float, per: int = 0) -> None:
        each = f" ({seconds / per * 1e6:.2f} µs each)" if per else ""
        rows.append((what, f"{seconds:.3f} s{each}"))

    seconds, _ = best_of(rounds, lambda: msgspec.msgpack.decode(blob, type=list[Job]))
    row("today: decode every job into a `Job`", seconds)
    seconds, _ = best_of(rounds, lambda: dict(zip(ids, jobs, strict=True)))
    row("today: the id dict", seconds)
    seconds, raws = best_of(rounds, lambda: msgspec.msgpack.decode(blob, type=list[msgspec.Raw]))
    row("design: every job left as its bytes (`msgspec.Raw`)", seconds)

    shift = 64 - KEY_BITS
    low = (1 << shift) - 1

    def sorted_index() -> array[int]:
        # One int per job, key above position: a plain sort of ints, no key function.
        return array("Q", sorted([id_key(job_id) << shift | p for p, job_id in enumerate(ids)]))

    seconds, index = best_of(1, sorted_index)
    row("design: the sorted id index, made by the snapshot's forked child", seconds)
    packed = index.tobytes()

    def loaded() -> array[int]:
        read = array("Q")
        read.frombytes(packed)
        return read

    seconds, _ = best_of(rounds, loaded)
    row("design: the id index read from the snapshot's bytes", seconds)

    decoder = msgspec.msgpack.Decoder(Job)
    probe = random.sample(range(n), min(n, 50_000))
    started = time.perf_counter()
    for p in probe:
        key = id_key(ids[p]) << shift
        at = bisect.bisect_left(index, key)
        while True:  # equal keys: the one whose id is this one
            job = decoder.decode(raws[index[at] & low])
            if job.id == ids[p]:
                break
            at += 1
    row("design: a cold lookup (key, bisect, decode one job)", time.perf_counter() - started,
        len(probe))  # fmt: skip
    by_id = dict(zip(ids, jobs, strict=True))
    started = time.perf_counter()
    for p in probe:
        assert by_id[ids[p]] is jobs[p]
    row("today: a lookup in the id dict", time.perf_counter() - started, len(probe))

    longest = 0.0
    started = time.perf_counter()
    for first in range(0, n, WARM_CHUNK):
        chunk_started = time.perf_counter()
        warm = [decoder.decode(raw) for raw in raws[first : first + WARM_CHUNK]]
        by_id.update(zip(map(_job_id, warm), warm, strict=True))
        longest = max(longest, time.perf_counter() - chunk_started)
    row(f"design: warming up after the start, {WARM_CHUNK:,} jobs a turn (in all)",
        time.perf_counter() - started)  # fmt: skip
    row("design: the longest turn of that warm-up", longest)

    if args.markdown:
        print(f"| step, {n:,} jobs, best of {rounds} | time |\n|---|---|")
        for what, value in rows:
            print(f"| {what} | {value} |")
    else:
        for what, value in rows:
            print(f"{what}: {value}")


def _job_id(job: Job) -> str:
    return job.id


if __name__ == "__main__":
    main()
