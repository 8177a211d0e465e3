"""The in-process authentication cache: secret → ApiKey (or "unknown") for a few seconds.

The server authenticates every request, and a store round trip (Redis ~130 µs) costs more than
the request itself, so answers are kept briefly. Entries are indexed by key id, which is derived
from the secret's hash, so a revoke — which only knows the key id — can drop the entry at once;
each entry keeps the full hash and is only served to a secret whose hash matches it in constant
time. The cache never holds a secret.
"""

from __future__ import annotations

import hmac
import time

import msgspec

from jq_tool.auth.keys import ApiKey

DEFAULT_TTL_S = 5.0
DEFAULT_NEGATIVE_TTL_S = 1.0
DEFAULT_MAX_ENTRIES = 10_000


class _Entry(msgspec.Struct):
    key_hash: str
    key: ApiKey | None  # None: the secret is unknown or revoked
    expires_at: float  # time.monotonic()


class AuthCache:
    def __init__(
        self,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        negative_ttl_s: float = DEFAULT_NEGATIVE_TTL_S,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key_id: str, key_hash: str) -> tuple[bool, ApiKey | None]:
        """(hit, key): hit is False when the store must be asked."""
        entry = self._entries.get(key_id)
        if entry is None:
            return False, None
        if entry.expires_at <= time.monotonic():
            del self._entries[key_id]
            return False, None
        if not hmac.compare_digest(entry.key_hash, key_hash):
            # Another secret with the same 64-bit id prefix: never serve it this entry.
            return False, None
        return True, entry.key

    def remember(self, key_id: str, key_hash: str, key: ApiKey | None) -> None:
        if len(self._entries) >= self.max_entries and key_id not in self._entries:
            self._make_room()
        ttl = self.ttl_s if key is not None else self.negative_ttl_s
        self._entries[key_id] = _Entry(key_hash, key, time.monotonic() + ttl)

    def invalidate(self, key_id: str) -> None:
        self._entries.pop(key_id, None)

    def clear(self) -> None:
        self._entries.clear()

    def _make_room(self) -> None:
        now = time.monotonic()
        for key_id in [k for k, e in self._entries.items() if e.expires_at <= now]:
            del self._entries[key_id]
        if len(self._entries) >= self.max_entries:
            # A flood of distinct unknown secrets: dropping everything is cheap and bounded.
            self._entries.clear()
