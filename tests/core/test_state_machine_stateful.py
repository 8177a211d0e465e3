"""Hypothesis drives the StateMachine and a small, obviously correct reference model side by side.

The model keeps jobs in a plain dict and answers every question with a scan and sorted(): no
heaps, no incremental counts. After every step both must agree on the result of the command, on
every job, on the stats, on next_due and on has_runnable. A snapshot/restore in the middle of a
run must change nothing.

Flow control (issue 18) is in the model too: queue settings (pause, concurrency, a rate limit
counted from every lease time in the window), unique keys with their three scopes, and
dependencies, which the model resolves by sweeping every WAITING job after each command.

Schedules are in the model too: create (retried or not, capped), update with a version, delete,
and firings whose due times are mostly the schedule's next one and sometimes stale, doubled or
of a schedule that is paused or gone; both must agree on every schedule, the jobs the firings
make (with the overlap policy) and the due schedules.

Insight (issue 19) too: progress reports on running attempts, dead letters grouped by the
fingerprint of their last error (every group's count, first and last death, queues and sample
computed from scratch), whole groups requeued or cancelled in bounded chunks, and the
explain queries (jobs ahead of a runnable job, the queue's oldest runnable job).
"""

from __future__ import annotations

from collections.abc import Callable
from copy import copy

