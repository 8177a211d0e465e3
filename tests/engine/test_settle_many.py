"""`settle_many`, the engine side of batch ack and ack-and-lease-next, against a real WAL: many
settlements and the next lease in one durable write, per-settlement outcomes, a lease that does
not depend on them, and the same state after a graceful restart and after a crash's replay."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest

from jq_tool.core.model import ErrorCode, Job, JobState
from jq_tool.engine.base import CommandRejected, JobSpec, LeaseNext, Settlement, StorageFull
from jq_tool.engine.factory import engine_config
from jq_tool.engine.local import LocalEngine
from jq_tool.settings import Settings
from tests.engine.wal_hooks import count_appends, fail_writes


def make_engine(data_dir: Path) -> LocalEngine:
    return LocalEngine(engine_config(Settings(data_dir=data_dir, lease_check_interval_ms=50)))


@pytest.fixture
async def engine(tmp_path: Path):
    engine = make_engine(tmp_path)
    await engine.start()
    yield engine
    await engine.stop()


async def leased(engine: LocalEngine, count: int, queue: str = "default") -> list[Job]:
    await engine.submit_many([JobSpec(payload=f"p{i}", queue=queue) for i in range(count)])
    jobs = await engine.lease(queue, max_jobs=count)
    assert len(jobs) == count
    return jobs


async def test_settlements_and_the_next_lease_share_one_durable_write(
    engine: LocalEngine,
) -> None:
    jobs = await leased(engine, 3)
    await engine.submit_many([JobSpec(payload=f"next{i}") for i in range(5)])
    appends = count_appends(engine)
    outcomes, next_jobs = await engine.settle_many(
        [
            Settlement(jobs[0].id, jobs[0].lease_id, result="r0"),
            Settlement(jobs[1].id, jobs[1].lease_id, error="boom"),
            Settlement(jobs[2].id, jobs[2].lease_id),
        ],
        lease_next=LeaseNext("default", max_jobs=2, lease_ms=60_000),
    )
    assert appends == [4]  # three settlements and one lease: one write, one fdatasync
    assert [o.state for o in outcomes if isinstance(o, Job)] == [
        JobState.ACKED,
        JobState.RETRY,
        JobState.ACKED,
    ]
    assert isinstance(outcomes[0], Job) and outcomes[0].result == "r0"
    assert isinstance(outcomes[1], Job) and outcomes[1].result_error == "boom"
    assert [j.payload for j in next_jobs] == ["next0", "next1"]
    for job in next_jobs:
        assert job.state is JobState.RUNNING and job.lease_id and job.lease_until
        assert job.lease_until - engine._machine._now == 60_000


async def test_a_refused_settlement_does_not_stop_the_others_or_the_lease(
    engine: LocalEngine,
) -> None:
    jobs = await leased(engine, 2)
    await engine.submit(JobSpec(payload="next"))
    appends = count_appends(engine)
    outcomes, next_jobs = await engine.settle_many(
        [
            Settlement(jobs[0].id, "not-the-lease"),
            Settlement("no-such-job", None),
            Settlement(jobs[1].id, jobs[1].lease_id),
            Settlement(jobs[1].id, jobs[1].lease_id),  # the same lease twice
        ],
        lease_next=LeaseNext(),
    )
    codes = [o.code if isinstance(o, CommandRejected) else o.state for o in outcomes]
    assert codes == [
        ErrorCode.LEASE_MISMATCH,
        ErrorCode.NOT_FOUND,
        JobState.ACKED,
        ErrorCode.INVALID_STATE,
    ]
    # The unknown id wrote nothing; the refused ones are applied (and refused) in log order.
    assert appends == [4]
    assert [j.payload for j in next_jobs] == ["next"]
    first = await engine.get(jobs[0].id)
    assert first is not None and first.state is JobState.RUNNING  # its real lease holds


async def test_nothing_runnable_leases_nothing_and_writes_no_lease(engine: LocalEngine) -> None:
    [job] = await leased(engine, 1)
    await engine.submit(JobSpec(payload="elsewhere", queue="other"))
    appends = count_appends(engine)
    outcomes, next_jobs = await engine.settle_many(
        [Settlement(job.id, job.lease_id)], lease_next=LeaseNext("default", max_jobs=10)
    )
    assert next_jobs == [] and appends == [1]
    assert isinstance(outcomes[0], Job) and outcomes[0].state is JobState.ACKED
    # Without lease_next it is a batch ack alone; an empty batch writes nothing at all.
    assert await engine.settle_many([]) == ([], [])
    assert appends == [1]


async def test_settle_many_without_settlements_is_a_lease(engine: LocalEngine) -> None:
    await engine.submit(JobSpec(payload="x"))
    outcomes, next_jobs = await engine.settle_many([], lease_next=LeaseNext())
    assert outcomes == [] and [j.payload for j in next_jobs] == ["x"]


async def test_concurrent_batches_share_fsyncs_and_lease_each_job_once(
    engine: LocalEngine,
) -> None:
    await engine.submit_many([JobSpec(payload=str(i)) for i in range(400)])
    seen: list[str] = []

    async def worker() -> None:
        [job] = await engine.lease("default")
        while True:
            seen.append(job.id)
            outcomes, jobs = await engine.settle_many(
                [Settlement(job.id, job.lease_id)], lease_next=LeaseNext()
            )
            assert isinstance(outcomes[0], Job) and outcomes[0].state is JobState.ACKED
            if not jobs:
                return
            [job] = jobs

    appends = count_appends(engine)
    await asyncio.gather(*(worker() for _ in range(8)))
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 400
    assert engine.stats().counters.acked == 400
    assert len(appends) < 400  # group commit across the workers' requests


async def test_outcomes_survive_a_restart_and_a_crash_replay(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    await engine.start()
    jobs = await leased(engine, 2)
    await engine.submit(JobSpec(payload="next"))
    _, [next_job] = await engine.settle_many(
        [Settlement(jobs[0].id, jobs[0].lease_id, "ok"), Settlement(jobs[1].id, None, error="e")],
        lease_next=LeaseNext(),
    )
    # As after a crash: no final snapshot, only the WAL closed; recovery replays the records.
    assert engine._flusher and engine._ticker and engine._wal_thread
    engine._flusher.cancel()
    engine._ticker.cancel()
    engine._wal_thread.close()
    engine._wal.close()

    async def check(again: LocalEngine) -> None:
        first, second, leased_again = (
            await again.get(jobs[0].id),
            await again.get(jobs[1].id),
            await again.get(next_job.id),
        )
        assert first is not None and first.state is JobState.ACKED and first.result == "ok"
        assert second is not None and second.state is JobState.RETRY
        assert leased_again is not None and leased_again.state is JobState.RUNNING
        assert leased_again.lease_id == next_job.lease_id

    replayed = make_engine(tmp_path)
    await replayed.start()
    await check(replayed)
    await replayed.stop()  # a graceful stop: the next start reads its snapshot
    restarted = make_engine(tmp_path)
    await restarted.start()
    try:
        await check(restarted)
        # The worker that got the job before the crash can still settle it.
        outcomes, _ = await restarted.settle_many([Settlement(next_job.id, next_job.lease_id)])
        assert isinstance(outcomes[0], Job) and outcomes[0].state is JobState.ACKED
    finally:
        await restarted.stop()


async def test_a_full_disk_refuses_the_whole_batch(
    engine: LocalEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    [job] = await leased(engine, 1)
    await engine.submit(JobSpec(payload="next"))
    fail_writes(monkeypatch, errno.ENOSPC, "No space left on device")
    with pytest.raises(StorageFull):
        await engine.settle_many([Settlement(job.id, job.lease_id)], lease_next=LeaseNext())
    monkeypatch.undo()
    # Nothing was applied: the job still runs under its lease, and the next one is still READY.
    current = await engine.get(job.id)
    assert current is not None and current.state is JobState.RUNNING
    outcomes, [next_job] = await engine.settle_many(
        [Settlement(job.id, job.lease_id)], lease_next=LeaseNext()
    )
    assert isinstance(outcomes[0], Job) and next_job.payload == "next"
