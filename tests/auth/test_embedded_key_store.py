"""EmbeddedKeyStore: durable in the data dir, hashed at rest, clear errors on a bad path."""

from __future__ import annotations

from pathlib import Path

import pytest

from jq_tool.auth import EmbeddedKeyStore, KeyStoreUnavailable, KeyType, open_key_store
from jq_tool.auth.keys import hash_secret


async def test_keys_survive_reopen(tmp_path: Path) -> None:
    first = EmbeddedKeyStore(tmp_path)
    kept, kept_secret = await first.create(name="kept", owner_id="o", type=KeyType.WORKER)
    gone, gone_secret = await first.create(name="gone", owner_id="o", type=KeyType.CLIENT)
    revoked = await first.revoke(gone.key_id)
    await first.close()

    second = EmbeddedKeyStore(tmp_path)
    try:
        assert not await second.is_empty()
        assert await second.authenticate(kept_secret) == kept
        assert await second.authenticate(gone_secret) is None
        assert await second.get(gone.key_id) == revoked
        assert {k.key_id for k in await second.list_all()} == {kept.key_id, gone.key_id}
    finally:
        await second.close()


async def test_the_secret_is_never_stored(tmp_path: Path) -> None:
    store = EmbeddedKeyStore(tmp_path)
    created = [await store.create(name="n", owner_id="o", type=t) for t in KeyType]
    await store.revoke(created[0][0].key_id)
    # Read the files while the store is open (WAL contents) and after close (checkpointed).
    files_open = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    await store.close()
    files_closed = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert "keys.sqlite3" in files_closed
    for _, secret in created:
        body = secret.split("_", 1)[1]  # the random part, without the type prefix
        for content in [*files_open.values(), *files_closed.values()]:
            assert body.encode() not in content
        # ... while the hash is there, so the bytes we scan are the real records.
        assert hash_secret(secret).encode() in files_closed["keys.sqlite3"]


def test_unusable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(KeyStoreUnavailable, match="cannot open key store"):
        EmbeddedKeyStore(not_a_dir)


async def test_open_key_store_without_redis_is_embedded(tmp_path: Path) -> None:
    store = open_key_store(None, tmp_path / "d")
    try:
        assert isinstance(store, EmbeddedKeyStore)
        assert store.path == tmp_path / "d" / "keys.sqlite3"
        await store.create(name="n", owner_id="o", type=KeyType.CLIENT)
        assert store.path.exists()
    finally:
        await store.close()


async def test_closed_store_answers_unavailable(tmp_path: Path) -> None:
    store = EmbeddedKeyStore(tmp_path)
    await store.close()
    with pytest.raises(KeyStoreUnavailable, match="closed"):
        await store.list_all()