import msgspec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from jq_tool.core.backoff import retry_backoff_ms
from jq_tool.core.fingerprint import fingerprint
from jq_tool.core.model import (
    FINISHED_STATES,
    Ack,
    AdoptQueue,
    Attempt,
    BulkCancel,
    BulkRequeue,
    BulkResult,
    Cancel,
    Command,
    CreateSchedule,
    DeadGroupAction,
    DeadGroupResult,
    DeleteSchedule,
    Dependency,
    Error,
    ErrorCode,
    Expire,
    ExpireResult,
    Extend,
    Fail,
    FireResult,
    FireSchedule,
    Job,
    JobFlow,
    JobProgress,
    JobResult,
    JobState,
    Lease,
    LeaseResult,
    MissedPolicy,
    NewJob,
    OverlapPolicy,
    ParentFailure,
    Progress,
    Purge,
    PurgeResult,
    QueueResult,
    QueueSettings,
    Release,
    Requeue,
    Result,
    Schedule,
    ScheduleResult,
    ScheduleRun,
    ScheduleSpec,
    SetQueue,
    SettleDeadGroup,
    StartShard,
    Submit,
    SubmitResult,
    Submitted,
    UniqueScope,
    UpdateSchedule,
)
from jq_tool.core.ownership import scoped_key
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
R, RU, RE, D, A, C, W = (
    JobState.READY,
    JobState.RUNNING,
    JobState.RETRY,
    JobState.DEAD,
    JobState.ACKED,
    JobState.CANCELLED,
    JobState.WAITING,
)
PARENT_FAILED = "parent ?"  # which failed parent a cancellation names depends on order


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
        # Flow control: settings by queue, every lease time of each queue's current window
        # setting, unique keys (never forgotten: forgetting is only memory), awaited parents.
        self.settings: dict[str, QueueSettings] = {}
        self.lease_times: dict[str, list[int]] = {}
        self.unique: dict[tuple[str, str], tuple[str, UniqueScope, int]] = {}
        self.awaited: dict[str, list[str]] = {}
        # Sharded (issue 23): idempotency and unique keys are per queue, parents in the
        # child's queue.
        self.sharded = False
        # The machine's reason of a parent cancellation, for byte counts (set by the test).
        self.parent_reason: Callable[[str], str] | None = None

    def advance(self, now: int) -> int:
        """Returns how many scheduled READY jobs the new clock makes due."""
        before = self.now
        self.now = max(self.now, now)
        return sum(1 for j in self.jobs.values() if j.state is R and before < j.run_at <= self.now)

    def apply(self, command: Command) -> Result:
        result = self.apply_one(command)
        if not isinstance(result, Error):
            self.sweep(command.now)
        return result

    def sweep(self, now: int) -> None:
        """Resolve WAITING jobs against their parents' states, until nothing changes."""
        changed = True
        while changed:
            changed = False
            for child_id in list(self.awaited):
                child = self.jobs[child_id]
                left = self.awaited[child_id]
                for parent_id in list(left):
                    parent = self.jobs.get(parent_id)
                    if parent is None or parent.state not in FINISHED_STATES:
                        continue
                    left.remove(parent_id)
                    changed = True
                    assert child.depends_on is not None
                    runs = child.depends_on.on_parent_failure is ParentFailure.RUN
                    if parent.state is not A and not runs:
                        child.state, child.updated_at = C, now
                        child.result_error = PARENT_FAILED
                        self.counters.cancelled += 1
                        del self.awaited[child_id]
                        break
                else:
                    if not left:
                        del self.awaited[child_id]
                        child.state, child.updated_at = R, now

    def set_queue(self, command: SetQueue) -> Result:
        current = self.settings.get(command.queue)
        if current is None and command.max_queues and len(self.settings) >= command.max_queues:
            return Error(ErrorCode.TOO_MANY_QUEUES, "")
        settings = copy(current) if current is not None else QueueSettings(command.queue)
        rate = settings.rate_limit if command.rate_limit is None else command.rate_limit
        period = (
            settings.rate_period_ms if command.rate_period_ms is None else command.rate_period_ms
        )
        if rate and not period:
            return Error(ErrorCode.INVALID_STATE, "")
        self.advance(command.now)
        if (rate, period) != (settings.rate_limit, settings.rate_period_ms):
            self.lease_times[command.queue] = []
        if command.paused is not None:
            settings.paused = command.paused
        if command.concurrency is not None:
            settings.concurrency = command.concurrency
        settings.rate_limit, settings.rate_period_ms = rate, period if rate else 0
        settings.updated_at = command.now
        if settings.paused or settings.concurrency or settings.rate_limit:
            self.settings[command.queue] = settings
        else:
            self.settings.pop(command.queue, None)
            self.lease_times.pop(command.queue, None)
        return QueueResult(settings)

    def flow_allows(self, queue: str, at: int) -> int | None:
        """How many leases the queue's settings allow at `at` (None: no limit)."""
        settings = self.settings.get(queue)
        if settings is None:
            return None
        if settings.paused:
            return 0
        allowed: int | None = None
        if settings.concurrency:
            running = sum(1 for j in self.jobs.values() if j.queue == queue and j.state is RU)
            allowed = max(settings.concurrency - running, 0)
        if settings.rate_limit:
            times = self.lease_times.get(queue, [])
            in_window = sum(1 for t in times if t > at - settings.rate_period_ms)
            left = max(settings.rate_limit - in_window, 0)
            allowed = left if allowed is None else min(allowed, left)
        return allowed

    def apply_one(self, command: Command) -> Result:
        if isinstance(command, SetQueue):
            return self.set_queue(command)
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
        if isinstance(command, SettleDeadGroup):
            return self.settle_group(command)
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
        if isinstance(command, (Ack, Fail, Extend, Progress, Release)):
            if job.state is not RU:
                return Error(ErrorCode.INVALID_STATE, "")
            if command.lease_id is not None and command.lease_id != job.lease_id:
                return Error(ErrorCode.LEASE_MISMATCH, "")
        if isinstance(command, Cancel) and job.state not in (R, RE, W):
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
            self.fail(job, command.error, now, "failed", final=not command.retry)
        elif isinstance(command, Extend):
            job.lease_until = now + command.lease_ms
        elif isinstance(command, Release):
            # READY again (scheduled while the delay runs), the attempt not counted but in the
            # history as given back.
            released = Attempt(job.attempts, job.worker, job.leased_at, now, "released", None)
            job.history = ([*(job.history or []), released])[-10:]
            job.state, job.attempts, job.updated_at = R, job.attempts - 1, now
            job.run_at = now + command.delay_ms
            job.lease_id = job.lease_until = job.worker = job.leased_at = None
            self.counters.released += 1
        elif isinstance(command, Progress):
            job.progress = JobProgress(float(command.percent), command.note, now)
        elif isinstance(command, Cancel):
            job.state, job.updated_at = C, now
            self.awaited.pop(job.id, None)
            self.counters.cancelled += 1
        elif isinstance(command, Requeue):
            job.state, job.attempts, job.run_at, job.updated_at = R, 0, now, now
            self.counters.requeued += 1
        return JobResult(job=copy(job))

    def submit(self, command: Submit) -> Result:
        now = command.now
        self.advance(now)
        entries: list[Submitted | Error] = []
        answered: dict[str, str] = {}  # entries answered with an earlier job: parents mean it
        for nj in command.jobs:
            key = nj.idempotency_key
            if key is not None and self.sharded:
                key = scoped_key(nj.queue, key)
            remembered = self.idempotency.get((nj.owner, key)) if key is not None else None
            if remembered is not None and self.now < remembered[2]:
                if remembered[1] in (None, nj.fingerprint) or nj.fingerprint is None:
                    entries.append(Submitted(remembered[0], duplicate=True))
                    answered[nj.id] = remembered[0]
                else:
                    entries.append(Error(ErrorCode.IDEMPOTENCY_KEY_REUSED, ""))
                continue
            jf = nj.flow
            unique_key = None if jf is None else jf.unique_key
            if unique_key is not None and self.sharded:
                unique_key = scoped_key(nj.queue, unique_key)
            if unique_key is not None:
                holder = self.unique.get((nj.owner, unique_key))
                if holder is not None:
                    holder_id, scope, until = holder
                    held_job = self.jobs.get(holder_id)
                    if scope is UniqueScope.PERIOD:
                        in_scope = self.now < until
                    elif scope is UniqueScope.QUEUED:
                        in_scope = held_job is not None and held_job.state in (W, R, RE)
                    else:
                        in_scope = held_job is not None and held_job.state in (W, R, RE, RU)
                    if in_scope:
                        entries.append(Submitted(holder_id, unique=True))
                        answered[nj.id] = holder_id
                        continue
            if nj.id in self.jobs:
                entries.append(Error(ErrorCode.INVALID, ""))
                continue
            if jf is not None and answered:
                jf = msgspec.structs.replace(
                    jf, depends_on=[answered.get(p, p) for p in jf.depends_on]
                )
            if jf is not None and any(
                p not in self.jobs or self.jobs[p].owner != nj.owner for p in jf.depends_on
            ):
                entries.append(Error(ErrorCode.UNKNOWN_PARENT, ""))
                continue
            if (
                jf is not None
                and self.sharded
                and any(self.jobs[p].queue != nj.queue for p in jf.depends_on)
            ):
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
                self.seq, idempotency_key=nj.idempotency_key, updated_at=now, owner=nj.owner,
            )  # fmt: skip
            if jf is not None and jf.depends_on:
                job = self.jobs[nj.id]
                job.depends_on = Dependency(list(jf.depends_on), jf.on_parent_failure)
                job.state = W
                self.awaited[nj.id] = list(dict.fromkeys(jf.depends_on))
                self.sweep(now)
                if job.state is R:
                    job.updated_at = now
            if jf is not None and unique_key is not None:
                until = now + jf.unique_period_ms if jf.unique_scope is UniqueScope.PERIOD else 0
                self.unique[(nj.owner, unique_key)] = (nj.id, jf.unique_scope, until)
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
        lease_ids = command.lease_ids
        allowed = self.flow_allows(command.queue, self.now)
        if allowed is not None:
            lease_ids = lease_ids[:allowed]
        for job, lease_id in zip(runnable, lease_ids, strict=False):
            job.state, job.attempts, job.updated_at = RU, job.attempts + 1, now
            job.lease_id, job.lease_until = lease_id, now + command.lease_ms
            job.progress = None
            job.worker, job.leased_at = command.worker, now
            leased.append(copy(job))
        if command.queue in self.settings and self.settings[command.queue].rate_limit:
            self.lease_times.setdefault(command.queue, []).extend([self.now] * len(leased))
        return LeaseResult(jobs=leased)

    def fail(self, job: Job, error: str, now: int, outcome: str, final: bool = False) -> None:
        # The attempt joins the history (the last 10), its worker and lease time cleared.
        ended = Attempt(job.attempts, job.worker, job.leased_at, now, outcome, error)
        job.history = ([*(job.history or []), ended])[-10:]
        job.worker = job.leased_at = None
        job.result_error, job.updated_at = error, now
        job.lease_id = job.lease_until = None
        self.counters.failed += 1
        if final or job.attempts > job.max_retries:
            job.state = D
            self.counters.dead += 1
        else:
            job.state = RE
            job.run_at = now + retry_backoff_ms(
                job.id, job.attempts, self.config.retry_base_ms, self.config.retry_max_ms
            )
            self.counters.retried += 1

    def dead_of(self, fp: str) -> list[Job]:
        """The group's DEAD jobs, earliest death first (then submission order, then id)."""
        dead = [
            j for j in self.jobs.values()
            if j.state is D and fingerprint(j.result_error or "").id == fp
        ]  # fmt: skip
        return sorted(dead, key=lambda j: (j.updated_at, j.seq, j.id))

    def settle_group(self, command: SettleDeadGroup) -> Result:
        self.advance(command.now)
        now = command.now
        taken = [
            j for j in self.dead_of(command.fingerprint) if j.updated_at <= command.dead_before
        ]
        taken = taken[: command.limit]
        for job in taken:
            if command.action is DeadGroupAction.REQUEUE:
                job.state, job.attempts, job.run_at, job.updated_at = R, 0, now, now
                self.counters.requeued += 1
            else:
                job.state, job.updated_at = C, now
                self.counters.cancelled += 1
        left = len(self.dead_of(command.fingerprint))
        return DeadGroupResult(job_ids=[j.id for j in taken], remaining=left)

    def groups(self) -> list[tuple[str, int, int, int, dict[str, int], str]]:
        """(fingerprint, count, first death, last death, queues, sample) of each group."""
        prints = {fingerprint(j.result_error or "").id for j in self.jobs.values() if j.state is D}
        out = []
        for fp in prints:
            dead = self.dead_of(fp)
            queues: dict[str, int] = {}
            for j in dead:
                queues[j.queue] = queues.get(j.queue, 0) + 1
            first = min(j.updated_at for j in dead)
            out.append((fp, len(dead), first, dead[-1].updated_at, queues, dead[-1].id))
        return sorted(out, key=lambda g: (-g[1], -g[3], g[0]))

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
        dead_before = (
            command.finished_before if command.dead_before is None else command.dead_before
        )
        gone = [
            j.id
            for j in self.jobs.values()
            if j.state in FINISHED_STATES
            and j.updated_at <= (dead_before if j.state is D else command.finished_before)
        ]
        for job_id in gone:
            del self.jobs[job_id]

        def oldest_first(states: set[JobState]) -> list[Job]:
            held = [j for j in self.jobs.values() if j.state in states]
            return sorted(held, key=lambda j: (j.updated_at, j.seq))

        def size(j: Job) -> int:
            error = j.result_error or ""
            if error == PARENT_FAILED and self.parent_reason is not None:
                error = self.parent_reason(j.id)
            return held_size(j, error)

        done = oldest_first({A, C})
        evicted = 0
        total = sum(map(size, done)) + command.job_overhead_bytes * len(done)
        while done and (
            (command.max_finished and len(done) > command.max_finished)
            or (command.max_finished_bytes and total > command.max_finished_bytes)
        ):
            job = done.pop(0)
            total -= size(job) + command.job_overhead_bytes
            del self.jobs[job.id]
            evicted += 1
        dead = oldest_first({D})
        dropped = 0
        while command.max_dead and len(dead) > command.max_dead:
            del self.jobs[dead.pop(0).id]
            dropped += 1
        self.counters.purged += len(gone) + evicted + dropped
        self.counters.evicted += evicted
        self.counters.dead_dropped += dropped
        keys = [k for k, (_, _, end) in self.idempotency.items() if end <= self.now]
        for key in keys:
            del self.idempotency[key]
        most = command.max_idempotency_keys
        if most and len(self.idempotency) > most:
            # Those whose keep time ends first (then owner, key: the heap's order).
            order = sorted(self.idempotency, key=lambda k: (self.idempotency[k][2], k))
            for key in order[: len(self.idempotency) - most]:
                del self.idempotency[key]
                keys.append(key)
        return PurgeResult(len(gone) + evicted + dropped, len(keys), evicted, dropped)

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
                waiting=n(W),
            )

        def with_flow(name: str, stats: QueueStats) -> QueueStats:
            settings = self.settings.get(name)
            if settings is not None:
                stats.paused, stats.concurrency = settings.paused, settings.concurrency
                stats.rate_limit, stats.rate_period_ms = (
                    settings.rate_limit,
                    settings.rate_period_ms,
                )
            return stats

        names = sorted({j.queue for j in self.jobs.values()})
        return Stats(
            totals=count(list(self.jobs.values())),
            queues={
                q: with_flow(q, count([j for j in self.jobs.values() if j.queue == q]))
                for q in names
            },
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
        if self.flow_allows(queue, cutoff) == 0:
            return False
        return any(
            j.queue == queue and j.state in (R, RE) and j.run_at <= cutoff
            for j in self.jobs.values()
        )


def held_size(j: Job, error: str | None = None) -> int:
    """A held job's content: payload, result, its error (`error`: as the machine has it), and
    its attempts' other errors."""
    current = j.result_error if error is None else error
    earlier = [a.error for a in j.history or () if a.error and a.error != current]
    return len(j.payload) + len(j.result or "") + len(current or "") + sum(map(len, earlier))


def same_result(actual: Result, expected: Result) -> bool:
    """Errors agree on their code; everything else must be equal."""
    if isinstance(expected, SubmitResult) and isinstance(actual, SubmitResult):
        return len(actual.entries) == len(expected.entries) and all(
            same_result(a, e)  # type: ignore[arg-type]
            for a, e in zip(actual.entries, expected.entries, strict=True)
        )
    if isinstance(expected, Error):
        return isinstance(actual, Error) and actual.code == expected.code
    if isinstance(expected, QueueResult) and isinstance(actual, QueueResult):
        # The machine drops lease times that left the window when it next looks: memory only.
        return msgspec.structs.replace(actual.settings, recent_leases=[]) == expected.settings
    return actual == expected


def comparable(job: Job | None) -> Job | None:
    """A job with the parent a cancellation names blanked (it depends on processing order)."""
    if job is not None and job.result_error and job.result_error.startswith("parent "):
        return msgspec.structs.replace(job, result_error=PARENT_FAILED)
    return job


job_refs = st.integers(min_value=0, max_value=40)
lease_refs = st.sampled_from(["current", "none", "stale"])
settle_outcomes = st.sampled_from(["ack", "fail", "extend", "keep"])
# Errors of three causes (the numbers differ, the fingerprint does not) and a plain one.
ERRORS = ["boom", "ValueError: row 1 bad", "ValueError: row 22 bad", "KeyError: 'a'"]


class StateMachineAgainstReference(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sm = StateMachine(CONFIG)
        self.ref = ReferenceQueue(CONFIG)
        self.ref.parent_reason = self.parent_reason
        self.now = 1_000
        self.next_job = 0
        self.next_lease = 0

    def parent_reason(self, job_id: str) -> str:
        """The machine's cancellation reason of a job the model cancelled for a failed parent
        (which parent it names depends on processing order; see comparable)."""
        job = self.sm.get(job_id)
        assert job is not None and job.result_error is not None
        return job.result_error

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

    # Round steps now and then, so rate windows (periods of 500 and 1000) end exactly on a
    # lease time.
    @rule(dt=st.one_of(st.integers(min_value=0, max_value=800), st.sampled_from([250, 500])))
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
        flows=st.lists(
            st.one_of(
                st.none(),
                st.tuples(
                    st.sampled_from([None, "u1", "u2"]),  # unique key
                    st.sampled_from(list(UniqueScope)),
                    st.integers(min_value=1, max_value=2000),  # unique period
                    st.lists(job_refs, max_size=3),  # parents
                    st.sampled_from(list(ParentFailure)),
                ),
            ),
            max_size=5,
        ),
        skew=st.integers(min_value=-300, max_value=0),
        capped=st.booleans(),
    )
    def submit(
        self,
        specs: list[tuple[str, int, int, int | None, str | None, int, str, str | None]],
        flows: list[tuple[str | None, UniqueScope, int, list[int], ParentFailure] | None],
        skew: int,
        capped: bool,
    ) -> None:
        jobs = []
        flows = flows + [None] * len(specs)
        for (queue, priority, max_retries, run_at, key, reuse_id, owner, print_), flow in zip(
            specs, flows, strict=False
        ):
            if reuse_id == 0 and self.ref.jobs:
                job_id = next(iter(self.ref.jobs))
            else:
                job_id = f"j{self.next_job}"
                self.next_job += 1
            at = None if run_at is None else self.now + run_at
            jf = None
            if flow is not None:
                unique_key, scope, period, parent_refs, on_failure = flow
                parents = [self.job_id(ref, R, RE, RU, W) for ref in parent_refs]
                jf = JobFlow(unique_key, scope, period, parents, on_failure)
            jobs.append(
                NewJob(
                    job_id, queue, f"p{job_id}", priority, max_retries, at, key, owner, print_, jf
                )
            )
        # A command's clock may lag the machine's (another node proposed it).
        cap = MAX_QUEUES if capped else 0
        self.check(Submit(max(self.now + skew, 0), jobs, KEEP_MS, cap))

    @rule(
        queue=st.sampled_from(QUEUES),
        owner=st.sampled_from(["o1", "o2"]),
        entries=st.lists(
            st.tuples(
                st.sampled_from([None, "u1", "u2"]),
                st.sampled_from(list(UniqueScope)),
                st.sampled_from([500, 1000]),
                st.lists(job_refs, max_size=2),
                st.sampled_from(list(ParentFailure)),
            ),
            min_size=1,
            max_size=4,
        ),
    )
    def submit_with_flow(
        self,
        queue: str,
        owner: str,
        entries: list[tuple[str | None, UniqueScope, int, list[int], ParentFailure]],
    ) -> None:
        """Jobs with unique keys and parents among the unfinished jobs, so that children
        wait, and parents fail or finish while they do."""
        jobs = []
        for unique_key, scope, period, refs, on_failure in entries:
            # 37: the entry before, in this same submit (a batch's "$N" as the engine sends it).
            parents = [
                jobs[-1].id if ref == 37 and jobs else self.job_id(ref, R, RE, RU, W)
                for ref in refs
            ]
            jf = JobFlow(unique_key, scope, period, parents, on_failure)
            jobs.append(NewJob(f"j{self.next_job}", queue, "p", owner=owner, flow=jf))
            self.next_job += 1
        self.check(Submit(self.now, jobs, KEEP_MS, 0))

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

    @rule(queue=st.sampled_from(QUEUES), error=st.sampled_from(ERRORS))
    def die(self, queue: str, error: str) -> None:
        """A worker's final failure (retry: false): DEAD at once, into a dead-letter group."""
        leased = self.check(Lease(self.now, queue, 1000, [f"L{self.next_lease}"]))
        self.next_lease += 1
        assert isinstance(leased, LeaseResult)
        for job in leased.jobs:
            self.check(Fail(self.now, job.id, job.lease_id, error, retry=False))

    @rule(ref=job_refs, which=lease_refs, result=st.one_of(st.none(), st.text(max_size=3)))
    def ack(self, ref: int, which: str, result: str | None) -> None:
        job_id = self.job_id(ref, RU)
        self.check(Ack(self.now, job_id, self.lease_id(job_id, which), result))

    @rule(ref=job_refs, which=lease_refs, error=st.sampled_from(ERRORS))
    def fail(self, ref: int, which: str, error: str) -> None:
        job_id = self.job_id(ref, RU)
        self.check(Fail(self.now, job_id, self.lease_id(job_id, which), error))

    @rule(
        ref=job_refs,
        which=lease_refs,
        percent=st.sampled_from([0, 0.25, 1.0]),
        note=st.text(max_size=3),
    )
    def progress(self, ref: int, which: str, percent: float, note: str) -> None:
        job_id = self.job_id(ref, RU)
        self.check(Progress(self.now, job_id, self.lease_id(job_id, which), percent, note))

    @precondition(lambda self: self.sm.dead_groups())  # an unknown group: the unit tests
    @rule(
        pick=st.integers(min_value=0, max_value=4),
        action=st.sampled_from(list(DeadGroupAction)),
        limit=st.integers(min_value=1, max_value=3),
        back=st.sampled_from([0, 0, 400]),
    )
    def settle_group(self, pick: int, action: DeadGroupAction, limit: int, back: int) -> None:
        groups = self.sm.dead_groups()
        fp = groups[pick % len(groups)].fingerprint if groups and pick < 4 else "0" * 16
        self.check(SettleDeadGroup(self.now, fp, action, limit, self.now - back))

    @rule(ref=job_refs, which=lease_refs, lease_ms=st.integers(min_value=0, max_value=3000))
    def extend(self, ref: int, which: str, lease_ms: int) -> None:
        job_id = self.job_id(ref, RU)
        self.check(Extend(self.now, job_id, lease_ms, self.lease_id(job_id, which)))

    @rule(ref=job_refs, which=lease_refs, delay_ms=st.sampled_from([0, 0, 300, 1500]))
    def release(self, ref: int, which: str, delay_ms: int) -> None:
        job_id = self.job_id(ref, RU)
        self.check(Release(self.now, job_id, self.lease_id(job_id, which), delay_ms))

    @rule(ref=job_refs)
    def cancel(self, ref: int) -> None:
        self.check(Cancel(self.now, self.job_id(ref)))

    @rule(ref=job_refs)
    def requeue(self, ref: int) -> None:
        self.check(Requeue(self.now, self.job_id(ref, D)))

    @rule(
        queue=st.sampled_from(QUEUES),
        paused=st.one_of(st.none(), st.booleans()),
        concurrency=st.one_of(st.none(), st.integers(min_value=0, max_value=3)),
        rate=st.one_of(
            st.none(),
            st.tuples(
                st.integers(min_value=0, max_value=3),
                st.one_of(st.none(), st.sampled_from([0, 500, 1000, 1500])),
            ),
        ),
        capped=st.booleans(),
    )
    def set_queue(
        self,
        queue: str,
        paused: bool | None,
        concurrency: int | None,
        rate: tuple[int, int | None] | None,
        capped: bool,
    ) -> None:
        limit, period = (None, None) if rate is None else rate
        cap = MAX_QUEUES if capped else 0
        self.check(SetQueue(self.now, queue, paused, concurrency, limit, period, cap))

    @invariant()
    def same_queue_settings(self) -> None:
        page = [msgspec.structs.replace(s, recent_leases=[]) for s in self.sm.queue_settings_page()]
        assert page == [self.ref.settings[name] for name in sorted(self.ref.settings)]

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

    @rule(
        age=st.integers(min_value=0, max_value=50_000),
        dead_age=st.none() | st.integers(min_value=0, max_value=50_000),
        max_finished=st.integers(min_value=0, max_value=4),
        max_bytes=st.sampled_from([0, 1, 10, 30]),
        overhead=st.sampled_from([0, 5]),
        max_dead=st.integers(min_value=0, max_value=3),
        max_keys=st.integers(min_value=0, max_value=3),
    )
    def purge_bounded(
        self,
        age: int,
        dead_age: int | None,
        max_finished: int,
        max_bytes: int,
        overhead: int,
        max_dead: int,
        max_keys: int,
    ) -> None:
        """Issue 21: the bounds on finished and DEAD jobs held, oldest finished first."""
        dead_before = None if dead_age is None else self.now - dead_age
        self.check(
            Purge(self.now, self.now - age, max_finished, max_bytes, overhead, max_dead,
                  dead_before, max_keys)
        )  # fmt: skip

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
    def same_held(self) -> None:
        """Issue 21: the finished and DEAD jobs held, and their content bytes."""
        held = self.sm.held()

        def of(states: set[JobState]) -> tuple[int, int]:
            jobs = [j for j in self.ref.jobs.values() if j.state in states]
            size = sum(held_size(j, error_of(j)) for j in jobs)
            return len(jobs), size

        def error_of(job: Job) -> str:
            # The parent a cancellation names depends on order (see comparable): the machine's.
            if job.result_error == PARENT_FAILED:
                actual = self.sm.get(job.id)
                assert actual is not None and actual.result_error is not None
                return actual.result_error
            return job.result_error or ""

        assert (held.finished, held.finished_bytes) == of({A, C})
        assert (held.dead, held.dead_bytes) == of({D})

    @invariant()
    def same_jobs(self) -> None:
        assert self.sm.job_count == len(self.ref.jobs)
        for job_id, job in self.ref.jobs.items():
            assert comparable(self.sm.get(job_id)) == job
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
    def same_dead_groups_and_explain_queries(self) -> None:
        actual = [
            (g.fingerprint, g.count, g.first_seen, g.last_seen, g.queues, g.sample_job_id)
            for g in self.sm.dead_groups()
        ]
        assert actual == self.ref.groups()
        for job in self.ref.jobs.values():
            if job.state is R and job.run_at <= self.ref.now:
                ahead = sum(
                    1
                    for other in self.ref.jobs.values()
                    if other.state is R
                    and other.queue == job.queue
                    and other.run_at <= self.ref.now
                    and (-other.priority, other.run_at, other.seq)
                    < (-job.priority, job.run_at, job.seq)
                )
                live = self.sm.get(job.id)
                assert live is not None and self.sm.runnable_ahead(live) == ahead
        for queue in QUEUES:
            runnable = [
                j.run_at for j in self.ref.jobs.values()
                if j.state is R and j.queue == queue and j.run_at <= self.ref.now
            ]  # fmt: skip
            assert self.sm.oldest_runnable_since(queue) == (min(runnable) if runnable else None)

    @invariant()
    def same_stats_and_due_times(self) -> None:
        assert self.sm.stats() == self.ref.stats()
        assert self.sm.next_due() == self.ref.next_due()
        for queue in QUEUES:
            for t in (self.now, self.now + 700):
                assert self.sm.has_runnable(queue, t) == self.ref.has_runnable(queue, t)


# too_slow: on a shared, loaded machine generating 50 steps can pass Hypothesis's time budget;
# that says nothing about the state machine.
StateMachineAgainstReference.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestStateMachineAgainstReference = StateMachineAgainstReference.TestCase


class ShardedMachineAgainstReference(StateMachineAgainstReference):
    """The same rules against a shard that adopted every queue (issue 23): ownership on changes
    nothing a single node does, except the two sharded rules the reference knows (keys per
    queue, parents in the child's queue)."""

    def __init__(self) -> None:
        super().__init__()
        assert not isinstance(self.sm.apply(StartShard(1)), Error)
        for queue in QUEUES:
            assert not isinstance(self.sm.apply(AdoptQueue(queue, 1)), Error)
        self.ref.sharded = True


ShardedMachineAgainstReference.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestShardedMachineAgainstReference = ShardedMachineAgainstReference.TestCase
