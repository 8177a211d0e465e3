"""The KeyStore contract, run against both implementations (embedded sqlite and Redis)."""

from __future__ import annotations

import json

import pytest

from jq_tool.auth import SCOPES_BY_TYPE, KeyFieldError, KeyStore, KeyType, Scope
from jq_tool.auth.keys import hash_secret


async def test_create_then_authenticate(store: KeyStore) -> None:
    assert await store.is_empty()
    key, secret = await store.create(name="Production Worker", owner_id="prod", type=KeyType.WORKER)
    assert not await store.is_empty()
    assert secret.startswith("worker_")
    assert key.key_id == "worker_" + hash_secret(secret)[:16]
    assert key.scopes == SCOPES_BY_TYPE[KeyType.WORKER]
    assert key.revoked_at is None
    # Twice: the second answer may come from the cache and must be the same.
    assert await store.authenticate(secret) == key
    assert await store.authenticate(secret) == key


async def test_create_accepts_type_as_string_and_a_scope_subset(store: KeyStore) -> None:
    key, secret = await store.create(
        name="reader",
        owner_id="o",
        type="client",  # type: ignore[arg-type]
        scopes=["jobs:read"],  # type: ignore[list-item]
    )
    assert key.type is KeyType.CLIENT
    assert key.scopes == (Scope.JOBS_READ,)
    authenticated = await store.authenticate(secret)
    assert authenticated is not None and authenticated.scopes == (Scope.JOBS_READ,)


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        (
            {"type": KeyType.CLIENT, "scopes": [Scope.KEYS_CREATE]},
            "scopes",
            "not allowed for a client key",
        ),
        ({"type": "superuser"}, "type", "invalid key type"),
        ({"type": KeyType.ADMIN, "name": "  "}, "name", "name must not be empty"),
        ({"type": KeyType.ADMIN, "owner_id": ""}, "owner_id", "owner_id must not be empty"),
        ({"type": KeyType.ADMIN, "owner_id": "x" * 300}, "owner_id", "at most 256"),
        ({"type": KeyType.ADMIN, "name": 7}, "name", "name must be a string"),
        ({"type": KeyType.ADMIN, "name": "a\nb"}, "name", "control characters"),
    ],
)
async def test_create_refuses_bad_input_with_a_clear_error(
    store: KeyStore, kwargs: dict[str, object], field: str, message: str
) -> None:
    args: dict[str, object] = {"name": "n", "owner_id": "o", **kwargs}
    with pytest.raises(KeyFieldError, match=message) as refused:
        await store.create(**args)  # type: ignore[arg-type]
    assert refused.value.field == field
    assert isinstance(refused.value, ValueError)
    assert await store.is_empty()


async def test_authenticate_unknown_or_malformed_secrets(store: KeyStore) -> None:
    key, secret = await store.create(name="n", owner_id="o", type=KeyType.CLIENT)
    tampered = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    for bogus in [tampered, "", "client_", "nonsense", key.key_id, secret + "x", "admin_" + secret]:
        assert await store.authenticate(bogus) is None
    assert await store.authenticate(None) is None  # type: ignore[arg-type]
    assert await store.authenticate(secret) == key


async def test_get_by_key_id_or_secret(store: KeyStore) -> None:
    key, secret = await store.create(name="n", owner_id="o", type=KeyType.ADMIN)
    assert await store.get(key.key_id) == key
    assert await store.get(secret) == key
    assert await store.get("admin_0000000000000000") is None
    assert await store.get(secret[:-2]) is None
    assert await store.get("") is None


async def test_list_all_and_list_owner(store: KeyStore) -> None:
    a, _ = await store.create(name="a", owner_id="team-a", type=KeyType.CLIENT)
    b, _ = await store.create(name="b", owner_id="team-b", type=KeyType.WORKER)
    c, _ = await store.create(name="c", owner_id="team-a", type=KeyType.ADMIN)
    await store.revoke(c.key_id)
    listed = await store.list_all()
    assert {k.key_id for k in listed} == {a.key_id, b.key_id, c.key_id}
    assert [k.created_at for k in listed] == sorted(k.created_at for k in listed)
    team_a = await store.list_owner("team-a")
    assert {k.key_id for k in team_a} == {a.key_id, c.key_id}
    assert next(k for k in team_a if k.key_id == c.key_id).revoked_at is not None
    assert await store.list_owner("nobody") == []
    assert await store.list_owner("") == []


async def test_list_responses_never_contain_a_secret(store: KeyStore) -> None:
    secrets = [
        (await store.create(name=t.value, owner_id="o", type=t))[1]
        for t in (KeyType.CLIENT, KeyType.WORKER, KeyType.ADMIN)
    ]
    body = json.dumps([k.public() for k in await store.list_all()], ensure_ascii=False)
    body += json.dumps([k.public() for k in await store.list_owner("o")], ensure_ascii=False)
    for secret in secrets:
        assert secret not in body
        assert secret[:12] + "…" in body  # the safe prefix is shown
    for public in json.loads(body.split("][")[0] + "]"):
        assert set(public) == {
            "key_id",
            "key_prefix",
            "name",
            "owner_id",
            "type",
            "scopes",
            "created_at",
            "revoked_at",
        }


async def test_revoke_is_idempotent_and_stops_authentication(store: KeyStore) -> None:
    key, secret = await store.create(name="n", owner_id="o", type=KeyType.CLIENT)
    other, other_secret = await store.create(name="m", owner_id="o", type=KeyType.CLIENT)
    assert await store.authenticate(secret) == key  # now cached
    revoked = await store.revoke(secret)  # by full secret
    assert revoked is not None and revoked.key_id == key.key_id
    assert revoked.revoked_at is not None
    assert await store.authenticate(secret) is None
    again = await store.revoke(key.key_id)  # by key id, a second time
    assert again is not None and again.revoked_at == revoked.revoked_at
    stored = await store.get(key.key_id)
    assert stored is not None and stored.revoked_at == revoked.revoked_at
    assert await store.revoke("client_0000000000000000") is None
    assert await store.revoke("garbage") is None
    assert await store.authenticate(other_secret) == other
