"""Batch ack and ack-and-lease-next from the SDK against a real `jq serve`: `ack_many` on both
clients, and the workers settling in batches by default (fewer requests than jobs, every job
settled once), with each entry's outcome handled as a single ack's, and falling back to one
ack per job against a server that does not know POST /jobs/ack."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from jq_tool.sdk import (
    AsyncClient,
    AsyncWorker,
    Client,
    JobState,
    LeasedJob,
    Settlement,
    Worker,
    WorkerOptions,
)
from sdk.counting_proxy import CountingProxy
from sdk.jq_server_process import ServerProcess, wait_until


@pytest.fixture
def proxy(jq_server: ServerProcess) -> Iterator[CountingProxy]:
    counting = CountingProxy(jq_server.port)
    yield counting
    counting.close()


@pytest.fixture
def old_server(jq_server: ServerProcess) -> Iterator[CountingProxy]:
    counting = CountingProxy(jq_server.port, old_server=True)
    yield counting
    counting.close()


def submit(server: ServerProcess, queue: str, count: int, **fields: object) -> list[str]:
    with Client(server.url, server.client_key) as client:
        results = client.submit_many(
            [{"payload": str(i), "queue": queue, **fields} for i in range(count)]
        )
    return [r.job_id or "" for r in results]


def states(server: ServerProcess, ids: list[str]) -> dict[str, JobState]:
    with Client(server.url, server.client_key) as client:
        return {job_id: client.get(job_id).state for job_id in ids}


def test_ack_many_settles_each_and_leases_next(jq_server: ServerProcess, queue: str) -> None:
    submit(jq_server, queue, 5)
    with Client(jq_server.url, jq_server.worker_key) as worker:
        jobs = worker.lease(queue=queue, max_jobs=3)
        answer = worker.ack_many(
            [
                Settlement(jobs[0].job_id, jobs[0].lease_id, {"n": 1}),
                Settlement(jobs[1].job_id, jobs[1].lease_id, error="boom"),
                Settlement(jobs[2].job_id, "stale"),
            ],
            lease_next=5,
            queue=queue,
            lease_ms=60_000,
        )
        assert [r.state for r in answer.results] == [JobState.ACKED, JobState.RETRY, None]
        refused = answer.results[2]
        assert not refused.ok and refused.code == "lease_mismatch" and refused.error
        assert sorted(j.payload for j in answer.leased) == ["3", "4"]
        assert all(j.lease_id for j in answer.leased)
        assert worker.get(jobs[0].job_id).result == '{"n":1}'
        assert worker.ack_many([]).results == []  # nothing to send


async def test_async_ack_many(jq_server: ServerProcess, queue: str) -> None:
    submit(jq_server, queue, 2)
    async with AsyncClient(jq_server.url, jq_server.worker_key) as worker:
        [job] = await worker.lease(queue=queue)
        answer = await worker.ack_many(
            [Settlement(job.job_id, job.lease_id, "done")], lease_next=1, queue=queue
        )
        assert answer.results[0].state is JobState.ACKED and len(answer.leased) == 1


def test_ack_many_past_1000_entries_leases_with_the_last_request(
    jq_server: ServerProcess, queue: str, proxy: CountingProxy
) -> None:
    submit(jq_server, queue, 1002)
    with Client(proxy.url, jq_server.worker_key) as worker:
        jobs: list[LeasedJob] = []
        while len(jobs) < 1001:
            jobs += worker.lease(queue=queue, max_jobs=min(100, 1001 - len(jobs)))
        answer = worker.ack_many(
            [Settlement(j.job_id, j.lease_id) for j in jobs], lease_next=10, queue=queue
        )
    assert len(answer.results) == 1001 and all(r.ok for r in answer.results)
    assert len(answer.leased) == 1
    assert proxy.requests["POST /jobs/ack"] == 2


def run_worker(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return thread


def test_workers_settle_in_batches_and_lease_with_their_acks(
    jq_server: ServerProcess, queue: str, proxy: CountingProxy
) -> None:
    ids = submit(jq_server, queue, 300)
    options = WorkerOptions(queue=queue, concurrency=16, poll_wait=1.0)
    worker = AsyncWorker(proxy.url, jq_server.worker_key, _async_noop, options)

    import asyncio

    async def run() -> None:
        task = asyncio.ensure_future(worker.run())
        while worker.counts.acked < 300:
            await asyncio.sleep(0.05)
        worker.stop()
        await asyncio.wait_for(task, 15)

    asyncio.run(run())
    assert set(states(jq_server, ids).values()) == {JobState.ACKED}
    assert (worker.counts.acked, worker.counts.lost) == (300, 0)
    assert proxy.requests["POST /jobs/{id}/ack"] == 0
    # Fewer requests than jobs: many acks per request, and the next jobs came with them.
    requests = proxy.requests["POST /jobs/ack"] + proxy.requests["POST /jobs/lease"]
    assert requests < 150, proxy.requests


async def _async_noop(job: LeasedJob) -> None:
    return None


def test_a_sync_worker_falls_back_to_single_acks_on_an_old_server(
    jq_server: ServerProcess, queue: str, old_server: CountingProxy
) -> None:
    ids = submit(jq_server, queue, 40)
    worker = Worker(
        old_server.url,
        jq_server.worker_key,
        lambda job: f"done {job.payload}",
        WorkerOptions(queue=queue, concurrency=4, poll_wait=1.0),
    )
    thread = run_worker(worker)
    wait_until(lambda: worker.counts.acked == 40)
    worker.stop()
    thread.join(15)
    assert set(states(jq_server, ids).values()) == {JobState.ACKED}
    assert (worker.counts.acked, worker.counts.lost) == (40, 0)
    # The first batch met the 405; from then on one ack per job, none lost on the way.
    assert 1 <= old_server.requests["POST /jobs/ack"] <= 2
    assert old_server.requests["POST /jobs/{id}/ack"] == 40


def test_batch_ack_off_sends_one_ack_per_job(
    jq_server: ServerProcess, queue: str, proxy: CountingProxy
) -> None:
    submit(jq_server, queue, 20)
    options = WorkerOptions(queue=queue, concurrency=4, poll_wait=1.0, batch_ack=False)
    worker = Worker(proxy.url, jq_server.worker_key, lambda job: None, options)
    thread = run_worker(worker)
    wait_until(lambda: worker.counts.acked == 20)
    worker.stop()
    thread.join(15)
    assert proxy.requests["POST /jobs/ack"] == 0
    assert proxy.requests["POST /jobs/{id}/ack"] == 20


def test_each_entry_is_handled_like_a_single_ack(jq_server: ServerProcess, queue: str) -> None:
    """A result over the server's limit (64 KiB here) is reported as a failed attempt; an
    entry whose lease is gone (the handler settled its own job) is a lost attempt."""
    [too_big] = submit(jq_server, queue, 1, max_retries=0)
    [settled_elsewhere] = submit(jq_server, queue, 1)
    other = Client(jq_server.url, jq_server.worker_key)

    def handler(job: LeasedJob) -> str:
        if job.job_id == too_big:
            return "x" * (65 * 1024)
        other.ack(job.job_id, "by the handler", lease_id=job.lease_id)
        return "by the worker"

    worker = Worker(
        jq_server.url, jq_server.worker_key, handler, WorkerOptions(queue=queue, poll_wait=1.0)
    )
    thread = run_worker(worker)
    try:
        wait_until(lambda: worker.counts.failed == 1 and worker.counts.lost == 1)
    finally:
        worker.stop()
        thread.join(15)
        other.close()
    with Client(jq_server.url, jq_server.client_key) as client:
        dead = client.get(too_big)
        assert dead.state is JobState.DEAD
        assert (dead.result_error or "").startswith("result refused by the server")
        assert client.get(settled_elsewhere).result == "by the handler"
    assert worker.counts.acked == 0


def test_stop_settles_what_finished_and_leases_nothing_more(
    jq_server: ServerProcess, queue: str
) -> None:
    ids = submit(jq_server, queue, 4)
    started = threading.Event()

    def handler(job: LeasedJob) -> str:
        started.set()
        time.sleep(0.5)
        return "finished during shutdown"

    options = WorkerOptions(queue=queue, concurrency=2, poll_wait=1.0, grace=10)
    worker = Worker(jq_server.url, jq_server.worker_key, handler, options)
    thread = run_worker(worker)
    assert started.wait(10)
    worker.stop()
    thread.join(15)
    assert not thread.is_alive()
    found = states(jq_server, ids)
    # The two running at stop were settled; the settle did not lease the other two.
    assert sorted(found.values()) == [JobState.ACKED] * 2 + [JobState.READY] * 2, found
    assert worker.counts.acked == 2
