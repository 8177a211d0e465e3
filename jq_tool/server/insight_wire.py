"""The request and answer bodies of the insight routes (issue 19): explain, dead-letter groups,
progress and queue latency. Like validation.py and wire.py, in one place of their own: the
limits are declared on the types (the decoder enforces them, /openapi.json publishes them), and
times go out as RFC 3339 through `wire.rfc3339`.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from jq_tool.core.dead_groups import DeadGroupSummary
from jq_tool.core.explain import Explanation
from jq_tool.core.model import MAX_PROGRESS_NOTE, DeadGroupAction, JobState
from jq_tool.engine.base import DeadGroupOutcome
from jq_tool.server.wire import ProgressView, Time, progress_body, rfc3339

_T = TypeVar("_T")

MAX_GROUP_CHUNK = 1000  # jobs per logged command of a group requeue or cancel


# --- requests --------------------------------------------------------------------------------


class ProgressBody(msgspec.Struct):
    """A running attempt's progress: `progress` from 0 to 1, and a short note."""

    progress: Annotated[float, msgspec.Meta(ge=0, le=1)]
    note: Annotated[str, msgspec.Meta(max_length=MAX_PROGRESS_NOTE)] = ""
    lease_id: Annotated[str, msgspec.Meta(max_length=256)] | None = None


class DeadGroupActionBody(msgspec.Struct):
    """Requeue or cancel a whole dead-letter group. `chunk`: jobs per logged command (each
    command is one durable write and atomic; other requests' commands go in between)."""

    chunk: Annotated[int, msgspec.Meta(ge=1, le=MAX_GROUP_CHUNK)] = 500


# --- answers ---------------------------------------------------------------------------------


class ExplanationView(msgspec.Struct, kw_only=True, omit_defaults=True):
    """GET /jobs/{id}/explain: why the job is where it is. `reason` is one of docs/api.md's
    reasons; `summary` says it in one sentence; the other fields are what it was made of
    (absent when they do not apply)."""

    job_id: str
    state: JobState
    queue: str
    reason: str
    summary: str
    run_at: Time | UnsetType = UNSET
    ahead: int | UnsetType = UNSET
    drain_per_s: float | UnsetType = UNSET
    expected_at: Time | UnsetType = UNSET
    last_asked_at: Time | UnsetType = UNSET
    asked_queues: list[str] | UnsetType = UNSET
    lease_id: str | UnsetType = UNSET
    leased_at: Time | UnsetType = UNSET
    lease_until: Time | UnsetType = UNSET
    attempt: int | UnsetType = UNSET
    max_attempts: int | UnsetType = UNSET
    error: str | UnsetType = UNSET
    fingerprint: str | UnsetType = UNSET
    finished_at: Time | UnsetType = UNSET
    progress: ProgressView | UnsetType = UNSET
    worker: str | UnsetType = UNSET
    parents: list[str] | UnsetType = UNSET
    parent_states: dict[str, str] | UnsetType = UNSET
    running: int | UnsetType = UNSET
    concurrency: int | UnsetType = UNSET
    rate_limit: int | UnsetType = UNSET
    rate_period_ms: int | UnsetType = UNSET
    blocked_until: Time | UnsetType = UNSET


def _time(ms: int | None) -> str | UnsetType:
    return UNSET if ms is None else rfc3339(ms)


def _value(value: _T | None) -> _T | UnsetType:
    return UNSET if value is None else value


def explanation_body(e: Explanation) -> ExplanationView:
    return ExplanationView(
        job_id=e.job_id,
        state=e.state,
        queue=e.queue,
        reason=e.reason,
        summary=e.summary,
        run_at=_time(e.run_at),
        ahead=_value(e.ahead),
        drain_per_s=_value(e.drain_per_s),
        expected_at=_time(e.expected_at),
        last_asked_at=_time(e.last_asked_at),
        asked_queues=_value(e.asked_queues),
        lease_id=_value(e.lease_id),
        leased_at=_time(e.leased_at),
        lease_until=_time(e.lease_until),
        attempt=_value(e.attempt),
        max_attempts=_value(e.max_attempts),
        error=_value(e.error),
        fingerprint=_value(e.fingerprint),
        finished_at=_time(e.finished_at),
        progress=_value(progress_body(e.progress)),
        worker=_value(e.worker),
        parents=_value(e.parents),
        parent_states=_value(e.parent_states),
        running=_value(e.running),
        concurrency=_value(e.concurrency),
        rate_limit=_value(e.rate_limit),
        rate_period_ms=_value(e.rate_period_ms),
        blocked_until=_time(e.blocked_until),
    )


class DeadGroupView(msgspec.Struct):
    """One dead-letter group: the DEAD jobs whose last error has this fingerprint."""

    fingerprint: str
    error_type: str
    pattern: str
    count: int
    first_seen: Time
    last_seen: Time
    queues: dict[str, int]
    sample_job_id: str
    sample_error: str


def dead_group_body(s: DeadGroupSummary) -> DeadGroupView:
    return DeadGroupView(
        s.fingerprint,
        s.error_type,
        s.pattern,
        s.count,
        rfc3339(s.first_seen),
        rfc3339(s.last_seen),
        s.queues,
        s.sample_job_id,
        s.sample_error,
    )


class DeadGroupList(msgspec.Struct):
    """GET /dead/groups: the biggest groups first; `group_count` counts them all."""

    groups: list[DeadGroupView]
    group_count: int
    dead: int  # DEAD jobs in all


class DeadGroupSettled(msgspec.Struct):
    """POST /dead/groups/{fingerprint}/requeue|cancel: how many jobs, in how many logged
    commands, and how many jobs the group still holds (those that died after the request)."""

    action: DeadGroupAction
    settled: int
    commands: int
    remaining: int


def settled_body(action: DeadGroupAction, outcome: DeadGroupOutcome) -> DeadGroupSettled:
    return DeadGroupSettled(action, outcome.settled, outcome.commands, outcome.remaining)
