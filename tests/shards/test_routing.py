"""Routing in sharded mode: two shards (an etcd group of three each) behind three nodes that each
hold both, and a fourth node that holds none. Queues land on both shards; a job submitted on any
node is leased and acked through any other; the node without shards forwards every request."""

from __future__ import annotations

import shutil

import httpx
import pytest

from tests.shards.conftest import Sharded, headers, placement, submit

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server not installed"),
]


def lease(node, queue: str, wait_ms: int = 0) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    answer = httpx.post(
        node.url + "/jobs/lease",
        json={"queue": queue, "max_jobs": 10, "wait_ms": wait_ms},
        headers=headers(node),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return list(answer.json())


def test_queues_spread_over_both_shards_and_any_node_serves_them(sharded: Sharded) -> None:
    queues = [f"q{i}" for i in range(6)]
    submitted: dict[str, str] = {}
    for i, queue in enumerate(queues):
        node = sharded.nodes[i % len(sharded.nodes)]
        answer = submit(node, queue, f"job-{queue}")
        assert answer.status_code == 201, answer.text
        submitted[answer.json()["job_id"]] = queue
    table = placement(sharded.replicas[0])
    assert set(table) == set(queues)
    assert set(table.values()) == {0, 1}, "new queues go to the least loaded shard"
    for node in sharded.nodes:  # every node agrees (the watch), the forwarder too
        assert placement(node) == table

    # Every job is readable from every node, and leased and acked through other nodes.
    for node in sharded.nodes:
        for job_id, queue in submitted.items():
            got = httpx.get(f"{node.url}/jobs/{job_id}", headers=headers(node), timeout=5)
            assert got.status_code == 200, got.text
            assert got.json()["queue"] == queue
    for i, queue in enumerate(queues):
        worker = sharded.nodes[(i + 1) % len(sharded.nodes)]
        jobs = lease(worker, queue)
        assert [job["payload"] for job in jobs] == [f"job-{queue}"]
        acker = sharded.nodes[(i + 2) % len(sharded.nodes)]
        acked = httpx.post(
            f"{acker.url}/jobs/{jobs[0]['job_id']}/ack",
            json={"lease_id": jobs[0]["lease_id"], "result": "ok"},
            headers=headers(acker),
            timeout=5,
        )
        assert acked.status_code == 200, acked.text
        assert acked.json()["state"] == "ACKED"


def test_the_node_without_shards_forwards_and_says_where(sharded: Sharded) -> None:
    fwd = sharded.forwarder
    assert fwd is not None
    answer = submit(fwd, "forwarded", "via the forwarder")
    assert answer.status_code == 201, answer.text
    assert answer.headers["jq-placement"].startswith("shard=")
    job_id = answer.json()["job_id"]
    jobs = lease(fwd, "forwarded", wait_ms=2000)
    assert [job["job_id"] for job in jobs] == [job_id]
    acked = httpx.post(
        f"{fwd.url}/jobs/{job_id}/ack",
        json={"lease_id": jobs[0]["lease_id"]},
        headers=headers(fwd),
        timeout=5,
    )
    assert acked.status_code == 200 and acked.json()["state"] == "ACKED"
    # A refusal is relayed as it is: an unknown job is the other node's 404.
    missing = httpx.get(
        f"{fwd.url}/jobs/00000000-0000-4000-8000-000000000000", headers=headers(fwd), timeout=5
    )
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    health = httpx.get(fwd.url + "/health", timeout=5)
    assert health.status_code == 200


def test_the_admin_routes_refuse_bad_input_with_4xx(sharded: Sharded) -> None:
    node = sharded.replicas[0]
    assert submit(node, "admin-q", "x").status_code == 201

    def move(body: object, key: str | None = None, queue: str = "admin-q") -> httpx.Response:
        return httpx.post(
            f"{node.url}/admin/queues/{queue}/move",
            json=body,
            headers=headers(node, key),
            timeout=10,
        )

    cases = [
        (move({"to": 7}), 400, "invalid_field"),
        (move({"to": "one"}), 400, None),
        (move({}), 400, None),
        (move({"to": 1}, queue="never-used"), 409, "move_refused"),
        (move({"to": 1}, key=node.client_key), 403, "forbidden"),
        (move({"to": 1}, key="nope"), 401, "unauthorized"),
    ]
    for answer, status, code in cases:
        assert answer.status_code == status, answer.text
        assert "error" in answer.json()
        if code is not None:
            assert answer.json()["code"] == code
    here = placement(node)["admin-q"]
    same = move({"to": here})
    assert same.status_code == 409 and "already" in same.json()["error"]
    shown = httpx.get(node.url + "/admin/shards", headers=headers(node, node.worker_key), timeout=5)
    assert shown.status_code == 403
    # A sharded node's OpenAPI document lists these routes (a single node's does not).
    paths = httpx.get(node.url + "/openapi.json", timeout=5).json()["paths"]
    assert {"/admin/shards", "/admin/queues/{name}/move", "/health/shards/{shard}"} <= set(paths)
    assert paths["/admin/queues/{name}/move"]["post"]["responses"].keys() >= {"400", "409"}
