"""Cold jobs: a restore that answers before it has indexed every job (issue 20,
docs/fast-restart.md).

Restoring a million queued jobs spent less time decoding them than indexing them: the id dict
(an insert per job, a cache miss each), a heap tuple per job twice (lease order and `since`), a
pass over them all to sort them into states. The runnable READY jobs are nearly all of any
backlog, and what those indexes hold for them is fixed by the snapshot, so the snapshot carries
it, computed by its writer (the forked child, or the stop): a `ColdIndex` of packed arrays of
positions in the snapshot's job list.

- per queue, its runnable jobs in lease order, and in `since` order when that differs;
- every runnable job's position again, sorted by job id;
- the other jobs' positions, in submission order: those a restore indexes as before.

A restore takes the arrays as they are (a copy of bytes each) and leaves the runnable jobs
*cold*: decoded, in the submission-order list, but in no heap and not in the id dict.

- `ColdJobs` is the id dict with the cold jobs behind it. A miss looks the id up by bisection in
  the id-sorted array and moves the job into the dict (~3 us once per cold job), so every
  `jobs.get(id)` of the state machine sees every job.
- `ColdRun` is one queue's cold jobs in one heap's order with a cursor. Before the state machine
  reads a heap's top, it moves cold entries into the heap while the run's next entry comes before
  the heap's top, so that top is the least of both: the order a warm heap would give, entry for
  entry (the runs are sorted by the heap's own key, which ends in the unique seq).
- `warm_step` (the engine calls it after the start, a chunk per turn of the event loop) moves
  the rest into the dict; once it is done, a lookup is a dict lookup again.

Why the answers cannot differ from a warm machine's: a cold job is changed only through the dict
(a lookup takes it in first) or by a lease (which moves its entry into the heap first); an entry
left in a run is exactly the entry a warm heap would still hold, valid or stale by the same rule
(the job's state, and for `since` its run_at). Except where the job came back to READY since the
restore (a failed attempt retried, a lease expired): then its run_at may have moved, and with it
the entry it makes now, out of the run's order. A `since` run passes such jobs over (`feed`'s
`returned`): the warm heap's entry for them is stale, and they got a new one when they came
back. So a cold machine and a warm one applying the same commands give the same results and
write the same snapshot (tests/core/test_determinism.py, tests/core/test_cold_restore.py and
tests/core/test_cold_restore_wide.py check it).

The arrays are an addition to snapshot version 1, in its last field: a version that does not know
the field ignores it and restores the jobs as before (msgspec skips trailing array fields), so a
data dir stays readable both ways.
"""

from __future__ import annotations

import heapq
import operator
import sys
from array import array
from bisect import bisect_left
from collections.abc import Callable, Sequence
from itertools import islice
from typing import Any

import msgspec

from jq_tool.core.model import Job, JobState

__all__ = [
    "ColdIndex",
    "ColdJobs",
    "ColdQueue",
    "ColdRun",
    "build_cold_index",
    "feed",
    "positions",
    "ready_entry",
    "since_entry",
]

_READY = JobState.READY
# Positions are unsigned 32-bit little-endian: 4 bytes a job, up to 4G jobs in a snapshot.
_TYPECODE = next(code for code in "IL" if array(code).itemsize == 4)
_SWAP = sys.byteorder != "little"


class ColdQueue(msgspec.Struct, array_like=True, frozen=True):
    """One queue's runnable jobs, as positions in the snapshot's job list."""

    name: str
    lease_order: bytes  # by (-priority, run_at, seq): the lease-order heap's key
    since_order: bytes = b""  # by (run_at, seq); empty: the same as lease_order


class ColdIndex(msgspec.Struct, array_like=True, frozen=True):
    queues: list[ColdQueue]  # by queue name
    by_id: bytes  # every runnable job's position, sorted by job id
    warm: bytes  # every other job's position, in submission order


def pack(values: list[int]) -> bytes:
    packed = array(_TYPECODE, values)
    if _SWAP:  # pragma: no cover - big-endian machines
        packed.byteswap()
    return packed.tobytes()


def positions(data: bytes, size: int) -> array[int]:
    """The positions packed in `data`; ValueError unless each is below `size`."""
    if len(data) % 4:
        raise ValueError("a cold index array is not a whole number of positions")
    unpacked = array(_TYPECODE)
    unpacked.frombytes(data)
    if _SWAP:  # pragma: no cover - big-endian machines
        unpacked.byteswap()
    if unpacked and max(unpacked) >= size:
        raise ValueError("a cold index position is past the snapshot's jobs")
    return unpacked


