"""Unit tests of the state machine: every transition, every error result, the indexes' answers
(lease order, due times, stats, paging) and the transition events."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jq_tool.core.backoff import retry_backoff_ms
from jq_tool.core.model import (
    Ack,
    Cancel,
    Error,
    ErrorCode,
    Expire,
    ExpireResult,
    Extend,
    Fail,
    Job,
    JobResult,
    JobState,
    Lease,
    LeaseResult,
    NewJob,
    Purge,
    PurgeResult,
    Requeue,
    Submit,
    SubmitResult,
    Submitted,
)
from jq_tool.core.state_machine import (
    Counters,
    QueueStats,
    StateMachine,
    StateMachineConfig,
    _new_job_full_problem,
    _new_job_problem,
)

T0 = 1_000_000


def submit(
    sm: StateMachine, *jobs: NewJob, now: int = T0, keep_ms: int = 86_400_000, max_queues: int = 0
) -> list[Submitted | Error]:
    result = sm.apply(Submit(now, list(jobs), keep_ms, max_queues))
    assert isinstance(result, SubmitResult)
    return result.entries


def lease(
    sm: StateMachine, queue: str = "default", n: int = 1, now: int = T0, lease_ms: int = 30_000
) -> list[Job]:
    ids = [f"lease-{now}-{queue}-{i}" for i in range(n)]
    result = sm.apply(Lease(now, queue, lease_ms, ids))
    assert isinstance(result, LeaseResult)
    return result.jobs


def job_of(result: object) -> Job:
    assert isinstance(result, JobResult), result
    return result.job


def error_code(result: object) -> ErrorCode:
    assert isinstance(result, Error), result
    return result.code


# -- submit ------------------------------------------------------------------------------------


def test_submit_creates_ready_jobs_with_defaults() -> None:
    sm = StateMachine()
    entries = submit(sm, NewJob("a", payload="p1"), NewJob("b", queue="q2", priority=-3))
    assert entries == [Submitted("a"), Submitted("b")]
    a = sm.get("a")
    assert a is not None
    assert (a.state, a.attempts, a.created_at, a.run_at, a.updated_at, a.seq) == (
        JobState.READY,
        0,
        T0,
        T0,
        T0,
        1,
    )
    assert a.payload == "p1" and a.queue == "default" and a.max_retries == 3
    b = sm.get("b")
    assert b is not None and b.seq == 2 and b.priority == -3 and b.queue == "q2"
    assert sm.job_count == 2


def test_submit_duplicate_job_id_is_invalid_for_that_entry_only() -> None:
    sm = StateMachine()
    submit(sm, NewJob("a"))
    entries = submit(sm, NewJob("a"), NewJob("b"), NewJob("b"))
    assert error_code(entries[0]) == ErrorCode.INVALID
    assert entries[1] == Submitted("b")
    assert error_code(entries[2]) == ErrorCode.INVALID
    assert sm.job_count == 2


def test_idempotency_duplicate_across_submits_and_within_one() -> None:
    sm = StateMachine()
    assert submit(sm, NewJob("a", idempotency_key="k")) == [Submitted("a")]
    assert submit(sm, NewJob("b", idempotency_key="k"), now=T0 + 5) == [
        Submitted("a", duplicate=True)
    ]
    entries = submit(sm, NewJob("c", idempotency_key="k2"), NewJob("d", idempotency_key="k2"))
    assert entries == [Submitted("c"), Submitted("c", duplicate=True)]
    assert sm.get("b") is None and sm.get("d") is None
    assert sm.stats().counters.submitted == 2


def test_idempotency_window_closes_and_purge_forgets_the_key() -> None:
    sm = StateMachine()
    submit(sm, NewJob("a", idempotency_key="k"), keep_ms=1000)
    assert submit(sm, NewJob("b", idempotency_key="k"), now=T0 + 999) == [
        Submitted("a", duplicate=True)
    ]
    result = sm.apply(Purge(T0 + 999, finished_before=0))
    assert result == PurgeResult(jobs=0, idempotency_keys=0)
    result = sm.apply(Purge(T0 + 1000, finished_before=0))
    assert result == PurgeResult(jobs=0, idempotency_keys=1)
    assert submit(sm, NewJob("b", idempotency_key="k"), now=T0 + 1001) == [Submitted("b")]


def test_expired_idempotency_key_is_reused_even_before_purge() -> None:
    sm = StateMachine()
    submit(sm, NewJob("a", idempotency_key="k"), keep_ms=1000)
    assert submit(sm, NewJob("b", idempotency_key="k"), now=T0 + 1000, keep_ms=1000) == [
        Submitted("b")
    ]
    assert submit(sm, NewJob("c", idempotency_key="k"), now=T0 + 1500) == [
        Submitted("b", duplicate=True)
    ]
    # The old window's heap entry must not drop the new mapping.
    assert sm.apply(Purge(T0 + 1500, finished_before=0)) == PurgeResult(0, 0)
    assert sm.apply(Purge(T0 + 2000, finished_before=0)) == PurgeResult(0, 1)


def test_odd_values_do_not_crash_and_malformed_entries_are_errors() -> None:
    sm = StateMachine()
    entries = submit(
        sm,
        NewJob("neg", priority=-(2**40), max_retries=-1, run_at=0),
        NewJob(""),
        NewJob("bad", priority="high"),  # type: ignore[arg-type]
        NewJob("sur\ud800"),
        "not a job",  # type: ignore[arg-type]
        NewJob("big", run_at=2**70),
    )
    assert entries[0] == Submitted("neg")
    assert [error_code(e) for e in entries[1:]] == [ErrorCode.INVALID] * 5
    assert sm.job_count == 1
    sm.snapshot()  # nothing unencodable got in


@pytest.mark.parametrize(
    "command",
    [
        "submit",
        None,
        Submit("now", []),  # type: ignore[arg-type]
        Submit(-1, []),
        Submit(T0, "jobs"),  # type: ignore[arg-type]
        Lease(T0, "default", 1000, ["x", "x"]),
        Lease(T0, "default", 1000, [""]),
        Lease(T0, 7, 1000, ["x"]),  # type: ignore[arg-type]
        Lease(T0, "default", True, ["x"]),
        # One lease id: each field of the Lease's quick check.
        Lease(T0, "d\ud800", 1000, ["x"]),
        Lease(T0, "default", 1000, ["x\udc00"]),
        Lease(T0, "default", 1000, ["x"], "w\ud800"),
        Lease(T0, "default", 1000, ["x"], 7),  # type: ignore[arg-type]
        Lease(T0, "default", 1000, [7]),  # type: ignore[list-item]
        Lease(T0, "default", 2**62, ["x"]),
        Lease(T0, "default", 1000, "x"),  # type: ignore[arg-type]
        Ack(T0, 5),  # type: ignore[arg-type]
        # Lone surrogates: the record would not encode (each field of the Ack's quick check).
        Ack(T0, "a\ud800"),
        Ack(T0, "a", "l\udc00"),
        Ack(T0, "a", None, "r\ud800"),
        Ack(T0, "a", 7),  # type: ignore[arg-type]
        Fail(T0, "a", error=None),  # type: ignore[arg-type]
        Extend(T0, "a", lease_ms=2**63),
        Purge(T0, finished_before="x"),  # type: ignore[arg-type]
        Expire(2**64),
    ],
)
def test_malformed_commands_are_invalid_and_change_nothing(command: object) -> None:
    sm = StateMachine()
    submit(sm, NewJob("a"))
    before = sm.snapshot()
    assert error_code(sm.apply(command)) == ErrorCode.INVALID  # type: ignore[arg-type]
    assert sm.snapshot() == before


def test_text_past_ascii_still_passes_an_acks_checks() -> None:
    """The Ack's quick check covers ASCII only; other text takes the full one and is accepted."""
    sm = StateMachine()
    submit(sm, NewJob("jé"))
    [job] = lease(sm)
    result = sm.apply(Ack(T0 + 1, "jé", job.lease_id, "résultat ✓"))
    assert isinstance(result, JobResult) and result.job.state is JobState.ACKED
    assert result.job.result == "résultat ✓"


