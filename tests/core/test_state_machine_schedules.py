"""Unit tests of the schedule commands: create (and a retried create), update with its version,
delete, and firing: each due time accounted for once, stale and doubled firings refused, the
overlap policy decided from the last job's state, missed due times counted, the job marked
with its schedule and due time; snapshots keep it all and replay means the same."""

from __future__ import annotations

from copy import copy

from jq_tool.core.model import (
    Ack,
    CreateSchedule,
    DeleteSchedule,
    Error,
    ErrorCode,
    Expire,
    Fail,
    FireResult,
    FireSchedule,
    JobState,
    Lease,
    LeaseResult,
    MissedPolicy,
    OverlapPolicy,
    Purge,
    ScheduleResult,
    ScheduleRun,
    ScheduleSpec,
    UpdateSchedule,
    decode_command,
    encode_command,
)
from jq_tool.core.state_machine import ScheduleStats, StateMachine

T0 = 1_700_000_000_000
SECOND = 1000


def spec(name: str = "nightly", **changes: object) -> ScheduleSpec:
    fields: dict[str, object] = {
        "name": name,
        "cron": "* * * * * *",
        "payload": f"run {name}",
        "queue": "reports",
        "priority": 2,
        "max_retries": 1,
    }
    fields.update(changes)
    return ScheduleSpec(**fields)  # type: ignore[arg-type]


def create(sm: StateMachine, s: ScheduleSpec, next_due: int | None = T0 + SECOND, **kw: object):  # type: ignore[no-untyped-def]
    result = sm.apply(CreateSchedule(T0, s, next_due, **kw))  # type: ignore[arg-type]
    return result


def fire(sm: StateMachine, name: str, due: int, job_id: str | None, **kw: object) -> object:
    last_due = kw.pop("last_due", due)
    next_due = kw.pop("next_due", last_due + SECOND)  # type: ignore[operator]
    now = kw.pop("now", last_due)
    return sm.apply(FireSchedule(now, name, due, last_due, next_due, job_id, **kw))  # type: ignore[arg-type]


def code(result: object) -> ErrorCode:
    assert isinstance(result, Error), result
    return result.code


def test_create_keeps_the_definition_and_the_first_due_time() -> None:
    sm = StateMachine()
    result = create(sm, spec())
    assert isinstance(result, ScheduleResult) and result.created
    schedule = sm.get_schedule("nightly")
    assert schedule is not None
    assert (schedule.spec, schedule.next_due, schedule.version, schedule.paused) == (
        spec(),
        T0 + SECOND,
        1,
        False,
    )
    assert sm.next_schedule_due() == T0 + SECOND
    assert sm.schedule_stats() == ScheduleStats(count=1, next_due=T0 + SECOND)


def test_a_retried_create_answers_the_schedule_and_another_definition_is_refused() -> None:
    sm = StateMachine()
    create(sm, spec())
    again = create(sm, spec())
    assert isinstance(again, ScheduleResult) and not again.created
    assert code(create(sm, spec(cron="0 * * * *"))) is ErrorCode.SCHEDULE_EXISTS
    assert sm.schedule_stats().count == 1


def test_the_cap_on_schedules_travels_in_the_command() -> None:
    sm = StateMachine()
    create(sm, spec("a"), max_schedules=2)
    create(sm, spec("b"), max_schedules=2)
    assert code(create(sm, spec("c"), max_schedules=2)) is ErrorCode.TOO_MANY_SCHEDULES
    assert isinstance(create(sm, spec("c")), ScheduleResult)  # 0: no cap


