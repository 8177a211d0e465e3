"""beanstalkd (Debian's package) driven by greenstalk: puts from 8 threads, pipelined puts,
reserve+delete from 8 threads, and one worker process draining a tube.

Three binlog settings, each its own server process on loopback with a fresh binlog directory:
`-b DIR -f0` (fsync on every write, comparable to jq), `-b DIR` (its default: fsync at most every
50 ms, so up to 50 ms of acknowledged puts can be lost) and `-b DIR -F` (never fsync).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bench.peers import PeerRun, Settings, bounded_rate, failed, free_port, wait_until
from bench.report import Measurement, System

THREADS = 8
PIPELINE = 100  # puts per write on the pipelined connection
BODY = "bench"
TUBE_SUBMIT, TUBE_CYCLE, TUBE_WORKER = "submit", "cycle", "worker"

MODES: dict[str, tuple[list[str], str]] = {
    "fsync": (["-f0"], "binlog, fsync on every write (-b DIR -f0)"),
    "default": ([], "binlog, fsync at most every 50 ms (-b DIR, its default): a crash may lose "
                    "up to 50 ms of acknowledged puts"),
    "nofsync": (["-F"], "binlog never fsynced (-b DIR -F): acknowledged puts live in the page "
                        "cache; a power loss may lose any of them"),
}  # fmt: skip

WORKER_CODE = """
import sys, time, greenstalk
port, tube, jobs = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
deadline = time.monotonic() + float(sys.argv[4])
done = 0
with greenstalk.Client(("127.0.0.1", port), watch=tube) as client:
    while done < jobs and time.monotonic() < deadline:
        try:
            job = client.reserve(timeout=0)
        except greenstalk.TimedOutError:
            break
        client.delete(job)
        done += 1
print(done)
"""


def system_for(mode: str) -> System:
    labels = {"fsync": "fsync every put", "default": "default fsync", "nofsync": "no fsync"}
    return System(f"beanstalkd ({labels[mode]})", version(), MODES[mode][1])


def version() -> str:
    binary = shutil.which("beanstalkd")
    if binary is None:
        return "not installed"
    run = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    return run.stdout.strip() or run.stderr.strip()


def measure(settings: Settings, mode: str) -> PeerRun:
    system = system_for(mode)
    measures = ["submit_single", "submit_batch", "cycle", "worker"]
    binary = shutil.which("beanstalkd")
    if binary is None:
        return failed(system, measures, "beanstalkd is not installed (apt-get install beanstalkd)")
    try:
        import greenstalk  # noqa: F401
    except ImportError:
        return failed(system, measures, "greenstalk is not installed (pip install greenstalk)")
    with tempfile.TemporaryDirectory(prefix="jq-bench-beanstalkd-", dir="/var/tmp") as tmp:
        port = free_port()
        flags = MODES[mode][0]
        process = subprocess.Popen(
            [binary, "-l", "127.0.0.1", "-p", str(port), "-b", tmp, *flags],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            if not wait_until(lambda: _accepts(port), 10):
                return failed(system, measures, "beanstalkd did not start")
            measured = run_measures(settings, port)
            return PeerRun(system, [replace(m, system=system.name) for m in measured])
        except Exception as exc:  # a peer's failure is a row that says so, not a crash
            return failed(system, measures, f"{type(exc).__name__}: {exc}")
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def run_measures(settings: Settings, port: int) -> list[Measurement]:
    import greenstalk

    seconds = settings.seconds
    cap = 2_000_000  # far above what a loopback beanstalkd does in `seconds`
    out: list[Measurement] = []

    rate = threaded_rate(port, seconds, cap, _put_step(TUBE_SUBMIT))
    out.append(Measurement("", "submit_single", rate, f"{THREADS} threads, one put each"))

    rate = pipelined_put_rate(port, TUBE_CYCLE, seconds, cap)
    out.append(Measurement("", "submit_batch", rate, f"1 connection, {PIPELINE} puts per write"))

    rate = threaded_rate(port, seconds, cap, _reserve_delete_step(TUBE_CYCLE))
    out.append(Measurement("", "cycle", rate, f"{THREADS} threads, reserve(timeout=0)+delete"))

    with greenstalk.Client(("127.0.0.1", port), use=TUBE_WORKER) as client:
        for _ in range(settings.worker_jobs):
            client.put(BODY)
    started = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-c", WORKER_CODE, str(port), TUBE_WORKER, str(settings.worker_jobs),
         str(max(30.0, seconds * 10))],
        capture_output=True, text=True, timeout=max(60.0, seconds * 20),
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    drained = int(run.stdout.strip() or 0) if run.returncode == 0 else 0
    if run.returncode != 0 or drained < settings.worker_jobs:
        out.append(
            Measurement("", "worker", None, note=f"worker drained {drained}: {run.stderr[-200:]}")
        )
    else:
        out.append(
            Measurement(
                "",
                "worker",
                drained / elapsed,
                f"{drained:,} jobs, one Python process (greenstalk), reserve+delete one by one",
            )
        )
    return out


Step = tuple[str, Callable[[Any], int]]  # (tube, one action on a greenstalk.Client)


def _put_step(tube: str) -> Step:
    import greenstalk

    def make(client: greenstalk.Client) -> int:
        client.put(BODY)
        return 1

    return tube, make


def _reserve_delete_step(tube: str) -> Step:
    import greenstalk

    def make(client: greenstalk.Client) -> int:
        try:
            job = client.reserve(timeout=0)
        except greenstalk.TimedOutError:
            return 0
        client.delete(job)
        return 1

    return tube, make


def threaded_rate(port: int, seconds: float, cap: int, step: Step) -> float:
    """Jobs/s of THREADS threads, each with its own connection, for `seconds`."""
    import greenstalk

    tube, action = step
    counts = [0] * THREADS
    stop_at = time.perf_counter() + seconds

    def run(index: int) -> None:
        with greenstalk.Client(("127.0.0.1", port), use=tube, watch=tube) as client:
            while counts[index] < cap // THREADS and time.perf_counter() < stop_at:
                done = action(client)
                if done == 0:
                    return  # the tube is empty
                counts[index] += done

    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    return sum(counts) / (time.perf_counter() - started)


def pipelined_put_rate(port: int, tube: str, seconds: float, cap: int) -> float:
    """Puts/s on one raw connection writing PIPELINE puts at a time and reading the answers."""
    command = f"put 1024 0 60 {len(BODY)}\r\n{BODY}\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"use {tube}\r\n".encode())
        reader = sock.makefile("rb")
        if not reader.readline().startswith(b"USING"):
            raise RuntimeError("beanstalkd refused `use`")

        def step() -> int:
            sock.sendall(command * PIPELINE)
            for _ in range(PIPELINE):
                line = reader.readline()
                if not line.startswith(b"INSERTED"):
                    raise RuntimeError(f"beanstalkd answered {line!r} to a put")
            return PIPELINE

        return bounded_rate(step, cap, seconds)
