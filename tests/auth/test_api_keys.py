from __future__ import annotations

import hashlib
import json
import re

from jq_tool.auth import ApiKey, AuthCache, KeyType, Scope, format_time, is_key_id
from jq_tool.auth.keys import new_key, secret_key_type


def test_new_key_derives_id_and_prefix_from_the_secret() -> None:
    record, secret = new_key(
        name="n", owner_id="o", key_type=KeyType.WORKER, scopes=(Scope.JOBS_ACK,), now_ms=1
    )
    assert re.fullmatch(r"worker_[A-Za-z0-9_-]{43}", secret)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    assert record.key_hash == digest
    assert record.key.key_id == f"worker_{digest[:16]}"
    assert record.key.key_prefix == secret[:12] + "…"
    assert is_key_id(record.key.key_id) and not is_key_id(secret)
    assert secret_key_type(secret) is KeyType.WORKER
    assert secret not in repr(record)


def test_secret_key_type_refuses_what_cannot_be_a_secret() -> None:
    for bogus in ["", "client_", "root_" + "a" * 43, "client_" + "!" * 43, "Bearer x"]:
        assert secret_key_type(bogus) is None


def test_format_time_is_rfc3339_utc_with_milliseconds() -> None:
    assert format_time(0) == "1970-01-01T00:00:00.000Z"
    assert format_time(1_795_860_000_123) == "2026-11-28T10:00:00.123Z"


def test_public_shape_and_has() -> None:
    key = ApiKey(
        key_id="client_0123456789abcdef",
        key_prefix="client_abcde…",
        name="svc",
        owner_id="team",
        type=KeyType.CLIENT,
        scopes=(Scope.JOBS_SUBMIT, Scope.JOBS_READ),
        created_at=1_795_860_000_123,
        revoked_at=1_795_860_001_000,
    )
    assert key.has(Scope.JOBS_READ) and not key.has(Scope.KEYS_CREATE)
    public = key.public()
    assert public == {
        "key_id": "client_0123456789abcdef",
        "key_prefix": "client_abcde…",
        "name": "svc",
        "owner_id": "team",
        "type": "client",
        "scopes": ["jobs:submit", "jobs:read"],
        "created_at": "2026-11-28T10:00:00.123Z",
        "revoked_at": "2026-11-28T10:00:01.000Z",
    }
    json.dumps(public)  # plain JSON types only


def test_auth_cache_serves_only_matching_hashes_and_forgets_on_invalidate() -> None:
    record, _ = new_key(name="n", owner_id="o", key_type=KeyType.CLIENT, scopes=(), now_ms=1)
    cache = AuthCache(ttl_s=3600, negative_ttl_s=3600)
    key_id = record.key.key_id
    assert cache.lookup(key_id, record.key_hash) == (False, None)
    cache.remember(key_id, record.key_hash, record.key)
    assert cache.lookup(key_id, record.key_hash) == (True, record.key)
    assert cache.lookup(key_id, "0" * 64) == (False, None)
    cache.invalidate(key_id)
    assert cache.lookup(key_id, record.key_hash) == (False, None)
    cache.remember(key_id, record.key_hash, None)
    assert cache.lookup(key_id, record.key_hash) == (True, None)


def test_auth_cache_expired_entries_are_misses_and_size_is_bounded() -> None:
    expired = AuthCache(ttl_s=0, negative_ttl_s=0)
    expired.remember("client_0000000000000000", "h", None)
    assert expired.lookup("client_0000000000000000", "h") == (False, None)
    bounded = AuthCache(ttl_s=3600, negative_ttl_s=3600, max_entries=10)
    for i in range(25):
        bounded.remember(f"client_{i:016x}", "h", None)
    assert len(bounded) <= 10
