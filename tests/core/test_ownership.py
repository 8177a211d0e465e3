"""Ownership of queues by a shard's state machine (issue 23, core/ownership.py).

Off by default and never changing what an unsharded machine does; on, it refuses commands on
queues the shard does not serve (NOT_OWNER) or that are fenced for a move (QUEUE_MOVING), and a
move (fence, export, import in chunks, adopt, release) carries every job with its state, lease,
attempts and result, its idempotency keys and settings, in order, exactly once.
"""

from __future__ import annotations

import msgspec
import pytest

from jq_tool.core.job_ids import new_job_id, shard_of_job_id
from jq_tool.core.model import (
    AbortMove,
    Ack,
    AdoptQueue,
    Cancel,
    Command,
    Error,
    ErrorCode,
    Expire,
    Extend,
    Fail,
    FenceQueue,
    ImportJobs,
    JobFlow,
    JobResult,
    JobState,
    Lease,
    LeaseResult,
    NewJob,
    OwnershipResult,
    Purge,
    ReleaseQueue,
    SetQueue,
    StartShard,
    Submit,
    SubmitResult,
    Submitted,
    decode_command,
    encode_command,
)
from jq_tool.core.ownership import chunks_crc
from jq_tool.core.state_machine import StateMachine, StateMachineConfig

CONFIG = StateMachineConfig(retry_base_ms=200, retry_max_ms=5000)
T0 = 1_700_000_000_000


def shard(number: int, *queues: str) -> StateMachine:
    sm = StateMachine(CONFIG)
    assert isinstance(sm.apply(StartShard(number, T0)), OwnershipResult)
    for queue in queues:
        assert sm.apply(AdoptQueue(queue, 1, now=T0)) == OwnershipResult(queue, True, 1)
    return sm


def submit(sm: StateMachine, now: int, *jobs: NewJob) -> list[Submitted | Error]:
    result = sm.apply(Submit(now, list(jobs)))
    assert isinstance(result, SubmitResult)
    return result.entries


def code(result: object) -> ErrorCode:
    assert isinstance(result, Error), result
    return result.code


def test_job_ids_name_their_shard() -> None:
    for number in (0, 1, 0x2A, 0xFFFF):
        job_id = new_job_id(number)
        assert len(job_id) == 36 and job_id[14] == "4"
        assert shard_of_job_id(job_id) == number
    assert shard_of_job_id(new_job_id()) is not None  # any UUID parses; only shards ask
    assert shard_of_job_id("job-1") is None and shard_of_job_id("x" * 36) is None
    with pytest.raises(ValueError):
        new_job_id(0x10000)
    assert len({new_job_id(3) for _ in range(10_000)}) == 10_000


def test_off_by_default_and_the_commands_need_a_shard() -> None:
    sm = StateMachine(CONFIG)
    assert sm.ownership.shard is None
    assert code(sm.apply(AdoptQueue("q", 1))) is ErrorCode.INVALID_STATE
    assert code(sm.apply(FenceQueue("q", "m"))) is ErrorCode.INVALID_STATE
    # and a machine holding jobs cannot become a shard afterwards
    submit(sm, T0, NewJob("a", "q"))
    assert code(sm.apply(StartShard(1, T0))) is ErrorCode.INVALID_STATE
    assert sm.snapshot() == _replayed([Submit(T0, [NewJob("a", "q")])]).snapshot()


def test_start_shard_is_idempotent_and_names_one_shard() -> None:
    sm = shard(3)
    assert sm.apply(StartShard(3)) == OwnershipResult("", False, repeated=True)
    assert code(sm.apply(StartShard(4))) is ErrorCode.INVALID_STATE


def test_commands_on_queues_not_adopted_answer_not_owner() -> None:
    sm = shard(1, "mine")
    entries = submit(sm, T0, NewJob("a", "mine"), NewJob("b", "theirs"))
    assert entries[0] == Submitted("a")
    assert code(entries[1]) is ErrorCode.NOT_OWNER and "shard 1" in entries[1].message  # type: ignore[union-attr]
    assert code(sm.apply(Lease(T0, "theirs", 1000, ["l1"]))) is ErrorCode.NOT_OWNER
    assert code(sm.apply(SetQueue(T0, "theirs", paused=True))) is ErrorCode.NOT_OWNER
    leased = sm.apply(Lease(T0, "mine", 1000, ["l1"]))
    assert isinstance(leased, LeaseResult) and [j.id for j in leased.jobs] == ["a"]
    # adopting again at the same epoch is a repeat; at another one, a refusal
    assert sm.apply(AdoptQueue("mine", 1)).repeated  # type: ignore[union-attr]
    assert code(sm.apply(AdoptQueue("mine", 2))) is ErrorCode.INVALID_STATE