def test_malformed_schedule_commands_change_nothing() -> None:
    sm = StateMachine()
    before = sm.snapshot()
    bad = [
        CreateSchedule(T0, spec(name=""), T0 + 1),
        CreateSchedule(T0, spec(cron=""), T0 + 1),
        CreateSchedule(T0, spec(overlap="sometimes"), T0 + 1),  # type: ignore[arg-type]
        CreateSchedule(T0, spec(missed="never"), T0 + 1),  # type: ignore[arg-type]
        CreateSchedule(T0, spec(grace_ms=-1), T0 + 1),
        CreateSchedule(T0, spec(), T0),  # not after now
        CreateSchedule(T0, spec(), 2**63),
        CreateSchedule(T0, "nightly", T0 + 1),  # type: ignore[arg-type]
        FireSchedule(T0, "nightly", T0 + 5, T0 + 4, None, None),  # last_due before due
        FireSchedule(T0, "nightly", T0, T0, T0, None),  # next_due not after last_due
        FireSchedule(T0, "nightly", T0, T0, None, ""),
        FireSchedule(T0, "nightly", T0, T0, None, None, -1),
        FireSchedule(T0, "nightly", T0, T0 + 1, None, None),  # a due time yet to come
        UpdateSchedule(T0, spec(), "yes", None, 1),  # type: ignore[arg-type]
        DeleteSchedule(T0, 7),  # type: ignore[arg-type]
    ]
    for command in bad:
        assert code(sm.apply(command)) is ErrorCode.INVALID, command
    assert sm.snapshot() == before


def test_a_firing_makes_one_job_marked_with_its_schedule_and_due_time() -> None:
    sm = StateMachine()
    create(sm, spec())
    result = fire(sm, "nightly", T0 + SECOND, "job-1", now=T0 + SECOND + 7)
    assert isinstance(result, FireResult) and result.job is not None
    job = sm.get("job-1")
    assert job is not None
    assert (job.queue, job.payload, job.priority, job.max_retries, job.state) == (
        "reports",
        "run nightly",
        2,
        1,
        JobState.READY,
    )
    assert job.scheduled_by == ScheduleRun("nightly", T0 + SECOND)
    assert job.created_at == T0 + SECOND + 7
    schedule = sm.get_schedule("nightly")
    assert schedule is not None
    assert (schedule.last_due, schedule.next_due, schedule.last_job, schedule.runs) == (
        T0 + SECOND,
        T0 + 2 * SECOND,
        "job-1",
        1,
    )
    assert sm.stats().counters.submitted == 1


def test_each_due_time_fires_once_a_second_firing_of_it_is_refused() -> None:
    sm = StateMachine()
    create(sm, spec())
    assert isinstance(fire(sm, "nightly", T0 + SECOND, "first"), FireResult)
    # The same due time again (a replayed proposal, a second ticker after a failover).
    assert code(fire(sm, "nightly", T0 + SECOND, "second")) is ErrorCode.INVALID_STATE
    # A due time that is not the next one (computed from a stale view).
    assert code(fire(sm, "nightly", T0 + 5 * SECOND, "third")) is ErrorCode.INVALID_STATE
    assert sm.get("second") is None and sm.get("third") is None
    assert isinstance(fire(sm, "nightly", T0 + 2 * SECOND, "fourth"), FireResult)
    assert sm.job_count == 2


def test_firing_a_paused_deleted_or_unknown_schedule_is_refused() -> None:
    sm = StateMachine()
    create(sm, spec(), paused=True)
    assert code(fire(sm, "nightly", T0 + SECOND, "a")) is ErrorCode.INVALID_STATE
    assert sm.next_schedule_due() is None and sm.due_schedules(T0 + 10 * SECOND) == []
    assert code(fire(sm, "nobody", T0 + SECOND, "a")) is ErrorCode.NOT_FOUND
    assert isinstance(sm.apply(DeleteSchedule(T0, "nightly")), ScheduleResult)
    assert code(fire(sm, "nightly", T0 + SECOND, "a")) is ErrorCode.NOT_FOUND
    assert code(sm.apply(DeleteSchedule(T0, "nightly"))) is ErrorCode.NOT_FOUND
    assert sm.job_count == 0


def test_a_firing_whose_job_id_exists_is_refused_whole() -> None:
    sm = StateMachine()
    create(sm, spec())
    fire(sm, "nightly", T0 + SECOND, "job-1")
    assert code(fire(sm, "nightly", T0 + 2 * SECOND, "job-1")) is ErrorCode.INVALID
    schedule = sm.get_schedule("nightly")
    assert schedule is not None and schedule.next_due == T0 + 2 * SECOND


