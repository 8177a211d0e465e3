"""Unit tests of flow control (issue 18) in the state machine: pause/resume, the concurrency
limit, the rate limit (a sliding window decided from each Lease's logged now), unique jobs and
their scopes (owner-scoped, forgotten when purged), and dependencies (WAITING until every parent
is ACKED; a failed parent cancels its children, or not with on_parent_failure "run"; fan-in;
cascades). Snapshots keep it all, and the log replays to the same state."""

from __future__ import annotations

import pytest

from jq_tool.core.model import (
    Ack,
    Cancel,
    Command,
    Error,
    ErrorCode,
    Expire,
    Fail,
    JobFlow,
    JobState,
    Lease,
    LeaseResult,
    NewJob,
    ParentFailure,
    Purge,
    QueueResult,
    SetQueue,
    Submit,
    SubmitResult,
    Submitted,
    UniqueScope,
    decode_command,
    encode_command,
)
from jq_tool.core.state_machine import StateMachine

T0 = 1_700_000_000_000
SECOND = 1000


class Log:
    """A machine and the commands applied to it, to replay."""

    def __init__(self) -> None:
        self.sm = StateMachine()
        self.commands: list[Command] = []
        self.n = 0

    def apply(self, command: Command):  # type: ignore[no-untyped-def]
        self.commands.append(command)
        return self.sm.apply(command)

    def submit(self, *jobs: NewJob, now: int = T0) -> list[Submitted | Error]:
        result = self.apply(Submit(now, list(jobs)))
        assert isinstance(result, SubmitResult)
        return result.entries

    def job(self, queue: str = "q", owner: str = "o", **flow: object) -> NewJob:
        self.n += 1
        jf = JobFlow(**flow) if flow else None  # type: ignore[arg-type]
        return NewJob(f"j{self.n}", queue, "p", owner=owner, flow=jf)

    def lease(self, queue: str = "q", n: int = 1, now: int = T0, lease_ms: int = 60_000):  # type: ignore[no-untyped-def]
        ids = [f"L{now}-{i}-{len(self.commands)}" for i in range(n)]
        result = self.apply(Lease(now, queue, lease_ms, ids))
        assert isinstance(result, LeaseResult)
        return result.jobs

    def state(self, job_id: str) -> JobState:
        job = self.sm.get(job_id)
        assert job is not None
        return job.state

    def replayed(self) -> StateMachine:
        fresh = StateMachine()
        for command in self.commands:
            fresh.apply(decode_command(encode_command(command)))
        assert fresh.snapshot() == self.sm.snapshot()
        restored = StateMachine()
        restored.restore(self.sm.snapshot())
        assert restored.snapshot() == self.sm.snapshot()
        return restored


# -- pause / resume -------------------------------------------------------------------------------


def test_a_paused_queue_leases_nothing_submits_land_and_resume_leases_again() -> None:
    log = Log()
    log.submit(*(log.job() for _ in range(5)))
    result = log.apply(SetQueue(T0, "q", paused=True))
    assert isinstance(result, QueueResult) and result.settings.paused
    log.submit(log.job())  # submits still land
    assert log.lease(n=3) == []
    assert not log.sm.has_runnable("q", T0)
    assert log.sm.lease_blocked_until("q", T0) == -1
    stats = log.sm.stats()
    assert stats.queues["q"].paused and stats.queues["q"].runnable == 6
    log.submit(log.job("other"))
    assert len(log.lease("other")) == 1  # other queues are not touched
    log.apply(SetQueue(T0 + 1, "q", paused=False))
    assert log.sm.has_runnable("q", T0 + 1)
    assert len(log.lease(n=10, now=T0 + 1)) == 6
    assert log.sm.queue_settings_page() == []  # back to defaults: forgotten
    log.replayed()


def test_a_paused_queue_survives_snapshot_and_replay() -> None:
    log = Log()
    log.submit(log.job())
    log.apply(SetQueue(T0, "q", paused=True, concurrency=2))
    restored = log.replayed()
    assert restored.queue_settings("q").paused
    assert restored.queue_settings("q").concurrency == 2
    assert restored.apply(Lease(T0, "q", 1000, ["x"])) == LeaseResult(jobs=[])


