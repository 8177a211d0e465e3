"""API keys, scopes and the key stores: everything the server needs to answer "who is this
request, and may it do that?". The names below are the package's public API."""

from typing import TYPE_CHECKING, Any

from jq_tool.auth.cache import AuthCache
from jq_tool.auth.embedded_store import EmbeddedKeyStore
from jq_tool.auth.keys import (
    LABEL_PATTERN,
    ApiKey,
    format_time,
    hash_secret,
    is_key_id,
    looks_like_secret,
)
from jq_tool.auth.scopes import (
    SCOPES_BY_TYPE,
    KeyFieldError,
    KeyType,
    Scope,
    parse_key_type,
    resolve_scopes,
)
from jq_tool.auth.seed import DEV_KEYS, open_key_store, seed_dev_keys
from jq_tool.auth.store import KeyStore, KeyStoreUnavailable

if TYPE_CHECKING:
    from jq_tool.auth.redis_store import RedisKeyStore


def __getattr__(name: str) -> Any:
    # RedisKeyStore brings redis-py, ~70 ms of imports: loaded only by a server that uses Redis
    # (or whoever names it), so a single node's start does not pay for it.
    if name == "RedisKeyStore":
        from jq_tool.auth.redis_store import RedisKeyStore

        return RedisKeyStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEV_KEYS",
    "LABEL_PATTERN",
    "SCOPES_BY_TYPE",
    "ApiKey",
    "AuthCache",
    "EmbeddedKeyStore",
    "KeyFieldError",
    "KeyStore",
    "KeyStoreUnavailable",
    "KeyType",
    "RedisKeyStore",
    "Scope",
    "format_time",
    "hash_secret",
    "is_key_id",
    "looks_like_secret",
    "open_key_store",
    "parse_key_type",
    "resolve_scopes",
    "seed_dev_keys",
]
