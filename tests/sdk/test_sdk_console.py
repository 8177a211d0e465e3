"""The console through the SDK against a real `jq serve` (issue 17): a Worker names itself
(X-Jq-Worker), a job that failed once and then succeeded shows both attempts with the worker
and the exception, and no current error; workers(), queue(), history(), searches and the bulk
actions of Client and AsyncClient."""

from __future__ import annotations

import asyncio
import threading
import uuid

from jq_tool.sdk import (
    AsyncClient,
    Client,
    JobState,
    LeasedJob,
    QueueNotFound,
    Worker,
    WorkerOptions,
)
from sdk.jq_server_process import ServerProcess, wait_until


def test_a_worker_names_itself_and_a_retried_job_keeps_its_attempts(
    jq_server: ServerProcess, queue: str
) -> None:
    calls: list[str] = []

    def handler(job: LeasedJob) -> str:
        calls.append(job.job_id)
        if len(calls) == 1:
            raise ValueError("first try fails")
        return "ok"

    worker_id = f"box-{uuid.uuid4().hex[:6]}:1:aa"
    with Client(jq_server.url, jq_server.client_key) as client:
        job_id = client.submit({"n": 1}, queue=queue, max_retries=3)
        worker = Worker(
            jq_server.url,
            jq_server.worker_key,
            handler,
            WorkerOptions(queue=queue, poll_wait=1.0, worker_id=worker_id),
        )
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            wait_until(lambda: client.get(job_id).state is JobState.ACKED)
            seen = [w.worker_id for w in client.workers(limit=1000).workers]
            assert worker_id in seen
        finally:
            worker.stop()
            thread.join(10)
        # A worker that stopped said so: it is not listed for the 5 minutes after its last poll.
        assert worker_id not in [w.worker_id for w in client.workers(limit=1000).workers]
        job = client.get(job_id)
        assert job.result_error is None and job.error_class is None
        history = job.attempt_history or []
        assert [(a.attempt, a.outcome, a.worker) for a in history] == [
            (1, "failed", worker_id),
            (2, "acked", worker_id),
        ]
        assert history[0].error_class == "ValueError"
        assert history[0].error_message == "first try fails"
        assert history[0].traceback and history[0].traceback.startswith("Traceback")
        assert Worker(jq_server.url, None, print).worker_id.count(":") == 2


def test_queue_history_search_and_bulk(jq_server: ServerProcess, queue: str) -> None:
    with Client(jq_server.url, jq_server.client_key) as client:
        ids = [client.submit({"n": i}, queue=queue, max_retries=0) for i in range(3)]
        with Client(jq_server.url, jq_server.worker_key, worker_id="w:1:x") as worker:
            for leased in worker.lease(queue=queue, max_jobs=3):
                worker.fail(leased.job_id, "OSError: disk gone", lease_id=leased.lease_id)
        detail = client.queue(queue)
        assert detail.dead == 3 and detail.latency_ms is None
        assert sum(detail.throughput.failed) == 3
        assert sum(client.history(queue=queue).submitted) == 3
        assert len(client.history(window="24h").acked) == 1440
        found = list(client.iter_jobs(error="disk gone", queue=queue))
        assert sorted(job.job_id for job in found) == sorted(ids)
        assert found[0].error_class == "OSError"
        assert client.bulk_requeue(queue=queue).changed == 3
        assert client.bulk_cancel(queue=queue, states=["ready"]).changed == 3
        try:
            client.queue(f"nope-{uuid.uuid4().hex[:6]}")
        except QueueNotFound:
            pass
        else:
            raise AssertionError("an unknown queue is QueueNotFound")


def test_the_async_client_has_the_same_calls(jq_server: ServerProcess, queue: str) -> None:
    async def run() -> None:
        async with AsyncClient(jq_server.url, jq_server.client_key) as client:
            await client.submit({"n": 1}, queue=queue, delay=3600)
            page = await client.list(queue=queue, state="scheduled")
            assert len(page.jobs) == 1
            assert (await client.queue(queue)).scheduled == 1
            assert (await client.history(queue=queue)).tracked is True
            assert (await client.workers()).workers is not None
            async with AsyncClient(jq_server.url, jq_server.worker_key) as worker:
                forgotten = await worker.forget_worker("never/seen:1:x")
            assert (forgotten.worker_id, forgotten.forgotten) == ("never/seen:1:x", False)
            assert (await client.bulk_cancel(queue=queue)).changed == 1
            assert (await client.bulk_requeue(queue=queue)).changed == 0

    asyncio.run(run())
