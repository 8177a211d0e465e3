"""Hypothesis drives the StateMachine and a small, obviously correct reference model side by side.

The model keeps jobs in a plain dict and answers every question with a scan and sorted(): no
heaps, no incremental counts. After every step both must agree on the result of the command, on
every job, on the stats, on next_due and on has_runnable. A snapshot/restore in the middle of a
run must change nothing.

Schedules are in the model too: create (retried or not, capped), update with a version, delete,
and firings whose due times are mostly the schedule's next one and sometimes stale, doubled or
of a schedule that is paused or gone; both must agree on every schedule, the jobs the firings
make (with the overlap policy) and the due schedules.
"""

from __future__ import annotations

from copy import copy

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from jq_tool.core.backoff import retry_backoff_ms
from jq_tool.core.model import (
    FINISHED_STATES,
    Ack,
    Attempt,
    BulkCancel,
    BulkRequeue,
    BulkResult,
    Cancel,
    Command,
    CreateSchedule,
    DeleteSchedule,
    Error,
    ErrorCode,
    Expire,
    ExpireResult,
    Extend,
    Fail,
    FireResult,
    FireSchedule,
    Job,
    JobResult,
    JobState,
    Lease,
    LeaseResult,
    MissedPolicy,
    NewJob,
    OverlapPolicy,
    Purge,
    PurgeResult,
    Requeue,
    Result,
    Schedule,
    ScheduleResult,
    ScheduleRun,
    ScheduleSpec,
    Submit,
    SubmitResult,
    Submitted,
    UpdateSchedule,
)
from jq_tool.core.state_machine import (
    Counters,
    QueueStats,
    StateMachine,
    StateMachineConfig,
    Stats,
)

CONFIG = StateMachineConfig(retry_base_ms=100, retry_max_ms=1000)
KEEP_MS = 3000  # how long idempotency keys are remembered (in each Submit)
QUEUES = ["a", "b", "c"]
MAX_QUEUES = 2  # submits that carry a cap: the three queues do not fit
SCHEDULES = ["s1", "s2", "s3"]
MAX_SCHEDULES = 2  # creates that carry a cap: the three schedules do not fit
R, RU, RE, D, A, C = (
    JobState.READY,
    JobState.RUNNING,
    JobState.RETRY,
    JobState.DEAD,
    JobState.ACKED,
    JobState.CANCELLED,
)


