"""RedisKeyStore: keys shared by every server of a deployment, in the original service's layout.

Layout (each name behind an optional prefix, for tests and shared Redis instances):
hash `api_key:<key_id>` with fields key_id, key_hash, key_prefix, name, owner_id, type,
scopes (JSON list), created_at and revoked_at (Unix seconds, as the Go service wrote them;
revoked_at is "" while active) plus created_at_ms / revoked_at_ms for millisecond precision;
sets `keys:active`, `keys:revoked`, `owner:<owner_id>:keys` and `keys:type:<type>` of key ids.
Writes go through MULTI/EXEC. Each process caches authentications; a revoke is published on
channel `keys:revoked` so every process drops its cached answer. Pub/sub is fire-and-forget:
the cache is only served while the subscription is live, and emptied whenever it (re)connects.
Every Redis failure surfaces as `KeyStoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from jq_tool.auth.cache import DEFAULT_NEGATIVE_TTL_S, DEFAULT_TTL_S
from jq_tool.auth.keys import ApiKey, KeyRecord
from jq_tool.auth.scopes import KeyType, Scope
from jq_tool.auth.store import BaseKeyStore, KeyStoreUnavailable

log = logging.getLogger(__name__)

# How long the first cached lookup waits for the revoke subscription before going uncached.
_FIRST_SUBSCRIBE_WAIT_S = 1.0
_RESUBSCRIBE_MAX_BACKOFF_S = 2.0


@contextlib.contextmanager
def _redis_errors(action: str) -> Iterator[None]:
    try:
        yield
    except (RedisError, OSError) as exc:
        raise KeyStoreUnavailable(f"key store (Redis) unavailable while {action}: {exc}") from exc


def _record_to_hash(record: KeyRecord) -> dict[str, str | int]:
    key = record.key
    return {
        "key_id": key.key_id,
        "key_hash": record.key_hash,
        "key_prefix": key.key_prefix,
        "name": key.name,
        "owner_id": key.owner_id,
        "type": key.type.value,
        "scopes": json.dumps([s.value for s in key.scopes]),
        "created_at": key.created_at // 1000,
        "created_at_ms": key.created_at,
        "revoked_at": "" if key.revoked_at is None else key.revoked_at // 1000,
        "revoked_at_ms": "" if key.revoked_at is None else key.revoked_at,
    }


def _epoch_ms(fields: dict[str, str], name: str) -> int | None:
    precise = fields.get(f"{name}_ms", "")
    if precise:
        return int(precise)
    seconds = fields.get(name, "")
    return int(seconds) * 1000 if seconds else None


def _record_from_hash(fields: dict[str, str]) -> KeyRecord | None:
    """The record, or None for a hash we cannot use (e.g. a Go-era record without key_hash)."""
    if not fields:
        return None
    try:
        created_at = _epoch_ms(fields, "created_at")
        key = ApiKey(
            key_id=fields["key_id"],
            key_prefix=fields["key_prefix"],
            name=fields["name"],
            owner_id=fields["owner_id"],
            type=KeyType(fields["type"]),
            scopes=tuple(Scope(s) for s in json.loads(fields["scopes"])),
            created_at=0 if created_at is None else created_at,
            revoked_at=_epoch_ms(fields, "revoked_at"),
        )
        return KeyRecord(key=key, key_hash=fields["key_hash"])
    except (KeyError, ValueError, TypeError):
        # Never name the Redis key: in the Go layout it embeds the secret.
        log.warning("skipping a malformed API key record in Redis")
        return None


class RedisKeyStore(BaseKeyStore):
    def __init__(
        self,
        redis_url: str,
        *,
        prefix: str = "",
        cache_ttl_s: float = DEFAULT_TTL_S,
        negative_ttl_s: float = DEFAULT_NEGATIVE_TTL_S,
        socket_timeout_s: float = 2.0,
    ) -> None:
        super().__init__(cache_ttl_s=cache_ttl_s, negative_ttl_s=negative_ttl_s)
        try:
            self._redis: aioredis.Redis = aioredis.Redis.from_url(
                redis_url,
                decode_responses=True,
                socket_timeout=socket_timeout_s,
                socket_connect_timeout=socket_timeout_s,
                health_check_interval=10,
            )
        except ValueError as exc:
            raise ValueError(f"invalid REDIS_URL: {exc}") from None
        self.prefix = prefix
        self.revoke_channel = f"{prefix}keys:revoked"
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = False
        self._subscribed_once = asyncio.Event()
        self._closing = False

    def __repr__(self) -> str:
        return f"RedisKeyStore(prefix={self.prefix!r})"

    # -- names -------------------------------------------------------------------------------

    def _hash_name(self, key_id: str) -> str:
        return f"{self.prefix}api_key:{key_id}"

    def _owner_set(self, owner_id: str) -> str:
        return f"{self.prefix}owner:{owner_id}:keys"

    def _type_set(self, key_type: KeyType) -> str:
        return f"{self.prefix}keys:type:{key_type.value}"

    @property
    def _active_set(self) -> str:
        return f"{self.prefix}keys:active"

    @property
    def _revoked_set(self) -> str:
        return f"{self.prefix}keys:revoked"

    # -- storage -----------------------------------------------------------------------------

    async def _insert(self, record: KeyRecord) -> bool:
        key = record.key
        name = self._hash_name(key.key_id)
        with _redis_errors("creating a key"):
            if await self._redis.exists(name):
                return False
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(name, mapping=_record_to_hash(record))  # type: ignore[arg-type]
                pipe.sadd(self._owner_set(key.owner_id), key.key_id)
                pipe.sadd(self._type_set(key.type), key.key_id)
                pipe.sadd(self._active_set, key.key_id)
                await pipe.execute()
        return True

    async def _fetch(self, key_id: str) -> KeyRecord | None:
        with _redis_errors("looking up a key"):
            fields = await self._redis.hgetall(self._hash_name(key_id))
        # decode_responses=True: Redis hands back str, whatever the stubs allow for.
        return _record_from_hash(cast(dict[str, str], fields))

    async def _fetch_many(self, key_ids: set[str]) -> list[KeyRecord]:
        if not key_ids:
            return []
        with _redis_errors("listing keys"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for key_id in key_ids:
                    pipe.hgetall(self._hash_name(key_id))
                rows: list[dict[str, str]] = await pipe.execute()
        return [r for r in map(_record_from_hash, rows) if r is not None]

    async def _fetch_all(self) -> list[KeyRecord]:
        with _redis_errors("listing keys"):
            key_ids = await self._redis.sunion([self._active_set, self._revoked_set])
        return await self._fetch_many(cast(set[str], key_ids))

    async def _fetch_owner(self, owner_id: str) -> list[KeyRecord]:
        with _redis_errors("listing keys"):
            key_ids = await self._redis.smembers(self._owner_set(owner_id))
        return await self._fetch_many(cast(set[str], key_ids))

    async def _mark_revoked(self, key_id: str, now_ms: int) -> KeyRecord | None:
        name = self._hash_name(key_id)

        async def revoke_once(pipe: Pipeline) -> None:
            # WATCH makes a concurrent revoke retry, so the first revoked_at is the one kept.
            revoked_at = await pipe.hget(name, "revoked_at")
            if revoked_at is None or revoked_at != "":
                return  # unknown, or already revoked
            pipe.multi()
            pipe.hset(
                name,
                mapping={"revoked_at": now_ms // 1000, "revoked_at_ms": now_ms},
            )
            pipe.srem(self._active_set, key_id)
            pipe.sadd(self._revoked_set, key_id)

        with _redis_errors("revoking a key"):
            await self._redis.transaction(revoke_once, name)
        return await self._fetch(key_id)

    async def _any_keys(self) -> bool:
        with _redis_errors("counting keys"):
            return bool(await self._redis.exists(self._active_set, self._revoked_set))

    async def _ping(self) -> None:
        with _redis_errors("checking the key store"):
            await self._redis.ping()

    async def claim_seeding(self, now_ms: int, hold_ms: int) -> bool:
        with _redis_errors("claiming first-start seeding"):
            claimed = await self._redis.set(
                f"{self.prefix}keys:seeding", now_ms, nx=True, px=max(hold_ms, 1)
            )
        return bool(claimed)

    async def _ticket_secret(self, candidate: str) -> str:
        name = f"{self.prefix}keys:ticket_secret"
        with _redis_errors("reading the ticket secret"):
            # SET NX then GET (not SET NX GET: Redis 7 only). Without a TTL: it lives as the
            # keys do; deleting it only makes the tickets issued so far invalid.
            await self._redis.set(name, candidate, nx=True)
            stored = await self._redis.get(name)
        return candidate if stored is None else str(stored)

    async def _announce_revoke(self, key_id: str) -> None:
        with _redis_errors("announcing a revoke"):
            await self._redis.publish(self.revoke_channel, key_id)

    async def _close(self) -> None:
        self._closing = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        with contextlib.suppress(RedisError, OSError):
            await self._redis.aclose()

    # -- the revoke subscription that keeps the auth cache honest ------------------------------

    @property
    def cache_live(self) -> bool:
        """Whether the revoke subscription is up, i.e. cached answers are being served."""
        return self._subscribed

    async def _cache_usable(self) -> bool:
        if self._closing:
            return False
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="jq-auth-revoke-listener")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._subscribed_once.wait(), _FIRST_SUBSCRIBE_WAIT_S)
        return self._subscribed

    async def _listen(self) -> None:
        backoff = 0.1
        while not self._closing:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self.revoke_channel)
                while True:
                    message: dict[str, Any] | None = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        # Revokes published while we were away are lost: forget everything.
                        self._cache.clear()
                        self._subscribed = True
                        self._subscribed_once.set()
                        backoff = 0.1
                    elif message["type"] == "message":
                        self._cache.invalidate(str(message["data"]))
                        self._revoked(str(message["data"]))
            except (RedisError, OSError) as exc:
                if self._subscribed:
                    log.warning(
                        "lost the key revoke subscription (%s); authenticating uncached until "
                        "Redis is back",
                        exc,
                    )
            finally:
                self._subscribed = False
                self._cache.clear()
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _RESUBSCRIBE_MAX_BACKOFF_S)
