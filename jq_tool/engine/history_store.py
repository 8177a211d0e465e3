"""The history store: the final records of jobs the state machine forgot, on disk, so a job
finished long ago still answers GET /jobs/{id} until retention.

Memory follows live work (core/retention.py); history does not belong in the heap. Every job a
Purge forgets (by age, past the finished bounds, past the DEAD cap) reaches `add` through the
state machine's forget listener, also while recovery replays the log, and is written to
SQLite in the data dir (`history.sqlite3`, WAL journal) by a writer thread in batches: never
on the request path. A record is the whole Job as the state machine last held it (msgpack),
keyed by job id, with its finish time and owner beside it for pruning and the owner check.

Why a crash can neither lose nor invent a record: records come only from applied Purges, and
the engine calls `flush` before it captures a snapshot, so everything forgotten before a
snapshot's position is on disk before the snapshot exists; whatever was forgotten after it is
forgotten again when the log after the snapshot is replayed, and written again (INSERT OR
IGNORE by job id: a record is the same every time the log says it). In cluster mode every node
applies the same Purges and keeps its own copy.

Commits use `synchronous=NORMAL` in WAL mode: a committed batch survives the process being
killed (it is in the OS's page cache); an OS crash or power loss may lose the last batches
(whatever the snapshot gate did not flush), which the queue's own log does not. Records older
than retention are deleted once a minute.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec

from jq_tool.core.model import Job

__all__ = ["HISTORY_FILE", "HistoryStore", "HistoryWriteFailed"]

log = logging.getLogger("jq.history")

HISTORY_FILE = "history.sqlite3"
# The writer commits whatever is pending this often, or as soon as this many records wait.
FLUSH_EVERY_S = 0.2
FLUSH_AT = 5000
PRUNE_EVERY_S = 60.0
PRUNE_BATCH = 10_000  # rows deleted per statement, so a prune never holds the lock long

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Job)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    finished_at INTEGER NOT NULL,
    owner TEXT NOT NULL,
    job BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS jobs_finished_at ON jobs (finished_at);
"""


class HistoryWriteFailed(Exception):
    """A batch could not be written (a full disk, an I/O error); it is kept to try again.
    `no_room` says the file system (or SQLite's page cap) is full: SQLITE_FULL."""

    def __init__(self, message: str, *, no_room: bool = False) -> None:
        super().__init__(message)
        self.no_room = no_room


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


