"""The server under test and how to hurt it: `SpawnedServer` runs a private `jq serve` on a data
dir, reads the admin key from its first-start log line, SIGKILLs it (its whole process group) and
starts it again on the same data dir and port; `SpawnedCluster` runs N such servers as one
cluster (`CLUSTER_MODE=true`, each with its own etcd member) and SIGKILLs one random node at a
time; `ExternalServer` does the same to a server the user runs, through their `--kill-cmd` /
`--restart-cmd` shell commands.

All wait for `GET /health` to answer 200 before saying the server is back, so the harness's
kill count is a count of real crash-and-recover cycles. A target names its `endpoints()`: the
nodes the harness spreads its requests over and fails over between.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final, Protocol

import httpx

# The one command that starts a server: the root CLI's `serve`, by the running interpreter (so a
# venv without `jq` on PATH works, and `/usr/bin/jq` is never picked up).
SERVE_COMMAND: Final[tuple[str, ...]] = (sys.executable, "-m", "jq_tool.cli.main", "serve")
# The cluster variables `jq serve` reads; a spawned cluster node gets its own set of them.
CLUSTER_ENV_VARS: Final = (
    "CLUSTER_MODE", "NODE_ID", "RAFT_ADDR", "PEERS", "HTTP_PEERS", "BOOTSTRAP", "ETCD_ENDPOINTS",
    "ETCD_CLIENT_ADDR", "ETCD_CLUSTER_TOKEN", "SHARDS", "SHARD_REPLICAS",
)  # fmt: skip
# A private server keeps its keys in its own data dir and logs the seeded keys we read; these
# variables of the harness's own environment would change that (or make it a cluster node).
_PRIVATE_ENV_DROP: Final = (
    "REDIS_URL", "JQ_REDIS_PREFIX", "WAL_DIR", "PORT", "HOST", *CLUSTER_ENV_VARS,
)  # fmt: skip
_PRIVATE_ENV_SET: Final = {"JQ_SEED_KEYS": "true", "JQ_LOG_LEVEL": "info"}

# Short leases so a lease whose response died with the server comes back quickly, and a ticker
# fast enough to notice.
SERVE_FLAGS: Final[tuple[str, ...]] = ("--lease-duration", "5s", "--lease-check-interval", "500ms")

FIRST_CONTACT_TIMEOUT_S: Final = 15.0
# A cluster boots N servers and N etcd members on a shared machine and must elect a leader.
CLUSTER_START_TIMEOUT_S: Final = 120.0
# How long a killed node's process group (its etcd member included) may take to be gone before
# the restart goes ahead anyway: a member still holding its ports would fail the restart.
GROUP_GONE_TIMEOUT_S: Final = 5.0

ADMIN_KEY_LINE = re.compile(r"Created admin key: (admin_[A-Za-z0-9_\-]+) \(owner: ")
# Anything that looks like an API key, so server output we show on failure shows no secret.
_SECRET = re.compile(r"\b(admin|client|worker)_[A-Za-z0-9_\-]{6,}")


class TargetError(Exception):
    """The server could not be started, killed or brought back. The message says why."""


def redact(text: str) -> str:
    return _SECRET.sub(lambda match: f"{match.group(1)}_…", text)


def free_port(taken: set[int] | None = None) -> int:
    """A loopback port free for a listener (a `jq serve`). Drawn from below the kernel's
    ephemeral range, like free_peer_port and for its reason. Ports in `taken` (promised to an
    etcd member not started yet: free now, bound before this listener) are skipped, and the
    port is added to it."""
    port = _free_ports_from(1, set() if taken is None else taken)
    if taken is not None:
        taken.add(port)
    return port


def _below_ephemeral_ports() -> int:
    """The lowest port the kernel hands out as an outgoing connection's source port."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    return max(low, 12000)


def free_peer_port(taken: set[int] | None = None) -> int:
    """A port P with P+1 free too: an etcd member's peer port P and client port P+1. Ports in
    `taken` (already promised to another member) are skipped. Drawn from below the kernel's
    ephemeral range: a port the kernel gave out and took back (binding port 0) can become some
    outgoing connection's source port before etcd binds it, and the member then dies with
    "address already in use" (seen once in CI, a shard's member in tests/shards)."""
    return _free_ports_from(2, taken or set())


