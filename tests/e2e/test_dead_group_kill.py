"""A whole dead-letter group requeued through a real `jq serve` killed with SIGKILL midway
(issue 19): the group is settled in logged commands of `chunk` jobs each, so the kill leaves
some chunks applied and the rest untouched; after the restart the group holds exactly the jobs
not yet requeued, and the request sent again requeues those. Each job is requeued exactly once:
the `requeued` counter ends at the group's size, every job is READY with a fresh attempt
budget, and the group is gone."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import httpx
import pytest

from tests.conftest import JqServer, ServerFactory

pytestmark = pytest.mark.slow

JOBS = 1200
QUEUE = "imports"


def make_dead_jobs(client: httpx.Client) -> list[str]:
    ids: list[str] = []
    for start in range(0, JOBS, 1000):
        jobs = [{"payload": str(i), "queue": QUEUE, "max_retries": 0}
                for i in range(start, min(start + 1000, JOBS))]  # fmt: skip
        response = client.post("/jobs/batch", json={"jobs": jobs})
        assert response.status_code == 201, response.text
        ids += [entry["job_id"] for entry in response.json()["results"]]
    while True:
        leased = client.post("/jobs/lease", json={"queue": QUEUE, "max_jobs": 100})
        if leased.status_code == 404:
            return ids
        acks = [{"job_id": job["job_id"], "lease_id": job["lease_id"],
                 "result_error": f"ImportError: row {job['payload']} of /data/{job['job_id']}.csv"}
                for job in leased.json()]  # fmt: skip
        assert client.post("/jobs/ack", json={"acks": acks}).status_code == 200


def requeued(client: httpx.Client) -> int:
    return int(client.get("/stats").json()["totals"]["requeued"])


def test_a_group_requeue_killed_midway_requeues_each_job_once(
    jq_server_factory: ServerFactory,
) -> None:
    server: JqServer = jq_server_factory("--lease-check-interval", "200ms")
    with server.client(server.admin_key, timeout=30) as client:
        ids = make_dead_jobs(client)
        (group,) = [g for g in client.get("/dead/groups").json()["groups"]
                    if g["error_type"] == "ImportError"]  # fmt: skip
        assert group["count"] == JOBS and group["pattern"] == "row <n> of <path>"
        fingerprint = group["fingerprint"]

        def requeue_all() -> None:
            # chunk 1: one logged command (one fdatasync) per job, so the kill lands midway.
            with contextlib.suppress(httpx.HTTPError):  # the server is killed under it
                client_in_thread.post(f"/dead/groups/{fingerprint}/requeue", json={"chunk": 1})

        with server.client(server.admin_key, timeout=60) as client_in_thread:
            thread = threading.Thread(target=requeue_all)
            thread.start()
            deadline = time.monotonic() + 60
            while requeued(client) < 50:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            server.kill9()
            thread.join(30)

    server.start()
    with server.client(server.admin_key, timeout=60) as client:
        done = requeued(client)
        assert 50 <= done < JOBS  # the kill landed midway
        (group,) = [g for g in client.get("/dead/groups").json()["groups"]
                    if g["fingerprint"] == fingerprint]  # fmt: skip
        assert group["count"] == JOBS - done  # applied chunks left the group, the rest stayed
        response = client.post(f"/dead/groups/{fingerprint}/requeue")
        assert response.status_code == 200, response.text
        assert response.json()["settled"] == JOBS - done
        assert requeued(client) == JOBS  # each job once
        states: dict[str, Any] = {}
        for job_id in ids:
            job = client.get(f"/jobs/{job_id}").json()
            states[job_id] = (job["state"], job["attempts"])
        assert set(states.values()) == {("READY", 0)}
        assert not [g for g in client.get("/dead/groups").json()["groups"]
                    if g["fingerprint"] == fingerprint]  # fmt: skip
        assert client.post(f"/dead/groups/{fingerprint}/requeue").status_code == 404
