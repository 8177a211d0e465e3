"""`jq keys recover`: when the first start's keys are lost, a new admin key written straight into
the key store (a data dir's embedded store, or Redis), with no server and no key, works against
the server; the secret alone on stdout, or the record with --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

JQ = [sys.executable, "-m", "jq_tool.cli.main"]
SERVER_VARS = ("WAL_DIR", "REDIS_URL", "JQ_REDIS_PREFIX", "JQ_URL", "JQ_KEY")


def recover(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SERVER_VARS}
    return subprocess.run(
        [*JQ, "keys", "recover", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


def works_as_admin(url: str, secret: str) -> bool:
    answer = httpx.get(url + "/admin/keys", headers={"Authorization": f"Bearer {secret}"})
    return answer.status_code == 200


def test_lost_keys_recovered_offline_then_online(jq_server_factory: Any) -> None:
    server = jq_server_factory()
    server.stop()  # the first start's panel and log are gone; the server is down
    offline = recover("--data-dir", str(server.data_dir))
    assert offline.returncode == 0, offline.stderr
    secret = offline.stdout.strip()
    assert secret.startswith("admin_") and "\n" not in secret
    assert "not shown again" in offline.stderr and secret not in offline.stderr
    server.start()
    assert works_as_admin(server.url, secret)
    # With the server running (and WAL_DIR naming the data dir, as for `jq serve`).
    online = recover("--json", "--owner", "ops", env={"WAL_DIR": str(server.data_dir)})
    assert online.returncode == 0, online.stderr
    record = json.loads(online.stdout)
    assert record["type"] == "admin" and record["owner_id"] == "ops"
    assert "keys:create" in record["scopes"] and record["key_id"].startswith("admin_")
    assert works_as_admin(server.url, record["key"])
    listed = httpx.get(
        server.url + "/admin/keys", headers={"Authorization": f"Bearer {secret}"}
    ).text
    assert record["key_id"] in listed and record["key"] not in listed


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    import redis

    try:
        redis.Redis(socket_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis on 127.0.0.1:6379: {exc}")
    prefix = f"test-recover-{uuid.uuid4().hex[:8]}:"
    yield prefix
    connection = redis.Redis()
    for name in connection.scan_iter(match=prefix + "*"):
        connection.delete(name)


def test_recover_into_redis(jq_server_factory: Any, redis_prefix: str) -> None:
    url = "redis://127.0.0.1:6379/0"
    server = jq_server_factory("--redis-url", url, "--redis-prefix", redis_prefix)
    result = recover("--redis-url", url, "--redis-prefix", redis_prefix)
    assert result.returncode == 0, result.stderr
    assert works_as_admin(server.url, result.stdout.strip())
    wrong_prefix = recover("--redis-url", url, "--redis-prefix", redis_prefix + "other:")
    assert not works_as_admin(server.url, wrong_prefix.stdout.strip())


def test_nothing_to_recover_into(tmp_path: Path) -> None:
    missing = recover("--data-dir", str(tmp_path / "nope"))
    assert missing.returncode == 1 and missing.stdout == ""
    assert "no data dir" in missing.stderr and "--data-dir" in missing.stderr
    assert not (tmp_path / "nope").exists()
    unreachable = recover("--redis-url", "redis://127.0.0.1:1/0", "--json")
    assert unreachable.returncode == 4
    assert json.loads(unreachable.stderr)["error"].startswith("cannot reach Redis")
    assert "Traceback" not in missing.stderr + unreachable.stderr
