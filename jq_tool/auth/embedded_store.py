"""EmbeddedKeyStore: the key store of a single server without Redis, a sqlite file in the data dir.

`<data_dir>/keys.sqlite3` (mode 0600, and so its -wal and -shm files) in WAL journal mode with
synchronous=FULL, so a key that `create` returned survives a crash. One connection guarded by a
lock; every statement is tiny and runs in a worker thread so the event loop never waits on the
disk. sqlite errors (disk full, I/O error,
a locked or corrupt file) become `KeyStoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from jq_tool.auth.cache import DEFAULT_NEGATIVE_TTL_S, DEFAULT_TTL_S
from jq_tool.auth.keys import ApiKey, KeyRecord
from jq_tool.auth.scopes import KeyType, Scope
from jq_tool.auth.store import BaseKeyStore, KeyStoreUnavailable

KEYS_FILE_NAME = "keys.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id     TEXT PRIMARY KEY,
    key_hash   TEXT NOT NULL,
    key_prefix TEXT NOT NULL,
    name       TEXT NOT NULL,
    owner_id   TEXT NOT NULL,
    type       TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX IF NOT EXISTS api_keys_owner ON api_keys (owner_id);
CREATE TABLE IF NOT EXISTS claims (name TEXT PRIMARY KEY, at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_COLUMNS = "key_id, key_hash, key_prefix, name, owner_id, type, scopes, created_at, revoked_at"

T = TypeVar("T")


def _record_from_row(row: tuple[Any, ...]) -> KeyRecord:
    key_id, key_hash, key_prefix, name, owner_id, key_type, scopes, created_at, revoked_at = row
    key = ApiKey(
        key_id=key_id,
        key_prefix=key_prefix,
        name=name,
        owner_id=owner_id,
        type=KeyType(key_type),
        scopes=tuple(Scope(s) for s in json.loads(scopes)),
        created_at=int(created_at),
        revoked_at=None if revoked_at is None else int(revoked_at),
    )
    return KeyRecord(key=key, key_hash=key_hash)


class EmbeddedKeyStore(BaseKeyStore):
    def __init__(
        self,
        data_dir: Path,
        *,
        cache_ttl_s: float = DEFAULT_TTL_S,
        negative_ttl_s: float = DEFAULT_NEGATIVE_TTL_S,
    ) -> None:
        super().__init__(cache_ttl_s=cache_ttl_s, negative_ttl_s=negative_ttl_s)
        self.path = Path(data_dir) / KEYS_FILE_NAME
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Key hashes are private: sqlite creates files 0644, and its -wal and -shm files
            # take the mode of the database file, so the database file is made 0600 first.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            self._db: sqlite3.Connection | None = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=5.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise KeyStoreUnavailable(f"cannot open key store {self.path}: {exc}") from exc

    def __repr__(self) -> str:
        return f"EmbeddedKeyStore({str(self.path)!r})"

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                if self._db is None:
                    raise KeyStoreUnavailable("key store is closed")
                try:
                    return work(self._db)
                except (sqlite3.Error, ValueError) as exc:
                    # ValueError: a row that no longer parses (a hand-edited or corrupt file).
                    raise KeyStoreUnavailable(f"key store {self.path}: {exc}") from exc

        return await asyncio.to_thread(locked)

    async def _insert(self, record: KeyRecord) -> bool:
        key = record.key
        row = (
            key.key_id,
            record.key_hash,
            key.key_prefix,
            key.name,
            key.owner_id,
            key.type.value,
            json.dumps([s.value for s in key.scopes]),
            key.created_at,
            key.revoked_at,
        )

        def insert(db: sqlite3.Connection) -> bool:
            try:
                db.execute(f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)", row)
            except sqlite3.IntegrityError:
                return False
            return True

        return await self._run(insert)

    async def _fetch(self, key_id: str) -> KeyRecord | None:
        def fetch(db: sqlite3.Connection) -> KeyRecord | None:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,)
            ).fetchone()
            return None if row is None else _record_from_row(row)

        return await self._run(fetch)

    async def _fetch_all(self) -> list[KeyRecord]:
        def fetch_all(db: sqlite3.Connection) -> list[KeyRecord]:
            return [_record_from_row(r) for r in db.execute(f"SELECT {_COLUMNS} FROM api_keys")]

        return await self._run(fetch_all)

    async def _fetch_owner(self, owner_id: str) -> list[KeyRecord]:
        def fetch_owner(db: sqlite3.Connection) -> list[KeyRecord]:
            rows = db.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE owner_id = ?", (owner_id,))
            return [_record_from_row(r) for r in rows]

        return await self._run(fetch_owner)

    async def _mark_revoked(self, key_id: str, now_ms: int) -> KeyRecord | None:
        def mark(db: sqlite3.Connection) -> KeyRecord | None:
            # The WHERE keeps a second revoke from moving the first revoked_at.
            db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (now_ms, key_id),
            )
            row = db.execute(
                f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,)
            ).fetchone()
            return None if row is None else _record_from_row(row)

        return await self._run(mark)

    async def _any_keys(self) -> bool:
        def any_keys(db: sqlite3.Connection) -> bool:
            return db.execute("SELECT 1 FROM api_keys LIMIT 1").fetchone() is not None

        return await self._run(any_keys)

    async def _ping(self) -> None:
        def ping(db: sqlite3.Connection) -> None:
            db.execute("SELECT 1 FROM api_keys LIMIT 1").fetchone()

        await self._run(ping)

    async def claim_seeding(self, now_ms: int, hold_ms: int) -> bool:
        def claim(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "INSERT INTO claims (name, at) VALUES ('seed', ?) "
                "ON CONFLICT (name) DO UPDATE SET at = excluded.at WHERE claims.at <= ?",
                (now_ms, now_ms - hold_ms),
            )
            return cursor.rowcount == 1

        return await self._run(claim)

    async def _ticket_secret(self, candidate: str) -> str:
        def secret(db: sqlite3.Connection) -> str:
            db.execute(
                "INSERT INTO secrets (name, value) VALUES ('ticket', ?) ON CONFLICT DO NOTHING",
                (candidate,),
            )
            row = db.execute("SELECT value FROM secrets WHERE name = 'ticket'").fetchone()
            return str(row[0])

        return await self._run(secret)

    async def _close(self) -> None:
        def close() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None

        await asyncio.to_thread(close)
