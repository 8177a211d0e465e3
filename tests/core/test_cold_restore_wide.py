"""A cold restore answers as a warm one, under every command and query (issue 20, widened).

tests/core/test_cold_restore.py drives a cold machine and a warm one with a worker's cycle
(single-job submits, leases, acks, fails, extends, cancels, purges) and compares a handful of
queries. This file drives them with every command the state machine takes, in the shapes that
reach the cold runs and the cold id dict in other ways: batches of jobs due long before every
cold job or in the future, duplicate ids (cold ones among them), idempotency and unique keys of
several owners, dependencies on cold and unknown parents, leases of several jobs and of unknown
queues, stale and missing lease ids, final failures, progress reports, bulk actions, dead-letter
groups, flow settings, schedules fired on time, late, twice and stale, purges with bounds, and
clock jumps that expire leases and bring retries back. Between the commands it compares nearly
every query the machine answers (counts, pages with cursors, searches, the jobs ahead of a job
in any state, latency, leases held, dead-letter groups, schedules, explanations), and in the
middle of the run it snapshots both, restores them again (cold and warm) and carries on: the
second cold restore must keep the two machines in step as the first did.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter

import msgspec
import pytest

from jq_tool.core.cold_index import ColdJobs
from jq_tool.core.explain import QueueActivity, explain
from jq_tool.core.model import (
    Ack,
    BulkCancel,
    BulkRequeue,
    Cancel,
    Command,
    CreateSchedule,
    DeadGroupAction,
    DeleteSchedule,
    Error,
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
)
from jq_tool.core.search import LABELS, JobFilter
from jq_tool.core.state_machine import StateMachine
from tests.core.test_cold_restore import KEEP_MS, backlog, without_index
from tests.core.test_determinism import QUEUES, SCHEDULES, T0, Event, Recorder

STEPS = 3000
OWNERS = ["", "team-a", "team-b"]
# Errors of a few fingerprints: the numbers and quoted names differ, the groups do not.
ERRORS = [
    "TimeoutError: read timed out after {n} ms",
    "ValueError: bad input {n}",
    "KeyError: 'user-{n}'",
    "boom",
]
# How often the driver picks each kind of command.
KINDS = {
    "lease": 20,
    "ack": 11,
    "fail": 6,
    "extend": 2,
    "progress": 3,
    "cancel": 5,
    "bulk_cancel": 1,
    "bulk_requeue": 2,
    "requeue": 2,
    "submit": 12,
    "expire": 7,
    "purge": 2,
    "set_queue": 2,
    "schedule": 2,
    "fire": 3,
    "dead_group": 2,
}
# Now and then the workers catch up (more of them, taking many jobs a lease) and drain the
# queues past their cold jobs: only then does a `since` run reach the cold jobs that came back.
DRAINING = {kind: 1 for kind in KINDS} | {"lease": 30, "ack": 14, "fail": 8, "expire": 6}


class WideDriver:
    """Chooses each next command from what a machine shows (the warm one: asking the cold one
    would take its jobs in outside the comparison), and from the ids, leases and firings it
    handed out. `cold_ids` are the backlog's ids: most of them cold after a restore."""

    def __init__(self, rng: random.Random, now: int, ids: list[str]) -> None:
        self.rng = rng
        self.now = now
        self.ids = ids
        self.cold_ids = list(ids)
        self.leased: list[Job] = []  # copies handed to "workers"; some go stale, on purpose
        self.next_lease = 0
        self.last_fire: FireSchedule | None = None
        self.draining = False

    def next_command(self, sm: StateMachine) -> Command:
        rng = self.rng
        self.now += rng.choice([0, 0, 1, 10, 200])
        if rng.random() < 0.01:
            self.draining = not self.draining
        weights = DRAINING if self.draining else KINDS
        kind = rng.choices(list(weights), list(weights.values()))[0]
        command: Command = getattr(self, kind)(sm)
        return command

    def took(self, command: Command, result: Result) -> None:
        if isinstance(result, LeaseResult):
            self.leased += result.jobs
        if isinstance(command, FireSchedule):
            self.last_fire = command

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    # -- a worker's cycle ------------------------------------------------------------------------

    def lease(self, sm: StateMachine) -> Command:
        rng = self.rng
        n = rng.randint(5, 30) if self.draining else rng.randint(1, 4)
        lease_ids = [f"L{self.next_lease + k}" for k in range(n)]
        self.next_lease += n
        queue = rng.choice(QUEUES) if rng.random() < 0.95 else "nowhere"
        worker = rng.choice([None, "w1", "w2"])
        return Lease(self.now, queue, rng.choice([300, 5000, 30_000]), lease_ids, worker)

    def _held(self, keep: bool) -> Job | None:
        """A leased job: mostly the newest, as a prompt worker's; sometimes an old (stale) one."""
        leased = self.leased
        if not leased:
            return None
        i = -1 if self.rng.random() < 0.7 else self.rng.randrange(len(leased))
        return leased[i] if keep else leased.pop(i)

    def _lease_id(self, job: Job) -> str | None:
        return self.rng.choices([job.lease_id, None, "stale"], [8, 1, 1])[0]

    def ack(self, sm: StateMachine) -> Command:
        job = self._held(keep=False)
        if job is None:
            return self.expire(sm)
        return Ack(self.now, job.id, self._lease_id(job), result=f"r{self.now}")

    def fail(self, sm: StateMachine) -> Command:
        job = self._held(keep=False)
        if job is None:
            return self.expire(sm)
        error = self.rng.choice(ERRORS).format(n=self.rng.randrange(1000))
        return Fail(self.now, job.id, self._lease_id(job), error, retry=self.rng.random() < 0.8)

    def extend(self, sm: StateMachine) -> Command:
        job = self._held(keep=True)
        if job is None:
            return self.expire(sm)
        return Extend(self.now, job.id, self.rng.choice([500, 3000]), self._lease_id(job))

    def progress(self, sm: StateMachine) -> Command:
        rng = self.rng
        running = sm.running()
        if running and rng.random() < 0.3:
            job = rng.choice(running)  # one running now, named by its lease or another's
            lease_id = rng.choice([job.lease_id, "stale"])
        else:
            held = self._held(keep=True)
            if held is None:
                return self.expire(sm)
            job, lease_id = held, self._lease_id(held)
        percent = rng.choice([0, 0.5, 1, 1.5, -0.25])  # the last two are refused
        return Progress(self.now, job.id, lease_id, percent, f"step {self.now}")

    # -- by id: jobs in a given state, cold ones, missing ones -------------------------------------

    def _pick(self, sm: StateMachine) -> str:
        rng = self.rng
        target = rng.choice(["READY", "RETRY", "WAITING", "DEAD", "cold", "cold", "missing"])
        if target == "missing":
            return self.new_id()
        if target == "cold":
            return rng.choice(self.cold_ids)
        page, _ = sm.list_jobs(state=JobState(target), queue=rng.choice([None, *QUEUES]), limit=5)
        return rng.choice(page).id if page else rng.choice(self.ids)

    def cancel(self, sm: StateMachine) -> Command:
        return Cancel(self.now, self._pick(sm))

    def bulk_cancel(self, sm: StateMachine) -> Command:
        return BulkCancel(self.now, [self._pick(sm) for _ in range(self.rng.randint(1, 6))])

    def _dead(self, sm: StateMachine) -> list[str]:
        page, _ = sm.list_jobs(state=JobState.DEAD, limit=4)
        return [job.id for job in page]

    def bulk_requeue(self, sm: StateMachine) -> Command:
        ids = self._dead(sm) + [self._pick(sm) for _ in range(self.rng.randint(0, 3))]
        return BulkRequeue(self.now, ids)

    def requeue(self, sm: StateMachine) -> Command:
        dead = self._dead(sm)
        return Requeue(self.now, dead[0] if dead and self.rng.random() < 0.7 else self._pick(sm))

    # -- submits ---------------------------------------------------------------------------------

    def submit(self, sm: StateMachine) -> Command:
        rng = self.rng
        now = self.now
        jobs: list[NewJob] = []
        for _ in range(rng.randint(1, 6)):
            r = rng.random()
            if r < 0.04:
                job_id = rng.choice(self.cold_ids)  # a duplicate id, most likely of a cold job
            elif r < 0.06 and jobs:
                job_id = jobs[0].id  # the same id twice in one batch
            else:
                job_id = self.new_id()
                self.ids.append(job_id)
            run_at = rng.choices(
                # Now, later, a little earlier, and long before every job of the backlog (the
                # first in `since` order, and in lease order among its priority).
                [None, now + rng.randint(1, 9000), now - rng.randint(1, 5000), T0 - 10**7],
                [70, 14, 12, 4],
            )[0]
            flow = self._flow(sm)
            owner = rng.choice(OWNERS)
            if flow is not None and flow.depends_on and rng.random() < 0.8:
                parent = sm.get(flow.depends_on[0])  # the parents' owner, mostly
                owner = owner if parent is None else parent.owner
            keyed = rng.random() < 0.25
            jobs.append(
                NewJob(
                    id=job_id,
                    queue=rng.choice(QUEUES),
                    payload=f"n{len(self.ids)}",
                    priority=rng.choice([0, 0, 0, 1, 5, -2]),
                    max_retries=rng.randint(0, 3),
                    run_at=run_at,
                    idempotency_key=f"k{rng.randint(0, 5)}" if keyed else None,
                    owner=owner,
                    fingerprint=rng.choice([None, "f1", "f2"]),
                    flow=flow,
                )
            )
        # A proposer on another node may lag the clock a little; a queue cap now and then.
        return Submit(now - rng.choice([0, 0, 0, 40]), jobs, KEEP_MS, rng.choice([0, 0, 0, 0, 3]))

    def _flow(self, sm: StateMachine) -> JobFlow | None:
        rng = self.rng
        if rng.random() < 0.7:
            return None
        parents = [
            rng.choices(
                [rng.choice(self.cold_ids), rng.choice(self.ids[-40:]), "no-such-parent"],
                [4, 4, 1],
            )[0]
            for _ in range(rng.choice([0, 1, 1, 2, 3]))
        ]
        return JobFlow(
            None if rng.random() < 0.4 else f"u{rng.randint(0, 15)}",
            rng.choice(list(UniqueScope)),
            rng.choice([0, 1000, 5000]),
            parents,
            rng.choice(list(ParentFailure)),
        )

    # -- the ticker's and the operator's commands --------------------------------------------------

    def expire(self, sm: StateMachine) -> Command:
        """At the next lease end or retry (exactly), after a jump, or now."""
        rng = self.rng
        r = rng.random()
        due = sm.next_due()
        if r < 0.3 and due is not None:
            self.now = max(self.now, due)
        elif r < 0.6:
            self.now += rng.choice([400, 6000, 40_000])
        return Expire(self.now)

    def purge(self, sm: StateMachine) -> Command:
        rng = self.rng
        now = self.now
        if rng.random() < 0.5:
            return Purge(now, now - rng.choice([0, 2000, 30_000]))
        return Purge(
            now, now - 60_000, rng.choice([0, 3, 20]), rng.choice([0, 200]),
            rng.choice([0, 10]), rng.choice([0, 2]), rng.choice([None, now - 5000]),
            rng.choice([0, 2]),
        )  # fmt: skip

    def set_queue(self, sm: StateMachine) -> Command:
        rng = self.rng
        return SetQueue(
            self.now,
            rng.choice([*QUEUES, "spare"]),
            # Mostly back to no limit: a queue paused or throttled for long leases nothing.
            rng.choice([None, True, False, False, False]),
            rng.choice([None, 0, 0, 2, 5]),
            rng.choice([None, 0, 0, 3, 10]),
            rng.choice([None, 0, 500, 2000]),  # a limit without a window is refused
            rng.choice([0, 0, 2]),
            rng.choice([None, 0, 1000, 60_000]),
        )

    def dead_group(self, sm: StateMachine) -> Command:
        rng = self.rng
        groups = sm.dead_groups()
        fp = rng.choice(groups).fingerprint if groups and rng.random() < 0.8 else "0" * 16
        action = rng.choice(list(DeadGroupAction))
        limit = rng.randint(1, 5)
        return SettleDeadGroup(self.now, fp, action, limit, self.now - rng.choice([0, 500]))

    def schedule(self, sm: StateMachine) -> Command:
        rng = self.rng
        now = self.now
        name = rng.choice(SCHEDULES)
        spec = ScheduleSpec(
            name,
            "* * * * * *",
            payload=f"from {name}",
            queue=rng.choice(QUEUES),
            priority=rng.choice([0, 5]),
            overlap=rng.choice(list(OverlapPolicy)),
            missed=rng.choice(list(MissedPolicy)),
        )
        existing = sm.get_schedule(name)
        first = now + rng.choice([1, 500, 3000])
        if existing is None:
            return CreateSchedule(now, spec, first, rng.random() < 0.2, rng.choice([0, 2]))
        if rng.random() < 0.2:
            return DeleteSchedule(now, name)
        version = existing.version - (rng.random() < 0.25)  # a stale version now and then
        return UpdateSchedule(now, spec, rng.random() < 0.3, first, version)

    def fire(self, sm: StateMachine) -> Command:
        """As a ticker fires: the due schedules; now and then late, stale or twice."""
        rng = self.rng
        if self.last_fire is not None and rng.random() < 0.1:
            return msgspec.structs.replace(self.last_fire, now=self.now)  # doubled
        due = sm.due_schedules(self.now, limit=1)
        name = due[0].spec.name if due else rng.choice(SCHEDULES)
        schedule = sm.get_schedule(name)
        at = schedule.next_due if schedule and schedule.next_due is not None else self.now
        if rng.random() < 0.1:
            at -= 1000  # stale
        batch = rng.choice([0, 0, 0, 2])
        job_id = rng.choices([self.new_id(), None, rng.choice(self.cold_ids)], [8, 1, 1])[0]
        if job_id is not None and job_id not in self.cold_ids:
            self.ids.append(job_id)
        self.now = max(self.now, at + 1000 * batch)
        return FireSchedule(self.now, name, at, at + 1000 * batch, at + 1000 * (batch + 1),
                            job_id, batch)  # fmt: skip


