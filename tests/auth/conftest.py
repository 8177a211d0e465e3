"""Fixtures for the key store tests: a real embedded store in a temp dir, a real RedisKeyStore on
the machine's Redis under a random key prefix (deleted afterwards), and a private redis-server
process the test may stop and restart. Without Redis the Redis tests skip — except under
CI=true, where a missing Redis fails them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from jq_tool.auth import EmbeddedKeyStore, KeyStore, RedisKeyStore

SHARED_REDIS_URL = os.environ.get("JQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _require_redis(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


@pytest.fixture
def redis_url() -> str:
    try:
        with redis.Redis.from_url(SHARED_REDIS_URL, socket_connect_timeout=1) as client:
            client.ping()
    except redis.RedisError as exc:
        _require_redis(f"Redis at {SHARED_REDIS_URL} is not reachable: {exc}")
    return SHARED_REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"jqtest:auth:{uuid.uuid4().hex}:"
    yield prefix
    with redis.Redis.from_url(redis_url) as client:
        names = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if names:
            client.delete(*names)


@pytest.fixture
def raw_redis(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        yield client


@pytest.fixture
async def redis_store(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisKeyStore]:
    store = RedisKeyStore(redis_url, prefix=redis_prefix)
    yield store
    await store.close()


@pytest.fixture
async def embedded_store(tmp_path: Path) -> AsyncIterator[EmbeddedKeyStore]:
    store = EmbeddedKeyStore(tmp_path / "data")
    yield store
    await store.close()


@pytest.fixture(params=["embedded", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyStore]:
    """Each KeyStore implementation in turn, for the contract tests."""
    opened: KeyStore
    if request.param == "embedded":
        opened = EmbeddedKeyStore(tmp_path / "data")
    else:
        # Sync fixtures only: async ones cannot be requested lazily from an async fixture.
        url = request.getfixturevalue("redis_url")
        opened = RedisKeyStore(url, prefix=request.getfixturevalue("redis_prefix"))
    yield opened
    await opened.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    """A redis-server process of our own, keeping nothing on disk."""

    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            _require_redis("redis-server is not installed")
            return
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(port=self.port, socket_connect_timeout=0.5) as client:
                    client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(port=_free_port(), workdir=tmp_path)
    server.start()
    yield server
    server.stop()
