"""One module per system measured by `python -m bench`: jq itself and each peer queue.

Each module exposes `measure(settings) -> PeerRun`: it installs nothing, starts what it needs on
loopback, measures, and stops and cleans up what it started even when a step fails. This module
holds what they share: the run settings and the bounded measuring loop (every loop is bounded in
count and in time, so a stuck peer cannot hold the bench).
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.report import Measurement, System


@dataclass(frozen=True)
class Settings:
    quick: bool
    seconds: float  # per rate measurement
    worker_jobs: int  # jobs drained by one worker process, for the slow peers
    worker_seconds: float  # a worker still busy after this is stopped and its done jobs counted
    jq_worker_jobs: int  # jq's worker drains more: it is fast enough to need them for a stable rate
    core_jobs: int  # jobs queued for restart time and RSS per job


@dataclass
class PeerRun:
    system: System
    measurements: list[Measurement] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bounded_rate(step: Callable[[], int], max_jobs: int, seconds: float) -> float:
    """Call `step` (it returns how many jobs it did) until max_jobs or `seconds` are reached;
    returns jobs per second."""
    done = 0
    started = time.perf_counter()
    stop_at = started + seconds
    while done < max_jobs and time.perf_counter() < stop_at:
        done += step()
    elapsed = time.perf_counter() - started
    return done / elapsed if elapsed > 0 else 0.0


def wait_until(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return condition()


def failed(system: System, measures: list[str], reason: str) -> PeerRun:
    """A peer that could not be run: one row per measure saying why, never a number."""
    reason = reason.strip().splitlines()[-1][:160] if reason.strip() else "failed"
    return PeerRun(system, [Measurement(system.name, m, None, note=reason) for m in measures])


def stop_after(process: subprocess.Popen[bytes], seconds: float) -> bool:
    """Wait for `process` up to `seconds`; if it is still running, SIGTERM it (SIGKILL after
    10 s more). True when it had to be stopped."""
    try:
        process.wait(seconds)
        return False
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return True


CLIENT_THREADS = 8  # concurrent client threads for the peers' "concurrent" rows

# A per-thread client: `open()` returns (step, close); step does one unit of work and returns
# how many jobs it did (0: nothing left to do, the thread stops).
OpenStep = Callable[[], tuple[Callable[[], int], Callable[[], None]]]


def threaded_rate(
    open_step: OpenStep, threads: int, seconds: float, max_jobs: int = 2_000_000
) -> float:
    """Jobs/s of `threads` threads, each with its own client, for up to `seconds` or
    max_jobs in all. An error in any thread is raised here, after all have stopped."""
    counts = [0] * threads
    errors: list[BaseException] = []
    stop_at = time.perf_counter() + seconds

    def run(index: int) -> None:
        try:
            step, close = open_step()
        except BaseException as exc:
            errors.append(exc)
            return
        try:
            while counts[index] < max_jobs // threads and time.perf_counter() < stop_at:
                if errors:
                    return
                done = step()
                if done == 0:
                    return
                counts[index] += done
        except BaseException as exc:
            errors.append(exc)
        finally:
            close()

    started = time.perf_counter()
    workers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(seconds + 60)
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return sum(counts) / elapsed if elapsed > 0 else 0.0


REPO = Path(__file__).resolve().parents[2]


def child_env() -> dict[str, str]:
    """The environment for a peer's worker process: it imports its job function from
    bench.peers, so the repository root must be on its path wherever the bench was started."""
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{path}" if path else str(REPO))
