"""The console's logged state through real `jq serve` processes killed with SIGKILL (issue 17):
a bulk requeue cut by `kill -9` leaves each job requeued at most once (its written chunks
done, the rest not), and sending it again requeues each remaining job once; the per-minute
history and the attempt history come back the same after a `kill -9` and a restart."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import JqServer, ServerFactory

pytestmark = pytest.mark.slow

DEAD_JOBS = 20_000


def _dead_jobs(server: JqServer, queue: str, n: int) -> None:
    """n DEAD jobs of `queue`: submitted with no retries, leased and failed in batches."""
    with server.client(server.client_key, timeout=30) as client:
        for start in range(0, n, 1000):
            batch = [
                {"payload": str(i), "queue": queue, "max_retries": 0}
                for i in range(start, min(n, start + 1000))
            ]
            assert client.post("/jobs/batch", json={"jobs": batch}).status_code == 201
    with server.client(server.worker_key, timeout=30) as worker:
        left = n
        while left:
            leased = worker.post("/jobs/lease", json={"queue": queue, "max_jobs": 100}).json()
            acks = [
                {"job_id": j["job_id"], "lease_id": j["lease_id"], "result_error": "boom"}
                for j in leased
            ]
            results = worker.post("/jobs/ack", json={"acks": acks}).json()["results"]
            assert all(r["state"] == "DEAD" for r in results)
            left -= len(leased)


def _stats(server: JqServer) -> dict[str, Any]:
    with server.client(server.client_key, timeout=10) as client:
        body: dict[str, Any] = client.get("/stats").json()
        return body


def test_a_bulk_requeue_cut_by_kill9_requeues_each_job_once(
    jq_server_factory: ServerFactory,
) -> None:
    server = jq_server_factory("--lease-check-interval", "200ms")
    queue = "bulk-" + uuid.uuid4().hex[:8]
    _dead_jobs(server, queue, DEAD_JOBS)
    assert _stats(server)["queues"][queue]["dead"] == DEAD_JOBS

    def requeue_all() -> None:
        try:
            with server.client(server.client_key, timeout=60) as client:
                client.post("/jobs/bulk", json={"action": "requeue", "queue": queue})
        except httpx.HTTPError:
            pass  # the server was killed under it

    bulk = threading.Thread(target=requeue_all)
    bulk.start()
    deadline = time.monotonic() + 30
    while _stats(server)["totals"]["requeued"] == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    server.kill9()
    bulk.join()
    server.start()

    after = _stats(server)
    requeued, counts = after["totals"]["requeued"], after["queues"][queue]
    assert 0 < requeued <= DEAD_JOBS
    # Each job requeued at most once: every requeue counted is one READY job, the rest DEAD.
    assert counts["runnable"] == requeued and counts["dead"] == DEAD_JOBS - requeued
    assert requeued % 500 == 0  # whole chunks: each one command, atomic
    print(f"kill -9 after {requeued} of {DEAD_JOBS} requeued")

    with server.client(server.client_key, timeout=60) as client:
        rest = client.post("/jobs/bulk", json={"action": "requeue", "queue": queue}).json()
    assert rest["changed"] == DEAD_JOBS - requeued
    final = _stats(server)
    assert final["totals"]["requeued"] == DEAD_JOBS
    assert final["queues"][queue]["runnable"] == DEAD_JOBS and final["queues"][queue]["dead"] == 0


def test_history_and_attempts_survive_kill9(jq_server_factory: ServerFactory) -> None:
    server = jq_server_factory("--lease-check-interval", "200ms")
    queue = "hist-" + uuid.uuid4().hex[:8]
    with server.client(server.client_key, timeout=10) as client:
        ids = [
            client.post("/jobs", json={"payload": "p", "queue": queue}).json()["job_id"]
            for _ in range(5)
        ]
    with server.client(server.worker_key, timeout=10) as worker:
        headers = {"X-Jq-Worker": "box:1:abc"}
        leased = worker.post("/jobs/lease", json={"queue": queue}, headers=headers).json()
        worker.post(
            f"/jobs/{leased['job_id']}/ack",
            json={"lease_id": leased["lease_id"], "result_error": "KeyError: 'x'"},
        )
        leased = worker.post("/jobs/lease", json={"queue": queue}, headers=headers).json()
        worker.post(f"/jobs/{leased['job_id']}/ack", json={"lease_id": leased["lease_id"]})
    with server.client(server.client_key, timeout=10) as client:
        before = client.get("/stats/history", params={"window": "24h", "queue": queue}).json()
        jobs_before = [client.get(f"/jobs/{job_id}").json() for job_id in ids]
    assert (sum(before["submitted"]), sum(before["acked"]), sum(before["failed"])) == (5, 1, 1)

    server.kill9()
    server.start()
    with server.client(server.client_key, timeout=10) as client:
        after = client.get("/stats/history", params={"window": "24h", "queue": queue}).json()
        jobs_after = [client.get(f"/jobs/{job_id}").json() for job_id in ids]
    for name in ("submitted", "acked", "failed"):
        assert sum(after[name]) == sum(before[name])
    assert [j["attempt_history"] for j in jobs_after] == [j["attempt_history"] for j in jobs_before]
    failed = [j for j in jobs_after if any(a["outcome"] == "failed" for a in j["attempt_history"])]
    assert len(failed) == 1 and failed[0]["attempt_history"][0]["worker"] == "box:1:abc"
    assert failed[0]["error_class"] == "KeyError"