def test_overlap_skip_passes_over_due_times_while_the_last_job_is_unfinished() -> None:
    sm = StateMachine()
    create(sm, spec(overlap=OverlapPolicy.SKIP))
    fire(sm, "nightly", T0 + SECOND, "run-1")
    result = fire(sm, "nightly", T0 + 2 * SECOND, "run-2")  # run-1 is READY
    assert isinstance(result, FireResult) and result.job is None and result.overlap_skipped
    now = T0 + 2 * SECOND
    leased = sm.apply(Lease(now, "reports", 30_000, ["L1"]))
    assert isinstance(leased, LeaseResult) and leased.jobs[0].id == "run-1"
    assert fire(sm, "nightly", T0 + 3 * SECOND, "run-3").job is None  # type: ignore[attr-defined]
    sm.apply(Fail(now, "run-1", "L1", "boom"))  # RETRY: still unfinished
    assert fire(sm, "nightly", T0 + 4 * SECOND, "run-4").job is None  # type: ignore[attr-defined]
    sm.apply(Expire(T0 + 60 * SECOND))
    sm.apply(Lease(T0 + 60 * SECOND, "reports", 30_000, ["L2"]))
    sm.apply(Ack(T0 + 60 * SECOND, "run-1", "L2", "ok"))
    made = fire(sm, "nightly", T0 + 5 * SECOND, "run-5", now=T0 + 61 * SECOND)
    assert isinstance(made, FireResult) and made.job is not None
    schedule = sm.get_schedule("nightly")
    assert schedule is not None and (schedule.runs, schedule.skipped) == (2, 3)


def test_overlap_allow_makes_a_job_for_every_due_time() -> None:
    sm = StateMachine()
    create(sm, spec())
    for i in range(1, 4):
        fire(sm, "nightly", T0 + i * SECOND, f"run-{i}")
    assert sm.stats().totals.runnable == 3


def test_overlap_skip_counts_a_purged_last_job_as_finished() -> None:
    sm = StateMachine()
    create(sm, spec(overlap=OverlapPolicy.SKIP))
    fire(sm, "nightly", T0 + SECOND, "run-1")
    sm.apply(Lease(T0 + SECOND, "reports", 30_000, ["L1"]))
    sm.apply(Ack(T0 + SECOND, "run-1", "L1", None))
    sm.apply(Purge(T0 + 2 * SECOND, T0 + 2 * SECOND))
    assert sm.get("run-1") is None
    assert fire(sm, "nightly", T0 + 2 * SECOND, "run-2").job is not None  # type: ignore[attr-defined]


def test_a_missed_batch_is_counted_and_run_once_makes_one_job_for_the_latest() -> None:
    sm = StateMachine()
    create(sm, spec(missed=MissedPolicy.RUN_ONCE))
    # Down for a while: the due times T0+1s .. T0+10s were missed; one job, for T0+10s.
    result = fire(
        sm, "nightly", T0 + SECOND, "late", last_due=T0 + 10 * SECOND, missed=10,
        now=T0 + 100 * SECOND,
    )  # fmt: skip
    assert isinstance(result, FireResult) and result.job is not None
    assert result.job.scheduled_by == ScheduleRun("nightly", T0 + 10 * SECOND)
    schedule = sm.get_schedule("nightly")
    assert schedule is not None
    assert (schedule.missed, schedule.runs, schedule.last_due, schedule.next_due) == (
        10,
        1,
        T0 + 10 * SECOND,
        T0 + 11 * SECOND,
    )
    # The skip policy's firing makes no job.
    skipped = fire(sm, "nightly", T0 + 11 * SECOND, None, last_due=T0 + 20 * SECOND, missed=10)
    assert isinstance(skipped, FireResult) and skipped.job is None
    assert sm.schedule_stats().missed == 20


