"""Private etcd groups for sharded mode's tests and chaos runs: `EtcdGroup` starts three `etcd`
members on free loopback ports under a directory, says which member leads Raft, SIGKILLs one
and starts it again on the same data dir and ports. A sharded jq cluster (SHARDS) is pointed
at one group per shard (docs/scaling.md §7: the prototype uses existing etcd groups rather than
members each `jq serve` supervises).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx

from jq_tool.chaos.target import TargetError, free_peer_ports
from jq_tool.engine.child_process import die_with_parent
from jq_tool.engine.etcd_member import ELECTION_TIMEOUT_MS, HEARTBEAT_MS

MEMBER_START_TIMEOUT_S = 30.0


class EtcdMemberProcess:
    def __init__(self, root: Path, name: str, peer_port: int, initial: str, token: str) -> None:
        self.name = name
        self.data_dir = root / name
        self.log_path = root / f"{name}.log"
        self.peer_url = f"http://127.0.0.1:{peer_port}"
        self.client_url = f"http://127.0.0.1:{peer_port + 1}"
        self.initial = initial
        self.token = token
        self.process: subprocess.Popen[bytes] | None = None

    def command(self, state: str) -> list[str]:
        return [
            shutil.which("etcd") or "etcd",
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial,
            "--initial-cluster-state", state,
            "--initial-cluster-token", self.token,
            "--heartbeat-interval", str(HEARTBEAT_MS),
            "--election-timeout", str(ELECTION_TIMEOUT_MS),
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]  # fmt: skip

    def spawn(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command("new"), stdout=log, stderr=log, preexec_fn=die_with_parent
            )

    def wait_serving(self, timeout: float = MEMBER_START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise TargetError(f"etcd {self.name} exited; see {self.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.client_url + "/version", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.05)
        raise TargetError(f"etcd {self.name} did not serve within {timeout:.0f}s")

    def status(self) -> dict[str, object] | None:
        try:
            answer = httpx.post(self.client_url + "/v3/maintenance/status", json={}, timeout=1.0)
        except httpx.HTTPError:
            return None
        return dict(answer.json()) if answer.status_code == 200 else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()


class EtcdGroup:
    """Three etcd members forming one Raft group, under `root/<name>`."""

    def __init__(self, root: Path, name: str, size: int = 3, taken: set[int] | None = None) -> None:
        ports = free_peer_ports(size, taken)
        names = [f"{name}m{i}" for i in range(1, size + 1)]
        initial = ",".join(
            f"{member}=http://127.0.0.1:{port}" for member, port in zip(names, ports, strict=True)
        )
        token = f"jq-{name}-{ports[0]}"
        self.name = name
        self.members = [
            EtcdMemberProcess(root / name, member, port, initial, token)
            for member, port in zip(names, ports, strict=True)
        ]

    @property
    def client_urls(self) -> list[str]:
        return [member.client_url for member in self.members]

    def start(self) -> None:
        for member in self.members:
            member.spawn()
        for member in self.members:
            member.wait_serving()

    def leader(self, timeout: float = 15.0) -> EtcdMemberProcess:
        """The member that leads Raft now (waits for an election)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for member in self.members:
                if not member.alive():
                    continue
                status = member.status()
                header = status.get("header") if status else None
                if (
                    isinstance(status, dict)
                    and isinstance(header, dict)
                    and status.get("leader") == header.get("member_id")
                ):
                    return member
            time.sleep(0.1)
        raise TargetError(f"etcd group {self.name} has no leader")

    def restart(self, member: EtcdMemberProcess) -> None:
        member.spawn()
        member.wait_serving()

    def stop(self) -> None:
        for member in self.members:
            member.stop()
