"""The history store (engine/history_store.py) on a real SQLite file: records answered before
and after they are written, written once however often the log says them, pruned at
retention, and jobs already past retention never written."""

from __future__ import annotations

from pathlib import Path

import pytest

from jq_tool.core.model import Job, JobState
from jq_tool.engine.history_store import HistoryStore, HistoryWriteFailed

DAY = 24 * 3600 * 1000
T0 = 1_700_000_000_000


def job(i: int, finished_at: int) -> Job:
    return Job(f"j{i}", "default", "p", 0, 0, 1, JobState.ACKED, T0, T0, i,
               result=f"r{i}", updated_at=finished_at, owner="o")  # fmt: skip


def test_records_answer_before_and_after_the_write_and_across_reopen(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path, 7 * DAY, clock=lambda: T0)
    store.open()
    store.add([job(1, T0), job(2, T0)], T0)
    assert store.get("j1") == job(1, T0)  # pending: answered from memory
    store.flush()
    assert store.get("j2") == job(2, T0)
    assert store.records == 2
    store.add([job(1, T0)], T0)  # the same Purge replayed after a crash
    store.flush()
    assert store.records == 2 and store.written == 2
    store.close()
    reopened = HistoryStore(tmp_path, 7 * DAY)
    reopened.open()
    assert reopened.records == 2
    assert reopened.get("j1") == job(1, T0)
    assert reopened.get("nope") is None
    assert reopened.disk_bytes() > 0
    reopened.close()


def test_pruned_at_retention_and_nothing_kept_that_is_past_it(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path, 7 * DAY)
    store.open()
    # Forgotten on day 9: those finished on days 0-2 are already past retention.
    store.add([job(i, T0 + i * DAY) for i in range(10)], T0 + 9 * DAY)
    store.flush()
    assert store.get("j2") is None and store.get("j3") is not None
    assert store.records == 7
    assert store.prune(T0 + 12 * DAY) == 3  # finished at or before day 5
    assert store.records == 4 and store.pruned == 3
    assert store.get("j5") is None and store.get("j6") is not None
    store.close()


def test_a_batch_that_cannot_be_written_is_kept_and_written_later(tmp_path: Path) -> None:
    """A full disk (here: SQLite's page cap, a real SQLITE_FULL) refuses a batch: it stays
    answerable and is written once there is room, not dropped."""
    store = HistoryStore(tmp_path, 7 * DAY, clock=lambda: T0)
    store.open()
    assert store._writer_db is not None
    pages = store._writer_db.execute("PRAGMA page_count").fetchone()[0]
    store._writer_db.execute(f"PRAGMA max_page_count={pages}")
    big = [Job(f"big{i}", "default", "x" * 2000, 0, 0, 1, JobState.ACKED, T0, T0, i,
               updated_at=T0, owner="o") for i in range(200)]  # fmt: skip
    store.add(big, T0)
    with pytest.raises(HistoryWriteFailed):
        store.flush()
    assert store.get("big7") is not None  # still answered, from the batch kept in memory
    assert store.records == 0
    store._writer_db.execute("PRAGMA max_page_count=1000000")
    store.flush()
    assert store.records == 200
    store.close()
    reopened = HistoryStore(tmp_path, 7 * DAY)
    reopened.open()
    assert reopened.get("big199") is not None
    reopened.close()


def test_a_lock_held_by_another_process_is_named(tmp_path: Path) -> None:
    """When the busy timeout runs out, the error names who holds the lock (/proc/locks)."""
    import subprocess
    import sys

    from jq_tool.engine.history_store import lock_holders

    store = HistoryStore(tmp_path, 7 * DAY, clock=lambda: T0)
    store.open()
    store.close()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys, time\n"
         f"db = sqlite3.connect({str(store.path)!r}, isolation_level=None)\n"
         "db.execute('BEGIN EXCLUSIVE')\n"
         "print('held', flush=True)\n"
         "time.sleep(60)\n"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        found = lock_holders([store.path, Path(f"{store.path}-wal"), Path(f"{store.path}-shm")])
        assert any(line.startswith(f"{holder.pid} (") for line in found), found
        assert "sqlite3" in " ".join(found)  # the holder's command line
    finally:
        holder.kill()
        holder.wait()
    assert lock_holders([store.path]) == []


def test_a_replay_writes_full_batches_at_once(tmp_path: Path) -> None:
    """Recovery forgets jobs far faster than the writer's pace: while replaying, a full batch
    is written by the caller, so pending records (each a whole job) never pile up."""
    from jq_tool.engine.history_store import FLUSH_AT

    store = HistoryStore(tmp_path, 7 * DAY, clock=lambda: T0)
    store.open()
    with store.replaying():
        for batch in range(3):
            store.add([job(batch * FLUSH_AT + i, T0) for i in range(FLUSH_AT)], T0)
            assert store.records == (batch + 1) * FLUSH_AT  # written before add returned
        store.add([job(-1, T0)], T0)  # not full: left to the writer
    store.close()
    assert store.records == 3 * FLUSH_AT + 1
