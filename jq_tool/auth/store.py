"""The KeyStore protocol the server codes against, its error, and the logic both stores share.

A store keeps key records (ApiKey + hash of the secret) and answers the questions the server
asks: who is this secret (`authenticate`, cached in process), which keys exist, revoke this one.
`BaseKeyStore` holds everything that is not storage — validation, secret generation, hash
comparison, the auth cache — so the embedded (sqlite) and Redis stores only move records.
Storage failures surface as `KeyStoreUnavailable`, which the server answers with 503: a store
that cannot be reached must never look like an unknown key (401).
"""

from __future__ import annotations

import abc
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from jq_tool.auth.cache import DEFAULT_NEGATIVE_TTL_S, DEFAULT_TTL_S, AuthCache
from jq_tool.auth.keys import (
    MAX_NAME_CHARS,
    MAX_OWNER_ID_CHARS,
    ApiKey,
    KeyRecord,
    hash_secret,
    is_key_id,
    key_id_for_hash,
    new_key,
    secret_key_type,
    validate_label,
)
from jq_tool.auth.scopes import KeyType, Scope, parse_key_type, resolve_scopes

log = logging.getLogger(__name__)

RevokeListener = Callable[[str], None]  # called with the key id of a revoked key


class KeyStoreUnavailable(Exception):
    """The key store cannot be reached or written (Redis down, disk error): answer 503."""