class ReferenceQueue:
    """The queue semantics, written the slow and obvious way."""

    def __init__(self, config: StateMachineConfig) -> None:
        self.config = config
        self.now = 0
        self.seq = 0
        self.jobs: dict[str, Job] = {}
        # (owner, key) -> (job id, fingerprint, keep end)
        self.idempotency: dict[tuple[str, str], tuple[str, str | None, int]] = {}
        self.counters = Counters()
        self.schedules: dict[str, Schedule] = {}

    def advance(self, now: int) -> int:
        """Returns how many scheduled READY jobs the new clock makes due."""
        before = self.now
        self.now = max(self.now, now)
        return sum(1 for j in self.jobs.values() if j.state is R and before < j.run_at <= self.now)

    def apply(self, command: Command) -> Result:
        if isinstance(command, Submit):
            return self.submit(command)
        if isinstance(command, Lease):
            return self.lease(command)
        if isinstance(command, Expire):
            return self.expire(command)
        if isinstance(command, Purge):
            return self.purge(command)
        if isinstance(command, (CreateSchedule, UpdateSchedule, DeleteSchedule, FireSchedule)):
            return self.schedule_command(command)
        if isinstance(command, (BulkRequeue, BulkCancel)):
            # A chunk: each job as its single command would go, the others skipped.
            self.advance(command.now)
            single = Requeue if isinstance(command, BulkRequeue) else Cancel
            return BulkResult(
                [
                    j
                    for j in command.job_ids
                    if not isinstance(self.apply(single(command.now, j)), Error)
                ]
            )
        job = self.jobs.get(command.job_id)
        if job is None:
            return Error(ErrorCode.NOT_FOUND, "")
        if isinstance(command, (Ack, Fail, Extend)):
            if job.state is not RU:
                return Error(ErrorCode.INVALID_STATE, "")
            if command.lease_id is not None and command.lease_id != job.lease_id:
                return Error(ErrorCode.LEASE_MISMATCH, "")
        if isinstance(command, Cancel) and job.state not in (R, RE):
            return Error(ErrorCode.INVALID_STATE, "")
        if isinstance(command, Requeue) and job.state is not D:
            return Error(ErrorCode.INVALID_STATE, "")
        self.advance(command.now)
        now = command.now
        if isinstance(command, Ack):
            job.state, job.result, job.updated_at = A, command.result, now
            job.lease_id = job.lease_until = job.result_error = None
            self.counters.acked += 1
        elif isinstance(command, Fail):
            self.fail(job, command.error, now, "failed")
        elif isinstance(command, Extend):
            job.lease_until = now + command.lease_ms
        elif isinstance(command, Cancel):
            job.state, job.updated_at = C, now
            self.counters.cancelled += 1
        elif isinstance(command, Requeue):
            job.state, job.attempts, job.run_at, job.updated_at = R, 0, now, now
            self.counters.requeued += 1
        return JobResult(job=copy(job))

    def submit(self, command: Submit) -> Result:
        now = command.now
        self.advance(now)
        entries: list[Submitted | Error] = []
        for nj in command.jobs:
            key = nj.idempotency_key
            remembered = self.idempotency.get((nj.owner, key)) if key is not None else None
            if remembered is not None and self.now < remembered[2]:
                if remembered[1] in (None, nj.fingerprint) or nj.fingerprint is None:
                    entries.append(Submitted(remembered[0], duplicate=True))
                else:
                    entries.append(Error(ErrorCode.IDEMPOTENCY_KEY_REUSED, ""))
                continue
            if nj.id in self.jobs:
                entries.append(Error(ErrorCode.INVALID, ""))
                continue
            held = {j.queue for j in self.jobs.values()}
            if command.max_queues and nj.queue not in held and len(held) >= command.max_queues:
                entries.append(Error(ErrorCode.TOO_MANY_QUEUES, ""))
                continue
            self.seq += 1
            run_at = now if nj.run_at is None else nj.run_at
            self.jobs[nj.id] = Job(
                nj.id, nj.queue, nj.payload, nj.priority, nj.max_retries, 0, R, now, run_at,
                self.seq, idempotency_key=key, updated_at=now, owner=nj.owner,
            )  # fmt: skip
            if key is not None:
                self.idempotency[(nj.owner, key)] = (nj.id, nj.fingerprint, now + KEEP_MS)
            self.counters.submitted += 1
            entries.append(Submitted(nj.id))
        return SubmitResult(entries=entries)

    def promote_retries(self, queue: str | None, now: int) -> int:
        due = [
            j
            for j in self.jobs.values()
            if j.state is RE and j.run_at <= self.now and queue in (None, j.queue)
        ]
        for job in due:
            job.state, job.updated_at = R, now
        return len(due)

    def lease(self, command: Lease) -> Result:
        now = command.now
        self.advance(now)
        if not command.lease_ids:
            return LeaseResult(jobs=[])
        self.promote_retries(command.queue, now)
        runnable = sorted(
            (
                j
                for j in self.jobs.values()
                if j.state is R and j.queue == command.queue and j.run_at <= self.now
            ),
            key=lambda j: (-j.priority, j.run_at, j.seq),
        )
        leased = []
        for job, lease_id in zip(runnable, command.lease_ids, strict=False):
            job.state, job.attempts, job.updated_at = RU, job.attempts + 1, now
            job.lease_id, job.lease_until = lease_id, now + command.lease_ms
            job.worker, job.leased_at = command.worker, now
            leased.append(copy(job))
        return LeaseResult(jobs=leased)

    def fail(self, job: Job, error: str, now: int, outcome: str) -> None:
        # The attempt joins the history (the last 10), its worker and lease time cleared.
        ended = Attempt(job.attempts, job.worker, job.leased_at, now, outcome, error)
        job.history = ([*(job.history or []), ended])[-10:]
        job.worker = job.leased_at = None
        job.result_error, job.updated_at = error, now
        job.lease_id = job.lease_until = None
        self.counters.failed += 1
        if job.attempts > job.max_retries:
            job.state = D
            self.counters.dead += 1
        else:
            job.state = RE
            job.run_at = now + retry_backoff_ms(
                job.id, job.attempts, self.config.retry_base_ms, self.config.retry_max_ms
            )
            self.counters.retried += 1

    def expire(self, command: Expire) -> Result:
        promoted = self.advance(command.now)
        expired = [
            j
            for j in self.jobs.values()
            if j.state is RU and j.lease_until is not None and j.lease_until <= self.now
        ]
        for job in expired:
            self.fail(job, "lease expired", command.now, "expired")
        self.counters.expired += len(expired)
        promoted += self.promote_retries(None, command.now)
        return ExpireResult(expired=len(expired), promoted=promoted)

    def purge(self, command: Purge) -> Result:
        self.advance(command.now)
        gone = [
            j.id
            for j in self.jobs.values()
            if j.state in FINISHED_STATES and j.updated_at <= command.finished_before
        ]
        for job_id in gone:
            del self.jobs[job_id]
        self.counters.purged += len(gone)
        keys = [k for k, (_, _, end) in self.idempotency.items() if end <= self.now]
        for key in keys:
            del self.idempotency[key]
        return PurgeResult(jobs=len(gone), idempotency_keys=len(keys))

    def schedule_command(
        self, command: CreateSchedule | UpdateSchedule | DeleteSchedule | FireSchedule
    ) -> Result:
        now = command.now
        if isinstance(command, CreateSchedule):
            name = command.spec.name
            if name in self.schedules:
                if self.schedules[name].spec == command.spec:
                    return ScheduleResult(copy(self.schedules[name]), created=False)
                return Error(ErrorCode.SCHEDULE_EXISTS, "")
            if command.max_schedules and len(self.schedules) >= command.max_schedules:
                return Error(ErrorCode.TOO_MANY_SCHEDULES, "")
            self.advance(now)
            self.schedules[name] = Schedule(
                command.spec, command.paused, now, now, 1, command.next_due
            )
            return ScheduleResult(copy(self.schedules[name]), created=True)
        name = command.spec.name if isinstance(command, UpdateSchedule) else command.name
        schedule = self.schedules.get(name)
        if schedule is None:
            return Error(ErrorCode.NOT_FOUND, "")
        if isinstance(command, DeleteSchedule):
            self.advance(now)
            del self.schedules[name]
            return ScheduleResult(copy(schedule))
        if isinstance(command, UpdateSchedule):
            if command.version != schedule.version or (
                command.next_due is not None
                and schedule.last_due is not None
                and command.next_due <= schedule.last_due
            ):
                return Error(ErrorCode.INVALID_STATE, "")
            self.advance(now)
            schedule.spec, schedule.paused = command.spec, command.paused
            schedule.next_due, schedule.updated_at = command.next_due, now
            schedule.version += 1
            return ScheduleResult(copy(schedule))
        if schedule.paused or schedule.next_due != command.due:
            return Error(ErrorCode.INVALID_STATE, "")
        if command.job_id is not None and command.job_id in self.jobs:
            return Error(ErrorCode.INVALID, "")
        self.advance(now)
        job = None
        skipped = False
        if command.job_id is not None:
            last = self.jobs.get(schedule.last_job or "")
            if (
                schedule.spec.overlap is OverlapPolicy.SKIP
                and last is not None
                and last.state not in FINISHED_STATES
            ):
                skipped = True
                schedule.skipped += 1
            else:
                spec = schedule.spec
                self.submit(
                    Submit(
                        now,
                        [
                            NewJob(
                                command.job_id,
                                spec.queue,
                                spec.payload,
                                spec.priority,
                                spec.max_retries,
                            )
                        ],
                    )  # fmt: skip
                )
                job = self.jobs[command.job_id]
                job.scheduled_by = ScheduleRun(name, command.last_due)
                schedule.last_job = job.id
                schedule.runs += 1
        schedule.missed += command.missed
        schedule.last_due, schedule.next_due = command.last_due, command.next_due
        schedule.last_fired_at = now
        return FireResult(copy(schedule), None if job is None else copy(job), skipped)

    def due_schedules(self, now: int) -> list[str]:
        due = [
            (s.next_due, name)
            for name, s in self.schedules.items()
            if not s.paused and s.next_due is not None and s.next_due <= now
        ]
        return [name for _, name in sorted(due)]

    def next_schedule_due(self) -> int | None:
        times = [s.next_due for s in self.schedules.values() if not s.paused]
        return min((t for t in times if t is not None), default=None)

    # -- queries

    def stats(self) -> Stats:
        def count(jobs: list[Job]) -> QueueStats:
            def n(state: JobState) -> int:
                return sum(1 for j in jobs if j.state is state)

            return QueueStats(
                runnable=sum(1 for j in jobs if j.state is R and j.run_at <= self.now),
                running=n(RU),
                scheduled=sum(1 for j in jobs if j.state is R and j.run_at > self.now),
                retry=n(RE),
                dead=n(D),
                acked=n(A),
                cancelled=n(C),
                total=len(jobs),
            )

        names = sorted({j.queue for j in self.jobs.values()})
        return Stats(
            totals=count(list(self.jobs.values())),
            queues={q: count([j for j in self.jobs.values() if j.queue == q]) for q in names},
            counters=copy(self.counters),
            queue_count=len(names),
        )

    def next_due(self) -> int | None:
        times = [j.lease_until for j in self.jobs.values() if j.state is RU]
        times += [j.run_at for j in self.jobs.values() if j.state is RE]
        times += [j.run_at for j in self.jobs.values() if j.state is R and j.run_at > self.now]
        return min(t for t in times if t is not None) if times else None

    def has_runnable(self, queue: str, now: int) -> bool:
        cutoff = max(self.now, now)
        return any(
            j.queue == queue and j.state in (R, RE) and j.run_at <= cutoff
            for j in self.jobs.values()
        )


