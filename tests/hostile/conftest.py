"""Fixtures for attacking real `jq serve` processes (issue 14): servers started under a low
descriptor limit (`prlimit`, which execs the server in place, so its pid is the server's), and
a small raw-socket HTTP client, because the attacks (idle sockets, partial heads, huge heads)
are exactly what a well-behaved HTTP library will not send. Loopback only; every loop in these
tests is bounded in count and time.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from tests.conftest import JqServer

SERVE = [sys.executable, "-m", "jq_tool.cli.serve"]


def limited(nofile: int) -> list[str]:
    """The server command under a descriptor limit of `nofile` (soft and hard)."""
    return ["prlimit", f"--nofile={nofile}:{nofile}", *SERVE]


HostileFactory = Callable[..., JqServer]


@pytest.fixture
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileFactory]:
    """start(*args, nofile=256, command=None) -> a running JqServer; stopped after the test."""
    servers: list[JqServer] = []

    def start(*args: str, nofile: int = 256, command: list[str] | None = None) -> JqServer:
        data_dir = tmp_path_factory.mktemp("hostile") / "data"
        server = JqServer(data_dir, args=args, command=command or limited(nofile))
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.close()


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool = False  # the server closed the connection after this answer

    def json(self) -> dict[str, object]:
        return json.loads(self.body)  # type: ignore[no-any-return]


def raw_request(
    method: str, path: str, *, key: str | None = None, body: bytes = b"", extra: str = ""
) -> bytes:
    """One request's bytes: Host, the key as a Bearer token, `extra` header lines, and a JSON
    body framed by Content-Length (a POST always has one)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if key:
        head += f"Authorization: Bearer {key}\r\n"
    head += extra
    if body or method == "POST":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


@dataclass
class RawClient:
    """One TCP connection speaking just enough HTTP/1.1 to read a Content-Length answer."""

    port: int
    timeout: float = 5.0
    sock: socket.socket = field(init=False)
    _buffer: bytes = b""

    def __post_init__(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self, method: str, path: str, *, key: str | None = None, body: bytes = b""
    ) -> Answer:
        self.send(raw_request(method, path, key=key, body=body))
        return self.read_answer()

    def read_answer(self) -> Answer:
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        self._buffer = rest
        while len(self._buffer) < length:
            self._fill()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        closed = headers.get("connection", "").lower() == "close"
        return Answer(status, headers, body, closed)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self._buffer += chunk

    def closed_by_server(self, within: float) -> bool:
        """Whether the server closes this connection within `within` seconds (data it sends
        meanwhile is kept for read_answer)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                return True
            if not chunk:
                return True
            self._buffer += chunk
        self.sock.settimeout(self.timeout)
        return False

    def close(self) -> None:
        self.sock.close()


def submit_body(payload: str = "x") -> bytes:
    return json.dumps({"payload": payload}).encode()


def wait_for(predicate: Callable[[], bool], timeout: float, every: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def assert_job_survives(server: JqServer, job_ids: list[str]) -> None:
    """kill -9, restart on the same data dir, and find every acknowledged job."""
    import httpx

    server.kill9()
    server.start()
    with server.client(server.client_key, timeout=10.0) as client:
        missing = [j for j in job_ids if client.get(f"/jobs/{j}").status_code != 200]
    assert not missing, f"{len(missing)} acknowledged jobs lost, e.g. {missing[:3]}"
    assert httpx.get(server.url + "/health", timeout=5.0).status_code == 200
