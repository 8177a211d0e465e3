"""Issue 21: finished jobs beyond the memory bounds are answered from the history store, before
and after a kill -9, to their owner's keys and admin keys only, and a DEAD cap drops the oldest
DEAD jobs with a log line. Real `jq serve` processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from jq_tool.sdk import Client
from tests.conftest import JqServer, ServerFactory

ARGS = ("--max-finished", "5", "--max-dead", "2", "--lease-check-interval", "50ms")


def submit_and_finish(server: JqServer, count: int, *, fail: bool = False) -> list[str]:
    ids = []
    with server.client(server.client_key) as client, server.client(server.worker_key) as worker:
        for i in range(count):
            answer = client.post("/jobs", json={"payload": f"p{i}", "max_retries": 0})
            assert answer.status_code == 201, answer.text
            ids.append(answer.json()["job_id"])
        for _ in range(count):
            leased = worker.post("/jobs/lease", json={}).json()
            body = {"lease_id": leased["lease_id"]}
            body.update({"result_error": "boom"} if fail else {"result": f"r-{leased['job_id']}"})
            assert worker.post(f"/jobs/{leased['job_id']}/ack", json=body).status_code == 200
    return ids


def held(server: JqServer) -> dict[str, int]:
    with server.client(server.client_key) as client:
        return client.get("/stats").json()["held"]


def wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def assert_answered(server: JqServer, ids: list[str], state: str = "ACKED") -> None:
    with server.client(server.client_key) as client:
        for job_id in ids:
            answer = client.get(f"/jobs/{job_id}")
            assert answer.status_code == 200, (job_id, answer.text)
            job = answer.json()
            assert job["state"] == state
            if state == "ACKED":
                assert job["result"] == f"r-{job_id}"


def test_evicted_jobs_answer_from_history_before_and_after_kill9(
    jq_server_factory: ServerFactory,
) -> None:
    server = jq_server_factory(*ARGS)
    ids = submit_and_finish(server, 30)
    wait_for(lambda: held(server)["finished_in_memory"] <= 5)
    stats = held(server)
    assert stats["evicted"] >= 25
    assert_answered(server, ids)  # from memory or, for most, from the history store

    # Killed right after an eviction: the replay evicts again and writes what was not written.
    more = submit_and_finish(server, 20)
    wait_for(lambda: held(server)["evicted"] >= 45)
    server.kill9()
    server.start()
    assert_answered(server, ids + more)
    wait_for(lambda: held(server)["finished_on_disk"] >= 45)
    server.kill9()
    server.start()
    assert_answered(server, ids + more)
    with server.client(server.client_key) as client:
        metrics = client.get("/metrics").text
    assert "jq_history_records" in metrics and "jq_finished_in_memory" in metrics


def test_history_answers_the_owner_and_admins_only(jq_server_factory: ServerFactory) -> None:
    server = jq_server_factory(*ARGS)
    ids = submit_and_finish(server, 10)
    wait_for(lambda: held(server)["finished_in_memory"] <= 5)
    with server.client(server.admin_key) as admin:
        created = admin.post(
            "/admin/keys", json={"name": "other", "owner_id": "someone-else", "type": "client"}
        )
        assert created.status_code == 201, created.text
        other_key = created.json()["key"]
        assert admin.get(f"/jobs/{ids[0]}").status_code == 200
    with httpx.Client(base_url=server.url, headers=server.headers(other_key)) as other:
        answer = other.get(f"/jobs/{ids[0]}")
        assert answer.status_code == 404
        assert answer.json()["code"] == "not_found"


def test_dead_cap_drops_the_oldest_dead_jobs_with_a_log_line(
    jq_server_factory: ServerFactory,
) -> None:
    server = jq_server_factory(*ARGS)
    ids = submit_and_finish(server, 6, fail=True)
    wait_for(lambda: held(server)["dead_dropped"] >= 4)
    assert held(server)["dead_in_memory"] == 2
    with server.client(server.client_key) as client:
        assert client.get("/stats").json()["dead"] == 2
    assert "DEAD jobs dropped past the DEAD cap" in server.log()
    assert_answered(server, ids, state="DEAD")  # the dropped ones from the history store


def test_jq_get_and_the_sdk_answer_evicted_jobs(jq_server_factory: ServerFactory) -> None:
    server = jq_server_factory(*ARGS)
    ids = submit_and_finish(server, 10)
    wait_for(lambda: held(server)["finished_on_disk"] >= 5)
    server.kill9()
    server.start()
    oldest = ids[0]
    with Client(server.url, server.client_key or "") as client:
        job = client.wait_for_completion(oldest, timeout=10)
        assert (job.state, job.result) == ("ACKED", f"r-{oldest}")
        kept = client.stats().held
        assert kept.finished_in_memory <= 5 and kept.finished_on_disk >= 5
    jq = Path(sys.executable).parent / "jq"
    env = {**os.environ, "JQ_URL": server.url, "JQ_KEY": server.client_key or ""}
    shown = subprocess.run([str(jq), "get", oldest, "--json"], env=env, capture_output=True,
                           check=True, timeout=30)  # fmt: skip
    assert json.loads(shown.stdout)["result"] == f"r-{oldest}"
