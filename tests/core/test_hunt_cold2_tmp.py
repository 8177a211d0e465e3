"""A cold restore (core/cold_index.py, issue 20) answers as a warm one.

A snapshot carries the runnable jobs' lease order, `since` order and id order; a restore leaves
those jobs cold (in no heap, not in the id dict) and the machine takes them in as commands and
queries reach them, or as `warm_step` moves them. None of that may show: a machine restored
cold and one restored from the same snapshot without the index (as a version before it reads
it) are given the same commands, the cold one warmed at random points between them (or never),
and must agree on every result, every transition event, the answers to queries asked at random
points, and the next snapshot, byte for byte.
"""

from __future__ import annotations

import random
import uuid

import msgspec
import pytest

from jq_tool.core.cold_index import ColdIndex, ColdJobs, build_cold_index, pack, positions
from jq_tool.core.model import (
    Ack,
    BulkCancel,
    Cancel,
    Command,
    Expire,
    Extend,
    Fail,
    Job,
    JobState,
    Lease,
    LeaseResult,
    NewJob,
    Purge,
    Requeue,
    Submit,
)
from jq_tool.core.state_machine import StateMachine, _Snapshot
from tests.core.test_determinism import CONFIG, QUEUES, T0, Recorder, record_log

KEEP_MS = 20_000


def without_index(data: bytes) -> bytes:
    """The snapshot as a version that does not know the cold index wrote it."""
    fields = msgspec.msgpack.decode(data)
    assert fields[-1] is not None, "the snapshot has no cold index"
    return msgspec.msgpack.encode(fields[:-1])


def backlog(rng: random.Random, jobs: int) -> tuple[StateMachine, int, list[str]]:
    """A machine holding a backlog: mostly runnable jobs of several queues and priorities,
    some scheduled, leased, failed and finished, as a restart meets them."""
    sm = StateMachine(CONFIG)
    now = T0
    ids: list[str] = []
    while len(ids) < jobs:
        now += rng.choice([0, 1, 5, 40])
        batch = []
        for _ in range(rng.randint(1, 30)):
            job_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            ids.append(job_id)
            batch.append(
                NewJob(
                    id=job_id,
                    queue=rng.choice(QUEUES),
                    payload=f"p{len(ids)}",
                    priority=rng.choice([0, 0, 0, 0, 1, 5, -2]),
                    max_retries=rng.randint(0, 2),
                    run_at=None if rng.random() < 0.9 else now + rng.randint(-3000, 9000),
                    owner=rng.choice(["", "team-a"]),
                )
            )
        sm.apply(Submit(now, batch, KEEP_MS))
        if rng.random() < 0.2:
            leased = sm.apply(Lease(now, rng.choice(QUEUES), 5000, [f"l{len(ids)}"]))
            assert isinstance(leased, LeaseResult)
            for job in leased.jobs:
                if rng.random() < 0.5:
                    sm.apply(Ack(now, job.id, job.lease_id))
                elif rng.random() < 0.5:
                    sm.apply(Fail(now, job.id, job.lease_id, error="boom"))
    return sm, now, ids


def next_command(
    rng: random.Random, sm: StateMachine, now: int, ids: list[str], leased: list[Job]
) -> Command:
    kind = rng.choices(
        [
            "lease",
            "ack",
            "fail",
            "extend",
            "cancel",
            "bulk",
            "requeue",
            "submit",
            "expire",
            "purge",
        ],
        [30, 14, 6, 3, 10, 2, 2, 12, 8, 2],
    )[0]
    if kind == "lease":
        return Lease(now, rng.choice(QUEUES), rng.choice([300, 5000]), [f"L{rng.random()}"] * 1)
    if kind in ("ack", "fail", "extend") and leased:
        job = leased.pop(rng.randrange(len(leased)))
        if kind == "ack":
            return Ack(now, job.id, job.lease_id, result="ok")
        if kind == "fail":
            return Fail(now, job.id, job.lease_id, error="e")
        leased.append(job)
        return Extend(now, job.id, 4000, job.lease_id)
    if kind == "cancel":
        return Cancel(now, rng.choice(ids))  # a cold job, most likely
    if kind == "bulk":
        return BulkCancel(now, rng.sample(ids, 5))
    if kind == "requeue":
        dead, _ = sm.list_jobs(state=JobState.DEAD, limit=3)
        return Requeue(now, dead[0].id if dead else rng.choice(ids))
    if kind == "submit":
        new = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        ids.append(new)
        job = NewJob(id=new, queue=rng.choice(QUEUES), payload="n", priority=rng.choice([0, 9]))
        return Submit(now, [job], KEEP_MS)
    if kind == "purge":
        return Purge(now, now - 1000)
    return Expire(now)


