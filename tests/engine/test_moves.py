"""The move driver (engine/moves.py) over two real LocalEngines, each a shard with its own WAL.

A queue with jobs in every state (leased ones among them) moves from shard 1 to shard 2. The
driver is stopped after each step of docs/scaling.md §2.6, both engines are stopped and started
again from their data dirs (their ownership state comes back from the WAL), and the move is
resumed or aborted: in every case the queue's jobs are on exactly one shard, none lost, none
doubled, the leases held during the move settle with their lease ids, and the other shard
refuses the queue. Under load, submits with idempotency keys routed by the placement record
(retrying on NOT_OWNER and QUEUE_MOVING) each make exactly one job.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from jq_tool.core.job_ids import new_job_id
from jq_tool.core.model import (
    AdoptQueue,
    Error,
    ErrorCode,
    FireResult,
    FireSchedule,
    Job,
    JobState,
    OwnershipResult,
    Schedule,
    ScheduleSpec,
    StartShard,
)
from jq_tool.engine.base import CommandRejected, JobSpec
from jq_tool.engine.factory import engine_config
from jq_tool.engine.local import LocalEngine
from jq_tool.engine.moves import (
    EngineShard,
    MoveError,
    Placement,
    QueueMover,
    Versioned,
)
from jq_tool.settings import Settings

QUEUE = "emails"
LEASE_MS = 600_000  # longer than the test: leases held through the move stay held


class MemoryPlacement:
    """PlacementStore in memory: one revision counter, CAS on each record's revision, and
    records copied in and out as etcd would."""

    def __init__(self) -> None:
        self.records: dict[str, tuple[bytes, int]] = {}
        self.revision = 0

    async def get(self, queue: str) -> Versioned:
        stored = self.records.get(queue)
        if stored is None:
            return Versioned(None, 0)
        return Versioned(msgspec.json.decode(stored[0], type=Placement), stored[1])

    async def cas(self, queue: str, expected_revision: int, record: Placement) -> bool:
        stored = self.records.get(queue)
        if (stored[1] if stored else 0) != expected_revision:
            return False
        self.revision += 1
        self.records[queue] = (msgspec.json.encode(record), self.revision)
        return True

    def now(self, queue: str) -> Placement:
        return msgspec.json.decode(self.records[queue][0], type=Placement)


class Crash(Exception):
    """The driver stops here, as a process killed after a step would."""


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.engines: dict[int, LocalEngine] = {}
        self.placement = MemoryPlacement()

    async def start(self) -> None:
        for shard in (1, 2):
            settings = Settings(data_dir=self.root / f"shard-{shard}")  # type: ignore[call-arg]
            engine = LocalEngine(engine_config(settings))
            await engine.start()
            self.engines[shard] = engine

    async def stop(self) -> None:
        for engine in self.engines.values():
            await engine.stop()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def shards(self) -> dict[int, EngineShard]:
        return {number: EngineShard(engine) for number, engine in self.engines.items()}

    def mover(self, after_step: object = None) -> QueueMover:
        if after_step is None:
            return QueueMover(self.placement, self.shards())
        return QueueMover(self.placement, self.shards(), after_step=after_step)  # type: ignore[arg-type]

    def jobs(self, shard: int) -> list[Job]:
        jobs, _ = self.engines[shard]._machine.list_jobs(queue=QUEUE, limit=100_000)
        return jobs


async def _setup(tmp_path: Path) -> tuple[Cluster, list[Job]]:
    cluster = Cluster(tmp_path)
    await cluster.start()
    one, two = cluster.shards()[1], cluster.shards()[2]
    for shard, log in ((1, one), (2, two)):
        assert isinstance(await log.propose(StartShard(shard)), OwnershipResult)
    assert isinstance(await one.propose(AdoptQueue(QUEUE, 1)), OwnershipResult)
    assert isinstance(await two.propose(AdoptQueue("local", 1)), OwnershipResult)
    assert await cluster.placement.cas(QUEUE, 0, Placement(1))
    source = cluster.engines[1]
    specs = [
        JobSpec(payload=f"job {i}", queue=QUEUE, priority=i % 3, max_retries=2,
                idempotency_key=f"key-{i}", owner="team")
        for i in range(40)
    ]  # fmt: skip
    outcomes = await source.submit_many(specs)
    assert all(o.job_id for o in outcomes)
    await source.submit(JobSpec(payload="later", queue=QUEUE, delay_ms=3_600_000))
    leased = await source.lease(QUEUE, max_jobs=12, lease_ms=LEASE_MS)
    assert len(leased) == 12
    for job in leased[:3]:
        await source.ack(job.id, lease_id=job.lease_id, result="done")
    for job in leased[3:5]:
        await source.fail(job.id, lease_id=job.lease_id, error="try again")
    running = leased[5:]
    # a job of the target's own queue, so the moved jobs get seqs after it
    await cluster.engines[2].submit(JobSpec(payload="mine", queue="local"))
    return cluster, running


def _view(jobs: list[Job]) -> dict[str, tuple[object, ...]]:
    return {
        job.id: (job.state, job.attempts, job.lease_id, job.lease_until, job.result, job.run_at,
                 job.payload, job.idempotency_key, job.result_error)
        for job in jobs
    }  # fmt: skip


STEPS = [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("recovery", ["resume", "abort"])
@pytest.mark.parametrize("crash_after", STEPS)
async def test_a_move_stopped_after_any_step_is_finished_or_undone(
    tmp_path: Path, crash_after: int, recovery: str
) -> None:
    cluster, running = await _setup(tmp_path)
    try:
        before = _view(cluster.jobs(1))
        order = [job.id for job in cluster.jobs(1)]
        assert len(before) == 41

        async def stop_at(step: int) -> None:
            if step == crash_after:
                raise Crash(step)

        with pytest.raises(Crash):
            await cluster.mover(stop_at).move(QUEUE, 2, "move-1")
        # Both shards go down and come back from their logs.
        await cluster.restart()
        mover = cluster.mover()
        committed = crash_after >= 4
        if recovery == "abort" and crash_after == 4:
            with pytest.raises(MoveError, match="committed"):
                await mover.abort(QUEUE)
        if recovery == "abort" and crash_after == 5:
            assert (await mover.abort(QUEUE)).moved is False  # nothing left to give up
        if recovery == "abort" and not committed:
            outcome = await mover.abort(QUEUE)
            owner, other, epoch = 1, 2, 1
        else:
            outcome = await mover.resume(QUEUE)
            owner, other, epoch = 2, 1, 2
        assert outcome.shard == owner and outcome.epoch == epoch
        assert cluster.placement.now(QUEUE) == Placement(owner, epoch)
        # Every job on exactly one shard, as it was.
        assert _view(cluster.jobs(owner)) == before
        assert [job.id for job in cluster.jobs(owner)] == order  # submission order kept
        assert cluster.jobs(other) == []
        # The other shard refuses the queue; the owner serves it.
        refused = await cluster.engines[other].submit(JobSpec(queue=QUEUE))
        assert refused.code is ErrorCode.NOT_OWNER
        added = await cluster.engines[owner].submit(JobSpec(queue=QUEUE, payload="after"))
        assert added.job_id is not None
        # Leases held through the move settle with their lease ids, on the owner only.
        held = running[0]
        if other == 1:
            with pytest.raises(CommandRejected) as refusal:
                await cluster.engines[other].ack(held.id, lease_id=held.lease_id, result="x")
            assert refusal.value.code is ErrorCode.NOT_OWNER
        acked = await cluster.engines[owner].ack(held.id, lease_id=held.lease_id, result="ok")
        assert acked.state is JobState.ACKED
        # Idempotency keys came along: a retried submit finds its job.
        again = await cluster.engines[owner].submit(
            JobSpec(payload="job 7", queue=QUEUE, priority=1, max_retries=2,
                    idempotency_key="key-7", owner="team")
        )  # fmt: skip
        assert again.duplicate and again.job_id in before
        # A second run of the driver has nothing left to do.
        assert (await mover.resume(QUEUE)).moved is False
        # And the whole state comes back the same after another restart.
        owner_view = _view(cluster.jobs(owner))
        await cluster.restart()
        assert _view(cluster.jobs(owner)) == owner_view and cluster.jobs(other) == []
    finally:
        await cluster.stop()


async def test_submits_during_a_move_make_each_job_once(tmp_path: Path) -> None:
    cluster, _ = await _setup(tmp_path)
    try:
        accepted: dict[str, str] = {}
        retries = 0

        async def client(i: int) -> None:
            nonlocal retries
            await asyncio.sleep(i * 0.002)
            spec = JobSpec(payload=f"load {i}", queue=QUEUE, idempotency_key=f"load-{i}",
                           owner="team")  # fmt: skip
            while True:
                shard = cluster.placement.now(QUEUE).shard  # route by the placement record
                outcome = await cluster.engines[shard].submit(spec)
                if outcome.code in (ErrorCode.NOT_OWNER, ErrorCode.QUEUE_MOVING):
                    retries += 1
                    await asyncio.sleep(0.005)
                    continue
                assert outcome.job_id is not None, outcome
                accepted[spec.idempotency_key] = outcome.job_id  # type: ignore[index]
                return

        async def hold_the_fence(step: int) -> None:
            # The queue stays fenced for 30 ms, so that some of the submits (one every 2 ms)
            # do meet the move, however fast the copy is and however busy the machine.
            if step == 1:
                await asyncio.sleep(0.03)

        async def mover() -> None:
            await asyncio.sleep(0.05)
            outcome = await cluster.mover(after_step=hold_the_fence).move(QUEUE, 2)
            assert outcome.moved

        await asyncio.gather(mover(), *(client(i) for i in range(300)))
        assert cluster.placement.now(QUEUE).shard == 2
        jobs = cluster.jobs(2)
        assert cluster.jobs(1) == []
        ids = [job.id for job in jobs]
        assert len(ids) == len(set(ids)) == 41 + 300
        by_key = {job.idempotency_key: job.id for job in jobs if job.idempotency_key}
        assert all(by_key[key] == job_id for key, job_id in accepted.items())
        assert len(accepted) == 300
        loads = [int(job.payload.split()[1]) for job in jobs if job.payload.startswith("load")]
        assert sorted(loads) == list(range(300))
        assert retries > 0  # some submits did meet the move (fenced, then moved away)
    finally:
        await cluster.stop()


async def test_a_long_poll_on_the_source_hears_of_the_move(tmp_path: Path) -> None:
    cluster, _ = await _setup(tmp_path)
    try:
        source = cluster.engines[1]
        assert isinstance(await EngineShard(source).propose(AdoptQueue("idle", 1)), OwnershipResult)
        assert await cluster.placement.cas("idle", 0, Placement(1))
        # A worker long-polls the empty queue on its shard; the queue moves meanwhile.
        polling = asyncio.ensure_future(source.lease("idle", wait_ms=600_000))
        await asyncio.sleep(0.05)
        assert not polling.done()
        outcome = await cluster.mover().move("idle", 2)
        assert outcome.moved and outcome.jobs == 0  # an empty queue moves too
        # The poll ends with the refusal that sends it to the new shard (no wait for its end;
        # the bound only keeps a broken build from hanging the suite).
        with pytest.raises(CommandRejected) as refusal:
            await asyncio.wait_for(polling, 60)
        assert refusal.value.code in (ErrorCode.QUEUE_MOVING, ErrorCode.NOT_OWNER)
        with pytest.raises(CommandRejected) as again:
            await source.lease("idle")
        assert again.value.code is ErrorCode.NOT_OWNER and "shard 2" in again.value.message
        target = cluster.engines[2]
        await target.submit(JobSpec(queue="idle", payload="now here"))
        [job] = await target.lease("idle")
        assert job.payload == "now here"
    finally:
        await cluster.stop()


def _firing(schedule: Schedule, shard: int) -> FireSchedule:
    """The ticker's firing of the schedule's next due time (made by hand: it is due in a year)."""
    assert schedule.next_due is not None
    due = schedule.next_due
    return FireSchedule(due, schedule.spec.name, due, due, due + 1, new_job_id(shard))


@pytest.mark.parametrize("crash_after", [1, 2, 3])
async def test_a_queue_takes_its_schedules_along(tmp_path: Path, crash_after: int) -> None:
    """A schedule lives on its queue's shard: frozen with the queue by the fence, exported and
    adopted with its jobs, gone from the source, fired by the target into the moved queue."""
    cluster, _ = await _setup(tmp_path)
    try:
        source = cluster.engines[1]
        spec = ScheduleSpec("yearly", "0 0 1 1 *", payload="happy new year", queue=QUEUE)
        made, created = await source.create_schedule(spec)
        assert created
        with pytest.raises(CommandRejected) as refusal:  # "local" is shard 2's queue
            await source.create_schedule(ScheduleSpec("elsewhere", "0 0 1 1 *", queue="local"))
        assert refusal.value.code is ErrorCode.NOT_OWNER

        async def stop_at(step: int) -> None:
            if step == crash_after:
                raise Crash(step)

        with pytest.raises(Crash):
            await cluster.mover(stop_at).move(QUEUE, 2, "move-1")
        # Fenced: the schedule neither fires nor goes away on the source while the queue moves.
        frozen = await cluster.shards()[1].propose(_firing(made, 1))
        assert isinstance(frozen, Error) and frozen.code is ErrorCode.QUEUE_MOVING
        with pytest.raises(CommandRejected) as refusal:
            await source.delete_schedule("yearly")
        assert refusal.value.code is ErrorCode.QUEUE_MOVING
        assert cluster.engines[1]._machine.due_schedules(made.next_due or 0) == []

        await cluster.restart()
        assert (await cluster.mover().resume(QUEUE)).shard == 2
        assert await cluster.engines[1].get_schedule("yearly") is None
        assert await cluster.engines[2].get_schedule("yearly") == made
        gone = await cluster.shards()[1].propose(_firing(made, 1))
        assert isinstance(gone, Error) and gone.code is ErrorCode.NOT_FOUND
        fired = await cluster.shards()[2].propose(_firing(made, 2))
        assert isinstance(fired, FireResult) and fired.job is not None
        assert fired.job.queue == QUEUE and fired.job.payload == "happy new year"
        assert fired.job.id in {job.id for job in cluster.jobs(2)}
        after = await cluster.engines[2].get_schedule("yearly")
        await cluster.restart()  # and it all comes back from the logs
        assert await cluster.engines[2].get_schedule("yearly") == after
        assert await cluster.engines[1].get_schedule("yearly") is None
    finally:
        await cluster.stop()


async def test_a_move_onto_a_shard_with_a_schedule_of_the_same_name_is_undone(
    tmp_path: Path,
) -> None:
    """Schedule names are checked per shard when made, so the target may hold a schedule of the
    same name for one of its own queues. Adopting must not replace it: the adopt is refused, the
    driver undoes the move (the queue serves on its source again, its schedule with it) and
    says why."""
    cluster, _ = await _setup(tmp_path)
    try:
        mine = ScheduleSpec("nightly", "0 3 * * *", payload="source's", queue=QUEUE)
        theirs = ScheduleSpec("nightly", "0 4 * * *", payload="target's", queue="local")
        made, _ = await cluster.engines[1].create_schedule(mine)
        kept, _ = await cluster.engines[2].create_schedule(theirs)
        before = {job.id for job in cluster.jobs(1)}

        with pytest.raises(MoveError, match="schedule 'nightly'"):
            await cluster.mover().move(QUEUE, 2, "move-clash")
        assert cluster.placement.now(QUEUE) == Placement(1)  # no move left in the record
        assert await cluster.engines[2].get_schedule("nightly") == kept
        assert await cluster.engines[1].get_schedule("nightly") == made
        assert {job.id for job in cluster.jobs(1)} == before and cluster.jobs(2) == []
        # The source serves the queue again (unfenced), and it all holds after a restart.
        assert (await cluster.engines[1].submit(JobSpec(payload="after", queue=QUEUE))).job_id
        await cluster.restart()
        assert await cluster.engines[2].get_schedule("nightly") == kept
        assert await cluster.engines[1].get_schedule("nightly") is not None
    finally:
        await cluster.stop()
