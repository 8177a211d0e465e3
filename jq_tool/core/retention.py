"""What finished jobs the state machine holds, and which go first when a Purge names bounds.

Memory must follow live work, not history: finished jobs (ACKED, CANCELLED) are held up to a
count, a byte estimate and an age, DEAD jobs (which wait for a person to requeue them) up to
their own count and age. The bounds travel in the Purge command (decided by the proposer from
its settings), never in the state machine's configuration, so a replayed log evicts exactly
what it evicted the first time, whatever the settings are now. Whatever leaves memory is
handed to the state machine's forget listener, which the engine turns into a history record
on disk (engine/history_store.py).

A `HeldJobs` is one of those two sets: a heap of (finished at, seq, job), the oldest first,
with its count and its content bytes kept as jobs come and go. Bytes are a deterministic
estimate: the characters of the payload, result and error (the parts that grow with the job)
plus a fixed overhead per job that the Purge command names too, so that changing the estimate
in a later release never changes what an old log means.
"""

from __future__ import annotations

import heapq

from jq_tool.core.attempts import error_chars
from jq_tool.core.model import Job, JobState

__all__ = ["HeldJobs", "content_bytes"]

TimedEntry = tuple[int, int, Job]  # (finished at = updated_at, seq, job)


def content_bytes(job: Job) -> int:
    """The part of a held job's size that varies: payload, result and error, in characters."""
    size = len(job.payload)
    if job.result is not None:
        size += len(job.result)
    if job.result_error is not None:
        size += len(job.result_error)
    if job.history is not None:
        size += error_chars(job)  # the attempts' errors (core/attempts.py bounds them)
    return size


class HeldJobs:
    """Finished jobs of some states held in memory, oldest finished first.

    Lazy deletion, as the state machine's other heaps: a job that left the set some other way
    (a DEAD job requeued) keeps its entry, which is recognised and skipped when it reaches the
    top; `leave` already took it out of the count and bytes."""

    __slots__ = ("states", "heap", "count", "bytes", "stale")

    def __init__(self, states: frozenset[JobState]) -> None:
        self.states = states
        self.heap: list[TimedEntry] = []
        self.count = 0
        self.bytes = 0  # content bytes only; the per-job overhead comes with each Purge
        self.stale = 0  # entries of jobs that left by `leave`

    def add(self, job: Job) -> None:
        """`job` just finished (its updated_at is the finish time)."""
        heapq.heappush(self.heap, (job.updated_at, job.seq, job))
        self.count += 1
        self.bytes += content_bytes(job)

    def leave(self, job: Job) -> None:
        """`job` leaves the set without being forgotten (a DEAD job requeued)."""
        self.count -= 1
        self.bytes -= content_bytes(job)
        self.stale += 1
        if self.stale > 1024 and self.stale * 2 > len(self.heap):
            # Requeued DEAD jobs would otherwise leave an entry each until retention.
            live = {
                entry[2].id: entry
                for entry in self.heap
                if entry[2].state in self.states and entry[2].updated_at == entry[0]
            }
            self.heap = list(live.values())
            heapq.heapify(self.heap)
            self.stale = 0

    def rebuild(self, jobs: list[Job]) -> None:
        """Fill from a restored snapshot's jobs of these states."""
        self.heap = [(job.updated_at, job.seq, job) for job in jobs]
        heapq.heapify(self.heap)
        self.count = len(jobs)
        self.bytes = sum(map(content_bytes, jobs))
        self.stale = 0

    def over(self, max_count: int, max_bytes: int, overhead: int) -> bool:
        """Whether the set is past either bound (0: no bound)."""
        if max_count and self.count > max_count:
            return True
        return bool(max_bytes) and self.bytes + overhead * self.count > max_bytes

    def oldest(self, held: dict[str, Job]) -> TimedEntry | None:
        """The entry of the oldest job still in the set (`held`: the machine's jobs by id),
        dropping stale entries on the way."""
        heap = self.heap
        while heap:
            finished_at, _, job = heap[0]
            live = job.state in self.states and job.updated_at == finished_at
            if live and held.get(job.id) is job:
                return heap[0]
            heapq.heappop(heap)
        return None

    def take_oldest(self) -> Job:
        """Remove the top entry, which `oldest` has just found valid, and its job's share."""
        job = heapq.heappop(self.heap)[2]
        self.count -= 1
        self.bytes -= content_bytes(job)
        return job
