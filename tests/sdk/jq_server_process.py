"""A real `jq serve` process for the SDK and CLI tests: start it on a free port with its own
data dir, read the seeded dev keys from its log, kill -9 and restart it on the same port and
data dir. No mocks: every test talks HTTP to this process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from jq_tool.chaos.target import free_port


def wait_until(predicate: object, timeout: float = 20.0, interval: float = 0.05) -> None:
    """Poll `predicate` until it is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():  # type: ignore[operator]
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


class ServerProcess:
    def __init__(
        self,
        data_dir: Path,
        *,
        lease_check_interval: str = "200ms",
        max_payload: str = "64KiB",
        lease_duration: str = "30s",
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.args = [
            sys.executable,
            "-m",
            "jq_tool.cli.serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(data_dir),
            "--lease-check-interval",
            lease_check_interval,
            "--max-payload",
            max_payload,
            "--lease-duration",
            lease_duration,
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.keys: dict[str, str] = {}

    @property
    def client_key(self) -> str:
        return self.keys["client"]

    @property
    def worker_key(self) -> str:
        return self.keys["worker"]

    @property
    def admin_key(self) -> str:
        return self.keys["admin"]

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_until(self._healthy, timeout=30, interval=0.1)
        if not self.keys:
            self.keys = dict(re.findall(r"Created (\w+) key: (\S+)", self.log_path.read_text()))
            assert {"client", "worker", "admin"} <= set(self.keys), self.log_path.read_text()

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"jq serve exited: {self.log_path.read_text()[-2000:]}")
        try:
            return httpx.get(self.url + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill9(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def restart(self) -> None:
        self.kill9()
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()
