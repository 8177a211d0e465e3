"""The ticker sleeps until the next lease, job or schedule falls due, at most the lease check
interval. It chose that moment when it went to sleep, so a job delayed for less than what was
left of that sleep (submitted with a delay, given back with one, a failed attempt's backoff)
became runnable only when the ticker woke: a 2 s delay was leased after 5 s (the default
interval), while a worker long-polled the queue. A command that makes something due sooner now
wakes the ticker. Here the interval is 60 s, and each must fall due within 10 s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from jq_tool.core.model import JobState
from jq_tool.engine.base import JobSpec
from jq_tool.engine.factory import engine_config
from jq_tool.engine.local import LocalEngine
from jq_tool.settings import Settings

BOUND_S = 10.0  # far less than the interval, far more than the delays


async def until(done: Callable[[], bool]) -> None:
    """Poll the engine's state (reads propose nothing, so they move no clock) for BOUND_S."""
    deadline = time.monotonic() + BOUND_S
    while not done():
        assert time.monotonic() < deadline, "not due before the ticker's planned wake-up"
        await asyncio.sleep(0.02)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[LocalEngine]:
    settings = Settings(data_dir=tmp_path, lease_check_interval_ms=60_000)  # type: ignore[call-arg]
    engine = LocalEngine(engine_config(settings))
    await engine.start()
    await asyncio.sleep(0.1)  # the ticker is asleep, for the whole interval
    yield engine
    await engine.stop()


def runnable(engine: LocalEngine) -> int:
    return engine.stats().totals.runnable


async def test_a_delayed_submit_becomes_runnable_in_its_time(engine: LocalEngine) -> None:
    await engine.submit(JobSpec(payload="later", queue="q", delay_ms=300))
    assert runnable(engine) == 0
    await until(lambda: runnable(engine) == 1)


async def test_a_delayed_release_and_a_retry_become_runnable_in_their_time(
    engine: LocalEngine,
) -> None:
    await engine.submit(JobSpec(payload="x", queue="q", max_retries=3))
    [job] = await engine.lease("q")
    await engine.release(job.id, lease_id=job.lease_id, delay_ms=300)
    assert runnable(engine) == 0
    await until(lambda: runnable(engine) == 1)
    [again] = await engine.lease("q")
    failed = await engine.fail(again.id, lease_id=again.lease_id, error="boom")
    assert failed.state is JobState.RETRY and runnable(engine) == 0  # a backoff of ~1 s
    await until(lambda: runnable(engine) == 1)


async def test_a_short_lease_expires_in_its_time(engine: LocalEngine) -> None:
    await engine.submit(JobSpec(payload="x", queue="q", max_retries=3))
    await engine.lease("q", lease_ms=1_000)
    await until(lambda: engine.stats().totals.running == 0)


async def test_a_ticker_that_outlives_its_engine_ends(tmp_path: Path) -> None:
    """A ticker whose cancel was lost (3.11's wait_for could lose one) looped on "ticker: engine
    is not running" warnings, every MIN_TICK_MS, for as long as the process lived, and the
    stop that awaited it never returned. A ticker stops when its engine stops."""
    settings = Settings(data_dir=tmp_path, lease_check_interval_ms=200)  # type: ignore[call-arg]
    engine = LocalEngine(engine_config(settings))
    await engine.start()
    await engine.submit(JobSpec(payload="x", queue="q"))
    await engine.lease("q", lease_ms=1)  # something due, so each round proposes an Expire
    await engine.stop()
    await asyncio.wait_for(engine._tick_loop(), timeout=BOUND_S)
