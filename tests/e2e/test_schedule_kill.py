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
import re
import signal
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


def missed_firings(server: JqServer, name: str) -> list[tuple[int, int, int, bool]]:
    """The firings that counted missed due times, as the server logged them:
    (first due, last due, how many, whether the latest ran)."""
    line = re.compile(
        rf"schedule '{re.escape(name)}' missed (\d+) due time\(s\) from (\S+) to (\S+) "
        r"\(reached past its grace\): (ran the latest once|skipped)"
    )
    return [
        (to_ms(first), to_ms(last), int(count), outcome == "ran the latest once")
        for count, first, last, outcome in line.findall(server.log())
    ]


def account_for_every_second(
    server: JqServer, name: str, queue: str, policy: str, first: int
) -> tuple[list[int], list[tuple[int, int, int, bool]]]:
    """Stop the schedule and check that each second from its first due time to its last is
    one job or one missed run, and each missed run is in a logged firing. Returns the seconds
    without a job and the logged missed firings."""
    stopped = stop_schedule(server, name)
    last = to_ms(stopped["last_due_at"])
    dues = sorted(due_ms(job) for job in jobs_of(server, queue))
    assert len(dues) == len(set(dues)), "a due time fired twice"
    assert all(first <= due <= last for due in dues)
    firings = missed_firings(server, name)
    # Every missed run is in a logged firing, and each firing names its due times.
    assert sum(count for _, _, count, _ in firings) == stopped["missed_runs"], (firings, stopped)
    missed: set[int] = set()
    for from_due, to_due, count, ran in firings:
        assert (to_due - from_due) // SECOND + 1 == count
        assert ran is (policy == "run_once")
        missed |= set(range(from_due, to_due + 1, SECOND))
        if ran:
            assert to_due in dues  # run_once ran the latest of them
    ran_late = {to_due for _, to_due, _, ran in firings if ran}
    gap = [due for due in range(first, last + 1, SECOND) if due not in set(dues)]
    assert gap == sorted(missed - ran_late), (gap, firings)
    assert len(dues) + len(missed) - len(ran_late) == (last - first) // SECOND + 1
    return gap, firings


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
    gap, firings = account_for_every_second(server, name, queue, policy, first)
    # The downtime is one firing of at least 3 missed due times, from within it. (A node on a
    # loaded machine may also reach a due time past the grace before or after: that is a
    # missed run too, logged and accounted for above, CI saw it once.)
    downtime = [f for f in firings if f[2] >= 3]
    assert len(downtime) == 1, firings
    from_due, to_due, _, _ = downtime[0]
    assert down_from - 2 * SECOND <= from_due and to_due <= down_from + 9 * SECOND
    if policy == "run_once":
        # The one run for the missed due times is for the latest of them, right after the gap.
        assert to_due - SECOND in gap and to_due not in gap


def test_a_node_stalled_past_the_grace_counts_and_logs_the_due_times_it_reached_late(
    jq_server_factory: ServerFactory,
) -> None:
    # Not a downtime: the process is stopped (SIGSTOP, as a long GC pause, swapping or an
    # overloaded machine would), so its ticker reaches due times late; past the grace they
    # are missed runs like any other, named in the log.
    server = jq_server_factory("--lease-check-interval", "200ms")
    name, queue = f"stall-{uuid.uuid4().hex[:6]}", f"stall-{uuid.uuid4().hex[:6]}"
    first = to_ms(
        create(server, name=name, queue=queue, payload="p", grace_ms=1000, missed="skip")[
            "next_fire_at"
        ]
    )
    time.sleep(2)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGSTOP)
    time.sleep(4)
    server.proc.send_signal(signal.SIGCONT)
    time.sleep(2)
    gap, firings = account_for_every_second(server, name, queue, "skip", first)
    assert len(gap) >= 2 and any(count >= 2 for _, _, count, _ in firings), firings


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
