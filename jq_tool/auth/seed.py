"""First-start seeding and the choice of key store.

`open_key_store` picks the store from the configuration (Redis when a URL is given, else the
embedded store in the data dir). `seed_dev_keys` gives a brand-new deployment one key of each
type and logs their secrets once — the only place a secret is ever written to a log — so an
operator can start using the server without a chicken-and-egg admin key.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from jq_tool.auth.embedded_store import EmbeddedKeyStore
from jq_tool.auth.keys import ApiKey
from jq_tool.auth.scopes import KeyType
from jq_tool.auth.store import BaseKeyStore, KeyStore

DEV_KEYS: tuple[tuple[KeyType, str], ...] = (
    (KeyType.CLIENT, "dev-client"),
    (KeyType.WORKER, "dev-worker"),
    (KeyType.ADMIN, "dev-admin"),
)

# Long enough for a slow first start to create three keys; short enough that a claimant that
# crashed half-way only delays the next start's seeding briefly.
SEED_CLAIM_HOLD_MS = 60_000


def open_key_store(redis_url: str | None, data_dir: Path, *, redis_prefix: str = "") -> KeyStore:
    """RedisKeyStore for a non-empty `redis_url`, else EmbeddedKeyStore in `data_dir`."""
    if redis_url:
        from jq_tool.auth.redis_store import RedisKeyStore  # redis-py only when it is used

        return RedisKeyStore(redis_url, prefix=redis_prefix)
    return EmbeddedKeyStore(data_dir)


async def seed_dev_keys(store: KeyStore, log: logging.Logger) -> list[tuple[ApiKey, str]]:
    """On an empty store, create one client, worker and admin key and log their secrets."""
    if not await store.is_empty():
        return []
    if isinstance(store, BaseKeyStore) and not await store.claim_seeding(
        time.time_ns() // 1_000_000, SEED_CLAIM_HOLD_MS
    ):
        return []  # another server on the same store is seeding right now
    created: list[tuple[ApiKey, str]] = []
    for key_type, owner_id in DEV_KEYS:
        key, secret = await store.create(name=owner_id, owner_id=owner_id, type=key_type)
        log.info("Created %s key: %s (owner: %s)", key_type.value, secret, owner_id)
        created.append((key, secret))
    return created
