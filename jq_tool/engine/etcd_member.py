"""Cluster configuration from the seed's env vars, and the etcd member each `jq serve` node
starts and supervises beside itself.

The seed configured hashicorp/raft with NODE_ID, RAFT_ADDR (this node's Raft address), PEERS
(`id@host:port,…`), HTTP_PEERS and BOOTSTRAP. In jq the consensus engine is etcd, so RAFT_ADDR
and PEERS are the etcd *peer* addresses of the members; each member's *client* address is its
peer port + 1 on the same host (override this node's with ETCD_CLIENT_ADDR). ETCD_ENDPOINTS
(comma-separated URLs) uses an existing etcd cluster instead and starts no member.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from jq_tool.engine.child_process import die_with_parent

log = logging.getLogger("jq.cluster")


class ClusterConfigError(ValueError):
    """The cluster env vars do not describe a usable cluster."""


def parse_id_list(text: str, *, var: str) -> dict[str, str]:
    """`id@addr,id@addr` → {id: addr}."""
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        node_id, sep, addr = item.partition("@")
        if not sep or not node_id or not addr:
            raise ClusterConfigError(f"{var}: expected id@address, got {item!r}")
        out[node_id] = addr
    return out


def client_addr_for(peer_addr: str) -> str:
    host, _, port = peer_addr.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterConfigError(f"expected host:port, got {peer_addr!r}")
    return f"{host}:{int(port) + 1}"


def listen_addr(addr: str) -> str:
    """etcd listens on IPs only: a host name (as in docker compose) listens on all interfaces
    and is still what the member advertises."""
    host, _, port = addr.rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return f"0.0.0.0:{port}"
    return addr


@dataclass(frozen=True)
class ClusterConfig:
    node_id: str
    raft_addr: str  # this node's etcd peer address host:port
    peers: dict[str, str]  # every member's etcd peer address, this node included
    http_peers: dict[str, str] = field(default_factory=dict)  # id -> jq HTTP base URL
    bootstrap: bool = False
    client_addr: str = ""  # this node's etcd client address host:port
    etcd_endpoints: tuple[str, ...] = ()  # an existing etcd cluster: start no member
    token: str = "jq-cluster"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ClusterConfig:
        node_id = env.get("NODE_ID", "").strip()
        if not node_id:
            raise ClusterConfigError("CLUSTER_MODE=true needs NODE_ID")
        endpoints = tuple(
            e.strip().rstrip("/") for e in env.get("ETCD_ENDPOINTS", "").split(",") if e.strip()
        )
        peers = parse_id_list(env.get("PEERS", ""), var="PEERS")
        raft_addr = env.get("RAFT_ADDR", "").strip() or peers.get(node_id, "")
        if not endpoints:
            if not raft_addr:
                raise ClusterConfigError("CLUSTER_MODE=true needs RAFT_ADDR (or ETCD_ENDPOINTS)")
            peers.setdefault(node_id, raft_addr)
            if peers[node_id] != raft_addr:
                raise ClusterConfigError(
                    f"PEERS says {node_id}@{peers[node_id]} but RAFT_ADDR is {raft_addr}"
                )
        return cls(
            node_id=node_id,
            raft_addr=raft_addr,
            peers=peers,
            http_peers=parse_id_list(env.get("HTTP_PEERS", ""), var="HTTP_PEERS"),
            bootstrap=env.get("BOOTSTRAP", "").strip().lower() in ("1", "true", "yes"),
            client_addr=env.get("ETCD_CLIENT_ADDR", "").strip()
            or (client_addr_for(raft_addr) if raft_addr else ""),
            etcd_endpoints=endpoints,
            token=env.get("ETCD_CLUSTER_TOKEN", "jq-cluster"),
        )

    def endpoints(self) -> list[str]:
        """etcd client URLs, this node's own member first."""
        if self.etcd_endpoints:
            return list(self.etcd_endpoints)
        own = f"http://{self.client_addr}"
        others = [
            f"http://{client_addr_for(addr)}"
            for node, addr in sorted(self.peers.items())
            if node != self.node_id
        ]
        return [own, *others]


class EtcdMember:
    """Runs `etcd` as a child process with its data under <data_dir>/etcd, restarts nothing by
    itself (a dead member makes this node unhealthy; the operator's supervisor restarts jq)."""

    def __init__(self, config: ClusterConfig, data_dir: Path, *, binary: str = "etcd") -> None:
        self.config = config
        self.data_dir = data_dir / "etcd"
        self.binary = shutil.which(binary) or binary
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "etcd.log"

    def command(self) -> list[str]:
        c = self.config
        initial = ",".join(f"{node}=http://{addr}" for node, addr in sorted(c.peers.items()))
        return [
            self.binary,
            "--name", c.node_id,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", f"http://{listen_addr(c.client_addr)}",
            "--advertise-client-urls", f"http://{c.client_addr}",
            "--listen-peer-urls", f"http://{listen_addr(c.raft_addr)}",
            "--initial-advertise-peer-urls", f"http://{c.raft_addr}",
            "--initial-cluster", initial,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", c.token,
            "--heartbeat-interval", "100",
            "--election-timeout", "1000",
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]  # fmt: skip

    async def start(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        log.info("starting etcd member %s (peer %s, client %s)", self.config.node_id,
                 self.config.raft_addr, self.config.client_addr)  # fmt: skip
        self.process = subprocess.Popen(
            self.command(), stdout=log_file, stderr=log_file, preexec_fn=die_with_parent
        )
        log_file.close()
        # Wait until the member serves its client port (not for quorum: peers may come later).
        url = f"http://{self.config.client_addr}/version"
        async with httpx.AsyncClient(timeout=1.0) as http:
            for _ in range(200):
                if self.process.poll() is not None:
                    code = self.process.returncode
                    raise RuntimeError(f"etcd exited with {code}; see {self.log_path}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(url)).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        raise RuntimeError(f"etcd did not start serving {url}; see {self.log_path}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        for _ in range(100):
            if self.process.poll() is not None:
                return
            await asyncio.sleep(0.05)
        self.process.kill()
        self.process.wait()


def cluster_mode_enabled(env: Mapping[str, str] = os.environ) -> bool:
    return env.get("CLUSTER_MODE", "").strip().lower() in ("1", "true", "yes")
