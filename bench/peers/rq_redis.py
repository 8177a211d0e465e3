"""RQ on the machine's Redis (127.0.0.1:6379, DB 13, flushed before and after, nothing else
touched): enqueue one by one, enqueue_many in batches of 100, and one SimpleWorker process
draining the queue in burst mode.
"""

from __future__ import annotations

import subprocess
import sys
import time

from bench.peers import PeerRun, Settings, bounded_rate, failed, stop_after
from bench.peers.redis_config import REDIS_URL, durability, version
from bench.report import Measurement, System

DB = 13
QUEUE = "jq-bench"
BATCH = 100
NOOP = "bench.peers.rq_redis.noop"  # by path: the worker imports it, and so may __main__

WORKER_CODE = """
import sys
from redis import Redis
from rq import Queue, SimpleWorker
connection = Redis.from_url(sys.argv[1])
queue = Queue(sys.argv[2], connection=connection)
worker = SimpleWorker([queue], connection=connection)
worker.work(burst=True, max_jobs=int(sys.argv[3]), logging_level="WARNING")
"""


def noop() -> None:
    """The job RQ runs: imported by the worker process by its dotted path."""


def measure(settings: Settings) -> PeerRun:
    measures = ["submit_single", "submit_batch", "worker"]
    try:
        import rq
        from redis import Redis
    except ImportError as exc:
        return failed(System("RQ", "not installed", "—"), measures, f"not installed: {exc}")
    url = f"{REDIS_URL}/{DB}"
    connection = Redis.from_url(url)
    try:
        system = System("RQ", f"rq {rq.__version__}, {version(connection)}", durability(connection))
    except Exception as exc:
        return failed(System("RQ", rq.__version__, "—"), measures, f"Redis: {exc}")
    try:
        connection.flushdb()
        return PeerRun(system, run_measures(settings, url, connection, system.name))
    except Exception as exc:  # the row says what broke; the bench goes on
        return failed(system, measures, f"{type(exc).__name__}: {exc}")
    finally:
        connection.flushdb()
        connection.close()


def run_measures(settings: Settings, url: str, connection: object, name: str) -> list[Measurement]:
    from rq import Queue

    queue = Queue(QUEUE, connection=connection)  # type: ignore[arg-type]
    out: list[Measurement] = []
    cap = 1_000_000

    def enqueue_one() -> int:
        queue.enqueue(NOOP)
        return 1

    rate = bounded_rate(enqueue_one, cap, settings.seconds)
    out.append(Measurement(name, "submit_single", rate, "1 client thread, queue.enqueue()"))

    def enqueue_many() -> int:
        queue.enqueue_many([Queue.prepare_data(NOOP) for _ in range(BATCH)])
        return BATCH

    rate = bounded_rate(enqueue_many, cap, settings.seconds)
    out.append(Measurement(name, "submit_batch", rate, f"1 client thread, enqueue_many of {BATCH}"))

    connection.flushdb()  # type: ignore[attr-defined]
    jobs = settings.worker_jobs
    for _ in range(jobs // BATCH):
        queue.enqueue_many([Queue.prepare_data(NOOP) for _ in range(BATCH)])
    started = time.perf_counter()
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER_CODE, url, QUEUE, str(jobs)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    stopped_early = stop_after(worker, settings.worker_seconds)
    elapsed = time.perf_counter() - started
    finished = queue.finished_job_registry.count
    stderr = worker.stderr.read().decode(errors="replace") if worker.stderr else ""
    if finished == 0 or (worker.returncode not in (0, -15) and not stopped_early):
        note = f"worker exit {worker.returncode}, {finished} finished: {stderr[-200:]}"
        out.append(Measurement(name, "worker", None, note=note))
    else:
        setup = f"{finished:,} jobs, one SimpleWorker process (burst), no-op function"
        if stopped_early:
            setup += f", stopped after {settings.worker_seconds:.0f} s"
        out.append(Measurement(name, "worker", finished / elapsed, setup))
    return out