def test_idempotency_keys_are_per_queue_when_sharded() -> None:
    sm = shard(1, "a", "b")
    first = submit(sm, T0, NewJob("j1", "a", idempotency_key="k"))
    again = submit(sm, T0, NewJob("j2", "a", idempotency_key="k"))
    other = submit(sm, T0, NewJob("j3", "b", idempotency_key="k"))
    assert first == [Submitted("j1")] and again == [Submitted("j1", duplicate=True)]
    assert other == [Submitted("j3")]  # unsharded, this would have answered j1
    assert sm.get("j1").idempotency_key == "k"  # type: ignore[union-attr]


def test_parents_must_share_the_childs_queue_when_sharded() -> None:
    sm = shard(1, "a", "b")
    submit(sm, T0, NewJob("p", "a"))
    entries = submit(
        sm, T0, NewJob("c1", "a", flow=JobFlow(depends_on=["p"])),
        NewJob("c2", "b", flow=JobFlow(depends_on=["p"])),
    )  # fmt: skip
    assert entries[0] == Submitted("c1")
    assert code(entries[1]) is ErrorCode.INVALID


def _busy_source() -> tuple[StateMachine, list[str]]:
    """Shard 1 with queue "q" holding jobs in every state, keys and settings, and queue "r"."""
    a = shard(1, "q", "r")
    now = T0 + 10
    ids = [f"q-{i}" for i in range(12)]
    submit(
        a, now,
        *[NewJob(job_id, "q", payload="p" * 300, priority=i % 3, max_retries=1,
                 idempotency_key=f"key-{i}", owner="team", fingerprint=f"f{i}")
          for i, job_id in enumerate(ids)],
        NewJob("later", "q", run_at=now + 60_000),
        NewJob("child", "q", owner="team", flow=JobFlow(depends_on=["q-0"])),
        NewJob("r-1", "r"),
        NewJob("uniq", "q", owner="team", flow=JobFlow(unique_key="nightly")),
    )  # fmt: skip
    a.apply(SetQueue(now, "q", concurrency=9))
    leased = a.apply(Lease(now + 1, "q", 5_000, [f"lease-{i}" for i in range(8)]))
    assert isinstance(leased, LeaseResult) and len(leased.jobs) == 8
    order = [job.id for job in leased.jobs]
    a.apply(Ack(now + 2, order[0], "lease-0", result="done"))
    a.apply(Fail(now + 2, order[1], "lease-1", error="boom"))  # RETRY
    a.apply(Fail(now + 2, order[2], "lease-2", error="fatal", retry=False))  # DEAD
    a.apply(Cancel(now + 2, ids[-1]))
    return a, ids


def _move(a: StateMachine, b: StateMachine, queue: str, move_id: str, limit: int) -> None:
    assert a.apply(FenceQueue(queue, move_id, T0 + 100)).fenced  # type: ignore[union-attr]
    chunks = a.export_queue(queue, move_id, limit)
    for chunk in chunks:
        # as the engine would: through the log's encoding
        staged = b.apply(decode_command(encode_command(chunk)))
        assert isinstance(staged, OwnershipResult) and not staged.repeated
    assert b.apply(chunks[0]).repeated  # type: ignore[union-attr]
    adopted = b.apply(AdoptQueue(queue, 2, move_id, T0 + 101))
    assert isinstance(adopted, OwnershipResult) and adopted.owned and adopted.epoch == 2
    released = a.apply(ReleaseQueue(queue, move_id, 2, T0 + 102))
    assert isinstance(released, OwnershipResult) and not released.owned


def _view(sm: StateMachine, queue: str) -> list[dict[str, object]]:
    jobs, _ = sm.list_jobs(queue=queue, limit=1000)
    out = []
    for job in reversed(jobs):
        record = msgspec.structs.asdict(job)
        record.pop("seq")
        out.append(record)
    return out


