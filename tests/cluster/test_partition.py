"""A network partition between real hosts: three network namespaces joined by veth pairs on a
bridge, one `jq serve` cluster node (and its etcd member) in each. Cut one node off from the
other two with blackhole routes; the test host, on the bridge, still reaches all three. The
minority node must acknowledge nothing: a write it handed to its etcd member answers 504
`outcome_unknown` (it may commit later), one refused before that 503 `unavailable`; /health
says the majority is gone. The majority keeps writing; after healing, the cut-off node catches
up, and the minority-side submit retried with its idempotency key makes exactly one job."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import JqServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server not installed"),
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"
    ),
]


def ip(*args: str, ns: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", ns] if ns else []
    subprocess.run([*prefix, "ip", *args], check=True, capture_output=True)


class NetnsCluster:
    """Hosts 10.213.N.1-3 in namespaces, the test host at 10.213.N.254 on the bridge."""

    def __init__(self, root: Path) -> None:
        tag = uuid.uuid4().hex[:5]
        self.subnet = f"10.213.{int(tag, 16) % 250}"
        self.bridge = f"jqbr{tag}"
        self.names = [f"jq{tag}n{i}" for i in (1, 2, 3)]
        self.hosts = [f"{self.subnet}.{i}" for i in (1, 2, 3)]
        self.veths = [f"jq{tag}v{i}" for i in (1, 2, 3)]
        peers = ",".join(f"n{i}@{h}:2380" for i, h in enumerate(self.hosts, 1))
        self.nodes = [
            JqServer(
                root / f"n{i}",
                args=("--host", host, "--lease-duration", "2s"),
                env={
                    "CLUSTER_MODE": "true",
                    "NODE_ID": f"n{i}",
                    "RAFT_ADDR": f"{host}:2380",
                    "PEERS": peers,
                    "BOOTSTRAP": "true",
                },
                port=8080,
                command=["ip", "netns", "exec", ns, sys.executable, "-m", "jq_tool.cli.serve"],
            )
            for i, (host, ns) in enumerate(zip(self.hosts, self.names, strict=True), 1)
        ]
        for node, host in zip(self.nodes, self.hosts, strict=True):
            node.url = f"http://{host}:8080"

    def build(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for ns, veth, host in zip(self.names, self.veths, self.hosts, strict=True):
            ip("netns", "add", ns)
            ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("link", "set", veth, "master", self.bridge)
            ip("link", "set", veth, "up")
            ip("addr", "add", f"{host}/24", "dev", "eth0", ns=ns)
            ip("link", "set", "eth0", "up", ns=ns)
            ip("link", "set", "lo", "up", ns=ns)

    def cut_off(self, index: int, *, heal: bool = False) -> None:
        """Blackhole routes between node `index` and the other nodes (not the test host)."""
        verb = "del" if heal else "add"
        for other in range(3):
            if other != index:
                ip("route", verb, "blackhole", f"{self.hosts[other]}/32", ns=self.names[index])
                ip("route", verb, "blackhole", f"{self.hosts[index]}/32", ns=self.names[other])

    def teardown(self) -> None:
        for node in self.nodes:
            node.close()
        for ns in self.names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


@pytest.fixture
def netns_cluster(tmp_path: Path) -> Iterator[NetnsCluster]:
    cluster = NetnsCluster(tmp_path)
    try:
        cluster.build()
        for node in cluster.nodes:
            argv = [*node.command, "--port", "8080", "--data-dir", str(node.data_dir)]
            with open(node.log_path, "ab") as log:
                node.proc = subprocess.Popen(
                    [*argv, *node.args], stdout=log, stderr=subprocess.STDOUT, env=node.env
                )
        for node in cluster.nodes:
            node.wait_healthy(60)
            node._read_keys()  # embedded key stores: each node seeds its own dev keys
        yield cluster
    finally:
        cluster.teardown()


def submit(
    node: JqServer, payload: str, timeout: float = 10, **fields: str
) -> httpx.Response | None:
    try:
        return httpx.post(
            node.url + "/jobs",
            json={"payload": payload, **fields},
            headers={"Authorization": f"Bearer {node.client_key}"},
            timeout=timeout,
        )
    except httpx.HTTPError:
        return None


def test_the_minority_side_refuses_writes_and_catches_up_after_healing(
    netns_cluster: NetnsCluster,
) -> None:
    n1, n2, n3 = netns_cluster.nodes
    first = submit(n1, "before the partition")
    assert first is not None and first.status_code == 201

    netns_cluster.cut_off(2)
    # The minority node never acknowledges a write it cannot commit. Sent right after the cut,
    # while its member still believes in its leader, the write is proposed and its put times
    # out: the outcome is unknown, and the answer says so (not "unavailable", which would
    # invite a keyless retry of a write that may still commit).
    minority = {"queue": "minority", "idempotency_key": "minority-side-submit"}
    refused = submit(n3, "on the minority side", **minority)
    assert refused is not None and refused.status_code in (503, 504), refused
    assert (
        refused.json()["code"] == {503: "unavailable", 504: "outcome_unknown"}[refused.status_code]
    )
    assert refused.status_code == 504, refused.json()  # proposed: the put reached its member
    assert refused.headers.get("retry-after")
    assert "Idempotency-Key" in refused.json()["error"]
    health = httpx.get(n3.url + "/health", timeout=5)
    assert health.status_code == 503 and "majority" in health.json()["reason"]
    # The majority keeps writing (the etcd leader may have been n3: allow an election).
    acknowledged = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(acknowledged) < 10:
        response = submit(n1 if len(acknowledged) % 2 else n2, "majority", timeout=5)
        if response is not None and response.status_code == 201:
            acknowledged.append(response.json()["job_id"])
    assert len(acknowledged) == 10

    netns_cluster.cut_off(2, heal=True)
    deadline = time.monotonic() + 20
    missing = set(acknowledged)
    while missing and time.monotonic() < deadline:
        for job_id in list(missing):
            try:
                response = httpx.get(
                    f"{n3.url}/jobs/{job_id}",
                    headers={"Authorization": f"Bearer {n3.client_key}"},
                    timeout=5,
                )
            except httpx.HTTPError:
                continue
            if response.status_code == 200:
                missing.discard(job_id)
        time.sleep(0.2)
    assert not missing, "the healed node did not catch up"

    # The unknown-outcome submit, retried with its key once quorum is back, on either side:
    # one job, whether or not the original proposal committed after all.
    answers = []
    deadline = time.monotonic() + 20
    for node in (n3, n1):
        while time.monotonic() < deadline:
            response = submit(node, "on the minority side", **minority)
            if response is not None and response.status_code in (200, 201):
                answers.append(response.json())
                break
            time.sleep(0.2)
    assert len(answers) == 2, answers
    assert answers[0]["job_id"] == answers[1]["job_id"]
    assert answers[1]["duplicate"] is True
    listed = httpx.get(
        n1.url + "/jobs",
        params={"queue": "minority"},
        headers={"Authorization": f"Bearer {n1.client_key}"},
        timeout=5,
    ).json()["jobs"]
    assert [job["job_id"] for job in listed] == [answers[0]["job_id"]]
