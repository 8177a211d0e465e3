"""Flow control through the SDK against a real `jq serve` (issue 18): get_queue, set_queue,
pause_queue and resume_queue on Client and AsyncClient (typed QueueSettings, an admin key to
change), unique jobs (the same id back), dependencies by id and by "$N" in submit_many (the
WAITING state, UnknownParent for a job that is not the caller's)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from jq_tool.sdk import (
    AsyncClient,
    Client,
    Forbidden,
    JobSpec,
    JobState,
    QueueSettings,
    UnknownParent,
)
from sdk.jq_server_process import ServerProcess


def test_pause_limit_and_resume_a_queue(jq_server: ServerProcess, queue: str) -> None:
    with (
        Client(jq_server.url, jq_server.admin_key) as admin,
        Client(jq_server.url, jq_server.client_key) as client,
    ):
        client.submit("a", queue=queue)
        paused = admin.pause_queue(queue)
        assert isinstance(paused, QueueSettings) and paused.paused
        assert paused.counts is not None and paused.counts.runnable == 1
        assert admin.lease(queue=queue) == []
        assert client.stats().queues[queue].paused
        limited = admin.set_queue(queue, concurrency=2, rate_limit=10, rate_period=timedelta(1))
        assert (limited.concurrency, limited.rate_limit, limited.rate_period_ms) == (
            2,
            10,
            86_400_000,
        )
        assert client.get_queue(queue).paused
        with pytest.raises(Forbidden):
            client.pause_queue(queue)
        assert not admin.resume_queue(queue).paused
        assert len(admin.lease(queue=queue)) == 1


async def test_async_client_queue_methods(jq_server: ServerProcess, queue: str) -> None:
    async with AsyncClient(jq_server.url, jq_server.admin_key) as admin:
        assert (await admin.pause_queue(queue)).paused
        assert (await admin.get_queue(queue)).paused
        assert (await admin.set_queue(queue, concurrency=1)).concurrency == 1
        assert not (await admin.resume_queue(queue)).paused


def test_unique_jobs_and_dependencies(jq_server: ServerProcess, queue: str) -> None:
    key = uuid.uuid4().hex
    with (
        Client(jq_server.url, jq_server.admin_key) as admin,
        Client(jq_server.url, jq_server.client_key) as client,
    ):
        first = client.submit("u", queue=queue, unique_key=key, unique_scope="active")
        assert client.submit("u", queue=queue, unique_key=key, unique_scope="active") == first
        results = client.submit_many(
            [
                JobSpec("a", queue=queue),
                JobSpec("b", queue=queue),
                JobSpec("sum", queue=queue, depends_on=["$0", "$1"], on_parent_failure="run"),
                JobSpec("u", queue=queue, unique_key=key, unique_scope="active"),
            ]
        )
        assert results[3].unique and results[3].job_id == first
        child = client.get(results[2].job_id or "")
        assert child.state is JobState.WAITING
        assert child.depends_on == [results[0].job_id, results[1].job_id]
        assert child.on_parent_failure == "run"
        assert client.stats().waiting >= 1
        other = client.submit("after", queue=queue, depends_on=[first])
        assert client.get(other).state is JobState.WAITING
        with pytest.raises(UnknownParent):
            client.submit("orphan", queue=queue, depends_on=["no-such-job"])
        leased = admin.lease(queue=queue, max_jobs=10)
        assert {j.job_id for j in leased} == {first, results[0].job_id, results[1].job_id}
        for job in leased:
            admin.ack(job.job_id, "ok", lease_id=job.lease_id)
        released = admin.lease(queue=queue, max_jobs=10)
        assert {j.job_id for j in released} == {results[2].job_id, other}
