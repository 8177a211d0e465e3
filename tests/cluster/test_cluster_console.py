"""The console's logged state in cluster mode (three `jq serve` nodes over etcd, issue 17): a
bulk requeue on one node, the worker id a lease names, a job's attempts and the per-minute
history are the same on every node, since each comes from the replicated log; the workers'
last poll is soft state of the node polled."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from tests.cluster.test_cluster_serve import Cluster, ClusterNode

pytestmark = pytest.mark.slow


def call(node: ClusterNode, key: str | None, method: str, path: str, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {key}", **kw.pop("headers", {})}
    response = httpx.request(method, node.url + path, headers=headers, timeout=30, **kw)
    assert response.status_code < 300, response.text
    return response.json()


def eventually(check: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_bulk_attempts_and_history_are_the_same_on_every_node(cluster: Cluster) -> None:
    a, b, c = cluster.nodes
    queue = "cq-" + uuid.uuid4().hex[:8]
    jobs = [{"payload": str(i), "queue": queue, "max_retries": 0} for i in range(1200)]
    for start in (0, 600):
        call(a, a.client_key, "POST", "/jobs/batch", json={"jobs": jobs[start : start + 600]})
    left = 1200
    while left:
        leased = call(b, b.worker_key, "POST", "/jobs/lease",
                      json={"queue": queue, "max_jobs": 100, "wait_ms": 5000},
                      headers={"X-Jq-Worker": "node-b-worker:1:x"})  # fmt: skip
        acks = [{"job_id": j["job_id"], "lease_id": j["lease_id"], "result_error": "ValueError: no"}
                for j in leased]  # fmt: skip
        call(b, b.worker_key, "POST", "/jobs/ack", json={"acks": acks})
        left -= len(leased)

    done = call(c, c.client_key, "POST", "/jobs/bulk", json={"action": "requeue", "queue": queue})
    assert done == {"action": "requeue", "matched": 1200, "changed": 1200, "chunks": 3}

    def same_everywhere() -> None:
        views = [call(n, n.client_key, "GET", f"/queues/{queue}/overview") for n in (a, b, c)]
        assert [(v["runnable"], v["dead"]) for v in views] == [(1200, 0)] * 3
        histories = [
            call(n, n.client_key, "GET", "/stats/history", params={"queue": queue, "window": "24h"})
            for n in (a, b, c)
        ]
        assert {(sum(h["submitted"]), sum(h["failed"])) for h in histories} == {(1200, 1200)}

    eventually(same_everywhere)
    some = call(a, a.client_key, "GET", "/jobs", params={"queue": queue, "limit": 1})["jobs"][0]
    details = [call(n, n.client_key, "GET", f"/jobs/{some['job_id']}") for n in (a, b, c)]
    assert all(d["attempt_history"] == details[0]["attempt_history"] for d in details)
    assert details[0]["attempt_history"][0]["worker"] == "node-b-worker:1:x"
    assert details[0]["attempt_history"][0]["error_class"] == "ValueError"
    # Last seen is what node b saw; node a never heard from the worker (soft state).
    seen_b = call(b, b.client_key, "GET", "/workers")["workers"]
    seen_a = call(a, a.client_key, "GET", "/workers")["workers"]
    assert [w["worker_id"] for w in seen_b] == ["node-b-worker:1:x"] and seen_b[0]["last_seen"]
    assert seen_a == []