def test_set_queue_refusals() -> None:
    log = Log()
    no_period = log.apply(SetQueue(T0, "q", rate_limit=5))
    # The queue's state refuses it (with a window already set, the same command is fine).
    assert isinstance(no_period, Error) and no_period.code is ErrorCode.INVALID_STATE
    assert isinstance(log.apply(SetQueue(T0, "q", concurrency=-1)), Error)
    assert isinstance(log.apply(SetQueue(T0, "q", rate_limit=10**9, rate_period_ms=1)), Error)
    log.apply(SetQueue(T0, "a", paused=True, max_queues=1))
    refused = log.apply(SetQueue(T0, "b", paused=True, max_queues=1))
    assert isinstance(refused, Error) and refused.code is ErrorCode.TOO_MANY_QUEUES
    assert isinstance(log.apply(SetQueue(T0, "a", concurrency=3, max_queues=1)), QueueResult)


# -- concurrency ----------------------------------------------------------------------------------


def test_concurrency_limit_caps_running_jobs_and_frees_on_ack_fail_and_expiry() -> None:
    log = Log()
    log.submit(*(log.job() for _ in range(10)))
    log.apply(SetQueue(T0, "q", concurrency=3))
    first = log.lease(n=5)
    assert len(first) == 3
    assert log.lease() == []
    assert not log.sm.has_runnable("q", T0)
    log.apply(Ack(T0, first[0].id, first[0].lease_id))
    assert len(log.lease(n=5)) == 1
    log.apply(Fail(T0, first[1].id, first[1].lease_id, "x"))
    assert len(log.lease(n=5)) == 1
    assert log.sm.stats().queues["q"].running == 3
    log.apply(Expire(T0 + 60_000))  # every lease runs out
    assert len(log.lease(n=5, now=T0 + 60_000)) == 3
    log.replayed()


# -- rate limit -----------------------------------------------------------------------------------


def test_rate_limit_is_a_sliding_window_over_logged_lease_times() -> None:
    log = Log()
    log.submit(*(log.job() for _ in range(20)))
    log.apply(SetQueue(T0, "q", rate_limit=3, rate_period_ms=SECOND))
    assert len(log.lease(n=2, now=T0)) == 2
    assert len(log.lease(n=5, now=T0 + 500)) == 1  # 3 in (T0 - 1 s, T0 + 0.5 s]
    assert log.lease(now=T0 + 999) == []
    assert log.sm.lease_blocked_until("q", T0 + 999) == T0 + SECOND
    assert len(log.lease(n=5, now=T0 + SECOND)) == 2  # the two at T0 left the window
    assert len(log.lease(n=5, now=T0 + 1500)) == 1
    restored = log.replayed()
    assert restored.queue_settings("q").recent_leases == [T0 + 1000, T0 + 1000, T0 + 1500]
    # Any window of one second held at most 3 leases.
    times = sorted(j.updated_at for j in log.sm.list_jobs(state=JobState.RUNNING)[0])
    for i, t in enumerate(times):
        assert sum(1 for u in times[i:] if u < t + SECOND) <= 3


def test_changing_the_rate_window_starts_it_afresh() -> None:
    log = Log()
    log.submit(*(log.job() for _ in range(10)))
    log.apply(SetQueue(T0, "q", rate_limit=1, rate_period_ms=60_000))
    assert len(log.lease(n=3)) == 1
    log.apply(SetQueue(T0, "q", rate_limit=2))
    assert len(log.lease(n=3)) == 2
    log.apply(SetQueue(T0, "q", rate_limit=0))  # no limit
    assert len(log.lease(n=3)) == 3


# -- unique jobs ----------------------------------------------------------------------------------


def test_unique_queued_scope_answers_the_holder_until_it_runs() -> None:
    log = Log()
    (first,) = log.submit(log.job(unique_key="k"))
    assert isinstance(first, Submitted)
    (again,) = log.submit(log.job(unique_key="k"))
    assert again == Submitted(job_id=first.job_id, unique=True)
    (other_owner,) = log.submit(log.job(owner="o2", unique_key="k"))
    assert isinstance(other_owner, Submitted) and not other_owner.unique
    log.lease()  # RUNNING: out of the queued scope
    (after,) = log.submit(log.job(unique_key="k"))
    assert isinstance(after, Submitted) and not after.unique and after.job_id != first.job_id
    log.replayed()


