"""POST /jobs/{id}/release against a real `jq serve`: a lease given back unfinished is READY
again (scheduled while its delay runs), its attempt not counted; the old lease settles nothing;
refusals are 4xx with a JSON body; and all of it survives kill -9 and replay. Through the SDK
too: `Client.release`, a handler's `Snooze`, an AsyncWorker stopped with jobs still running
(`jq release`: tests/cli/test_cli_jobs.py)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jq_tool.sdk import (
    AsyncWorker,
    Client,
    InvalidState,
    LeasedJob,
    Snooze,
    Worker,
    WorkerOptions,
)


def submit_and_lease(server: Any, queue: str, max_retries: int = 3) -> tuple[str, str]:
    with server.client(server.client_key) as client:
        answer = client.post(
            "/jobs", json={"payload": "p", "queue": queue, "max_retries": max_retries}
        )
        job_id = answer.json()["job_id"]
    with server.client(server.worker_key) as worker:
        leased = worker.post("/jobs/lease", json={"queue": queue}).json()
    assert leased["job_id"] == job_id and leased["attempt"] == 1
    return job_id, leased["lease_id"]


def test_release_over_http(server: Any, worker: httpx.Client, client: httpx.Client) -> None:
    job_id, lease_id = submit_and_lease(server, "release-http", max_retries=0)
    before = client.get("/stats").json()["totals"]["released"]
    answer = worker.post(f"/jobs/{job_id}/release", json={"lease_id": lease_id})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"job_id": job_id, "state": "READY"}
    job = client.get(f"/jobs/{job_id}").json()
    assert (job["state"], job["attempts"], job["lease_until"]) == ("READY", 0, None)
    [given_back] = job["attempt_history"]
    assert (given_back["attempt"], given_back["outcome"]) == (1, "released")
    assert given_back["ended_at"] is not None and given_back["traceback"] is None
    assert client.get("/stats").json()["totals"]["released"] == before + 1
    # The old lease is spent: neither an ack nor a second release goes through.
    stale = worker.post(f"/jobs/{job_id}/ack", json={"lease_id": lease_id, "result": "x"})
    assert stale.status_code == 409 and stale.json()["code"] == "invalid_state"
    again = worker.post(f"/jobs/{job_id}/release", json={"lease_id": lease_id})
    assert again.status_code == 409 and again.json()["code"] == "invalid_state"
    # Leased again: the same first attempt (max_retries=0 did not make it DEAD).
    leased = worker.post("/jobs/lease", json={"queue": "release-http"}).json()
    assert (leased["job_id"], leased["attempt"]) == (job_id, 1)
    wrong = worker.post(f"/jobs/{job_id}/release", json={"lease_id": "not-this-one"})
    assert wrong.status_code == 409 and wrong.json()["code"] == "lease_mismatch"


def test_a_release_with_a_delay_is_scheduled(
    server: Any, worker: httpx.Client, client: httpx.Client
) -> None:
    job_id, lease_id = submit_and_lease(server, "release-delay")
    answer = worker.post(f"/jobs/{job_id}/release", json={"lease_id": lease_id, "delay_ms": 600})
    assert answer.status_code == 200, answer.text
    assert client.get(f"/jobs/{job_id}/explain").json()["reason"] == "scheduled"
    assert worker.post("/jobs/lease", json={"queue": "release-delay"}).status_code == 404
    time.sleep(0.7)
    leased = worker.post("/jobs/lease", json={"queue": "release-delay", "wait_ms": 2000})
    assert leased.status_code == 200 and leased.json()["job_id"] == job_id


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"delay_ms": -1}, 400, "delay_ms"),
        ({"delay_ms": 10 * 365 * 86_400_000 + 1}, 400, "delay_ms"),
        ({"delay_ms": "soon"}, 400, "delay_ms"),
        ({"lease_id": "x" * 257}, 400, "lease_id"),
        ({"lease_id": 7}, 400, "lease_id"),
    ],
)
def test_a_malformed_release_is_a_400_naming_the_field(
    server: Any, worker: httpx.Client, body: dict[str, Any], status: int, field: str
) -> None:
    job_id, _ = submit_and_lease(server, f"release-bad-{uuid.uuid4().hex[:8]}")
    answer = worker.post(f"/jobs/{job_id}/release", json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["field"] == field
    # Nothing was given back.
    assert worker.post(f"/jobs/{job_id}/release").json()["state"] == "READY"


def test_release_needs_the_ack_scope_and_a_known_job(
    server: Any, client: httpx.Client, worker: httpx.Client
) -> None:
    job_id, lease_id = submit_and_lease(server, "release-scope")
    refused = client.post(f"/jobs/{job_id}/release", json={"lease_id": lease_id})
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    unknown = worker.post("/jobs/00000000-0000-0000-0000-000000000000/release")
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
    ready = worker.post(f"/jobs/{job_id}/release", json={"lease_id": lease_id})
    assert ready.status_code == 200
    assert worker.post(f"/jobs/{job_id}/release").status_code == 409  # READY now


@pytest.mark.slow
def test_a_release_survives_kill9(jq_server: Any) -> None:
    at_once, lease_a = submit_and_lease(jq_server, "release-kill", max_retries=0)
    later, lease_b = submit_and_lease(jq_server, "release-kill-later", max_retries=0)
    with Client(jq_server.url, jq_server.worker_key) as sdk:
        assert sdk.release(at_once, lease_id=lease_a).state.value == "READY"
        sdk.release(later, lease_id=lease_b, delay=3600)
    jq_server.kill9()
    jq_server.start()
    with Client(jq_server.url, jq_server.worker_key) as sdk:
        with pytest.raises(InvalidState):  # READY: the old lease settles nothing
            sdk.ack(at_once, "late", lease_id=lease_a)
        (leased,) = sdk.lease(queue="release-kill", max_jobs=1)
        assert (leased.job_id, leased.attempt) == (at_once, 1)
        assert sdk.lease(queue="release-kill-later", max_jobs=1) == []
        assert sdk.stats().totals.released == 2
        assert sdk.get(later).state.value == "READY"


def test_a_handler_snoozes_a_job(server: Any) -> None:
    """A handler returns Snooze(delay): the job comes back after the delay, its attempts not
    counted, and runs to completion on its third try."""
    queue = "release-snooze"
    with Client(server.url, server.client_key) as sdk:
        job_id = sdk.submit("p", queue=queue, max_retries=0)
    tries: list[tuple[int, float]] = []

    def handler(job: LeasedJob) -> object:
        tries.append((job.attempt, time.monotonic()))
        return Snooze(0.3) if len(tries) < 3 else "done"

    worker = Worker(
        server.url, server.worker_key, handler, WorkerOptions(queue=queue, poll_wait=0.2)
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        with Client(server.url, server.client_key) as sdk:
            deadline = time.monotonic() + 15
            while sdk.get(job_id).state.value != "ACKED" and time.monotonic() < deadline:
                time.sleep(0.05)
            job = sdk.get(job_id)
    finally:
        worker.stop()
        thread.join(10)
    assert job.state.value == "ACKED" and job.attempts == 1
    assert [attempt for attempt, _ in tries] == [1, 1, 1]
    assert all(b - a >= 0.29 for (_, a), (_, b) in zip(tries, tries[1:], strict=False))
    assert worker.counts.released == 2 and worker.counts.acked == 1


def test_an_async_worker_stopped_past_its_grace_gives_its_jobs_back(server: Any) -> None:
    """Handlers still running when the grace period ends are stopped, and their jobs released
    at once: another worker takes them without waiting out the 60 s lease."""
    queue = "release-at-stop"
    with Client(server.url, server.client_key) as sdk:
        ids = {sdk.submit("p", queue=queue) for _ in range(3)}
    started = 0

    async def stuck(job: LeasedJob) -> None:
        nonlocal started
        started += 1
        await asyncio.sleep(3600)

    options = WorkerOptions(queue=queue, concurrency=3, lease_ms=60_000, grace=0.3, poll_wait=0.2)
    stopping = AsyncWorker(server.url, server.worker_key, stuck, options)

    async def run_then_stop() -> None:
        task = asyncio.ensure_future(stopping.run())
        while started < 3:
            await asyncio.sleep(0.02)
        stopping.stop()
        await asyncio.wait_for(task, 10)

    asyncio.run(run_then_stop())
    assert stopping.counts.released == 3
    with Client(server.url, server.worker_key) as sdk:
        leased = sdk.lease(queue=queue, max_jobs=3)
        assert {job.job_id for job in leased} == ids
        assert all(job.attempt == 1 for job in leased)  # the stopped attempts did not count
        for job in leased:
            sdk.ack(job.job_id, lease_id=job.lease_id)


def test_release_of_a_settled_job_is_invalid_state(server: Any) -> None:
    job_id, lease_id = submit_and_lease(server, "release-settled")
    with Client(server.url, server.worker_key) as sdk:
        sdk.ack(job_id, "ok", lease_id=lease_id)
        with pytest.raises(InvalidState):
            sdk.release(job_id, lease_id=lease_id)


def test_a_snooze_out_of_range_is_a_failed_attempt(server: Any) -> None:
    """Snooze(-1) or a delay past the server's bound is the handler's mistake: reported as a
    failed attempt naming it, not left to wait out the lease unseen."""
    queue = "release-snooze-bad"
    with Client(server.url, server.client_key) as sdk:
        ids = [sdk.submit("p", queue=queue, max_retries=0) for _ in range(2)]
    delays = iter([-1.0, 11 * 365 * 86_400.0])

    def handler(job: LeasedJob) -> object:
        return Snooze(next(delays))

    options = WorkerOptions(queue=queue, poll_wait=0.2, concurrency=1)
    worker = Worker(server.url, server.worker_key, handler, options)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        with Client(server.url, server.client_key) as sdk:
            deadline = time.monotonic() + 15
            while not all(sdk.get(i).finished for i in ids) and time.monotonic() < deadline:
                time.sleep(0.05)
            jobs = [sdk.get(i) for i in ids]
    finally:
        worker.stop()
        thread.join(10)
    assert [job.state.value for job in jobs] == ["DEAD", "DEAD"]
    errors = sorted(job.result_error or "" for job in jobs)
    assert errors[0].startswith("Snooze refused: 400") and "delay_ms" in errors[0], errors
    assert errors[1] == "Snooze refused: delay must not be negative", errors
    assert worker.counts.released == 0 and worker.counts.failed == 2


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.dictionaries(
        st.sampled_from(["lease_id", "delay_ms", "result", "x"]),
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)  # what JSON can carry
        | st.text(max_size=300),
        max_size=3,
    )
)
def test_any_release_body_either_releases_or_changes_nothing(
    server: Any, worker: httpx.Client, client: httpx.Client, body: dict[str, Any]
) -> None:
    """Random bodies on a really leased job: a 200 with the job READY, or a 4xx with a JSON
    error and the job still RUNNING under its lease; never a 500."""
    job_id, lease_id = submit_and_lease(server, f"release-any-{uuid.uuid4().hex[:8]}")
    answer = worker.post(f"/jobs/{job_id}/release", json=body)
    assert answer.status_code < 500, answer.text
    job = client.get(f"/jobs/{job_id}").json()
    if answer.status_code == 200:
        assert job["state"] == "READY"
    else:
        assert set(answer.json()) <= {"error", "code", "field"}
        assert job["state"] == "RUNNING"
        assert (
            worker.post(f"/jobs/{job_id}/release", json={"lease_id": lease_id}).status_code == 200
        )
