"""Determinism: the same command log gives the same state, byte for byte, on every replica.

A seeded `random.Random` plays a busy queue (submits with priorities, schedules and idempotency
keys, leases, acks, failures, extends, cancels, requeues, clock ticks with expiry, purges, and
schedules: created, changed, paused, deleted and fired as a ticker fires them, with stale and
doubled firings among them) against a driver machine and records the commands it applied.
Fresh machines then replay that log, directly, through the WAL's msgpack encoding, and across a
snapshot/restore in the middle; all must agree with the driver on every result, every transition
event and every snapshot.
"""

from __future__ import annotations

import random

import pytest

from jq_tool.core.model import (
    Ack,
    BulkCancel,
    BulkRequeue,
    Cancel,
    Command,
    CreateSchedule,
    DeadGroupAction,
    DeleteSchedule,
    Expire,
    Extend,
    Fail,
    FireResult,
    FireSchedule,
    Job,
    JobFlow,
    JobState,
    Lease,
    LeaseResult,
    MissedPolicy,
    NewJob,
    OverlapPolicy,
    ParentFailure,
    Progress,
    Purge,
    Requeue,
    Result,
    ScheduleSpec,
    SetQueue,
    SettleDeadGroup,
    Submit,
    SubmitResult,
    UniqueScope,
    UpdateSchedule,
    decode_command,
    encode_command,
)
from jq_tool.core.state_machine import StateMachine, StateMachineConfig

CONFIG = StateMachineConfig(retry_base_ms=200, retry_max_ms=5000)
KEEP_MS = 20_000  # how long idempotency keys are remembered (in each Submit)
T0 = 1_700_000_000_000
QUEUES = ["default", "emails", "reports", "zz-low"]
KINDS = [
    "submit", "lease", "ack", "fail", "extend", "cancel", "requeue", "expire", "purge",
    "schedule", "fire",
    "progress",
    "dead_group",
    "set_queue",
]  # fmt: skip
WEIGHTS = [18, 20, 16, 7, 4, 3, 2, 10, 2, 2, 8, 2, 1, 2]
SCHEDULES = ["hourly", "reports", "cleanup"]
CHECKPOINT = 1000

Event = tuple[str, JobState, JobState | None, int, int]


