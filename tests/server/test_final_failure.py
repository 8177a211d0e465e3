"""`"retry": false` on an ack with `result_error`: the failed attempt is final (DEAD at once, the
original Go server's behaviour, asked for per request), through HTTP, the SDK's `fail` and a
worker's `Failure(retry=False)`, and still DEAD after a kill -9 and replay."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from jq_tool.sdk import Client, Failure, LeasedJob, Worker, WorkerOptions


def _submit_and_lease(server: Any, queue: str, max_retries: int = 3) -> tuple[str, str]:
    with server.client(server.client_key) as client:
        job_id = client.post(
            "/jobs", json={"payload": "p", "queue": queue, "max_retries": max_retries}
        ).json()["job_id"]
    with server.client(server.worker_key) as worker:
        leased = worker.post("/jobs/lease", json={"queue": queue}).json()
    assert leased["job_id"] == job_id
    return job_id, leased["lease_id"]


@pytest.mark.slow
def test_retry_false_is_dead_at_once_and_survives_kill9(jq_server: Any) -> None:
    final_id, final_lease = _submit_and_lease(jq_server, "final")
    retried_id, retried_lease = _submit_and_lease(jq_server, "retried")
    with jq_server.client(jq_server.worker_key) as worker:
        answer = worker.post(
            f"/jobs/{final_id}/ack",
            json={"result_error": "bad input", "lease_id": final_lease, "retry": False},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"job_id": final_id, "state": "DEAD"}
        answer = worker.post(
            f"/jobs/{retried_id}/ack",
            json={"result_error": "flaky", "lease_id": retried_lease, "retry": True},
        )
        assert answer.json()["state"] == "RETRY"
    jq_server.kill9()
    jq_server.start()
    with jq_server.client(jq_server.client_key) as client:
        job = client.get(f"/jobs/{final_id}").json()
        assert (job["state"], job["attempts"], job["max_retries"]) == ("DEAD", 1, 3)
        assert job["result_error"] == "bad input"
        assert client.get(f"/jobs/{retried_id}").json()["state"] in ("RETRY", "READY")
        assert client.get("/stats").json()["totals"]["dead"] == 1


def test_retry_must_be_a_boolean_and_means_nothing_on_success(jq_server: Any) -> None:
    job_id, lease_id = _submit_and_lease(jq_server, "careless")
    with jq_server.client(jq_server.worker_key) as worker:
        refused = worker.post(
            f"/jobs/{job_id}/ack",
            json={"result_error": "x", "lease_id": lease_id, "retry": "no"},
        )
        assert refused.status_code == 400
        assert refused.json()["field"] == "retry"
        acked = worker.post(
            f"/jobs/{job_id}/ack", json={"result": "ok", "lease_id": lease_id, "retry": False}
        )
        assert acked.json()["state"] == "ACKED"


def test_sdk_fail_and_worker_failure_retry_false(jq_server: Any) -> None:
    job_id, lease_id = _submit_and_lease(jq_server, "sdk-final")
    with Client(jq_server.url, jq_server.worker_key) as worker:
        assert worker.fail(job_id, "no", lease_id=lease_id, retry=False).state.value == "DEAD"

    with Client(jq_server.url, jq_server.client_key) as client:
        ids = [client.submit(str(i), queue="worker-final", max_retries=5) for i in range(2)]
    handled = threading.Event()
    seen: list[str] = []

    def handle(job: LeasedJob) -> Failure:
        seen.append(job.job_id)
        if len(seen) == len(ids):
            handled.set()
        return Failure("final" if job.payload == "0" else "again", retry=job.payload != "0")

    options = WorkerOptions(queue="worker-final", poll_wait=1)
    runner = Worker(jq_server.url, jq_server.worker_key, handle, options)
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        assert handled.wait(30)
    finally:
        runner.stop()
        thread.join(30)
    with Client(jq_server.url, jq_server.client_key) as client:
        states = {client.get(i).payload: client.get(i).state.value for i in ids}
    assert states["0"] == "DEAD"
    assert states["1"] in ("RETRY", "READY", "RUNNING")
