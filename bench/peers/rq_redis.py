"""RQ on the machine's Redis (127.0.0.1:6379, DB 13, flushed before and after, nothing else
touched): enqueue one by one from 8 threads and from one, enqueue_many in batches of 100, and
one SimpleWorker process draining the queue in burst mode. A second run does the same on a
redis-server of its own with an fsync before every reply (AOF, appendfsync always).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from bench.peers import (
    CLIENT_THREADS,
    PeerRun,
    Settings,
    bounded_rate,
    child_env,
    failed,
    free_port,
    stop_after,
    threaded_rate,
    wait_until,
)
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


def measure(settings: Settings, durable: bool = False) -> PeerRun:
    """RQ on the machine's Redis; with `durable`, on a redis-server of its own started with
    `--appendonly yes --appendfsync always` (fsync before each reply), for a like-for-like row."""
    name = "RQ (Redis AOF, fsync always)" if durable else "RQ"
    measures = ["submit_single", "submit_one", "submit_batch", "worker"]
    try:
        import rq
    except ImportError as exc:
        return failed(System(name, "not installed", "—"), measures, f"not installed: {exc}")
    if not durable:
        return _measure_on(settings, name, f"{REDIS_URL}/{DB}")
    binary = shutil.which("redis-server")
    if binary is None:
        return failed(System(name, rq.__version__, "—"), measures, "redis-server not installed")
    with tempfile.TemporaryDirectory(prefix="jq-bench-redis-", dir="/var/tmp") as tmp:
        port = free_port()
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp, "--save", "",
             "--appendonly", "yes", "--appendfsync", "always"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            if not wait_until(lambda: _pings(f"redis://127.0.0.1:{port}/0"), 10):
                return failed(System(name, rq.__version__, "—"), measures, "redis did not start")
            return _measure_on(settings, name, f"redis://127.0.0.1:{port}/0")
        finally:
            stop_after(server, 0)


def _pings(url: str) -> bool:
    from redis import Redis

    try:
        with Redis.from_url(url, socket_timeout=1) as connection:
            return bool(connection.ping())
    except Exception:
        return False


def _measure_on(settings: Settings, name: str, url: str) -> PeerRun:
    import rq
    from redis import Redis

    measures = ["submit_single", "submit_one", "submit_batch", "worker"]
    connection = Redis.from_url(url)
    try:
        system = System(name, f"rq {rq.__version__}, {version(connection)}", durability(connection))
    except Exception as exc:
        return failed(System(name, rq.__version__, "—"), measures, f"Redis: {exc}")
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

    def open_client() -> tuple[Callable[[], int], Callable[[], None]]:
        from redis import Redis

        own = Redis.from_url(url)
        own_queue = Queue(QUEUE, connection=own)

        def enqueue_one() -> int:
            own_queue.enqueue(NOOP)
            return 1

        return enqueue_one, own.close

    rate = threaded_rate(open_client, CLIENT_THREADS, settings.seconds, cap)
    setup = f"{CLIENT_THREADS} client threads, queue.enqueue()"
    out.append(Measurement(name, "submit_single", rate, setup))
    rate = threaded_rate(open_client, 1, settings.seconds, cap)
    out.append(Measurement(name, "submit_one", rate, "1 client thread, queue.enqueue()"))

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
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env(),
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
