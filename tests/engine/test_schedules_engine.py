"""Schedules through a LocalEngine on a real WAL, with the engine's clock in the test's hands:
the real ticker fires each due time once, late runs within the grace are made, missed ones
follow the missed policy, pause/resume and changes start from now, refusals name the field,
and everything survives a restart. Plus the firing plan (engine/firing.py) on its own."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jq_tool.core.model import (
    ErrorCode,
    Job,
    MissedPolicy,
    OverlapPolicy,
    Schedule,
    ScheduleSpec,
)
from jq_tool.engine.base import CommandRejected, InvalidSchedule, ScheduleChanges
from jq_tool.engine.command_engine import MISSED_LINES_PER_ROUND
from jq_tool.engine.cron import CronTimes
from jq_tool.engine.factory import engine_config
from jq_tool.engine.firing import MAX_MISSED_COUNTED, plan_firing
from jq_tool.engine.local import LocalEngine
from jq_tool.settings import Settings

T0 = 1_800_000_000_000  # 2027-01-15T08:00:00Z, a whole minute
MINUTE = 60_000


class Clock:
    def __init__(self) -> None:
        self.now = T0 + 100

    def __call__(self) -> int:
        return self.now


def make_engine(data_dir: Path, clock: Clock) -> LocalEngine:
    settings = Settings(data_dir=data_dir, lease_check_interval_ms=20)  # type: ignore[call-arg]
    return LocalEngine(engine_config(settings), clock=clock)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def engine(tmp_path: Path, clock: Clock) -> AsyncIterator[LocalEngine]:
    engine = make_engine(tmp_path, clock)
    await engine.start()
    yield engine
    await engine.stop()


def spec(name: str = "every-minute", **changes: object) -> ScheduleSpec:
    fields: dict[str, object] = {"name": name, "cron": "* * * * *", "payload": f"{name} run"}
    fields.update(changes)
    return ScheduleSpec(**fields)  # type: ignore[arg-type]


async def settled(engine: LocalEngine, name: str, due: int | None) -> Schedule:
    """Wait until the ticker has brought the schedule's next due time to `due`."""
    for _ in range(500):
        schedule = await engine.get_schedule(name)
        assert schedule is not None
        if schedule.next_due == due:
            return schedule
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} never reached next_due {due}: {schedule}")


async def scheduled_jobs(engine: LocalEngine) -> list[Job]:
    jobs, _ = await engine.list(limit=1000)
    return [job for job in jobs if job.scheduled_by is not None]


async def test_create_computes_the_first_due_time_and_lists(engine: LocalEngine) -> None:
    schedule, created = await engine.create_schedule(spec())
    assert created and schedule.next_due == T0 + MINUTE
    again, created = await engine.create_schedule(spec())
    assert not created and again.created_at == schedule.created_at
    with pytest.raises(CommandRejected) as refused:
        await engine.create_schedule(spec(cron="0 * * * *"))
    assert refused.value.code is ErrorCode.SCHEDULE_EXISTS
    await engine.create_schedule(spec("a-first", cron="@daily", timezone="Europe/Berlin"))
    assert [s.spec.name for s in engine.schedule_page(None, 10)] == ["a-first", "every-minute"]
    daily = await engine.get_schedule("a-first")
    assert daily is not None
    assert engine.schedule_times(daily, 3) == [
        T0 + 15 * 3_600_000 + 0,  # midnight in Berlin is 23:00 UTC: 2027-01-15T23:00Z
        T0 + 39 * 3_600_000,
        T0 + 63 * 3_600_000,
    ]
    stats = engine.schedule_stats()
    assert (stats.count, stats.next_due) == (2, T0 + MINUTE)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "@reboot"}, "cron"),
        ({"cron": "* * */20 * 1L"}, "cron"),  # never comes
        ({"timezone": "Mars/Olympus"}, "timezone"),
    ],
)
async def test_unusable_definitions_are_refused_naming_the_field(
    engine: LocalEngine, changes: dict[str, str], field: str
) -> None:
    with pytest.raises(InvalidSchedule) as refused:
        await engine.create_schedule(spec(**changes))
    assert refused.value.field == field
    await engine.create_schedule(spec())
    with pytest.raises(InvalidSchedule) as refused:
        await engine.update_schedule("every-minute", ScheduleChanges(**changes))  # type: ignore[arg-type]
    assert refused.value.field == field
    assert engine.schedule_stats().count == 1


