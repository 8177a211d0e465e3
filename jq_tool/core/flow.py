"""Queue flow control: which queues a lease may take jobs from, and how many.

A queue's settings (`QueueSettings`: paused, concurrency, rate limit) are changed by the
`SetQueue` command and consulted by every Lease of that queue. A lease names one queue, so
a paused or limited queue costs one dict lookup, never a look at its jobs: the lease path
stays O(log n). The rate limit is a sliding window decided from the logged `now` of each
Lease: a queue keeps the times of its leases in the last `rate_period_ms` (at most
`rate_limit` of them), so replaying the log gives the same answers, and a snapshot carries
the times. Pure bookkeeping: the state machine owns the jobs.
"""

from __future__ import annotations

from bisect import bisect_right

from jq_tool.core.model import QueueSettings, SetQueue

__all__ = ["MAX_RATE_LIMIT", "allowance", "apply_settings", "is_default", "record_leases"]

# A rate limit keeps one time per lease in its window: this bounds a queue's memory.
MAX_RATE_LIMIT = 100_000
MAX_RATE_PERIOD_MS = 7 * 24 * 3600 * 1000
MAX_CONCURRENCY = 1_000_000


def set_queue_problem(cmd: SetQueue) -> str | None:
    """What is wrong with a SetQueue's values, or None."""
    if cmd.paused is not None and type(cmd.paused) is not bool:
        return "paused must be true or false"
    for name, value, top in (
        ("concurrency", cmd.concurrency, MAX_CONCURRENCY),
        ("rate_limit", cmd.rate_limit, MAX_RATE_LIMIT),
        ("rate_period_ms", cmd.rate_period_ms, MAX_RATE_PERIOD_MS),
        ("max_queues", cmd.max_queues, 2**62 - 1),
        ("max_latency_ms", cmd.max_latency_ms, MAX_RATE_PERIOD_MS),
    ):
        if value is not None and (type(value) is not int or not 0 <= value <= top):
            return f"{name} must be an integer between 0 and {top}"
    return None


def apply_settings(settings: QueueSettings, cmd: SetQueue) -> str | None:
    """Change `settings` as `cmd` asks; returns a refusal (and changes nothing) when the
    result would be a rate limit without a period."""
    rate_limit = settings.rate_limit if cmd.rate_limit is None else cmd.rate_limit
    period = settings.rate_period_ms if cmd.rate_period_ms is None else cmd.rate_period_ms
    if rate_limit and not period:
        return (
            "the queue has no rate window: a rate limit needs rate_period_ms (the window it "
            "counts leases in)"
        )
    if cmd.paused is not None:
        settings.paused = cmd.paused
    if cmd.concurrency is not None:
        settings.concurrency = cmd.concurrency
    if (rate_limit, period) != (settings.rate_limit, settings.rate_period_ms):
        # A new window: the leases counted under the old one no longer say anything.
        settings.recent_leases = []
    settings.rate_limit = rate_limit
    settings.rate_period_ms = period if rate_limit else 0
    if cmd.max_latency_ms is not None:
        settings.max_latency_ms = cmd.max_latency_ms
    settings.updated_at = cmd.now
    return None


def is_default(settings: QueueSettings) -> bool:
    """Whether the queue has no setting of its own left (it can be forgotten)."""
    return not (
        settings.paused or settings.concurrency or settings.rate_limit or settings.max_latency_ms
    )


def allowance(settings: QueueSettings, running: int, now: int, wanted: int) -> int:
    """How many of `wanted` jobs a Lease at `now` may take from the queue, with `running`
    of its jobs RUNNING. Drops lease times that left the rate window (deterministic: they
    depend on the logged `now` only)."""
    if settings.paused:
        return 0
    if settings.concurrency:
        wanted = min(wanted, settings.concurrency - running)
    if settings.rate_limit:
        recent = settings.recent_leases
        # Leases at times <= now - period are out of the window (now - period, now].
        gone = bisect_right(recent, now - settings.rate_period_ms)
        if gone:
            del recent[:gone]
        wanted = min(wanted, settings.rate_limit - len(recent))
    return max(wanted, 0)


def record_leases(settings: QueueSettings, now: int, count: int) -> None:
    if settings.rate_limit and count:
        settings.recent_leases.extend([now] * count)


def blocked_until(settings: QueueSettings, running: int, now: int) -> int | None:
    """None when a lease at `now` could take a job (as far as flow goes); otherwise the time
    the rate window frees a slot, or -1 when only an event (resume, a job finishing) can."""
    if settings.paused:
        return -1
    if settings.concurrency and running >= settings.concurrency:
        return -1
    if settings.rate_limit:
        recent = settings.recent_leases
        in_window = len(recent) - bisect_right(recent, now - settings.rate_period_ms)
        if in_window >= settings.rate_limit:
            # The oldest lease still counted leaves the window at its time + period.
            return recent[len(recent) - in_window] + settings.rate_period_ms
    return None
