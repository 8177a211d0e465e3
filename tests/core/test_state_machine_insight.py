"""Unit tests of the insight commands (issue 19): dead letters grouped by their last error's
fingerprint (kept through requeue, purge, snapshot and replay), a whole group requeued or
cancelled in bounded atomic chunks, and progress reports on a running attempt."""

from __future__ import annotations

from jq_tool.core.model import (
    MAX_PROGRESS_NOTE,
    DeadGroupAction,
    DeadGroupResult,
    Error,
    ErrorCode,
    Fail,
    JobProgress,
    JobResult,
    JobState,
    Lease,
    LeaseResult,
    NewJob,
    Progress,
    Purge,
    Requeue,
    SettleDeadGroup,
    Submit,
    decode_command,
    encode_command,
)
from jq_tool.core.state_machine import StateMachine

T0 = 1_700_000_000_000


def kill(sm: StateMachine, job_id: str, error: str, now: int, queue: str = "q") -> None:
    """Submit a job with no retries, lease it and fail it: DEAD with `error`."""
    sm.apply(Submit(now, [NewJob(job_id, queue, "p", 0, 0)]))
    leased = sm.apply(Lease(now, queue, 30_000, [f"l-{job_id}"]))
    assert isinstance(leased, LeaseResult) and leased.jobs[0].id == job_id
    assert isinstance(sm.apply(Fail(now, job_id, f"l-{job_id}", error)), JobResult)


def dead_world() -> tuple[StateMachine, list[object]]:
    sm = StateMachine()
    commands: list[object] = []
    original = sm.apply

    def apply(command):  # type: ignore[no-untyped-def]
        commands.append(command)
        return original(command)

    sm.apply = apply  # type: ignore[method-assign]
    for i in range(5):
        kill(sm, f"a{i}", f"ValueError: user {i * 37} not found", T0 + i, queue=f"q{i % 2}")
    for i in range(3):
        kill(sm, f"b{i}", f"KeyError: '{i}'", T0 + 10 + i)
    return sm, commands


def test_dead_jobs_are_grouped_by_the_fingerprint_of_their_last_error() -> None:
    sm, _ = dead_world()
    groups = sm.dead_groups()
    assert [(g.error_type, g.pattern, g.count) for g in groups] == [
        ("ValueError", "user <n> not found", 5),
        ("KeyError", "<str>", 3),
    ]
    first = groups[0]
    assert (first.first_seen, first.last_seen) == (T0, T0 + 4)
    assert first.queues == {"q0": 3, "q1": 2}
    assert first.sample_job_id == "a4" and first.sample_error == "ValueError: user 148 not found"
    assert sm.dead_fingerprint("a0") == first.fingerprint
    assert sm.dead_fingerprint("nope") is None


def test_a_requeue_and_a_purge_take_jobs_out_of_their_group() -> None:
    sm, _ = dead_world()
    sm.apply(Requeue(T0 + 20, "b0"))
    assert [g.count for g in sm.dead_groups()] == [5, 2]
    sm.apply(Purge(T0 + 30, T0 + 30))  # every DEAD job is finished before that
    assert sm.dead_groups() == []


def test_groups_survive_a_snapshot_and_a_replay() -> None:
    sm, commands = dead_world()
    restored = StateMachine()
    restored.restore(sm.snapshot())
    assert restored.dead_groups() == sm.dead_groups()
    replayed = StateMachine()
    for command in commands:
        replayed.apply(decode_command(encode_command(command)))  # type: ignore[arg-type]
    assert replayed.dead_groups() == sm.dead_groups()


def test_a_group_is_requeued_in_atomic_chunks_each_job_once() -> None:
    sm, _ = dead_world()
    fp = sm.dead_groups()[0].fingerprint
    done: list[str] = []
    while True:
        result = sm.apply(SettleDeadGroup(T0 + 100, fp, DeadGroupAction.REQUEUE, 2, T0 + 100))
        assert isinstance(result, DeadGroupResult)
        assert len(result.job_ids) <= 2
        done += result.job_ids
        if len(result.job_ids) < 2:
            break
    assert done == ["a0", "a1", "a2", "a3", "a4"]  # earliest death first, each once
    assert result.remaining == 0
    for job_id in done:
        job = sm.get(job_id)
        assert job is not None and (job.state, job.attempts) == (JobState.READY, 0)
    assert sm.stats().counters.requeued == 5
    assert [g.count for g in sm.dead_groups()] == [3]
    # Replaying a chunk after the group is empty changes nothing.
    again = sm.apply(SettleDeadGroup(T0 + 101, fp, DeadGroupAction.REQUEUE, 2, T0 + 100))
    assert again == DeadGroupResult(job_ids=[], remaining=0)


