"""Periodic jobs through real `jq serve` processes killed with SIGKILL (issue 18).

A schedule firing every second for a minute across three `kill -9`s fires each due time exactly
once: every job carries its schedule and due time, and counted by due time they cover every
second from the first to the last, once each (the restarts take less than the schedule's grace,
so a due time that passed while the server was down still runs, late). A downtime longer than
the grace is handled by the missed-run policy: `skip` runs nothing for the missed due times,
`run_once` one job; both account for every second, as a job or as a missed run. The overlap
policy `skip` makes no job while the previous one is unfinished."""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.conftest import JqServer, ServerFactory

pytestmark = pytest.mark.slow

SECOND = 1000


def api(server: JqServer) -> httpx.Client:
    return server.client(server.client_key, timeout=10)


def create(server: JqServer, **fields: Any) -> dict[str, Any]:
    with api(server) as client:
        response = client.post("/schedules", json={"cron": "* * * * * *", **fields})
        assert response.status_code == 201, response.text
        return dict(response.json())


def schedule(server: JqServer, name: str) -> dict[str, Any]:
    with api(server) as client:
        return dict(client.get(f"/schedules/{name}").json())


def jobs_of(server: JqServer, queue: str) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    cursor = None
    with api(server) as client:
        while True:
            params = {"queue": queue, "limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = client.get("/jobs", params=params).json()
            jobs += page["jobs"]
            cursor = page["next_cursor"]
            if cursor is None:
                return jobs


def due_ms(job: dict[str, Any]) -> int:
    from jq_tool.sdk import parse_time

    return int(parse_time(job["schedule_due_at"]).timestamp() * 1000)


def stop_schedule(server: JqServer, name: str) -> dict[str, Any]:
    """Pause it and return it: its runs end with `last_due_at`."""
    with api(server) as client:
        response = client.post(f"/schedules/{name}/pause")
        assert response.status_code == 200, response.text
    return schedule(server, name)


def to_ms(text: str) -> int:
    from jq_tool.sdk import parse_time

    return int(parse_time(text).timestamp() * 1000)


def test_every_second_for_a_minute_across_three_kill9s_fires_each_due_time_once(
    jq_server_factory: ServerFactory,
) -> None:
    server = jq_server_factory("--lease-check-interval", "200ms")
    name, queue = f"tick-{uuid.uuid4().hex[:6]}", f"ticks-{uuid.uuid4().hex[:6]}"
    first = to_ms(create(server, name=name, queue=queue, payload="tick")["next_fire_at"])
    rng = random.Random()
    started = time.monotonic()
    for kill_at in (12, 27, 42):
        # A random moment within the second: sometimes between a due time and its firing.
        time.sleep(max(0.0, kill_at + rng.random() - (time.monotonic() - started)))
        server.kill9()
        time.sleep(rng.uniform(0.5, 2.0))
        server.start()
    time.sleep(max(0.0, 62 - (time.monotonic() - started)))
    last = to_ms(stop_schedule(server, name)["last_due_at"])

    jobs = jobs_of(server, queue)
    assert all(job["schedule"] == name for job in jobs)
    counted = Counter(due_ms(job) for job in jobs)
    doubled = {due: n for due, n in counted.items() if n > 1}
    assert not doubled, f"due times fired more than once: {doubled}"
    expected = set(range(first, last + 1, SECOND))
    assert last - first >= 55 * SECOND
    lost = sorted(expected - set(counted))
    assert not lost, f"due times never fired: {lost}"
    assert set(counted) == expected
    after = schedule(server, name)
    assert after["runs"] == len(expected) and after["missed_runs"] == 0
    assert server.log().count("recovered") >= 4


@pytest.mark.parametrize("policy", ["skip", "run_once"])
def test_a_downtime_longer_than_the_grace_follows_the_missed_run_policy(
    jq_server_factory: ServerFactory, policy: str
) -> None:
    server = jq_server_factory("--lease-check-interval", "200ms")
    name, queue = f"missed-{uuid.uuid4().hex[:6]}", f"missed-{uuid.uuid4().hex[:6]}"
    first = to_ms(
        create(server, name=name, queue=queue, payload="p", grace_ms=2000, missed=policy)[
            "next_fire_at"
        ]
    )
    time.sleep(3)
    server.kill9()
    down_from = int(time.time() * 1000)
    time.sleep(7)
    server.start()
    time.sleep(3)
    stopped = stop_schedule(server, name)
    last = to_ms(stopped["last_due_at"])

    dues = sorted(due_ms(job) for job in jobs_of(server, queue))
    assert len(dues) == len(set(dues)), "a due time fired twice"
    seconds = (last - first) // SECOND + 1
    missed = stopped["missed_runs"]
    assert missed >= 3, stopped
    gap = [due for due in range(first, last + 1, SECOND) if due not in set(dues)]
    # Every second is accounted for: a job, or a missed run (run_once ran one of those).
    if policy == "skip":
        assert len(dues) + missed == seconds
        assert len(gap) == missed
    else:
        assert len(dues) + missed - 1 == seconds
        assert len(gap) == missed - 1
        # The one run for the missed due times is for the latest of them, after the gap.
        late = [due for due in dues if due > gap[-1]]
        assert late and late[0] == gap[-1] + SECOND
    assert all(down_from - 2 * SECOND <= due <= down_from + 9 * SECOND for due in gap)


def test_overlap_skip_makes_no_job_while_the_last_is_unfinished(
    jq_server_factory: ServerFactory,
) -> None:
    server = jq_server_factory("--lease-check-interval", "200ms")
    name, queue = f"overlap-{uuid.uuid4().hex[:6]}", f"overlap-{uuid.uuid4().hex[:6]}"
    create(server, name=name, queue=queue, payload="p", overlap="skip")
    time.sleep(4)
    [only] = jobs_of(server, queue)  # READY, never leased: every later due time skipped
    held = schedule(server, name)
    assert held["runs"] == 1 and held["skipped_runs"] >= 2
    with server.client(server.worker_key, timeout=10) as worker:
        leased = worker.post("/jobs/lease", json={"queue": queue}).json()
        assert leased["job_id"] == only["job_id"]
        time.sleep(2)  # RUNNING: still skipped
        assert len(jobs_of(server, queue)) == 1
        acked = worker.post(
            f"/jobs/{only['job_id']}/ack", json={"result": "ok", "lease_id": leased["lease_id"]}
        )
        assert acked.status_code == 200
    time.sleep(2.5)
    after = stop_schedule(server, name)
    assert len(jobs_of(server, queue)) == after["runs"] == 2
    assert after["skipped_runs"] >= held["skipped_runs"] + 2
