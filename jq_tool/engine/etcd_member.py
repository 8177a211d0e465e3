"""The etcd member each `jq serve` node starts and supervises beside itself in cluster mode.

The seed configured hashicorp/raft with NODE_ID, RAFT_ADDR (this node's Raft address), PEERS
(`id@host:port,…`), HTTP_PEERS and BOOTSTRAP. In jq the consensus engine is etcd, so RAFT_ADDR
and PEERS are the etcd *peer* addresses of the members; each member's *client* address is its
peer port + 1 on the same host (ETCD_CLIENT_ADDR overrides this node's). Those settings are read
by jq_tool.settings and arrive here as a `ClusterConfig` (engine/base.py).
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
from pathlib import Path

import httpx

from jq_tool.engine.base import ClusterConfig
from jq_tool.engine.child_process import die_with_parent

log = logging.getLogger("jq.cluster")

# The member's log (`<data dir>/etcd.log`) is bounded: past this size it is copied to
# `etcd.log.1` (replacing the one before) and cut to nothing, checked at start and every
# LOG_CHECK_EVERY_S. etcd runs at `--log-level warn`, so a healthy member writes little; what it
# writes under trouble (slow applies, elections) must not fill the disk in a month.
LOG_MAX_BYTES = 16 << 20
LOG_CHECK_EVERY_S = 30.0

HEARTBEAT_MS = 100
ELECTION_TIMEOUT_MS = 1000
# On SIGTERM a member that leads first hands its leadership to a peer, and waits for that up to
# etcd's request timeout (7 s here). To a live peer the hand-over takes about a heartbeat; one
# that takes longer than an election would is to a peer that is stopping too (a whole cluster
# stopped at once: `docker compose down`), and is not worth more waiting. SIGKILL then: a
# member's data is safe on it (raft fsyncs before it answers; the chaos tests kill members so).
STOP_GRACE_S = 2 * ELECTION_TIMEOUT_MS / 1000


def bound_log(path: Path, max_bytes: int = LOG_MAX_BYTES) -> bool:
    """Copy-truncate `path` into `path.1` once it holds more than `max_bytes` (what logrotate's
    copytruncate does): the member keeps writing through its descriptor, opened for appending,
    so its next line lands at the start of the emptied file. True when it was cut."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    shutil.copyfile(path, path.with_name(path.name + ".1"))
    os.truncate(path, 0)
    return True


def listen_addr(addr: str) -> str:
    """etcd listens on IPs only: a host name (as in docker compose) listens on all interfaces
    and is still what the member advertises."""
    host, _, port = addr.rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return f"0.0.0.0:{port}"
    return addr


class EtcdMember:
    """Runs `etcd` as a child process with its data under <data_dir>/etcd, restarts nothing by
    itself (a dead member makes this node unhealthy; the operator's supervisor restarts jq)."""

    def __init__(self, config: ClusterConfig, data_dir: Path, *, binary: str = "etcd") -> None:
        self.config = config
        self.data_dir = data_dir / "etcd"
        self.binary = shutil.which(binary) or binary
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "etcd.log"
        self._log_bound: asyncio.Task[None] | None = None

    def command(self) -> list[str]:
        c = self.config
        initial = ",".join(f"{node}=http://{addr}" for node, addr in sorted(c.peers.items()))
        return [
            self.binary,
            "--name", c.node_id,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", f"http://{listen_addr(c.etcd_client_addr)}",
            "--advertise-client-urls", f"http://{c.etcd_client_addr}",
            "--listen-peer-urls", f"http://{listen_addr(c.raft_addr)}",
            "--initial-advertise-peer-urls", f"http://{c.raft_addr}",
            "--initial-cluster", initial,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", c.etcd_cluster_token,
            "--heartbeat-interval", str(HEARTBEAT_MS),
            "--election-timeout", str(ELECTION_TIMEOUT_MS),
            "--logger", "zap",
            "--log-level", "warn",
            "--log-outputs", "stderr",
        ]  # fmt: skip

    async def start(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        bound_log(self.log_path)
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        log.info("starting etcd member %s (peer %s, client %s)", self.config.node_id,
                 self.config.raft_addr, self.config.etcd_client_addr)  # fmt: skip
        self.process = subprocess.Popen(
            self.command(), stdout=log_file, stderr=log_file, preexec_fn=die_with_parent
        )
        log_file.close()
        # Wait until the member serves its client port (not for quorum: peers may come later).
        url = f"http://{self.config.etcd_client_addr}/version"
        async with httpx.AsyncClient(timeout=1.0) as http:
            for _ in range(200):
                if self.process.poll() is not None:
                    code = self.process.returncode
                    raise RuntimeError(f"etcd exited with {code}; see {self.log_path}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(url)).status_code == 200:
                        self._log_bound = asyncio.create_task(
                            self._bound_log_loop(), name="jq-etcd-log-bound"
                        )
                        return
                await asyncio.sleep(0.05)
        raise RuntimeError(f"etcd did not start serving {url}; see {self.log_path}")

    async def _bound_log_loop(self) -> None:
        while True:
            await asyncio.sleep(LOG_CHECK_EVERY_S)
            try:
                await asyncio.to_thread(bound_log, self.log_path)
            except OSError as exc:  # a full disk: the next round tries again
                log.warning("could not cut %s: %s", self.log_path, exc)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def stop(self) -> None:
        if self._log_bound is not None:
            self._log_bound.cancel()
            self._log_bound = None
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        deadline = asyncio.get_running_loop().time() + STOP_GRACE_S
        while asyncio.get_running_loop().time() < deadline:
            if self.process.poll() is not None:
                return
            await asyncio.sleep(0.05)
        log.info(
            "etcd member %s did not exit within %.1fs of SIGTERM (handing its leadership to a "
            "peer that is stopping too?): killed",
            self.config.node_id,
            STOP_GRACE_S,
        )
        self.process.kill()
        self.process.wait()
