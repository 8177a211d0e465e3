"""A move whose driver dies is finished by another node (docs/scaling.md §2.6, "a crash at every
step"): the node driving the move is stopped after the copy (the test-only pause, between fence
and flip, with the queue fenced and unavailable) and killed with kill -9; once its move lease
lapses, another node resumes the move from the placement record. Afterwards the queue is on the
target shard with every job exactly once, and it serves again."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jq_tool.settings import OPTIONS
from tests.shards.conftest import Sharded, headers, placement, submit
from tests.shards.test_failover import queue_job_ids

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server not installed"),
]

QUEUE = "orphaned-move"
JOBS = 60
RESUMED_WITHIN_S = 60  # the move lease (10 s) lapses, then a node looks every 2 s


@pytest.fixture
def sharded_pausing(tmp_path: Path) -> Iterator[Sharded]:
    """The sharded fixture, its first node's move driver stopping after step 2 (the copy)."""
    cluster = Sharded(tmp_path, forwarder=False)
    cluster.replicas[0].env[OPTIONS["move_pause_after_step"].env] = "2"
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def placement_record(node, queue: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    answer = httpx.get(node.url + "/admin/shards", headers=headers(node), timeout=5)
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["queues"][queue])


def test_another_node_finishes_a_move_whose_driver_was_killed(sharded_pausing: Sharded) -> None:
    driver, a, b = sharded_pausing.replicas
    submitted = set()
    for i in range(JOBS):
        answer = submit(a, QUEUE, f"job-{i}")
        assert answer.status_code == 201, answer.text
        submitted.add(answer.json()["job_id"])
    source = placement(a)[QUEUE]
    target = 1 - source

    # The driver's node takes the move and stops after the copy: the request never answers.
    def move() -> None:
        with contextlib.suppress(httpx.HTTPError):  # its node is killed under it
            httpx.post(
                f"{driver.url}/admin/queues/{QUEUE}/move",
                json={"to": target},
                headers=headers(driver),
                timeout=600,
            )

    threading.Thread(target=move, daemon=True).start()
    deadline = time.monotonic() + 30
    while "move" not in placement_record(a, QUEUE):
        assert time.monotonic() < deadline, "the move was never announced"
        time.sleep(0.1)
    # Fenced: a submit is held for 2 s, then refused as moving (the driver is paused, not dead).
    deadline = time.monotonic() + 30
    while True:
        refused = submit(a, QUEUE, "while-fenced", timeout=10)
        if refused.status_code == 503:
            assert refused.json()["code"] == "queue_moving", refused.text
            break
        assert refused.status_code == 201, refused.text  # before the fence
        submitted.add(refused.json()["job_id"])
        assert time.monotonic() < deadline, "the queue was never fenced"
        time.sleep(0.2)
    record = placement_record(a, QUEUE)
    assert record["shard"] == source and not record["move"].get("committed")  # type: ignore[union-attr]

    killed = time.monotonic()
    driver.kill9()
    deadline = killed + RESUMED_WITHIN_S
    while "move" in (record := placement_record(a, QUEUE)) or record["shard"] != target:
        assert time.monotonic() < deadline, f"nobody resumed the move: {record}"
        time.sleep(0.5)
    resumed_after = time.monotonic() - killed
    assert record["epoch"] == 2

    # Every job exactly once, on the target, on both surviving replicas; the queue serves again.
    for node in (a, b):
        deadline = time.monotonic() + 10
        while placement(node)[QUEUE] != target and time.monotonic() < deadline:
            time.sleep(0.1)
        assert queue_job_ids(node, QUEUE) == submitted
    after = submit(b, QUEUE, "after-the-move")
    assert after.status_code == 201, after.text
    submitted.add(after.json()["job_id"])
    leased: list[str] = []
    with httpx.Client(timeout=10) as http:
        while True:
            answer = http.post(
                a.url + "/jobs/lease",
                json={"queue": QUEUE, "max_jobs": 50, "lease_ms": 60_000},
                headers=headers(a),
            )
            if answer.status_code == 404:
                break
            assert answer.status_code == 200, answer.text
            jobs = answer.json()
            if not jobs:
                break
            leased.extend(job["job_id"] for job in jobs)
    assert len(leased) == len(set(leased)), "a job was handed out twice"
    assert set(leased) == submitted
    print(f"\nmove resumed by another node {resumed_after:.1f} s after its driver's kill -9")
