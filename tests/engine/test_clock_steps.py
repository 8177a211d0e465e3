"""The system clock stepped back (NTP correcting a clock that ran ahead, a VM restored, a data
dir from a machine whose clock was ahead): the state machine's clock never goes back, so a
lease, a delay or a backoff measured from the stepped-back wall clock ended before it began.
Every lease expired at the next tick while its worker still ran the job, each expiry spent an
attempt, and the retries came at once: running jobs went DEAD within seconds. The engine now
stamps its commands with the later of the wall clock and the last time it applied, so all of
them keep their lengths (measured from the held clock), and says once a minute why."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from jq_tool.core.model import JobState
from jq_tool.engine.base import JobSpec
from jq_tool.engine.factory import engine_config
from jq_tool.engine.local import LocalEngine
from jq_tool.settings import Settings

T0 = 1_800_000_000_000
LEASE_MS = 30_000
STEP_BACK_MS = 10 * 60_000


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def make_engine(data_dir: Path, clock: Clock) -> LocalEngine:
    settings = Settings(data_dir=data_dir, lease_check_interval_ms=20)  # type: ignore[call-arg]
    return LocalEngine(engine_config(settings), clock=clock)


def clock_behind(engine: LocalEngine) -> float:
    [gauge] = [m for m in engine.metrics() if m.name == "jq_clock_behind_seconds"]
    return float(gauge.samples[0].value)


async def submit(engine: LocalEngine, payload: str, **fields: object) -> str:
    outcome = await engine.submit(JobSpec(payload=payload, queue="q", **fields))  # type: ignore[arg-type]
    assert outcome.job_id is not None, outcome
    return outcome.job_id


async def test_a_clock_stepped_back_ends_no_lease_delay_or_backoff_early(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    engine = make_engine(tmp_path, clock)
    await engine.start()
    try:
        running = await submit(engine, "running")
        failing = await submit(engine, "failing")
        [leased] = await engine.lease("q", lease_ms=LEASE_MS)
        assert leased.id == running
        clock.now = T0 - STEP_BACK_MS
        with caplog.at_level(logging.WARNING, logger="jq.engine"):
            [second] = await engine.lease("q", lease_ms=LEASE_MS)
            assert second.id == failing and second.lease_until == T0 + LEASE_MS
            await engine.fail(failing, lease_id=second.lease_id, error="boom")
            delayed = await submit(engine, "delayed", delay_ms=5_000)
            await asyncio.sleep(0.3)  # ~15 lease checks
        job = await engine.get(running)
        assert job is not None and (job.state, job.attempts) == (JobState.RUNNING, 1)
        retried = await engine.get(failing)
        assert retried is not None and retried.state is JobState.RETRY, retried
        assert retried.run_at is not None and retried.run_at > T0
        waiting = await engine.get(delayed)
        assert waiting is not None and waiting.run_at == T0 + 5_000
        assert await engine.lease("q") == []  # nothing is due before its time
        warnings = [r.getMessage() for r in caplog.records if "clock" in r.getMessage()]
        assert len(warnings) == 1, warnings  # once, not per command
        assert "600.0 s behind" in warnings[0], warnings
        assert clock_behind(engine) == STEP_BACK_MS / 1000  # for an alert (docs/alerts)
        # The wall clock catches up: time moves on from there as before.
        clock.now = T0 + LEASE_MS + 1
        await asyncio.sleep(0.3)
        job = await engine.get(running)
        assert job is not None and job.state is JobState.RETRY  # its lease ran out, in time
        assert clock_behind(engine) == 0
    finally:
        await engine.stop()


async def test_a_restart_on_a_clock_behind_the_log_holds_at_the_log(tmp_path: Path) -> None:
    clock = Clock()
    engine = make_engine(tmp_path, clock)
    await engine.start()
    job_id = await submit(engine, "x")
    await engine.stop()
    clock.now = T0 - STEP_BACK_MS
    engine = make_engine(tmp_path, clock)
    await engine.start()
    try:
        [leased] = await engine.lease("q", lease_ms=LEASE_MS)
        assert leased.id == job_id and leased.lease_until == T0 + LEASE_MS
        await asyncio.sleep(0.3)
        job = await engine.get(job_id)
        assert job is not None and (job.state, job.attempts) == (JobState.RUNNING, 1)
    finally:
        await engine.stop()
