"""beanstalkd (Debian's package) driven by greenstalk: puts from 8 threads and from one, pipelined
puts, reserve+delete from 8 threads, and one worker process draining a tube.

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
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bench.peers import (
    CLIENT_THREADS,
    OpenStep,
    PeerRun,
    Settings,
    bounded_rate,
    failed,
    free_port,
    threaded_rate,
    wait_until,
)
from bench.report import Measurement, System

PIPELINE = 100  # puts per write on the pipelined connection
BODY = "bench"
TUBE_SUBMIT, TUBE_CYCLE, TUBE_WORKER = "submit", "cycle", "worker"

MODES: dict[str, tuple[list[str], str]] = {
    "fsync": (["-f0"], "binlog fsynced before each reply (-b DIR -f0: fsync on every write)"),
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
    measures = ["submit_single", "submit_one", "submit_batch", "cycle", "worker"]
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

    seconds = settings.seconds
    cap = 2_000_000  # far above what a loopback beanstalkd does in `seconds`
    out: list[Measurement] = []

    rate = threaded_rate(_client(port, TUBE_SUBMIT, _put), CLIENT_THREADS, seconds, cap)
    out.append(Measurement("", "submit_single", rate, f"{CLIENT_THREADS} threads, one put each"))

    rate = threaded_rate(_client(port, TUBE_SUBMIT, _put), 1, seconds, cap)
    out.append(Measurement("", "submit_one", rate, "1 thread, client.put()"))

    rate = pipelined_put_rate(port, TUBE_CYCLE, seconds, cap)
    out.append(Measurement("", "submit_batch", rate, f"1 connection, {PIPELINE} puts per write"))

    rate = threaded_rate(_client(port, TUBE_CYCLE, _reserve_delete), CLIENT_THREADS, seconds, cap)
    out.append(
        Measurement("", "cycle", rate, f"{CLIENT_THREADS} threads, reserve(timeout=0)+delete")
    )

    jobs = settings.worker_jobs
    pipelined_put_rate(port, TUBE_WORKER, 600.0, jobs)  # the backlog; its rate is not reported
    started = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-c", WORKER_CODE, str(port), TUBE_WORKER, str(jobs),
         str(settings.worker_seconds)],
        capture_output=True, text=True, timeout=settings.worker_seconds + 60,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    drained = int(run.stdout.strip() or 0) if run.returncode == 0 else 0
    if run.returncode != 0 or drained == 0:
        note = f"worker exit {run.returncode}, drained {drained}: {run.stderr[-200:]}"
        out.append(Measurement("", "worker", None, note=note))
    else:
        setup = f"{drained:,} jobs, one Python process (greenstalk), reserve+delete one by one"
        if drained < jobs:
            setup += f", stopped after {settings.worker_seconds:.0f} s"
        out.append(Measurement("", "worker", drained / elapsed, setup))
    return out


def _put(client: Any) -> int:
    client.put(BODY)
    return 1


def _reserve_delete(client: Any) -> int:
    import greenstalk

    try:
        job = client.reserve(timeout=0)
    except greenstalk.TimedOutError:
        return 0  # the tube is empty
    client.delete(job)
    return 1


def _client(port: int, tube: str, action: Callable[[Any], int]) -> OpenStep:
    """A greenstalk connection per thread, using and watching `tube`."""
    import greenstalk

    def open_step() -> tuple[Callable[[], int], Callable[[], None]]:
        client = greenstalk.Client(("127.0.0.1", port), use=tube, watch=tube)
        return (lambda: action(client)), client.close

    return open_step


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