@pytest.mark.parametrize(
    "job",
    [
        # Each field of the NewJob's quick check, wrong: the full check refuses it.
        NewJob(7),  # type: ignore[arg-type]
        NewJob(""),
        NewJob("a\ud800"),
        NewJob("a", queue=None),  # type: ignore[arg-type]
        NewJob("a", queue="q\udc00"),
        NewJob("a", payload=b"bytes"),  # type: ignore[arg-type]
        NewJob("a", payload="p\ud800"),
        NewJob("a", owner=3),  # type: ignore[arg-type]
        NewJob("a", owner="o\ud800"),
        NewJob("a", priority=True),
        NewJob("a", priority=2**62),
        NewJob("a", max_retries=1.5),  # type: ignore[arg-type]
        NewJob("a", max_retries=-(2**62)),
        NewJob("a", run_at=2**62),
        NewJob("a", run_at="soon"),  # type: ignore[arg-type]
        NewJob("a", idempotency_key="k\ud800"),
        NewJob("a", idempotency_key=5),  # type: ignore[arg-type]
        NewJob("a", idempotency_key="k", fingerprint="f\udc00"),
        NewJob("a", idempotency_key="k", fingerprint=b"f"),  # type: ignore[arg-type]
    ],
)
def test_a_malformed_new_job_is_refused_and_changes_nothing(job: NewJob) -> None:
    sm = StateMachine()
    submit(sm, NewJob("before"))
    state = sm.snapshot()
    [entry] = submit(sm, job)
    assert error_code(entry) == ErrorCode.INVALID
    assert sm.snapshot() == state and sm.job_count == 1