async def test_the_ticker_fires_each_due_time_once(engine: LocalEngine, clock: Clock) -> None:
    await engine.create_schedule(spec(cron="* * * * * *"))
    for step in range(1, 31):
        clock.now = T0 + step * 1000 + 5
        await settled(engine, "every-minute", T0 + (step + 1) * 1000)
    jobs = await scheduled_jobs(engine)
    dues = Counter(job.scheduled_by.due for job in jobs if job.scheduled_by)
    assert sorted(dues) == [T0 + step * 1000 for step in range(1, 31)]
    assert set(dues.values()) == {1}
    assert {job.payload for job in jobs} == {"every-minute run"}


async def test_late_runs_within_the_grace_are_all_made(engine: LocalEngine, clock: Clock) -> None:
    await engine.create_schedule(spec(cron="* * * * * *", grace_ms=MINUTE))
    clock.now = T0 + 10_500  # ten due times passed at once, all within the grace
    await settled(engine, "every-minute", T0 + 11_000)
    jobs = await scheduled_jobs(engine)
    assert sorted(job.scheduled_by.due for job in jobs if job.scheduled_by) == [
        T0 + s * 1000 for s in range(1, 11)
    ]
    schedule = await engine.get_schedule("every-minute")
    assert schedule is not None and schedule.missed == 0


@pytest.mark.parametrize("policy", [MissedPolicy.SKIP, MissedPolicy.RUN_ONCE])
async def test_missed_due_times_follow_the_missed_policy(
    engine: LocalEngine, clock: Clock, policy: MissedPolicy
) -> None:
    await engine.create_schedule(spec(grace_ms=90_000, missed=policy))
    # Down for ten minutes: due times T0+1m .. T0+8m are more than 90 s late, 9m and 10m not.
    clock.now = T0 + 10 * MINUTE + 5
    schedule = await settled(engine, "every-minute", T0 + 11 * MINUTE)
    assert schedule.missed == 8
    dues = sorted(j.scheduled_by.due for j in await scheduled_jobs(engine) if j.scheduled_by)
    on_time = [T0 + 9 * MINUTE, T0 + 10 * MINUTE]
    if policy is MissedPolicy.RUN_ONCE:
        assert dues == [T0 + 8 * MINUTE, *on_time]  # one run for the missed, the latest
    else:
        assert dues == on_time


