"""Sharded mode's fixture (docs/scaling.md §7): two etcd groups of three members each (one per
shard) and three `jq serve` nodes that each hold a replica of both shards, plus a fourth node
that holds none and forwards everything. API keys are shared through the machine's Redis, so a
forwarded request (carrying the caller's key) is authorized on the node it reaches."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jq_tool.chaos.etcd_groups import EtcdGroup
from tests.cluster.test_cluster_serve import REDIS_URL, ClusterNode
from tests.conftest import free_port

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server not installed")


class Sharded:
    def __init__(self, root: Path, nodes: int = 3, forwarder: bool = True) -> None:
        self.prefix = f"jqtest:shards:{uuid.uuid4().hex[:8]}:"
        taken: set[int] = set()
        self.groups = [EtcdGroup(root / "etcd", f"g{shard}", taken=taken) for shard in range(2)]
        names = [f"n{i}" for i in range(1, nodes + 1)] + (["fwd"] if forwarder else [])
        # Not an etcd member's port: the members bind theirs first (CI saw a node refused).
        http = {name: free_port(taken) for name in names}
        common = {
            "CLUSTER_MODE": "true",
            "SHARDS": ";".join(
                f"{shard}={','.join(group.client_urls)}" for shard, group in enumerate(self.groups)
            ),
            "HTTP_PEERS": ",".join(f"{n}@http://127.0.0.1:{p}" for n, p in http.items()),
            "REDIS_URL": REDIS_URL,
            "JQ_REDIS_PREFIX": self.prefix,
        }
        self.nodes = [
            ClusterNode(
                root / name,
                args=("--lease-duration", "3s", "--lease-check-interval", "200ms"),
                env={
                    **common,
                    "NODE_ID": name,
                    **({"SHARD_REPLICAS": "none"} if name == "fwd" else {}),
                },
                port=http[name],
            )
            for name in names
        ]
        self.replicas = [node for node in self.nodes if node.env["NODE_ID"] != "fwd"]
        self.forwarder = next((n for n in self.nodes if n.env["NODE_ID"] == "fwd"), None)

    def start(self) -> None:
        for group in self.groups:
            for member in group.members:
                member.spawn()
        for group in self.groups:
            for member in group.members:
                member.wait_serving()
        for node in self.nodes:
            node.spawn()
        for node in self.nodes:
            node.wait_healthy(90)
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
        for group in self.groups:
            group.stop()
        import redis

        r = redis.Redis.from_url(REDIS_URL)
        for key in r.scan_iter(match=self.prefix + "*"):
            r.delete(key)
        r.close()


def headers(node: ClusterNode, key: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key or node.admin_key}"}


def submit(node: ClusterNode, queue: str, payload: str, timeout: float = 5) -> httpx.Response:
    return httpx.post(
        node.url + "/jobs",
        json={"payload": payload, "queue": queue},
        headers={**headers(node), "Idempotency-Key": uuid.uuid4().hex},
        timeout=timeout,
    )


def placement(node: ClusterNode) -> dict[str, int]:
    """queue -> shard, read from shard 0's etcd group through the node's /shards view."""
    answer = httpx.get(node.url + "/admin/shards", headers=headers(node), timeout=5)
    assert answer.status_code == 200, answer.text
    return {q: int(p["shard"]) for q, p in answer.json()["queues"].items()}


@pytest.fixture
def sharded(tmp_path: Path) -> Iterator[Sharded]:
    cluster = Sharded(tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
