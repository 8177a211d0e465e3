"""The workers this node has heard from: soft state for GET /workers.

A worker names itself with `X-Jq-Worker` on its lease requests. Which worker holds which lease
is in the log (the Lease command carries the id onto each job), so every node agrees on
`leases`. When a worker last asked for work and for which queues is only an observation: kept
here, in this process's memory, never logged (a restart or another cluster node starts with
none), and bounded (MAX_WORKERS, the longest unseen forgotten first; MAX_QUEUES per worker).
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable

import msgspec

MAX_WORKERS = 10_000
MAX_QUEUES = 16  # queues remembered per worker
FORGET_AFTER_MS = 5 * 60_000  # a worker holding no lease is listed this long after its last poll


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Seen(msgspec.Struct):
    last_seen: int
    queues: list[str] = []


class WorkerRow(msgspec.Struct, frozen=True):
    worker_id: str
    last_seen: int | None  # None: holds leases, but never polled this node
    queues: list[str]
    leases: int


class WorkerBook:
    """Last poll time and queues per worker id, least recently seen first."""

    def __init__(self, clock: Callable[[], int] = _now_ms) -> None:
        self._clock = clock
        self._seen: OrderedDict[str, _Seen] = OrderedDict()

    def seen(self, worker_id: str, queue: str) -> None:
        """A lease request from `worker_id` for `queue`: O(1)."""
        seen = self._seen.get(worker_id)
        now = self._clock()
        if seen is None:
            seen = self._seen[worker_id] = _Seen(now)
            if len(self._seen) > MAX_WORKERS:
                self._seen.popitem(last=False)
        else:
            seen.last_seen = now
            self._seen.move_to_end(worker_id)
        if queue not in seen.queues:
            seen.queues.append(queue)
            del seen.queues[:-MAX_QUEUES]

    def forget(self, worker_id: str) -> bool:
        """A worker that stopped (it said so): unlisted at once, not FORGET_AFTER_MS after its
        last poll. Whether it was in the book. O(1)."""
        return self._seen.pop(worker_id, None) is not None

    def page(self, holders: Counter[str], after: str | None, limit: int) -> list[WorkerRow]:
        """Workers by id after `after`: those holding leases (`holders`: leases per worker id)
        and those seen in the last FORGET_AFTER_MS."""
        cutoff = self._clock() - FORGET_AFTER_MS
        live = {wid for wid, seen in self._seen.items() if seen.last_seen >= cutoff}
        ids = sorted(wid for wid in live | set(holders) if after is None or wid > after)
        rows = []
        for wid in ids[:limit]:
            seen = self._seen.get(wid)
            rows.append(
                WorkerRow(
                    wid,
                    None if seen is None else seen.last_seen,
                    [] if seen is None else list(seen.queues),
                    holders.get(wid, 0),
                )
            )
        return rows