def answers(sm: StateMachine, rng: random.Random, ids: list[str], now: int) -> list[object]:
    """What the queries say (encoded, so jobs compare by value)."""
    said: list[object] = [sm.job_count, msgspec.msgpack.encode(sm.stats())]
    for queue in QUEUES:
        said += [sm.oldest_runnable_since(queue), sm.has_runnable(queue, now)]
    for job_id in rng.sample(ids, 5):
        job = sm.get(job_id)
        said.append(None if job is None else msgspec.msgpack.encode(job))
        if job is not None and job.state is JobState.READY:
            said.append(sm.runnable_ahead(job, rng.choice([3, 10_000])))
    page, cursor = sm.list_jobs(state=rng.choice([None, JobState.READY]), limit=7)
    said += [msgspec.msgpack.encode(page), cursor]
    return said


@pytest.mark.parametrize("seed", range(300, 400))
def test_a_cold_machine_answers_as_a_warm_one(seed: int) -> None:
    rng = random.Random(seed)
    source, now, ids = backlog(rng, 3000)
    data = source.snapshot()
    cold, warm = Recorder(), Recorder()
    cold.sm.restore(data)
    warm.sm.restore(without_index(data))
    assert isinstance(cold.sm._jobs, ColdJobs) and cold.sm._jobs.cold > 1000
    assert type(warm.sm._jobs) is dict
    assert cold.sm.snapshot() == warm.sm.snapshot() == data

    leased: list[Job] = []
    warm_every = rng.choice([0.0, 0.05, 0.3])  # never, now and then, often
    for _ in range(10000):
        now += rng.choice([0, 1, 10, 200])
        command = next_command(rng, warm.sm, now, ids, leased)
        if rng.random() < warm_every:
            cold.sm.warm_step(rng.choice([1, 13, 400]))
        if rng.random() < 0.05:
            seed_asked = rng.random()
            said = answers(cold.sm, random.Random(seed_asked), ids, now)
            assert said == answers(warm.sm, random.Random(seed_asked), ids, now)
        result = warm.sm.apply(command)
        assert cold.sm.apply(command) == result
        if isinstance(result, LeaseResult):
            leased += result.jobs
    assert cold.events == warm.events
    assert cold.sm.snapshot() == warm.sm.snapshot()


@pytest.mark.parametrize("cut", [2000, 7000])
def test_the_determinism_log_continues_alike_from_a_cold_restore(cut: int) -> None:
    log, results, _snapshots, _driver = record_log(11, 9000)
    first = Recorder()
    for command in log[:cut]:
        first.sm.apply(command)
    data = first.sm.snapshot()
    cold = Recorder()
    cold.sm.restore(data)
    rng = random.Random(cut)
    for command, expected in zip(log[cut:], results[cut:], strict=True):
        if rng.random() < 0.1:
            cold.sm.warm_step(rng.choice([1, 50]))
        assert cold.sm.apply(command) == expected


def test_leases_come_in_the_same_order_cold_or_warm() -> None:
    rng = random.Random(9)
    source, now, _ids = backlog(rng, 20_000)
    data = source.snapshot()
    cold, warm = StateMachine(CONFIG), StateMachine(CONFIG)
    cold.restore(data)
    warm.restore(without_index(data))
    for queue in QUEUES:
        while True:
            got = warm.apply(Lease(now, queue, 60_000, ["a", "b", "c"]))
            assert cold.apply(Lease(now, queue, 60_000, ["a", "b", "c"])) == got
            assert isinstance(got, LeaseResult)
            if not got.jobs:
                break
    assert cold.stats() == warm.stats()
    assert cold.snapshot() == warm.snapshot()


def test_warm_step_takes_every_cold_job_in_and_changes_nothing() -> None:
    source, _now, ids = backlog(random.Random(4), 5000)
    data = source.snapshot()
    sm = StateMachine(CONFIG)
    sm.restore(data)
    jobs = sm._jobs
    assert isinstance(jobs, ColdJobs)
    before = jobs.cold
    assert sm.warm_step(100) and jobs.cold == before - 100
    while sm.warm_step(1000):
        pass
    assert jobs.cold == 0 and not sm.warm_step(1000)
    assert dict.__len__(jobs) == sm.job_count == len(source._jobs)
    assert all(dict.get(jobs, job_id) is not None for job_id in source._jobs)
    assert sm.snapshot() == data