def test_a_job_that_died_after_the_request_began_is_not_taken() -> None:
    sm, _ = dead_world()
    fp = sm.dead_groups()[1].fingerprint
    result = sm.apply(SettleDeadGroup(T0 + 100, fp, DeadGroupAction.REQUEUE, 10, T0 + 11))
    assert isinstance(result, DeadGroupResult)
    assert result.job_ids == ["b0", "b1"] and result.remaining == 1


def test_a_group_can_be_cancelled() -> None:
    sm, _ = dead_world()
    fp = sm.dead_groups()[1].fingerprint
    result = sm.apply(SettleDeadGroup(T0 + 100, fp, DeadGroupAction.CANCEL, 10, T0 + 100))
    assert isinstance(result, DeadGroupResult) and result.job_ids == ["b0", "b1", "b2"]
    job = sm.get("b1")
    assert job is not None and job.state is JobState.CANCELLED and job.updated_at == T0 + 100
    stats = sm.stats()
    assert (stats.totals.dead, stats.totals.cancelled, stats.counters.cancelled) == (5, 3, 3)
    restored = StateMachine()
    restored.restore(sm.snapshot())
    assert restored.stats() == stats
    # Cancelled jobs are purged on their cancel time, not their death time.
    assert sm.apply(Purge(T0 + 50, T0 + 50)).jobs == 5  # type: ignore[union-attr]
    assert sm.get("b1") is not None


def test_a_malformed_group_command_changes_nothing() -> None:
    sm, _ = dead_world()
    fp = sm.dead_groups()[0].fingerprint
    before = sm.snapshot()
    for command in (
        SettleDeadGroup(T0, fp, DeadGroupAction.REQUEUE, 0, T0),
        SettleDeadGroup(T0, "", DeadGroupAction.REQUEUE, 1, T0),
        SettleDeadGroup(T0, fp, "explode", 1, T0),  # type: ignore[arg-type]
    ):
        result = sm.apply(command)
        assert isinstance(result, Error) and result.code is ErrorCode.INVALID
    assert sm.apply(SettleDeadGroup(T0, "0" * 16, DeadGroupAction.CANCEL, 5, T0)) == (
        DeadGroupResult(job_ids=[], remaining=0)
    )
    assert sm.snapshot() == before


def test_progress_is_kept_on_the_running_job_and_cleared_by_a_new_lease() -> None:
    sm = StateMachine()
    sm.apply(Submit(T0, [NewJob("j", "q", "p", 0, 3)]))
    sm.apply(Lease(T0, "q", 1000, ["l1"]))
    result = sm.apply(Progress(T0 + 5, "j", "l1", 0.4, "resized 4/10"))
    assert isinstance(result, JobResult)
    assert result.job.progress == JobProgress(0.4, "resized 4/10", T0 + 5)
    restored = StateMachine()
    restored.restore(sm.snapshot())
    job = restored.get("j")
    assert job is not None and job.progress == JobProgress(0.4, "resized 4/10", T0 + 5)
    assert isinstance(sm.apply(Progress(T0 + 6, "j", None, 1, "")), JobResult)  # int 1 is fine
    sm.apply(Fail(T0 + 7, "j", "l1", "boom"))
    sm.apply(Requeue(T0 + 8, "j"))  # refused (RETRY), harmless
    job = sm.get("j")
    assert job is not None and job.progress is not None  # the failed attempt's last word
    sm.apply(Lease(T0 + 10_000_000, "q", 1000, ["l2"]))
    job = sm.get("j")
    assert job is not None and job.state is JobState.RUNNING and job.progress is None


