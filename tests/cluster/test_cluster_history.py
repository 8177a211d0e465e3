"""Issue 21 in cluster mode: every node keeps its own history store from the Purges it applies,
so a job evicted from memory answers on every node; and an idle follower logs nothing per
etcd call (httpx at WARNING)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cluster.test_cluster_serve import Cluster, ClusterNode

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server not installed"),
]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path)
    for node in cluster.nodes:
        node.args = (*node.args, "--max-finished", "5")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def held(node: ClusterNode) -> dict[str, int]:
    answer = httpx.get(node.url + "/stats", headers=node.headers(node.client_key), timeout=5)
    return dict(answer.json()["held"])


def wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_an_idle_follower_logs_nothing_per_etcd_call(cluster: Cluster) -> None:
    wait_for(lambda: {node.role() for node in cluster.nodes} == {"leader", "follower"})
    follower = next(node for node in cluster.nodes if node.role() == "follower")
    time.sleep(1.0)  # past the start's own lines
    before = follower.log().count("\n")
    time.sleep(5.0)  # ~15 etcd calls (watch, keepalives, probes) before issue 21
    new_lines = follower.log().splitlines()[before:]
    assert len(new_lines) <= 1, new_lines
    assert not any("HTTP Request" in line for line in follower.log().splitlines())


def test_each_node_answers_evicted_jobs_from_its_own_history(cluster: Cluster) -> None:
    first, second, third = cluster.nodes
    ids = []
    with httpx.Client(base_url=first.url, headers=first.headers(first.client_key)) as client:
        for i in range(20):
            answer = client.post("/jobs", json={"payload": f"p{i}"}, timeout=10)
            assert answer.status_code == 201, answer.text
            ids.append(answer.json()["job_id"])
    with httpx.Client(base_url=second.url, headers=second.headers(second.worker_key)) as worker:
        for _ in range(20):
            leased = worker.post("/jobs/lease", json={}, timeout=10).json()
            body = {"lease_id": leased["lease_id"], "result": f"r-{leased['job_id']}"}
            answer = worker.post(f"/jobs/{leased['job_id']}/ack", json=body, timeout=10)
            assert answer.status_code == 200
    for node in cluster.nodes:
        wait_for(lambda node=node: held(node)["finished_on_disk"] >= 15)  # type: ignore[misc]
        assert held(node)["finished_in_memory"] <= 5
        with httpx.Client(base_url=node.url, headers=node.headers(node.client_key)) as client:
            for job_id in ids:
                job = client.get(f"/jobs/{job_id}", timeout=5).json()
                assert (job["state"], job["result"]) == ("ACKED", f"r-{job_id}")
    assert (third.data_dir / "history.sqlite3").exists()
