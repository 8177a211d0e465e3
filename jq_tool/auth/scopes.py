"""What a key may do: the scopes, the key types, and which scopes each type carries.

This is the one table the server's routes and the key stores agree on. A key created with an
explicit scope list gets a subset of its type's scopes, never more; `resolve_scopes` is where
that rule is enforced, with an error message a person can act on.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence


class KeyFieldError(ValueError):
    """A field of a key to create is invalid; `field` names it so the HTTP layer can say which."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Scope(enum.StrEnum):
    JOBS_SUBMIT = "jobs:submit"
    JOBS_READ = "jobs:read"
    JOBS_LEASE = "jobs:lease"
    JOBS_ACK = "jobs:ack"
    KEYS_READ = "keys:read"
    KEYS_CREATE = "keys:create"
    KEYS_REVOKE = "keys:revoke"


class KeyType(enum.StrEnum):
    CLIENT = "client"
    WORKER = "worker"
    ADMIN = "admin"


SCOPES_BY_TYPE: dict[KeyType, tuple[Scope, ...]] = {
    KeyType.CLIENT: (Scope.JOBS_SUBMIT, Scope.JOBS_READ, Scope.KEYS_READ),
    KeyType.WORKER: (Scope.JOBS_LEASE, Scope.JOBS_ACK, Scope.JOBS_READ, Scope.KEYS_READ),
    KeyType.ADMIN: (
        Scope.JOBS_SUBMIT,
        Scope.JOBS_READ,
        Scope.JOBS_LEASE,
        Scope.JOBS_ACK,
        Scope.KEYS_READ,
        Scope.KEYS_CREATE,
        Scope.KEYS_REVOKE,
    ),
}


def parse_key_type(value: KeyType | str) -> KeyType:
    """The KeyType named by `value`, or a ValueError listing the valid types."""
    try:
        return KeyType(value)
    except ValueError:
        valid = ", ".join(t.value for t in KeyType)
        raise KeyFieldError("type", f"invalid key type {value!r}: must be one of {valid}") from None


def parse_scope(value: Scope | str) -> Scope:
    """The Scope named by `value`, or a ValueError listing the valid scopes."""
    try:
        return Scope(value)
    except ValueError:
        valid = ", ".join(s.value for s in Scope)
        raise KeyFieldError("scopes", f"invalid scope {value!r}: must be one of {valid}") from None


def resolve_scopes(
    key_type: KeyType, requested: Sequence[Scope | str] | None = None
) -> tuple[Scope, ...]:
    """The scopes a new key of `key_type` gets: all of the type's, or the requested subset.

    The result is deduplicated and in the type's canonical order, so two keys with the same
    rights always show the same list.
    """
    allowed = SCOPES_BY_TYPE[key_type]
    if requested is None:
        return allowed
    if isinstance(requested, str):
        # A bare string is a sequence of characters: refuse it rather than read "j", "o", ...
        raise KeyFieldError("scopes", "scopes must be a list of scope names, not a single string")
    if not isinstance(requested, list | tuple | set | frozenset):
        raise KeyFieldError("scopes", "scopes must be a list of scope names")
    wanted = {parse_scope(s) for s in requested}
    if not wanted:
        raise KeyFieldError(
            "scopes", "scopes must not be empty: omit it to get all of the type's scopes"
        )
    extra = sorted(s.value for s in wanted if s not in allowed)
    if extra:
        raise KeyFieldError(
            "scopes",
            f"scopes {', '.join(extra)} are not allowed for a {key_type.value} key "
            f"(allowed: {', '.join(s.value for s in allowed)})",
        )
    return tuple(s for s in allowed if s in wanted)