@pytest.mark.parametrize("limit", [512 * 1024, 700])
def test_a_move_carries_every_job_lease_key_and_setting(limit: int) -> None:
    a, ids = _busy_source()
    b = shard(2, "s")
    submit(b, T0, NewJob("s-1", "s"))
    before = _view(a, "q")
    running = [j for j in a.running("q")]
    stats_before = a.queue_stats("q")
    a_awaited = a.awaited_parents("child")
    assert a_awaited == ["q-0"] or a.get("q-0").state is JobState.ACKED  # type: ignore[union-attr]
    _move(a, b, "q", "move-1", limit)
    assert _view(b, "q") == before  # states, attempts, lease ids, lease_until, results, order
    assert b.queue_stats("q") == stats_before
    seqs = [job.seq for job in reversed(b.list_jobs(queue="q", limit=1000)[0])]
    assert seqs == sorted(seqs) and seqs[0] > b.get("s-1").seq  # type: ignore[union-attr]
    assert b.queue_settings("q").concurrency == 9
    # a worker's lease still settles, with the same lease id, on the new shard
    held = running[0]
    done = b.apply(Ack(T0 + 200, held.id, held.lease_id, result="ok"))
    assert isinstance(done, JobResult) and done.job.state is JobState.ACKED
    # keys moved: a retried submit answers the same job on the new shard
    retried = NewJob("dup", "q", idempotency_key="key-3", owner="team", fingerprint="f3")
    assert submit(b, T0 + 200, retried) == [Submitted("q-3", duplicate=True)]
    # unique keys came along (and are per queue)
    again = NewJob("uniq-2", "q", owner="team", flow=JobFlow(unique_key="nightly"))
    assert submit(b, T0 + 200, again) == [Submitted("uniq", unique=True)]
    # the waiting child still waits for its parent
    assert b.get("child").state is JobState.WAITING  # type: ignore[union-attr]
    assert b.awaited_parents("child") == a_awaited
    # the source forgot the queue and says where it went
    assert a.get(ids[0]) is None and a.queue_stats("q") is None
    assert a.queue_stats("r") is not None and a.get("r-1") is not None
    assert code(submit(a, T0 + 200, NewJob("x", "q"))[0]) is ErrorCode.NOT_OWNER
    refusal = a.apply(Ack(T0 + 200, running[1].id, running[1].lease_id))
    assert code(refusal) is ErrorCode.NOT_OWNER and "shard 2" in refusal.message  # type: ignore[union-attr]
    assert a.ownership.moved_job(ids[0]) == 2
    assert a.ownership.tombstones["q"].target == 2
    assert a.idempotency_key_count == 0
    # repeats of every step change nothing
    assert a.apply(ReleaseQueue("q", "move-1", 2)).repeated  # type: ignore[union-attr]
    assert b.apply(AdoptQueue("q", 2, "move-1")).repeated  # type: ignore[union-attr]
    snapshot = b.snapshot()
    assert b.apply(ImportJobs("move-1", "q", 0, 1)).repeated  # type: ignore[union-attr]
    assert b.snapshot() == snapshot


def test_a_fenced_queue_is_frozen() -> None:
    a, ids = _busy_source()
    assert a.apply(FenceQueue("q", "m1", T0 + 100)).fenced  # type: ignore[union-attr]
    assert a.apply(FenceQueue("q", "m1")).repeated  # type: ignore[union-attr]
    assert code(a.apply(FenceQueue("q", "m2"))) is ErrorCode.QUEUE_MOVING
    export = a.export_queue("q", "m1")
    running = a.running("q")
    for command in [
        Submit(T0 + 100, [NewJob("n", "q")]),
        Lease(T0 + 100, "q", 1000, ["x"]),
        Ack(T0 + 100, running[0].id, running[0].lease_id),
        Extend(T0 + 100, running[0].id, 1000, running[0].lease_id),
        Cancel(T0 + 100, "later"),
        SetQueue(T0 + 100, "q", paused=True),
    ]:
        result = a.apply(command)
        if isinstance(result, SubmitResult):
            result = result.entries[0]  # type: ignore[assignment]
        assert code(result) is ErrorCode.QUEUE_MOVING, command
    # the ticker's commands pass it by: leases past due stay, finished jobs and keys stay
    far = T0 + 10_000_000
    assert a.apply(Expire(far)) is not None
    assert a.apply(Purge(far, far, max_idempotency_keys=1)) is not None
    assert a.export_queue("q", "m1") == export
    assert len(a.running("q")) == len(running)
    assert submit(a, far, NewJob("r-2", "r")) == [Submitted("r-2")]  # other queues go on
    # an abort unfences; the expired leases then expire
    assert a.apply(AbortMove("q", "m1", far)).fenced is False  # type: ignore[union-attr]
    assert a.apply(Expire(far + 1)).expired == len(running)  # type: ignore[union-attr]
    assert code(a.apply(FenceQueue("q", "m1"))) is ErrorCode.INVALID_STATE  # ended