async def test_missed_firings_are_logged_a_few_a_round(
    engine: LocalEngine, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    names = [f"s{n}" for n in range(MISSED_LINES_PER_ROUND + 3)]
    for name in names:
        await engine.create_schedule(spec(name, grace_ms=90_000, missed=MissedPolicy.SKIP))
    caplog.set_level(logging.WARNING, logger="jq.engine")
    clock.now = T0 + 10 * MINUTE + 5  # every schedule missed T0+1m .. T0+8m
    for name in names:
        await settled(engine, name, T0 + 11 * MINUTE)
    lines = [r.getMessage() for r in caplog.records if "missed" in r.getMessage()]
    named = [line for line in lines if line.startswith("schedule ")]
    assert len(named) == MISSED_LINES_PER_ROUND, lines
    assert named[0].startswith(
        "schedule 's0' missed 8 due time(s) from 2027-01-15T08:01:00.000Z to "
        "2027-01-15T08:08:00.000Z (reached past its grace): skipped"
    ), named[0]
    assert "3 more schedules missed due times in the same round" in lines[-1], lines


async def test_overlap_skip_passes_over_runs_while_the_last_is_unfinished(
    engine: LocalEngine, clock: Clock
) -> None:
    await engine.create_schedule(spec(overlap=OverlapPolicy.SKIP, queue="slow"))
    clock.now = T0 + MINUTE + 5
    await settled(engine, "every-minute", T0 + 2 * MINUTE)
    [job] = await engine.lease("slow", lease_ms=3_600_000)
    for minute in (2, 3):  # running: both passed over
        clock.now = T0 + minute * MINUTE + 5
        await settled(engine, "every-minute", T0 + (minute + 1) * MINUTE)
    await engine.ack(job.id, lease_id=job.lease_id, result="ok")
    clock.now = T0 + 4 * MINUTE + 5
    schedule = await settled(engine, "every-minute", T0 + 5 * MINUTE)
    assert (schedule.runs, schedule.skipped) == (2, 2)


async def test_pause_resume_and_a_new_expression_start_from_now(
    engine: LocalEngine, clock: Clock
) -> None:
    await engine.create_schedule(spec())
    paused = await engine.update_schedule("every-minute", ScheduleChanges(paused=True))
    assert paused.paused and paused.version == 2
    assert engine.schedule_times(paused, 3) == []
    clock.now = T0 + 30 * MINUTE + 5
    await asyncio.sleep(0.2)
    assert await scheduled_jobs(engine) == []
    resumed = await engine.update_schedule("every-minute", ScheduleChanges(paused=False))
    assert not resumed.paused and resumed.next_due == T0 + 31 * MINUTE
    assert resumed.missed == 0  # what passed while paused was not missed
    changed = await engine.update_schedule(
        "every-minute", ScheduleChanges(cron="0 * * * *", payload="hourly now")
    )
    assert changed.next_due == T0 + 60 * MINUTE and changed.spec.payload == "hourly now"
    # A change that leaves the times alone keeps the next due time.
    kept = await engine.update_schedule("every-minute", ScheduleChanges(priority=7))
    assert kept.next_due == T0 + 60 * MINUTE and kept.spec.priority == 7
    with pytest.raises(CommandRejected) as refused:
        await engine.update_schedule("nobody", ScheduleChanges(paused=True))
    assert refused.value.code is ErrorCode.NOT_FOUND


async def test_delete_stops_firing_and_keeps_the_jobs(engine: LocalEngine, clock: Clock) -> None:
    await engine.create_schedule(spec())
    clock.now = T0 + MINUTE + 5
    await settled(engine, "every-minute", T0 + 2 * MINUTE)
    deleted = await engine.delete_schedule("every-minute")
    assert deleted.runs == 1
    clock.now = T0 + 5 * MINUTE
    await asyncio.sleep(0.2)
    assert len(await scheduled_jobs(engine)) == 1
    with pytest.raises(CommandRejected) as refused:
        await engine.delete_schedule("every-minute")
    assert refused.value.code is ErrorCode.NOT_FOUND


async def test_schedules_survive_a_restart_and_catch_up(tmp_path: Path, clock: Clock) -> None:
    engine = make_engine(tmp_path, clock)
    await engine.start()
    await engine.create_schedule(spec(grace_ms=MINUTE, missed=MissedPolicy.RUN_ONCE))
    clock.now = T0 + MINUTE + 5
    await settled(engine, "every-minute", T0 + 2 * MINUTE)
    await engine.stop()
    clock.now = T0 + 10 * MINUTE + 5  # down for nine minutes
    again = make_engine(tmp_path, clock)
    await again.start()
    try:
        schedule = await settled(again, "every-minute", T0 + 11 * MINUTE)
        # 2m .. 9m are more than a minute late: missed, one run for them (for 9m); 10m on time.
        assert (schedule.runs, schedule.missed) == (3, 8)
        dues = sorted(j.scheduled_by.due for j in await scheduled_jobs(again) if j.scheduled_by)
        assert dues == [T0 + MINUTE, T0 + 9 * MINUTE, T0 + 10 * MINUTE]
    finally:
        await again.stop()


# -- the firing plan on its own ------------------------------------------------------------------


def schedule_at(next_due: int, **changes: object) -> Schedule:
    return Schedule(spec(**changes), False, T0, T0, 1, next_due)


def test_an_on_time_firing_accounts_for_its_due_time_only() -> None:
    times = CronTimes("* * * * *", "UTC")
    firing = plan_firing(schedule_at(T0 + MINUTE), times, T0 + MINUTE + 30_000, "job")
    assert (firing.due, firing.last_due, firing.next_due, firing.job_id, firing.missed) == (
        T0 + MINUTE,
        T0 + MINUTE,
        T0 + 2 * MINUTE,
        "job",
        0,
    )


def test_a_missed_batch_stops_at_the_grace() -> None:
    times = CronTimes("* * * * *", "UTC")
    schedule = schedule_at(T0 + MINUTE, grace_ms=2 * MINUTE)
    firing = plan_firing(schedule, times, T0 + 10 * MINUTE, "job")
    # Due 1m..7m are more than two minutes late; 8m is exactly two minutes late: on time.
    assert (firing.due, firing.last_due, firing.next_due, firing.missed) == (
        T0 + MINUTE,
        T0 + 7 * MINUTE,
        T0 + 8 * MINUTE,
        7,
    )
    assert firing.job_id is None  # the skip policy
    run_once = schedule_at(T0 + MINUTE, grace_ms=2 * MINUTE, missed=MissedPolicy.RUN_ONCE)
    assert plan_firing(run_once, times, T0 + 10 * MINUTE, "job").job_id == "job"


def test_a_long_downtime_is_counted_up_to_a_bound_and_jumps_to_its_end() -> None:
    times = CronTimes("* * * * * *", "UTC")
    now = T0 + 86_400_000  # a day of every second
    firing = plan_firing(schedule_at(T0 + 1000, grace_ms=0), times, now, "job")
    assert firing.missed == MAX_MISSED_COUNTED
    assert firing.last_due == now - 1000 and firing.next_due == now
