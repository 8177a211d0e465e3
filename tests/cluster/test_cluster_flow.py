"""Flow control in cluster mode (three `jq serve` nodes over etcd, issue 18): a queue paused on
one node leases nothing on any node, survives a node killed with -9 (its replay) and resumes
everywhere; a fan-in job over 100 parents, acked through several nodes while one is killed
midway and rejoins, runs exactly once, on whichever node leases it, and every node agrees."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from tests.cluster.test_cluster_serve import Cluster, ClusterNode

pytestmark = pytest.mark.slow


def call(node: ClusterNode, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {node.admin_key}"}
    return httpx.request(method, node.url + path, headers=headers, timeout=15, **kwargs)


def lease(node: ClusterNode, queue: str, n: int = 1) -> list[dict[str, Any]]:
    body = {"queue": queue, "max_jobs": n, "lease_ms": 600_000}  # outlives the kill
    response = call(node, "POST", "/jobs/lease", json=body)
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    return list(response.json())


def ack(node: ClusterNode, job: dict[str, Any]) -> None:
    """Ack, retried through the moments a killed member makes etcd answer late (503/504): a
    retry of an ack that landed finds the job ACKED (409), which is what was wanted."""
    path = f"/jobs/{job['job_id']}/ack"
    for _ in range(20):
        response = call(node, "POST", path, json={"lease_id": job["lease_id"]})
        if response.status_code == 200:
            return
        if response.status_code == 409:
            assert call(node, "GET", f"/jobs/{job['job_id']}").json()["state"] == "ACKED"
            return
        assert response.status_code in (503, 504), response.text
        time.sleep(0.5)
    raise AssertionError(f"ack of {job['job_id']} never landed")


def eventually(check: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not replicated in time"
        time.sleep(0.1)


def test_a_pause_holds_on_every_node_across_a_kill9(cluster: Cluster) -> None:
    a, b, c = cluster.nodes
    queue = f"paused-{uuid.uuid4().hex[:6]}"
    jobs = [{"payload": f"{i}", "queue": queue} for i in range(200)]
    assert call(a, "POST", "/jobs/batch", json={"jobs": jobs}).status_code == 201
    assert call(a, "POST", f"/queues/{queue}/pause").json()["paused"] is True
    for node in cluster.nodes:
        eventually(lambda n=node: call(n, "GET", f"/queues/{queue}").json()["paused"])
        assert lease(node, queue, 10) == []
    c.kill9()
    c.spawn()
    c.wait_healthy(60)
    eventually(lambda: call(c, "GET", f"/queues/{queue}").json()["paused"])
    assert lease(c, queue, 10) == []
    assert call(b, "POST", f"/queues/{queue}/resume").json()["paused"] is False
    eventually(lambda: not call(c, "GET", f"/queues/{queue}").json()["paused"])
    leased = 0
    for node in (c, a, b) * 10:
        leased += len(lease(node, queue, 100))
    assert leased == 200


def test_fan_in_over_100_parents_runs_once_with_a_node_killed_midway(cluster: Cluster) -> None:
    a, b, c = cluster.nodes
    parts, sink = f"parts-{uuid.uuid4().hex[:6]}", f"sink-{uuid.uuid4().hex[:6]}"
    jobs = [{"payload": f"part {i}", "queue": parts} for i in range(100)]
    jobs.append({"payload": "sum", "queue": sink, "depends_on": [f"${i}" for i in range(100)]})
    results = call(a, "POST", "/jobs/batch", json={"jobs": jobs}).json()["results"]
    fan_in = results[100]["job_id"]
    leased = lease(b, parts, 100)
    assert len(leased) == 100
    for job in leased[:40]:
        ack(a, job)
    c.kill9()  # a node dies midway
    for job in leased[40:80]:
        ack(b, job)
        assert lease(a, sink) == []
    c.spawn()
    c.wait_healthy(60)
    for job in leased[80:]:
        ack(c, job)  # the rejoined node settles the rest
    eventually(lambda: call(a, "GET", f"/jobs/{fan_in}").json()["state"] == "READY")
    runs = []
    for node in (a, b, c):
        runs += lease(node, sink, 10)
    assert [job["job_id"] for job in runs] == [fan_in]
    ack(a, runs[0])  # any node settles any lease
    for node in cluster.nodes:
        eventually(lambda n=node: call(n, "GET", f"/jobs/{fan_in}").json()["state"] == "ACKED")
        view = call(node, "GET", f"/jobs/{fan_in}").json()
        assert view["attempts"] == 1
        assert lease(node, sink, 10) == []
