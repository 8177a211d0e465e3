"""LocalEngine against a real WAL in a temp dir: durability across restarts, group commit,
long-poll leases, the ticker, events, and storage failures."""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import jq_tool.engine.local as local_engine_module
from jq_tool.core.model import ErrorCode, JobState, NewJob, Submit
from jq_tool.engine.base import (
    CommandRejected,
    EngineUnavailable,
    JobSpec,
    LeaseNext,
    OutcomeUnknown,
    Settlement,
    StorageFull,
)
from jq_tool.engine.factory import engine_config
from jq_tool.engine.local import LocalEngine
from jq_tool.settings import Settings
from tests.engine.wal_hooks import (
    count_appends,
    fail_syncs,
    fail_writes,
    record_syncing_threads,
    refuse_queued_syncs,
)


def make_engine(data_dir: Path, **overrides: int) -> LocalEngine:
    settings = Settings(data_dir=data_dir, **overrides)  # type: ignore[arg-type]
    return LocalEngine(engine_config(settings))


async def submitted_after_restart(data_dir: Path, **overrides: int) -> int:
    """The jobs a fresh engine on `data_dir` counts as submitted once it has recovered."""
    again = make_engine(data_dir, **overrides)
    await again.start()
    try:
        return again.stats().counters.submitted
    finally:
        await again.stop()


def abandon_as_if_killed(engine: LocalEngine) -> None:
    """As after kill -9: no stop(), so no final snapshot; only the WAL's files are closed (and
    its directory lock released) so this process can open it again. The real kill -9 tests
    are in tests/e2e and tests/chaos."""
    assert engine._flusher and engine._ticker
    engine._flusher.cancel()
    engine._ticker.cancel()
    assert engine._wal_thread is not None
    engine._wal_thread.close()
    engine._close_syncer()
    engine._wal.close()


@pytest.fixture
async def engine(tmp_path: Path):
    engine = make_engine(tmp_path, lease_check_interval_ms=50)
    await engine.start()
    yield engine
    await engine.stop()


async def test_submit_lease_ack_round_trip(engine: LocalEngine) -> None:
    outcome = await engine.submit(JobSpec(payload="hello", priority=5))
    assert outcome.job_id and not outcome.duplicate
    [job] = await engine.lease("default")
    assert job.id == outcome.job_id
    assert job.state is JobState.RUNNING and job.attempts == 1 and job.lease_id
    acked = await engine.ack(job.id, lease_id=job.lease_id, result="done")
    assert acked.state is JobState.ACKED and acked.result == "done"
    stored = await engine.get(job.id)
    assert stored is not None and stored.state is JobState.ACKED
    stats = engine.stats()
    assert stats.counters.submitted == 1 and stats.counters.acked == 1
    assert stats.totals.acked == 1