_odd_text = st.one_of(
    st.text(max_size=6), st.just(""), st.just("x\ud800"), st.none(), st.integers(), st.binary()
)
_odd_int = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63), st.booleans(), st.floats(), st.none()
)


@given(
    job_id=_odd_text,
    queue=_odd_text,
    payload=_odd_text,
    owner=_odd_text,
    priority=_odd_int,
    retries=_odd_int,
    run_at=st.one_of(st.none(), _odd_int),
    key=st.one_of(st.none(), _odd_text),
    fingerprint=st.one_of(st.none(), _odd_text),
)
def test_the_quick_new_job_check_agrees_with_the_full_one(
    job_id: object,
    queue: object,
    payload: object,
    owner: object,
    priority: object,
    retries: object,
    run_at: object,
    key: object,
    fingerprint: object,
) -> None:
    """The quick path accepts only what the full checks accept, and refuses nothing itself
    (what it does not take, the full checks decide, and their words are the answer)."""
    job = NewJob(
        job_id,  # type: ignore[arg-type]
        queue=queue,  # type: ignore[arg-type]
        payload=payload,  # type: ignore[arg-type]
        owner=owner,  # type: ignore[arg-type]
        priority=priority,  # type: ignore[arg-type]
        max_retries=retries,  # type: ignore[arg-type]
        run_at=run_at,  # type: ignore[arg-type]
        idempotency_key=key,  # type: ignore[arg-type]
        fingerprint=fingerprint,  # type: ignore[arg-type]
    )
    assert _new_job_problem(job) == _new_job_full_problem(job)


def test_text_past_ascii_still_passes_a_leases_checks() -> None:
    sm = StateMachine()
    submit(sm, NewJob("a", queue="qé"))
    result = sm.apply(Lease(T0, "qé", 1000, ["lé"], "wé"))
    assert isinstance(result, LeaseResult) and [j.id for j in result.jobs] == ["a"]
    assert result.jobs[0].worker == "wé" and result.jobs[0].lease_id == "lé"


# -- lease -------------------------------------------------------------------------------------


def test_lease_order_priority_then_run_at_then_seq() -> None:
    sm = StateMachine()
    submit(
        sm,
        NewJob("low", priority=0),
        NewJob("high-late", priority=5, run_at=T0 - 10),
        NewJob("high-early", priority=5, run_at=T0 - 20),
        NewJob("high-early-2", priority=5, run_at=T0 - 20),
        NewJob("mid", priority=1),
        NewJob("low-2", priority=0),
    )
    order = [j.id for j in lease(sm, n=10)]
    assert order == ["high-early", "high-early-2", "high-late", "mid", "low", "low-2"]


def test_lease_marks_running_and_returns_copies() -> None:
    sm = StateMachine()
    submit(sm, NewJob("a"))
    (leased,) = lease(sm, now=T0 + 1, lease_ms=500)
    assert leased.state == JobState.RUNNING and leased.attempts == 1
    assert leased.lease_id == f"lease-{T0 + 1}-default-0"
    assert leased.lease_until == T0 + 501 and leased.updated_at == T0 + 1
    live = sm.get("a")
    assert live is not leased and live == leased
    leased.state = JobState.DEAD
    assert sm.get("a").state == JobState.RUNNING  # type: ignore[union-attr]


def test_batch_lease_takes_what_there_is_and_each_gets_its_own_lease() -> None:
    sm = StateMachine()
    submit(sm, *[NewJob(f"j{i}") for i in range(3)])
    jobs = lease(sm, n=5)
    assert [j.id for j in jobs] == ["j0", "j1", "j2"]
    assert len({j.lease_id for j in jobs}) == 3
    assert lease(sm, n=5) == []
    assert lease(sm, queue="nope") == []
    assert sm.apply(Lease(T0, "default", 1000, [])) == LeaseResult(jobs=[])


def test_scheduled_job_is_not_leasable_before_run_at() -> None:
    sm = StateMachine()
    submit(sm, NewJob("later", run_at=T0 + 1000), NewJob("other", queue="q2"))
    assert lease(sm, now=T0 + 999) == []
    assert not sm.has_runnable("default", T0 + 999)
    assert sm.has_runnable("default", T0 + 1000)
    assert sm.has_runnable("q2", T0)
    (job,) = lease(sm, now=T0 + 1000)
    assert job.id == "later"


