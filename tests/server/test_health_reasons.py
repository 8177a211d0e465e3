"""GET /health tells the truth (issue 15, finding 8): 503 with every reason while work would be
refused, in one shape (`status`, `role`, `reason`, `problems: [{check, reason}]`), and 200
again once the condition is gone. Real conditions: a Redis key store killed and restarted, a
data dir on a tmpfs filled to the last byte. A failed fsync and a lost etcd majority are shown
by tests/chaos/test_chaos_disk_faults.py and tests/cluster/test_partition.py."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.test_redis_mode import _free_port, _start_redis


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def health(server: Any) -> httpx.Response:
    return httpx.get(server.url + "/health", timeout=10)


def assert_one_shape(response: httpx.Response, check: str, words: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"]
    body = response.json()
    assert set(body) == {"status", "role", "reason", "problems"}, body
    assert body["status"] == "unavailable" and body["role"] == "single"
    checks = {problem["check"]: problem["reason"] for problem in body["problems"]}
    assert words in checks[check], body
    assert all(reason in body["reason"] for reason in checks.values())


@pytest.mark.slow
def test_an_unreachable_key_store_makes_health_503(jq_server_factory: Any) -> None:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is required under CI")
        pytest.skip("redis-server is not installed")
    port = _free_port()
    redis_proc = _start_redis(port)
    try:
        server = jq_server_factory("--redis-url", f"redis://127.0.0.1:{port}/0")
        assert health(server).json() == {"status": "ok", "role": "single"}
        redis_proc.kill()
        redis_proc.wait()
        assert wait_for(lambda: health(server).status_code == 503), health(server).text
        assert_one_shape(health(server), "key_store", "key store unreachable")
        redis_proc = _start_redis(port)
        assert wait_for(lambda: health(server).status_code == 200), health(server).text
    finally:
        redis_proc.kill()
        redis_proc.wait()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted afterwards (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill(path: Path) -> None:
    chunk = b"\0" * (64 * 1024)
    with path.open("wb") as filler:
        try:
            while True:
                filler.write(chunk)
                filler.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        with contextlib.suppress(OSError):
            os.fsync(filler.fileno())


@pytest.mark.slow
def test_a_full_disk_makes_health_503_until_space_returns(
    jq_server_factory: Any, small_fs: Path
) -> None:
    server = jq_server_factory("--segment-bytes", "256KiB", data_dir=small_fs / "data")
    with server.client(server.client_key) as http:
        assert http.post("/jobs", json={"payload": "before"}).status_code == 201
        fill(small_fs / "filler")
        refused = None
        for i in range(200):
            response = http.post("/jobs", json={"payload": "x" * 4096, "queue": f"q{i % 3}"})
            if response.status_code == 507:
                refused = response
                break
        assert refused is not None, "the disk never filled up"
        assert_one_shape(health(server), "engine", "disk full")
        time.sleep(1.5)  # no write in between: /health keeps saying so
        assert_one_shape(health(server), "engine", "disk full")
        (small_fs / "filler").unlink()
        assert wait_for(lambda: health(server).status_code == 200), health(server).text
        assert http.post("/jobs", json={"payload": "after"}).status_code == 201
