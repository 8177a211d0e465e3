"""Restart time of `jq serve` (a benchmark, not a test): from the moment the process is started
until GET /health answers 200, on a data dir that already holds N queued jobs (written by the
engine and closed gracefully, so restart reads a snapshot; `--crash` leaves them in the WAL as
after a kill -9, so restart replays). The median of several starts; each start's server is
stopped with SIGTERM before the next one. Besides the wall time, the CPU the server's process
spent until it answered (all its threads, from /proc on Linux): steadier than the wall time on a
busy machine, where a start also waits for the other processes' turns.

    .venv/bin/python bench/restart_bench.py --jobs 10000
    .venv/bin/python bench/restart_bench.py --jobs 1000000 --starts 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEALTH = b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(HEALTH)
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


async def fill(data_dir: Path, jobs: int, crash: bool) -> None:
    from jq_tool.engine.base import JobSpec
    from jq_tool.engine.factory import engine_config
    from jq_tool.engine.local import LocalEngine
    from jq_tool.settings import Settings

    # No snapshot while filling: with --crash everything must be in the WAL.
    settings = Settings(data_dir=data_dir, snapshot_every=10**9 if crash else 100_000)
    engine = LocalEngine(engine_config(settings))
    await engine.start()
    for start in range(0, jobs, 1000):
        count = min(1000, jobs - start)
        await engine.submit_many([JobSpec(payload=f"job-{start + i}") for i in range(count)])
    if crash:  # as a kill -9 leaves it: no final snapshot, the WAL closed
        assert engine._flusher is not None and engine._ticker is not None
        engine._flusher.cancel()
        engine._ticker.cancel()
        assert engine._wal_thread is not None
        engine._wal_thread.close()
        engine._wal.close()
    else:
        await engine.stop()
    # A data dir that was served holds its key store: a restart opens it (~1 ms), only a first
    # start creates it (~30-90 ms of SQLite schema and journal set-up, fsynced). Without it,
    # every measured start here was a first start of the key store.
    from jq_tool.auth import open_key_store

    keystore = open_key_store(None, data_dir)
    await keystore.close()


def jq_command() -> list[str]:
    binary = Path(sys.executable).parent / "jq"
    return [str(binary)] if binary.exists() else [sys.executable, "-m", "jq_tool.cli.main"]


def cpu_seconds(pid: int) -> float | None:
    """CPU time of every thread the process has now (schedstat: ns on a CPU); None off Linux."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as file:
                total += int(file.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


def one_start(data_dir: Path, timeout_s: float = 120.0) -> tuple[float, float | None]:
    """Seconds from the start to a healthy /health, and the server's CPU seconds until then."""
    port = free_port()
    # As installed: bytecode cached (a shell or CI may say PYTHONDONTWRITEBYTECODE, which would
    # make every start compile jq's modules from source again).
    unwanted = {"REDIS_URL", "PORT", "WAL_DIR", "PYTHONDONTWRITEBYTECODE"}
    env = {k: v for k, v in os.environ.items() if k not in unwanted}
    started = time.perf_counter()
    process = subprocess.Popen(
        [*jq_command(), "serve", "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(data_dir), "--no-seed-keys"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        while not healthy(port):
            if process.poll() is not None:
                raise RuntimeError(f"jq serve exited with {process.returncode}")
            if time.perf_counter() - started > timeout_s:
                raise RuntimeError(f"not healthy after {timeout_s:.0f} s")
            time.sleep(0.002)
        return time.perf_counter() - started, cpu_seconds(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure(
    jobs: int, starts: int, crash: bool, base: str | None = None
) -> dict[str, float | None]:
    with tempfile.TemporaryDirectory(prefix="jq-restart-", dir=base) as tmp:
        data = Path(tmp) / "data"
        filled = Path(tmp) / "filled"
        asyncio.run(fill(filled, jobs, crash))
        times, cpus = [], []
        for start in range(starts + 1):
            # Each start gets the data dir as it was filled: a graceful stop would otherwise
            # turn the crash case into a snapshot case after the first start.
            if data.exists():
                shutil.rmtree(data)
            shutil.copytree(filled, data)
            took, cpu = one_start(data)
            if start:  # the first start writes the bytecode cache, as an install would have
                times.append(took)
                if cpu is not None:
                    cpus.append(cpu)
    return {
        "jobs": jobs,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "cpu_median_s": statistics.median(cpus) if cpus else None,
        "cpu_min_s": min(cpus) if cpus else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--crash", action="store_true", help="replay a WAL, no snapshot")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.jobs, args.starts, args.crash)
    if args.json:
        print(json.dumps(result))
    else:
        how = "replaying the WAL" if args.crash else "from a snapshot"
        cpu = ""
        if result["cpu_median_s"] is not None and result["cpu_min_s"] is not None:
            cpu = (
                f"; the server's CPU until then median {result['cpu_median_s']:.3f} s, "
                f"least {result['cpu_min_s']:.3f} s"
            )
        print(
            f"jq serve to a healthy /health with {args.jobs:,} jobs ({how}): "
            f"median {result['median_s']:.3f} s, best {result['min_s']:.3f} s "
            f"of {args.starts} starts{cpu}"
        )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
