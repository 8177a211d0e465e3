"""The insight routes against a real `jq serve` (issue 19): every branch of GET
/jobs/{id}/explain built for real (not due; no worker asked for the queue; N ahead and the
drain rate; first in line; leased since T until T2, attempt k of n, with progress; waiting to
retry after E; DEAD after n attempts with its group; ACKED; CANCELLED), progress reports and
their bounds, dead letters grouped by cause and a whole group requeued or cancelled, /stats
and /metrics latency, and a queue past its max latency warned about on /health."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest


def unique(prefix: str = "q") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def insight_server(jq_module_server_factory: Callable[..., Any]) -> Any:
    # Lease expiry is not part of these tests; a fast tick makes RETRY jobs come due quickly.
    return jq_module_server_factory("--lease-check-interval", "200ms")


@pytest.fixture
def client(insight_server: Any) -> Iterator[httpx.Client]:
    with insight_server.client(insight_server.admin_key) as http:
        yield http


def submit(client: httpx.Client, queue: str, **fields: Any) -> str:
    response = client.post("/jobs", json={"payload": "x", "queue": queue, **fields})
    assert response.status_code == 201, response.text
    return str(response.json()["job_id"])


def lease(client: httpx.Client, queue: str) -> dict[str, Any]:
    response = client.post("/jobs/lease", json={"queue": queue})
    assert response.status_code == 200, response.text
    return dict(response.json())


def explain(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/jobs/{job_id}/explain")
    assert response.status_code == 200, response.text
    return dict(response.json())


def fail(client: httpx.Client, job: dict[str, Any], error: str, retry: bool = True) -> None:
    response = client.post(
        f"/jobs/{job['job_id']}/ack",
        json={"lease_id": job["lease_id"], "result_error": error, "retry": retry},
    )
    assert response.status_code == 200, response.text


def test_not_due_until_its_run_at(client: httpx.Client) -> None:
    job_id = submit(client, unique(), delay_ms=3_600_000)
    body = explain(client, job_id)
    assert (body["state"], body["reason"]) == ("READY", "scheduled")
    assert body["summary"].startswith("Not due until ") and body["run_at"].endswith("Z")


def test_no_worker_has_asked_for_the_queue(client: httpx.Client) -> None:
    asked = unique("asked")
    assert client.post("/jobs/lease", json={"queue": asked}).status_code == 404  # empty poll
    queue = unique("lonely")
    job_id = submit(client, queue)
    body = explain(client, job_id)
    assert body["reason"] == "no_worker"
    assert f"no worker has asked for queue '{queue}'" in body["summary"]
    assert asked in body["asked_queues"] and asked in body["summary"]
    assert "last_asked_at" not in body


def test_jobs_ahead_and_the_drain_rate(client: httpx.Client) -> None:
    queue = unique("busy")
    first = submit(client, queue)
    for _ in range(3):
        submit(client, queue)
    lease(client, queue)  # takes `first`: one job leased in the last minute
    lease(client, queue)
    high = submit(client, queue, priority=5)
    last = submit(client, queue)
    body = explain(client, last)
    assert body["reason"] == "queued"
    assert body["ahead"] == 3  # the two older ones left and the higher priority one
    assert body["drain_per_s"] > 0 and "expected_at" in body
    assert re.search(r"3 jobs ahead of it .* drains at [0-9.]+/s, so it should run in about",
                     body["summary"])  # fmt: skip
    assert explain(client, high)["reason"] == "next"
    assert explain(client, first)["reason"] == "running"


def test_leased_by_a_worker_that_named_itself(client: httpx.Client) -> None:
    queue = unique("named")
    job_id = submit(client, queue)
    answer = client.post("/jobs/lease", json={"queue": queue}, headers={"X-Jq-Worker": "w-7"})
    assert answer.status_code == 200, answer.text
    body = explain(client, job_id)
    assert body["worker"] == "w-7" and body["summary"].startswith("Leased by worker w-7 since ")


def test_running_with_progress_then_retry_then_dead(client: httpx.Client) -> None:
    queue = unique("work")
    job_id = submit(client, queue, max_retries=1)
    job = lease(client, queue)
    body = explain(client, job_id)
    assert (body["reason"], body["attempt"], body["max_attempts"]) == ("running", 1, 2)
    assert body["lease_id"] == job["lease_id"] and body["lease_until"] == job["lease_until"]
    assert "attempt 1 of 2" in body["summary"] and "progress" not in body

    response = client.post(
        f"/jobs/{job_id}/progress",
        json={"progress": 0.4, "note": "resized 4/10", "lease_id": job["lease_id"]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["progress"]["progress"] == 0.4
    body = explain(client, job_id)
    assert body["progress"]["note"] == "resized 4/10" and "40% done" in body["summary"]
    got = client.get(f"/jobs/{job_id}").json()
    assert got["progress"]["progress"] == 0.4 and got["progress"]["note"] == "resized 4/10"

    fail(client, job, "ValueError: user 17 not found")
    body = explain(client, job_id)
    assert (body["state"], body["reason"]) == ("RETRY", "retry_wait")
    assert body["error"] == "ValueError: user 17 not found"
    assert "attempt 1 of 2 failed: ValueError: user 17 not found" in body["summary"]

    deadline = time.monotonic() + 30
    while explain(client, job_id)["state"] != "READY":  # the backoff (about a second)
        assert time.monotonic() < deadline
        time.sleep(0.1)
    job = lease(client, queue)
    assert "progress" not in client.get(f"/jobs/{job_id}").json()  # a new attempt
    fail(client, job, "ValueError: user 18 not found")
    body = explain(client, job_id)
    assert (body["state"], body["reason"]) == ("DEAD", "dead")
    assert body["summary"].startswith("DEAD after 2 attempts")
    groups = client.get("/dead/groups").json()["groups"]
    assert body["fingerprint"] in [g["fingerprint"] for g in groups]


def test_acked_and_cancelled(client: httpx.Client) -> None:
    queue = unique("done")
    job_id = submit(client, queue)
    job = lease(client, queue)
    client.post(f"/jobs/{job_id}/ack", json={"lease_id": job["lease_id"], "result": "ok"})
    body = explain(client, job_id)
    assert body["reason"] == "acked" and body["summary"].startswith("ACKED at ")
    other = submit(client, queue, delay_ms=60_000)
    assert client.post(f"/jobs/{other}/cancel").status_code == 200
    assert explain(client, other)["reason"] == "cancelled"
    assert client.get("/jobs/no-such-job/explain").status_code == 404


def test_progress_bounds_and_refusals(client: httpx.Client) -> None:
    queue = unique("bounds")
    job_id = submit(client, queue)
    for body in ({"progress": 1.5}, {"progress": -0.1}, {"progress": "half"}, {},
                 {"progress": 0.5, "note": "x" * 201}):  # fmt: skip
        response = client.post(f"/jobs/{job_id}/progress", json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["code"]
    response = client.post(f"/jobs/{job_id}/progress", json={"progress": 0.5})
    assert response.status_code == 409  # READY, not RUNNING
    job = lease(client, queue)
    response = client.post(f"/jobs/{job_id}/progress", json={"progress": 0.5, "lease_id": "old"})
    assert response.status_code == 409 and response.json()["code"] == "lease_mismatch"
    full = {"progress": 1, "note": "x" * 200, "lease_id": job["lease_id"]}
    response = client.post(f"/jobs/{job_id}/progress", json=full)
    assert response.status_code == 200
    assert client.post("/jobs/nope/progress", json={"progress": 0.5}).status_code == 404


def test_dead_letters_grouped_requeued_and_cancelled(client: httpx.Client) -> None:
    queue = unique("dl")
    tag = uuid.uuid4().hex[:6]  # keeps these groups apart from the other tests' dead jobs
    ids = {"a": [], "b": []}  # type: dict[str, list[str]]
    for i in range(6):
        kind = "a" if i % 3 else "b"
        job_id = submit(client, queue, max_retries=0)
        job = lease(client, queue)
        error = (
            f"Err{tag}A: order {1000 + i} failed at /srv/{i}/x.py"
            if kind == "a"
            else f"Err{tag}B: timeout after {i}s"
        )
        fail(client, job, error)
        ids[kind].append(job_id)
    listed = client.get("/dead/groups").json()
    ours = {g["error_type"]: g for g in listed["groups"] if tag in g["error_type"]}
    a, b = ours[f"Err{tag}A"], ours[f"Err{tag}B"]
    assert (a["count"], b["count"]) == (4, 2)
    assert a["pattern"] == "order <n> failed at <path>" and a["queues"] == {queue: 4}
    assert a["sample_job_id"] in ids["a"] and a["first_seen"] <= a["last_seen"]
    assert listed["dead"] >= 6 and listed["group_count"] >= 2

    response = client.post(f"/dead/groups/{a['fingerprint']}/requeue", json={"chunk": 3})
    assert response.status_code == 200, response.text
    assert response.json() == {"action": "requeue", "settled": 4, "commands": 2, "remaining": 0}
    for job_id in ids["a"]:
        got = client.get(f"/jobs/{job_id}").json()
        assert (got["state"], got["attempts"]) == ("READY", 0)
    response = client.post(f"/dead/groups/{b['fingerprint']}/cancel")
    assert response.json()["settled"] == 2
    assert {client.get(f"/jobs/{j}").json()["state"] for j in ids["b"]} == {"CANCELLED"}
    groups = client.get("/dead/groups").json()["groups"]
    assert not [g for g in groups if tag in g["error_type"]]
    again = client.post(f"/dead/groups/{a['fingerprint']}/requeue")
    assert again.status_code == 404 and again.json()["code"] == "not_found"
    assert client.post("/dead/groups/x/requeue", json={"chunk": 0}).status_code == 400
    assert client.post("/dead/groups/x/explode").status_code in (404, 405)


def test_a_worker_key_may_not_requeue_a_group(insight_server: Any) -> None:
    with insight_server.client(insight_server.worker_key) as worker:
        assert worker.post("/dead/groups/abc/requeue").status_code == 403


def test_stats_and_metrics_show_latency(client: httpx.Client) -> None:
    queue = unique("lat")
    # /stats shows the 50 busiest queues and every queue with a threshold: this module's other
    # tests may have made 50 busier ones, so the threshold (an hour: never reached) keeps it in.
    answer = client.put(f"/queues/{queue}", json={"max_latency_ms": 3_600_000})
    assert answer.status_code == 200
    for _ in range(3):
        submit(client, queue)
    lease(client, queue)
    # /stats is built at most once a second: the queue shows from the next build on.
    deadline = time.monotonic() + 10
    while queue not in (stats := client.get("/stats").json())["latency"]:
        assert time.monotonic() < deadline, stats["latency"].keys()
        time.sleep(0.2)
    latency = stats["latency"][queue]
    assert latency["leased"] == 1 and latency["oldest_runnable_age_s"] is not None
    assert latency["wait_p50_s"] is not None and latency["drain_per_s"] > 0
    metrics = client.get("/metrics").text
    assert f'jq_queue_wait_seconds_count{{queue="{queue}"}} 1.0' in metrics
    assert f'jq_queue_oldest_runnable_age_seconds{{queue="{queue}"}}' in metrics


def test_health_warns_of_a_queue_past_its_max_latency(
    jq_server_factory: Callable[..., Any],
) -> None:
    server = jq_server_factory()
    with server.client(server.admin_key) as client:
        for queue, ms in (("slow", 1000), ("fast", 3_600_000)):
            answer = client.put(f"/queues/{queue}", json={"max_latency_ms": ms})
            assert answer.status_code == 200 and answer.json()["max_latency_ms"] == ms
        assert client.put("/queues/x", json={"max_latency_ms": -1}).status_code == 400
        submit(client, "slow")
        submit(client, "fast")
        deadline = time.monotonic() + 30
        while True:
            health = httpx.get(server.url + "/health")
            if "warnings" in health.json():
                break
            assert time.monotonic() < deadline, health.text
            time.sleep(0.2)
        body = health.json()
        assert health.status_code == 200 and body["status"] == "ok"
        assert [w["check"] for w in body["warnings"]] == ["max_latency"]
        assert "queue 'slow'" in body["warnings"][0]["reason"]
        metrics = client.get("/metrics").text
        assert 'jq_queue_latency_breached{queue="slow"} 1.0' in metrics
        assert 'jq_queue_latency_breached{queue="fast"} 0.0' in metrics
        assert 'jq_queue_max_latency_seconds{queue="slow"} 1.0' in metrics
        # A logged setting: it outlives a kill -9; 0 removes it.
        server.kill9()
        server.start()
        assert client.get("/queues/slow").json()["max_latency_ms"] == 1000
        client.put("/queues/slow", json={"max_latency_ms": 0})
        deadline = time.monotonic() + 30
        while "warnings" in httpx.get(server.url + "/health").json():
            assert time.monotonic() < deadline
            time.sleep(0.2)


# --- flow control (issue 18): parents, a paused queue, concurrency and rate limits ----------


def test_waiting_for_its_parents(client: httpx.Client) -> None:
    queue = unique("deps")
    jobs = [{"payload": "a", "queue": queue}, {"payload": "b", "queue": queue},
            {"payload": "sum", "queue": queue, "depends_on": ["$0", "$1"]}]  # fmt: skip
    results = client.post("/jobs/batch", json={"jobs": jobs}).json()["results"]
    parents, child = [r["job_id"] for r in results[:2]], results[2]["job_id"]
    body = explain(client, child)
    assert (body["state"], body["reason"]) == ("WAITING", "waiting_for_parents")
    assert body["parents"] == parents and set(body["parent_states"].values()) == {"READY"}
    assert body["summary"].startswith("WAITING for 2 parents to be ACKED: ")
    job = lease(client, queue)
    client.post(f"/jobs/{job['job_id']}/ack", json={"lease_id": job["lease_id"]})
    body = explain(client, child)
    assert len(body["parents"]) == 1 and job["job_id"] not in body["parents"]


def test_a_paused_queue(client: httpx.Client) -> None:
    queue = unique("paused")
    job_id = submit(client, queue)
    assert client.post(f"/queues/{queue}/pause").status_code == 200
    body = explain(client, job_id)
    assert body["reason"] == "paused" and "is paused" in body["summary"]
    client.post(f"/queues/{queue}/resume")
    assert explain(client, job_id)["reason"] in ("no_worker", "next")


def test_a_queue_at_its_concurrency_limit(client: httpx.Client) -> None:
    queue = unique("conc")
    assert client.put(f"/queues/{queue}", json={"concurrency": 1}).status_code == 200
    submit(client, queue)
    waiting = submit(client, queue)
    lease(client, queue)
    body = explain(client, waiting)
    assert (body["reason"], body["running"], body["concurrency"]) == ("concurrency_limit", 1, 1)
    assert "1 of 1 jobs running" in body["summary"]


def test_a_queue_at_its_rate_limit(client: httpx.Client) -> None:
    queue = unique("rate")
    settings = {"rate_limit": 1, "rate_period_ms": 3_600_000}
    assert client.put(f"/queues/{queue}", json=settings).status_code == 200
    submit(client, queue)
    waiting = submit(client, queue)
    lease(client, queue)
    body = explain(client, waiting)
    assert (body["reason"], body["rate_limit"], body["rate_period_ms"]) == (
        "rate_limit", 1, 3_600_000,
    )  # fmt: skip
    assert "blocked_until" in body and "1 leases per 60min" in body["summary"]


def test_progress_sent_with_a_lease_extension(client: httpx.Client) -> None:
    queue = unique("ext")
    job_id = submit(client, queue)
    job = lease(client, queue)
    body = {"lease_id": job["lease_id"], "lease_ms": 60_000, "progress": 0.9, "note": "nearly"}
    response = client.post(f"/jobs/{job_id}/extend", json=body)
    assert response.status_code == 200, response.text
    got = client.get(f"/jobs/{job_id}").json()
    assert got["progress"]["progress"] == 0.9 and got["progress"]["note"] == "nearly"
    bad = client.post(f"/jobs/{job_id}/extend", json={"lease_id": job["lease_id"], "progress": 2})
    assert bad.status_code == 400 and bad.json()["field"] == "progress"
