"""Release: a lease given back unfinished (POST /jobs/{id}/release, the SDK's Snooze). The job is
READY again, runnable at once or after `delay_ms` (scheduled until then), its attempt is not
counted, nothing is added to its failures, and its old lease can settle nothing."""

from __future__ import annotations

import pytest

from jq_tool.core.model import (
    Ack,
    Error,
    ErrorCode,
    Expire,
    ExpireResult,
    Fail,
    Job,
    JobResult,
    JobState,
    Lease,
    LeaseResult,
    NewJob,
    Release,
    SetQueue,
    Submit,
)
from jq_tool.core.state_machine import StateMachine

T0 = 1_000_000


def submit(sm: StateMachine, *jobs: NewJob, now: int = T0) -> None:
    sm.apply(Submit(now, list(jobs)))


def lease(sm: StateMachine, now: int = T0, queue: str = "default", n: int = 1) -> list[Job]:
    result = sm.apply(Lease(now, queue, 30_000, [f"lease-{now}-{i}" for i in range(n)]))
    assert isinstance(result, LeaseResult)
    return result.jobs


def released(sm: StateMachine, command: Release) -> Job:
    result = sm.apply(command)
    assert isinstance(result, JobResult), result
    return result.job


def test_a_released_job_is_runnable_again_and_its_attempt_is_not_counted() -> None:
    sm = StateMachine()
    submit(sm, NewJob("a", max_retries=0))
    (first,) = lease(sm)
    assert first.attempts == 1
    job = released(sm, Release(T0 + 5, "a", first.lease_id))
    assert job.state is JobState.READY and job.attempts == 0
    assert job.lease_id is None and job.lease_until is None and job.worker is None
    assert job.run_at == T0 + 5 and job.updated_at == T0 + 5
    assert job.result_error is None  # not a failure
    # The attempt's history says it was given back: who held it, from when to when.
    assert [(a.attempt, a.worker, a.started_at, a.ended_at, a.outcome, a.error)
            for a in job.history or []] == [(1, None, T0, T0 + 5, "released", None)]  # fmt: skip
    stats = sm.stats()
    assert (stats.totals.runnable, stats.totals.running, stats.counters.released) == (1, 0, 1)
    assert stats.counters.failed == 0
    (second,) = lease(sm, now=T0 + 6)
    assert second.id == "a" and second.attempts == 1  # the same first attempt, again
    # The old lease settles nothing; the new one does.
    before = sm.snapshot()
    result = sm.apply(Ack(T0 + 7, "a", first.lease_id))
    assert isinstance(result, Error) and result.code is ErrorCode.LEASE_MISMATCH
    assert sm.snapshot() == before
    assert isinstance(sm.apply(Ack(T0 + 8, "a", second.lease_id)), JobResult)


def test_releasing_never_brings_a_job_closer_to_dead() -> None:
    """max_retries=0: one failure kills it, but any number of releases does not."""
    sm = StateMachine()
    submit(sm, NewJob("a", max_retries=0))
    now = T0
    for _ in range(5):
        (job,) = lease(sm, now=now)
        assert job.attempts == 1
        released(sm, Release(now + 1, "a", job.lease_id))
        now += 2
    (job,) = lease(sm, now=now)
    result = sm.apply(Fail(now + 1, "a", job.lease_id, "boom"))
    assert isinstance(result, JobResult) and result.job.state is JobState.DEAD


def test_a_release_with_a_delay_is_scheduled_until_then() -> None:
    sm = StateMachine()
    submit(sm, NewJob("a"), NewJob("b"))
    (job,) = lease(sm)
    assert job.id == "a"
    job = released(sm, Release(T0 + 10, "a", job.lease_id, delay_ms=1_000))
    assert job.state is JobState.READY and job.run_at == T0 + 1_010
    stats = sm.stats()
    assert (stats.totals.runnable, stats.totals.scheduled, stats.totals.running) == (1, 1, 0)
    assert [j.id for j in lease(sm, now=T0 + 1_009, n=5)] == ["b"]
    assert lease(sm, now=T0 + 1_009) == []
    assert [j.id for j in lease(sm, now=T0 + 1_010)] == ["a"]


