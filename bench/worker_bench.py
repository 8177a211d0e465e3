"""Worker throughput, end to end: start a `jq serve`, submit N jobs in batches, run ONE worker
process with a no-op handler, and print jobs/s from the worker's start until the last ack
(target: ≥ 2000 jobs/s per worker process). A benchmark, not a test: it asserts nothing.

    .venv/bin/python bench/worker_bench.py --jobs 20000 --kind async --concurrency 64
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from jq_tool.sdk import Client

WORKER_CODE = """
import sys
from jq_tool.sdk import AsyncWorker, Worker, WorkerOptions

url, key, kind, concurrency = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
batch_ack = sys.argv[5] == "batch"
options = WorkerOptions(concurrency=concurrency, poll_wait=1.0, batch_ack=batch_ack)

def noop(job):
    return None

async def async_noop(job):
    return None

if kind == "async":
    import asyncio
    worker = AsyncWorker(url, key, async_noop, options)
    asyncio.run(worker.run(install_signal_handlers=True))
else:
    Worker(url, key, noop, options).run()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(data_dir: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "jq_tool.cli.serve", "--port", str(port),
             "--data-dir", str(data_dir)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.kill()
    raise SystemExit(f"jq serve did not start:\n{log_path.read_text()}")


def seeded_keys(log_path: Path) -> dict[str, str]:
    return dict(re.findall(r"Created (\w+) key: (\S+)", log_path.read_text()))


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (Linux /proc), to show who the bottleneck is."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--kind", choices=["async", "sync"], default="async")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--no-batch-ack",
        action="store_true",
        help="one ack request per job (the worker before POST /jobs/ack), for comparison",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="jq-worker-bench-") as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log_path = Path(tmp) / "serve.log"
        server = start_server(Path(tmp) / "data", port, log_path)
        try:
            keys = seeded_keys(log_path)
            with Client(url, keys["client"], timeout=60) as client:
                started = time.perf_counter()
                for start in range(0, args.jobs, args.batch):
                    count = min(args.batch, args.jobs - start)
                    client.submit_many([{"payload": str(start + i)} for i in range(count)])
                submit_s = time.perf_counter() - started
                print(f"submitted {args.jobs} jobs in {submit_s:.2f}s "
                      f"({args.jobs / submit_s:,.0f} jobs/s, batches of {args.batch})")  # fmt: skip

                worker_started = time.perf_counter()
                worker = subprocess.Popen(
                    [sys.executable, "-c", WORKER_CODE, url, keys["worker"], args.kind,
                     str(args.concurrency), "single" if args.no_batch_ack else "batch"],
                )  # fmt: skip
                try:
                    while client.stats().acked < args.jobs:
                        if worker.poll() is not None:
                            raise SystemExit("the worker exited early")
                        time.sleep(0.2)
                    work_s = time.perf_counter() - worker_started
                    worker_cpu = cpu_seconds(worker.pid)
                    server_cpu = cpu_seconds(server.pid)
                finally:
                    worker.send_signal(signal.SIGTERM)
                    try:
                        worker.wait(30)
                    except subprocess.TimeoutExpired:
                        worker.kill()
            print(f"one {args.kind} worker process (concurrency {args.concurrency}): "
                  f"{args.jobs} jobs leased+acked in {work_s:.2f}s = "
                  f"{args.jobs / work_s:,.0f} jobs/s (incl. process start)")  # fmt: skip
            print(f"end to end (submit + work): {args.jobs / (submit_s + work_s):,.0f} jobs/s")
            load = os.getloadavg()[0]
            print(f"CPU: worker {worker_cpu:.2f}s, server {server_cpu:.2f}s "
                  f"(load average {load:.1f} on {os.cpu_count()} cores)")  # fmt: skip
        finally:
            if server.poll() is None:
                os.kill(server.pid, signal.SIGTERM)
                try:
                    server.wait(30)
                except subprocess.TimeoutExpired:
                    server.kill()


if __name__ == "__main__":
    main()
