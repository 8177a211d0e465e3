"""The SDK's insight calls against a real `jq serve` (issue 19): a worker's handler reports
progress with `job.progress(0.4, "resized 4/10")` (sync and async workers), `explain` answers
why a job is where it is, and dead letters are listed in groups and requeued or cancelled as a
group."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest

from jq_tool.sdk import (
    AsyncClient,
    AsyncWorker,
    Client,
    Failure,
    JobState,
    LeasedJob,
    NotFound,
    Worker,
    WorkerOptions,
)
from sdk.jq_server_process import ServerProcess, wait_until


def run_in_thread(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, kwargs={"install_signal_handlers": False})
    thread.start()
    return thread


def test_a_sync_worker_reports_progress(jq_server: ServerProcess, queue: str) -> None:
    release = threading.Event()

    def handler(job: LeasedJob) -> str:
        job.progress(0.1, "starting")
        job.progress(0.4, "resized 4/10")
        release.wait(20)
        return "done"

    with Client(jq_server.url, jq_server.client_key) as client:
        job_id = client.submit("image.png", queue=queue)
        worker = Worker(jq_server.url, jq_server.worker_key, handler,
                        WorkerOptions(queue=queue, concurrency=1, poll_wait=1.0))  # fmt: skip
        thread = run_in_thread(worker)
        try:
            wait_until(lambda: (p := client.get(job_id).progress) is not None and p.progress == 0.4)
            job = client.get(job_id)
            assert job.progress is not None and job.progress.note == "resized 4/10"
            assert job.progress.at is not None
            why = client.explain(job_id)
            assert why.reason == "running" and why.progress is not None
            assert "40% done" in why.summary and why.attempt == 1
            release.set()
            wait_until(lambda: client.get(job_id).state is JobState.ACKED)
        finally:
            release.set()
            worker.stop()
            thread.join(10)
        assert client.explain(job_id).reason == "acked"


def test_an_async_worker_reports_progress(jq_server: ServerProcess, queue: str) -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def handler(job: LeasedJob) -> str:
            job.progress(0.75, "three quarters")
            await release.wait()
            return "done"

        async with AsyncClient(jq_server.url, jq_server.client_key) as client:
            job_id = await client.submit("x", queue=queue)
            options = WorkerOptions(queue=queue, concurrency=1, poll_wait=1.0)
            worker = AsyncWorker(jq_server.url, jq_server.worker_key, handler, options)
            running = asyncio.ensure_future(worker.run())
            try:
                for _ in range(200):
                    progress = (await client.get(job_id)).progress
                    if progress is not None:
                        break
                    await asyncio.sleep(0.05)
                assert progress is not None and progress.progress == 0.75
                assert progress.note == "three quarters"
                assert (await client.explain(job_id)).reason == "running"
                release.set()
                for _ in range(200):
                    if (await client.get(job_id)).state is JobState.ACKED:
                        break
                    await asyncio.sleep(0.05)
                assert (await client.get(job_id)).state is JobState.ACKED
            finally:
                release.set()
                worker.stop()
                await asyncio.wait_for(running, 10)

    asyncio.run(main())


def test_progress_is_checked_before_it_is_sent(jq_server: ServerProcess, queue: str) -> None:
    job = LeasedJob(job_id="j", payload="p", lease_until="2030-01-01T00:00:00Z", attempt=1)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="inside a Worker"):
        job.progress(0.5)
    with pytest.raises(ValueError, match="from 0 to 1"):
        job.progress(1.5)
    with pytest.raises(ValueError, match="at most 200"):
        job.progress(0.5, "x" * 201)
    with Client(jq_server.url, jq_server.worker_key) as client:
        with pytest.raises(ValueError):
            client.progress("j", -1)
        with pytest.raises(NotFound):
            client.progress("no-such-job", 0.5)


def test_dead_groups_listed_requeued_and_cancelled(jq_server: ServerProcess, queue: str) -> None:
    tag = uuid.uuid4().hex[:6]

    def handler(job: LeasedJob) -> Failure:
        kind = "A" if int(job.payload) % 2 else "B"
        return Failure(f"Err{tag}{kind}: item {job.payload} failed", retry=False)

    with Client(jq_server.url, jq_server.admin_key) as client:
        ids = [client.submit(str(i), queue=queue, max_retries=0) for i in range(6)]
        worker = Worker(jq_server.url, jq_server.worker_key, handler,
                        WorkerOptions(queue=queue, concurrency=2, poll_wait=1.0))  # fmt: skip
        thread = run_in_thread(worker)
        try:
            wait_until(lambda: all(client.get(i).state is JobState.DEAD for i in ids))
        finally:
            worker.stop()
            thread.join(10)
        groups = {g.error_type: g for g in client.dead_groups().groups if tag in g.error_type}
        a, b = groups[f"Err{tag}A"], groups[f"Err{tag}B"]
        assert (a.count, b.count, a.pattern) == (3, 3, "item <n> failed")
        assert a.queues == {queue: 3} and a.first_seen <= a.last_seen
        why = client.explain(a.sample_job_id)
        assert why.reason == "dead" and why.fingerprint == a.fingerprint

        settled = client.requeue_dead_group(a.fingerprint, chunk=2)
        assert (settled.action, settled.settled, settled.commands) == ("requeue", 3, 2)
        settled = client.cancel_dead_group(b.fingerprint)
        assert (settled.settled, settled.remaining) == (3, 0)
        states = sorted(client.get(i).state.value for i in ids)
        assert states == ["CANCELLED"] * 3 + ["READY"] * 3
        with pytest.raises(NotFound):
            client.requeue_dead_group(a.fingerprint)


def test_explain_a_job_waiting_for_its_parent(jq_server: ServerProcess, queue: str) -> None:
    import httpx

    auth = {"Authorization": f"Bearer {jq_server.client_key}"}
    with httpx.Client(base_url=jq_server.url, headers=auth) as http:
        jobs = [{"payload": "a", "queue": queue},
                {"payload": "b", "queue": queue, "depends_on": ["$0"]}]  # fmt: skip
        results = http.post("/jobs/batch", json={"jobs": jobs}).json()["results"]
    with Client(jq_server.url, jq_server.client_key) as client:
        why = client.explain(results[1]["job_id"])
    assert why.state is JobState.WAITING and why.reason == "waiting_for_parents"
    assert why.parents == [results[0]["job_id"]]
    assert why.parent_states == {results[0]["job_id"]: "READY"}


def test_extend_carries_progress(jq_server: ServerProcess, queue: str) -> None:
    with Client(jq_server.url, jq_server.admin_key) as client:
        job_id = client.submit("x", queue=queue)
        leased = client.lease(queue=queue)[0]
        client.extend(job_id, lease_id=leased.lease_id, progress=0.5, note="half")
        progress = client.get(job_id).progress
        assert progress is not None and (progress.progress, progress.note) == (0.5, "half")
        with pytest.raises(ValueError):
            client.extend(job_id, lease_id=leased.lease_id, progress=3)
