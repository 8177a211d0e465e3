"""Periodic jobs in cluster mode (three `jq serve` nodes over etcd, issue 18): a schedule
created on one node is seen on every node, and its firings survive a ticker failover without
doubling or losing a due time. The node running the ticker is killed with -9 while a schedule
fires every second; another node takes the ticker over (etcd lease, 3 s) and fires the due
times that passed meanwhile (within the grace), and a firing the old ticker had proposed is
applied at most once, since a FireSchedule must name the schedule's next due time. In
process, three engines all firing at once (the worst overlap of two tickers) make each due
time's job once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from jq_tool.core.model import ScheduleSpec
from jq_tool.engine.base import ScheduleChanges
from jq_tool.engine.command_engine import now_ms
from jq_tool.sdk import parse_time
from tests.cluster.test_cluster_engine import cluster_configs, engine_for
from tests.cluster.test_cluster_serve import Cluster, ClusterNode

pytestmark = pytest.mark.slow

SECOND = 1000


def call(node: ClusterNode, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {node.client_key}"}
    return httpx.request(method, node.url + path, headers=headers, timeout=10, **kwargs)


def ms(text: str) -> int:
    return int(parse_time(text).timestamp() * 1000)


def jobs_of(node: ClusterNode, queue: str) -> list[dict[str, Any]]:
    page = call(node, "GET", "/jobs", params={"queue": queue, "limit": 1000}).json()
    assert page["next_cursor"] is None
    return list(page["jobs"])


def wait_for_a_ticker(nodes: list[ClusterNode], timeout: float = 20) -> ClusterNode:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for node in nodes:
            try:
                if node.role() == "leader":
                    return node
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    raise AssertionError("no node runs the ticker")


def test_a_schedule_survives_a_ticker_failover_without_doubling(cluster: Cluster) -> None:
    name, queue = f"tick-{uuid.uuid4().hex[:6]}", f"ticks-{uuid.uuid4().hex[:6]}"
    ticker = wait_for_a_ticker(cluster.nodes)
    other = next(node for node in cluster.nodes if node is not ticker)
    created = call(
        other, "POST", "/schedules",
        json={"name": name, "cron": "* * * * * *", "payload": "tick", "queue": queue},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    first = ms(created.json()["next_fire_at"])
    for node in cluster.nodes:  # replicated: every node knows it
        assert call(node, "GET", f"/schedules/{name}").status_code == 200

    time.sleep(4)
    ticker.kill9()
    survivors = [node for node in cluster.nodes if node is not ticker]
    new_ticker = wait_for_a_ticker(survivors)
    time.sleep(4)  # the new ticker catches up on what passed, then fires on time
    ticker.spawn()
    ticker.wait_healthy(60)
    time.sleep(2)
    paused = call(new_ticker, "POST", f"/schedules/{name}/pause")
    assert paused.status_code == 200, paused.text
    last = ms(paused.json()["last_due_at"])

    for node in cluster.nodes:  # the rejoined node too: the same jobs everywhere
        deadline = time.monotonic() + 15
        while True:
            jobs = jobs_of(node, queue)
            if len(jobs) >= (last - first) // SECOND + 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        counted = Counter(ms(job["schedule_due_at"]) for job in jobs)
        doubled = {due: n for due, n in counted.items() if n > 1}
        assert not doubled, f"due times fired more than once: {doubled}"
        lost = sorted(set(range(first, last + 1, SECOND)) - set(counted))
        assert not lost, f"due times never fired: {lost}"
        assert set(counted) == set(range(first, last + 1, SECOND))
    assert last - first >= 10 * SECOND
    schedule = call(other, "GET", f"/schedules/{name}").json()
    assert schedule["missed_runs"] == 0 and schedule["runs"] == (last - first) // SECOND + 1


async def test_three_tickers_at_once_fire_each_due_time_once(tmp_path: Path) -> None:
    """The worst of a failover, in process: every node fires the due schedules as if each ran
    the ticker (the elected one does too). Their firings of one due time race through etcd;
    the first applied makes the job, the others are refused on every node alike."""
    engines = [engine_for(c, tmp_path) for c in cluster_configs()]
    await asyncio.gather(*(e.start() for e in engines))
    try:
        spec = ScheduleSpec("racing", "* * * * * *", payload="p", queue="racing")
        schedule, _ = await engines[0].create_schedule(spec)
        first = schedule.next_due
        assert first is not None
        deadline = asyncio.get_running_loop().time() + 5
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.gather(*(e._fire_schedules(now_ms()) for e in engines))
            await asyncio.sleep(0.05)
        await engines[1].update_schedule("racing", ScheduleChanges(paused=True))
        for engine in engines:
            await engine._catch_up()
        paused = await engines[2].get_schedule("racing")
        assert paused is not None and paused.last_due is not None
        dues = []
        for engine in engines:
            jobs, _ = await engine.list(queue="racing", limit=1000)
            dues.append(sorted(job.scheduled_by.due for job in jobs if job.scheduled_by))
        assert dues[0] == dues[1] == dues[2]
        assert dues[0] == list(range(first, paused.last_due + 1, SECOND))
        assert len(dues[0]) >= 4
    finally:
        await asyncio.gather(*(e.stop() for e in engines), return_exceptions=True)
