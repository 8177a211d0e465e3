"""Issue 21: the finished and DEAD jobs the state machine holds are bounded by count, bytes and
age, decided by the bounds a Purge carries; whatever leaves memory goes to the forget listener.
"""

from __future__ import annotations

import msgspec

from jq_tool.core.model import (
    Ack,
    Cancel,
    Fail,
    Job,
    JobState,
    Lease,
    NewJob,
    Purge,
    PurgeResult,
    Requeue,
    Submit,
    SubmitResult,
    Submitted,
    decode_command,
    encode_command,
)
from jq_tool.core.state_machine import StateMachine

T0 = 1_700_000_000_000


def finish(sm: StateMachine, n: int, *, start: int = 0, dead: bool = False, size: int = 0) -> None:
    """Jobs j<start>.. submitted, leased and acked (or failed for good), one ms apart."""
    for i in range(start, start + n):
        now = T0 + i
        sm.apply(Submit(now, [NewJob(f"j{i}", payload="p" * size, max_retries=0, owner="o")]))
        sm.apply(Lease(now, "default", 1000, [f"l{i}"]))
        if dead:
            sm.apply(Fail(now, f"j{i}", error="boom", retry=False))
        else:
            sm.apply(Ack(now, f"j{i}", result="r" * size))


def held_ids(sm: StateMachine) -> list[str]:
    return sorted(j.id for j in sm.list_jobs(limit=1000)[0])


def test_count_bound_forgets_the_oldest_finished_first() -> None:
    forgotten: list[Job] = []
    sm = StateMachine(on_forget=lambda jobs, now: forgotten.extend(jobs))
    finish(sm, 10)
    result = sm.apply(Purge(T0 + 100, 0, max_finished=4))
    assert result == PurgeResult(jobs=6, idempotency_keys=0, evicted=6, dead_dropped=0)
    assert [j.id for j in forgotten] == [f"j{i}" for i in range(6)]
    assert all(j.state is JobState.ACKED and j.owner == "o" for j in forgotten)
    assert held_ids(sm) == sorted(f"j{i}" for i in range(6, 10))
    assert sm.held().finished == 4
    assert sm.stats().counters.evicted == 6


def test_bytes_bound_counts_payload_result_and_the_overhead() -> None:
    sm = StateMachine()
    finish(sm, 10, size=10)  # 20 content characters a job
    assert sm.held().finished_bytes == 200
    assert not sm.over_bounds(0, 300, 10, 0)  # 10 * (20 + 10) = 300
    assert sm.over_bounds(0, 299, 10, 0)
    result = sm.apply(Purge(T0 + 100, 0, max_finished_bytes=100, job_overhead_bytes=5))
    assert isinstance(result, PurgeResult) and result.evicted == 6  # 4 * 25 = 100
    assert sm.held().finished == 4 and sm.held().finished_bytes == 80


def test_age_forgets_finished_and_dead_by_their_own_ages() -> None:
    sm = StateMachine()
    finish(sm, 5)  # finished at T0 .. T0+4
    finish(sm, 5, start=5, dead=True)  # DEAD at T0+5 .. T0+9
    result = sm.apply(Purge(T0 + 100, finished_before=T0 + 2, dead_before=T0 + 6))
    assert isinstance(result, PurgeResult) and (result.jobs, result.evicted) == (5, 0)
    assert held_ids(sm) == ["j3", "j4", "j7", "j8", "j9"]
    # A Purge written before dead_before existed forgets DEAD jobs by finished_before.
    sm.apply(Purge(T0 + 100, finished_before=T0 + 8))
    assert held_ids(sm) == ["j9"]


def test_dead_cap_drops_the_oldest_dead_only() -> None:
    forgotten: list[Job] = []
    sm = StateMachine(on_forget=lambda jobs, now: forgotten.extend(jobs))
    finish(sm, 3)
    finish(sm, 5, start=3, dead=True)
    result = sm.apply(Purge(T0 + 100, 0, max_finished=10, max_dead=2))
    assert result == PurgeResult(jobs=3, idempotency_keys=0, evicted=0, dead_dropped=3)
    assert [j.id for j in forgotten] == ["j3", "j4", "j5"]
    assert held_ids(sm) == ["j0", "j1", "j2", "j6", "j7"]
    assert sm.stats().counters.dead_dropped == 3
    assert sm.stats().totals.dead == 2


def test_a_requeued_dead_job_leaves_the_dead_set() -> None:
    sm = StateMachine()
    finish(sm, 3, dead=True)
    sm.apply(Requeue(T0 + 50, "j0"))
    assert sm.held().dead == 2
    sm.apply(Purge(T0 + 100, 0, max_dead=1))
    assert held_ids(sm) == ["j0", "j2"]  # j0 is READY again: not a DEAD job to drop


