"""The insight commands through a real three-node cluster (issue 19): dead letters grouped the
same on every node (the fingerprint is computed by each node's state machine from the error
the log carries), a group requeued through one node in chunks leaves the same jobs READY on
all three, a progress report and a queue's latency threshold sent to one node are seen on the
others, and explain answers on any node."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.cluster.test_cluster_serve import Cluster, ClusterNode

pytestmark = pytest.mark.slow


def call(node: ClusterNode, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {node.admin_key}"}
    return httpx.request(method, node.url + path, headers=headers, timeout=10, **kwargs)


def eventually(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_insight_holds_on_every_node(cluster: Cluster) -> None:
    n1, n2, n3 = cluster.nodes
    queue = f"imports-{uuid.uuid4().hex[:6]}"
    ids = []
    for i in range(9):
        answer = call(n1, "POST", "/jobs", json={"payload": str(i), "queue": queue,
                                                 "max_retries": 0})  # fmt: skip
        assert answer.status_code == 201, answer.text
        ids.append(answer.json()["job_id"])
        job = call(n1, "POST", "/jobs/lease", json={"queue": queue}).json()
        error = f"ImportError: row {i} bad" if i % 3 else f"KeyError: 'col{i}'"
        call(n1, "POST", f"/jobs/{job['job_id']}/ack",
             json={"lease_id": job["lease_id"], "result_error": error})  # fmt: skip

    def groups(node: ClusterNode) -> list[dict[str, Any]]:
        return list(call(node, "GET", "/dead/groups").json()["groups"])

    eventually(lambda: all(len(groups(n)) == 2 for n in (n2, n3)), "the groups replicate")
    assert groups(n1) == groups(n2) == groups(n3)
    imports = next(g for g in groups(n1) if g["error_type"] == "ImportError")
    assert imports["count"] == 6

    answer = call(n2, "POST", f"/dead/groups/{imports['fingerprint']}/requeue", json={"chunk": 4})
    assert answer.json() == {"action": "requeue", "settled": 6, "commands": 2, "remaining": 0}

    def states(node: ClusterNode) -> list[str]:
        return [call(node, "GET", f"/jobs/{j}").json()["state"] for j in ids]

    expected = ["DEAD" if i % 3 == 0 else "READY" for i in range(9)]
    eventually(lambda: states(n1) == states(n3) == expected, "the requeue replicates")
    assert [g["error_type"] for g in groups(n3)] == ["KeyError"]

    job = call(n3, "POST", "/jobs/lease", json={"queue": queue}).json()
    answer = call(n3, "POST", f"/jobs/{job['job_id']}/progress",
                  json={"progress": 0.5, "note": "half", "lease_id": job["lease_id"]})  # fmt: skip
    assert answer.status_code == 200, answer.text
    eventually(lambda: (call(n1, "GET", f"/jobs/{job['job_id']}").json().get("progress") or {})
               .get("note") == "half", "the progress replicates")  # fmt: skip
    why = call(n2, "GET", f"/jobs/{job['job_id']}/explain").json()
    assert why["reason"] == "running" and why["progress"]["progress"] == 0.5

    assert call(n1, "PUT", f"/queues/{queue}", json={"max_latency_ms": 1000}).status_code == 200
    eventually(lambda: call(n3, "GET", f"/queues/{queue}").json()["max_latency_ms"] == 1000,
               "the threshold replicates")  # fmt: skip
    # Two runnable jobs of the queue wait: every node's /health warns once a second has passed.
    eventually(
        lambda: all("warnings" in httpx.get(n.url + "/health").json() for n in cluster.nodes),
        "every node warns",
    )