def test_has_runnable_counts_ready_retry_and_scheduled() -> None:
    sm = StateMachine(StateMachineConfig(retry_base_ms=1000, retry_max_ms=1000))
    assert not sm.has_runnable("default", T0)
    submit(sm, NewJob("a"))
    assert sm.has_runnable("default", T0)
    lease(sm)
    assert not sm.has_runnable("default", T0)
    job = job_of(sm.apply(Fail(T0, "a", error="x")))
    assert job.state == JobState.RETRY and T0 + 500 <= job.run_at < T0 + 1000
    assert not sm.has_runnable("default", job.run_at - 1)
    assert sm.has_runnable("default", job.run_at)
    assert not sm.has_runnable("other", job.run_at)


# -- ack, fail, extend ---------------------------------------------------------------------------


def test_ack_settles_the_job() -> None:
    sm = StateMachine()
    submit(sm, NewJob("a"))
    (leased,) = lease(sm)
    job = job_of(sm.apply(Ack(T0 + 7, "a", leased.lease_id, result="42")))
    assert job.state == JobState.ACKED and job.result == "42" and job.updated_at == T0 + 7
    assert job.lease_id is None and job.lease_until is None
    assert sm.stats().counters.acked == 1
    # Acking without naming a lease settles the current one.
    submit(sm, NewJob("b"))
    lease(sm)
    assert job_of(sm.apply(Ack(T0, "b"))).state == JobState.ACKED


def test_ack_fail_extend_errors() -> None:
    sm = StateMachine()
    submit(sm, NewJob("a"))
    for command in (Ack(T0, "a"), Fail(T0, "a"), Extend(T0, "a", 1000)):
        assert error_code(sm.apply(command)) == ErrorCode.INVALID_STATE  # READY
    for command in (Ack(T0, "zz"), Fail(T0, "zz"), Extend(T0, "zz", 1000)):
        assert error_code(sm.apply(command)) == ErrorCode.NOT_FOUND
    (first,) = lease(sm, lease_ms=10)
    assert sm.apply(Expire(T0 + 10)) == ExpireResult(expired=1, promoted=0)
    sm.apply(Expire(T0 + 10_000_000))
    (second,) = lease(sm, now=T0 + 10_000_000)
    assert second.lease_id != first.lease_id
    stale = first.lease_id
    for command in (
        Ack(T0 + 10_000_000, "a", stale),
        Fail(T0 + 10_000_000, "a", stale),
        Extend(T0 + 10_000_000, "a", 1000, stale),
    ):
        before = sm.snapshot()
        assert error_code(sm.apply(command)) == ErrorCode.LEASE_MISMATCH
        assert sm.snapshot() == before
    assert job_of(sm.apply(Ack(T0 + 10_000_000, "a", second.lease_id))).attempts == 2


def test_fail_retries_with_backoff_then_dies() -> None:
    config = StateMachineConfig(retry_base_ms=100, retry_max_ms=250)
    sm = StateMachine(config)
    submit(sm, NewJob("a", max_retries=2))
    now = T0
    for attempt in (1, 2):
        (leased,) = lease(sm, now=now)
        assert leased.attempts == attempt
        job = job_of(sm.apply(Fail(now, "a", leased.lease_id, error=f"boom {attempt}")))
        assert job.state == JobState.RETRY and job.result_error == f"boom {attempt}"
        assert job.run_at == now + retry_backoff_ms("a", attempt, 100, 250)
        assert lease(sm, now=job.run_at - 1) == []
        now = job.run_at
    (leased,) = lease(sm, now=now)
    job = job_of(sm.apply(Fail(now, "a", error="final")))
    assert job.state == JobState.DEAD and job.attempts == 3
    assert sm.stats().counters == Counters(submitted=1, failed=3, retried=2, dead=1)


def test_backoff_bounds_and_determinism() -> None:
    for attempts in range(1, 40):
        for job_id in ("a", "job-17", "ü"):
            delay = retry_backoff_ms(job_id, attempts, 1000, 3_600_000)
            cap = min(1000 * 2 ** (attempts - 1), 3_600_000)
            assert cap // 2 <= delay < cap or delay == cap == 0
            assert delay == retry_backoff_ms(job_id, attempts, 1000, 3_600_000)
    spread = {retry_backoff_ms(f"j{i}", 1, 1000, 10_000) for i in range(100)}
    assert len(spread) > 50  # jitter actually spreads jobs out
    assert retry_backoff_ms("a", 10**6, 1000, 3_600_000) < 3_600_000
    assert retry_backoff_ms("a", 0, 1000, 5000) >= 500
    assert retry_backoff_ms("a", 3, -5, -5) == 0