async def test_everything_survives_a_restart(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    await engine.start()
    ids = [
        o.job_id for o in await engine.submit_many([JobSpec(payload=f"p{i}") for i in range(20)])
    ]
    [leased] = await engine.lease("default")
    await engine.stop()

    again = make_engine(tmp_path)
    await again.start()
    try:
        for job_id in ids:
            assert job_id is not None
            job = await again.get(job_id)
            assert job is not None
        # The lease survived: its worker can still ack after the restart.
        acked = await again.ack(leased.id, lease_id=leased.lease_id, result="ok")
        assert acked.state is JobState.ACKED
        assert again.stats().counters.submitted == 20
    finally:
        await again.stop()


async def test_recovery_without_graceful_stop_replays_the_log(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    await engine.start()
    outcome = await engine.submit(JobSpec(payload="durable"))
    abandon_as_if_killed(engine)
    assert not list(tmp_path.glob("*.snap"))

    again = make_engine(tmp_path)
    await again.start()
    try:
        job = await again.get(outcome.job_id or "")
        assert job is not None and job.payload == "durable"
    finally:
        await again.stop()


async def test_snapshots_are_taken_and_used(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, snapshot_every=10)
    await engine.start()
    for i in range(35):
        await engine.submit(JobSpec(payload=str(i)))
    await engine.stop()
    assert list(tmp_path.glob("*.snap")), "expected a snapshot file"
    assert await submitted_after_restart(tmp_path, snapshot_every=10) == 35


async def test_recovery_leaves_the_restored_state_to_the_oldest_generation(
    tmp_path: Path,
) -> None:
    """Restored jobs are long-lived: none of the index entries recovery makes waits in the
    young generation, where the first collection after recovery would walk every one of
    them (~0.3 s with 1M jobs queued) to find no garbage."""
    engine = make_engine(tmp_path)
    await engine.start()
    for start in range(0, 5000, 1000):
        await engine.submit_many([JobSpec(payload=f"p{start + i}") for i in range(1000)])
    await engine.stop()  # a final snapshot: the restart restores it
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, 50, 1000)  # jq serve's (runtime.tune_gc)
    try:
        gc.collect()
        again = make_engine(tmp_path)
        await again.start()
        try:
            young = len(gc.get_objects(generation=0))
            assert again.stats().totals.total == 5000
            # Two entries (lease order, and since when) per runnable job without the hand-over.
            assert young < 5000
        finally:
            await again.stop()
    finally:
        gc.set_threshold(*thresholds)


async def test_a_slow_snapshot_write_does_not_hold_up_submits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jq_tool.engine.forked_snapshot as forked_snapshot

    # The snapshot is written by a forked child: it waits for a gate file the test creates,
    # and says it started with another (files, because the child is another process).
    data_dir, gate, started = tmp_path / "data", tmp_path / "gate", tmp_path / "started"
    real_write = forked_snapshot.write_snapshot_file

    def slow_write(path: Path, header: bytes, data: bytes) -> None:
        started.touch()
        for _ in range(1000):
            if gate.exists():
                break
            time.sleep(0.01)
        real_write(path, header, data)

    monkeypatch.setattr(forked_snapshot, "write_snapshot_file", slow_write)
    engine = make_engine(data_dir, snapshot_every=10, segment_bytes=4096)
    await engine.start()
    try:
        for i in range(12):
            await engine.submit(JobSpec(payload=f"before-{i}"))
        for _ in range(500):
            if started.exists():
                break
            await asyncio.sleep(0.01)
        assert started.exists(), "no snapshot was started"
        # The snapshot file is still being written: submits are durable and answered anyway,
        # and the WAL rotates segments meanwhile.
        for i in range(100):
            await engine.submit(JobSpec(payload=f"during-{i}" + "x" * 64))
        assert not list(data_dir.glob("*.snap"))
        gate.touch()
        while engine._snapshot_task is not None:
            await asyncio.sleep(0.01)
        assert len(list(data_dir.glob("*.snap"))) == 1
    finally:
        gate.touch()
        await engine.stop()
    assert await submitted_after_restart(data_dir, snapshot_every=10) == 112


async def test_a_snapshot_child_that_dies_is_retried_and_harms_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import os
    import signal

    import jq_tool.engine.forked_snapshot as forked_snapshot

    def killed(path: Path, header: bytes, data: bytes) -> None:
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer would

    monkeypatch.setattr(forked_snapshot, "write_snapshot_file", killed)
    engine = make_engine(tmp_path, snapshot_every=10)
    await engine.start()
    try:
        for i in range(12):
            await engine.submit(JobSpec(payload=str(i)))
        while engine._snapshot_task is not None:
            await asyncio.sleep(0.01)
        assert "snapshot failed, will retry" in caplog.text
        assert engine.health().ok
        assert not list(tmp_path.glob("*.snap"))
        monkeypatch.undo()
        for i in range(10):
            await engine.submit(JobSpec(payload=str(i)))
        while engine._snapshot_task is not None:
            await asyncio.sleep(0.01)
        assert len(list(tmp_path.glob("*.snap"))) == 1
    finally:
        await engine.stop()


def test_snapshots_grow_apart_with_the_state(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, snapshot_every=10)
    assert engine._snapshot_due() == 10
    for i in range(100):
        engine._machine.apply(Submit(now=1, jobs=[NewJob(id=f"job-{i}")]))
    # A snapshot costs in proportion to the jobs it holds: with 100 jobs, every 25 records.
    assert engine._snapshot_due() == 25


async def test_concurrent_submits_share_fsyncs(engine: LocalEngine) -> None:
    appends = count_appends(engine)
    outcomes = await asyncio.gather(*(engine.submit(JobSpec(payload="x")) for _ in range(200)))
    assert len({o.job_id for o in outcomes}) == 200
    assert sum(appends) == 200
    assert len(appends) < 200  # group commit: batches, not one fsync per submit


async def test_idempotency_key_returns_the_same_job(engine: LocalEngine) -> None:
    first = await engine.submit(JobSpec(payload="a", idempotency_key="k1"))
    second = await engine.submit(JobSpec(payload="a", idempotency_key="k1"))
    assert second.job_id == first.job_id and second.duplicate
    assert engine.stats().counters.submitted == 1


async def test_long_poll_lease_wakes_on_submit(engine: LocalEngine) -> None:
    waiting = asyncio.create_task(engine.lease("default", wait_ms=5000))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    outcome = await engine.submit(JobSpec(payload="late"))
    jobs = await asyncio.wait_for(waiting, 2)
    assert [j.id for j in jobs] == [outcome.job_id]


async def test_long_poll_times_out_empty(engine: LocalEngine) -> None:
    assert await engine.lease("default", wait_ms=100) == []


async def test_delayed_job_wakes_a_waiting_lease_when_due(engine: LocalEngine) -> None:
    from jq_tool.engine.command_engine import now_ms

    outcome = await engine.submit(JobSpec(payload="later", run_at=now_ms() + 300))
    assert await engine.lease("default") == []
    jobs = await engine.lease("default", wait_ms=3000)
    assert [j.id for j in jobs] == [outcome.job_id]


async def test_batch_lease_and_queues_are_separate(engine: LocalEngine) -> None:
    await engine.submit_many([JobSpec(payload=str(i), queue="emails") for i in range(5)])
    await engine.submit(JobSpec(payload="other"))
    jobs = await engine.lease("emails", max_jobs=10)
    assert len(jobs) == 5 and {j.queue for j in jobs} == {"emails"}
    assert len({j.lease_id for j in jobs}) == 5


async def test_stale_lease_is_refused(engine: LocalEngine) -> None:
    await engine.submit(JobSpec(payload="x"))
    [job] = await engine.lease("default")
    with pytest.raises(CommandRejected) as caught:
        await engine.ack(job.id, lease_id="not-the-lease", result=None)
    assert caught.value.code is ErrorCode.LEASE_MISMATCH
    with pytest.raises(CommandRejected) as missing:
        await engine.ack("no-such-job", lease_id=None, result=None)
    assert missing.value.code is ErrorCode.NOT_FOUND


async def test_expired_lease_is_retried_by_the_ticker(engine: LocalEngine) -> None:
    await engine.submit(JobSpec(payload="x", max_retries=0))
    [job] = await engine.lease("default", lease_ms=100)
    for _ in range(400):  # generous: the machine may be loaded
        await asyncio.sleep(0.05)
        current = await engine.get(job.id)
        assert current is not None
        if current.state is JobState.DEAD:
            break
    assert current.state is JobState.DEAD
    assert engine.stats().counters.expired == 1


async def test_fail_retries_then_dies(engine: LocalEngine) -> None:
    await engine.submit(JobSpec(payload="x", max_retries=1))
    [job] = await engine.lease("default")
    failed = await engine.fail(job.id, lease_id=job.lease_id, error="boom")
    assert failed.state is JobState.RETRY and failed.result_error == "boom"
    assert await engine.cancel(job.id)  # RETRY can be cancelled
    with pytest.raises(CommandRejected) as caught:
        await engine.requeue(job.id)
    assert caught.value.code is ErrorCode.INVALID_STATE


async def test_events_are_published(engine: LocalEngine) -> None:
    events = engine.subscribe()
    first = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(0)
    outcome = await engine.submit(JobSpec(payload="x"))
    event = await asyncio.wait_for(first, 2)
    assert event.job_id == outcome.job_id
    assert event.state is JobState.READY and event.previous is None
    await events.aclose()  # type: ignore[attr-defined]


async def test_full_disk_refuses_the_batch_and_recovers(
    engine: LocalEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_writes(monkeypatch, errno.ENOSPC, "No space left on device")
    with pytest.raises(StorageFull):
        await engine.submit(JobSpec(payload="x"))
    assert engine.health().ok
    monkeypatch.undo()
    outcome = await engine.submit(JobSpec(payload="y"))
    assert outcome.job_id


async def test_an_io_error_stops_writes_for_good(
    engine: LocalEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_writes(monkeypatch, errno.EIO, "Input/output error")
    with pytest.raises(EngineUnavailable):
        await engine.submit(JobSpec(payload="x"))
    health = engine.health()
    assert not health.ok and health.reason and "Input/output error" in health.reason
    with pytest.raises(EngineUnavailable):
        await engine.submit(JobSpec(payload="y"))


async def test_a_failed_fdatasync_leaves_its_batch_unknown_and_refuses_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch whose fdatasync failed is in the file: a restart may replay it, so its caller
    hears "outcome unknown"; what comes after was never written: "unavailable"."""
    engine = LocalEngine(engine_config(Settings(data_dir=tmp_path)))
    await engine.start()
    try:
        fail_syncs(monkeypatch)
        with pytest.raises(OutcomeUnknown, match="fsync failed"):
            await engine.submit(JobSpec(payload="maybe", idempotency_key="k-maybe"))
        with pytest.raises(EngineUnavailable) as refused:
            await engine.submit(JobSpec(payload="after"))
        assert not isinstance(refused.value, OutcomeUnknown)
        assert not engine.health().ok
        monkeypatch.undo()
    finally:
        await engine.stop()
    # Here the page cache kept the record, so the restart finds the job: the retry with the
    # same key answers it instead of making a second one.
    again = LocalEngine(engine_config(Settings(data_dir=tmp_path)))
    await again.start()
    try:
        outcome = await again.submit(JobSpec(payload="maybe", idempotency_key="k-maybe"))
        assert outcome.duplicate is True
        jobs, _ = await again.list()
        assert [job.id for job in jobs] == [outcome.job_id]
    finally:
        await again.stop()


def test_job_ids_are_unique_version_4_uuids() -> None:
    import uuid

    from jq_tool.engine.command_engine import new_job_id, new_lease_id

    ids = {new_job_id() for _ in range(20_000)}  # spans many refills of the random buffer
    assert len(ids) == 20_000
    for job_id in list(ids)[:2000]:
        parsed = uuid.UUID(job_id)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == job_id
    leases = {new_lease_id() for _ in range(1000)}
    assert len(leases) == 1000 and all(len(x) == 32 for x in leases)


async def test_wal_thread_runs_calls_in_order_off_the_loop_and_hands_back_errors() -> None:
    from jq_tool.engine.local import _WorkerThread

    wal_thread = _WorkerThread("jq-wal")
    try:
        seen: list[tuple[int, str]] = []

        def record(n: int) -> int:
            seen.append((n, threading.current_thread().name))
            return n * 10

        results = await asyncio.gather(*(wal_thread.call(record, n) for n in range(50)))
        assert results == [n * 10 for n in range(50)]
        assert seen == [(n, "jq-wal") for n in range(50)]

        def broken() -> None:
            raise OSError(errno.EIO, "fdatasync failed")

        with pytest.raises(OSError, match="fdatasync failed"):
            await wal_thread.call(broken)
        # A caller that went away (its future cancelled) does not break the thread.
        abandoned = wal_thread.call(record, 99)
        abandoned.cancel()
        assert await wal_thread.call(record, 100) == 1000
    finally:
        wal_thread.close()


async def test_lone_commands_are_appended_in_the_loop_and_survive_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client waiting for each answer: from the second lone command on, the loop appends it
    itself (no hand-off to the WAL thread); commands arriving together still go to the thread
    as one batch. Either way the record is synced before the answer: a crash loses none."""
    # Whatever this machine's disk does right now (a loaded CI disk can take over 2 ms a
    # sync): the quick-disk rule is tested on its own below.
    monkeypatch.setattr(local_engine_module, "INLINE_APPEND_UNDER_S", 60.0)
    engine = make_engine(tmp_path)
    await engine.start()
    lone = [await engine.submit(JobSpec(payload=f"lone-{i}")) for i in range(10)]
    in_loop = engine.log_metrics.appends_in_loop
    assert in_loop >= 9  # the first batch has no lone one before it
    together = await asyncio.gather(
        *(engine.submit(JobSpec(payload=f"together-{i}")) for i in range(20))
    )
    assert engine.log_metrics.appends_in_loop == in_loop  # one batch of 20, in the WAL thread
    assert engine._wal_thread is not None and engine._wal_thread.idle
    abandon_as_if_killed(engine)  # restart replays the WAL
    again = make_engine(tmp_path)
    await again.start()
    try:
        for outcome in [*lone, *together]:
            job = await again.get(outcome.job_id or "")
            assert job is not None and job.state is JobState.READY
        assert again.stats().counters.submitted == 30
    finally:
        await again.stop()


async def cancelled_in_its_yield(
    engine: LocalEngine, proposing: Awaitable[object], queued: int, applied: Callable[[], bool]
) -> None:
    """Run `proposing` up to its yield (its `queued` commands queued, the flusher not woken),
    cancel it there as a client going away would, and wait until `applied()`: the commands
    must still be made durable and applied, with no other command to wake the flusher."""
    gone = asyncio.ensure_future(proposing)
    await asyncio.sleep(0)
    assert len(engine._pending) == queued
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    deadline = asyncio.get_running_loop().time() + 5
    while not applied():
        assert asyncio.get_running_loop().time() < deadline, "the commands were left queued"
        await asyncio.sleep(0.01)
    assert not engine._pending


async def test_one_workers_ack_and_lease_next_is_appended_in_the_loop_and_survives_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ack-and-lease-next proposes two commands (the Ack, then the Lease of the next job) for
    one caller: a batch of one caller's commands is as lone as a batch of one, so a single
    worker's cycles are appended in the loop too. Two workers' cycles arriving together go to
    the WAL thread as one batch. A crash loses nothing either way: every acked job is ACKED and
    every leased one RUNNING after the replay."""
    monkeypatch.setattr(local_engine_module, "INLINE_APPEND_UNDER_S", 60.0)
    engine = make_engine(tmp_path)
    await engine.start()
    await engine.submit_many([JobSpec(payload=f"job-{i}") for i in range(30)])
    (held,) = await engine.lease("default")
    acked: list[str] = []
    before = engine.log_metrics.appends_in_loop
    for _ in range(10):
        outcomes, next_jobs = await engine.settle_many(
            [Settlement(held.id, held.lease_id, result="ok")], lease_next=LeaseNext("default")
        )
        assert [outcome.state for outcome in outcomes] == [JobState.ACKED]  # type: ignore[union-attr]
        acked.append(held.id)
        (held,) = next_jobs
    assert engine.log_metrics.appends_in_loop - before >= 9  # the first may follow a batch
    second = (await engine.lease("default"))[0]
    in_loop = engine.log_metrics.appends_in_loop
    cycles = await asyncio.gather(
        *(
            engine.settle_many(
                [Settlement(job.id, job.lease_id, result="ok")], lease_next=LeaseNext("default")
            )
            for job in (held, second)
        )
    )
    assert engine.log_metrics.appends_in_loop == in_loop  # two callers: the WAL thread's batch
    acked += [held.id, second.id]
    leased_now = [next_jobs[0].id for _, next_jobs in cycles]
    abandon_as_if_killed(engine)  # restart replays the WAL
    again = make_engine(tmp_path)
    await again.start()
    try:
        for job_id in acked:
            job = await again.get(job_id)
            assert job is not None and job.state is JobState.ACKED
        for job_id in leased_now:
            job = await again.get(job_id)
            assert job is not None and job.state is JobState.RUNNING
        assert again.stats().counters.acked == len(acked)
    finally:
        await again.stop()


async def test_a_lone_callers_commands_whose_caller_goes_away_are_still_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Ack and the Lease of one caller wait in the queue, unwoken, for one yield; a caller
    cancelled right then leaves neither behind: both are made durable and applied."""
    monkeypatch.setattr(local_engine_module, "INLINE_APPEND_UNDER_S", 60.0)
    engine = make_engine(tmp_path)
    await engine.start()
    try:
        await engine.submit_many([JobSpec(payload=f"job-{i}") for i in range(3)])
        for i in range(2):  # lone batches before: the next one may be appended in the loop
            await engine.submit(JobSpec(payload=f"before-{i}"))
        (job,) = await engine.lease("default")
        await cancelled_in_its_yield(
            engine,
            engine.settle_many(
                [Settlement(job.id, job.lease_id, result="ok")], lease_next=LeaseNext("default")
            ),
            queued=2,  # the Ack and the Lease
            applied=lambda: engine.stats().counters.acked == 1,
        )
        acked = await engine.get(job.id)
        assert acked is not None and acked.state is JobState.ACKED
        assert engine.stats().totals.running == 1  # the next job, leased with the ack
    finally:
        await engine.stop()


async def lone_request_order(engine: LocalEngine, others_in_flight: int) -> list[str]:
    """What happened first while one request task submits: the job answered, or a callback
    scheduled just before the submit ran (only a yield inside the submit lets it run first).
    `others_in_flight` more request tasks are in flight meanwhile, waiting."""
    loop = asyncio.get_running_loop()
    requests: set[asyncio.Task[None]] = set()
    engine.watch_requests(requests)
    order: list[str] = []
    release = asyncio.Event()

    async def request() -> None:
        loop.call_soon(order.append, "another callback ran")
        await engine.submit(JobSpec(payload="the request's"))
        order.append("answered")

    async def waiting_request() -> None:
        await release.wait()

    others = [asyncio.ensure_future(waiting_request()) for _ in range(others_in_flight)]
    requests.update(others)
    task = asyncio.ensure_future(request())
    requests.add(task)
    await task
    release.set()
    await asyncio.gather(*others)
    await asyncio.sleep(0)
    return order


async def test_the_one_request_in_flight_is_appended_without_a_yield(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The HTTP server's only request in flight (the engine watches its request tasks) is
    written, synced and answered in its task's first step: no other request could join its
    batch, so the loop turn a yield would cost buys nothing. With another request in flight,
    the submit yields once first, as any caller's does, so that one can join; and so does a
    request's second batch."""
    monkeypatch.setattr(local_engine_module, "INLINE_APPEND_UNDER_S", 60.0)
    engine = make_engine(tmp_path)
    await engine.start()
    try:
        for i in range(2):  # lone batches before: the next one may be appended in the loop
            await engine.submit(JobSpec(payload=f"before-{i}"))
        in_loop = engine.log_metrics.appends_in_loop
        assert await lone_request_order(engine, others_in_flight=0) == [
            "answered",
            "another callback ran",
        ]
        assert engine.log_metrics.appends_in_loop == in_loop + 1
        assert await lone_request_order(engine, others_in_flight=1) == [
            "another callback ran",
            "answered",
        ]
        assert engine.log_metrics.appends_in_loop == in_loop + 2  # still alone after the yield
        # The same request proposing again (a bulk action's chunks): the yield, so that a long
        # request cannot keep the loop from reading others.
        requests: set[asyncio.Task[None]] = set()
        engine.watch_requests(requests)
        orders: list[list[str]] = []

        async def proposing_twice() -> None:
            for name in ("first", "second"):
                order: list[str] = []
                asyncio.get_running_loop().call_soon(order.append, "another callback ran")
                await engine.submit(JobSpec(payload=name))
                order.append("answered")
                orders.append(order)

        task = asyncio.ensure_future(proposing_twice())
        requests.add(task)
        await task
        assert orders == [
            ["answered", "another callback ran"],
            ["another callback ran", "answered"],
        ]
        # Not a request task (the ticker, an in-process caller): the yield, as before.
        engine.watch_requests(set())
        order: list[str] = []
        asyncio.get_running_loop().call_soon(order.append, "another callback ran")
        await engine.submit(JobSpec(payload="in-process"))
        order.append("answered")
        assert order == ["another callback ran", "answered"]
        assert engine.stats().counters.submitted == 7
    finally:
        await engine.stop()
    assert await submitted_after_restart(tmp_path) == 7  # each was synced before its answer


async def test_a_slow_disk_keeps_lone_commands_out_of_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends that take longer than INLINE_APPEND_UNDER_S (here: any) go back to the WAL
    thread, so a slow disk never stalls the event loop for a sync."""
    monkeypatch.setattr(local_engine_module, "INLINE_APPEND_UNDER_S", 0.0)
    engine = make_engine(tmp_path)
    await engine.start()
    try:
        for i in range(10):
            await engine.submit(JobSpec(payload=f"lone-{i}"))
        assert engine.log_metrics.appends_in_loop == 0
        assert engine.stats().counters.submitted == 10
    finally:
        await engine.stop()


async def test_a_lone_command_whose_caller_goes_away_during_its_yield_is_still_written(
    tmp_path: Path,
) -> None:
    """A lone command waits in the queue, unwoken, for one yield before its own coroutine
    appends it. A caller cancelled right then (a client gone) must not leave it there: it is
    made durable and applied like any queued command, without another command to wake it."""
    engine = make_engine(tmp_path)
    await engine.start()
    try:
        for i in range(3):  # lone commands from the second on
            await engine.submit(JobSpec(payload=f"before-{i}"))
        await cancelled_in_its_yield(
            engine,
            engine.submit(JobSpec(payload="gone")),
            queued=1,
            applied=lambda: engine.stats().counters.submitted == 4,
        )
    finally:
        await engine.stop()
    assert await submitted_after_restart(tmp_path) == 4


async def test_a_lone_append_in_the_loop_fails_like_one_in_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk refuses a lone command appended in the loop (and service resumes), and a
    failed fdatasync there leaves its outcome unknown and refuses every later write."""
    import os

    # A loaded machine's sync may take over 2 ms, which sends lone commands to the thread.
    monkeypatch.setattr(local_engine_module, "INLINE_APPEND_UNDER_S", 60.0)
    engine = make_engine(tmp_path)
    await engine.start()
    try:
        for i in range(3):
            await engine.submit(JobSpec(payload=f"warm-{i}"))
        real_write = os.pwrite

        def full_disk(fd: int, data: bytes, offset: int) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "pwrite", full_disk)
        before = engine.log_metrics.appends_in_loop
        with pytest.raises(StorageFull):
            await engine.submit(JobSpec(payload="no room"))
        assert engine.log_metrics.appends_in_loop == before + 1
        monkeypatch.setattr(os, "pwrite", real_write)
        assert (await engine.submit(JobSpec(payload="room again"))).job_id

        def failing_fdatasync(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(os, "fdatasync", failing_fdatasync)
        before = engine.log_metrics.appends_in_loop
        with pytest.raises(OutcomeUnknown, match="fsync failed"):
            await engine.submit(JobSpec(payload="maybe"))
        assert engine.log_metrics.appends_in_loop == before + 1
        with pytest.raises(EngineUnavailable):
            await engine.submit(JobSpec(payload="after"))
        assert not engine.health().ok
    finally:
        monkeypatch.undo()
        await engine.stop()


async def test_concurrent_commands_are_synced_by_the_kernel_and_survive_a_crash(
    tmp_path: Path,
) -> None:
    """Commands of several callers are written by the loop and their fdatasync queued to the
    kernel (Linux AIO), across segment rotations (which the WAL thread does), and every
    acknowledged one is there after a crash."""
    engine = make_engine(tmp_path, segment_bytes=64 * 1024)
    await engine.start()
    try:
        if engine._syncer is None:
            pytest.skip("Linux AIO is not available here: the WAL thread syncs every batch")
        appends = count_appends(engine)
        acknowledged: list[str] = []
        for round_ in range(20):
            outcomes = await asyncio.gather(
                *(engine.submit(JobSpec(payload=f"{round_}-{n}" + "x" * 200)) for n in range(50))
            )
            acknowledged += [outcome.job_id for outcome in outcomes if outcome.job_id]
        assert len(acknowledged) == 1000 and sum(appends) == 1000
        # Most batches: a batch that needs a rotation first goes to the WAL thread.
        assert engine.log_metrics.appends_queued >= 10
        assert len(engine._wal._segments) > 3  # ~230 KiB of records in 64 KiB segments
    finally:
        abandon_as_if_killed(engine)
    again = make_engine(tmp_path, segment_bytes=64 * 1024)
    await again.start()
    try:
        for job_id in acknowledged:
            job = await again.get(job_id)
            assert job is not None and job.state is JobState.READY
    finally:
        await again.stop()


async def test_a_failed_queued_sync_leaves_its_batch_unknown_and_refuses_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel's queued fdatasync failing is a failed fdatasync like any other: the batch is
    in the file (outcome unknown), the WAL refuses every later write, /health says why."""
    engine = make_engine(tmp_path)
    await engine.start()
    try:
        if engine._syncer is None:
            pytest.skip("Linux AIO is not available here")
        fail_syncs(monkeypatch)
        before = engine.log_metrics.appends_queued
        outcomes = await asyncio.gather(
            *(engine.submit(JobSpec(payload=f"maybe-{n}")) for n in range(2)),
            return_exceptions=True,
        )
        assert engine.log_metrics.appends_queued == before + 1
        assert all(isinstance(outcome, OutcomeUnknown) for outcome in outcomes), outcomes
        with pytest.raises(EngineUnavailable) as refused:
            await engine.submit(JobSpec(payload="after"))
        assert not isinstance(refused.value, OutcomeUnknown)
        health = engine.health()
        assert not health.ok and health.reason and "fsync failed" in health.reason
    finally:
        monkeypatch.undo()
        await engine.stop()


async def test_without_aio_the_wal_thread_syncs_every_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the kernel will not queue syncs (io_setup refused), batches go to the WAL thread."""
    monkeypatch.setattr(local_engine_module, "open_syncer", lambda: None)
    engine = make_engine(tmp_path)
    await engine.start()
    try:
        assert engine._syncer is None
        appends = count_appends(engine)
        outcomes = await asyncio.gather(*(engine.submit(JobSpec(payload="x")) for _ in range(100)))
        assert len({outcome.job_id for outcome in outcomes}) == 100
        assert sum(appends) == 100 and len(appends) < 100
        assert engine.log_metrics.appends_queued == 0
    finally:
        abandon_as_if_killed(engine)
    assert await submitted_after_restart(tmp_path) == 100


async def test_a_sync_the_kernel_will_not_queue_is_made_in_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """io_submit refusing (no memory for the request) costs speed, not the batch."""
    engine = make_engine(tmp_path)
    await engine.start()
    try:
        if engine._syncer is None:
            pytest.skip("Linux AIO is not available here")
        refuse_queued_syncs(monkeypatch, errno.ENOMEM)
        syncing_threads = record_syncing_threads(monkeypatch)
        appends = count_appends(engine)
        outcomes = await asyncio.gather(*(engine.submit(JobSpec(payload="x")) for _ in range(50)))
        assert all(outcome.job_id for outcome in outcomes) and sum(appends) == 50
        assert engine.log_metrics.appends_queued == 0 and engine.health().ok
        assert syncing_threads and set(syncing_threads) == {threading.current_thread().name}
    finally:
        monkeypatch.undo()
        abandon_as_if_killed(engine)
    assert await submitted_after_restart(tmp_path) == 50


async def test_a_file_system_that_queues_no_sync_sends_syncs_to_the_wal_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """io_submit refusing the sync itself (EINVAL: none for this file system) is for good: that
    batch is synced in the loop, every later one by the WAL thread."""
    engine = make_engine(tmp_path)
    await engine.start()
    try:
        if engine._syncer is None:
            pytest.skip("Linux AIO is not available here")
        refuse_queued_syncs(monkeypatch, errno.EINVAL)
        syncing_threads = record_syncing_threads(monkeypatch)
        first = await asyncio.gather(*(engine.submit(JobSpec(payload="a")) for _ in range(20)))
        assert all(outcome.job_id for outcome in first) and engine._syncer is None
        assert syncing_threads == [threading.current_thread().name]
        more = await asyncio.gather(*(engine.submit(JobSpec(payload="b")) for _ in range(20)))
        assert all(outcome.job_id for outcome in more) and engine.health().ok
        assert set(syncing_threads[1:]) == {"jq-wal"}
    finally:
        monkeypatch.undo()
        await engine.stop()


async def test_a_full_history_file_gives_the_kept_generation_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A snapshot waits for the history store (SQLite, in the same data dir) to hold what the
    state forgot. When SQLite finds the disk full (here its page cap: a real SQLITE_FULL), the
    snapshot fails as one that found the WAL's disk full does, and gives the files the WAL keeps
    for a fallback up first. It kept them before: a full disk stayed full."""
    from jq_tool.core.model import Job
    from jq_tool.core.wal import examine

    engine = make_engine(tmp_path, snapshot_every=10)
    await engine.start()
    try:
        submitted = 0
        while len(list(tmp_path.glob("*.snap"))) < 2:  # the newest, and one kept
            await engine.submit(JobSpec(payload=str(submitted)))
            submitted += 1
            while engine._snapshot_task is not None:
                await asyncio.sleep(0.01)
        kept = examine(tmp_path).kept_snapshot
        assert kept is not None and kept.exists(), sorted(os.listdir(tmp_path))
        db = engine.history._writer_db
        assert db is not None
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count={pages}")
        forgotten = [Job(f"old{i}", "default", "x" * 2000, 0, 0, 1, JobState.ACKED, 1, 1, i,
                         updated_at=1, owner="o") for i in range(200)]  # fmt: skip
        engine.history.add(forgotten, 1)
        for i in range(10):
            await engine.submit(JobSpec(payload=f"full-{i}"))
        for _ in range(200):
            if "deleted the snapshot and log kept for a fallback" in caplog.text:
                break
            await asyncio.sleep(0.01)
        assert "snapshot failed, will retry: database or disk is full" in caplog.text
        assert "deleted the snapshot and log kept for a fallback" in caplog.text
        assert not kept.exists()
        assert len(list(tmp_path.glob("*.snap"))) == 1
        db.execute("PRAGMA max_page_count=1000000")  # room again: the batch is written
    finally:
        await engine.stop()
    assert await submitted_after_restart(tmp_path, snapshot_every=10) == submitted + 10


async def test_a_long_poll_given_up_as_it_is_woken_leases_nothing_and_passes_the_wake_up(
    engine: LocalEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the careless-clients hunt found: a long poll's client goes away (its wait is
    cancelled) in the same loop turn as a submit wakes it. Python 3.11's wait_for then returns
    rather than raising, and the poll leased the job for a client gone (it sat RUNNING for its
    lease). Now it raises, leases nothing, and the next waiter gets the wake-up."""
    first = asyncio.create_task(engine._lease_waiting("default", 1, 30_000, 5_000, None))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(engine._lease_waiting("default", 1, 30_000, 5_000, None))
    await asyncio.sleep(0.05)
    # The job becomes runnable with its wake-up held back, so that the wake-up and the
    # cancel can be made in one turn of the loop, before `first` runs again.
    monkeypatch.setattr(engine, "_wake_lease_waiters", lambda: None)
    outcome = await engine.submit(JobSpec(payload="x"))
    monkeypatch.undo()
    engine._wake_lease_waiters()  # wakes `first` (waiters are woken in order)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    jobs = await asyncio.wait_for(second, 2)
    assert [job.id for job in jobs] == [outcome.job_id]
    assert engine.stats().counters.submitted == 1
