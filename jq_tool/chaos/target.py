"""The server under test and how to hurt it: `SpawnedServer` runs a private `jq serve` on a data
dir, reads the admin key from its first-start log line, SIGKILLs it (its whole process group) and
starts it again on the same data dir and port; `ExternalServer` does the same to a server the
user runs, through their `--kill-cmd` / `--restart-cmd` shell commands.

Both wait for `GET /health` to answer 200 before saying the server is back, so the harness's
kill count is a count of real crash-and-recover cycles.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
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
# A private server keeps its keys in its own data dir and logs the seeded keys we read; these
# variables of the harness's own environment would change that.
_PRIVATE_ENV_DROP: Final = ("REDIS_URL", "JQ_REDIS_PREFIX", "WAL_DIR", "PORT", "HOST")
_PRIVATE_ENV_SET: Final = {"JQ_SEED_KEYS": "true", "JQ_LOG_LEVEL": "info"}

# Short leases so a lease whose response died with the server comes back quickly, and a ticker
# fast enough to notice.
SERVE_FLAGS: Final[tuple[str, ...]] = ("--lease-duration", "5s", "--lease-check-interval", "500ms")

FIRST_CONTACT_TIMEOUT_S: Final = 15.0

ADMIN_KEY_LINE = re.compile(r"Created admin key: (admin_[A-Za-z0-9_\-]+) \(owner: ")
# Anything that looks like an API key, so server output we show on failure shows no secret.
_SECRET = re.compile(r"\b(admin|client|worker)_[A-Za-z0-9_\-]{6,}")


class TargetError(Exception):
    """The server could not be started, killed or brought back. The message says why."""


def redact(text: str) -> str:
    return _SECRET.sub(lambda match: f"{match.group(1)}_…", text)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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


class Target(Protocol):
    base_url: str
    key: str

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
    ) -> None:
        self.data_dir = data_dir
        self.log_path = log_path or data_dir.parent / f"{data_dir.name}.serve.log"
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.extra_args = tuple(extra_args)
        base_env = dict(os.environ if env is None else env)
        for name in _PRIVATE_ENV_DROP:
            base_env.pop(name, None)
        self.env = {**base_env, **_PRIVATE_ENV_SET}
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


async def _run_shell(command: str, flag: str) -> None:
    process = await asyncio.create_subprocess_shell(
        command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        text = redact(output.decode("utf-8", "replace").strip()[-500:])
        raise TargetError(f"{flag} exited with code {process.returncode}: {text}")