def _lease_key(job: Job) -> tuple[int, int, int]:
    return (-job.priority, job.run_at, job.seq)


def _since_key(job: Job) -> tuple[int, int]:
    return (job.run_at, job.seq)


def _in_order(keys: Sequence[tuple[int, ...]]) -> bool:
    return all(map(operator.lt, keys, islice(keys, 1, None)))


def build_cold_index(jobs: list[Job], now: int) -> ColdIndex:
    """The index of `jobs` (a snapshot's list, in submission order) at the snapshot's `now`:
    the runnable READY jobs (run_at <= now), which a restore leaves cold."""
    by_queue: dict[str, list[int]] = {}
    warm: list[int] = []
    for position, job in enumerate(jobs):
        if job.state is _READY and job.run_at <= now:
            runnable = by_queue.get(job.queue)
            if runnable is None:
                runnable = by_queue[job.queue] = []
            runnable.append(position)
        else:
            warm.append(position)
    queues = []
    cold: list[int] = []
    for name in sorted(by_queue):
        members = by_queue[name]
        cold += members
        if _one_priority_rising(jobs, members):
            # Submission order is lease order and `since` order: the usual case, told
            # without a key per job (a tuple each: ~0.3 s of a million jobs' stop).
            queues.append(ColdQueue(name, pack(members), b""))
            continue
        # Otherwise each order is checked against its keys, and sorted only when it is not.
        keys = [_lease_key(jobs[p]) for p in members]
        lease = members if _in_order(keys) else [members[i] for i in _argsort(keys)]
        if len({key[0] for key in keys}) == 1:
            since = b""  # one priority: lease order is `since` order
        else:
            since_keys = [_since_key(jobs[p]) for p in members]
            since = pack(
                members if _in_order(since_keys) else [members[i] for i in _argsort(since_keys)]
            )
        queues.append(ColdQueue(name, pack(lease), since))
    # The positions sorted by their ids directly: an argsort, then gathering the positions in
    # id order, took ~0.4 s more of a million jobs (a cache miss per position).
    ids = list(map(_id, jobs))
    by_id = sorted(cold, key=ids.__getitem__)
    return ColdIndex(queues, pack(by_id), pack(warm))


def _one_priority_rising(jobs: list[Job], members: list[int]) -> bool:
    """Whether the jobs at `members` share one priority, their run_at never falls and their seq
    always rises: then `members` is in lease order (and in `since` order). Plain ints compared
    pairwise in C, no key tuple per job."""
    picked = list(map(jobs.__getitem__, members))
    priorities = list(map(_priority, picked))
    if priorities.count(priorities[0]) != len(priorities):
        return False
    runs = list(map(_run_at, picked))
    seqs = list(map(_seq, picked))
    return all(map(operator.le, runs, islice(runs, 1, None))) and all(
        map(operator.lt, seqs, islice(seqs, 1, None))
    )


_id = operator.attrgetter("id")
_run_at = operator.attrgetter("run_at")
_seq = operator.attrgetter("seq")
_priority = operator.attrgetter("priority")


def _argsort(keys: Sequence[Any]) -> list[int]:
    key: Callable[[int], Any] = keys.__getitem__
    return sorted(range(len(keys)), key=key)


class ColdRun:
    """One queue's cold entries of one heap, in that heap's order, from `at` on."""

    __slots__ = ("jobs", "order", "at")

    def __init__(self, jobs: list[Job], order: array[int]) -> None:
        self.jobs = jobs
        self.order = order
        self.at = 0

    def __len__(self) -> int:
        return len(self.order) - self.at

    def ahead_of(self, key: tuple[int, int, int], limit: int) -> int:
        """How many READY jobs of this (lease-order) run come before `key`, up to `limit`."""
        jobs = self.jobs
        ahead = 0
        for position in islice(self.order, self.at, None):
            if ahead >= limit:
                break
            job = jobs[position]
            if _lease_key(job) >= key:
                break
            if job.state is _READY:
                ahead += 1
        return ahead


