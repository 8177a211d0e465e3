"""API keys: the ApiKey record, how a secret is generated, hashed and named.

A secret is `<type>_<43 urlsafe base64 chars>` and is shown once; only its SHA-256 is stored.
Everything else about a key is derived from the secret so a lookup needs no scan: the key id is
`<type>_<first 16 hex chars of the hash>`, and the safe-to-show prefix is the secret's first
12 characters. ApiKey never holds the secret, so it can be cached, listed and logged.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any

import msgspec

from jq_tool.auth.scopes import KeyFieldError, KeyType, Scope
from jq_tool.units import format_time

KEY_PREFIX_CHARS = 12
KEY_ID_HEX_CHARS = 16
MAX_NAME_CHARS = 256
MAX_OWNER_ID_CHARS = 256

# A key's name and owner id: no control character (U+0000-U+001F, U+007F-U+009F) and at least
# one character that is not white space. Written with escapes both Python's `re` and the
# ECMAScript regexes of JSON Schema read alike, so the API can publish it (its white space is
# ECMAScript's `\s`, spelled out: Python's differs).
_CONTROL = r"\u0000-\u001f\u007f-\u009f"
_WHITE = r"\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
LABEL_PATTERN = f"^[^{_CONTROL}]*[^{_WHITE}{_CONTROL}][^{_CONTROL}]*$"
_LABEL_RE = re.compile(LABEL_PATTERN.removesuffix("$") + r"\Z")
_CONTROL_RE = re.compile(f"[{_CONTROL}]")
_KEY_ID_RE = re.compile(r"^(client|worker|admin)_[0-9a-f]{16}$")
# token_urlsafe(32) gives exactly 43 chars; a longer bound keeps obviously bogus input cheap.
_SECRET_RE = re.compile(r"^(client|worker|admin)_[A-Za-z0-9_-]{16,128}$")
_KEY_TYPES = {key_type.value: key_type for key_type in KeyType}  # a dict: Enum() is slow


class ApiKey(msgspec.Struct, frozen=True):
    """One key as the stores return it. Never holds the secret; frozen so a cached instance
    can be shared between requests safely."""

    key_id: str
    key_prefix: str
    name: str
    owner_id: str
    type: KeyType
    scopes: tuple[Scope, ...]
    created_at: int  # epoch ms
    revoked_at: int | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def has(self, scope: Scope) -> bool:
        return scope in self.scopes

    def public(self) -> dict[str, Any]:
        """The list-response shape of docs/api.md: RFC 3339 times and no secret."""
        return {
            "key_id": self.key_id,
            "key_prefix": self.key_prefix,
            "name": self.name,
            "owner_id": self.owner_id,
            "type": self.type.value,
            "scopes": [s.value for s in self.scopes],
            "created_at": format_time(self.created_at),
            "revoked_at": None if self.revoked_at is None else format_time(self.revoked_at),
        }


class KeyRecord(msgspec.Struct, frozen=True):
    """What a store persists: the key and the hash of its secret."""

    key: ApiKey
    key_hash: str


def generate_secret(key_type: KeyType) -> str:
    return f"{key_type.value}_{secrets.token_urlsafe(32)}"


def hash_secret(secret: str) -> str:
    """Hex SHA-256 of the secret: what the stores keep instead of it."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def key_id_for_hash(key_type: KeyType, key_hash: str) -> str:
    return f"{key_type.value}_{key_hash[:KEY_ID_HEX_CHARS]}"


def key_prefix_for(secret: str) -> str:
    return secret[:KEY_PREFIX_CHARS] + "…"


def is_key_id(value: str) -> bool:
    return _KEY_ID_RE.match(value) is not None


def looks_like_secret(value: str) -> bool:
    """Whether `value` has the shape of a secret (and is not a key id): what must never be
    accepted in a URL."""
    return not is_key_id(value) and secret_key_type(value) is not None


def secret_key_type(secret: str) -> KeyType | None:
    """The type a secret claims by its prefix, or None when it cannot be one of our secrets
    (so a store can answer "unknown" without any lookup)."""
    match = _SECRET_RE.match(secret)
    if match is None:
        return None
    return _KEY_TYPES[match.group(1)]


def new_key(
    *,
    name: str,
    owner_id: str,
    key_type: KeyType,
    scopes: tuple[Scope, ...],
    now_ms: int,
) -> tuple[KeyRecord, str]:
    """A fresh key record and its secret (the only time the secret exists in our hands)."""
    secret = generate_secret(key_type)
    key_hash = hash_secret(secret)
    key = ApiKey(
        key_id=key_id_for_hash(key_type, key_hash),
        key_prefix=key_prefix_for(secret),
        name=name,
        owner_id=owner_id,
        type=key_type,
        scopes=scopes,
        created_at=now_ms,
    )
    return KeyRecord(key=key, key_hash=key_hash), secret


def validate_label(field: str, value: object, max_chars: int) -> str:
    """A key's name or owner_id: LABEL_PATTERN, of bounded length."""
    if not isinstance(value, str):
        raise KeyFieldError(field, f"{field} must be a string")
    if len(value) > max_chars:
        raise KeyFieldError(field, f"{field} must be at most {max_chars} characters")
    if _CONTROL_RE.search(value) is not None:
        raise KeyFieldError(field, f"{field} must not contain control characters")
    if _LABEL_RE.match(value) is None:
        raise KeyFieldError(field, f"{field} must not be empty")
    return value
