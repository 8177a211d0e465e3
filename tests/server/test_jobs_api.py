"""The job routes of docs/api.md against a real `jq serve`: happy paths, shapes, errors."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

RFC3339_MS = "%Y-%m-%dT%H:%M:%S.%fZ"


def parse_time(text: str) -> datetime:
    assert text.endswith("Z") and len(text) == len("2026-11-28T10:00:00.123Z"), text
    return datetime.strptime(text, RFC3339_MS).replace(tzinfo=UTC)


def queue_name() -> str:
    return "q-" + uuid.uuid4().hex[:12]


def submit(client: httpx.Client, **body: Any) -> str:
    body.setdefault("payload", "x")  # required since issue 15
    response = client.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["job_id"])


def lease(worker: httpx.Client, queue: str, **body: Any) -> dict[str, Any]:
    response = worker.post("/jobs/lease", json={"queue": queue, **body})
    assert response.status_code == 200, response.text
    return dict(response.json())


def assert_error(
    response: httpx.Response, status: int, code: str, field: str | None = None
) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    assert isinstance(body["error"], str) and body["error"]
    if field is not None:
        assert body.get("field") == field, body


def test_health_needs_no_key(server: Any) -> None:
    response = httpx.get(server.url + "/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "role": "single"}


def test_submit_lease_ack_get(client: httpx.Client, worker: httpx.Client) -> None:
    queue = queue_name()
    job_id = submit(client, payload="process this", max_retries=2, priority=5, queue=queue)
    uuid.UUID(job_id)

    leased = lease(worker, queue)
    assert set(leased) == {
        "job_id", "payload", "lease_until", "lease_ms", "attempt", "lease_id", "queue",
        "priority", "max_retries",
    }  # fmt: skip
    assert leased["lease_ms"] == 30_000  # the server's --lease-duration
    assert leased["job_id"] == job_id
    assert leased["payload"] == "process this"
    assert leased["attempt"] == 1
    assert leased["queue"] == queue and leased["priority"] == 5 and leased["max_retries"] == 2
    assert parse_time(leased["lease_until"]) > datetime.now(UTC)

    running = client.get(f"/jobs/{job_id}").json()
    assert running["state"] == "RUNNING"

    acked = worker.post(
        f"/jobs/{job_id}/ack", json={"result": "done", "lease_id": leased["lease_id"]}
    )
    assert acked.status_code == 200, acked.text
    assert acked.json() == {"job_id": job_id, "state": "ACKED"}

    job = client.get(f"/jobs/{job_id}").json()
    assert set(job) == {
        "job_id", "state", "attempts", "max_retries", "created_at", "result", "result_error",
        "payload", "queue", "priority", "run_at", "lease_until", "updated_at", "idempotency_key",
        "error_class", "error_message", "worker", "attempt_history",
    }  # fmt: skip
    assert job["state"] == "ACKED" and job["result"] == "done" and job["result_error"] is None
    assert job["attempts"] == 1 and job["max_retries"] == 2 and job["payload"] == "process this"
    assert job["idempotency_key"] is None and job["lease_until"] is None
    parse_time(job["created_at"])
    parse_time(job["updated_at"])


def test_defaults_of_an_empty_body(client: httpx.Client, worker: httpx.Client) -> None:
    # Issue 15: an empty or missing payload is refused (the original server's contract).
    for body in ({}, {"payload": ""}, {"data": "x"}):
        assert_error(client.post("/jobs", json=body), 400, "invalid_field", "payload")
        assert client.post("/jobs", json=body).json()["error"] == "payload is required"
    job_id = submit(client, payload="only a payload")
    job = client.get(f"/jobs/{job_id}").json()
    assert job["payload"] == "only a payload" and job["queue"] == "default"
    assert job["max_retries"] == 3 and job["priority"] == 0 and job["state"] == "READY"


def test_failed_attempts_retry_then_die(client: httpx.Client, worker: httpx.Client) -> None:
    queue = queue_name()
    job_id = submit(client, queue=queue, max_retries=0)
    leased = lease(worker, queue)
    failed = worker.post(
        f"/jobs/{job_id}/ack", json={"result_error": "boom", "lease_id": leased["lease_id"]}
    )
    assert failed.json() == {"job_id": job_id, "state": "DEAD"}
    assert client.get(f"/jobs/{job_id}").json()["result_error"] == "boom"

    requeued = client.post(f"/jobs/{job_id}/requeue")
    assert requeued.status_code == 200 and requeued.json() == {"job_id": job_id, "state": "READY"}

    retrying = submit(client, queue=queue_name(), max_retries=3)
    queue2 = client.get(f"/jobs/{retrying}").json()["queue"]
    leased = lease(worker, queue2)
    failed = worker.post(
        f"/jobs/{retrying}/ack", json={"result_error": "again", "lease_id": leased["lease_id"]}
    )
    assert failed.json() == {"job_id": retrying, "state": "RETRY"}


def test_priority_and_fifo_order(client: httpx.Client, worker: httpx.Client) -> None:
    queue = queue_name()
    low = submit(client, queue=queue, priority=1)
    first_high = submit(client, queue=queue, priority=9)
    second_high = submit(client, queue=queue, priority=9)
    order = [lease(worker, queue)["job_id"] for _ in range(3)]
    assert order == [first_high, second_high, low]


def test_scheduled_jobs_wait_for_run_at(client: httpx.Client, worker: httpx.Client) -> None:
    queue = queue_name()
    future = submit(client, queue=queue, delay_ms=3_600_000)
    absolute = submit(client, queue=queue, run_at="2099-01-01T00:00:00Z")
    assert worker.post("/jobs/lease", json={"queue": queue}).status_code == 404
    job = client.get(f"/jobs/{absolute}").json()
    assert job["run_at"] == "2099-01-01T00:00:00.000Z"
    run_at = parse_time(client.get(f"/jobs/{future}").json()["run_at"])
    assert run_at.timestamp() > time.time() + 3000
    past = submit(client, queue=queue, run_at="2020-01-01T00:00:00+02:00")
    assert lease(worker, queue)["job_id"] == past


def test_lease_with_max_jobs_returns_a_list(client: httpx.Client, worker: httpx.Client) -> None:
    queue = queue_name()
    ids = {submit(client, queue=queue) for _ in range(3)}
    response = worker.post("/jobs/lease", json={"queue": queue, "max_jobs": 5})
    assert response.status_code == 200
    jobs = response.json()
    assert isinstance(jobs, list) and {job["job_id"] for job in jobs} == ids
    assert len({job["lease_id"] for job in jobs}) == 3
    one = submit(client, queue=queue)
    single = worker.post("/jobs/lease", json={"queue": queue, "max_jobs": 1}).json()
    assert isinstance(single, list) and [job["job_id"] for job in single] == [one]


def test_lease_of_an_empty_queue_is_404(worker: httpx.Client) -> None:
    response = worker.post("/jobs/lease", json={"queue": queue_name()})
    assert response.status_code == 404
    assert response.json() == {"error": "no jobs available", "code": "not_found"}
    assert worker.post("/jobs/lease").status_code in (200, 404)  # no body: the default queue


def test_long_poll_returns_when_a_job_arrives(client: httpx.Client, worker: httpx.Client) -> None:
    queue = queue_name()
    answer: dict[str, Any] = {}

    def long_poll() -> None:
        answer["response"] = worker.post(
            "/jobs/lease", json={"queue": queue, "wait_ms": 20_000}, timeout=30
        )

    thread = threading.Thread(target=long_poll)
    thread.start()
    time.sleep(0.5)  # let the lease request start waiting (no assertion depends on timing)
    job_id = submit(client, queue=queue, payload="late")
    thread.join(30)
    response = answer["response"]
    assert response.status_code == 200, response.text
    assert response.json()["job_id"] == job_id


def test_extend_moves_the_lease(client: httpx.Client, worker: httpx.Client) -> None:
    queue = queue_name()
    job_id = submit(client, queue=queue)
    leased = lease(worker, queue, lease_ms=60_000)
    extended = worker.post(
        f"/jobs/{job_id}/extend", json={"lease_id": leased["lease_id"], "lease_ms": 600_000}
    )
    assert extended.status_code == 200, extended.text
    body = extended.json()
    assert body["job_id"] == job_id
    assert parse_time(body["lease_until"]) > parse_time(leased["lease_until"])


def test_stale_lease_is_refused(client: httpx.Client, worker: httpx.Client) -> None:
    queue = queue_name()
    job_id = submit(client, queue=queue)
    lease(worker, queue)
    for route, body in (("ack", {"result": "x"}), ("extend", {}), ("ack", {"result_error": "x"})):
        body["lease_id"] = "not-the-lease"
        assert_error(worker.post(f"/jobs/{job_id}/{route}", json=body), 409, "lease_mismatch")


def test_wrong_state_is_409(client: httpx.Client, worker: httpx.Client) -> None:
    queue = queue_name()
    job_id = submit(client, queue=queue)
    assert_error(worker.post(f"/jobs/{job_id}/ack", json={"result": "x"}), 409, "invalid_state")
    assert_error(client.post(f"/jobs/{job_id}/requeue"), 409, "invalid_state")
    lease(worker, queue)
    assert_error(client.post(f"/jobs/{job_id}/cancel"), 409, "invalid_state")


def test_cancel(client: httpx.Client, worker: httpx.Client) -> None:
    queue = queue_name()
    job_id = submit(client, queue=queue)
    response = client.post(f"/jobs/{job_id}/cancel")
    assert response.json() == {"job_id": job_id, "state": "CANCELLED"}
    assert worker.post("/jobs/lease", json={"queue": queue}).status_code == 404


def test_unknown_job_is_404(client: httpx.Client, worker: httpx.Client) -> None:
    missing = str(uuid.uuid4())
    assert_error(client.get(f"/jobs/{missing}"), 404, "not_found")
    assert_error(worker.post(f"/jobs/{missing}/ack", json={"result": "x"}), 404, "not_found")
    assert_error(worker.post(f"/jobs/{missing}/extend", json={}), 404, "not_found")
    assert_error(client.post(f"/jobs/{missing}/cancel"), 404, "not_found")
    assert_error(client.post(f"/jobs/{missing}/requeue"), 404, "not_found")
    assert_error(client.get("/no/such/route"), 404, "not_found")


def test_idempotency_by_header_and_by_field(client: httpx.Client) -> None:
    key = "idem-" + uuid.uuid4().hex
    first = client.post("/jobs", json={"payload": "a"}, headers={"Idempotency-Key": key})
    assert first.status_code == 201
    again = client.post("/jobs", json={"payload": "a"}, headers={"Idempotency-Key": key})
    assert again.status_code == 200
    assert again.json() == {"job_id": first.json()["job_id"], "duplicate": True}
    by_field = client.post("/jobs", json={"payload": "a", "idempotency_key": key})
    assert by_field.status_code == 200 and by_field.json()["job_id"] == first.json()["job_id"]
    job = client.get(f"/jobs/{first.json()['job_id']}").json()
    assert job["idempotency_key"] == key

    other = "idem-" + uuid.uuid4().hex
    created = client.post("/jobs", json={"payload": "a", "idempotency_key": other})
    assert created.status_code == 201
    assert created.json()["job_id"] != first.json()["job_id"]


def test_batch_with_a_bad_entry(client: httpx.Client, worker: httpx.Client) -> None:
    queue = queue_name()
    key = "idem-" + uuid.uuid4().hex
    jobs = [
        {"payload": "one", "queue": queue},
        {"payload": "two", "queue": queue, "max_retries": "three"},
        {"payload": "three", "queue": queue, "idempotency_key": key},
        {"payload": "four", "queue": "bad queue!"},
        {"payload": "five", "queue": queue, "idempotency_key": key},
        [1, 2],
    ]
    response = client.post("/jobs/batch", json={"jobs": jobs})
    assert response.status_code == 201, response.text
    results = response.json()["results"]
    assert len(results) == 6
    assert results[0]["duplicate"] is False and uuid.UUID(results[0]["job_id"])
    assert results[1]["field"] == "max_retries" and results[1]["error"]
    assert results[2]["duplicate"] is False
    assert results[3]["field"] == "queue"
    # The same key with another payload is another request (issue 15): refused, not a duplicate.
    assert results[4]["code"] == "idempotency_key_reused" and results[4]["field"] is None
    assert "error" in results[5]
    leased = worker.post("/jobs/lease", json={"queue": queue, "max_jobs": 10}).json()
    assert {job["payload"] for job in leased} == {"one", "three"}


def test_batch_size_limits(client: httpx.Client) -> None:
    assert_error(client.post("/jobs/batch", json={"jobs": []}), 400, "invalid_field", "jobs")
    too_many = {"jobs": [{"payload": "x"}] * 1001}
    assert_error(client.post("/jobs/batch", json=too_many), 400, "invalid_field", "jobs")
    assert_error(client.post("/jobs/batch", json={}), 400, "invalid_field", "jobs")


def test_list_is_newest_first_with_cursor(client: httpx.Client) -> None:
    queue = queue_name()
    ids = [submit(client, queue=queue, payload=f"p{i}") for i in range(5)]
    first = client.get("/jobs", params={"queue": queue, "limit": 2}).json()
    assert set(first) == {"jobs", "next_cursor"}
    assert [job["job_id"] for job in first["jobs"]] == ids[::-1][:2]
    assert all("payload" not in job for job in first["jobs"])
    seen = [job["job_id"] for job in first["jobs"]]
    cursor = first["next_cursor"]
    while cursor:
        page = client.get("/jobs", params={"queue": queue, "limit": 2, "cursor": cursor}).json()
        seen += [job["job_id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
    assert seen == ids[::-1]
    ready = client.get("/jobs", params={"queue": queue, "state": "READY"}).json()["jobs"]
    assert len(ready) == 5
    assert client.get("/jobs", params={"queue": queue, "state": "DEAD"}).json()["jobs"] == []


def test_list_bad_query(client: httpx.Client) -> None:
    assert_error(client.get("/jobs", params={"state": "NAPPING"}), 400, "invalid_field", "state")
    assert_error(client.get("/jobs", params={"limit": "0"}), 400, "invalid_field", "limit")
    assert_error(client.get("/jobs", params={"limit": "1001"}), 400, "invalid_field", "limit")
    assert_error(client.get("/jobs", params={"limit": "x"}), 400, "invalid_field", "limit")
    response = client.get("/jobs", params={"cursor": "garbage!!"})
    assert response.status_code in (200, 400)  # never a 500
    if response.status_code == 400:
        assert response.json()["field"] == "cursor"


def test_stats_shape_and_counts(client: httpx.Client, worker: httpx.Client) -> None:
    queue = queue_name()
    submit(client, queue=queue)
    submit(client, queue=queue, delay_ms=3_600_000)
    stats = client.get("/stats").json()
    for name in ("runnable", "running", "scheduled", "retry", "dead", "acked", "cancelled",
                 "total", "submits_per_sec", "acks_per_sec", "uptime_s"):  # fmt: skip
        assert isinstance(stats[name], int | float), name
    assert stats["role"] == "single" and isinstance(stats["node_id"], str)
    assert stats["queues"][queue] == {
        "runnable": 1, "running": 0, "scheduled": 1, "retry": 0, "dead": 0, "acked": 0,
        "cancelled": 0, "total": 2, "waiting": 0,
        "paused": False, "concurrency": 0, "rate_limit": 0, "rate_period_ms": 0,
    }  # fmt: skip
    assert set(stats["totals"]) == {
        "submitted", "acked", "failed", "retried", "dead", "expired", "cancelled", "requeued",
        "released", "purged", "evicted", "dead_dropped",
    }  # fmt: skip
    assert stats["totals"]["submitted"] >= 2
    assert set(stats["held"]) == {
        "finished_in_memory", "dead_in_memory", "bytes_in_memory", "finished_on_disk",
        "history_bytes", "evicted", "dead_dropped", "idempotency_keys",
    }  # fmt: skip


def test_noop_route(server: Any) -> None:
    response = httpx.post(server.url + "/_noop", content=b'{"x": 1}')
    assert response.status_code == 200 and response.json() == {"ok": True}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"payload": 5}, "payload"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": "3"}, "max_retries"),
        ({"max_retries": 1.5}, "max_retries"),
        ({"priority": "high"}, "priority"),
        ({"priority": 2**40}, "priority"),
        ({"delay_ms": -5}, "delay_ms"),
        ({"run_at": "tomorrow"}, "run_at"),
        ({"run_at": 12}, "run_at"),
        ({"run_at": "2026-01-01T00:00:00Z", "delay_ms": 5}, "run_at"),
        ({"queue": ""}, "queue"),
        ({"queue": "x" * 129}, "queue"),
        ({"queue": "has space"}, "queue"),
        ({"idempotency_key": "k" * 257}, "idempotency_key"),
        ({"idempotency_key": 7}, "idempotency_key"),
    ],
)
def test_submit_bad_field(client: httpx.Client, body: dict[str, Any], field: str) -> None:
    assert_error(client.post("/jobs", json={"payload": "x", **body}), 400, "invalid_field", field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"wait_ms": 30_001}, "wait_ms"),
        ({"wait_ms": -1}, "wait_ms"),
        ({"max_jobs": 0}, "max_jobs"),
        ({"max_jobs": 101}, "max_jobs"),
        ({"lease_ms": 999}, "lease_ms"),
        ({"lease_ms": 3_600_001}, "lease_ms"),
        ({"queue": 5}, "queue"),
    ],
)
def test_lease_bad_field(worker: httpx.Client, body: dict[str, Any], field: str) -> None:
    assert_error(worker.post("/jobs/lease", json=body), 400, "invalid_field", field)


def test_ack_and_extend_bad_fields(client: httpx.Client, worker: httpx.Client) -> None:
    job_id = submit(client, queue=queue_name())
    assert_error(worker.post(f"/jobs/{job_id}/ack", json={"result": 1}), 400, "invalid_field",
                 "result")  # fmt: skip
    assert_error(worker.post(f"/jobs/{job_id}/ack", json={"lease_id": []}), 400,
                 "invalid_field", "lease_id")  # fmt: skip
    assert_error(worker.post(f"/jobs/{job_id}/extend", json={"lease_ms": 10}), 400,
                 "invalid_field", "lease_ms")  # fmt: skip


@pytest.mark.parametrize("body", [b"{not json", b'{"payload": "x"', b"\xff\xfe", b"nul"])
def test_invalid_json(client: httpx.Client, body: bytes) -> None:
    assert_error(client.post("/jobs", content=body), 400, "invalid_json")


@pytest.mark.parametrize("body", [b"[]", b"3", b'"text"', b"null"])
def test_json_that_is_not_an_object(
    client: httpx.Client, worker: httpx.Client, body: bytes
) -> None:
    assert_error(client.post("/jobs", content=body), 400, "invalid_json")
    assert_error(worker.post("/jobs/lease", content=body), 400, "invalid_json")


def test_unknown_fields_and_content_type_are_accepted(client: httpx.Client) -> None:
    response = client.post(
        "/jobs",
        content=b'{"payload": "x", "colour": "blue"}',
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 201, response.text


def test_payload_over_the_limit_is_413(client: httpx.Client) -> None:
    # The shared server runs with --max-payload 64KiB.
    over = "x" * (64 * 1024 + 1)
    assert_error(client.post("/jobs", json={"payload": over}), 413, "payload_too_large", "payload")
    exact = "y" * (64 * 1024)
    assert client.post("/jobs", json={"payload": exact}).status_code == 201
    wide = "é" * (32 * 1024 + 1)  # 2 bytes each in UTF-8: over the limit in bytes
    assert_error(client.post("/jobs", json={"payload": wide}), 413, "payload_too_large", "payload")


def test_body_over_the_limit_is_refused_from_content_length(client: httpx.Client) -> None:
    huge = b'{"payload": "' + b"x" * (1024 * 1024) + b'"}'
    response = client.post("/jobs", content=huge)
    assert_error(response, 413, "payload_too_large")


def test_chunked_body_over_the_limit_is_refused_while_streaming(client: httpx.Client) -> None:
    sent = 0

    def chunks() -> Any:
        nonlocal sent
        yield b'{"payload": "'
        for _ in range(64):  # 4 MiB in all, far over the 192 KiB body limit
            sent += 1
            yield b"x" * 65536
        yield b'"}'

    try:
        response = client.post("/jobs", content=chunks())
    except httpx.TransportError:
        # The server may close the connection before the client finishes sending: still not
        # a server that read the whole body.
        assert sent < 64
        return
    assert_error(response, 413, "payload_too_large")


def test_result_over_the_limit_is_413(client: httpx.Client, worker: httpx.Client) -> None:
    queue = queue_name()
    job_id = submit(client, queue=queue)
    leased = lease(worker, queue)
    response = worker.post(
        f"/jobs/{job_id}/ack",
        json={"result": "r" * (64 * 1024 + 1), "lease_id": leased["lease_id"]},
    )
    assert_error(response, 413, "payload_too_large", "result")


def test_stats_rates_follow_submits_and_acks(client: httpx.Client, worker: httpx.Client) -> None:
    queue = queue_name()
    deadline = time.monotonic() + 20
    seen = {"submits_per_sec": 0.0, "acks_per_sec": 0.0}
    while time.monotonic() < deadline and not all(seen.values()):
        # Keep some traffic flowing until a one-second sample has seen both kinds.
        client.post("/jobs/batch", json={"jobs": [{"queue": queue, "payload": "x"}] * 20})
        for job in worker.post("/jobs/lease", json={"queue": queue, "max_jobs": 20}).json():
            worker.post(f"/jobs/{job['job_id']}/ack", json={"lease_id": job["lease_id"]})
        stats = client.get("/stats").json()
        for name in seen:
            seen[name] = max(seen[name], stats[name])
        time.sleep(0.2)
    assert seen["submits_per_sec"] > 0 and seen["acks_per_sec"] > 0, seen


def test_abandoned_long_poll_leases_nothing(client: httpx.Client, worker: httpx.Client) -> None:
    queue = queue_name()
    with pytest.raises(httpx.ReadTimeout):
        worker.post("/jobs/lease", json={"queue": queue, "wait_ms": 20_000}, timeout=1.0)
    time.sleep(1.0)  # the server notices the closed connection (the assertion is not about time)
    job_id = submit(client, queue=queue)
    leased = worker.post("/jobs/lease", json={"queue": queue, "wait_ms": 2_000})
    assert leased.status_code == 200, leased.text
    assert leased.json()["job_id"] == job_id
    assert leased.json()["attempt"] == 1


def test_a_lease_names_its_length(client: httpx.Client, worker: httpx.Client) -> None:
    """`lease_ms` beside `lease_until`: a worker whose clock differs from the server's cannot
    tell the lease's length from `lease_until` and its own clock, and would keep it too late."""
    queue = queue_name()
    submit(client, payload="a", queue=queue)
    submit(client, payload="b", queue=queue)
    assert lease(worker, queue, lease_ms=5_000)["lease_ms"] == 5_000
    many = worker.post("/jobs/lease", json={"queue": queue, "lease_ms": 7_000, "max_jobs": 5})
    assert [job["lease_ms"] for job in many.json()] == [7_000]
