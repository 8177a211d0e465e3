"""Issue 15 in cluster mode (three `jq serve` nodes over etcd, keys in the machine's Redis):
idempotency keys are the owner's and tied to the request on every node, because the owner, the
fingerprint and the keep time travel in the replicated Submit command; a node killed with -9
replays them; and a revoke on one node ends the key's /events stream on another."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.cluster.test_cluster_serve import Cluster, ClusterNode
from tests.server.test_tenants import StreamWatcher

pytestmark = pytest.mark.slow


def post(node: ClusterNode, key: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(
        node.url + "/jobs", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )


def test_idempotency_and_revocation_across_nodes(cluster: Cluster) -> None:
    a, b, c = cluster.nodes
    body = {"payload": "p", "queue": "tenants", "idempotency_key": "k-" + uuid.uuid4().hex}
    first = post(a, a.client_key, body)
    assert first.status_code == 201, first.text
    job_id = first.json()["job_id"]
    # Same owner (the client key), same request, another node: the first job.
    again = post(b, a.client_key, body)
    assert again.status_code == 200 and again.json()["job_id"] == job_id
    # Same owner, another request: refused on every node, nothing created.
    for node in (b, c):
        reused = post(node, a.client_key, {**body, "payload": "other"})
        assert reused.status_code == 422 and reused.json()["code"] == "idempotency_key_reused"
    # Another owner (the admin key's), same key: its own job.
    theirs = post(c, a.admin_key, body)
    assert theirs.status_code == 201 and theirs.json()["job_id"] != job_id

    # A node killed with -9 replays the log: the keys are still the owners'.
    c.kill9()
    c.spawn()
    c.wait_healthy(60)
    assert post(c, a.client_key, body).json() == {"job_id": job_id, "duplicate": True}
    assert post(c, a.client_key, {**body, "priority": 9}).status_code == 422

    # A revoke on one node ends the key's stream on another.
    with httpx.Client(base_url=a.url, headers={"Authorization": f"Bearer {a.admin_key}"}) as admin:
        viewer = admin.post(
            "/admin/keys", json={"name": "v", "owner_id": "viewers", "type": "client"}
        ).json()
        watcher = StreamWatcher(
            b.url + "/events", headers={"Authorization": f"Bearer {viewer['key']}"}
        )
        assert watcher.opened.wait(10)
        assert admin.delete(f"/keys/{viewer['key_id']}").status_code == 200
    assert watcher.ended.wait(5), "node b kept the revoked key's stream open"
