"""Unique jobs: which job a submit's (owner, unique_key) names while that job is in scope.

An entry maps (owner, key) to the job that holds the key, its scope and, for the `period`
scope, the end of the period. A submit asks `holder()`: the job id when the holder is still in
scope (then no new job is made), None otherwise (the new job takes the key). Entries are
forgotten when their job is purged (queued and active scopes), or once the period has ended
and the job is purged (period scope), so memory is bounded by the jobs the server holds plus
the periods still running. Owners never share a key. Pure bookkeeping for the state machine.
"""

from __future__ import annotations

import heapq

from jq_tool.core.model import Job, JobState, UniqueScope

__all__ = ["UniqueKeys"]

_QUEUED = frozenset({JobState.WAITING, JobState.READY, JobState.RETRY})
_ACTIVE = _QUEUED | {JobState.RUNNING}

UniqueEntry = tuple[str, str, str, UniqueScope, int]  # (owner, key, job id, scope, until)


class UniqueKeys:
    __slots__ = ("_entries", "_of_job", "_periods")

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[str, UniqueScope, int]] = {}
        self._of_job: dict[str, tuple[str, str]] = {}
        self._periods: list[tuple[int, str, str]] = []  # (until, owner, key): period entries

    def __len__(self) -> int:
        return len(self._entries)

    def holder(self, owner: str, key: str, now: int, jobs: dict[str, Job]) -> str | None:
        """The job id that holds the key in scope at `now`, or None."""
        entry = self._entries.get((owner, key))
        if entry is None:
            return None
        job_id, scope, until = entry
        if scope is UniqueScope.PERIOD:
            return job_id if now < until else None
        job = jobs.get(job_id)
        if job is None:
            return None
        states = _QUEUED if scope is UniqueScope.QUEUED else _ACTIVE
        return job_id if job.state in states else None

    def take(self, owner: str, key: str, job_id: str, scope: UniqueScope, until: int) -> None:
        """The new job `job_id` holds the key (replacing a holder out of scope)."""
        previous = self._entries.get((owner, key))
        if previous is not None:
            self._of_job.pop(previous[0], None)
        self._entries[(owner, key)] = (job_id, scope, until)
        self._of_job[job_id] = (owner, key)
        if scope is UniqueScope.PERIOD:
            heapq.heappush(self._periods, (until, owner, key))

    def job_purged(self, job_id: str, now: int) -> None:
        """Forget the key the job held, unless its period is still running."""
        named = self._of_job.get(job_id)
        if named is None:
            return
        entry = self._entries[named]
        if entry[1] is UniqueScope.PERIOD and now < entry[2]:
            return  # forgotten when the period ends (expire)
        del self._of_job[job_id]
        del self._entries[named]

    def expire(self, now: int, jobs: dict[str, Job]) -> int:
        """Forget period entries whose period has ended and whose job is gone; returns how
        many entries were forgotten."""
        periods = self._periods
        forgotten = 0
        while periods and periods[0][0] <= now:
            until, owner, key = heapq.heappop(periods)
            entry = self._entries.get((owner, key))
            if entry is None or entry[1] is not UniqueScope.PERIOD or entry[2] != until:
                continue
            if entry[0] in jobs:
                continue  # forgotten when its job is purged
            del self._entries[(owner, key)]
            self._of_job.pop(entry[0], None)
            forgotten += 1
        return forgotten

    def with_prefix(self, prefix: str) -> list[UniqueEntry]:
        """The entries whose key starts with `prefix` (sharded: one queue's, its keys being
        scoped by queue), in insertion order. O(entries): a queue's move, not a hot path."""
        return [entry for entry in self.dump() if entry[1].startswith(prefix)]

    def drop_prefix(self, prefix: str) -> None:
        """Forget the entries whose key starts with `prefix` (a queue moved away); their
        period heap entries are skipped when due."""
        for named in [named for named in self._entries if named[1].startswith(prefix)]:
            job_id = self._entries.pop(named)[0]
            if self._of_job.get(job_id) == named:
                del self._of_job[job_id]

    def dump(self) -> list[UniqueEntry]:
        return [
            (owner, key, job_id, scope, until)
            for (owner, key), (job_id, scope, until) in self._entries.items()
        ]

    def load(self, entries: list[UniqueEntry]) -> None:
        for owner, key, job_id, scope, until in entries:
            self._entries[(owner, key)] = (job_id, scope, until)
            self._of_job[job_id] = (owner, key)
            if scope is UniqueScope.PERIOD:
                self._periods.append((until, owner, key))
        heapq.heapify(self._periods)
