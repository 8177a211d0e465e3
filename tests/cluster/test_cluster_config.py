"""The seed's cluster env vars → Settings → ClusterConfig and the etcd member's command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from jq_tool.engine.base import ClusterConfig
from jq_tool.engine.etcd_member import EtcdMember
from jq_tool.engine.factory import engine_config
from jq_tool.settings import SettingsError, build_settings

PEERS = "n1@127.0.0.1:4000,n2@127.0.0.1:4010,n3@127.0.0.1:4020"


def cluster_from_env(env: dict[str, str]) -> ClusterConfig:
    """Cluster env vars read as `jq serve` reads them, then derived into the engine's config."""
    cluster = engine_config(build_settings({}, env={"CLUSTER_MODE": "true", **env})).cluster
    assert cluster is not None
    return cluster


def test_seed_env_vars_describe_the_cluster() -> None:
    config = cluster_from_env(
        {
            "NODE_ID": "n2",
            "RAFT_ADDR": "127.0.0.1:4010",
            "PEERS": PEERS,
            "HTTP_PEERS": "n1@http://127.0.0.1:8081,n2@http://127.0.0.1:8082",
            "BOOTSTRAP": "true",
        }
    )
    assert config.node_id == "n2" and config.bootstrap
    assert config.etcd_client_addr == "127.0.0.1:4011"
    assert config.endpoints() == [
        "http://127.0.0.1:4011",
        "http://127.0.0.1:4001",
        "http://127.0.0.1:4021",
    ]
    assert config.http_peers["n1"] == "http://127.0.0.1:8081"
    command = EtcdMember(config, Path("/tmp/data")).command()
    assert "n1=http://127.0.0.1:4000,n2=http://127.0.0.1:4010,n3=http://127.0.0.1:4020" in command


def test_existing_etcd_endpoints_need_no_member() -> None:
    config = cluster_from_env(
        {"NODE_ID": "a", "ETCD_ENDPOINTS": "http://10.0.0.1:2379/, http://10.0.0.2:2379"}
    )
    assert config.endpoints() == ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]


@pytest.mark.parametrize(
    "env, message",
    [
        ({"RAFT_ADDR": "127.0.0.1:4000"}, "NODE_ID"),
        ({"NODE_ID": "n1"}, "RAFT_ADDR"),
        ({"NODE_ID": "n1", "RAFT_ADDR": "127.0.0.1:4000", "PEERS": "n1-127.0.0.1"}, "PEERS"),
        ({"NODE_ID": "n1", "RAFT_ADDR": "127.0.0.1:4999", "PEERS": PEERS}, "RAFT_ADDR"),
        ({"NODE_ID": "n1", "RAFT_ADDR": "nohostport"}, "host:port"),
    ],
)
def test_bad_cluster_env_is_a_clear_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        cluster_from_env(env)


def test_batch_values_deflate_small_batches_and_still_read_plain_ones() -> None:
    import msgspec

    from jq_tool.core.model import NewJob, Submit, encode_command
    from jq_tool.engine.cluster import COMPRESS_BELOW, decode_batch, encode_batch

    commands = [
        Submit(now=1_700_000_000_000 + i, jobs=[NewJob(f"id-{i:032d}", "q", "p", 0, 3, None, None)])
        for i in range(25)
    ]
    records = [encode_command(command) for command in commands]
    plain = msgspec.msgpack.encode([msgspec.Raw(record) for record in records])
    small = encode_batch(records)
    assert small[:1] == b"Z" and len(small) < len(plain) / 2
    assert decode_batch(small) == commands
    assert decode_batch(plain) == commands  # a value written before deflating existed
    big = [
        encode_command(
            Submit(now=1, jobs=[NewJob("big", "q", "x" * COMPRESS_BELOW, 0, 3, None, None)])
        )
    ]
    assert encode_batch(big)[:1] != b"Z"  # large values are not deflated on the loop