def test_a_version_without_the_index_reads_the_snapshot() -> None:
    """An older release decodes the snapshot with a struct that ends before the index: msgspec
    skips the trailing field, so a downgrade restores the same jobs (warm)."""
    source, _now, _ids = backlog(random.Random(5), 500)
    data = source.snapshot()
    fields = msgspec.structs.fields(_Snapshot)
    assert fields[-1].name == "cold"
    older = msgspec.defstruct(
        "OlderSnapshot",
        [(f.name, f.type) if f.required else (f.name, f.type, f.default) for f in fields[:-1]],
        array_like=True,
    )
    decoded = msgspec.msgpack.decode(data, type=older)
    assert decoded.jobs == msgspec.msgpack.decode(data, type=_Snapshot).jobs  # type: ignore[attr-defined]
    assert len(decoded.jobs) == len(source._jobs)  # type: ignore[attr-defined]


def _with_index(data: bytes, index: ColdIndex) -> bytes:
    snap = msgspec.msgpack.decode(data, type=_Snapshot)
    return msgspec.msgpack.encode(msgspec.structs.replace(snap, cold=index))


def test_a_malformed_index_is_refused_and_the_state_kept() -> None:
    source, _now, _ids = backlog(random.Random(6), 300)
    data = source.snapshot()
    index = msgspec.msgpack.decode(data, type=_Snapshot).cold
    assert index is not None and index.queues
    size = len(source._jobs)
    first, *rest = index.queues
    broken = [
        # a position past the jobs
        ColdIndex(index.queues, index.by_id[:-4] + pack([size]), index.warm),
        # a runnable job missing from the id order
        ColdIndex(index.queues, index.by_id[:-4], index.warm),
        # half a position
        ColdIndex(index.queues, index.by_id + b"\x00\x00", index.warm),
        # a queue's since order of another length than its lease order
        ColdIndex(
            [msgspec.structs.replace(first, since_order=first.lease_order[:-4]), *rest],
            index.by_id,
            index.warm,
        ),
        # a warm job left out
        ColdIndex(index.queues, index.by_id, index.warm[:-4]),
    ]
    sm = StateMachine(CONFIG)
    sm.restore(data)
    for bad in broken:
        with pytest.raises(ValueError, match="cold index"):
            sm.restore(_with_index(data, bad))
        assert sm.snapshot() == data


def test_a_cold_job_leased_then_forgotten_without_a_lookup() -> None:
    """A lease takes a job from a cold run; its lease expires, it ends DEAD and a purge forgets
    it: nothing on that way looks it up by id, yet it must be in the id dict to be forgotten."""
    sm = StateMachine(CONFIG)
    sm.apply(Submit(T0, [NewJob(id=f"j{i}", queue="q", max_retries=0) for i in range(50)], 0))
    cold = StateMachine(CONFIG)
    cold.restore(sm.snapshot())
    assert isinstance(cold._jobs, ColdJobs) and cold._jobs.cold == 50
    leased = cold.apply(Lease(T0 + 1, "q", 10, [f"l{i}" for i in range(10)]))
    assert isinstance(leased, LeaseResult) and len(leased.jobs) == 10
    cold.apply(Expire(T0 + 100))
    assert cold.stats().totals.dead == 10
    cold.apply(Purge(T0 + 200, T0 + 150))
    assert cold.stats().totals.dead == 0 and cold.job_count == 40
    assert all(cold.get(f"j{i}") is None for i in range(10))
    assert all(cold.get(f"j{i}") is not None for i in range(10, 50))