@runtime_checkable
class KeyStore(Protocol):
    async def create(
        self,
        *,
        name: str,
        owner_id: str,
        type: KeyType,
        scopes: Sequence[Scope] | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its secret; the secret is never stored nor retrievable again."""
        ...

    async def authenticate(self, secret: str) -> ApiKey | None:
        """The key of a secret; None when unknown or revoked. Cached in process."""
        ...

    async def get(self, key_id_or_secret: str) -> ApiKey | None:
        """A key (revoked ones too) by key id or full secret; not cached."""
        ...

    async def list_all(self) -> list[ApiKey]: ...

    async def list_owner(self, owner_id: str) -> list[ApiKey]: ...

    async def revoke(self, key_id_or_secret: str) -> ApiKey | None:
        """Set revoked_at (idempotent: a second revoke keeps the first time); None if unknown."""
        ...

    def on_revoke(self, listener: RevokeListener) -> None:
        """Call `listener(key_id)` whenever a key is revoked, here or (a shared store) by another
        process that shares the store, as soon as this process hears of it."""
        ...

    async def check(self) -> str | None:
        """Why the store cannot answer now (unreachable, a disk error), or None when it can."""
        ...

    async def ticket_secret(self) -> bytes:
        """The secret that signs `/events` tickets (server/events.py): made once, at random, and
        the same for every server sharing the store, so a ticket works on any of them."""
        ...

    async def is_empty(self) -> bool: ...

    async def close(self) -> None: ...


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _listing_order(record: KeyRecord) -> tuple[int, str]:
    return (record.key.created_at, record.key.key_id)


class BaseKeyStore(abc.ABC):
    """The shared logic of the stores; subclasses implement the `_`-prefixed storage calls."""

    # A generated key id colliding with an existing one is a 2^-64 event; retrying keeps even
    # that from surfacing as an error.
    _CREATE_ATTEMPTS = 3
    # Well-formed secrets whose key id and hash were worked out, at most this many (then the
    # memo starts over): a client sends the same key on every request, and its SHA-256 and id
    # were ~5% of a durable submit's server work. Only what the request itself carries is
    # kept (the memo is in this process's memory, as every request's headers are); whether the
    # key is valid is still the cache's and the store's answer on every request.
    _DIGEST_MEMO = 1024

    def __init__(
        self, *, cache_ttl_s: float = DEFAULT_TTL_S, negative_ttl_s: float = DEFAULT_NEGATIVE_TTL_S
    ) -> None:
        self._cache = AuthCache(ttl_s=cache_ttl_s, negative_ttl_s=negative_ttl_s)
        self._digests: dict[str, tuple[str, str]] = {}  # secret -> (key id, key hash)
        self._revoke_listeners: list[RevokeListener] = []
        self._ticket_secret_value: bytes | None = None

    # -- storage, per implementation ----------------------------------------------------------

    @abc.abstractmethod
    async def _insert(self, record: KeyRecord) -> bool:
        """Store a new record; False if its key id is taken."""

    @abc.abstractmethod
    async def _fetch(self, key_id: str) -> KeyRecord | None: ...

    @abc.abstractmethod
    async def _fetch_all(self) -> list[KeyRecord]: ...

    @abc.abstractmethod
    async def _fetch_owner(self, owner_id: str) -> list[KeyRecord]: ...

    @abc.abstractmethod
    async def _mark_revoked(self, key_id: str, now_ms: int) -> KeyRecord | None:
        """Set revoked_at unless already set; the record afterwards, None if unknown."""

    @abc.abstractmethod
    async def _any_keys(self) -> bool: ...

    @abc.abstractmethod
    async def _ping(self) -> None:
        """One cheap round trip to the storage; raises KeyStoreUnavailable when it fails."""

    @abc.abstractmethod
    async def _close(self) -> None: ...

    async def claim_seeding(self, now_ms: int, hold_ms: int) -> bool:
        """Whether this process may seed the dev keys: True for one claimant per `hold_ms`, so
        servers starting together on one store do not each seed (and log) a set of keys. The
        hold expires so a claimant that died half-way does not block seeding for good."""
        return True

    async def _cache_usable(self) -> bool:
        """Whether cached answers may be served now (Redis: only while revokes are heard)."""
        return True

    async def _announce_revoke(self, key_id: str) -> None:
        """Tell other processes sharing the store to drop their cached answer."""
        return None  # one process per embedded store: nobody else to tell

    @abc.abstractmethod
    async def _ticket_secret(self, candidate: str) -> str:
        """The stored ticket secret; `candidate` is stored first if there is none yet (whoever
        stores first wins, so servers starting together agree)."""

    async def ticket_secret(self) -> bytes:
        if self._ticket_secret_value is None:
            stored = await self._ticket_secret(secrets.token_hex(32))
            self._ticket_secret_value = bytes.fromhex(stored)
        return self._ticket_secret_value

    # -- the KeyStore API ----------------------------------------------------------------------

    async def create(
        self,
        *,
        name: str,
        owner_id: str,
        type: KeyType,
        scopes: Sequence[Scope] | None = None,
    ) -> tuple[ApiKey, str]:
        key_type = parse_key_type(type)
        granted = resolve_scopes(key_type, scopes)
        name = validate_label("name", name, MAX_NAME_CHARS)
        owner_id = validate_label("owner_id", owner_id, MAX_OWNER_ID_CHARS)
        for _ in range(self._CREATE_ATTEMPTS):
            record, secret = new_key(
                name=name, owner_id=owner_id, key_type=key_type, scopes=granted, now_ms=_now_ms()
            )
            if await self._insert(record):
                # A negative answer cached for this id (by a guessing client) must not linger.
                self._cache.invalidate(record.key.key_id)
                return record.key, secret
        raise KeyStoreUnavailable("could not allocate a unique key id")

    async def authenticate(self, secret: str) -> ApiKey | None:
        if not isinstance(secret, str):
            return None
        digest = self._digests.get(secret)
        if digest is None:
            key_type = secret_key_type(secret)
            if key_type is None:
                return None
            key_hash = hash_secret(secret)
            digest = (key_id_for_hash(key_type, key_hash), key_hash)
            if len(self._digests) >= self._DIGEST_MEMO:
                self._digests.clear()
            self._digests[secret] = digest
        key_id, key_hash = digest
        use_cache = await self._cache_usable()
        if use_cache:
            hit, cached = self._cache.lookup(key_id, key_hash)
            if hit:
                return cached
        record = await self._fetch(key_id)
        key: ApiKey | None = None
        if (
            record is not None
            and hmac.compare_digest(record.key_hash, key_hash)
            and record.key.revoked_at is None
        ):
            key = record.key
        if use_cache:
            self._cache.remember(key_id, key_hash, key)
        return key

    async def get(self, key_id_or_secret: str) -> ApiKey | None:
        record = await self._resolve(key_id_or_secret)
        return None if record is None else record.key

    async def list_all(self) -> list[ApiKey]:
        return [r.key for r in sorted(await self._fetch_all(), key=_listing_order)]

    async def list_owner(self, owner_id: str) -> list[ApiKey]:
        if not isinstance(owner_id, str) or not owner_id:
            return []
        return [r.key for r in sorted(await self._fetch_owner(owner_id), key=_listing_order)]

    async def revoke(self, key_id_or_secret: str) -> ApiKey | None:
        record = await self._resolve(key_id_or_secret)
        if record is None:
            return None
        updated = await self._mark_revoked(record.key.key_id, _now_ms())
        self._cache.invalidate(record.key.key_id)
        if updated is None:
            return None
        self._revoked(record.key.key_id)
        await self._announce_revoke(record.key.key_id)
        return updated.key

    def on_revoke(self, listener: RevokeListener) -> None:
        self._revoke_listeners.append(listener)

    def _revoked(self, key_id: str) -> None:
        """A key was revoked (here, or announced by another process): tell the listeners."""
        for listener in self._revoke_listeners:
            try:
                listener(key_id)
            except Exception:
                log.exception("a revoke listener failed for key %s", key_id)

    async def check(self) -> str | None:
        try:
            await self._ping()
        except KeyStoreUnavailable as exc:
            return str(exc)
        return None

    async def is_empty(self) -> bool:
        return not await self._any_keys()

    async def close(self) -> None:
        self._cache.clear()
        await self._close()

    async def _resolve(self, key_id_or_secret: str) -> KeyRecord | None:
        if not isinstance(key_id_or_secret, str):
            return None
        if is_key_id(key_id_or_secret):
            return await self._fetch(key_id_or_secret)
        key_type = secret_key_type(key_id_or_secret)
        if key_type is None:
            return None
        key_hash = hash_secret(key_id_or_secret)
        record = await self._fetch(key_id_for_hash(key_type, key_hash))
        if record is None or not hmac.compare_digest(record.key_hash, key_hash):
            return None
        return record