def test_unique_active_scope_holds_while_running_and_frees_when_finished() -> None:
    log = Log()
    (first,) = log.submit(log.job(unique_key="k", unique_scope=UniqueScope.ACTIVE))
    (leased,) = log.lease()
    (dup,) = log.submit(log.job(unique_key="k", unique_scope=UniqueScope.ACTIVE))
    assert isinstance(dup, Submitted) and dup.unique and dup.job_id == first.job_id  # type: ignore[union-attr]
    log.apply(Ack(T0, leased.id, leased.lease_id))
    (new,) = log.submit(log.job(unique_key="k", unique_scope=UniqueScope.ACTIVE))
    assert isinstance(new, Submitted) and not new.unique


def test_unique_period_scope_holds_for_the_period_even_after_purge() -> None:
    log = Log()
    kw = {"unique_key": "k", "unique_scope": UniqueScope.PERIOD, "unique_period_ms": 10 * SECOND}
    (first,) = log.submit(log.job(**kw))
    (leased,) = log.lease()
    log.apply(Ack(T0, leased.id, leased.lease_id))
    log.apply(Purge(T0 + SECOND, T0 + SECOND))
    assert log.sm.get(leased.id) is None
    (dup,) = log.submit(log.job(**kw), now=T0 + 2 * SECOND)
    assert isinstance(dup, Submitted) and dup.unique
    restored = log.replayed()
    assert len(restored._unique) == 1
    (later,) = log.submit(log.job(**kw), now=T0 + 10 * SECOND)
    assert isinstance(later, Submitted) and not later.unique
    assert isinstance(first, Submitted)


def test_unique_keys_are_forgotten_when_their_jobs_are_purged() -> None:
    log = Log()
    for i in range(50):
        log.submit(log.job(unique_key=f"k{i}"))
    for job in log.lease(n=50):
        log.apply(Ack(T0, job.id, job.lease_id))
    assert len(log.sm._unique) == 50
    log.apply(Purge(T0 + SECOND, T0 + SECOND))
    assert len(log.sm._unique) == 0


def test_a_period_scope_without_a_period_is_refused() -> None:
    log = Log()
    (entry,) = log.submit(log.job(unique_key="k", unique_scope=UniqueScope.PERIOD))
    assert isinstance(entry, Error) and entry.code is ErrorCode.INVALID


# -- dependencies ---------------------------------------------------------------------------------


def test_a_child_waits_for_every_parent_then_becomes_ready() -> None:
    log = Log()
    parents = [e.job_id for e in log.submit(log.job(), log.job())]  # type: ignore[union-attr]
    (child,) = log.submit(log.job(depends_on=parents))
    assert isinstance(child, Submitted)
    assert log.state(child.job_id) is JobState.WAITING
    assert log.sm.stats().queues["q"].waiting == 1
    assert log.sm.list_jobs(state=JobState.WAITING)[0][0].id == child.job_id
    a, b = log.lease(n=5)
    assert {a.id, b.id} == set(parents)
    log.apply(Ack(T0, a.id, a.lease_id))
    assert log.state(child.job_id) is JobState.WAITING
    log.replayed()
    log.apply(Ack(T0, b.id, b.lease_id))
    assert log.state(child.job_id) is JobState.READY
    assert [j.id for j in log.lease()] == [child.job_id]
    job = log.sm.get(child.job_id)
    assert job is not None and job.depends_on is not None
    assert job.depends_on.parents == parents
    log.replayed()


def test_a_dead_parent_cancels_the_child_and_its_children_with_the_reason() -> None:
    log = Log()
    parent = log.job()
    parent.max_retries = 0
    (p,) = log.submit(parent)
    (c,) = log.submit(log.job(depends_on=[p.job_id]))  # type: ignore[union-attr]
    (g,) = log.submit(log.job(depends_on=[c.job_id]))  # type: ignore[union-attr]
    (leased,) = log.lease()
    log.apply(Fail(T0, leased.id, leased.lease_id, "boom"))
    assert log.state(leased.id) is JobState.DEAD
    child = log.sm.get(c.job_id)  # type: ignore[union-attr]
    assert child is not None and child.state is JobState.CANCELLED
    assert child.result_error == f"parent {leased.id} is DEAD"
    grandchild = log.sm.get(g.job_id)  # type: ignore[union-attr]
    assert grandchild is not None and grandchild.state is JobState.CANCELLED
    assert grandchild.result_error == f"parent {c.job_id} is CANCELLED"  # type: ignore[union-attr]
    log.replayed()