def test_extend_moves_the_lease() -> None:
    sm = StateMachine()
    submit(sm, NewJob("a"))
    (leased,) = lease(sm, lease_ms=100)
    job = job_of(sm.apply(Extend(T0 + 50, "a", 1000, leased.lease_id)))
    assert job.lease_until == T0 + 1050 and job.updated_at == T0
    assert sm.next_due() == T0 + 1050
    assert sm.apply(Expire(T0 + 100)) == ExpireResult(expired=0, promoted=0)
    assert sm.get("a").state == JobState.RUNNING  # type: ignore[union-attr]
    assert sm.apply(Expire(T0 + 1050)) == ExpireResult(expired=1, promoted=0)
    assert sm.get("a").result_error == "lease expired"  # type: ignore[union-attr]


# -- expiry ------------------------------------------------------------------------------------


def test_expiry_retry_ready_then_dead_after_max_retries_plus_one_attempts() -> None:
    sm = StateMachine(StateMachineConfig(retry_base_ms=10, retry_max_ms=10))
    submit(sm, NewJob("a", max_retries=3))
    now = T0
    states = []
    for attempt in range(1, 5):
        (leased,) = lease(sm, now=now, lease_ms=100)
        assert leased.attempts == attempt
        now += 100
        assert sm.apply(Expire(now)).expired == 1  # type: ignore[union-attr]
        job = sm.get("a")
        assert job is not None
        states.append(job.state)
        if job.state == JobState.RETRY:
            now = job.run_at
            assert sm.apply(Expire(now)) == ExpireResult(expired=0, promoted=1)
            assert sm.get("a").state == JobState.READY  # type: ignore[union-attr]
    assert states == [JobState.RETRY] * 3 + [JobState.DEAD]
    counters = sm.stats().counters
    assert (counters.expired, counters.failed, counters.retried, counters.dead) == (4, 4, 3, 1)
    assert sm.next_due() is None


def test_expire_is_a_no_op_when_nothing_is_due() -> None:
    sm = StateMachine()
    submit(sm, NewJob("a"), NewJob("s", run_at=T0 + 500))
    lease(sm, lease_ms=1000)
    before = sm.snapshot()
    assert sm.apply(Expire(T0)) == ExpireResult(expired=0, promoted=0)
    assert sm.snapshot() == before
    assert sm.next_due() == T0 + 500
    assert sm.apply(Expire(T0 + 500)) == ExpireResult(expired=0, promoted=1)
    assert sm.next_due() == T0 + 1000


def test_acked_job_leaves_no_pending_expiry() -> None:
    sm = StateMachine()
    submit(sm, NewJob("a"))
    lease(sm, lease_ms=1000)
    sm.apply(Ack(T0, "a"))
    assert sm.next_due() is None
    assert sm.apply(Expire(T0 + 5000)) == ExpireResult(expired=0, promoted=0)
    assert sm.get("a").state == JobState.ACKED  # type: ignore[union-attr]


def test_lease_promotes_due_retry_jobs_of_its_queue_only() -> None:
    sm = StateMachine(StateMachineConfig(retry_base_ms=10, retry_max_ms=10))
    submit(sm, NewJob("a"), NewJob("b", queue="q2"))
    lease(sm)
    lease(sm, queue="q2")
    sm.apply(Fail(T0, "a"))
    sm.apply(Fail(T0, "b"))
    (job,) = lease(sm, now=T0 + 10)
    assert job.id == "a" and job.attempts == 2
    assert sm.get("b").state == JobState.RETRY  # type: ignore[union-attr]


# -- cancel, requeue -----------------------------------------------------------------------------


def test_cancel_ready_scheduled_and_retry_but_not_running() -> None:
    sm = StateMachine(StateMachineConfig(retry_base_ms=10, retry_max_ms=10))
    submit(sm, NewJob("r"), NewJob("s", run_at=T0 + 100), NewJob("x"), NewJob("y"))
    assert job_of(sm.apply(Cancel(T0, "r"))).state == JobState.CANCELLED
    assert job_of(sm.apply(Cancel(T0, "s"))).state == JobState.CANCELLED
    (running,) = lease(sm)
    assert running.id == "x"
    assert error_code(sm.apply(Cancel(T0, "x"))) == ErrorCode.INVALID_STATE
    sm.apply(Fail(T0, "x"))
    assert job_of(sm.apply(Cancel(T0, "x"))).state == JobState.CANCELLED
    assert error_code(sm.apply(Cancel(T0, "x"))) == ErrorCode.INVALID_STATE
    assert error_code(sm.apply(Cancel(T0, "nope"))) == ErrorCode.NOT_FOUND
    # Cancelled jobs are never leased, even after their run_at comes.
    assert [j.id for j in lease(sm, n=5, now=T0 + 1000)] == ["y"]
    assert sm.next_due() == T0 + 1000 + 30_000  # y's lease only
    assert sm.stats().counters.cancelled == 3


