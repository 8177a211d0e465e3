"""Settings as declared once: every setting's flag, env var, default and parser come from its
declaration in jq_tool.settings, `jq serve`'s options are generated from it, the cluster settings
are checked at start like the others, and nothing past Settings reads the environment."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import typer
from typer.testing import CliRunner

from jq_tool.cli.serve import register
from jq_tool.engine.factory import engine_config
from jq_tool.settings import ENV_VARS, OPTIONS, Settings, SettingsError, build_settings

ROOT = Path(__file__).resolve().parents[2]
PEERS = "n1@127.0.0.1:4000,n2@127.0.0.1:4010,n3@127.0.0.1:4020"


def serve_command(*args: str, env: dict[str, str] | None = None) -> Any:
    app = typer.Typer()
    register(app)
    return CliRunner().invoke(app, list(args), env=env)


def test_each_setting_is_declared_once_with_its_own_flag_and_env_var() -> None:
    fields = [f.name for f in msgspec.structs.fields(Settings)]
    assert list(OPTIONS) == fields  # every field is a declared setting, nothing else is
    flags = [option.flag for option in OPTIONS.values()]
    assert len(set(flags)) == len(flags) and all(f.startswith("--") for f in flags)
    assert len(set(ENV_VARS.values())) == len(ENV_VARS)
    # The seed's names and the first release's flags are all still there.
    assert {"PORT", "WAL_DIR", "LEASE_DURATION", "LEASE_CHECK_INTERVAL", "REDIS_URL",
            "CLUSTER_MODE", "NODE_ID", "RAFT_ADDR", "PEERS", "HTTP_PEERS", "BOOTSTRAP",
            "ETCD_ENDPOINTS", "ETCD_CLIENT_ADDR", "JQ_SNAPSHOT_EVERY",
            "JQ_SEGMENT_BYTES"} <= set(ENV_VARS.values())  # fmt: skip
    assert OPTIONS["lease_ms"].flag == "--lease-duration"
    assert OPTIONS["lease_check_interval_ms"].env == "LEASE_CHECK_INTERVAL"


def test_the_default_in_help_is_the_default_that_applies() -> None:
    defaults = Settings()
    for name, option in OPTIONS.items():
        if option.shown_default == "unset" or name in ("node_id", "raft_addr", "etcd_client_addr"):
            continue  # nothing, or computed: the host name, this node's PEERS entry, port + 1
        assert getattr(defaults, name) == option.parse(option.shown_default), name
    assert OPTIONS["lease_ms"].shown_default == "30s" and defaults.lease_ms == 30_000
    assert build_settings({}, env={}) == msgspec.structs.replace(
        Settings(), node_id=defaults.node_id
    )


def test_cluster_settings_from_the_seed_env_vars() -> None:
    env = {
        "CLUSTER_MODE": "true", "NODE_ID": "n2", "PEERS": PEERS, "BOOTSTRAP": "yes",
        "HTTP_PEERS": "n1@http://127.0.0.1:8081,n2@http://127.0.0.1:8082",
        "ETCD_CLIENT_ADDR": "127.0.0.1:5011", "ETCD_CLUSTER_TOKEN": "t-1",
    }  # fmt: skip
    settings = build_settings({}, env=env)
    assert settings.cluster_mode and settings.bootstrap and settings.node_id == "n2"
    assert settings.raft_addr == "127.0.0.1:4010"  # no RAFT_ADDR: its own entry in PEERS
    cluster = engine_config(settings).cluster
    assert cluster is not None
    assert cluster.etcd_client_addr == "127.0.0.1:5011" and cluster.etcd_cluster_token == "t-1"
    assert cluster.endpoints()[0] == "http://127.0.0.1:5011"
    assert cluster.http_peers["n1"] == "http://127.0.0.1:8081"
    # Without CLUSTER_MODE the same variables make a single node: no cluster config.
    single = build_settings({}, env={**env, "CLUSTER_MODE": "false"})
    assert engine_config(single).cluster is None and single.node_id == "n2"


def test_flags_win_over_env_vars_for_cluster_settings_too() -> None:
    env = {"CLUSTER_MODE": "true", "NODE_ID": "env-node", "ETCD_ENDPOINTS": "http://e:2379/"}
    settings = build_settings({"node_id": "flag-node"}, env=env)
    assert settings.node_id == "flag-node" and settings.etcd_endpoints == ("http://e:2379",)
    assert build_settings({"cluster_mode": False}, env=env).cluster_mode is False


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"CLUSTER_MODE": "maybe"}, ("--cluster-mode", "CLUSTER_MODE", "maybe")),
        ({"CLUSTER_MODE": "true"}, ("--node-id", "NODE_ID", "required")),
        ({"CLUSTER_MODE": "true", "NODE_ID": "n1"}, ("--raft-addr", "RAFT_ADDR", "required")),
        ({"PEERS": "n1=127.0.0.1:4000"}, ("--peers", "PEERS", "id@host:port")),
        ({"PEERS": "n1@127.0.0.1"}, ("--peers", "PEERS", "host:port")),
        ({"HTTP_PEERS": "n1"}, ("--http-peers", "HTTP_PEERS")),
        ({"ETCD_ENDPOINTS": "127.0.0.1:2379"}, ("--etcd-endpoints", "ETCD_ENDPOINTS")),
        ({"BOOTSTRAP": "sometimes"}, ("--bootstrap", "BOOTSTRAP")),
        ({"ETCD_CLIENT_ADDR": "nowhere"}, ("--etcd-client-addr", "ETCD_CLIENT_ADDR")),
        ({"JQ_DRAIN_TIMEOUT": "0s"}, ("--drain-timeout", "JQ_DRAIN_TIMEOUT", "positive")),
    ],
)
def test_a_bad_cluster_value_names_flag_and_env_var(
    env: dict[str, str], words: tuple[str, ...]
) -> None:
    with pytest.raises(SettingsError) as caught:
        build_settings({}, env=env)
    for word in words:
        assert word in str(caught.value)


def test_a_bad_cluster_value_is_a_one_line_usage_error(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "CLUSTER_MODE": "true", "NODE_ID": "n1",
           "RAFT_ADDR": "127.0.0.1:4999", "PEERS": PEERS}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "jq_tool.cli.serve", "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "Error: invalid --raft-addr (env RAFT_ADDR): 127.0.0.1:4999 is not n1's address in "
        "--peers (env PEERS): 127.0.0.1:4000"
    ]
    assert not (tmp_path / "d").exists()  # refused before anything started


def test_serve_offers_every_declared_setting_as_a_flag() -> None:
    result = serve_command("--help", env={"COLUMNS": "300"})
    assert result.exit_code == 0
    for option in OPTIONS.values():
        assert option.flag in result.output
        assert f"env {option.env}" in result.output
    assert "--no-seed-keys" in result.output and "--no-cluster-mode" in result.output


def test_a_generated_cluster_flag_is_read_like_its_env_var() -> None:
    result = serve_command("--cluster-mode", "--node-id", "n1", "--peers", "n1@nowhere")
    assert result.exit_code == 2
    assert "invalid --peers (env PEERS): expected host:port, got 'nowhere'" in result.output
    result = serve_command("--cluster-mode", env={"NODE_ID": ""})
    assert result.exit_code == 2 and "--node-id (env NODE_ID) is required" in result.output


def test_a_generated_flag_reaches_the_running_server(jq_server_factory: Any) -> None:
    # --node-id had no flag before it was declared as a setting like the others.
    server = jq_server_factory("--node-id", "from-the-flag", env={"NODE_ID": "from-env"})
    stats = httpx.get(server.url + "/stats", headers=server.headers(server.admin_key)).json()
    assert stats["node_id"] == "from-the-flag"


_ENVIRONMENT_READS = {"environ", "environb", "getenv", "getenvb"}
# build_settings reads the server's environment; the chaos harness builds its child
# processes' environments (the servers it spawns read theirs through their own Settings).
_ALLOWED = {"jq_tool/settings.py", "jq_tool/chaos/target.py"}


def test_nothing_past_settings_reads_the_environment() -> None:
    readers = []
    for path in sorted((ROOT / "jq_tool").rglob("*.py")):
        name = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text(), name)):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
                and node.attr in _ENVIRONMENT_READS
            ) or (
                isinstance(node, ast.ImportFrom)
                and node.module == "os"
                and {alias.name for alias in node.names} & _ENVIRONMENT_READS
            ):
                readers.append(f"{name}:{node.lineno}")
    assert {reader.split(":")[0] for reader in readers} <= _ALLOWED, readers
