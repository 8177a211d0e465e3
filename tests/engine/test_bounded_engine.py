"""Issue 21 at the engine: under a long run the jobs held, the WAL segments on disk and the
idempotency keys stay bounded, and jobs evicted before a crash (no stop, no final snapshot)
still answer from the history store after recovery."""

from __future__ import annotations

from pathlib import Path

from jq_tool.engine.base import JobSpec
from jq_tool.engine.factory import engine_config
from jq_tool.engine.local import LocalEngine
from jq_tool.settings import Settings


def make_engine(data_dir: Path, **overrides: int) -> LocalEngine:
    settings = Settings(data_dir=data_dir, **overrides)  # type: ignore[arg-type]
    return LocalEngine(engine_config(settings))


BOUNDS = dict(max_finished=50, max_idempotency_keys=40, snapshot_every=200,
              segment_bytes=16 * 1024, lease_check_interval_ms=3_600_000)  # fmt: skip


async def run_jobs(engine: LocalEngine, count: int, start: int = 0) -> list[str]:
    ids = []
    for i in range(start, start + count):
        outcome = await engine.submit(JobSpec(payload=f"p{i}", idempotency_key=f"k{i}"))
        assert outcome.job_id is not None
        ids.append(outcome.job_id)
        (job,) = await engine.lease("default")
        await engine.ack(job.id, lease_id=job.lease_id, result=f"r{i}")
        if i % 25 == 24:
            await engine._tick(engine.config.retention_ms)  # the ticker's round, on demand
    return ids


def wal_files(data_dir: Path) -> list[Path]:
    return [p for p in data_dir.iterdir() if p.suffix in (".wal", ".snap", ".seg")]


async def test_memory_wal_and_keys_stay_bounded_over_a_long_run(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, **BOUNDS)
    await engine.start()
    try:
        await run_jobs(engine, 500)
        files_then = len(list(tmp_path.iterdir()))
        await run_jobs(engine, 1500, start=500)
        held = engine.retention_stats()
        assert engine._machine.job_count <= 50 + 25
        assert held.idempotency_keys <= 40 + 25
        assert held.evicted >= 1900
        # Snapshots cover the log: old segments are deleted, so the directory does not grow.
        assert len(list(tmp_path.iterdir())) <= files_then + 2
    finally:
        await engine.stop()


async def test_jobs_evicted_before_a_crash_answer_after_recovery(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, **BOUNDS)
    await engine.start()
    ids = await run_jobs(engine, 400)
    # As after a crash (see test_local_engine): no stop(), no final snapshot, no history flush
    # beyond what snapshots forced.
    assert engine._flusher and engine._ticker and engine._wal_thread
    engine._flusher.cancel()
    engine._ticker.cancel()
    engine._wal_thread.close()
    engine._wal.close()
    engine.history._closing = True  # the writer thread stops without writing what waits
    with engine.history._lock:
        engine.history._pending.clear()
        engine.history._wake.notify()

    again = make_engine(tmp_path, **BOUNDS)
    await again.start()
    try:
        for i, job_id in enumerate(ids):
            job = await again.get(job_id) or await again.get_finished(job_id)
            assert job is not None, i
            assert job.result == f"r{i}"
    finally:
        await again.stop()
