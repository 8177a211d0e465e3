"""Hypothesis plays a queue's moves between two shards' state machines amid ordinary work.

Two machines (shards 1 and 2) and two queues: "q" moves back and forth, "r" stays on shard 1.
Rules submit (with idempotency keys, some repeated), lease, ack, fail, extend, expire, purge and
step a move of "q": fence, import its chunks in any order (repeats included), adopt, flip the
placement, release, or abort before the flip. After every step: every job ever accepted for
"q" is held by exactly one serving shard or was purged (none lost, none doubled); the other
shard holds no job of "q" except the source's frozen copy until its release; a fenced queue's
export does not change while it is fenced; an adopted queue's jobs are the export's, field for
field (lease ids, lease_until, attempts, results), in the same order.
"""

from __future__ import annotations

import random

import msgspec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from jq_tool.core.model import (
    AbortMove,
    Ack,
    AdoptQueue,
    Error,
    ErrorCode,
    Expire,
    Extend,
    Fail,
    FenceQueue,
    ImportJobs,
    Job,
    Lease,
    LeaseResult,
    NewJob,
    OwnershipResult,
    Purge,
    ReleaseQueue,
    StartShard,
    Submit,
    SubmitResult,
    Submitted,
)
from jq_tool.core.state_machine import StateMachine, StateMachineConfig

CONFIG = StateMachineConfig(retry_base_ms=100, retry_max_ms=1000)


def _fields(job: Job) -> dict[str, object]:
    record = msgspec.structs.asdict(job)
    record.pop("seq")
    return record


