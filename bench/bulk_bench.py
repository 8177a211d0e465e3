"""Bulk requeue benchmark (not a test): does a requeue of many DEAD jobs starve submitters?

Starts a `jq serve`, makes `--jobs` DEAD jobs (100,000 by default), then measures one
sequential submitter's latency (each submit waits for its durable answer) for a few seconds
alone, and again while `POST /jobs/bulk {"action": "requeue"}` requeues them all (chunks of
500, one logged command each, one at a time). Prints the latency percentiles of both phases,
their ratios, and the bulk action's duration.

    .venv/bin/python bench/bulk_bench.py [--jobs 100000] [--seconds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from jq_tool.sdk import Client


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_dead(url: str, client_key: str, worker_key: str, queue: str, n: int) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {client_key}"}) as c:
        for start in range(0, n, 1000):
            jobs = [{"payload": "x", "queue": queue, "max_retries": 0}] * min(1000, n - start)
            c.post("/jobs/batch", json={"jobs": jobs}, timeout=60).raise_for_status()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {worker_key}"}) as w:
        left = n
        while left:
            leased = w.post("/jobs/lease", json={"queue": queue, "max_jobs": 100}, timeout=60)
            jobs = leased.json()
            acks = [{"job_id": j["job_id"], "lease_id": j["lease_id"], "result_error": "boom"}
                    for j in jobs]  # fmt: skip
            w.post("/jobs/ack", json={"acks": acks}, timeout=60).raise_for_status()
            left -= len(jobs)


def submit_latencies(client: Client, until: threading.Event | float) -> list[float]:
    latencies = []
    while not (until.is_set() if isinstance(until, threading.Event) else time.monotonic() > until):
        started = time.perf_counter()
        client.submit("probe", queue="probe")
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def summary(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "count": len(values),
        "p50_ms": statistics.median(values),
        "p99_ms": values[min(len(values) - 1, int(len(values) * 0.99))],
        "max_ms": values[-1],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    jq = Path(sys.executable).parent / "jq"
    with tempfile.TemporaryDirectory(
        prefix="jq-bulk-", dir=os.environ.get("TMPDIR", "/var/tmp")
    ) as tmp:  # noqa: E501
        port = free_port()
        log = Path(tmp) / "serve.log"
        env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "PORT", "WAL_DIR"}}
        with log.open("wb") as out:
            server = subprocess.Popen(
                [str(jq), "serve", "--port", str(port), "--data-dir", str(Path(tmp) / "data")],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.05)
            keys = dict(re.findall(r"Created (\w+) key: (\S+)", log.read_text()))
            made = time.monotonic()
            make_dead(url, keys["client"], keys["worker"], "bulk", args.jobs)
            made = time.monotonic() - made
            with Client(url, keys["client"], timeout=60) as client:
                submit_latencies(client, time.monotonic() + 0.5)  # warm up
                alone = submit_latencies(client, time.monotonic() + args.seconds)
                done = threading.Event()
                answer: dict[str, object] = {}

                def bulk() -> None:
                    started = time.monotonic()
                    with httpx.Client(
                        base_url=url, headers={"Authorization": f"Bearer {keys['client']}"}
                    ) as c:
                        body = {"action": "requeue", "queue": "bulk"}
                        answer.update(c.post("/jobs/bulk", json=body, timeout=600).json())
                    answer["seconds"] = time.monotonic() - started
                    done.set()

                thread = threading.Thread(target=bulk)
                thread.start()
                during = submit_latencies(client, done)
                thread.join()
        finally:
            server.terminate()
            server.wait(60)
    result = {
        "dead_jobs": args.jobs,
        "made_in_s": round(made, 1),
        "bulk": answer,
        "submit_alone": summary(alone),
        "submit_during_bulk": summary(during),
    }
    a, d = result["submit_alone"], result["submit_during_bulk"]
    result["ratios_during_over_alone"] = {
        k: round(d[k] / a[k], 2) for k in ("p50_ms", "p99_ms", "max_ms")
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