def test_requeue_dead_only() -> None:
    sm = StateMachine()
    submit(sm, NewJob("a", max_retries=0))
    assert error_code(sm.apply(Requeue(T0, "a"))) == ErrorCode.INVALID_STATE
    lease(sm)
    assert error_code(sm.apply(Requeue(T0, "a"))) == ErrorCode.INVALID_STATE
    sm.apply(Fail(T0, "a", error="bad"))
    assert sm.get("a").state == JobState.DEAD  # type: ignore[union-attr]
    job = job_of(sm.apply(Requeue(T0 + 5, "a")))
    assert (job.state, job.attempts, job.run_at, job.result_error) == (
        JobState.READY,
        0,
        T0 + 5,
        "bad",
    )
    assert error_code(sm.apply(Requeue(T0, "nope"))) == ErrorCode.NOT_FOUND
    assert [j.id for j in lease(sm, now=T0 + 5)] == ["a"]
    assert sm.stats().counters.requeued == 1


# -- purge -------------------------------------------------------------------------------------


def test_purge_forgets_finished_jobs_settled_before_the_cutoff() -> None:
    sm = StateMachine()
    submit(sm, *[NewJob(f"j{i}", max_retries=0) for i in range(5)])
    lease(sm, n=5)
    sm.apply(Ack(T0 + 1, "j0"))
    sm.apply(Fail(T0 + 2, "j1"))  # DEAD
    sm.apply(Ack(T0 + 3, "j2"))
    sm.apply(Fail(T0 + 3, "j4"))  # DEAD, then requeued: no longer finished
    sm.apply(Requeue(T0 + 4, "j4"))
    assert sm.apply(Purge(T0 + 10, finished_before=T0 + 2)) == PurgeResult(2, 0)
    assert sm.get("j0") is None and sm.get("j1") is None
    assert sm.apply(Purge(T0 + 10, finished_before=T0 + 10)) == PurgeResult(1, 0)
    assert sorted(j.id for j in sm.list_jobs()[0]) == ["j3", "j4"]
    assert sm.job_count == 2 and sm.stats().totals.total == 2
    assert sm.stats().counters.purged == 3
    # A purged id may be used again.
    assert submit(sm, NewJob("j0"), now=T0 + 11) == [Submitted("j0")]


def test_requeued_then_dead_again_at_the_same_time_purges_once() -> None:
    sm = StateMachine()
    submit(sm, NewJob("a", max_retries=0))
    lease(sm)
    sm.apply(Fail(T0, "a"))
    sm.apply(Requeue(T0, "a"))
    lease(sm)
    sm.apply(Fail(T0, "a"))
    assert sm.apply(Purge(T0, finished_before=T0)) == PurgeResult(1, 0)
    assert sm.stats().totals == QueueStats()


# -- stats, list_jobs, events, snapshots -----------------------------------------------------------


def test_stats_counts_every_state_per_queue() -> None:
    sm = StateMachine(StateMachineConfig(retry_base_ms=10, retry_max_ms=10))
    submit(
        sm,
        NewJob("r1"),
        NewJob("r2"),
        NewJob("s", run_at=T0 + 50),
        NewJob("q2", queue="b"),
        NewJob("c"),
        NewJob("d", max_retries=0),
    )
    sm.apply(Cancel(T0, "c"))
    lease(sm, n=2)  # r1, r2
    sm.apply(Ack(T0, "r1"))
    sm.apply(Fail(T0, "r2"))  # RETRY
    stats = sm.stats()
    assert stats.queues["default"] == QueueStats(
        runnable=1, running=0, scheduled=1, retry=1, dead=0, acked=1, cancelled=1, total=5
    )
    assert stats.queues["b"] == QueueStats(runnable=1, total=1)
    assert stats.totals == QueueStats(
        runnable=2, running=0, scheduled=1, retry=1, dead=0, acked=1, cancelled=1, total=6
    )
    # A later command's clock turns the scheduled job into a runnable one.
    submit(sm, now=T0 + 50)
    assert sm.stats().queues["default"].scheduled == 0
    assert sm.stats().queues["default"].runnable == 2
    assert list(sm.stats().queues) == ["b", "default"]


