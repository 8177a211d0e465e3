"""Fixtures for the key store tests: a real embedded store in a temp dir, a real RedisKeyStore on
the machine's Redis under a random key prefix (deleted afterwards). Without Redis the Redis
tests skip — except under CI=true, where a missing Redis fails them."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from jq_tool.auth import EmbeddedKeyStore, KeyStore, RedisKeyStore

SHARED_REDIS_URL = os.environ.get("JQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require_redis(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


@pytest.fixture
def redis_url() -> str:
    try:
        with redis.Redis.from_url(SHARED_REDIS_URL, socket_connect_timeout=1) as client:
            client.ping()
    except redis.RedisError as exc:
        require_redis(f"Redis at {SHARED_REDIS_URL} is not reachable: {exc}")
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
