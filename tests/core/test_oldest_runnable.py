"""oldest_runnable_since: the run_at of a queue's oldest runnable job (a queue's latency), read
from an index kept beside the lease-order heap, so it is right whatever the priorities, and
stays right through leases, cancels, retries, requeues, scheduled jobs and a restore."""

from __future__ import annotations

import random

from jq_tool.core.model import (
    Cancel,
    Expire,
    Fail,
    JobState,
    Lease,
    LeaseResult,
    NewJob,
    Requeue,
    Submit,
)
from jq_tool.core.state_machine import StateMachine, StateMachineConfig

T0 = 1_700_000_000_000


def _oldest_by_scan(machine: StateMachine, queue: str) -> int | None:
    now = machine._now
    times = [
        job.run_at
        for job in machine._jobs.values()
        if job.queue == queue and job.state is JobState.READY and job.run_at <= now
    ]
    return min(times) if times else None


def test_empty_and_unknown_queues_have_none() -> None:
    machine = StateMachine()
    assert machine.oldest_runnable_since("nope") is None
    machine.apply(Submit(T0, [NewJob("a", run_at=T0 + 10_000)]))
    assert machine.oldest_runnable_since("default") is None  # only scheduled


def test_priority_does_not_hide_the_oldest_job() -> None:
    machine = StateMachine()
    machine.apply(Submit(T0, [NewJob("old", priority=0)]))
    machine.apply(Submit(T0 + 5, [NewJob("urgent", priority=9)]))
    # The lease-order heap's top is "urgent" (submitted later): the oldest is still "old".
    assert machine.oldest_runnable_since("default") == T0
    result = machine.apply(Lease(T0 + 6, "default", 30_000, ["l1"]))
    assert isinstance(result, LeaseResult) and result.jobs[0].id == "urgent"
    assert machine.oldest_runnable_since("default") == T0
    machine.apply(Lease(T0 + 7, "default", 30_000, ["l2"]))
    assert machine.oldest_runnable_since("default") is None


def test_scheduled_job_counts_from_its_run_at_and_cancel_drops_it() -> None:
    machine = StateMachine()
    machine.apply(Submit(T0, [NewJob("later", run_at=T0 + 1000)]))
    machine.apply(Expire(T0 + 2000))
    assert machine.oldest_runnable_since("default") == T0 + 1000
    machine.apply(Cancel(T0 + 2001, "later"))
    assert machine.oldest_runnable_since("default") is None


def test_random_histories_match_a_scan_and_survive_restore() -> None:
    rng = random.Random(17)
    machine = StateMachine(StateMachineConfig(retry_base_ms=5, retry_max_ms=50))
    now = T0
    ids = 0
    for _ in range(3000):
        now += rng.randrange(0, 20)
        move = rng.random()
        queue = rng.choice(["a", "b"])
        if move < 0.4:
            ids += 1
            delay = rng.choice([None, None, rng.randrange(1, 200)])
            job = NewJob(f"j{ids}", queue, priority=rng.randrange(3), max_retries=1,
                         run_at=None if delay is None else now + delay)  # fmt: skip
            machine.apply(Submit(now, [job]))
        elif move < 0.65:
            machine.apply(
                Lease(now, queue, 100, [f"l{now}-{i}" for i in range(rng.randrange(1, 4))])
            )
        elif move < 0.75:
            running = [j.id for j in machine._jobs.values() if j.state is JobState.RUNNING]
            if running:
                machine.apply(Fail(now, rng.choice(running), error="boom"))
        elif move < 0.85:
            machine.apply(Expire(now))
        elif move < 0.92:
            waiting = [j.id for j in machine._jobs.values() if j.state is JobState.READY]
            if waiting:
                machine.apply(Cancel(now, rng.choice(waiting)))
        else:
            dead = [j.id for j in machine._jobs.values() if j.state is JobState.DEAD]
            if dead:
                machine.apply(Requeue(now, rng.choice(dead)))
        for name in ("a", "b"):
            assert machine.oldest_runnable_since(name) == _oldest_by_scan(machine, name)
    restored = StateMachine()
    restored.restore(machine.snapshot())
    for name in ("a", "b"):
        assert restored.oldest_runnable_since(name) == _oldest_by_scan(machine, name)
