"""Cluster mode end to end: three real `jq serve` processes (CLUSTER_MODE=true), each starting
its own etcd member, API keys shared through the machine's Redis. Kill -9 the node holding the
etcd leadership, and the node running the ticker: writes continue on the others with no
acknowledged job lost, and the killed node rejoins and catches up."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from jq_tool.chaos.target import free_peer_ports
from tests.conftest import JqServer, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server not installed"),
]

REDIS_URL = os.environ.get("JQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class ClusterNode(JqServer):
    def spawn(self) -> None:
        argv = [*self.command, "--port", str(self.port), "--data-dir", str(self.data_dir)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*argv, *self.args], stdout=log, stderr=subprocess.STDOUT, env=self.env
            )

    def role(self) -> str:
        return str(httpx.get(self.url + "/health", timeout=2).json().get("role"))

    def etcd_status(self) -> dict[str, str]:
        client = self.env["RAFT_ADDR"].rsplit(":", 1)
        url = f"http://{client[0]}:{int(client[1]) + 1}/v3/maintenance/status"
        return dict(httpx.post(url, json={}, timeout=2).json())


class Cluster:
    def __init__(self, root: Path, size: int = 3) -> None:
        self.prefix = f"jqtest:cluster:{uuid.uuid4().hex[:8]}:"
        taken: set[int] = set()
        ports = free_peer_ports(size, taken)
        peers = {f"n{i}": f"127.0.0.1:{port}" for i, port in enumerate(ports, 1)}
        http = {node: free_port(taken) for node in peers}  # not another node's etcd port
        common = {
            "CLUSTER_MODE": "true",
            "PEERS": ",".join(f"{n}@{a}" for n, a in peers.items()),
            "HTTP_PEERS": ",".join(f"{n}@http://127.0.0.1:{p}" for n, p in http.items()),
            "REDIS_URL": REDIS_URL,
            "JQ_REDIS_PREFIX": self.prefix,
        }
        self.nodes = [
            ClusterNode(
                root / node,
                args=("--lease-duration", "2s", "--lease-check-interval", "200ms"),
                env={**common, "NODE_ID": node, "RAFT_ADDR": addr, "BOOTSTRAP": "true"},
                port=http[node],
            )
            for node, addr in peers.items()
        ]

    def start(self) -> None:
        for node in self.nodes:
            node.spawn()
        for node in self.nodes:
            node.wait_healthy(60)
        for node in self.nodes:
            node._read_keys()
        keys = [n for n in self.nodes if n.admin_key]
        assert len(keys) == 1, "exactly one node seeds the shared dev keys"
        for node in self.nodes:
            node.client_key, node.worker_key, node.admin_key = (
                keys[0].client_key,
                keys[0].worker_key,
                keys[0].admin_key,
            )

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        import redis

        r = redis.Redis.from_url(REDIS_URL)
        for key in r.scan_iter(match=self.prefix + "*"):
            r.delete(key)
        r.close()


def submit(node: ClusterNode, payload: str) -> str | None:
    """The job id if the node acknowledged the submit, None if it refused or failed."""
    try:
        response = httpx.post(
            node.url + "/jobs",
            json={"payload": payload},
            headers={"Authorization": f"Bearer {node.client_key}"},
            timeout=5,
        )
    except httpx.HTTPError:
        return None
    return str(response.json()["job_id"]) if response.status_code == 201 else None


def get_job(node: ClusterNode, job_id: str) -> httpx.Response:
    return httpx.get(
        f"{node.url}/jobs/{job_id}",
        headers={"Authorization": f"Bearer {node.client_key}"},
        timeout=5,
    )


def test_a_submit_on_one_node_is_visible_on_every_node(cluster: Cluster) -> None:
    a, b, c = cluster.nodes
    job_id = submit(a, "hello cluster")
    assert job_id
    for node in (b, c):
        response = get_job(node, job_id)
        assert response.status_code == 200 and response.json()["payload"] == "hello cluster"
    roles = sorted(node.role() for node in cluster.nodes)
    assert roles == ["follower", "follower", "leader"]
    stats = httpx.get(
        a.url + "/stats", headers={"Authorization": f"Bearer {a.client_key}"}, timeout=5
    ).json()
    assert stats["role"] in ("leader", "follower") and stats["totals"]["submitted"] == 1


def test_killing_the_etcd_leader_and_the_ticker_loses_nothing(cluster: Cluster) -> None:
    acknowledged: list[str] = []
    for i in range(20):
        job_id = submit(cluster.nodes[i % 3], f"before-{i}")
        assert job_id
        acknowledged.append(job_id)

    # Kill -9 the node whose etcd member leads Raft (its etcd dies with it).
    leader_id = cluster.nodes[0].etcd_status()["leader"]
    victim = next(n for n in cluster.nodes if n.etcd_status()["header"]["member_id"] == leader_id)
    victim.kill9()
    survivors = [n for n in cluster.nodes if n is not victim]

    # Writes continue on the others within a few seconds.
    deadline = time.monotonic() + 15
    first_ok: float | None = None
    started = time.monotonic()
    i = 0
    while time.monotonic() < deadline and len(acknowledged) < 60:
        job_id = submit(survivors[i % 2], f"during-{i}")
        i += 1
        if job_id:
            first_ok = first_ok or time.monotonic() - started
            acknowledged.append(job_id)
    assert first_ok is not None and first_ok < 10, "writes did not resume on the survivors"
    assert len(acknowledged) >= 40

    # The ticker runs somewhere among the survivors; kill it too once the victim is back.
    victim.start(60)
    for job_id in acknowledged:
        assert get_job(victim, job_id).status_code == 200, "the rejoined node caught up"
    # When the victim ran the ticker too, its lease (3 s) may not have lapsed yet: wait for it.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not any(n.role() == "leader" for n in cluster.nodes):
        time.sleep(0.2)
    ticker = next(n for n in cluster.nodes if n.role() == "leader")
    ticker.kill9()
    rest = [n for n in cluster.nodes if n is not ticker]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not any(n.role() == "leader" for n in rest):
        time.sleep(0.2)
    assert any(n.role() == "leader" for n in rest), "no node took over the ticker"
    job_id = submit(rest[0], "after")
    assert job_id
    acknowledged.append(job_id)
    for node in rest:
        for job_id in acknowledged:
            assert get_job(node, job_id).status_code == 200