def answers(sm: StateMachine, rng: random.Random, ids: list[str], now: int) -> object:
    """What the queries say, as plain values (so that jobs and records compare by value)."""
    said: list[object] = [
        sm.job_count,
        sm.stats(),
        sm.stats(top=2),
        sm.held(),
        sm.idempotency_key_count,
        sm.over_bounds(20, 2000, 10, 5, 10),
        sm.next_due(),
        sm.running(),
        sm.queue_page(None, 2),
        sm.queue_page(rng.choice(QUEUES), 10),
        sm.queue_settings_page(),
        sm.schedule_page(None, 10),
        sm.schedule_page(rng.choice(SCHEDULES), 1),
        sm.next_schedule_due(),
        sm.due_schedules(now),
        sm.schedule_stats(),
        [sm.get_schedule(name) for name in SCHEDULES],
    ]
    for queue in [*QUEUES, "nowhere"]:
        said += [
            sm.oldest_runnable_since(queue),
            sm.has_runnable(queue, now),
            sm.has_runnable(queue, now + 5000),
            sm.running(queue),
            sm.running_in(queue),
            sm.queue_stats(queue),
            sm.queue_settings(queue),
            sm.lease_blocked_until(queue, now),
            sm.history(queue, 5, now // 60_000),
        ]
    groups = sm.dead_groups()
    said.append(groups)
    for summary in groups[:3]:
        group = sm.dead_group(summary.fingerprint)
        assert group is not None
        said.append((sorted(group.jobs), sorted(group.queues.items()), len(group.jobs)))
    activity = QueueActivity(
        rng.choice([None, now - 1000, now - 120_000]),
        rng.choice([0.0, 2.5]),
        rng.sample(QUEUES, 2),
    )
    for job_id in [*rng.sample(ids, 8), "no-such-job"]:
        job = sm.get(job_id)
        said.append(job)
        if job is not None:
            said += [sm.runnable_ahead(job, limit) for limit in (1, 3, 10_000)]
            said += [sm.awaited_parents(job_id), sm.dead_fingerprint(job_id)]
            said.append(explain(job, sm, activity, now))
    # Pages of a listing, a cursor from one to the next.
    state = rng.choice([None, None, *JobState])
    queue = rng.choice([None, *QUEUES])
    limit = rng.choice([1, 7, 50])
    cursor = None
    for _ in range(3):
        page, cursor = sm.list_jobs(state=state, queue=queue, limit=limit, cursor=cursor)
        said += [page, cursor]
        if cursor is None:
            break
    # A search walks every job (it takes every cold one in first): now and then only.
    if rng.random() < 0.15:
        where = JobFilter(
            frozenset(rng.sample(LABELS, rng.randint(1, 3))) if rng.random() < 0.7 else None,
            rng.choice([None, *QUEUES]),
            rng.choice([None, "a", "3f"]),
            rng.choice([None, "timeout", "BAD INPUT"]),
        )
        cursor = None
        for _ in range(2):
            page, cursor = sm.search_jobs(
                where, limit=rng.choice([3, 20]), cursor=cursor, scan_limit=rng.choice([None, 500])
            )
            said += [page, cursor]
            if cursor is None:
                break
    return msgspec.to_builtins(said)


def outcomes(command: Command, result: Result) -> list[str]:
    """What a command did, in words the coverage check below names."""
    name = type(command).__name__
    if isinstance(result, Error):
        return [f"{name} {result.code}"]
    said = [f"{name} {type(result).__name__}"]
    if isinstance(result, SubmitResult):
        for entry in result.entries:
            if isinstance(entry, Error):
                said.append(f"Submit entry {entry.code}")
            elif entry.unique:
                said.append("Submit entry unique")
            else:
                said.append("Submit entry duplicate" if entry.duplicate else "Submit entry new")
    if isinstance(result, FireResult):
        said.append("FireSchedule job" if result.job else "FireSchedule no job")
    changed = getattr(result, "changed", None) or getattr(result, "job_ids", None)
    if changed:
        said.append(f"{name} changed some")
    if isinstance(command, Fail) and not command.retry:
        said.append("Fail final")
    return said


# What every seed's run must have done, or the comparisons prove less than they claim.
COVERED = {
    "BulkRequeue changed some", "BulkCancel changed some", "Requeue JobResult",
    "Progress JobResult", "Progress invalid", "Progress lease_mismatch",
    "SetQueue QueueResult", "SetQueue invalid_state",
    "CreateSchedule ScheduleResult", "DeleteSchedule ScheduleResult",
    "UpdateSchedule ScheduleResult", "UpdateSchedule invalid_state",
    "FireSchedule job", "FireSchedule invalid_state",
    "SettleDeadGroup changed some", "SettleDeadGroup DeadGroupResult",
    "Submit entry new", "Submit entry unique", "Submit entry duplicate", "Submit entry invalid",
    "Submit entry unknown_parent", "Submit entry idempotency_key_reused",
    "Lease LeaseResult", "Ack JobResult", "Ack lease_mismatch", "Fail JobResult", "Fail final",
    "Extend JobResult", "Cancel JobResult", "Cancel not_found", "Cancel invalid_state",
    "Expire ExpireResult", "Purge PurgeResult",
}  # fmt: skip


def restore_both(cold: Recorder, warm: Recorder, data: bytes) -> None:
    """The cold machine from the snapshot, the warm one from it without the index."""
    cold.sm.restore(data)
    warm.sm.restore(without_index(data))
    assert type(warm.sm._jobs) is dict


def drive_both(seed: int, steps: int) -> tuple[Counter[str], list[Event]]:
    """Restore a worked-on backlog cold and warm, drive both with `steps` commands (a snapshot
    and a second restore twice on the way) and compare everything; what the commands did, and
    the transition events."""
    rng = random.Random(seed)
    source, now, ids = backlog(rng, 3000)
    driver = WideDriver(rng, now, ids)
    for _ in range(300):  # schedules, settings, dead groups, waiting jobs, held keys
        command = driver.next_command(source)
        driver.took(command, source.apply(command))
    data = source.snapshot()
    cold, warm = Recorder(), Recorder()
    restore_both(cold, warm, data)
    assert isinstance(cold.sm._jobs, ColdJobs) and cold.sm._jobs.cold > 1000
    assert cold.sm.snapshot() == warm.sm.snapshot() == data

    warm_every = rng.choice([0.0, 0.05, 0.3])  # never, now and then, often
    restarts = set(rng.sample(range(200, steps), 2))
    seen: Counter[str] = Counter()
    cold_again = 0
    for step in range(steps):
        if step in restarts:
            data = cold.sm.snapshot()
            assert data == warm.sm.snapshot()
            assert cold.events == warm.events
            restore_both(cold, warm, data)
            cold_again += isinstance(cold.sm._jobs, ColdJobs) and cold.sm._jobs.cold > 0
        command = driver.next_command(warm.sm)
        if rng.random() < warm_every:
            cold.sm.warm_step(rng.choice([1, 13, 400]))
        if rng.random() < 0.05:
            seed_asked = rng.random()
            said = answers(cold.sm, random.Random(seed_asked), driver.ids, driver.now)
            assert said == answers(warm.sm, random.Random(seed_asked), driver.ids, driver.now)
        result = warm.sm.apply(command)
        assert cold.sm.apply(command) == result, (step, command)
        driver.took(command, result)
        seen.update(outcomes(command, result))
    assert cold.events == warm.events
    assert cold.sm.snapshot() == warm.sm.snapshot()
    assert cold_again == 2  # each restore in the middle left jobs cold
    return seen, cold.events


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_cold_machine_answers_as_a_warm_one_to_every_command_and_query(seed: int) -> None:
    seen, events = drive_both(seed, STEPS)
    missed = COVERED - set(seen)
    assert not missed, sorted(missed)
    assert any(e[1] is JobState.READY and e[2] is JobState.WAITING for e in events)
    assert any(e[1] is JobState.CANCELLED and e[2] is JobState.WAITING for e in events)
    assert any(e[1] is JobState.READY and e[2] is JobState.RETRY for e in events)
    assert any(e[1] is JobState.RETRY and e[2] is JobState.RUNNING for e in events)
