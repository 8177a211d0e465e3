"""A restart that leaves the runnable jobs cold (core/cold_index.py, issue 20), through a real
LocalEngine and a real `jq serve`: served at once, in lease order, warmed up after the start, and
a kill -9 in the middle of that warm-up loses nothing (it writes nothing)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from jq_tool.core.cold_index import ColdJobs
from jq_tool.engine.base import JobSpec
from jq_tool.engine.factory import engine_config
from jq_tool.engine.local import LocalEngine
from jq_tool.settings import Settings
from tests.conftest import ServerFactory

JOBS = 30_000


def make_engine(data_dir: Path) -> LocalEngine:
    return LocalEngine(engine_config(Settings(data_dir=data_dir)))


async def fill(data_dir: Path, jobs: int) -> dict[str, int]:
    """`jobs` jobs in two queues with random priorities, written and snapshotted by a graceful
    stop; each id's priority."""
    rng = random.Random(20)
    engine = make_engine(data_dir)
    await engine.start()
    priorities: dict[str, int] = {}
    try:
        for start in range(0, jobs, 1000):
            specs = [
                JobSpec(payload=f"j{i}", queue=f"q{i % 2}", priority=rng.choice([0, 0, 3, -1]))
                for i in range(start, min(start + 1000, jobs))
            ]
            outcomes = await engine.submit_many(specs)
            for spec, outcome in zip(specs, outcomes, strict=True):
                priorities[outcome.job_id] = spec.priority
    finally:
        await engine.stop()
    return priorities


async def test_a_restart_serves_cold_jobs_and_warms_them_up_after_the_start(
    tmp_path: Path,
) -> None:
    priorities = await fill(tmp_path, JOBS)
    engine = make_engine(tmp_path)
    await engine.start()
    try:
        jobs = engine._machine._jobs
        # start() returns before the warm-up task has run: the jobs are cold, and served.
        assert isinstance(jobs, ColdJobs) and jobs.cold == JOBS
        assert engine._machine.job_count == JOBS
        some = random.Random(1).sample(sorted(priorities), 20)
        for job_id in some:
            job = await engine.get(job_id)
            assert job is not None and job.priority == priorities[job_id]
        leased = await engine.lease("q0", max_jobs=50)
        assert [job.priority for job in leased] == [3] * 50  # the highest priority first
        for job in leased:
            await engine.ack(job.id, lease_id=job.lease_id, result=None)
        for _ in range(400):  # a chunk per turn of the loop: done within moments
            if jobs.cold == 0:
                break
            await asyncio.sleep(0.01)
        assert jobs.cold == 0
        assert dict.__len__(jobs) == engine._machine.job_count == JOBS
        assert engine.stats().totals.acked == 50
    finally:
        await engine.stop()


@pytest.mark.slow
def test_a_kill9_during_the_warm_up_loses_nothing(
    tmp_path: Path, jq_server_factory: ServerFactory
) -> None:
    data = tmp_path / "data"
    priorities = asyncio.run(fill(data, 150_000))
    server = jq_server_factory("--lease-check-interval", "200ms", data_dir=data)
    with server.client(server.admin_key, timeout=30) as client:
        # At once after /health: answered from the cold state.
        job_id = next(iter(priorities))
        assert client.get(f"/jobs/{job_id}").json()["priority"] == priorities[job_id]
        [job] = client.post("/jobs/lease", json={"queue": "q1", "max_jobs": 1}).json()
        assert job["priority"] == 3
        ack = {"job_id": job["job_id"], "lease_id": job["lease_id"]}
        assert client.post("/jobs/ack", json={"acks": [ack]}).status_code == 200
    server.kill9()
    server.start()
    with server.client(server.admin_key, timeout=30) as client:
        stats = client.get("/stats").json()
        assert stats["acked"] == 1 and stats["runnable"] == 150_000 - 1
        assert client.get(f"/jobs/{job['job_id']}").json()["state"] == "ACKED"