def test_adopt_checks_every_chunk_and_the_crc() -> None:
    a, _ = _busy_source()
    a.apply(FenceQueue("q", "m1", T0 + 100))
    chunks = a.export_queue("q", "m1", 700)
    assert len(chunks) > 3 and chunks_crc(chunks) == chunks[0].crc
    b = shard(2)
    for chunk in chunks[:1] + chunks[2:]:
        b.apply(chunk)
    missing = b.apply(AdoptQueue("q", 2, "m1"))
    assert code(missing) is ErrorCode.INVALID_STATE and "not staged" in missing.message  # type: ignore[union-attr]
    assert chunks[1].jobs
    changed = msgspec.structs.replace(chunks[1].jobs[0], payload="changed on the way")
    b.apply(msgspec.structs.replace(chunks[1], jobs=[changed, *chunks[1].jobs[1:]]))
    bad = b.apply(AdoptQueue("q", 2, "m1"))
    assert code(bad) is ErrorCode.INVALID_STATE and "crc" in bad.message  # type: ignore[union-attr]
    assert b.job_count == 0 and b.ownership.owner_of("q") is None
    # abort on the target discards the staging and refuses late chunks
    assert b.apply(AbortMove("q", "m1")) == OwnershipResult("q", False)
    assert b.ownership.staged_chunks("m1") == []
    assert code(b.apply(chunks[0])) is ErrorCode.INVALID_STATE
    assert b.apply(AbortMove("q", "m1")).repeated  # type: ignore[union-attr]


def test_a_target_gives_back_a_queue_it_adopted_but_never_served() -> None:
    a, _ = _busy_source()
    b = shard(2)
    a.apply(FenceQueue("q", "m1"))
    for chunk in a.export_queue("q", "m1"):
        b.apply(chunk)
    b.apply(AdoptQueue("q", 2, "m1"))
    assert code(b.apply(AbortMove("q", "m1"))) is ErrorCode.INVALID_STATE  # release first
    assert b.apply(ReleaseQueue("q", "m1", 1)).owned is False  # type: ignore[union-attr]
    assert b.job_count == 0
    before = a.job_count
    assert a.apply(AbortMove("q", "m1")).fenced is False  # type: ignore[union-attr]
    assert a.job_count == before and submit(a, T0 + 500, NewJob("n", "q")) == [Submitted("n")]


def _replayed(log: list[Command]) -> StateMachine:
    sm = StateMachine(CONFIG)
    for command in log:
        sm.apply(decode_command(encode_command(command)))
    return sm


def test_replay_and_snapshots_keep_the_ownership_state() -> None:
    a_log: list[Command] = [StartShard(1, T0), AdoptQueue("q", 1, now=T0), AdoptQueue("r", 1)]
    a_log += [Submit(T0 + i, [NewJob(f"j{i}", "q" if i % 3 else "r", idempotency_key=f"k{i}")])
              for i in range(30)]  # fmt: skip
    a_log += [Lease(T0 + 40, "q", 5000, ["l1", "l2"]), FenceQueue("q", "m1", T0 + 50)]
    a = _replayed(a_log)
    chunks = a.export_queue("q", "m1", 300)
    b_log: list[Command] = [StartShard(2, T0), AdoptQueue("s", 1), *chunks[:2]]
    b_half = _replayed(b_log)  # staged, not adopted: the staging is in the snapshot
    restored = StateMachine(CONFIG)
    restored.restore(b_half.snapshot())
    assert restored.snapshot() == b_half.snapshot()
    assert restored.ownership.staged_chunks("m1") == [0, 1]
    b_log += [*chunks[2:], AdoptQueue("q", 2, "m1", T0 + 60)]
    a_log += [ReleaseQueue("q", "m1", 2, T0 + 61)]
    for log in (a_log, b_log):
        first, second = _replayed(log), _replayed(log)
        assert first.snapshot() == second.snapshot()
        restored = StateMachine(CONFIG)
        restored.restore(first.snapshot())
        assert restored.snapshot() == first.snapshot()
        assert restored.ownership.dump() == first.ownership.dump()
    a_restored = StateMachine(CONFIG)
    a_restored.restore(_replayed(a_log).snapshot())
    assert a_restored.ownership.moved_job("j1") == 2
    assert code(a_restored.apply(Lease(T0 + 70, "q", 10, ["z"]))) is ErrorCode.NOT_OWNER
    # a fenced machine restored stays fenced
    fenced = StateMachine(CONFIG)
    fenced.restore(a.snapshot())
    assert fenced.ownership.fenced == {"q": "m1"}
    assert fenced.export_queue("q", "m1", 300) == chunks