def test_cancelled_jobs_count_as_finished() -> None:
    sm = StateMachine()
    sm.apply(Submit(T0, [NewJob("c1"), NewJob("c2")]))
    sm.apply(Cancel(T0 + 1, "c1"))
    sm.apply(Cancel(T0 + 2, "c2"))
    assert sm.held().finished == 2
    sm.apply(Purge(T0 + 3, 0, max_finished=1))
    assert held_ids(sm) == ["c2"]


def test_eviction_replays_to_the_same_state_and_the_same_forgotten_jobs() -> None:
    """The decision is the command's: a replay (from a snapshot taken half way) forgets the
    same jobs in the same order and ends byte-identical."""
    commands = []
    for i in range(60):
        now = T0 + i
        commands.append(Submit(now, [NewJob(f"j{i}", payload="x" * (i % 7), max_retries=0)]))
        commands.append(Lease(now, "default", 1000, [f"l{i}"]))
        if i % 3:
            commands.append(Ack(now, f"j{i}", result="y" * (i % 5)))
        else:
            commands.append(Fail(now, f"j{i}", error="e", retry=False))
        if i % 10 == 9:
            commands.append(Purge(now, now - 30, 8, 120, 3, 4, now - 20))

    def run(split: int | None) -> tuple[bytes, list[str]]:
        forgotten: list[str] = []
        sm = StateMachine(on_forget=lambda jobs, now: forgotten.extend(j.id for j in jobs))
        for index, command in enumerate(commands):
            if index == split:
                restored = StateMachine(on_forget=sm._on_forget)
                restored.restore(sm.snapshot())
                sm = restored
            sm.apply(command)
        return sm.snapshot(), forgotten

    first, forgotten = run(None)
    assert len(forgotten) > 20
    assert run(len(commands) // 2) == (first, forgotten)
    assert run(len(commands) // 3) == (first, forgotten)


def test_an_old_purge_record_decodes_with_no_bounds() -> None:
    """A Purge written before the bounds (two fields) replays as it did."""
    old = msgspec.msgpack.encode(["purge", T0, T0 - 5])
    command = decode_command(old)
    assert command == Purge(T0, T0 - 5)
    assert encode_command(command) != old  # new records carry the bounds


def test_idempotency_keys_are_bounded_by_count_those_ending_first_go() -> None:
    sm = StateMachine()
    for i in range(10):
        sm.apply(Submit(T0 + i, [NewJob(f"k{i}", idempotency_key=f"key{i}", owner="o")]))
    assert sm.idempotency_key_count == 10
    assert sm.over_bounds(0, 0, 0, 0, 4)
    result = sm.apply(Purge(T0 + 20, 0, max_idempotency_keys=4))
    assert isinstance(result, PurgeResult) and result.idempotency_keys == 6
    assert sm.idempotency_key_count == 4
    # A forgotten key makes a new job; a remembered one answers its first job.
    jobs = [NewJob("new0", idempotency_key="key0", owner="o"),
            NewJob("new9", idempotency_key="key9", owner="o")]  # fmt: skip
    again = sm.apply(Submit(T0 + 21, jobs))
    assert isinstance(again, SubmitResult)
    assert again.entries == [Submitted("new0"), Submitted("k9", duplicate=True)]


def test_requeues_do_not_pile_up_entries_in_the_dead_set() -> None:
    sm = StateMachine()
    sm.apply(Submit(T0, [NewJob("j", max_retries=0)]))
    for i in range(3000):
        now = T0 + i
        sm.apply(Lease(now, "default", 1000, [f"l{i}"]))
        sm.apply(Fail(now, "j", error="e", retry=False))
        sm.apply(Requeue(now, "j"))
    assert sm.held().dead == 0
    assert len(sm._dead.heap) <= 2100  # rebuilt once stale entries were most of it


def test_forgotten_jobs_are_not_kept_alive_by_the_listing_index() -> None:
    """The submission-order index (for paging) must let forgotten jobs go: a lingering entry
    keeps the whole job, payload and result, in memory. Measured by the references left to
    each forgotten job; only the lease heap's stale entries (at most 1,024) may remain."""
    import sys

    for blocked in (False, True):  # True: an old READY job keeps the purged ones from a prefix
        forgotten: list[Job] = []
        sm = StateMachine(on_forget=lambda jobs, now, into=forgotten: into.extend(jobs))
        if blocked:
            sm.apply(Submit(T0 - 1, [NewJob("old", queue="other", owner="o")]))
        finish(sm, 20_000, size=100)
        result = sm.apply(Purge(T0 + 30_000, 0, max_finished=12_000))
        assert isinstance(result, PurgeResult) and result.evicted == 8_000
        # References: `forgotten`, the loop variable, getrefcount's argument, and the state
        # machine's if any.
        kept = [job.id for job in forgotten if sys.getrefcount(job) > 3]
        assert len(kept) <= 1024, (blocked, len(kept))
        page, _ = sm.list_jobs(limit=20_000)
        assert len(page) == 12_000 + blocked
        assert page[-1].id == ("old" if blocked else "j8000")