class Moves(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.forgotten: set[str] = set()
        self.sm = {n: StateMachine(CONFIG, on_forget=self._forgot) for n in (1, 2)}
        for n, sm in self.sm.items():
            assert isinstance(sm.apply(StartShard(n)), OwnershipResult)
        assert isinstance(self.sm[1].apply(AdoptQueue("q", 1)), OwnershipResult)
        assert isinstance(self.sm[1].apply(AdoptQueue("r", 1)), OwnershipResult)
        self.owner = 1  # the placement of "q"
        self.epoch = 1
        self.now = 1_000
        self.next = 0
        self.accepted: set[str] = set()  # job ids of "q" ever made
        self.leased: list[Job] = []
        # The move in progress: (id, source, target, chunks, staged chunk numbers, adopted)
        self.move: tuple[str, int, int] | None = None
        self.chunks: list[ImportJobs] = []
        self.staged: set[int] = set()
        self.adopted = False
        self.export_at_fence: list[ImportJobs] = []
        self.moves = 0
        self.limit = 0

    def _forgot(self, jobs: list[Job], now: int) -> None:
        self.forgotten.update(job.id for job in jobs)

    # -- ordinary work ------------------------------------------------------------------------

    @rule(dt=st.integers(min_value=0, max_value=400))
    def tick(self, dt: int) -> None:
        self.now += dt

    @rule(queue=st.sampled_from(["q", "q", "r"]), n=st.integers(1, 12), key=st.integers(0, 30))
    def submit(self, queue: str, n: int, key: int) -> None:
        shard = self.owner if queue == "q" else 1
        jobs = []
        for i in range(n):
            self.next += 1
            k = f"k{key + i}" if key % 3 == 0 else None
            jobs.append(NewJob(f"{queue}-{self.next}", queue, f"p{self.next}",
                               max_retries=1, idempotency_key=k))  # fmt: skip
        result = self.sm[shard].apply(Submit(self.now, jobs, 5_000))
        assert isinstance(result, SubmitResult)
        fenced = queue == "q" and self.move is not None and not self._flipped()
        for nj, entry in zip(jobs, result.entries, strict=True):
            if fenced:
                assert isinstance(entry, Error) and entry.code is ErrorCode.QUEUE_MOVING
                continue
            assert isinstance(entry, Submitted), entry
            if queue == "q" and not entry.duplicate:
                assert entry.job_id == nj.id
                self.accepted.add(nj.id)

    @rule(queue=st.sampled_from(["q", "r"]), n=st.integers(1, 3))
    def lease(self, queue: str, n: int) -> None:
        shard = self.owner if queue == "q" else 1
        self.next += 1
        ids = [f"lease-{self.next}-{i}" for i in range(n)]
        result = self.sm[shard].apply(Lease(self.now, queue, 700, ids))
        if isinstance(result, LeaseResult):
            self.leased.extend(result.jobs)
        else:
            assert result.code is ErrorCode.QUEUE_MOVING  # type: ignore[union-attr]

    @precondition(lambda self: self.leased)
    @rule(which=st.sampled_from(["ack", "fail", "extend"]), pick=st.integers(0, 50))
    def settle(self, which: str, pick: int) -> None:
        job = self.leased.pop(pick % len(self.leased))
        shard = self.owner if job.queue == "q" else 1
        if which == "ack":
            command = Ack(self.now, job.id, job.lease_id, "ok")
        elif which == "fail":
            command = Fail(self.now, job.id, job.lease_id, "no")
        else:
            command = Extend(self.now, job.id, 900, job.lease_id)
        result = self.sm[shard].apply(command)
        if isinstance(result, Error):
            assert result.code in (ErrorCode.QUEUE_MOVING, ErrorCode.INVALID_STATE,
                                   ErrorCode.LEASE_MISMATCH, ErrorCode.NOT_FOUND)  # fmt: skip
            if result.code is ErrorCode.QUEUE_MOVING:
                self.leased.append(job)  # the worker retries later, elsewhere

    @rule()
    def expire(self) -> None:
        for sm in self.sm.values():
            sm.apply(Expire(self.now))

    @rule(keep=st.sampled_from([0, 300, 2000]))
    def purge(self, keep: int) -> None:
        for sm in self.sm.values():
            sm.apply(Purge(self.now, self.now - keep, max_idempotency_keys=5))

    # -- the move -------------------------------------------------------------------------------

    def _flipped(self) -> bool:
        return self.move is not None and self.owner == self.move[2]

    @precondition(lambda self: self.move is None)
    @rule(limit=st.sampled_from([200, 600, 4096]))
    def fence(self, limit: int) -> None:
        self.moves += 1
        source, target = self.owner, 3 - self.owner
        move_id = f"m{self.moves}"
        fenced = self.sm[source].apply(FenceQueue("q", move_id, self.now))
        assert isinstance(fenced, OwnershipResult) and fenced.fenced
        self.move = (move_id, source, target)
        self.limit = limit
        self.chunks = self.sm[source].export_queue("q", move_id, limit)
        self.export_at_fence = self.chunks
        self.staged, self.adopted = set(), False

    @precondition(lambda self: self.move is not None and not self.adopted)
    @rule(
        picks=st.lists(st.integers(0, 100), min_size=1, max_size=8),
        rest=st.booleans(),
        rng=st.randoms(use_true_random=False),
    )
    def import_chunks(self, picks: list[int], rest: bool, rng: random.Random) -> None:
        """Some chunks, in any order, repeats included (a retried put); then, or not, every
        chunk not staged yet, shuffled."""
        assert self.move is not None
        if rest:
            missing = [i for i in range(len(self.chunks)) if i not in self.staged]
            rng.shuffle(missing)
            picks = picks + missing
        for pick in picks:
            chunk = self.chunks[pick % len(self.chunks)]
            result = self.sm[self.move[2]].apply(chunk)
            assert isinstance(result, OwnershipResult)
            assert result.repeated == (chunk.chunk in self.staged)
            self.staged.add(chunk.chunk)

    @precondition(lambda self: self.move is not None and not self.adopted)
    @rule()
    def adopt(self) -> None:
        assert self.move is not None
        move_id, source, target = self.move
        result = self.sm[target].apply(AdoptQueue("q", self.epoch + 1, move_id, self.now))
        if len(self.staged) < len(self.chunks):
            assert isinstance(result, Error) and result.code is ErrorCode.INVALID_STATE
            return
        assert isinstance(result, OwnershipResult) and result.owned
        self.adopted = True
        frozen = self.sm[source].list_jobs(queue="q", limit=10**6)[0]
        moved = self.sm[target].list_jobs(queue="q", limit=10**6)[0]
        assert [_fields(j) for j in moved] == [_fields(j) for j in frozen]

    @precondition(lambda self: self.move is not None and self.adopted and not self._flipped())
    @rule()
    def flip(self) -> None:
        assert self.move is not None
        self.owner = self.move[2]
        self.epoch += 1

    @precondition(lambda self: self._flipped())
    @rule()
    def release(self) -> None:
        assert self.move is not None
        move_id, source, target = self.move
        result = self.sm[source].apply(ReleaseQueue("q", move_id, target, self.now))
        assert isinstance(result, OwnershipResult) and not result.owned
        self.move = None
        self.adopted = False

    @precondition(lambda self: self.move is not None and not self._flipped())
    @rule()
    def abort(self) -> None:
        assert self.move is not None
        move_id, source, target = self.move
        if self.adopted:
            given = self.sm[target].apply(ReleaseQueue("q", move_id, source, self.now))
            assert isinstance(given, OwnershipResult) and not given.owned
        else:
            assert isinstance(self.sm[target].apply(AbortMove("q", move_id)), OwnershipResult)
        unfenced = self.sm[source].apply(AbortMove("q", move_id, self.now))
        assert isinstance(unfenced, OwnershipResult) and not unfenced.fenced
        self.move = None
        self.adopted = False

    @rule(
        give_up=st.integers(0, 9),
        limit=st.sampled_from([200, 600, 4096]),
        rng=st.randoms(use_true_random=False),
    )
    def next_move_step(self, give_up: int, limit: int, rng: random.Random) -> None:
        """The move's next step as a driver would take it (an abort now and then), so that
        whole moves happen often among the other rules."""
        if self.move is None:
            self.fence(limit)
        elif give_up == 0 and not self._flipped():
            self.abort()
        elif len(self.staged) < len(self.chunks):
            self.import_chunks([0], True, rng)
        elif not self.adopted:
            self.adopt()
        elif not self._flipped():
            self.flip()
        else:
            self.release()

    # -- what must always hold ------------------------------------------------------------------

    @invariant()
    def every_job_once(self) -> None:
        serving = self.sm[self.owner]
        held = [j.id for j in serving.list_jobs(queue="q", limit=10**6)[0]]
        assert len(held) == len(set(held))
        assert set(held) | (self.forgotten & self.accepted) == self.accepted
        assert not set(held) & self.forgotten - set(held)
        other = self.sm[3 - self.owner]
        elsewhere = other.list_jobs(queue="q", limit=10**6)[0]
        frozen_copy = self.move is not None and (self._flipped() or self.adopted)
        if elsewhere:
            # only the target's adopted copy before the flip (nobody routed to it: the fenced
            # source's jobs, less the finished ones its own Purge forgot since: the adopted
            # queue is the target's, retention applies there at once), or the source's frozen
            # copy after it (the new owner has moved on: submitted, purged)
            assert frozen_copy, [j.id for j in elsewhere]
            copy_ids = {j.id for j in elsewhere}
            if self._flipped():
                assert copy_ids <= set(held) | self.forgotten
            else:
                assert copy_ids <= set(held) and set(held) - copy_ids <= self.forgotten

    @invariant()
    def a_fenced_queue_stays_frozen(self) -> None:
        if self.move is None or self._flipped():
            return
        move_id, source, _ = self.move
        assert self.sm[source].export_queue("q", move_id, self.limit) == self.export_at_fence

    @invariant()
    def snapshots_round_trip(self) -> None:
        for sm in self.sm.values():
            restored = StateMachine(CONFIG)
            restored.restore(sm.snapshot())
            assert restored.snapshot() == sm.snapshot()


Moves.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestMoves = Moves.TestCase
