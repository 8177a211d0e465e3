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

    .venv/bin/python bench/queues_bench.py
    .venv/bin/python bench/queues_bench.py --queues 20000 --rounds 20 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queues", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--streams", type=int, default=40)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.queues, args.rounds, args.streams)
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:>24}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