def test_update_needs_the_version_it_read_and_a_next_due_time_after_the_last() -> None:
    sm = StateMachine()
    create(sm, spec())
    fire(sm, "nightly", T0 + SECOND, "run-1")
    changed = spec(payload="new payload")
    # Stale version.
    assert code(sm.apply(UpdateSchedule(T0, changed, False, T0 + 5000, 0))) is (
        ErrorCode.INVALID_STATE
    )
    # A next due time the schedule has already accounted for.
    assert code(sm.apply(UpdateSchedule(T0, changed, False, T0 + SECOND, 1))) is (
        ErrorCode.INVALID_STATE
    )
    result = sm.apply(UpdateSchedule(T0 + 2 * SECOND, changed, True, T0 + 5000, 1))
    assert isinstance(result, ScheduleResult)
    schedule = sm.get_schedule("nightly")
    assert schedule is not None
    assert (schedule.spec.payload, schedule.paused, schedule.version, schedule.next_due) == (
        "new payload",
        True,
        2,
        T0 + 5000,
    )
    assert sm.next_schedule_due() is None  # paused
    sm.apply(UpdateSchedule(T0 + 2 * SECOND, changed, False, T0 + 6000, 2))
    assert sm.next_schedule_due() == T0 + 6000
    assert code(sm.apply(UpdateSchedule(T0, spec("nobody"), False, None, 1))) is (
        ErrorCode.NOT_FOUND
    )


def test_due_schedules_are_earliest_first_without_duplicates() -> None:
    sm = StateMachine()
    for i, name in enumerate(["c", "a", "b", "later"]):
        create(sm, spec(name), next_due=T0 + (10 * SECOND if name == "later" else SECOND + i))
    # Updates that keep the due time leave duplicate heap entries behind.
    for _ in range(3):
        s = sm.get_schedule("a")
        assert s is not None
        sm.apply(UpdateSchedule(T0, s.spec, False, s.next_due, s.version))
    due = sm.due_schedules(T0 + 5 * SECOND)
    assert [s.spec.name for s in due] == ["c", "a", "b"]
    assert [s.spec.name for s in sm.due_schedules(T0 + 5 * SECOND, limit=2)] == ["c", "a"]
    assert sm.due_schedules(T0) == []
    assert sm.next_schedule_due() == T0 + SECOND


def test_schedule_pages_go_by_name() -> None:
    sm = StateMachine()
    for name in ["m", "b", "z", "a"]:
        create(sm, spec(name))
    assert [s.spec.name for s in sm.schedule_page(None, 3)] == ["a", "b", "m"]
    assert [s.spec.name for s in sm.schedule_page("b", 10)] == ["m", "z"]
    sm.apply(DeleteSchedule(T0, "m"))
    assert [s.spec.name for s in sm.schedule_page("b", 10)] == ["z"]


def test_snapshot_restore_keeps_schedules_and_their_jobs() -> None:
    sm = StateMachine()
    create(sm, spec("a", overlap=OverlapPolicy.SKIP))
    create(sm, spec("b"), paused=True)
    fire(sm, "a", T0 + SECOND, "run-1")
    restored = StateMachine()
    restored.restore(sm.snapshot())
    assert restored.snapshot() == sm.snapshot()
    assert restored.get_schedule("a") == sm.get_schedule("a")
    assert restored.get("run-1") == sm.get("run-1")
    assert restored.schedule_stats() == sm.schedule_stats()
    # And it goes on the same: refused stale firing, overlap skip.
    assert code(fire(restored, "a", T0 + SECOND, "x")) is ErrorCode.INVALID_STATE
    assert fire(restored, "a", T0 + 2 * SECOND, "run-2").overlap_skipped  # type: ignore[attr-defined]


def test_schedule_commands_survive_the_log_encoding() -> None:
    commands = [
        CreateSchedule(T0, spec(overlap=OverlapPolicy.SKIP, missed=MissedPolicy.RUN_ONCE), T0 + 1),
        UpdateSchedule(T0, spec(), True, None, 3),
        DeleteSchedule(T0, "nightly"),
        FireSchedule(T0, "nightly", T0, T0 + 5, T0 + 6, "job", 4),
    ]
    for command in commands:
        assert decode_command(encode_command(command)) == command


def test_results_are_copies() -> None:
    sm = StateMachine()
    result = create(sm, spec())
    assert isinstance(result, ScheduleResult)
    kept = copy(result.schedule)
    fire(sm, "nightly", T0 + SECOND, "run-1")
    assert result.schedule == kept
