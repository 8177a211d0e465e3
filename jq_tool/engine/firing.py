"""What the ticker proposes for a schedule that is due: one FireSchedule command, decided
here from the schedule's state, its due times and the clock, so that the state machine only
checks and records it.

A due time the ticker reaches within the schedule's `grace_ms` is on time (late by a restart
or a ticker failover at most): it makes its job. Due times reached later than that were
missed (the server was down, or the cluster had no ticker): one firing accounts for all of
them, counts them, and the missed policy says whether it makes one job (`run_once`, for the
latest of them) or none (`skip`). Due times after them, within the grace, come next, each on
its own. The overlap policy is not decided here: it depends on the last job's state when the
firing is applied, which only the state machine knows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jq_tool.core.model import FireSchedule, MissedPolicy, Schedule

if TYPE_CHECKING:
    from jq_tool.engine.cron import CronTimes

# A downtime can pass over many due times (a day of a schedule that fires every second is
# 86,400): they are counted one by one up to this many, then the last is found directly.
MAX_MISSED_COUNTED = 10_000


def plan_firing(schedule: Schedule, times: CronTimes, now: int, job_id: str) -> FireSchedule:
    """The firing of `schedule`'s next due time (which must be at or before `now`)."""
    spec = schedule.spec
    due = schedule.next_due
    assert due is not None and due <= now
    cutoff = now - spec.grace_ms  # a due time before it was missed
    if due >= cutoff:
        return FireSchedule(now, spec.name, due, due, times.after(due), job_id)
    last_missed, missed = due, 1
    for later in times.walk(due):
        if later >= cutoff:
            break
        if missed >= MAX_MISSED_COUNTED:
            last_missed = times.before(cutoff) or last_missed
            break
        last_missed, missed = later, missed + 1
    made = job_id if spec.missed is MissedPolicy.RUN_ONCE else None
    return FireSchedule(now, spec.name, due, last_missed, times.after(last_missed), made, missed)
