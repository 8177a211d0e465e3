"""Shared fixtures: real `jq serve` processes.

`jq_server` is a fresh server (free port, temp data dir, embedded key store) for one test;
`jq_server_factory(*extra_args, env=..., data_dir=...)` starts more, with other flags. Each
waits for GET /health, parses the three seeded keys from the server's log, and is stopped
(SIGTERM, then SIGKILL) at teardown. The server's stderr goes to `server.log_path`.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from jq_tool.chaos.target import free_port
from jq_tool.settings import ENV_VARS

SERVE_COMMAND = [sys.executable, "-m", "jq_tool.cli.serve"]
KEY_LINE = re.compile(
    r"Created (client|worker|admin) key: (\S+) \(owner: dev-(?:client|worker|admin)\)"
)

# Variables `jq serve` reads: a developer's shell must not change what a test runs.
SERVER_ENV_VARS = tuple(ENV_VARS.values())


class JqServer:
    """One `jq serve` process on a fixed port and data dir, restartable."""

    def __init__(
        self,
        data_dir: Path,
        *,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        port: int | None = None,
        command: list[str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.command = command or SERVE_COMMAND
        self.env = {k: v for k, v in os.environ.items() if k not in SERVER_ENV_VARS}
        self.env.update(env or {})
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client_key: str | None = None
        self.worker_key: str | None = None
        self.admin_key: str | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> JqServer:
        argv = [*self.command, "--port", str(self.port), "--data-dir", str(self.data_dir)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*argv, *self.args], stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        self.wait_healthy(timeout)
        self._read_keys()
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"jq serve exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"jq serve not healthy after {timeout}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the server and wait for it; returns its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self, timeout: float = 30.0) -> JqServer:
        """Graceful stop (if running), then start again on the same port and data dir."""
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        return self.start(timeout)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop(timeout=10.0)

    # --- reading it --------------------------------------------------------------------------

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _read_keys(self) -> None:
        for key_type, secret in KEY_LINE.findall(self.log()):
            setattr(self, f"{key_type}_key", secret)

    def headers(self, key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    def client(self, key: str | None = None, **kwargs: object) -> httpx.Client:
        """An httpx client on this server, sending `key` as Bearer."""
        return httpx.Client(base_url=self.url, headers=self.headers(key), **kwargs)  # type: ignore[arg-type]


ServerFactory = Callable[..., JqServer]


def _servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    servers: list[JqServer] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        data_dir: Path | None = None,
        port: int | None = None,
    ) -> JqServer:
        directory = data_dir or tmp_path_factory.mktemp("jq") / "data"
        server = JqServer(directory, args=args, env=env, port=port)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def jq_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """start(*extra_args, env=, data_dir=, port=) -> JqServer; stopped after the test."""
    yield from _servers(tmp_path_factory)


@pytest.fixture(scope="module")
def jq_module_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Like jq_server_factory, but the servers live for the whole test module."""
    yield from _servers(tmp_path_factory)


@pytest.fixture(scope="session")
def jq_session_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Like jq_server_factory, but the servers live for the whole test session."""
    yield from _servers(tmp_path_factory)


@pytest.fixture
def jq_server(jq_server_factory: ServerFactory) -> JqServer:
    """A fresh `jq serve` (embedded key store, temp data dir, short lease check interval)."""
    return jq_server_factory("--lease-check-interval", "200ms")