def _free_ports_from(width: int, taken: set[int]) -> int:
    """A port P such that P … P+width-1 are free on loopback and none is in `taken`."""
    below = _below_ephemeral_ports()
    for _ in range(200):
        port = random.randrange(10000, below - width + 1)
        ports = range(port, port + width)
        if taken.intersection(ports):
            continue
        sockets = [socket.socket() for _ in ports]
        try:
            for sock, candidate in zip(sockets, ports, strict=True):
                sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return port
    raise TargetError(f"found no {width} free consecutive loopback port(s)")


def free_peer_ports(count: int, taken: set[int] | None = None) -> list[int]:
    """`count` etcd peer ports whose pairs (P, P+1) are free and do not overlap; each pair is
    added to `taken`."""
    taken = set() if taken is None else taken
    ports = []
    for _ in range(count):
        port = free_peer_port(taken)
        taken.update((port, port + 1))
        ports.append(port)
    return ports


async def wait_healthy(base_url: str, timeout: float, *, alive: Process | None = None) -> None:
    """Poll GET /health until it answers 200. Raises TargetError after `timeout` seconds, or at
    once when `alive` (the server process) has exited."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    async with httpx.AsyncClient(base_url=base_url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if alive is not None and alive.poll() is not None:
                raise TargetError(f"server exited with code {alive.returncode} while starting")
            try:
                response = await client.get("/health")
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}"
            else:
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            await asyncio.sleep(0.05)
    raise TargetError(f"{base_url}/health did not answer 200 within {timeout:.0f}s ({last})")


class Process(Protocol):
    returncode: int | None

    def poll(self) -> int | None: ...


class Endpoint(Protocol):
    """One node requests can go to: its URL and the key it accepts (read per request: a
    restarted server may print a new one)."""

    @property
    def base_url(self) -> str: ...

    @property
    def key(self) -> str: ...


class Target(Protocol):
    @property
    def base_url(self) -> str: ...

    @property
    def key(self) -> str: ...

    def endpoints(self) -> Sequence[Endpoint]:
        """The nodes to spread requests over, in a fixed order (one for a single server)."""
        ...

    async def start(self) -> None: ...

    async def kill(self) -> None: ...

    async def restart(self) -> None: ...

    async def stop(self) -> None: ...

    def unexpected_exit(self) -> str | None:
        """Why the server is gone when nobody killed it (a crash of its own), else None."""
        ...


class SpawnedServer:
    """A private `jq serve` the harness owns. Output goes to `log_path` (appended across
    restarts); the admin key is read from it, never echoed."""

    def __init__(
        self,
        data_dir: Path,
        *,
        log_path: Path | None = None,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        key: str | None = None,
        node_env: Mapping[str, str] | None = None,
    ) -> None:
        """`node_env` is set last, after the private-server cleanup: a cluster node's own
        variables."""
        self.data_dir = data_dir
        self.log_path = log_path or data_dir.parent / f"{data_dir.name}.serve.log"
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.extra_args = tuple(extra_args)
        base_env = dict(os.environ if env is None else env)
        for name in _PRIVATE_ENV_DROP:
            base_env.pop(name, None)
        self.env = {**base_env, **_PRIVATE_ENV_SET, **(node_env or {})}
        self.start_timeout = start_timeout
        self.key = key or ""
        self._key_given = bool(key)  # an explicit key wins over the one in the log
        self.starts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._expected_down = True  # between our kill (or stop) and the next healthy start

    @property
    def command(self) -> list[str]:
        return [
            *SERVE_COMMAND,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *SERVE_FLAGS,
            *self.extra_args,
        ]

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def endpoints(self) -> Sequence[Endpoint]:
        return (self,)

    def unexpected_exit(self) -> str | None:
        process = self._process
        if self._expected_down or process is None or process.poll() is None:
            return None
        return (
            f"the server exited on its own with code {process.returncode}; "
            f"server log:\n{self.log_tail()}"
        )

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    async def start(self) -> None:
        await self.wait_ready(self.spawn())

    def spawn(self) -> int:
        """Start the process without waiting for it; returns the log offset of this start, for
        `wait_ready`."""
        if self.running():
            raise TargetError("server is already running")
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            with self.log_path.open("ab") as log:
                # A session of its own: the kill takes the whole group (uvicorn workers
                # included), and a Ctrl-C at the harness does not reach the server first.
                self._process = subprocess.Popen(
                    self.command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    start_new_session=True,
                )
        except OSError as exc:
            raise TargetError(f"cannot start the server in {self.data_dir}: {exc}") from None
        self.starts += 1
        self._expected_down = False
        return offset

    async def wait_ready(self, offset: int) -> None:
        """Wait until the spawned process serves /health and its admin key is known; on failure
        stop it and raise TargetError with the tail of its log."""
        try:
            await wait_healthy(self.base_url, self.start_timeout, alive=self._process)
        except TargetError as exc:
            await self.stop()
            raise TargetError(f"{exc}; server log:\n{self.log_tail(offset)}") from None
        if not self._key_given:
            key = await self._admin_key(offset)
            if key is not None:
                self.key = key
        if not self.key:
            await self.stop()
            raise TargetError(
                "the server started but printed no 'Created admin key: admin_…' line; pass --key"
            )

    async def kill(self) -> None:
        """SIGKILL, no warning: the point is a crash, not a shutdown."""
        self._expected_down = True
        process = self._process
        if process is None or process.poll() is not None:
            raise TargetError(f"server is not running (exit code {self.returncode})")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await asyncio.to_thread(process.wait)

    async def restart(self) -> None:
        await self.start()

    async def stop(self) -> None:
        self._expected_down = True
        process = self._process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 10.0)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await asyncio.to_thread(process.wait)

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process is not None else None

    def log_text(self, offset: int = 0) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return log.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, offset: int = 0, lines: int = 30) -> str:
        """The end of the server's output since `offset`, secrets redacted."""
        return redact("\n".join(self.log_text(offset).splitlines()[-lines:]))

    async def _admin_key(self, offset: int) -> str | None:
        # The line may land a moment after /health is up; give it a short grace.
        deadline = time.monotonic() + 2.0
        while True:
            match = ADMIN_KEY_LINE.search(self.log_text(offset))
            if match is not None:
                return match.group(1)
            if self.key or time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.05)