def test_the_old_lease_expiry_does_not_touch_a_released_job() -> None:
    sm = StateMachine()
    submit(sm, NewJob("a"))
    (job,) = lease(sm)  # lease_until T0 + 30_000
    released(sm, Release(T0 + 1, "a", job.lease_id, delay_ms=60_000))
    assert sm.apply(Expire(T0 + 30_000)) == ExpireResult(expired=0, promoted=0)
    assert sm.get("a").state is JobState.READY  # type: ignore[union-attr]
    assert sm.stats().counters.expired == 0


def test_a_release_frees_a_concurrency_slot() -> None:
    sm = StateMachine()
    submit(sm, NewJob("a"), NewJob("b"))
    sm.apply(SetQueue(T0, "default", concurrency=1))
    (job,) = lease(sm)
    assert lease(sm, now=T0 + 1) == []  # the one slot is taken
    released(sm, Release(T0 + 2, job.id, job.lease_id))
    # The slot is free again; "a", runnable since its release, waits behind "b".
    assert [j.id for j in lease(sm, now=T0 + 3)] == ["b"]


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (Release(T0, "zz"), ErrorCode.NOT_FOUND),
        (Release(T0, "ready"), ErrorCode.INVALID_STATE),  # READY: nothing to give back
        (Release(T0, "a", "not-the-lease"), ErrorCode.LEASE_MISMATCH),
        (Release(T0, "a", delay_ms=-1), ErrorCode.INVALID),
        (Release(T0, "a", delay_ms=2**62), ErrorCode.INVALID),  # now + delay overflows
        (Release(T0, "a", 7), ErrorCode.INVALID),  # type: ignore[arg-type]
        (Release(T0, "a", delay_ms=1.5), ErrorCode.INVALID),  # type: ignore[arg-type]
    ],
)
def test_a_refused_release_changes_nothing(command: Release, code: ErrorCode) -> None:
    sm = StateMachine()
    submit(sm, NewJob("a"), NewJob("ready"))
    lease(sm)
    before = sm.snapshot()
    result = sm.apply(command)
    assert isinstance(result, Error) and result.code == code, result
    assert sm.snapshot() == before


def test_release_without_a_lease_id_gives_back_the_current_lease() -> None:
    sm = StateMachine()
    submit(sm, NewJob("a"))
    lease(sm)
    assert released(sm, Release(T0 + 1, "a")).state is JobState.READY


def test_a_release_survives_snapshot_and_replay_alike() -> None:
    """The same commands replayed, or a snapshot restored, give the same state (the engine's
    recovery and a cluster node's catch-up both rely on it)."""
    commands = [
        Submit(T0, [NewJob("a"), NewJob("b")]),
        Lease(T0 + 1, "default", 30_000, ["l1", "l2"]),
        Release(T0 + 2, "a", "l1", 5_000),
        Release(T0 + 3, "b", "l2"),
        Lease(T0 + 4, "default", 30_000, ["l3"]),
    ]
    first, second = StateMachine(), StateMachine()
    for command in commands:
        assert first.apply(command) == second.apply(command)
    assert first.snapshot() == second.snapshot()
    restored = StateMachine()
    restored.restore(first.snapshot())
    assert restored.snapshot() == first.snapshot()
    for sm in (first, restored):
        result = sm.apply(Lease(T0 + 5_002, "default", 30_000, ["l4"]))
        assert isinstance(result, LeaseResult) and [j.id for j in result.jobs] == ["a"]
        assert sm.stats().counters.released == 2


def test_listeners_hear_running_to_ready() -> None:
    seen: list[tuple[str, JobState | None, JobState]] = []
    sm = StateMachine(
        on_transition=lambda job, previous, now: seen.append((job.id, previous, job.state))
    )
    submit(sm, NewJob("a"))
    (job,) = lease(sm)
    seen.clear()
    released(sm, Release(T0 + 1, "a", job.lease_id))
    assert seen == [("a", JobState.RUNNING, JobState.READY)]
