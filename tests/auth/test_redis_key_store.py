"""RedisKeyStore: the original service's layout, hashed at rest, cross-server revoke through
pub/sub, and 503-not-401 when Redis goes away (with recovery when it returns)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from jq_tool.auth import KeyStoreUnavailable, KeyType, RedisKeyStore, open_key_store
from jq_tool.auth.keys import hash_secret


def _missing_redis_server(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


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
            _missing_redis_server("redis-server is not installed")
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


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within_s: float = 15) -> None:
    """Poll until `check` holds; the bound only keeps a broken build from hanging."""
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        await asyncio.sleep(0.05)


async def test_layout_matches_the_original_service(
    redis_store: RedisKeyStore, raw_redis: redis.Redis, redis_prefix: str
) -> None:
    key, secret = await redis_store.create(name="w", owner_id="team", type=KeyType.WORKER)
    fields = raw_redis.hgetall(f"{redis_prefix}api_key:{key.key_id}")
    assert fields["key_id"] == key.key_id
    assert fields["key_hash"] == hash_secret(secret)
    assert fields["key_prefix"] == secret[:12] + "…"
    assert (fields["name"], fields["owner_id"], fields["type"]) == ("w", "team", "worker")
    assert json.loads(fields["scopes"]) == ["jobs:lease", "jobs:ack", "jobs:read", "keys:read"]
    assert int(fields["created_at"]) == key.created_at // 1000
    assert fields["revoked_at"] == ""
    assert raw_redis.smembers(f"{redis_prefix}keys:active") == {key.key_id}
    assert raw_redis.smembers(f"{redis_prefix}owner:team:keys") == {key.key_id}
    assert raw_redis.smembers(f"{redis_prefix}keys:type:worker") == {key.key_id}

    revoked = await redis_store.revoke(key.key_id)
    assert revoked is not None and revoked.revoked_at is not None
    fields = raw_redis.hgetall(f"{redis_prefix}api_key:{key.key_id}")
    assert int(fields["revoked_at"]) == revoked.revoked_at // 1000
    assert raw_redis.smembers(f"{redis_prefix}keys:active") == set()
    assert raw_redis.smembers(f"{redis_prefix}keys:revoked") == {key.key_id}
    # Every name the store wrote carries the prefix: nothing leaks into a shared Redis.
    assert all(n.startswith(redis_prefix) for n in raw_redis.scan_iter(match=f"*{key.key_id}*"))


async def test_the_secret_is_never_stored_in_redis(
    redis_store: RedisKeyStore, raw_redis: redis.Redis, redis_prefix: str
) -> None:
    created = [await redis_store.create(name="n", owner_id="o", type=t) for t in KeyType]
    await redis_store.revoke(created[1][1])
    dump: list[str] = []
    for name in raw_redis.scan_iter(match=f"{redis_prefix}*"):
        dump.append(str(name))
        kind = raw_redis.type(name)
        if kind == "hash":
            dump.extend(f"{k!s}={v!s}" for k, v in raw_redis.hgetall(name).items())
        elif kind == "set":
            dump.extend(str(m) for m in raw_redis.smembers(name))
    text = "\n".join(dump)
    assert len(dump) > 10
    for _, secret in created:
        assert secret.split("_", 1)[1] not in text
        assert hash_secret(secret) in text


async def test_revoke_on_one_server_invalidates_the_others_cache(
    redis_url: str, redis_prefix: str, raw_redis: redis.Redis
) -> None:
    # Caches that would otherwise live for an hour: only the pub/sub message can end them.
    server_a = RedisKeyStore(redis_url, prefix=redis_prefix, cache_ttl_s=3600)
    server_b = RedisKeyStore(redis_url, prefix=redis_prefix, cache_ttl_s=3600)
    try:
        key, secret = await server_a.create(name="n", owner_id="o", type=KeyType.CLIENT)
        assert await server_b.authenticate(secret) == key
        assert server_b.cache_live

        # Revoked behind the stores' back (no announcement): B keeps serving its cached answer,
        # which proves the next step is the pub/sub message at work, not a cache miss.
        now_ms = time.time_ns() // 1_000_000
        raw_redis.hset(
            f"{redis_prefix}api_key:{key.key_id}",
            mapping={"revoked_at": now_ms // 1000, "revoked_at_ms": now_ms},
        )
        assert await server_b.authenticate(secret) == key

        assert await server_a.revoke(key.key_id) is not None
        assert await server_a.authenticate(secret) is None

        async def b_refuses() -> bool:
            return await server_b.authenticate(secret) is None

        await eventually(b_refuses, "server B refuses the key revoked on server A")
    finally:
        await server_a.close()
        await server_b.close()


async def test_redis_going_away_is_unavailable_not_unknown(private_redis: RedisServer) -> None:
    store = RedisKeyStore(private_redis.url, prefix="jq:", cache_ttl_s=3600)
    try:
        key, secret = await store.create(name="n", owner_id="o", type=KeyType.ADMIN)
        assert await store.authenticate(secret) == key
        assert store.cache_live

        private_redis.stop()
        with pytest.raises(KeyStoreUnavailable, match="Redis"):
            await store.list_all()
        with pytest.raises(KeyStoreUnavailable):
            await store.create(name="m", owner_id="o", type=KeyType.CLIENT)

        async def cache_dropped() -> bool:
            return not store.cache_live

        await eventually(cache_dropped, "the store notices the lost subscription")
        # The server must answer 503 here, never 401: the key may well be valid.
        with pytest.raises(KeyStoreUnavailable):
            await store.authenticate(secret)
        with pytest.raises(KeyStoreUnavailable):
            await store.revoke(key.key_id)

        private_redis.start()  # same port, empty: --save '' kept nothing

        async def writable() -> bool:
            try:
                await store.create(name="again", owner_id="o", type=KeyType.CLIENT)
            except KeyStoreUnavailable:
                return False
            return True

        await eventually(writable, "the store works again once Redis is back")
        fresh, fresh_secret = await store.create(name="f", owner_id="o", type=KeyType.WORKER)
        assert await store.authenticate(fresh_secret) == fresh
        assert await store.authenticate(secret) is None  # that Redis forgot it

        async def resubscribed() -> bool:
            await store.authenticate(fresh_secret)
            return store.cache_live

        await eventually(resubscribed, "the revoke subscription comes back")
    finally:
        await store.close()


async def test_open_key_store_with_a_url_is_redis(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    store = open_key_store(redis_url, tmp_path, redis_prefix=redis_prefix)
    try:
        assert isinstance(store, RedisKeyStore)
        assert store.prefix == redis_prefix
        key, secret = await store.create(name="n", owner_id="o", type=KeyType.CLIENT)
        assert await store.authenticate(secret) == key
        assert list(tmp_path.iterdir()) == []  # nothing written to the data dir
    finally:
        await store.close()


def test_a_malformed_url_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid REDIS_URL"):
        open_key_store("http://127.0.0.1:6379", tmp_path)


async def test_records_we_cannot_use_are_skipped_not_fatal(
    redis_store: RedisKeyStore, raw_redis: redis.Redis, redis_prefix: str
) -> None:
    key, _ = await redis_store.create(name="n", owner_id="o", type=KeyType.CLIENT)
    # A Go-era record: the secret itself as id, no key_hash.
    legacy = "client_legacyplaintextsecretvalue0000000000000"
    raw_redis.hset(f"{redis_prefix}api_key:{legacy}", mapping={"key": legacy, "type": "client"})
    raw_redis.sadd(f"{redis_prefix}keys:active", legacy)
    raw_redis.sadd(f"{redis_prefix}owner:o:keys", legacy)
    assert [k.key_id for k in await redis_store.list_all()] == [key.key_id]
    assert [k.key_id for k in await redis_store.list_owner("o")] == [key.key_id]
    assert await redis_store.authenticate(legacy) is None
