from __future__ import annotations

import pytest

from jq_tool.auth import SCOPES_BY_TYPE, KeyType, Scope, parse_key_type, resolve_scopes


def test_scopes_per_type_match_the_api_contract() -> None:
    as_values = {t.value: [s.value for s in scopes] for t, scopes in SCOPES_BY_TYPE.items()}
    assert as_values["client"] == ["jobs:submit", "jobs:read", "keys:read"]
    assert as_values["worker"] == ["jobs:lease", "jobs:ack", "jobs:read", "keys:read"]
    assert set(as_values["admin"]) == {s.value for s in Scope}


def test_resolve_scopes_defaults_to_all_of_the_type() -> None:
    assert resolve_scopes(KeyType.WORKER) == SCOPES_BY_TYPE[KeyType.WORKER]


def test_resolve_scopes_subset_is_deduplicated_in_canonical_order() -> None:
    granted = resolve_scopes(KeyType.ADMIN, ["keys:read", Scope.JOBS_SUBMIT, "keys:read"])
    assert granted == (Scope.JOBS_SUBMIT, Scope.KEYS_READ)


def test_resolve_scopes_refuses_scopes_outside_the_type() -> None:
    with pytest.raises(ValueError, match=r"jobs:lease.*not allowed for a client key"):
        resolve_scopes(KeyType.CLIENT, [Scope.JOBS_SUBMIT, Scope.JOBS_LEASE])


@pytest.mark.parametrize(
    ("requested", "message"),
    [
        (["jobs:everything"], "invalid scope 'jobs:everything'"),
        ([], "must not be empty"),
        ("jobs:read", "not a single string"),
        (7, "must be a list"),
        ({"jobs:read": True}, "must be a list"),
        ([["jobs:read"]], "invalid scope"),
        ([None], "invalid scope"),
    ],
)
def test_resolve_scopes_refuses_bad_input(requested: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_scopes(KeyType.CLIENT, requested)  # type: ignore[arg-type]


def test_parse_key_type() -> None:
    assert parse_key_type("worker") is KeyType.WORKER
    with pytest.raises(ValueError, match="must be one of client, worker, admin"):
        parse_key_type("root")