class HistoryStore:
    """Final records of forgotten jobs. `add` and `get` may be called from any thread."""

    def __init__(
        self,
        data_dir: Path,
        retention_ms: int,
        *,
        clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.path = data_dir / HISTORY_FILE
        self._retention_ms = retention_ms
        self._clock = clock
        self._lock = threading.Lock()  # pending, flushing, the counts
        self._write_lock = threading.Lock()  # one batch written at a time
        self._wake = threading.Condition(self._lock)
        self._pending: dict[str, Job] = {}
        self._flushing: dict[str, Job] = {}  # being written: still answered from memory
        self._writer_db: sqlite3.Connection | None = None
        self._reader_db: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._replaying = False
        self.records = 0  # rows on disk
        self.written = 0  # rows written since start (replays write none twice)
        self.pruned = 0

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Create or open the file and start the writer. Before recovery: replayed Purges
        hand their jobs to `add`."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer_db = _connect(self.path)
        self._writer_db.executescript(_SCHEMA)
        self._reader_db = _connect(self.path)
        (self.records,) = self._writer_db.execute("SELECT count(*) FROM jobs").fetchone()
        self._thread = threading.Thread(target=self._run, name="jq-history", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Write what is pending and stop the writer."""
        with self._lock:
            self._closing = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
        self.flush()
        for db in (self._writer_db, self._reader_db):
            if db is not None:
                db.close()
        self._writer_db = self._reader_db = None

    # ------------------------------------------------------------------ writing

    def add(self, jobs: list[Job], now: int) -> None:
        """Jobs a Purge forgot (the state machine's forget listener). Jobs already past
        retention at `now` are not kept."""
        cutoff = now - self._retention_ms
        with self._lock:
            pending = self._pending
            for job in jobs:
                if job.updated_at > cutoff:
                    pending[job.id] = job
            full = len(pending) >= FLUSH_AT
            if full and not self._replaying:
                self._wake.notify()
        if full and self._replaying:
            try:
                self.flush()
            except HistoryWriteFailed as exc:
                # Recovery goes on (the log keeps everything); the writer thread retries.
                log.error("history store write failed during recovery: %s", exc)
                self._replaying = False

    @contextlib.contextmanager
    def replaying(self) -> Iterator[None]:
        """While recovery replays the log, `add` writes each full batch in the caller's thread
        (the WAL thread, before anything is served). A replay forgets jobs far faster than the
        writer thread's pace, and every pending job holds its whole record: in issue 21's
        soak each restart peaked ~10 MiB above the process it replaced, and RSS kept that
        high-water mark until the next kill."""
        self._replaying = True
        try:
            yield
        finally:
            self._replaying = False

    def flush(self) -> None:
        """Write everything added so far, now, in the calling thread (the snapshot gate).
        Raises HistoryWriteFailed when it cannot: nothing is lost, the batch waits."""
        with self._write_lock:
            self._write_pending()

    def _write_pending(self) -> None:
        with self._lock:
            if not self._pending:
                return
            batch = self._flushing = self._pending
            self._pending = {}
        db = self._writer_db
        if db is None:
            return
        before = db.total_changes
        try:
            rows = [(job.id, job.updated_at, job.owner, _encoder.encode(job))
                    for job in batch.values()]  # fmt: skip
            db.execute("BEGIN")
            db.executemany(
                "INSERT OR IGNORE INTO jobs (id, finished_at, owner, job) VALUES (?, ?, ?, ?)",
                rows,
            )
            db.execute("COMMIT")
        except BaseException as exc:
            # SQLite rolls a transaction back by itself on some errors (SQLITE_FULL): a
            # ROLLBACK may then fail too, and must not keep the batch from going back.
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            with self._lock:  # not written: back in the queue for the next batch
                self._pending = {**batch, **self._pending}
                self._flushing = {}
            if isinstance(exc, sqlite3.Error):
                full = exc.sqlite_errorcode == sqlite3.SQLITE_FULL
                raise HistoryWriteFailed(str(exc), no_room=full) from exc
            raise
        added = db.total_changes - before
        with self._lock:
            self._flushing = {}
            self.records += added
            self.written += added

    def prune(self, now: int) -> int:
        """Delete records finished before `now` - retention; returns how many."""
        db = self._writer_db
        if db is None:
            return 0
        cutoff = now - self._retention_ms
        deleted = 0
        while True:
            with self._write_lock:
                cursor = db.execute(
                    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE finished_at <= ? "
                    "ORDER BY finished_at LIMIT ?)",
                    (cutoff, PRUNE_BATCH),
                )
                count = cursor.rowcount
            deleted += count
            if count < PRUNE_BATCH:
                break
        if deleted:
            with self._lock:
                self.records -= deleted
                self.pruned += deleted
            log.info("history: %d records past retention deleted", deleted)
        return deleted

    def _run(self) -> None:
        last_prune = time.monotonic()
        while True:
            with self._lock:
                if not self._closing and len(self._pending) < FLUSH_AT:
                    self._wake.wait(FLUSH_EVERY_S)
                closing = self._closing
            try:
                self.flush()
                if time.monotonic() - last_prune >= PRUNE_EVERY_S:
                    last_prune = time.monotonic()
                    self.prune(self._clock())
            except (sqlite3.Error, HistoryWriteFailed) as exc:
                # The log still has everything: a later batch, or the replay after a restart,
                # writes it. Say so rather than die.
                log.error("history store write failed, will retry: %s%s", exc,
                          self._who_holds_the_lock(exc))  # fmt: skip
                time.sleep(1)
            if closing:
                return

    def _who_holds_the_lock(self, exc: Exception) -> str:
        """For "database is locked" (the busy timeout ran out): which processes hold a lock on
        the store's files, from /proc/locks. Once seen, a write stalled for the whole busy
        timeout after a restart and nothing said who held the lock."""
        if "locked" not in str(exc):
            return ""
        holders = lock_holders([self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")])
        return f" (locks held by: {', '.join(holders) or 'nobody listed in /proc/locks'})"

    # ------------------------------------------------------------------ reading

    def get(self, job_id: str) -> Job | None:
        """The job's final record, or None (never forgotten, past retention, or unknown)."""
        with self._lock:
            job = self._pending.get(job_id) or self._flushing.get(job_id)
        if job is not None:
            return msgspec.structs.replace(job)
        db = self._reader_db
        if db is None:
            return None
        with self._reader_lock:
            row = db.execute("SELECT job FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _decoder.decode(row[0])

    def disk_bytes(self) -> int:
        """The store's size on disk: the database and its write-ahead log."""
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                size += os.stat(f"{self.path}{suffix}").st_size
        return size


def lock_holders(paths: list[Path]) -> list[str]:
    """`pid (command): KIND on file` for every POSIX/flock lock /proc/locks lists on `paths`."""
    inodes: dict[int, str] = {}
    for path in paths:
        with contextlib.suppress(OSError):
            inodes[os.stat(path).st_ino] = path.name
    found: list[str] = []
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        # "1: POSIX  ADVISORY  WRITE 1234 fd:01:5678 0 EOF" (blocked waiters start with "->")
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->":
            continue
        name = inodes.get(int(fields[5].rsplit(":", 1)[-1]))
        if name is None:
            continue
        pid = fields[4]
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            who = command.decode(errors="replace").strip()[:80]
        except OSError:
            who = "?"
        found.append(f"{pid} ({who}): {fields[1]} {fields[3]} on {name}")
    return found