class ExternalServer:
    """A server someone else runs (`--target`): killed and restarted by shell commands."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        kill_cmd: str | None,
        restart_cmd: str | None,
        start_timeout: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.kill_cmd = kill_cmd
        self.restart_cmd = restart_cmd
        self.start_timeout = start_timeout

    async def start(self) -> None:
        # The server should already be up: a short wait, so a wrong URL fails fast.
        await wait_healthy(self.base_url, min(self.start_timeout, FIRST_CONTACT_TIMEOUT_S))

    async def kill(self) -> None:
        if not self.kill_cmd:
            raise TargetError("no --kill-cmd to kill the target with")
        await _run_shell(self.kill_cmd, "--kill-cmd")

    async def restart(self) -> None:
        # Without --restart-cmd something else (a supervisor, compose's restart policy) brings
        # the server back; either way it counts as back only once /health answers.
        if self.restart_cmd:
            await _run_shell(self.restart_cmd, "--restart-cmd")
        await wait_healthy(self.base_url, self.start_timeout)

    async def stop(self) -> None:
        return None

    def unexpected_exit(self) -> str | None:
        return None  # not ours to watch: a dead target shows as requests that never succeed

    def endpoints(self) -> Sequence[Endpoint]:
        return (self,)


class SpawnedCluster:
    """N private `jq serve` nodes in cluster mode under `root` (`root/n1`, … data dirs, with
    `root/n1.serve.log`, … beside them). Each node starts its own etcd member on free loopback
    ports and keeps its keys in its own embedded store, so each node's admin key is read from its
    own log; no Redis is involved.

    `kill` SIGKILLs one node chosen by `seed` (its etcd member dies with it) and `restart` brings
    that node back on the same data dir and ports, healthy, before returning: at most one node
    is ever down, so a majority always stays up.
    """

    def __init__(
        self,
        root: Path,
        size: int,
        *,
        seed: int,
        env: Mapping[str, str] | None = None,
        start_timeout: float = CLUSTER_START_TIMEOUT_S,
    ) -> None:
        if size < 3:
            raise TargetError(f"a cluster needs at least 3 nodes, not {size}")
        self.root = root
        self._victims = random.Random(seed)
        names = [f"n{i}" for i in range(1, size + 1)]
        taken: set[int] = set()
        peers = {
            name: f"127.0.0.1:{port}"
            for name, port in zip(names, free_peer_ports(size, taken), strict=True)
        }
        http_ports = {name: free_port(taken) for name in names}  # not a member's port
        common = {
            "CLUSTER_MODE": "true",
            "BOOTSTRAP": "true",
            "PEERS": ",".join(f"{name}@{addr}" for name, addr in peers.items()),
            "HTTP_PEERS": ",".join(
                f"{name}@http://127.0.0.1:{port}" for name, port in http_ports.items()
            ),
            "ETCD_CLUSTER_TOKEN": f"jq-chaos-{seed}-{http_ports[names[0]]}",
        }
        self.nodes: dict[str, SpawnedServer] = {
            name: SpawnedServer(
                root / name,
                log_path=root / f"{name}.serve.log",
                port=http_ports[name],
                env=env,
                start_timeout=start_timeout,
                node_env={**common, "NODE_ID": name, "RAFT_ADDR": peers[name]},
            )
            for name in names
        }
        self.killed: list[str] = []  # node names in kill order, for the report
        self._down: str | None = None

    @property
    def base_url(self) -> str:
        return self._first().base_url

    @property
    def down(self) -> str | None:
        """The node killed and not yet healthy again, if any."""
        return self._down

    @property
    def key(self) -> str:
        return self._first().key

    def _first(self) -> SpawnedServer:
        return next(iter(self.nodes.values()))

    def endpoints(self) -> Sequence[Endpoint]:
        return tuple(self.nodes.values())

    async def start(self) -> None:
        if shutil.which("etcd") is None:
            raise TargetError(
                "--cluster needs the etcd binary on PATH (Debian: apt-get install etcd-server)"
            )
        # An etcd member remembers its peers' ports, and these nodes get new ones: a member
        # from an earlier run would wait for peers that are not there.
        used = [name for name, node in self.nodes.items() if (node.data_dir / "etcd").exists()]
        if used:
            raise TargetError(
                f"{self.root} already holds cluster data ({', '.join(used)}): the nodes get new "
                "ports every run, so give --data-dir an empty or new directory"
            )
        # All at once: no member can serve before a majority of them has started.
        offsets = {name: node.spawn() for name, node in self.nodes.items()}
        waits = {
            asyncio.create_task(node.wait_ready(offsets[name])): name
            for name, node in self.nodes.items()
        }
        # The first node that fails ends the start: the others would wait for a quorum that
        # never comes.
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_EXCEPTION)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        failures = [
            f"node {waits[task]}: {task.exception()}"
            for task in done
            if not task.cancelled() and task.exception() is not None
        ]
        if failures:
            await self.stop()
            raise TargetError("the cluster did not start; " + "\n".join(sorted(failures)))

    async def kill(self) -> None:
        if self._down is not None:
            raise TargetError(f"node {self._down} is still down: one kill at a time")
        name = self._victims.choice(list(self.nodes))
        node = self.nodes[name]
        group = node.pid
        self._down = name
        await node.kill()
        self.killed.append(name)
        if group is not None:
            await _group_gone(group)

    async def restart(self) -> None:
        if self._down is None:
            raise TargetError("no node is down")
        name = self._down
        try:
            await self.nodes[name].start()
        except TargetError as exc:
            raise TargetError(f"node {name} did not come back: {exc}") from None
        self._down = None

    async def stop(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.nodes.values()))

    def unexpected_exit(self) -> str | None:
        for name, node in self.nodes.items():
            reason = node.unexpected_exit()
            if reason is not None:
                return f"cluster node {name}: {reason}"
        return None


async def _group_gone(group: int) -> None:
    """Wait until no process of process group `group` is left (a SIGKILLed node's etcd member
    exits a moment after the node), or GROUP_GONE_TIMEOUT_S passes: an unreaped zombie keeps the
    group alive but holds no ports."""
    deadline = time.monotonic() + GROUP_GONE_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            return
        await asyncio.sleep(0.05)


async def _run_shell(command: str, flag: str) -> None:
    process = await asyncio.create_subprocess_shell(
        command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        text = redact(output.decode("utf-8", "replace").strip()[-500:])
        raise TargetError(f"{flag} exited with code {process.returncode}: {text}")
