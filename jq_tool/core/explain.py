"""Why a job is where it is: `explain(job, view, activity, now)` answers in one sentence and in
fields, from the state machine's live state (the job, the jobs ahead of it, its dead-letter
group) and from what the engine has seen of the workers (`QueueActivity`: who asks for which
queue, how fast a queue drains). A pure function: no clock (the caller passes `now`), nothing
changed.

The answer is one of a small table of reasons (`REASONS`), chosen by one function per job
state (`_EXPLAINERS`). A READY job goes through `READY_CHECKS` in order, the first that
applies answers; a new cause of waiting (a paused queue, a concurrency or rate limit, parents
not finished) is one more reason, one more check in that list, or one more state function.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

import msgspec

from jq_tool.core.attempts import split_error
from jq_tool.core.model import Job, JobProgress, JobState, QueueSettings
from jq_tool.core.state_machine import AHEAD_COUNTED

__all__ = [
    "REASONS",
    "ASKED_WITHIN_MS",
    "Explanation",
    "ExplainView",
    "QueueActivity",
    "READY_CHECKS",
    "explain",
]

ASKED_WITHIN_MS = 60_000  # a queue no worker asked for in this long has "no worker"

# Every reason an explanation can give, with what it means (docs/api.md lists the same).
REASONS: dict[str, str] = {
    "scheduled": "READY, but its run_at has not come",
    "waiting_for_parents": "WAITING until every parent it depends on is ACKED",
    "paused": "runnable, but its queue is paused",
    "concurrency_limit": "runnable, but its queue has as many jobs RUNNING as its concurrency",
    "rate_limit": "runnable, but its queue leased as many jobs as its rate limit allows",
    "no_worker": "runnable, but no worker has asked for its queue in the last minute",
    "queued": "runnable, with jobs ahead of it (higher priority, or older)",
    "next": "runnable and first in line: the next lease of its queue takes it",
    "running": "leased by a worker, attempt k of n",
    "retry_wait": "a failed attempt, waiting out its backoff",
    "dead": "retries spent, or a final failure",
    "acked": "finished successfully",
    "cancelled": "cancelled before it ran",
}


class QueueActivity(msgspec.Struct):
    """What the engine saw of the workers lately (not logged: it is about the requests).
    `last_asked_at`: the last lease request for the job's queue (epoch ms, None: none since
    the start); `drain_per_s`: the queue's leases per second over the last minute;
    `asked_queues`: the queues some worker asked for in the last minute, by name."""

    last_asked_at: int | None = None
    drain_per_s: float = 0.0
    asked_queues: list[str] = []


class ExplainView(Protocol):
    """What explain reads from the state machine."""

    def runnable_ahead(self, job: Job, limit: int = ...) -> int: ...

    def dead_fingerprint(self, job_id: str) -> str | None: ...

    def get(self, job_id: str) -> Job | None: ...

    def awaited_parents(self, job_id: str) -> list[str]: ...

    def queue_settings(self, name: str) -> QueueSettings: ...

    def running_in(self, queue: str) -> int: ...

    def lease_blocked_until(self, queue: str, now: int) -> int | None: ...


class Explanation(msgspec.Struct, omit_defaults=True):
    """The answer: `reason` (a key of REASONS), `summary` (one sentence), and the fields the
    sentence was made of. Times are epoch ms; fields that do not apply are left out."""

    job_id: str
    state: JobState
    queue: str
    reason: str
    summary: str
    run_at: int | None = None  # when it is (or was) due
    ahead: int | None = None  # runnable jobs a lease takes before it
    drain_per_s: float | None = None
    expected_at: int | None = None  # about when it should be leased, at that rate
    last_asked_at: int | None = None  # the last lease request for its queue
    asked_queues: list[str] | None = None  # the queues workers ask for (no_worker)
    lease_id: str | None = None
    leased_at: int | None = None
    lease_until: int | None = None
    attempt: int | None = None
    max_attempts: int | None = None
    error: str | None = None  # the last attempt's error
    fingerprint: str | None = None  # its dead-letter group (DEAD)
    finished_at: int | None = None
    progress: JobProgress | None = None
    worker: str | None = None  # the worker id the lease named (RUNNING), when it named one
    parents: list[str] | None = None  # the parents it still waits for (WAITING)
    parent_states: dict[str, str] | None = None  # their states ("PURGED": no longer held)
    running: int | None = None  # jobs of the queue RUNNING (concurrency_limit)
    concurrency: int | None = None
    rate_limit: int | None = None
    rate_period_ms: int | None = None
    blocked_until: int | None = None  # when the rate window frees a slot (rate_limit)


def _at(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def _in(ms: int) -> str:
    seconds = max(ms, 0) / 1000
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}min"
    return f"{seconds / 3600:.1f}h"


def _error_headline(text: str | None, limit: int = 200) -> str:
    """One line for an error text: a traceback's exception ("RuntimeError: kaboom", from its
    last line: its first says only "Traceback (most recent call last):"), else its first line."""
    error_class, message = split_error(text)
    lines = (message or "").strip().splitlines()
    line = lines[0] if lines else ""
    if error_class:
        line = f"{error_class}: {line}" if line else error_class
    return line[:limit]


def _base(job: Job, reason: str, summary: str) -> Explanation:
    return Explanation(job.id, job.state, job.queue, reason, summary)


# -- READY: a list of checks, the first that applies answers ---------------------------------

ReadyCheck = Callable[[Job, ExplainView, QueueActivity, int], Explanation | None]


def _not_due(job: Job, view: ExplainView, activity: QueueActivity, now: int) -> Explanation | None:
    if job.run_at <= now:
        return None
    e = _base(job, "scheduled", f"Not due until {_at(job.run_at)} (in {_in(job.run_at - now)}).")
    e.run_at = job.run_at
    return e


def _no_worker(
    job: Job, view: ExplainView, activity: QueueActivity, now: int
) -> Explanation | None:
    asked = activity.last_asked_at
    if asked is not None and now - asked <= ASKED_WITHIN_MS:
        return None
    others = activity.asked_queues
    leased = (
        f"workers are asking for {', '.join(others[:10])}{' …' if len(others) > 10 else ''}"
        if others
        else "no worker has asked for any queue"
    )
    summary = (
        f"Runnable since {_at(job.run_at)}, but no worker has asked for queue {job.queue!r} "
        f"in the last minute ({leased})."
    )
    e = _base(job, "no_worker", summary)
    e.run_at = job.run_at
    e.last_asked_at = asked
    e.asked_queues = list(others)
    return e


def _in_line(job: Job, view: ExplainView, activity: QueueActivity, now: int) -> Explanation:
    ahead = view.runnable_ahead(job)
    rate = activity.drain_per_s
    if ahead == 0:
        e = _base(job, "next", f"Runnable and first in line in queue {job.queue!r}.")
    else:
        # runnable_ahead stops counting at AHEAD_COUNTED: the queue is at least that long.
        many = "At least " if ahead >= AHEAD_COUNTED else ""
        summary = f"{many}{ahead} job{'s' if ahead != 1 else ''} ahead of it in queue {job.queue!r}"
        if rate > 0:
            wait_ms = int(ahead / rate * 1000)
            summary += (
                f"; the queue drains at {rate:g}/s, so it should run in about {_in(wait_ms)} "
                f"(around {_at(now + wait_ms)})."
            )
        else:
            summary += "; no job of the queue was leased in the last minute."
        e = _base(job, "queued", summary)
        if rate > 0:
            e.expected_at = now + int(ahead / rate * 1000)
    e.run_at = job.run_at
    e.ahead = ahead
    e.drain_per_s = rate
    e.last_asked_at = activity.last_asked_at
    return e


def _flow_blocked(
    job: Job, view: ExplainView, activity: QueueActivity, now: int
) -> Explanation | None:
    """The queue's flow settings (issue 18): paused, at its concurrency, or at its rate."""
    blocked = view.lease_blocked_until(job.queue, now)
    if blocked is None:
        return None
    settings = view.queue_settings(job.queue)
    queue = job.queue
    if settings.paused:
        summary = f"Its queue {queue!r} is paused: no job of it is leased until it is resumed."
        e = _base(job, "paused", summary)
    elif blocked == -1:
        running = view.running_in(queue)
        summary = (
            f"Its queue {queue!r} is at its concurrency limit: {running} of "
            f"{settings.concurrency} jobs running; the next one to finish frees a slot."
        )
        e = _base(job, "concurrency_limit", summary)
        e.running = running
        e.concurrency = settings.concurrency
    else:
        summary = (
            f"Its queue {queue!r} is at its rate limit ({settings.rate_limit} leases per "
            f"{_in(settings.rate_period_ms)}): the next slot frees at {_at(blocked)} "
            f"(in {_in(blocked - now)})."
        )
        e = _base(job, "rate_limit", summary)
        e.rate_limit = settings.rate_limit
        e.rate_period_ms = settings.rate_period_ms
        e.blocked_until = blocked
    e.run_at = job.run_at
    return e


