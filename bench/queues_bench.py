"""Many queues (not a test): what a server holding jobs in 20,000 queues costs to watch.

Issue 15 found /stats at 2 MB, /metrics at 6 MB taking 1.6 s to build, and /health at 3.7 s
with 40 open /events streams, on a server a client had filled with 20,000 queues. This starts
`jq serve` (JQ_MAX_QUEUES raised to fit), fills that many queues with twenty batch calls, and
measures, on the same server:

- GET /metrics: size and time to answer (the target: under 1 MiB, built in under 50 ms),
- GET /stats: size (the target: under 64 KiB) and time,
- the size of the first /events frame,
- GET /health while 40 /events streams are open.

Times are the median of `--rounds` requests, measured from the client on loopback (they include
the HTTP round trip). The machine is shared and noisy: read them as orders of magnitude.

`--flow` measures instead what flow control (issue 18) costs the lease path, in process on the
engine with its real WAL (as bench/core_bench.py does): lease+ack cycles/s on open queues
with 1,000 queues of which half are blocked (a quarter paused, a quarter at a concurrency
limit of 1), and each cycle also asks a blocked queue for a job (it must answer "none" without
looking at its jobs). Once with `--jobs` queued (1M: half of them in the blocked queues) and
once with at most 1k queued (refilled, as core_bench does); the ratio should stay near 1
(O(log n), blocked queues skipped at the queue level).

    .venv/bin/python bench/queues_bench.py
    .venv/bin/python bench/queues_bench.py --queues 20000 --rounds 20 --json
    .venv/bin/python bench/queues_bench.py --flow --jobs 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.http_bench import start_server, stop_server_process  # noqa: E402


def timed(http: httpx.Client, path: str, rounds: int) -> tuple[float, int]:
    """(median ms, body bytes) of `rounds` GETs."""
    times = []
    size = 0
    for _ in range(rounds):
        started = time.perf_counter()
        response = http.get(path)
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        size = len(response.content)
    return statistics.median(times), size


def run(queues: int, rounds: int, streams: int) -> dict[str, float]:
    os.environ["JQ_MAX_QUEUES"] = str(max(queues, 10_000))
    with tempfile.TemporaryDirectory(prefix="jq-queues-bench-") as tmp:
        server = start_server(
            Path(sys.executable).parent / "jq", Path(tmp) / "data", Path(tmp) / "serve.log"
        )
        try:
            headers = {"Authorization": f"Bearer {server.keys['client']}"}
            with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as http:
                for start in range(0, queues, 1000):
                    jobs = [
                        {"payload": "x", "queue": f"bench-queue-{i:06d}"}
                        for i in range(start, min(start + 1000, queues))
                    ]
                    http.post("/jobs/batch", json={"jobs": jobs}).raise_for_status()
                metrics_ms, metrics_bytes = timed(http, "/metrics", rounds)
                stats_ms, stats_bytes = timed(http, "/stats", rounds)
                with http.stream("GET", "/events") as events:
                    frame = next(line for line in events.iter_lines() if line.startswith("data:"))
                open_streams = []
                for _ in range(streams):
                    client = httpx.Client(base_url=server.base_url, headers=headers, timeout=60)
                    response = client.send(client.build_request("GET", "/events"), stream=True)
                    open_streams.append((client, response))
                time.sleep(2.5)  # let every stream send its frames a few times
                health_ms, _ = timed(http, "/health", rounds)
                for client, response in open_streams:
                    response.close()
                    client.close()
            return {
                "queues": queues,
                "metrics_ms": round(metrics_ms, 1),
                "metrics_kib": round(metrics_bytes / 1024, 1),
                "stats_ms": round(stats_ms, 1),
                "stats_kib": round(stats_bytes / 1024, 1),
                "events_frame_kib": round(len(frame) / 1024, 1),
                "health_ms_with_streams": round(health_ms, 1),
                "streams": streams,
            }
        finally:
            stop_server_process(server.process)


FLOW_QUEUES = 1000


async def _flow_engine(data_dir: Path) -> Any:
    from jq_tool.engine.base import QueueChange
    from jq_tool.engine.factory import engine_config
    from jq_tool.engine.local import LocalEngine
    from jq_tool.settings import Settings

    engine = LocalEngine(engine_config(Settings(data_dir=data_dir, snapshot_every=10**9)))
    await engine.start()
    names = [f"flow-{i:04d}" for i in range(FLOW_QUEUES)]
    for i, name in enumerate(names[FLOW_QUEUES // 2 :]):
        # Half blocked: every other one paused, the rest at a concurrency limit of 1.
        if i % 2:
            await engine.set_queue(QueueChange(name, paused=True))
        else:
            await engine.set_queue(QueueChange(name, concurrency=1))
    return engine, names[: FLOW_QUEUES // 2], names[FLOW_QUEUES // 2 :]


async def _fill(engine: Any, queues: list[str], per_queue: int) -> None:
    from jq_tool.engine.base import JobSpec

    specs = [JobSpec(payload="x", queue=q) for q in queues for _ in range(per_queue)]
    for start in range(0, len(specs), 1000):
        await engine.submit_many(specs[start : start + 1000])


async def _cycles(
    engine: Any, open_queues: list[str], blocked: list[str], seconds: float, jobs: int | None
) -> tuple[int, float]:
    """Lease+ack cycles by 32 workers over the open queues, each also asking a blocked queue
    for a job; returns (cycles, seconds)."""
    done = 0
    stop_at = time.monotonic() + seconds

    async def worker(w: int) -> None:
        nonlocal done
        i = w
        while time.monotonic() < stop_at and (jobs is None or done < jobs):
            i += 32
            assert not await engine.lease(blocked[i % len(blocked)])
            leased = await engine.lease(open_queues[i % len(open_queues)])
            for job in leased:
                await engine.ack(job.id, lease_id=job.lease_id, result=None)
                done += 1
            if not leased:
                await asyncio.sleep(0)  # an empty queue answers without a yield: let others run

    started = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(32)))
    return done, time.monotonic() - started


async def _flow_ratio(jobs: int, seconds: float, root: Path) -> dict[str, float]:
    engine, open_queues, blocked = await _flow_engine(root / "big")
    per_queue = max(jobs // FLOW_QUEUES, 1)
    await _fill(engine, open_queues + blocked, per_queue)
    # The concurrency-limited queues each get one job RUNNING: at their limit.
    for name in blocked[::2]:
        assert await engine.lease(name)
    done, elapsed = await _cycles(engine, open_queues, blocked, seconds, None)
    big = done / elapsed
    held = engine.stats().totals.total
    await engine.stop()

    engine, open_queues, blocked = await _flow_engine(root / "small")
    await _fill(engine, blocked, 1)
    for name in blocked[::2]:
        assert await engine.lease(name)
    done, elapsed = 0, 0.0
    while elapsed < seconds:
        await _fill(engine, open_queues, 1)  # 500 jobs: at most 1k queued with the blocked
        round_done, round_elapsed = await _cycles(
            engine, open_queues, blocked, seconds, len(open_queues)
        )
        done += round_done
        elapsed += round_elapsed
    small = done / elapsed
    await engine.stop()
    return {
        "jobs_queued_big": held,
        "lease_ack_per_s_big": round(big),
        "lease_ack_per_s_1k": round(small),
        "ratio_big_vs_1k": round(big / small, 2),
    }


def run_flow(jobs: int, seconds: float) -> dict[str, float]:
    import asyncio as _asyncio

    from jq_tool.runtime import tune_gc_for_serving

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    tune_gc_for_serving()
    with tempfile.TemporaryDirectory(prefix="jq-flow-bench-", dir="/var/tmp") as tmp:
        return _asyncio.run(_flow_ratio(jobs, seconds, Path(tmp)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queues", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--streams", type=int, default=40)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--flow", action="store_true", help="the flow-control lease ratio")
    parser.add_argument("--jobs", type=int, default=1_000_000, help="with --flow")
    parser.add_argument("--seconds", type=float, default=5.0, help="with --flow")
    args = parser.parse_args(argv)
    if args.flow:
        result = run_flow(args.jobs, args.seconds)
    else:
        result = run(args.queues, args.rounds, args.streams)
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:>24}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