def test_on_parent_failure_run_runs_the_child_anyway() -> None:
    log = Log()
    (p,) = log.submit(log.job())
    (c,) = log.submit(log.job(depends_on=[p.job_id], on_parent_failure=ParentFailure.RUN))  # type: ignore[union-attr]
    log.apply(Cancel(T0, p.job_id))  # type: ignore[union-attr]
    assert log.state(c.job_id) is JobState.READY  # type: ignore[union-attr]


def test_parents_must_exist_and_be_the_same_owners() -> None:
    log = Log()
    (p,) = log.submit(log.job(owner="o1"))
    (missing,) = log.submit(log.job(depends_on=["nope"]))
    assert isinstance(missing, Error) and missing.code is ErrorCode.UNKNOWN_PARENT
    (foreign,) = log.submit(log.job(owner="o2", depends_on=[p.job_id]))  # type: ignore[union-attr]
    assert isinstance(foreign, Error) and foreign.code is ErrorCode.UNKNOWN_PARENT


def test_a_child_of_finished_parents_starts_ready_or_cancelled() -> None:
    log = Log()
    (p,) = log.submit(log.job())
    (leased,) = log.lease()
    log.apply(Ack(T0, leased.id, leased.lease_id))
    (ready,) = log.submit(log.job(depends_on=[p.job_id]))  # type: ignore[union-attr]
    assert log.state(ready.job_id) is JobState.READY  # type: ignore[union-attr]
    (q,) = log.submit(log.job())
    log.apply(Cancel(T0, q.job_id))  # type: ignore[union-attr]
    (cancelled,) = log.submit(log.job(depends_on=[q.job_id]))  # type: ignore[union-attr]
    assert log.state(cancelled.job_id) is JobState.CANCELLED  # type: ignore[union-attr]
    stats = log.sm.stats().queues["q"]
    assert stats.waiting == 0 and stats.cancelled == 2
    log.replayed()


def test_a_waiting_job_can_be_cancelled_and_its_parents_forget_it() -> None:
    log = Log()
    (p,) = log.submit(log.job())
    (c,) = log.submit(log.job(depends_on=[p.job_id]))  # type: ignore[union-attr]
    result = log.apply(Cancel(T0, c.job_id))  # type: ignore[union-attr]
    assert not isinstance(result, Error)
    assert log.sm._deps.children == {} and log.sm._deps.awaited == {}
    (leased,) = log.lease()
    log.apply(Ack(T0, leased.id, leased.lease_id))
    assert log.state(c.job_id) is JobState.CANCELLED  # type: ignore[union-attr]


@pytest.mark.parametrize("snapshot_midway", [False, True])
def test_fan_in_over_150_parents_runs_once_after_the_last_ack(snapshot_midway: bool) -> None:
    log = Log()
    parents = [e.job_id for e in log.submit(*(log.job() for _ in range(150)))]  # type: ignore[union-attr]
    (fan_in,) = log.submit(log.job("sink", depends_on=parents))
    assert isinstance(fan_in, Submitted)
    leased = log.lease(n=150)
    sm = log.sm
    for i, job in enumerate(leased):
        if snapshot_midway and i == 75:
            sm = log.replayed()
            log.sm = sm
        assert log.state(fan_in.job_id) is JobState.WAITING
        log.apply(Ack(T0, job.id, job.lease_id))
    assert log.state(fan_in.job_id) is JobState.READY
    assert [j.id for j in log.lease("sink", n=5)] == [fan_in.job_id]
    log.replayed()


def test_parents_within_one_submit_by_id() -> None:
    log = Log()
    parent = log.job()
    child = log.job(depends_on=[parent.id])
    entries = log.submit(parent, child)
    assert all(isinstance(e, Submitted) for e in entries)
    assert log.state(child.id) is JobState.WAITING


def test_a_parent_in_the_same_submit_answered_by_a_unique_key_means_the_holder() -> None:
    log = Log()
    (holder,) = log.submit(log.job(unique_key="k"))
    again = log.job(unique_key="k")  # answered with the holder: no job of this id
    child = log.job(depends_on=[again.id])
    first, second = log.submit(again, child)
    assert isinstance(first, Submitted) and first.unique
    assert isinstance(second, Submitted)
    job = log.sm.get(child.id)
    assert job is not None and job.state is JobState.WAITING
    assert job.depends_on is not None and job.depends_on.parents == [holder.job_id]  # type: ignore[union-attr]
    log.replayed()
