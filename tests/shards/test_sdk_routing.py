"""The SDK routes itself (docs/scaling.md §2.3, sdk/routing.py): a client pointed at the node
that holds no shard has its first request for a queue forwarded; the answer's Jq-Placement names
the nodes holding the queue's shard, and the next requests for that queue go straight to one of
them. Seen from the forwarding node's own counter (`jq_forwarded_requests` in /metrics)."""

from __future__ import annotations

import shutil

import httpx
import pytest

from jq_tool.sdk import Client
from tests.shards.conftest import Sharded, headers, placement
from tests.shards.test_failover import queue_job_ids

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server not installed"),
]


def forwarded(node) -> int:  # type: ignore[no-untyped-def]
    """The node's jq_forwarded_requests_total, over every shard."""
    page = httpx.get(node.url + "/metrics", headers=headers(node), timeout=10)
    assert page.status_code == 200, page.text
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in page.text.splitlines()
        if line.startswith("jq_forwarded_requests_total{")
    )


def test_the_sdk_sends_a_queues_requests_to_a_node_holding_its_shard(sharded: Sharded) -> None:
    fwd = sharded.forwarder
    assert fwd is not None
    replica_urls = {node.url for node in sharded.replicas}
    with Client(fwd.url, fwd.admin_key) as client:
        assert forwarded(fwd) == 0
        first = client.submit("first", queue="routed")
        assert forwarded(fwd) == 1  # the first answer came the long way
        route = client.routes.url_for("routed")
        assert route in replica_urls
        ids = {first} | {client.submit(f"job {i}", queue="routed") for i in range(20)}
        batch = [{"payload": f"batch {i}", "queue": "routed"} for i in range(5)]
        ids |= {result.job_id for result in client.submit_many(batch)}
        leased = client.lease(queue="routed", max_jobs=10)
        assert len(leased) == 10
        assert forwarded(fwd) == 1  # the rest went straight to a replica node
        # A queue the client never heard of still goes through the node it was pointed at.
        client.submit("elsewhere", queue="other")
        assert forwarded(fwd) == 2 and client.routes.url_for("other") in replica_urls
    shard = placement(sharded.replicas[0])["routed"]
    assert all(queue_job_ids(node, "routed") == ids for node in sharded.replicas), shard
    assert len(ids) == 26


def test_a_route_to_a_node_that_is_gone_is_forgotten(sharded: Sharded) -> None:
    fwd = sharded.forwarder
    assert fwd is not None
    with Client(fwd.url, fwd.admin_key, retries=0) as client:
        client.submit("first", queue="lost")
        route = client.routes.url_for("lost")
        gone = next(node for node in sharded.replicas if node.url == route)
        gone.kill9()
        # Nothing reached the dead node: the request goes to the client's own URL, forwarded.
        job_id = client.submit("after", queue="lost")
        assert client.routes.url_for("lost") not in (None, route)
    alive = next(node for node in sharded.replicas if node.url != route)
    assert job_id in queue_job_ids(alive, "lost")
