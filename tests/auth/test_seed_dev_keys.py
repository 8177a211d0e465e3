"""First-start seeding: three dev keys, logged exactly once each, and only on an empty store."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest

from jq_tool.auth import (
    EmbeddedKeyStore,
    KeyStore,
    KeyType,
    RedisKeyStore,
    Scope,
    seed_dev_keys,
)


async def test_seed_logs_exactly_three_lines_once(
    store: KeyStore, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("jq.test.seed")
    with caplog.at_level(logging.INFO, logger="jq.test.seed"):
        created = await seed_dev_keys(store, log)
    lines = [r.getMessage() for r in caplog.records if r.name == "jq.test.seed"]
    assert len(lines) == 3
    expected = [("client", "dev-client"), ("worker", "dev-worker"), ("admin", "dev-admin")]
    for line, (key_type, owner), (key, secret) in zip(lines, expected, created, strict=True):
        assert line == f"Created {key_type} key: {secret} (owner: {owner})"
        assert re.fullmatch(rf"{key_type}_[A-Za-z0-9_-]{{43}}", secret)
        assert key.owner_id == owner and key.type is KeyType(key_type)
        assert await store.authenticate(secret) == key
    admin = created[2][0]
    assert admin.has(Scope.KEYS_CREATE) and admin.has(Scope.KEYS_REVOKE)

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="jq.test.seed"):
        again = await seed_dev_keys(store, log)
    assert again == []
    assert [r for r in caplog.records if r.name == "jq.test.seed"] == []
    assert len(await store.list_all()) == 3


async def test_seed_skips_a_store_that_has_only_revoked_keys(store: KeyStore) -> None:
    key, _ = await store.create(name="n", owner_id="o", type=KeyType.CLIENT)
    await store.revoke(key.key_id)
    assert await seed_dev_keys(store, logging.getLogger("jq.test.seed")) == []


async def test_servers_starting_together_seed_only_once(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    for make in (
        lambda: EmbeddedKeyStore(tmp_path),
        lambda: RedisKeyStore(redis_url, prefix=redis_prefix),
    ):
        servers: list[KeyStore] = [make() for _ in range(3)]
        try:
            log = logging.getLogger("jq.test.seed")
            seeded = await asyncio.gather(*(seed_dev_keys(s, log) for s in servers))
            assert sorted(len(created) for created in seeded) == [0, 0, 3]
            assert len(await servers[0].list_all()) == 3
        finally:
            for server in servers:
                await server.close()


async def test_a_stale_seeding_claim_expires(tmp_path: Path) -> None:
    store = EmbeddedKeyStore(tmp_path)
    try:
        assert await store.claim_seeding(now_ms=1_000, hold_ms=500)
        assert not await store.claim_seeding(now_ms=1_200, hold_ms=500)
        assert await store.claim_seeding(now_ms=1_600, hold_ms=500)
    finally:
        await store.close()