def test_list_jobs_pages_newest_first_with_filters() -> None:
    sm = StateMachine()
    submit(sm, *[NewJob(f"j{i:02}", queue="odd" if i % 2 else "even") for i in range(25)])
    lease(sm, queue="odd", n=3)  # j01, j03, j05 RUNNING
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = sm.list_jobs(limit=10, cursor=cursor)
        seen += [j.id for j in page]
        if cursor is None:
            break
    assert seen == [f"j{i:02}" for i in reversed(range(25))]
    page, cursor = sm.list_jobs(queue="odd", limit=5)
    assert [j.id for j in page] == ["j23", "j21", "j19", "j17", "j15"] and cursor is not None
    page, cursor = sm.list_jobs(queue="odd", limit=100, cursor=cursor)
    assert [j.id for j in page][-1] == "j01" and cursor is None
    page, cursor = sm.list_jobs(state=JobState.RUNNING, limit=2)
    assert [j.id for j in page] == ["j05", "j03"]
    page, cursor = sm.list_jobs(state=JobState.RUNNING, limit=2, cursor=cursor)
    assert [j.id for j in page] == ["j01"] and cursor is None
    assert sm.list_jobs(state=JobState.DEAD) == ([], None)
    page, cursor = sm.list_jobs(limit=25)
    assert len(page) == 25 and cursor is None
    for bad in ("x", "-1", "1e9", "9" * 40):
        with pytest.raises(ValueError):
            sm.list_jobs(cursor=bad)
    with pytest.raises(ValueError):
        sm.list_jobs(limit=0)


def test_list_jobs_skips_purged_jobs_across_compaction() -> None:
    sm = StateMachine()
    n = 3000
    submit(sm, *[NewJob(f"j{i}") for i in range(n)])
    for i in range(0, n, 3):
        sm.apply(Cancel(T0, f"j{i}"))
    sm.apply(Purge(T0, finished_before=T0))
    page, cursor = sm.list_jobs(limit=n)
    assert [j.id for j in page] == [f"j{i}" for i in reversed(range(n)) if i % 3]
    assert cursor is None
    assert sm.list_jobs(limit=1, cursor=str(n))[0][0].id == f"j{n - 2}"  # seq n is j{n-1}


def test_on_transition_called_once_per_state_change_and_never_on_errors() -> None:
    calls: list[tuple[str, JobState | None, JobState, int]] = []
    sm = StateMachine(
        StateMachineConfig(retry_base_ms=10, retry_max_ms=10),
        on_transition=lambda job, previous, now: calls.append((job.id, previous, job.state, now)),
    )
    R, RU, RE, D, A, C = (
        JobState.READY,
        JobState.RUNNING,
        JobState.RETRY,
        JobState.DEAD,
        JobState.ACKED,
        JobState.CANCELLED,
    )
    submit(sm, NewJob("a", max_retries=1, priority=1), NewJob("b"), NewJob("a"), now=1)
    assert calls == [("a", None, R, 1), ("b", None, R, 1)]
    calls.clear()
    lease(sm, now=2, lease_ms=5)
    sm.apply(Expire(7))
    sm.apply(Expire(100))
    lease(sm, now=100)
    sm.apply(Extend(100, "a", 10))
    sm.apply(Fail(101, "a"))
    sm.apply(Requeue(102, "a"))
    sm.apply(Cancel(103, "b"))
    lease(sm, now=104)
    sm.apply(Ack(105, "a"))
    for command in (Ack(106, "a"), Cancel(106, "zz"), Requeue(106, "b"), Fail(106, "a")):
        assert isinstance(sm.apply(command), Error)
    sm.apply(Purge(200, 200))
    assert calls == [
        ("a", R, RU, 2),
        ("a", RU, RE, 7),
        ("a", RE, R, 100),
        ("a", R, RU, 100),
        ("a", RU, D, 101),
        ("a", D, R, 102),
        ("b", R, C, 103),
        ("a", R, RU, 104),
        ("a", RU, A, 105),
    ]


def test_a_failing_listener_does_not_half_apply() -> None:
    def listener(job: Job, previous: JobState | None, now: int) -> None:
        raise RuntimeError("listener bug")

    sm = StateMachine(on_transition=listener)
    assert submit(sm, NewJob("a"), NewJob("b")) == [Submitted("a"), Submitted("b")]
    assert len(lease(sm, n=2)) == 2


