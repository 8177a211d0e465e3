"""Celery on the machine's Redis (127.0.0.1:6379, DB 14, flushed before and after, nothing else
touched): apply_async one by one from 8 threads and from one, and one worker process (`-P solo`:
one process, one task at a time) draining the queue. Celery has no batch publish: a group sends
one message per task, so the batch row says so instead of a number.

This module is also the Celery app the worker process loads (`-A bench.peers.celery_redis`).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

from bench.peers import (
    CLIENT_THREADS,
    PeerRun,
    Settings,
    child_env,
    failed,
    stop_after,
    threaded_rate,
    wait_until,
)
from bench.peers.redis_config import REDIS_URL, durability, version
from bench.report import Measurement, System

DB = 14
QUEUE = "jq-bench"
BROKER_URL = f"{REDIS_URL}/{DB}"

try:
    from celery import Celery

    app = Celery("jqbench", broker=BROKER_URL)
    app.conf.update(
        task_ignore_result=True,  # no result backend: the job's effect is being done
        task_default_queue=QUEUE,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )

    @app.task(name="jqbench.noop")
    def noop() -> None:
        """The job Celery runs."""

except ImportError:  # the row will say Celery is missing
    app = None


def measure(settings: Settings) -> PeerRun:
    measures = ["submit_single", "submit_one", "submit_batch", "worker"]
    if app is None:
        return failed(System("Celery", "not installed", "—"), measures, "celery not installed")
    import celery
    from redis import Redis

    connection = Redis.from_url(BROKER_URL)
    try:
        system = System(
            "Celery", f"celery {celery.__version__}, {version(connection)} broker",
            durability(connection),
        )  # fmt: skip
    except Exception as exc:
        return failed(System("Celery", celery.__version__, "—"), measures, f"Redis: {exc}")
    try:
        connection.flushdb()
        return PeerRun(system, run_measures(settings, connection, system.name))
    except Exception as exc:  # the row says what broke; the bench goes on
        return failed(system, measures, f"{type(exc).__name__}: {exc}")
    finally:
        connection.flushdb()
        connection.close()


def pending(connection: object) -> int:
    """Messages not yet taken by a worker: the queue list plus prefetched-but-unacked ones."""
    queued = int(connection.llen(QUEUE))  # type: ignore[attr-defined]
    unacked = int(connection.hlen("unacked"))  # type: ignore[attr-defined]
    return queued + unacked


def run_measures(settings: Settings, connection: object, name: str) -> list[Measurement]:
    out: list[Measurement] = []

    def open_client() -> tuple[Callable[[], int], Callable[[], None]]:
        def publish() -> int:
            noop.apply_async()
            return 1

        return publish, lambda: None

    rate = threaded_rate(open_client, CLIENT_THREADS, settings.seconds)
    setup = f"{CLIENT_THREADS} client threads, task.apply_async()"
    out.append(Measurement(name, "submit_single", rate, setup))
    rate = threaded_rate(open_client, 1, settings.seconds)
    out.append(Measurement(name, "submit_one", rate, "1 client thread, task.apply_async()"))
    out.append(Measurement(name, "submit_batch", None, note="no batch publish API in Celery"))

    connection.flushdb()  # type: ignore[attr-defined]
    jobs = settings.worker_jobs
    with app.producer_or_acquire() as producer:
        for _ in range(jobs):
            noop.apply_async(producer=producer)
    started = time.perf_counter()
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench.peers.celery_redis", "worker",
         "-P", "solo", "-Q", QUEUE, "--without-heartbeat", "--without-gossip",
         "--without-mingle", "-l", "WARNING"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env(),
    )  # fmt: skip
    drained = (
        wait_until(
            lambda: pending(connection) == 0 or worker.poll() is not None,
            settings.worker_seconds,
            0.02,
        )
        and pending(connection) == 0
    )
    elapsed = time.perf_counter() - started
    done = jobs - pending(connection)
    exited = worker.poll()
    stop_after(worker, 0)
    stderr = worker.stderr.read().decode(errors="replace") if worker.stderr else ""
    if exited is not None or done <= 0:
        note = f"worker exit {exited}, {done} done: {stderr[-200:]}"
        out.append(Measurement(name, "worker", None, note=note))
    else:
        setup = f"{done:,} jobs, one worker process (-P solo), no-op task"
        if not drained:
            setup += f", stopped after {settings.worker_seconds:.0f} s"
        out.append(Measurement(name, "worker", done / elapsed, setup))
    return out
