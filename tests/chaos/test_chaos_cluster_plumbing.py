"""`jq chaos --cluster N` below the full e2e round (tests/e2e/test_chaos_cluster.py): its flags
and their refusals, the cluster's ports and node environments, a clear error when etcd is
missing or a node cannot start, and the harness failing requests over from a dead endpoint to a
live server and counting which endpoint answered."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from rich.console import Console
from typer.testing import CliRunner

from jq_tool.chaos.harness import ChaosRun
from jq_tool.chaos.options import MAX_CLUSTER_NODES, ChaosOptions, normalise_argv
from jq_tool.chaos.target import (
    Endpoint,
    SpawnedCluster,
    SpawnedServer,
    TargetError,
    free_peer_port,
    free_peer_ports,
    free_port,
)
from jq_tool.cli import chaos as chaos_cli

runner = CliRunner()


def _chaos_process(args: list[str], env: dict[str, str]) -> CompletedProcess[str]:
    command = [sys.executable, "-m", "jq_tool.cli.main", "chaos", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def test_cluster_flag_refusals_name_the_problem() -> None:
    assert ChaosOptions(cluster=3).problems() == []
    assert ChaosOptions(cluster=MAX_CLUSTER_NODES).problems() == []
    for size in (1, 2, -3, MAX_CLUSTER_NODES + 1):
        assert ChaosOptions(cluster=size).problems() == [
            f"--cluster must be between 3 and {MAX_CLUSTER_NODES} nodes (0: one server)"
        ]
    with_target = ChaosOptions(cluster=3, target="http://127.0.0.1:1", key="admin_x")
    assert "--cluster spawns its own nodes: it cannot be used with --target" in (
        with_target.problems()
    )
    assert ChaosOptions(cluster=3, key="admin_x").problems() == [
        "--key does not apply to --cluster: each node seeds its own keys"
    ]


def test_cluster_flag_through_the_cli() -> None:
    assert normalise_argv(["-cluster", "3", "-cluster=5"]) == ["--cluster", "3", "--cluster=5"]
    result = runner.invoke(chaos_cli._chaos_app, ["--cluster", "2"])
    assert result.exit_code == chaos_cli.EXIT_BAD_INPUT
    assert "--cluster must be between 3" in result.output
    result = runner.invoke(chaos_cli._chaos_app, ["--cluster", "three"])
    assert result.exit_code == 2
    assert "Invalid value for '--cluster'" in result.output
    help_text = runner.invoke(chaos_cli._chaos_app, ["--help"]).output
    assert "--cluster" in help_text and "etcd" in help_text


def test_peer_ports_come_in_free_pairs_and_skip_taken_ones() -> None:
    taken: set[int] = set()
    for _ in range(6):
        port = free_peer_port(taken)
        assert port not in taken and port + 1 not in taken
        with socket.socket() as peer, socket.socket() as client:
            peer.bind(("127.0.0.1", port))
            client.bind(("127.0.0.1", port + 1))
        taken.update((port, port + 1))


def test_peer_port_lists_never_overlap() -> None:
    taken = {1}
    ports = free_peer_ports(4, taken)
    pairs = {p for port in ports for p in (port, port + 1)}
    assert len(pairs) == 8 and 1 not in pairs and pairs <= taken


def test_a_listeners_port_is_none_promised_to_an_etcd_member() -> None:
    # A member binds its ports before the nodes start: a node given one of them cannot (CI saw
    # "port 19257 on 127.0.0.1 is in use" from a shards test whose nodes took free_port()).
    taken: set[int] = set()
    members = {p for port in free_peer_ports(3, taken) for p in (port, port + 1)}
    listeners = [free_port(taken) for _ in range(50)]
    assert len(set(listeners)) == 50 and not members.intersection(listeners)
    assert taken == members | set(listeners)


def test_cluster_nodes_get_one_consistent_cluster_environment(tmp_path: Path) -> None:
    # The harness's own cluster or Redis variables must not leak into the nodes.
    outer = {**os.environ, "REDIS_URL": "redis://elsewhere:1/0", "NODE_ID": "outer"}
    cluster = SpawnedCluster(tmp_path, 3, seed=5, env=outer)
    nodes = cluster.nodes
    assert list(nodes) == ["n1", "n2", "n3"]
    envs = {name: node.env for name, node in nodes.items()}
    peers = dict(item.split("@") for item in envs["n1"]["PEERS"].split(","))
    http_peers = dict(item.split("@") for item in envs["n1"]["HTTP_PEERS"].split(","))
    for name, node in nodes.items():
        env = envs[name]
        assert env["CLUSTER_MODE"] == "true" and env["NODE_ID"] == name
        assert env["RAFT_ADDR"] == peers[name]
        assert env["PEERS"] == envs["n1"]["PEERS"] and env["BOOTSTRAP"] == "true"
        assert http_peers[name] == node.base_url
        assert "REDIS_URL" not in env  # each node keeps its own keys in its data dir
        assert node.data_dir == tmp_path / name
        assert node.log_path == tmp_path / f"{name}.serve.log"
    ports = [int(addr.rsplit(":", 1)[1]) for addr in peers.values()]
    every_port = {p for port in ports for p in (port, port + 1)} | {n.port for n in nodes.values()}
    assert len(every_port) == 9  # peer, client and HTTP port of each node, all different
    assert [e.base_url for e in cluster.endpoints()] == [n.base_url for n in nodes.values()]
    with pytest.raises(TargetError, match="at least 3 nodes"):
        SpawnedCluster(tmp_path, 2, seed=5)


def test_missing_etcd_is_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no etcd here; the server runs by sys.executable
    completed = _chaos_process(["--cluster", "3", "--jobs", "5"], env)
    assert completed.returncode == chaos_cli.EXIT_NO_SERVER
    assert "--cluster needs the etcd binary on PATH" in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server not installed")
def test_a_data_dir_of_an_earlier_cluster_run_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c" / "n2" / "etcd" / "member").mkdir(parents=True)
    completed = _chaos_process(
        ["--cluster", "3", "--jobs", "5", "--data-dir", str(tmp_path / "c")], dict(os.environ)
    )
    assert completed.returncode == chaos_cli.EXIT_NO_SERVER
    assert "already holds cluster data (n2)" in completed.stderr
    assert not (tmp_path / "c" / "n1").exists()  # refused before any node started


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server not installed")
def test_cluster_that_cannot_start_shows_a_node_log_in_json(tmp_path: Path) -> None:
    env = {**os.environ, "JQ_MAX_PAYLOAD": "lots"}  # every node refuses this setting at start
    completed = _chaos_process(
        ["--cluster", "3", "--jobs", "5", "--json", "--data-dir", str(tmp_path / "c")], env
    )
    assert completed.returncode == chaos_cli.EXIT_NO_SERVER
    body = json.loads(completed.stdout)
    assert body["zero_loss"] is False
    assert "the cluster did not start" in body["error"]
    assert "node n" in body["error"] and "lots" in body["error"]
    assert "Traceback" not in completed.stderr


@dataclasses.dataclass
class _Node:
    base_url: str
    key: str


class _NoQuorumNode:
    """A real HTTP server that answers every request 503, as a cluster node cut off from the
    etcd majority does."""

    def __init__(self) -> None:
        self.requests = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            self.requests += 1
            body = b'{"error":"not connected to an etcd majority","code":"unavailable"}'
            writer.write(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class _SickFirst:
    """A target whose first endpoint is `sick` and whose second is a real server: every request
    that starts at the sick one must fail over to the live one."""

    def __init__(self, live: SpawnedServer, sick: Endpoint) -> None:
        self.live = live
        self.sick = sick

    @property
    def base_url(self) -> str:
        return self.live.base_url

    @property
    def key(self) -> str:
        return self.live.key

    def endpoints(self) -> Sequence[Endpoint]:
        return (self.sick, self.live)

    async def start(self) -> None:
        await self.live.start()

    async def kill(self) -> None:
        raise TargetError("not killed in this test")

    async def restart(self) -> None:
        raise TargetError("not restarted in this test")

    async def stop(self) -> None:
        await self.live.stop()

    def unexpected_exit(self) -> str | None:
        return self.live.unexpected_exit()


async def test_an_endpoint_with_nothing_listening_is_refused_before_the_run(
    tmp_path: Path,
) -> None:
    dead = _Node(f"http://127.0.0.1:{free_port()}", "admin_unused")
    target = _SickFirst(SpawnedServer(tmp_path / "data"), dead)
    try:
        with pytest.raises(TargetError, match=f"{dead.base_url}.* is not answering"):
            await ChaosRun(ChaosOptions(jobs=1, workers=1), target).run()
    finally:
        await target.stop()


async def test_requests_fail_over_from_a_node_without_quorum(tmp_path: Path) -> None:
    sick = _NoQuorumNode()
    await sick.start()
    target = _SickFirst(
        SpawnedServer(tmp_path / "data"), _Node(f"http://127.0.0.1:{sick.port}", "admin_unused")
    )
    run = ChaosRun(ChaosOptions(jobs=60, workers=2, submitters=4, seed=3), target)
    try:
        report = await run.run()
    finally:
        await target.stop()
        await sick.stop()
    assert report.error is None, report.to_text()
    assert (report.submitted, report.acked, report.lost, report.duplicates) == (60, 60, 0, 0)
    # Both endpoints were asked; the sick one's 503s were resent to the live one.
    assert run.answers[0] > 0
    assert sick.requests == run.answers[0] + 1  # plus the key check before the run
    assert run.answers[1] > 0
    assert report.submit_retries > 0


def test_progress_view_names_the_node_that_is_down(tmp_path: Path) -> None:
    cluster = SpawnedCluster(tmp_path, 3, seed=1)
    run = ChaosRun(ChaosOptions(jobs=10, kills=3, cluster=3), cluster)
    run.kills = 1
    console = Console(record=True, width=120, force_terminal=False)
    console.print(chaos_cli._progress_view(run))
    assert "down" not in console.export_text()
    cluster._down = "n2"  # as between a kill and the node's healthy restart
    console.print(chaos_cli._progress_view(run))
    assert "1/3  (restarts: 0)  node n2 down" in console.export_text()