# The checks of a READY job, in order: the first that applies answers. Flow control comes
# before _no_worker: a paused queue is the answer even when no worker asks for it.
READY_CHECKS: list[ReadyCheck] = [_not_due, _flow_blocked, _no_worker]


def _ready(job: Job, view: ExplainView, activity: QueueActivity, now: int) -> Explanation:
    for check in READY_CHECKS:
        found = check(job, view, activity, now)
        if found is not None:
            return found
    return _in_line(job, view, activity, now)


# -- the other states --------------------------------------------------------------------------


def _running(job: Job, view: ExplainView, activity: QueueActivity, now: int) -> Explanation:
    until = job.lease_until or now
    since = job.leased_at if job.leased_at is not None else job.updated_at
    by = f" by worker {job.worker}" if job.worker else ""  # a worker that named itself
    summary = (
        f"Leased{by} since {_at(since)} (lease {job.lease_id}), lease until {_at(until)}, "
        f"attempt {job.attempts} of {job.max_retries + 1}"
    )
    if job.progress is not None:
        note = f": {job.progress.note}" if job.progress.note else ""
        summary += f"; {job.progress.percent:.0%} done at {_at(job.progress.at)}{note}"
    e = _base(job, "running", summary + ".")
    e.lease_id = job.lease_id
    e.leased_at = since
    e.worker = job.worker
    e.lease_until = job.lease_until
    e.attempt = job.attempts
    e.max_attempts = job.max_retries + 1
    e.progress = job.progress
    return e