class Recorder:
    """A machine plus the transition events it reported, as plain values."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.sm = StateMachine(CONFIG, on_transition=self.on_transition)

    def on_transition(self, job: Job, previous: JobState | None, now: int) -> None:
        self.events.append((job.id, job.state, previous, job.attempts, now))


def record_log(seed: int, length: int) -> tuple[list[Command], list[Result], list[bytes], Recorder]:
    """Drive a machine with `length` random commands; returns the log, the results, the
    snapshots taken every CHECKPOINT commands and the driver."""
    rng = random.Random(seed)
    driver = Recorder()
    sm = driver.sm
    now = T0
    next_job = 0
    next_lease = 0
    leased: list[Job] = []  # copies handed to "workers"; some go stale, on purpose
    log: list[Command] = []
    results: list[Result] = []
    snapshots: list[bytes] = []
    for i in range(length):
        now += rng.choice([0, 0, 1, 3, 20, 150, 600])
        kind = rng.choices(KINDS, WEIGHTS)[0]
        command: Command
        if kind == "submit":
            jobs = []
            for _ in range(rng.randint(1, 8)):
                jobs.append(
                    NewJob(
                        id=f"job-{next_job}" if rng.random() > 0.01 else "job-0",
                        queue=rng.choice(QUEUES),
                        payload=f"payload {next_job} " + "x" * rng.randint(0, 40),
                        priority=rng.choice([0, 0, 0, 1, 5, -2]),
                        max_retries=rng.randint(0, 4),
                        run_at=None if rng.random() < 0.8 else now + rng.randint(-500, 8000),
                        idempotency_key=None if rng.random() < 0.9 else f"k{rng.randint(0, 60)}",
                        owner=rng.choice(["", "team-a", "team-b"]),
                        fingerprint=rng.choice([None, "f1", "f2"]),
                        flow=_job_flow(rng, next_job),
                    )
                )
                next_job += 1
            # A proposer on another node may lag the clock a little.
            command = Submit(now - rng.choice([0, 0, 0, 40]), jobs, KEEP_MS, rng.choice([0, 3]))
        elif kind == "lease":
            n = rng.randint(1, 4)
            command = Lease(
                now,
                rng.choice(QUEUES),
                rng.choice([300, 5000, 30_000]),
                [f"lease-{next_lease + k}" for k in range(n)],
            )
            next_lease += n
        elif kind in ("ack", "fail", "extend") and leased:
            # Mostly the newest lease, as a prompt worker would; sometimes an old, stale one.
            job = leased.pop(-1 if rng.random() < 0.8 else rng.randrange(len(leased)))
            lease_id = job.lease_id if rng.random() < 0.9 else None
            if kind == "ack":
                command = Ack(now, job.id, lease_id, result=f"r{i}")
            elif kind == "fail":
                command = Fail(now, job.id, lease_id, error=f"e{i}")
            else:
                command = Extend(now, job.id, rng.choice([500, 3000]), lease_id)
                leased.append(job)
        elif kind in ("cancel", "requeue") and next_job:
            # Half the time a job the command applies to, found through the queries.
            wanted = JobState.READY if kind == "cancel" else JobState.DEAD
            candidates, _ = sm.list_jobs(state=wanted, limit=5)
            if candidates and rng.random() < 0.5:
                job_id = rng.choice(candidates).id
            else:
                job_id = f"job-{rng.randrange(next_job)}"
            command = Cancel(now, job_id) if kind == "cancel" else Requeue(now, job_id)
            if rng.random() < 0.2:  # sometimes as a chunk of a bulk action, with others
                ids = [job_id, *(c.id for c in candidates)]
                command = BulkCancel(now, ids) if kind == "cancel" else BulkRequeue(now, ids)
        elif kind == "purge":
            if rng.random() < 0.5:
                command = Purge(now, now - rng.choice([0, 2000, 30_000]))
            else:  # issue 21: bounds on the finished and DEAD jobs held
                command = Purge(
                    now, now - 60_000, rng.choice([0, 3, 20]), rng.choice([0, 200]),
                    rng.choice([0, 10]), rng.choice([0, 2]), None, rng.choice([0, 2]),
                )  # fmt: skip
        elif kind == "schedule":
            name = rng.choice(SCHEDULES)
            spec = ScheduleSpec(
                name,
                "* * * * * *",
                payload=f"from {name}",
                queue=rng.choice(QUEUES),
                overlap=rng.choice(list(OverlapPolicy)),
                missed=rng.choice(list(MissedPolicy)),
            )
            existing = sm.get_schedule(name)
            first = now + rng.choice([1, 500, 3000])
            if existing is None:
                command = CreateSchedule(now, spec, first, rng.random() < 0.2, 2)
            elif rng.random() < 0.2:
                command = DeleteSchedule(now, name)
            else:
                version = existing.version - (rng.random() < 0.1)
                command = UpdateSchedule(now, spec, rng.random() < 0.3, first, version)
        elif kind == "fire":
            # As a ticker fires: the due schedules, with a stale or doubled firing now and then.
            due = sm.due_schedules(now, limit=1)
            name = due[0].spec.name if due else rng.choice(SCHEDULES)
            schedule = sm.get_schedule(name)
            at = schedule.next_due if schedule and schedule.next_due is not None else now
            if rng.random() < 0.1:
                at -= 1000
            batch = rng.choice([0, 0, 0, 2])
            job_id = f"job-{next_job}" if rng.random() > 0.1 else None
            next_job += 1
            now = max(now, at + 1000 * batch)  # a ticker fires what has come
            command = FireSchedule(now, name, at, at + 1000 * batch, at + 1000 * (batch + 1),
                                   job_id, batch)  # fmt: skip
        elif kind == "set_queue":
            # Flow control (issue 18): pause, concurrency and rate limits come and go.
            command = SetQueue(
                now,
                rng.choice(QUEUES),
                rng.choice([None, True, False, False]),
                rng.choice([None, 0, 2, 5]),
                rng.choice([None, 0, 3, 10]),
                rng.choice([None, 500, 2000]),
                rng.choice([0, 3]),
            )
        elif kind == "progress" and leased:
            job = leased[-1]
            command = Progress(now, job.id, job.lease_id if rng.random() < 0.9 else "stale",
                               rng.choice([0, 0.25, 1, 1.5]), f"step {i}")  # fmt: skip
        elif kind == "dead_group":
            groups = sm.dead_groups()
            fp = rng.choice(groups).fingerprint if groups else "0" * 16
            action = rng.choice(list(DeadGroupAction))
            command = SettleDeadGroup(
                now, fp, action, rng.randint(1, 5), now - rng.choice([0, 500])
            )
        else:
            command = Expire(now)
        result = sm.apply(command)
        if isinstance(result, LeaseResult):
            leased.extend(result.jobs)
        log.append(command)
        results.append(result)
        if (i + 1) % CHECKPOINT == 0:
            snapshots.append(sm.snapshot())
    return log, results, snapshots, driver


def _job_flow(rng: random.Random, next_job: int) -> JobFlow | None:
    """A unique key now and then, and parents among the last jobs submitted now and then."""
    if rng.random() < 0.8 or next_job < 5:
        return None
    parents = [f"job-{next_job - rng.randint(1, 30)}" for _ in range(rng.randint(0, 3))]
    return JobFlow(
        None if rng.random() < 0.5 else f"u{rng.randint(0, 20)}",
        rng.choice(list(UniqueScope)),
        rng.choice([1000, 5000]),
        [p for p in parents if p != "job--1"],
        rng.choice(list(ParentFailure)),
    )


@pytest.fixture(scope="module", params=[7, 2026])
def recorded(request: pytest.FixtureRequest) -> tuple[list[Command], list[Result], list[bytes]]:
    log, results, snapshots, driver = record_log(request.param, 12_000)
    stats = driver.sm.stats()
    # The log really exercised the machine, or the comparisons below prove little.
    assert stats.counters.acked > 500 and stats.counters.dead > 20
    assert stats.counters.expired > 100 and stats.counters.purged > 100
    assert stats.counters.requeued > 0 and stats.counters.cancelled > 0
    assert stats.totals.scheduled + stats.totals.retry + stats.totals.running > 0
    fired = [r for r in results if isinstance(r, FireResult)]
    assert sum(r.job is not None for r in fired) > 50  # jobs made by schedules
    assert any(r.overlap_skipped for r in fired) and any(r.schedule.missed for r in fired)
    assert len(fired) < sum(isinstance(c, FireSchedule) for c in log)  # some were refused
    # Flow control was in play: waiting children released and cancelled, unique hits.
    submitted = [e for r in results if isinstance(r, SubmitResult) for e in r.entries]
    assert any(getattr(e, "unique", False) for e in submitted)
    events = driver.events
    assert any(e[1] is JobState.READY and e[2] is JobState.WAITING for e in events)
    assert any(e[1] is JobState.CANCELLED and e[2] is JobState.WAITING for e in events)
    return log, results, snapshots, driver.events  # type: ignore[return-value]


def replay(log: list[Command]) -> tuple[list[Result], list[bytes], list[Event]]:
    replica = Recorder()
    results = []
    snapshots = []
    for i, command in enumerate(log):
        results.append(replica.sm.apply(command))
        if (i + 1) % CHECKPOINT == 0:
            snapshots.append(replica.sm.snapshot())
    return results, snapshots, replica.events


def test_replaying_the_log_gives_identical_results_events_and_snapshots(recorded) -> None:  # type: ignore[no-untyped-def]
    log, results, snapshots, events = recorded
    replayed_results, replayed_snapshots, replayed_events = replay(log)
    assert replayed_results == results
    assert replayed_events == events
    assert replayed_snapshots == snapshots


def test_replaying_the_wal_encoding_gives_identical_snapshots(recorded) -> None:  # type: ignore[no-untyped-def]
    log, results, snapshots, events = recorded
    decoded = [decode_command(encode_command(command)) for command in log]
    replayed_results, replayed_snapshots, replayed_events = replay(decoded)
    assert replayed_snapshots == snapshots
    assert replayed_results == results
    assert replayed_events == events


@pytest.mark.parametrize("cut", [1, 4321, 9000])
def test_restore_then_continue_is_the_same_as_never_restoring(recorded, cut: int) -> None:  # type: ignore[no-untyped-def]
    log, results, snapshots, events = recorded
    first = Recorder()
    for command in log[:cut]:
        first.sm.apply(command)
    second = Recorder()
    second.sm.restore(first.sm.snapshot())
    assert second.sm.snapshot() == first.sm.snapshot()
    assert second.sm.stats() == first.sm.stats()
    assert second.sm.dead_groups() == first.sm.dead_groups()
    assert second.sm.next_due() == first.sm.next_due()
    continued = [second.sm.apply(command) for command in log[cut:]]
    assert continued == results[cut:]
    assert second.events == events[len(first.events) :]
    assert second.sm.snapshot() == snapshots[-1]