def same_result(actual: Result, expected: Result) -> bool:
    """Errors agree on their code; everything else must be equal."""
    if isinstance(expected, SubmitResult) and isinstance(actual, SubmitResult):
        return len(actual.entries) == len(expected.entries) and all(
            same_result(a, e)  # type: ignore[arg-type]
            for a, e in zip(actual.entries, expected.entries, strict=True)
        )
    if isinstance(expected, Error):
        return isinstance(actual, Error) and actual.code == expected.code
    return actual == expected


job_refs = st.integers(min_value=0, max_value=40)
lease_refs = st.sampled_from(["current", "none", "stale"])
settle_outcomes = st.sampled_from(["ack", "fail", "extend", "keep"])


class StateMachineAgainstReference(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sm = StateMachine(CONFIG)
        self.ref = ReferenceQueue(CONFIG)
        self.now = 1_000
        self.next_job = 0
        self.next_lease = 0

    def check(self, command: Command) -> Result:
        expected = self.ref.apply(command)
        actual = self.sm.apply(command)
        assert same_result(actual, expected), (command, actual, expected)
        return actual

    def job_id(self, ref: int, *likely: JobState) -> str:
        """A job the command will probably succeed on (in one of `likely` states) two times out
        of three, any known job or an unknown id otherwise."""
        if ref >= 38:
            return f"unknown-{ref}"
        likely_ids = [job_id for job_id, job in self.ref.jobs.items() if job.state in likely]
        known = likely_ids if likely_ids and ref % 3 else list(self.ref.jobs)
        return known[ref % len(known)] if known else f"unknown-{ref}"

    def lease_id(self, job_id: str, which: str) -> str | None:
        if which == "none":
            return None
        job = self.ref.jobs.get(job_id)
        if which == "current" and job is not None and job.lease_id is not None:
            return job.lease_id
        return "stale-lease"

    @rule(dt=st.integers(min_value=0, max_value=800))
    def tick(self, dt: int) -> None:
        self.now += dt

    @rule(
        specs=st.lists(
            st.tuples(
                st.sampled_from(QUEUES),
                st.integers(min_value=-1, max_value=2),
                st.integers(min_value=0, max_value=3),
                st.one_of(st.none(), st.integers(min_value=-500, max_value=1500)),
                st.sampled_from([None, None, None, None, "k1", "k2", "k3"]),
                st.integers(min_value=0, max_value=9),  # 0: reuse a known job id
                st.sampled_from(["", "o1", "o2"]),  # owner
                st.sampled_from([None, "f1", "f1", "f2"]),  # request fingerprint
            ),
            min_size=1,
            max_size=5,
        ),
        skew=st.integers(min_value=-300, max_value=0),
        capped=st.booleans(),
    )
    def submit(
        self,
        specs: list[tuple[str, int, int, int | None, str | None, int, str, str | None]],
        skew: int,
        capped: bool,
    ) -> None:
        jobs = []
        for queue, priority, max_retries, run_at, key, reuse_id, owner, print_ in specs:
            if reuse_id == 0 and self.ref.jobs:
                job_id = next(iter(self.ref.jobs))
            else:
                job_id = f"j{self.next_job}"
                self.next_job += 1
            at = None if run_at is None else self.now + run_at
            jobs.append(
                NewJob(job_id, queue, f"p{job_id}", priority, max_retries, at, key, owner, print_)
            )
        # A command's clock may lag the machine's (another node proposed it).
        cap = MAX_QUEUES if capped else 0
        self.check(Submit(max(self.now + skew, 0), jobs, KEEP_MS, cap))

    @rule(
        queue=st.sampled_from(QUEUES),
        n=st.integers(min_value=0, max_value=3),
        lease_ms=st.integers(min_value=-10, max_value=3000),
        worker=st.sampled_from([None, "host:1:a", "host:2:b"]),
    )
    def lease(self, queue: str, n: int, lease_ms: int, worker: str | None) -> None:
        ids = [f"L{self.next_lease + i}" for i in range(n)]
        self.next_lease += n
        self.check(Lease(self.now, queue, lease_ms, ids, worker))

    @rule(
        queue=st.sampled_from(QUEUES),
        outcomes=st.lists(
            st.sampled_from(["ack", "fail", "extend", "keep"]), min_size=1, max_size=3
        ),
        lease_ms=st.integers(min_value=1, max_value=5000),
    )
    def work(self, queue: str, outcomes: list[str], lease_ms: int) -> None:
        """A worker's round: lease, then settle each job at once, the common path."""
        ids = [f"L{self.next_lease + i}" for i in range(len(outcomes))]
        self.next_lease += len(outcomes)
        leased = self.check(Lease(self.now, queue, lease_ms, ids))
        assert isinstance(leased, LeaseResult)
        for job, outcome in zip(leased.jobs, outcomes, strict=False):
            if outcome == "ack":
                self.check(Ack(self.now, job.id, job.lease_id, "done"))
            elif outcome == "fail":
                self.check(Fail(self.now, job.id, job.lease_id, "boom"))
            elif outcome == "extend":
                self.check(Extend(self.now, job.id, lease_ms * 2, job.lease_id))

    @rule(ref=job_refs, which=lease_refs, result=st.one_of(st.none(), st.text(max_size=3)))
    def ack(self, ref: int, which: str, result: str | None) -> None:
        job_id = self.job_id(ref, RU)
        self.check(Ack(self.now, job_id, self.lease_id(job_id, which), result))

    @rule(ref=job_refs, which=lease_refs)
    def fail(self, ref: int, which: str) -> None:
        job_id = self.job_id(ref, RU)
        self.check(Fail(self.now, job_id, self.lease_id(job_id, which), "boom"))

    @rule(ref=job_refs, which=lease_refs, lease_ms=st.integers(min_value=0, max_value=3000))
    def extend(self, ref: int, which: str, lease_ms: int) -> None:
        job_id = self.job_id(ref, RU)
        self.check(Extend(self.now, job_id, lease_ms, self.lease_id(job_id, which)))

    @rule(ref=job_refs)
    def cancel(self, ref: int) -> None:
        self.check(Cancel(self.now, self.job_id(ref)))

    @rule(ref=job_refs)
    def requeue(self, ref: int) -> None:
        self.check(Requeue(self.now, self.job_id(ref, D)))

    @rule(refs=st.lists(job_refs, max_size=6), requeue=st.booleans())
    def bulk(self, refs: list[int], requeue: bool) -> None:
        ids = [self.job_id(ref, D) if requeue else self.job_id(ref) for ref in refs]
        self.check(BulkRequeue(self.now, ids) if requeue else BulkCancel(self.now, ids))

    @rule()
    def expire(self) -> None:
        self.check(Expire(self.now))

    @rule(age=st.integers(min_value=0, max_value=5000))
    def purge(self, age: int) -> None:
        self.check(Purge(self.now, self.now - age))

    # -- schedules: names from a few, due times near the schedule's next one

    def schedule_spec(self, name: str, variant: int) -> ScheduleSpec:
        return ScheduleSpec(
            name,
            ["* * * * *", "0 3 * * *"][variant % 2],
            "UTC",
            f"payload {name}",
            QUEUES[variant % 3],
            variant % 3 - 1,
            variant % 2,
            [OverlapPolicy.ALLOW, OverlapPolicy.SKIP][variant // 2 % 2],
            [MissedPolicy.SKIP, MissedPolicy.RUN_ONCE][variant // 4 % 2],
        )

    @rule(
        name=st.sampled_from(SCHEDULES),
        variant=st.integers(min_value=0, max_value=7),
        first=st.one_of(st.none(), st.integers(min_value=1, max_value=2000)),
        paused=st.booleans(),
        capped=st.booleans(),
    )
    def create_schedule(
        self, name: str, variant: int, first: int | None, paused: bool, capped: bool
    ) -> None:
        next_due = None if first is None else self.now + first
        cap = MAX_SCHEDULES if capped else 0
        self.check(
            CreateSchedule(self.now, self.schedule_spec(name, variant), next_due, paused, cap)
        )

    @rule(
        name=st.sampled_from(SCHEDULES),
        variant=st.integers(min_value=0, max_value=7),
        paused=st.booleans(),
        shift=st.one_of(st.none(), st.integers(min_value=-500, max_value=2000)),
        stale=st.integers(min_value=0, max_value=5),
    )
    def update_schedule(
        self, name: str, variant: int, paused: bool, shift: int | None, stale: int
    ) -> None:
        schedule = self.ref.schedules.get(name)
        version = 1 if schedule is None else schedule.version - (stale == 0)
        next_due = None if shift is None else self.now + shift
        self.check(
            UpdateSchedule(self.now, self.schedule_spec(name, variant), paused, next_due, version)
        )

    @rule(name=st.sampled_from(SCHEDULES))
    def delete_schedule(self, name: str) -> None:
        self.check(DeleteSchedule(self.now, name))

    @rule(
        name=st.sampled_from(SCHEDULES),
        which=st.sampled_from(["next", "next", "next", "stale", "other"]),
        batch=st.integers(min_value=0, max_value=3),
        gap=st.one_of(st.none(), st.integers(min_value=1, max_value=1500)),
        make_job=st.sampled_from([True, True, True, False]),
        reuse_id=st.integers(min_value=0, max_value=9),
    )
    def fire_schedule(
        self, name: str, which: str, batch: int, gap: int | None, make_job: bool, reuse_id: int
    ) -> None:
        """The ticker's firing: usually of the schedule's next due time, now and then of a
        stale one (already fired) or of another time."""
        schedule = self.ref.schedules.get(name)
        due = schedule.next_due if schedule is not None else None
        if due is None or which == "other":
            due = self.now - 100
        elif which == "stale":
            due = schedule.last_due if schedule and schedule.last_due is not None else due - 1
        last_due = due + 100 * batch
        next_due = None if gap is None else last_due + gap
        if reuse_id == 0 and self.ref.jobs:
            job_id: str | None = next(iter(self.ref.jobs))
        else:
            job_id = f"s{self.next_job}"
            self.next_job += 1
        self.now = max(self.now, last_due)
        self.check(
            FireSchedule(
                self.now, name, due, last_due, next_due, job_id if make_job else None, batch
            )  # fmt: skip
        )

    @rule()
    def snapshot_and_restore(self) -> None:
        data = self.sm.snapshot()
        restored = StateMachine(CONFIG)
        restored.restore(data)
        assert restored.snapshot() == data
        self.sm = restored

    @invariant()
    def same_jobs(self) -> None:
        assert self.sm.job_count == len(self.ref.jobs)
        for job_id, job in self.ref.jobs.items():
            assert self.sm.get(job_id) == job
        newest_first, _ = self.sm.list_jobs(limit=1000)
        assert [j.id for j in newest_first] == list(reversed(self.ref.jobs))

    @invariant()
    def same_filtered_pages(self) -> None:
        for state in (None, R, RU, RE, D, A, C):
            for queue in (None, "a"):
                expected = [
                    job_id
                    for job_id, job in reversed(self.ref.jobs.items())
                    if state in (None, job.state) and queue in (None, job.queue)
                ]
                paged: list[str] = []
                cursor = None
                while True:
                    page, cursor = self.sm.list_jobs(
                        state=state, queue=queue, limit=3, cursor=cursor
                    )
                    assert page or cursor is None
                    paged += [j.id for j in page]
                    if cursor is None:
                        break
                assert paged == expected

    @invariant()
    def same_schedules(self) -> None:
        for name in SCHEDULES:
            assert self.sm.get_schedule(name) == self.ref.schedules.get(name)
        assert [s.spec.name for s in self.sm.schedule_page(None, 100)] == sorted(self.ref.schedules)
        assert self.sm.next_schedule_due() == self.ref.next_schedule_due()
        for t in (self.now, self.now + 700):
            assert [s.spec.name for s in self.sm.due_schedules(t)] == self.ref.due_schedules(t)
        stats = self.sm.schedule_stats()
        assert stats.count == len(self.ref.schedules)
        assert stats.runs == sum(s.runs for s in self.ref.schedules.values())

    @invariant()
    def same_stats_and_due_times(self) -> None:
        assert self.sm.stats() == self.ref.stats()
        assert self.sm.next_due() == self.ref.next_due()
        for queue in QUEUES:
            for t in (self.now, self.now + 700):
                assert self.sm.has_runnable(queue, t) == self.ref.has_runnable(queue, t)


StateMachineAgainstReference.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None
)
TestStateMachineAgainstReference = StateMachineAgainstReference.TestCase
