"""Checks of docker-compose.cluster.yml that run without a Docker engine: three nodes whose
cluster env vars describe one etcd cluster (read by the server's own build_settings), each
with its own WAL volume and published port, keys shared through Redis; and the compose client
accepts the file."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from jq_tool.engine.cluster import STOP_COURTESY_S
from jq_tool.engine.etcd_member import STOP_GRACE_S, EtcdMember
from jq_tool.engine.factory import engine_config
from jq_tool.settings import Settings, build_settings
from tests.distribution.test_compose import compose_client, environment

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.cluster.yml"
NODES = ("node1", "node2", "node3")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_three_nodes_and_a_shared_redis(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(NODES) <= set(services)
    assert services["redis"]["container_name"] == "job-queue-redis"
    ports = {services[n]["ports"][0] for n in NODES}
    assert ports == {"8081:8080", "8082:8080", "8083:8080"}
    volumes = {services[n]["volumes"][0].split(":")[0] for n in NODES}
    assert volumes == {"node1-data", "node2-data", "node3-data"} <= set(compose["volumes"])


def test_every_node_describes_the_same_cluster(compose: dict[str, Any]) -> None:
    configs = []
    for node in NODES:
        env = environment(compose["services"][node])
        assert env["CLUSTER_MODE"] == "true"
        assert env["REDIS_URL"].startswith("redis://redis:")
        settings = build_settings({}, env=env)  # every variable has a value the server accepts
        config = engine_config(settings).cluster
        assert config is not None
        assert config.node_id == node and config.raft_addr == f"{node}:2380"
        configs.append(config)
    assert len({tuple(sorted(c.peers.items())) for c in configs}) == 1
    assert sum(c.bootstrap for c in configs) == 1
    # Host names are advertised; etcd listens on all interfaces inside the container.
    command = EtcdMember(configs[0], Path("/data")).command()
    assert command[command.index("--listen-peer-urls") + 1] == "http://0.0.0.0:2380"
    assert command[command.index("--initial-advertise-peer-urls") + 1] == "http://node1:2380"


def test_a_stop_has_time_to_drain_snapshot_and_stop_etcd(compose: dict[str, Any]) -> None:
    """Docker SIGKILLs a container still running after its stop_grace_period (10 s unless set):
    each node needs the drain, the two bounded courtesies to etcd and its member's grace."""
    needed = Settings().drain_timeout_ms / 1000 + 2 * STOP_COURTESY_S + STOP_GRACE_S
    for node in NODES:
        grace = compose["services"][node]["stop_grace_period"]
        assert grace.endswith("s") and float(grace[:-1]) > needed, (node, grace, needed)


def test_compose_client_accepts_the_cluster_file() -> None:
    client = compose_client()
    if client is None:
        pytest.skip("no docker compose / docker-compose client installed")
    run = subprocess.run(
        [*client, "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
