"""What a queue move costs (docs/scaling.md §2.6), on two in-process LocalEngine shards (a
benchmark, not a test): the queue is unavailable from its fence to the flip, and that is the
time it takes to export its jobs, log them on the target in ImportJobs chunks and adopt them.

    .venv/bin/python -m bench.scaling.move_cost --jobs 10000 100000

Each size: a fresh pair of shards in a temp dir, N jobs of a 100-byte payload with an
idempotency key each, a quarter of them leased; then one move, timed step by step (the medians
of --rounds moves, the queue going back and forth).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from jq_tool.core.model import AdoptQueue, StartShard
from jq_tool.engine.base import JobSpec
from jq_tool.engine.factory import engine_config
from jq_tool.engine.local import LocalEngine
from jq_tool.engine.moves import EngineShard, Placement, QueueMover, Versioned
from jq_tool.settings import Settings


class DictPlacement:
    def __init__(self) -> None:
        self.records: dict[str, tuple[Placement, int]] = {}
        self.revision = 0

    async def get(self, queue: str) -> Versioned:
        record, revision = self.records.get(queue, (None, 0))
        return Versioned(record, revision)

    async def cas(self, queue: str, expected_revision: int, record: Placement) -> bool:
        if self.records.get(queue, (None, 0))[1] != expected_revision:
            return False
        self.revision += 1
        self.records[queue] = (record, self.revision)
        return True


async def one_size(jobs: int, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        engines = {}
        for shard in (1, 2):
            settings = Settings(data_dir=Path(tmp) / f"shard-{shard}")  # type: ignore[call-arg]
            engines[shard] = LocalEngine(engine_config(settings))
            await engines[shard].start()
            await engines[shard].propose(StartShard(shard))
        await engines[1].propose(AdoptQueue("q", 1))
        placement = DictPlacement()
        await placement.cas("q", 0, Placement(1))
        for start in range(0, jobs, 1000):
            specs = [
                JobSpec(payload="x" * 100, queue="q", idempotency_key=f"k{start + i}")
                for i in range(min(1000, jobs - start))
            ]
            await engines[1].submit_many(specs)
        await engines[1].lease("q", max_jobs=jobs // 4, lease_ms=3_600_000)
        marks: dict[int, float] = {}

        async def mark(step: int) -> None:
            marks[step] = time.perf_counter()

        shards = {n: EngineShard(e) for n, e in engines.items()}
        results: dict[str, list[float]] = {"unavailable_s": [], "copy_s": [], "total_s": []}
        for round_ in range(rounds):
            target = 2 if round_ % 2 == 0 else 1
            mover = QueueMover(placement, shards, after_step=mark)
            began = time.perf_counter()
            outcome = await mover.move("q", target)
            assert outcome.moved and outcome.jobs == jobs
            results["unavailable_s"].append(marks[4] - marks[0])  # fence .. flip
            results["copy_s"].append(marks[2] - marks[1])
            results["total_s"].append(time.perf_counter() - began)
        for engine in engines.values():
            await engine.stop()
        return {name: statistics.median(values) for name, values in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[10_000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("| jobs | unavailable (fence to flip) s | of which export + import s | whole move s |")
    print("|---|---|---|---|")
    for jobs in args.jobs:
        r = asyncio.run(one_size(jobs, args.rounds))
        print(f"| {jobs:,} | {r['unavailable_s']:.2f} | {r['copy_s']:.2f} | {r['total_s']:.2f} |")


if __name__ == "__main__":
    main()
