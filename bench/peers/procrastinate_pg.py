"""Procrastinate on the machine's PostgreSQL (127.0.0.1:5432, user postgres, trust auth): a
database of its own (created, schema applied, dropped after), defer one by one from 8 threads
and from one, batch_defer of 100, and one worker process (concurrency 1, exits when the queue is
empty) draining the queue.

This module is also the Procrastinate app the worker process imports.
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
    bounded_rate,
    child_env,
    failed,
    stop_after,
    threaded_rate,
)
from bench.report import Measurement, System

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DATABASE = "jq_bench_procrastinate"
DSN = f"postgresql://postgres@127.0.0.1:5432/{DATABASE}"
QUEUE = "jq-bench"
BATCH = 100

WORKER_CODE = """
from bench.peers.procrastinate_pg import app, QUEUE
app.run_worker(queues=[QUEUE], wait=False, concurrency=1, listen_notify=False,
               delete_jobs="never")
"""

try:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=DSN))

    @app.task(name="jqbench.noop", queue=QUEUE)
    def noop() -> None:
        """The job Procrastinate runs."""

except ImportError:  # the row will say Procrastinate is missing
    app = None  # type: ignore[assignment]


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


def _settings() -> tuple[str, str]:
    import psycopg

    with psycopg.connect(DSN, connect_timeout=5) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        commit = conn.execute("SHOW synchronous_commit").fetchone()[0]  # type: ignore[index]
        fsync = conn.execute("SHOW fsync").fetchone()[0]  # type: ignore[index]
    if fsync == "on" and commit in ("on", "remote_apply", "remote_write", "local"):
        durability = (
            f"PostgreSQL commit: WAL fsynced before the reply (fsync={fsync}, "
            f"synchronous_commit={commit}; concurrent commits share a flush)"
        )
    else:
        durability = (
            f"PostgreSQL fsync={fsync}, synchronous_commit={commit}: acknowledged defers "
            "may be lost on a crash"
        )
    return f"PostgreSQL {version}", durability


def measure(settings: Settings) -> PeerRun:
    measures = ["submit_single", "submit_one", "submit_batch", "worker"]
    if app is None:
        return failed(System("Procrastinate", "not installed", "—"), measures, "not installed")
    try:
        _admin(f'DROP DATABASE IF EXISTS "{DATABASE}"')
        _admin(f'CREATE DATABASE "{DATABASE}"')
    except Exception as exc:
        system = System("Procrastinate", procrastinate.__version__, "—")
        return failed(system, measures, f"PostgreSQL: {type(exc).__name__}: {exc}")
    try:
        pg_version, durability = _settings()
        system = System(
            "Procrastinate", f"procrastinate {procrastinate.__version__}, {pg_version}", durability
        )
        try:
            with app.open():
                app.schema_manager.apply_schema()
                return PeerRun(system, run_measures(settings, system.name))
        except Exception as exc:  # the row says what broke; the bench goes on
            return failed(system, measures, f"{type(exc).__name__}: {exc}")
    finally:
        try:
            _admin(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        except Exception as exc:
            print(f"bench: could not drop database {DATABASE}: {exc}", file=sys.stderr)


def _succeeded() -> int:
    import psycopg

    with psycopg.connect(DSN, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
        ).fetchone()
    return int(row[0]) if row else 0


def run_measures(settings: Settings, name: str) -> list[Measurement]:
    out: list[Measurement] = []

    def open_client() -> tuple[Callable[[], int], Callable[[], None]]:
        def defer_one() -> int:
            noop.defer()
            return 1

        return defer_one, lambda: None

    rate = threaded_rate(open_client, CLIENT_THREADS, settings.seconds)
    setup = f"{CLIENT_THREADS} client threads, task.defer() (one shared app)"
    out.append(Measurement(name, "submit_single", rate, setup))
    rate = threaded_rate(open_client, 1, settings.seconds)
    out.append(Measurement(name, "submit_one", rate, "1 client thread, task.defer()"))

    def defer_batch() -> int:
        noop.batch_defer(*([{}] * BATCH))
        return BATCH

    rate = bounded_rate(defer_batch, 1_000_000, settings.seconds)
    out.append(Measurement(name, "submit_batch", rate, f"1 client thread, batch_defer of {BATCH}"))

    import psycopg

    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("DELETE FROM procrastinate_jobs")
    jobs = settings.worker_jobs
    for _ in range(jobs // BATCH):
        noop.batch_defer(*([{}] * BATCH))
    started = time.perf_counter()
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER_CODE],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=child_env(),
    )
    stopped_early = stop_after(worker, settings.worker_seconds)
    elapsed = time.perf_counter() - started
    done = _succeeded()
    stderr = worker.stderr.read().decode(errors="replace") if worker.stderr else ""
    if done == 0 or (worker.returncode != 0 and not stopped_early):
        note = f"worker exit {worker.returncode}, {done} done: {stderr[-200:]}"
        out.append(Measurement(name, "worker", None, note=note))
    else:
        setup = f"{done:,} jobs, one worker process (concurrency 1), no-op task"
        if stopped_early:
            setup += f", stopped after {settings.worker_seconds:.0f} s"
        out.append(Measurement(name, "worker", done / elapsed, setup))
    return out