def test_the_since_heap_rebuilt_under_cancels_keeps_the_oldest_cold_job() -> None:
    """Mass cancels rebuild the heaps without their stale entries. The `since` heap must keep
    the oldest job even when its lease-order entry is still cold (it has low priority)."""
    sm = StateMachine(CONFIG)
    for i in range(100):  # each older than the next
        sm.apply(Submit(T0 + i, [NewJob(id=f"old{i}", queue="q", priority=0)], 0))
    new = [NewJob(id=f"new{i}", queue="q", priority=5) for i in range(3000)]
    sm.apply(Submit(T0 + 1000, new, 0))
    data = sm.snapshot()
    cold, warm = StateMachine(CONFIG), StateMachine(CONFIG)
    cold.restore(data)
    warm.restore(without_index(data))
    for machine in (cold, warm):
        assert machine.oldest_runnable_since("q") == T0
        for i in range(2500):
            machine.apply(Cancel(T0 + 2000, f"new{i}"))
        machine.apply(Lease(T0 + 2000, "q", 1000, ["l"]))
    assert cold.oldest_runnable_since("q") == warm.oldest_runnable_since("q") == T0
    assert cold.snapshot() == warm.snapshot()


@pytest.mark.parametrize(
    "shape",
    ["one priority, in order", "one priority, run_at falls", "seq falls", "mixed priorities"],
)
def test_the_index_holds_each_order_a_plain_sort_gives(shape: str) -> None:
    """`build_cold_index` tells the usual queue (one priority, run_at and seq rising with the
    position) without a key per job and sorts the others: both must give what sorting every
    runnable job by its lease key, its `since` key and its id gives."""
    rng = random.Random(shape)
    now = T0 + 10_000
    jobs = []
    for position in range(3_000):
        run_at = (
            T0 + position if shape != "one priority, run_at falls" else T0 + rng.randrange(9_000)
        )
        seq = position + 1 if shape != "seq falls" else 10_000 - position
        priority = rng.choice([0, 0, 3, -1]) if shape == "mixed priorities" else 2
        state = JobState.READY if rng.random() < 0.9 else JobState.RUNNING
        if rng.random() < 0.05:
            run_at = now + 1  # scheduled: not runnable, not cold
        queue = rng.choice(["a", "b"])
        jobs.append(Job(str(uuid.UUID(int=rng.getrandbits(128))), queue, "", priority, 3, 0,
                        state, T0, run_at, seq))  # fmt: skip
    index = build_cold_index(jobs, now)
    runnable = {
        queue: [p for p, job in enumerate(jobs)
                if job.queue == queue and job.state is JobState.READY and job.run_at <= now]
        for queue in ("a", "b")
    }  # fmt: skip
    for entry in index.queues:
        members = runnable[entry.name]
        lease = sorted(members, key=lambda p: (-jobs[p].priority, jobs[p].run_at, jobs[p].seq))
        since = sorted(members, key=lambda p: (jobs[p].run_at, jobs[p].seq))
        assert list(positions(entry.lease_order, len(jobs))) == lease
        # An empty `since`: the lease order is the since order (one priority).
        assert (
            list(positions(entry.since_order, len(jobs)) if entry.since_order else lease) == since
        )
    cold = sorted(p for members in runnable.values() for p in members)
    assert list(positions(index.by_id, len(jobs))) == sorted(cold, key=lambda p: jobs[p].id)
    assert list(positions(index.warm, len(jobs))) == sorted(set(range(len(jobs))) - set(cold))


def test_a_cold_job_failed_and_back_does_not_hide_older_waiting_jobs() -> None:
    """Found by a longer run of the cold/warm comparison (seed 139, 7,500 steps): a cold job
    leased, failed and back to READY keeps its place in the cold `since` run, sorted by its old
    run_at; fed by its new one it sorted after the queue's oldest waiting job, the feed stopped
    there and the queue's latency counted from a later job than a warm machine's."""
    src = StateMachine(CONFIG)
    src.apply(Submit(T0, [NewJob(id=i, queue="q", max_retries=1) for i in "ABC"]))
    data = src.snapshot()
    cold, warm = StateMachine(CONFIG), StateMachine(CONFIG)
    cold.restore(data)
    warm.restore(without_index(data))
    for sm in (cold, warm):
        leased = sm.apply(Lease(T0 + 10, "q", 5_000, ["l1"]))
        assert isinstance(leased, LeaseResult) and leased.jobs[0].id == "A"
        sm.apply(Fail(T0 + 10, "A", leased.jobs[0].lease_id, error="e"))
        sm.apply(Submit(T0 + 20, [NewJob(id="D", queue="q")]))
        # A is due again (its backoff over) and READY, behind B and C.
        sm.apply(Expire(T0 + 600_000))
    assert warm.oldest_runnable_since("q") == T0  # B, waiting since the start
    assert cold.oldest_runnable_since("q") == T0
    assert cold.snapshot() == warm.snapshot()