def _retry(job: Job, view: ExplainView, activity: QueueActivity, now: int) -> Explanation:
    summary = (
        f"Waiting to retry until {_at(job.run_at)} (in {_in(job.run_at - now)}) after attempt "
        f"{job.attempts} of {job.max_retries + 1} failed: {_error_headline(job.result_error)}"
    )
    e = _base(job, "retry_wait", summary)
    e.run_at = job.run_at
    e.attempt = job.attempts
    e.max_attempts = job.max_retries + 1
    e.error = job.result_error
    return e


def _dead(job: Job, view: ExplainView, activity: QueueActivity, now: int) -> Explanation:
    summary = (
        f"DEAD after {job.attempts} attempt{'s' if job.attempts != 1 else ''} "
        f"(at {_at(job.updated_at)}), last error: {_error_headline(job.result_error)}"
    )
    e = _base(job, "dead", summary)
    e.attempt = job.attempts
    e.max_attempts = job.max_retries + 1
    e.error = job.result_error
    e.fingerprint = view.dead_fingerprint(job.id)
    e.finished_at = job.updated_at
    return e


def _acked(job: Job, view: ExplainView, activity: QueueActivity, now: int) -> Explanation:
    e = _base(job, "acked", f"ACKED at {_at(job.updated_at)} after {job.attempts} attempt(s).")
    e.attempt = job.attempts
    e.finished_at = job.updated_at
    return e


def _cancelled(job: Job, view: ExplainView, activity: QueueActivity, now: int) -> Explanation:
    e = _base(job, "cancelled", f"CANCELLED at {_at(job.updated_at)}.")
    e.finished_at = job.updated_at
    return e


def _waiting(job: Job, view: ExplainView, activity: QueueActivity, now: int) -> Explanation:
    parents = view.awaited_parents(job.id)
    states = {}
    for parent in parents:
        found = view.get(parent)
        states[parent] = "PURGED" if found is None else found.state.value
    shown = ", ".join(f"{p} ({s})" for p, s in list(states.items())[:5])
    more = f" and {len(parents) - 5} more" if len(parents) > 5 else ""
    summary = (
        f"WAITING for {len(parents)} parent{'s' if len(parents) != 1 else ''} to be ACKED: "
        f"{shown}{more}."
    )
    e = _base(job, "waiting_for_parents", summary)
    e.parents = parents
    e.parent_states = states
    return e


StateExplainer = Callable[[Job, ExplainView, QueueActivity, int], Explanation]

# One function per state; a new state (WAITING for parents) is one more entry.
_EXPLAINERS: dict[JobState, StateExplainer] = {
    JobState.READY: _ready,
    JobState.WAITING: _waiting,
    JobState.RUNNING: _running,
    JobState.RETRY: _retry,
    JobState.DEAD: _dead,
    JobState.ACKED: _acked,
    JobState.CANCELLED: _cancelled,
}


def explain(job: Job, view: ExplainView, activity: QueueActivity, now: int) -> Explanation:
    return _EXPLAINERS[job.state](job, view, activity, now)