class ColdJobs(dict[str, Job]):
    """The id dict of a machine restored with cold jobs: the warm ones inside, the cold ones
    found by id (and moved inside) on a miss. Only get, `in`, [] and len look past the dict;
    the state machine iterates it only once `take_all` has emptied the cold side."""

    __slots__ = ("_all", "_by_id", "_taken", "_left", "_warmed", "_id_at", "_share")

    def __init__(
        self,
        warm: dict[str, Job],
        all_jobs: list[Job],
        by_id: array[int],
        warm_positions: array[int],
        share: Callable[[Job], None],
    ) -> None:
        super().__init__(warm)
        self._share = share  # what a restore does to a job it indexes (shared strings, ints)
        self._all = all_jobs
        self._by_id = by_id
        # By position: 0 for a cold job, 1 once in the dict (or forgotten since), and for the
        # jobs that were never cold.
        taken = self._taken = bytearray(len(all_jobs))
        for position in warm_positions:
            taken[position] = 1
        self._left = len(by_id)
        self._warmed = 0  # warm_step's cursor: a position
        self._id_at: Callable[[int], str] = lambda position: all_jobs[position].id

    @property
    def cold(self) -> int:
        """Jobs not in the dict yet."""
        return self._left

    def get(self, key: str, default: Job | None = None) -> Job | None:  # type: ignore[override]
        job = dict.get(self, key)
        if job is None and self._left:
            job = self._find(key)
        return default if job is None else job

    def __contains__(self, key: object) -> bool:
        if dict.__contains__(self, key):
            return True
        return bool(self._left) and self._find(key) is not None

    def __missing__(self, key: str) -> Job:
        job = self._find(key) if self._left else None
        if job is None:
            raise KeyError(key)
        return job

    def __len__(self) -> int:
        return dict.__len__(self) + self._left

    def _find(self, key: object) -> Job | None:
        if type(key) is not str:
            return None
        by_id = self._by_id
        i = bisect_left(by_id, key, key=self._id_at)
        if i == len(by_id):
            return None
        position = by_id[i]
        job = self._all[position]
        if job.id != key or self._taken[position]:
            return None  # not a cold job, or one taken in and forgotten since
        self.take(position)
        return job

    def take(self, position: int) -> None:
        """Move the cold job at `position` into the dict (nothing if it is there already)."""
        if not self._left or self._taken[position]:
            return
        self._taken[position] = 1
        job = self._all[position]
        self._share(job)
        dict.__setitem__(self, job.id, job)
        self._left -= 1
        if not self._left:
            self._drop_cold()

    def warm_step(self, count: int) -> bool:
        """Move up to `count` more cold jobs into the dict; whether any are left. In position
        order: the jobs were decoded in that order, so their objects lie in memory that way
        (in id order, a cache miss or two each made this ~5 times slower)."""
        taken = self._taken
        position = self._warmed
        for _ in range(count):
            position = taken.find(0, position)
            if position < 0:
                break
            self.take(position)
            if not self._left:
                return False
        self._warmed = max(position, 0)
        return bool(self._left)

    def take_all(self) -> None:
        while self.warm_step(1 << 16):
            pass

    def _drop_cold(self) -> None:
        self._by_id = array(_TYPECODE)
        self._taken = bytearray()
        self._all = []
        self._id_at = lambda position: ""


def ready_entry(job: Job) -> tuple[int, int, int, Job]:
    return (-job.priority, job.run_at, job.seq, job)


def since_entry(job: Job) -> tuple[int, int, Job]:
    return (job.run_at, job.seq, job)


def feed(
    run: ColdRun,
    heap: list[Any],
    entry_of: Callable[[Job], tuple[Any, ...]],
    jobs: ColdJobs | None = None,
    returned: set[str] | None = None,
) -> bool:
    """Move `run`'s entries (made by `entry_of`, the heap's own) into `heap` while they come
    before its top, so that the top is the least entry of both; whether the run has entries
    left. Two entries never tie before their job: each key ends in the job's unique seq. With
    `jobs` (the lease-order heap), a job whose entry enters the heap enters the id dict too (a
    lease hands it out, an ack finds it by id). With `returned` (the `since` heap: the ids of
    the snapshot's jobs that came back to READY since the restore), the entries of the jobs
    that are not READY, and of those that came back, are passed over: a warm heap holds only a
    stale entry for each (one that came back got a new entry then), and the run_at of one that
    came back may have moved since the run was sorted (a failed attempt's backoff), so that an
    entry made now would stop the feed before older jobs behind it."""
    order = run.order
    all_jobs = run.jobs
    end = len(order)
    at = run.at
    while at < end:
        position = order[at]
        job = all_jobs[position]
        if returned is not None and (job.state is not _READY or (returned and job.id in returned)):
            if returned:
                returned.discard(job.id)  # a job is in one run of each order once
            at += 1
            continue
        entry = entry_of(job)
        if heap and heap[0] < entry:
            break
        at += 1
        if jobs is not None:
            jobs.take(position)
        heapq.heappush(heap, entry)
    run.at = at
    return at < end