def test_progress_is_refused_for_a_stale_lease_or_bad_values() -> None:
    sm = StateMachine()
    sm.apply(Submit(T0, [NewJob("j", "q", "p", 0, 3)]))
    assert sm.apply(Progress(T0, "j", None, 0.5, "")).code is ErrorCode.INVALID_STATE  # type: ignore[union-attr]
    sm.apply(Lease(T0, "q", 1000, ["l1"]))
    assert sm.apply(Progress(T0, "j", "l0", 0.5, "")).code is ErrorCode.LEASE_MISMATCH  # type: ignore[union-attr]
    assert sm.apply(Progress(T0, "nope", None, 0.5, "")).code is ErrorCode.NOT_FOUND  # type: ignore[union-attr]
    for percent in (-0.1, 1.5, float("nan"), "half"):
        result = sm.apply(Progress(T0, "j", "l1", percent, ""))  # type: ignore[arg-type]
        assert isinstance(result, Error) and result.code is ErrorCode.INVALID
    long_note = sm.apply(Progress(T0, "j", "l1", 0.5, "x" * (MAX_PROGRESS_NOTE + 1)))
    assert isinstance(long_note, Error) and result.code is ErrorCode.INVALID
    job = sm.get("j")
    assert job is not None and job.progress is None


def test_jobs_ahead_are_counted_up_to_a_bound_and_explained() -> None:
    from jq_tool.core.explain import QueueActivity, explain
    from jq_tool.core.state_machine import AHEAD_COUNTED

    sm = StateMachine()
    jobs = [NewJob(f"j{i}", "q", "p", i % 2, 3) for i in range(AHEAD_COUNTED + 500)]
    sm.apply(Submit(T0, jobs))
    last = sm.get(f"j{AHEAD_COUNTED + 498}")  # priority 0: every priority-1 job is ahead too
    assert last is not None and sm.runnable_ahead(last) == AHEAD_COUNTED
    total = AHEAD_COUNTED + 500
    expected = total // 2 + (AHEAD_COUNTED + 498) // 2  # every odd one, and the older evens
    assert sm.runnable_ahead(last, limit=10**9) == expected
    first = sm.get("j1")  # the first priority-1 job: nothing ahead
    assert first is not None and sm.runnable_ahead(first) == 0
    busy = QueueActivity(last_asked_at=T0, drain_per_s=50.0, asked_queues=["q"])
    why = explain(last, sm, busy, T0 + 1000)
    assert why.reason == "queued" and why.summary.startswith(f"At least {AHEAD_COUNTED} jobs")
    assert why.expected_at == T0 + 1000 + AHEAD_COUNTED * 1000 // 50
    assert explain(first, sm, busy, T0 + 1000).reason == "next"
    idle = QueueActivity(last_asked_at=T0 - 120_000, asked_queues=["other"])
    why = explain(first, sm, idle, T0 + 1000)
    assert why.reason == "no_worker" and "workers are asking for other" in why.summary


def test_an_explanation_names_the_exception_of_a_traceback_not_its_first_line() -> None:
    from jq_tool.core.explain import QueueActivity, explain

    traceback = (
        "Traceback (most recent call last):\n"
        '  File "handlers.py", line 8, in work\n'
        '    raise RuntimeError("kaboom")\n'
        "RuntimeError: kaboom\n"
    )
    sm = StateMachine()
    sm.apply(Submit(T0, [NewJob("dead", "q", "p", 0, 0), NewJob("retry", "q", "p", 0, 3)]))
    sm.apply(Submit(T0, [NewJob("plain", "q", "p", 0, 0)]))
    for job_id, lease_id in (("dead", "l1"), ("retry", "l2"), ("plain", "l3")):
        sm.apply(Lease(T0, "q", 1000, [lease_id]))
        error = "disk full\nwhile writing /tmp/x" if job_id == "plain" else traceback
        sm.apply(Fail(T0 + 1, job_id, lease_id, error))
    idle = QueueActivity(last_asked_at=T0, asked_queues=["q"])
    summaries = {}
    for job_id in ("dead", "retry", "plain"):
        job = sm.get(job_id)
        assert job is not None
        summaries[job_id] = explain(job, sm, idle, T0 + 2).summary
    assert summaries["dead"].endswith("last error: RuntimeError: kaboom"), summaries
    assert summaries["retry"].endswith("failed: RuntimeError: kaboom"), summaries
    assert summaries["plain"].endswith("last error: disk full"), summaries  # not a traceback
    assert "Traceback" not in "".join(summaries.values())
