"""Schedules live with their queue (docs/scaling.md §2.6): a schedule is created on its queue's
shard and fired by that shard's ticker; when the queue moves, the schedule moves with it and
fires on the new shard, never again on the old one. Job ids name the shard that made them, so
every run shows where it was fired."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jq_tool.core.job_ids import shard_of_job_id
from tests.shards.conftest import Sharded, headers, placement, submit

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server not installed"),
]

QUEUE = "ticking"
EVERY_2_S = "*/2 * * * * *"


@pytest.fixture
def sharded_replicas(tmp_path: Path) -> Iterator[Sharded]:
    cluster = Sharded(tmp_path, forwarder=False)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def runs(node, queue: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The queue's scheduled jobs: job id -> the due time it ran for."""
    page = httpx.get(
        node.url + "/jobs", params={"queue": queue, "limit": "1000"}, headers=headers(node),
        timeout=10,
    )  # fmt: skip
    assert page.status_code == 200, page.text
    made: dict[str, str] = {}
    for job in page.json()["jobs"]:
        seen = httpx.get(f"{node.url}/jobs/{job['job_id']}", headers=headers(node), timeout=10)
        if "schedule_due_at" in seen.json():
            made[job["job_id"]] = seen.json()["schedule_due_at"]
    return made


def wait_for_runs(node, queue: str, more_than: int) -> dict[str, str]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 60
    while True:
        made = runs(node, queue)
        if len(made) > more_than:
            return made
        assert time.monotonic() < deadline, f"only {len(made)} runs"
        time.sleep(0.5)


def test_a_schedule_fires_on_its_queues_shard_before_and_after_a_move(
    sharded_replicas: Sharded,
) -> None:
    a, b, c = sharded_replicas.replicas
    assert submit(a, QUEUE, "first").status_code == 201
    source = placement(a)[QUEUE]
    target = 1 - source
    created = httpx.post(
        b.url + "/schedules",
        json={"name": "tick", "cron": EVERY_2_S, "payload": "tick", "queue": QUEUE},
        headers=headers(b),
        timeout=10,
    )
    assert created.status_code == 201, created.text
    # A second schedule of the same name, for a queue of the other shard: one namespace.
    other_queue = next(
        q for q in (f"other-{i}" for i in range(50))
        if submit(a, q, "x").status_code == 201 and placement(a)[q] == target
    )  # fmt: skip
    clash = httpx.post(
        c.url + "/schedules",
        json={"name": "tick", "cron": EVERY_2_S, "payload": "tick", "queue": other_queue},
        headers=headers(c),
        timeout=10,
    )
    assert clash.status_code == 409, clash.text

    before = wait_for_runs(a, QUEUE, 1)
    assert {shard_of_job_id(job_id) for job_id in before} == {source}

    moved = httpx.post(
        f"{c.url}/admin/queues/{QUEUE}/move",
        json={"to": target},
        headers=headers(c),
        timeout=60,
    )
    assert moved.status_code == 200, moved.text
    for node in (a, b, c):
        deadline = time.monotonic() + 10
        while placement(node)[QUEUE] != target and time.monotonic() < deadline:
            time.sleep(0.1)
    everything = before | runs(a, QUEUE)
    after = {
        job_id: due
        for job_id, due in wait_for_runs(a, QUEUE, len(everything) + 1).items()
        if job_id not in everything
    }
    assert after and {shard_of_job_id(job_id) for job_id in after} == {target}
    # Each due time fired once, across the move; the runs made before it moved with the queue.
    made = runs(b, QUEUE)
    assert set(made) >= set(before) | set(after)
    assert len(set(made.values())) == len(made)
    # Listed once, from any node, showing the runs of both shards.
    for node in (a, b, c):
        listed = httpx.get(node.url + "/schedules", headers=headers(node), timeout=10).json()
        names = [s["name"] for s in listed["schedules"]]
        assert names == ["tick"], listed
        one = httpx.get(node.url + "/schedules/tick", headers=headers(node), timeout=10).json()
        assert one["queue"] == QUEUE and one["runs"] >= len(before) + len(after)
    deleted = httpx.delete(b.url + "/schedules/tick", headers=headers(b), timeout=10)
    assert deleted.status_code == 200, deleted.text
    assert httpx.get(a.url + "/schedules/tick", headers=headers(a), timeout=10).status_code == 404