def test_a_queue_moves_back_and_forth() -> None:
    a, ids = _busy_source()
    b = shard(2)
    before = _view(a, "q")
    _move(a, b, "q", "there", 700)
    # and back: the first shard's tombstone and stubs give way to the queue's return
    assert b.apply(FenceQueue("q", "back", T0 + 300)).fenced  # type: ignore[union-attr]
    for chunk in b.export_queue("q", "back"):
        assert isinstance(a.apply(chunk), OwnershipResult)
    assert a.apply(AdoptQueue("q", 3, "back", T0 + 301)).epoch == 3  # type: ignore[union-attr]
    assert b.apply(ReleaseQueue("q", "back", 1, T0 + 302)).epoch == 3  # type: ignore[union-attr]
    assert _view(a, "q") == before
    assert "q" not in a.ownership.tombstones and a.ownership.moved_job(ids[0]) is None
    assert b.ownership.moved_job(ids[0]) == 1 and b.job_count == 0
    assert code(b.apply(Lease(T0 + 400, "q", 10, ["z"]))) is ErrorCode.NOT_OWNER


def test_an_empty_adoption_is_given_back_without_a_move() -> None:
    sm = shard(1, "lost", "busy")
    submit(sm, T0, NewJob("b1", "busy"))
    given = sm.apply(ReleaseQueue("lost", "", 2, T0 + 1))
    assert given == OwnershipResult("lost", False, 2)
    assert sm.apply(ReleaseQueue("lost", "", 2)).repeated  # type: ignore[union-attr]
    assert code(submit(sm, T0 + 2, NewJob("x", "lost"))[0]) is ErrorCode.NOT_OWNER
    # a queue holding jobs never leaves without a move (its jobs would be lost)
    assert code(sm.apply(ReleaseQueue("busy", "", 2))) is ErrorCode.INVALID_STATE
    assert sm.get("b1") is not None


def test_a_snapshot_written_before_ownership_loads() -> None:
    sm = StateMachine(CONFIG)
    submit(sm, T0, NewJob("a", "q", idempotency_key="k"), NewJob("b", "r"))
    fields = msgspec.msgpack.decode(sm.snapshot())
    assert fields[-2] is None  # ownership off: the field, empty (the cold index follows it)
    older = msgspec.msgpack.encode(fields[:-2])  # as the release before it wrote them
    restored = StateMachine(CONFIG)
    restored.restore(older)
    assert restored.snapshot() == sm.snapshot()
    assert restored.ownership.shard is None


def test_export_chunks_stay_under_the_limit() -> None:
    from jq_tool.core.ownership import CHUNK_BYTES

    sm = shard(1, "big")
    for start in range(0, 6000, 500):
        jobs = [NewJob(f"big-{i}", "big", "p" * 300, idempotency_key=f"k{i}")
                for i in range(start, start + 500)]  # fmt: skip
        submit(sm, T0, *jobs)
    sm.apply(FenceQueue("big", "m", T0))
    chunks = sm.export_queue("big", "m")
    sizes = [len(encode_command(chunk)) for chunk in chunks]
    assert len(chunks) >= 4 and max(sizes) <= CHUNK_BYTES + 1024, sizes
    assert sum(len(chunk.jobs) for chunk in chunks) == 6000
    assert sum(len(chunk.keys) for chunk in chunks) == 6000
