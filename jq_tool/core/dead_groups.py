"""Dead letters grouped by cause: an index of the DEAD jobs by their last error's fingerprint.

The state machine tells it of every job that becomes DEAD (`add`) and of every job that stops
being DEAD (`remove`: requeued, cancelled, purged); restore rebuilds it from the DEAD jobs. It is
derived data, never in a snapshot. Each group keeps its jobs in the order they died (a dict, so
adding and removing are O(1)) and how many of them each queue holds, so a listing costs
O(groups) and settling a group's first N jobs costs O(N).
"""

from __future__ import annotations

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
    __slots__ = ("print", "jobs", "queues")

    def __init__(self, print_: ErrorFingerprint) -> None:
        self.print = print_
        self.jobs: dict[str, Job] = {}  # in the order they died
        self.queues: dict[str, int] = {}

    def summary(self) -> DeadGroupSummary:
        first = next(iter(self.jobs.values()))
        last = next(reversed(self.jobs.values()))
        return DeadGroupSummary(
            fingerprint=self.print.id,
            error_type=self.print.error_type,
            pattern=self.print.pattern,
            count=len(self.jobs),
            first_seen=first.updated_at,
            last_seen=last.updated_at,
            queues=dict(sorted(self.queues.items())),
            sample_job_id=last.id,
            sample_error=last.result_error or "",
        )


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
        group.jobs[job.id] = job
        group.queues[job.queue] = group.queues.get(job.queue, 0) + 1
        self._of_job[job.id] = print_.id

    def remove(self, job: Job) -> None:
        fp = self._of_job.pop(job.id, None)
        if fp is None:
            return
        group = self._groups[fp]
        del group.jobs[job.id]
        left = group.queues[job.queue] - 1
        if left:
            group.queues[job.queue] = left
        else:
            del group.queues[job.queue]
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

    def first_jobs(self, fp: str, limit: int, dead_before: int) -> list[Job]:
        """Up to `limit` jobs of the group, earliest death first, that died at or before
        `dead_before`."""
        group = self._groups.get(fp)
        if group is None:
            return []
        taken: list[Job] = []
        for job in group.jobs.values():
            if len(taken) >= limit:
                break
            if job.updated_at <= dead_before:
                taken.append(job)
        return taken