def test_snapshot_restore_keeps_leases_counters_and_indexes() -> None:
    sm = StateMachine()
    submit(
        sm,
        NewJob("a", idempotency_key="ka"),
        NewJob("b", priority=2),
        NewJob("s", run_at=T0 + 100),
        NewJob("r", queue="q"),
    )
    (b,) = lease(sm)
    lease(sm, queue="q")
    sm.apply(Fail(T0, "r"))
    data = sm.snapshot()
    restored = StateMachine()
    restored.restore(data)
    assert restored.snapshot() == data
    assert restored.stats() == sm.stats()
    assert restored.next_due() == sm.next_due()
    # The RUNNING job kept its lease: its worker may ack after the restart.
    assert job_of(restored.apply(Ack(T0 + 1, "b", b.lease_id))).state == JobState.ACKED
    assert submit(restored, NewJob("z", idempotency_key="ka")) == [Submitted("a", True)]
    assert [j.id for j in lease(restored, n=5, now=T0 + 100)] == ["a", "s"]


def test_restore_rejects_garbage_and_keeps_state() -> None:
    sm = StateMachine()
    submit(sm, NewJob("a"))
    before = sm.snapshot()
    for bad in (b"", b"\x00garbage", StateMachine().snapshot()[:-1]):
        with pytest.raises(ValueError):
            sm.restore(bad)
    assert sm.snapshot() == before


def test_a_scheduled_job_coming_due_is_reported_by_whichever_command_moves_the_clock() -> None:
    calls: list[tuple[str, JobState | None, JobState, int]] = []
    sm = StateMachine(
        on_transition=lambda job, previous, now: calls.append((job.id, previous, job.state, now))
    )
    submit(sm, NewJob("s", queue="q", run_at=T0 + 100), NewJob("t", run_at=T0 + 200))
    calls.clear()
    assert sm.apply(Ack(T0 + 150, "nope")) == Error(ErrorCode.NOT_FOUND, "no job 'nope'")
    assert calls == []  # an error result moves nothing, not even the clock
    submit(sm, NewJob("u", queue="other"), now=T0 + 150)
    assert calls == [
        ("s", JobState.READY, JobState.READY, T0 + 150),
        ("u", None, JobState.READY, T0 + 150),
    ]
    assert sm.stats().queues["q"] == QueueStats(runnable=1, total=1)
    assert sm.next_due() == T0 + 200
    calls.clear()
    assert sm.apply(Expire(T0 + 200)) == ExpireResult(expired=0, promoted=1)
    assert calls == [("t", JobState.READY, JobState.READY, T0 + 200)]


def test_list_jobs_takes_state_names_and_refuses_unknown_ones() -> None:
    sm = StateMachine()
    submit(sm, NewJob("a"), NewJob("b", queue="q"))
    lease(sm)
    page, cursor = sm.list_jobs(state="RUNNING")  # type: ignore[arg-type]
    assert [j.id for j in page] == ["a"] and cursor is None
    assert sm.list_jobs(state=JobState.RUNNING, queue="q") == ([], None)
    assert sm.list_jobs(queue="missing") == ([], None)
    with pytest.raises(ValueError):
        sm.list_jobs(state="NOPE")  # type: ignore[arg-type]


def test_mass_cancel_frees_the_heaps_and_leasing_still_follows_the_order() -> None:
    sm = StateMachine()
    n = 5000
    submit(
        sm,
        *[NewJob(f"j{i}", run_at=T0 + 10 * (i % 2), priority=i % 3) for i in range(n)],
    )
    for i in range(n):
        if i % 5:
            sm.apply(Cancel(T0, f"j{i}"))
    assert sm.apply(Purge(T0, finished_before=T0)) == PurgeResult(jobs=4000, idempotency_keys=0)
    kept = [i for i in range(n) if i % 5 == 0]
    # White-box: the cancelled jobs' heap entries were dropped, not kept until leased past.
    waiting = len(sm._scheduled) + sum(len(q.ready) + len(q.retry) for q in sm._queues.values())
    assert waiting < 2 * len(kept) + 1100
    leased = lease(sm, n=n, now=T0 + 10)
    expected = sorted(kept, key=lambda i: (-(i % 3), T0 + 10 * (i % 2), i))
    assert [j.id for j in leased] == [f"j{i}" for i in expected]


def test_extreme_times_still_snapshot() -> None:
    top = 2**62 - 1
    sm = StateMachine(StateMachineConfig(retry_max_ms=2**70))
    submit(
        sm, NewJob("a", run_at=top, idempotency_key="k"), NewJob("b", priority=-top), now=top,
        keep_ms=top,
    )  # fmt: skip
    leased = lease(sm, n=2, now=top, lease_ms=top)
    assert [j.id for j in leased] == ["a", "b"]
    sm.apply(Fail(top, "a"))
    sm.apply(Extend(top, "b", top))
    restored = StateMachine()
    restored.restore(sm.snapshot())
    assert restored.snapshot() == sm.snapshot()
    assert error_code(sm.apply(Expire(2**62))) == ErrorCode.INVALID
