"""`jq serve --redis-url`: the key store in Redis (the original service's layout), and a Redis
outage answered with 503, never 401.

Uses the machine's Redis at 127.0.0.1:6379 with a random key prefix (deleted afterwards) and,
for the outage, a private `redis-server` on a free port. Without Redis these tests skip, except
under CI=true, where a missing Redis is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

REDIS_URL = "redis://127.0.0.1:6379/0"


def _require_redis() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis at {REDIS_URL} is required under CI: {exc}")
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    _require_redis()
    prefix = f"jqtest-{uuid.uuid4().hex[:10]}:"
    yield prefix
    connection = redis.Redis.from_url(REDIS_URL)
    for name in connection.scan_iter(match=prefix + "*"):
        connection.delete(name)


@pytest.mark.slow
def test_redis_key_store(jq_server_factory: Any, redis_prefix: str) -> None:
    server = jq_server_factory("--redis-url", REDIS_URL, "--redis-prefix", redis_prefix)
    assert server.admin_key and server.client_key and server.worker_key
    with server.client(server.client_key) as client:
        assert client.post("/jobs", json={"payload": "via redis"}).status_code == 201
    with server.client(server.admin_key) as admin:
        created = admin.post("/admin/keys", json={"name": "n", "owner_id": "o", "type": "client"})
        secret = created.json()["key"]
        key_id = created.json()["key_id"]
    connection = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    fields = connection.hgetall(f"{redis_prefix}api_key:{key_id}")
    assert fields["owner_id"] == "o" and fields["type"] == "client"
    assert key_id in connection.smembers(f"{redis_prefix}keys:active")
    every_value = " ".join(
        " ".join(connection.hvals(name))
        for name in connection.scan_iter(match=redis_prefix + "api_key:*")
    )
    for plain in (secret, server.client_key, server.admin_key):
        assert plain not in every_value
    # A restart finds the keys in Redis and does not seed again.
    server.restart()
    assert server.log().count("Created admin key") == 1
    with server.client(secret) as http:
        assert http.get("/stats").status_code == 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return proc
        except redis.RedisError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)


@pytest.mark.slow
def test_redis_outage_is_503_not_401(jq_server_factory: Any) -> None:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is required under CI")
        pytest.skip("redis-server is not installed")
    port = _free_port()
    redis_proc = _start_redis(port)
    try:
        server = jq_server_factory("--redis-url", f"redis://127.0.0.1:{port}/0")
        with server.client(server.client_key) as client:
            assert client.get("/stats").status_code == 200
        redis_proc.kill()
        redis_proc.wait()
        # The worker key was never used: its lookup must reach Redis, which is gone.
        for key in (server.worker_key, "client_" + "z" * 43):
            response = httpx.get(server.url + "/stats", headers=server.headers(key), timeout=30)
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "unavailable"
        # Issue 15: /health says so too (503, key store unreachable): every request would be
        # refused. test_health_reasons.py checks the shape and the recovery.
        deadline = time.monotonic() + 15
        while httpx.get(server.url + "/health").status_code != 503:
            assert time.monotonic() < deadline, "/health never said the key store is gone"
            time.sleep(0.1)
        redis_proc = _start_redis(port)
        # Back again (and empty: it kept nothing on disk), so keys are now simply unknown.
        deadline = time.monotonic() + 20
        while True:
            status = httpx.get(
                server.url + "/stats", headers=server.headers(server.worker_key), timeout=30
            ).status_code
            if status != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status == 401
    finally:
        redis_proc.kill()
        redis_proc.wait()


@pytest.mark.slow
def test_a_revoke_on_one_server_ends_the_keys_streams_on_another(
    jq_server_factory: Any, redis_prefix: str
) -> None:
    """Issue 15, finding 3, in Redis mode: the revoke is announced on the Redis channel, and
    the other server ends the key's streams (its once-a-second re-check would too)."""
    from tests.server.test_tenants import StreamWatcher

    args = ("--redis-url", REDIS_URL, "--redis-prefix", redis_prefix)
    one = jq_server_factory(*args)
    other = jq_server_factory(*args)
    with one.client(one.admin_key) as admin:
        viewer = admin.post(
            "/admin/keys", json={"name": "v", "owner_id": "viewers", "type": "client"}
        ).json()
        headers = {"Authorization": f"Bearer {viewer['key']}"}
        # A ticket from one server opens a stream on the other: both sign with the store's secret.
        ticket = httpx.post(one.url + "/events/ticket", headers=headers).json()["ticket"]
        by_header = StreamWatcher(other.url + "/events", headers=headers)
        by_ticket = StreamWatcher(other.url + "/events", params={"ticket": ticket})
        assert by_header.opened.wait(10) and by_ticket.opened.wait(10)
        assert admin.delete(f"/keys/{viewer['key_id']}").status_code == 200
    assert by_header.ended.wait(5), "the other server kept the revoked key's stream open"
    assert by_ticket.ended.wait(5), "the other server kept the revoked key's ticket stream open"
    assert httpx.get(other.url + "/stats", headers=headers).status_code == 401


@pytest.mark.slow
def test_a_revoke_whose_notice_was_lost_still_ends_the_streams(
    jq_server_factory: Any, redis_prefix: str
) -> None:
    """Pub/sub is fire-and-forget: a key revoked in Redis without the notice (written here by
    hand, as a server cut off from the channel would leave it) is found by the re-check."""
    from tests.server.test_tenants import StreamWatcher

    server = jq_server_factory("--redis-url", REDIS_URL, "--redis-prefix", redis_prefix)
    with server.client(server.admin_key) as admin:
        viewer = admin.post(
            "/admin/keys", json={"name": "v", "owner_id": "viewers", "type": "client"}
        ).json()
    watcher = StreamWatcher(
        server.url + "/events", headers={"Authorization": f"Bearer {viewer['key']}"}
    )
    assert watcher.opened.wait(10)
    now_ms = int(time.time() * 1000)
    connection = redis.Redis.from_url(REDIS_URL)
    connection.hset(
        f"{redis_prefix}api_key:{viewer['key_id']}",
        mapping={"revoked_at": now_ms // 1000, "revoked_at_ms": now_ms},
    )
    assert watcher.ended.wait(10), "the re-check never closed the revoked key's stream"
