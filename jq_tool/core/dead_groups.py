"""Dead letters grouped by cause: an index of the DEAD jobs by their last error's fingerprint.

The state machine tells it of every job that becomes DEAD (`add`) and of every job that stops
being DEAD (`remove`), from its one transition hook, so every command that moves a job into or
out of DEAD is covered; a purge, which forgets jobs without a transition, removes them itself.
Restore rebuilds it from the DEAD jobs. It is
derived data, never in a snapshot. Each group keeps its jobs by id (a dict, so
adding and removing are O(1)), how many of them each queue holds, and a heap of their death
times, so settling a group's first N jobs costs O(N log n) and a listing recomputes only the
groups that changed since the last one.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

import msgspec

from jq_tool.core.fingerprint import ErrorFingerprint, fingerprint
from jq_tool.core.model import Job, JobState

__all__ = ["DeadGroup", "DeadGroupSummary", "DeadGroups"]

_FINGERPRINTS_KEPT = 4096  # error texts whose fingerprint is remembered (a bounded cache)


class DeadGroupSummary(msgspec.Struct):
    """One group as listed: how many jobs, when the first and last of them died, in which
    queues (job counts), and one job with its full error as a sample."""

    fingerprint: str
    error_type: str
    pattern: str
    count: int
    first_seen: int
    last_seen: int
    queues: dict[str, int]
    sample_job_id: str
    sample_error: str


class DeadGroup:
    """One group's jobs (by id), its job count per queue, and a heap of (death time, seq, id)
    with lazy deletion: the order in which a SettleDeadGroup takes its jobs. That order is a
    function of the jobs alone (never of the order commands happened to add them), so a
    machine restored from a snapshot takes the same jobs as one that replayed the log."""

    __slots__ = ("print", "jobs", "queues", "order", "stale", "_summary", "_last")

    def __init__(self, print_: ErrorFingerprint) -> None:
        self.print = print_
        self.jobs: dict[str, Job] = {}
        self.queues: dict[str, int] = {}
        self.order: list[tuple[int, int, str]] = []  # (updated_at, seq, id), a heap
        self.stale = 0  # entries of jobs no longer in the group
        self._summary: DeadGroupSummary | None = None
        # The latest death (the sample), kept as jobs join; None: to be found again (it left).
        self._last: Job | None = None

    def add(self, job: Job) -> None:
        self.jobs[job.id] = job
        self.queues[job.queue] = self.queues.get(job.queue, 0) + 1
        heapq.heappush(self.order, (job.updated_at, job.seq, job.id))
        self._summary = None
        last = self._last
        if last is None:
            if len(self.jobs) == 1:
                self._last = job  # the group's first job (else: found again when listed)
        elif _death_order(job) > _death_order(last):
            self._last = job

    def discard(self, job: Job) -> None:
        del self.jobs[job.id]
        left = self.queues[job.queue] - 1
        if left:
            self.queues[job.queue] = left
        else:
            del self.queues[job.queue]
        self._summary = None
        if self._last is job:
            self._last = None
        self.stale += 1
        if self.stale > 1024 and self.stale > len(self.jobs):
            self.order = [(j.updated_at, j.seq, j.id) for j in self.jobs.values()]
            heapq.heapify(self.order)
            self.stale = 0

    def _live_top(self) -> tuple[int, int, str] | None:
        order = self.order
        while order:
            updated_at, _, job_id = order[0]
            job = self.jobs.get(job_id)
            if job is not None and job.updated_at == updated_at:
                return order[0]
            heapq.heappop(order)
        return None

    def summary(self) -> DeadGroupSummary:
        if self._summary is None:
            # O(1) amortized but after the latest death left (a scan then): a listing of
            # groups that only grew or lost their earliest jobs costs O(groups).
            last = self._last
            if last is None:
                last = self._last = max(self.jobs.values(), key=_death_order)
            top = self._live_top()
            assert top is not None  # a group with jobs has a live entry
            self._summary = DeadGroupSummary(
                fingerprint=self.print.id,
                error_type=self.print.error_type,
                pattern=self.print.pattern,
                count=len(self.jobs),
                first_seen=top[0],
                last_seen=last.updated_at,
                queues=dict(sorted(self.queues.items())),
                sample_job_id=last.id,
                sample_error=last.result_error or "",
            )
        return self._summary


def _death_order(job: Job) -> tuple[int, int, str]:
    return (job.updated_at, job.seq, job.id)


class DeadGroups:
    __slots__ = ("_groups", "_of_job", "_prints")

    def __init__(self) -> None:
        self._groups: dict[str, DeadGroup] = {}
        self._of_job: dict[str, str] = {}  # job id -> fingerprint id
        self._prints: dict[str, ErrorFingerprint] = {}

    def _fingerprint(self, error: str) -> ErrorFingerprint:
        found = self._prints.get(error)
        if found is None:
            if len(self._prints) >= _FINGERPRINTS_KEPT:
                self._prints.clear()
            found = self._prints[error] = fingerprint(error)
        return found

    def add(self, job: Job) -> None:
        print_ = self._fingerprint(job.result_error or "")
        group = self._groups.get(print_.id)
        if group is None:
            group = self._groups[print_.id] = DeadGroup(print_)
        group.add(job)
        self._of_job[job.id] = print_.id

    def remove(self, job: Job) -> None:
        fp = self._of_job.pop(job.id, None)
        if fp is None:
            return
        group = self._groups[fp]
        group.discard(job)
        if not group.jobs:
            del self._groups[fp]

    def rebuild(self, dead: Iterable[Job]) -> None:
        """Index these DEAD jobs afresh, in the order they died (then submission order)."""
        self._groups.clear()
        self._of_job.clear()
        for job in sorted(dead, key=lambda j: (j.updated_at, j.seq)):
            if job.state is JobState.DEAD:
                self.add(job)

    def summaries(self) -> list[DeadGroupSummary]:
        """Every group, the biggest first (then the latest death, then the fingerprint)."""
        found = [group.summary() for group in self._groups.values()]
        found.sort(key=lambda s: (-s.count, -s.last_seen, s.fingerprint))
        return found

    def get(self, fp: str) -> DeadGroup | None:
        return self._groups.get(fp)

    def fingerprint_of(self, job_id: str) -> str | None:
        return self._of_job.get(job_id)

    def take(self, fp: str, limit: int, dead_before: int) -> list[Job]:
        """Take up to `limit` jobs out of the group, earliest death first (then submission
        order), among those that died at or before `dead_before`. O(limit log n)."""
        group = self._groups.get(fp)
        taken: list[Job] = []
        if group is None:
            return taken
        while len(taken) < limit:
            top = group._live_top()
            if top is None or top[0] > dead_before:
                break
            heapq.heappop(group.order)
            job = group.jobs[top[2]]
            group.discard(job)
            group.stale = max(group.stale - 1, 0)  # its entry was popped, not left behind
            del self._of_job[job.id]
            taken.append(job)
        if not group.jobs:
            del self._groups[fp]
        return taken
