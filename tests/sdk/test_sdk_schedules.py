"""The schedule methods of Client and AsyncClient against a real `jq serve`: typed Schedule
results, paging, the typed exceptions (ScheduleExists, ScheduleNotFound, BadRequest naming
the field), a retried create answering the same schedule, and a running schedule's jobs
carrying their schedule and due time."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest

from jq_tool.sdk import (
    AsyncClient,
    BadRequest,
    Client,
    Schedule,
    ScheduleExists,
    ScheduleNotFound,
)
from sdk.jq_server_process import ServerProcess


def name() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client(jq_server: ServerProcess) -> Client:
    with Client(jq_server.url, jq_server.client_key) as c:
        yield c  # type: ignore[misc]


def test_create_get_update_pause_resume_delete(client: Client) -> None:
    n = name()
    created = client.create_schedule(
        n, "0 6 * * 1-5", {"report": "weekday"}, timezone="America/New_York",
        queue="reports", priority=3, overlap="skip", missed="run_once", grace=timedelta(minutes=5),
    )  # fmt: skip
    assert isinstance(created, Schedule)
    assert (created.name, created.timezone, created.payload) == (
        n,
        "America/New_York",
        '{"report":"weekday"}',
    )
    assert (created.overlap, created.missed, created.grace_ms) == ("skip", "run_once", 300_000)
    assert created.next_fire_at is not None and created.next_fire_at.hour in (10, 11)
    assert client.create_schedule(n, "0 6 * * 1-5", {"report": "weekday"},
                                  timezone="America/New_York", queue="reports", priority=3,
                                  overlap="skip", missed="run_once",
                                  grace=300) == created  # fmt: skip
    with pytest.raises(ScheduleExists):
        client.create_schedule(n, "@daily", "other")

    shown = client.get_schedule(n)
    assert len(shown.upcoming) == 5 and shown.upcoming[0] == shown.next_fire_at
    changed = client.update_schedule(n, cron="@hourly", grace=10)
    assert changed.cron == "@hourly" and changed.grace_ms == 10_000 and changed.version == 2
    assert client.pause_schedule(n).paused
    assert client.get_schedule(n).upcoming == []
    assert not client.resume_schedule(n).paused
    assert client.delete_schedule(n).name == n
    with pytest.raises(ScheduleNotFound):
        client.get_schedule(n)
    with pytest.raises(ScheduleNotFound):
        client.delete_schedule(n)


def test_bad_definitions_raise_bad_request_naming_the_field(client: Client) -> None:
    with pytest.raises(BadRequest) as refused:
        client.create_schedule(name(), "61 * * * *", "p")
    assert refused.value.field == "cron"
    with pytest.raises(BadRequest) as refused:
        client.create_schedule(name(), "@daily", "p", timezone="Mars/Olympus")
    assert refused.value.field == "timezone"
    with pytest.raises(ValueError):
        client.create_schedule(name(), "@daily", "p", grace=-1)


def test_iter_schedules_follows_the_pages(client: Client) -> None:
    prefix = name()
    made = [f"{prefix}-{i}" for i in range(5)]
    for n in made:
        client.create_schedule(n, "@daily", "p")
    seen = [s.name for s in client.iter_schedules(page_size=2) if s.name.startswith(prefix)]
    assert seen == made
    page = client.list_schedules(limit=1)
    assert len(page.schedules) == 1 and page.next_cursor == page.schedules[0].name


def test_a_running_schedule_makes_jobs_that_name_it(client: Client, queue: str) -> None:
    n = name()
    client.create_schedule(n, "* * * * * *", "tick", queue=queue)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not client.list(queue=queue).jobs:
            time.sleep(0.2)
        [listed, *_] = client.list(queue=queue).jobs
        job = client.get(listed.job_id)
        assert job.schedule == n and job.schedule_due_at is not None
        assert job.schedule_due_at.microsecond == 0  # a whole second: the cron's due time
        stats = client.stats()
        assert stats.schedules.count >= 1 and stats.schedules.runs >= 1
    finally:
        client.delete_schedule(n)


async def test_the_async_client_has_the_same_methods(jq_server: ServerProcess) -> None:
    n = name()
    async with AsyncClient(jq_server.url, jq_server.client_key) as client:
        created = await client.create_schedule(n, "*/5 * * * *", "p", paused=True)
        assert created.paused and created.next_fire_at is None
        assert (await client.get_schedule(n)).name == n
        assert (await client.update_schedule(n, priority=2)).priority == 2
        assert not (await client.resume_schedule(n)).paused
        assert (await client.pause_schedule(n)).paused
        assert n in [s.name async for s in client.iter_schedules()]
        assert (await client.list_schedules(cursor=n)).schedules[:1] != [created]
        await client.delete_schedule(n)
        with pytest.raises(ScheduleNotFound):
            await client.get_schedule(n)
