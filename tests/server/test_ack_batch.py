"""POST /jobs/ack against a real server: batch ack (many leases settled in one durable write,
a result per entry) and ack-and-lease-next (the next jobs leased in the same write), its
scopes and limits (agreeing with /openapi.json), the old single ack unchanged beside it, and
what it answered still true after a kill -9."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator


def new_queue() -> str:
    return "ackb-" + uuid.uuid4().hex[:10]


def leased(client: httpx.Client, worker: httpx.Client, queue: str, count: int) -> list[Any]:
    jobs = [{"queue": queue, "payload": f"p{i}"} for i in range(count)]
    assert client.post("/jobs/batch", json={"jobs": jobs}).status_code == 201
    answer = worker.post("/jobs/lease", json={"queue": queue, "max_jobs": count})
    assert answer.status_code == 200 and len(answer.json()) == count
    return list(answer.json())


def schema_of(document: dict[str, Any], name: str) -> Draft202012Validator:
    return Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    )


def test_batch_ack_settles_each_entry_on_its_own(
    client: httpx.Client, worker: httpx.Client
) -> None:
    queue = new_queue()
    jobs = leased(client, worker, queue, 4)
    answer = worker.post(
        "/jobs/ack",
        json={
            "acks": [
                {"job_id": jobs[0]["job_id"], "lease_id": jobs[0]["lease_id"], "result": "r"},
                {"job_id": jobs[1]["job_id"], "lease_id": jobs[1]["lease_id"],
                 "result_error": "boom"},
                {"job_id": jobs[2]["job_id"], "lease_id": "stale"},
                {"job_id": "no-such-job", "lease_id": "x"},
                # A result over --max-payload (64 KiB here) refuses this entry only.
                {"job_id": jobs[3]["job_id"], "lease_id": jobs[3]["lease_id"],
                 "result": "x" * (64 * 1024 + 1)},
            ]
        },
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert answer.json()["leased"] == []
    assert results[0] == {"job_id": jobs[0]["job_id"], "state": "ACKED"}
    assert results[1] == {"job_id": jobs[1]["job_id"], "state": "RETRY"}
    assert results[2]["code"] == "lease_mismatch" and results[2]["error"]
    assert results[3]["code"] == "not_found" and results[3]["job_id"] == "no-such-job"
    assert results[4]["code"] == "payload_too_large" and results[4]["field"] == "result"
    assert "state" not in results[2] and "state" not in results[4]

    def state(job: Any) -> str:
        return str(client.get(f"/jobs/{job['job_id']}").json()["state"])

    assert [state(job) for job in jobs] == ["ACKED", "RETRY", "RUNNING", "RUNNING"]
    assert client.get(f"/jobs/{jobs[0]['job_id']}").json()["result"] == "r"
    # The refused entries still hold their leases: the old single ack settles them.
    for job in jobs[2:]:
        single = worker.post(f"/jobs/{job['job_id']}/ack", json={"lease_id": job["lease_id"]})
        assert single.status_code == 200 and single.json()["state"] == "ACKED"


def test_ack_and_lease_next_leases_in_the_same_request(
    client: httpx.Client, worker: httpx.Client
) -> None:
    queue = new_queue()
    [job] = leased(client, worker, queue, 1)
    more = [{"queue": queue, "payload": f"next{i}"} for i in range(3)]
    assert client.post("/jobs/batch", json={"jobs": more}).status_code == 201
    answer = worker.post(
        "/jobs/ack",
        json={
            "acks": [{"job_id": job["job_id"], "lease_id": job["lease_id"], "result": "ok"}],
            "lease_next": {"queue": queue, "max_jobs": 2, "lease_ms": 60_000},
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["results"] == [{"job_id": job["job_id"], "state": "ACKED"}]
    assert [j["payload"] for j in body["leased"]] == ["next0", "next1"]
    for next_job in body["leased"]:
        assert set(next_job) >= {"job_id", "lease_id", "lease_until", "attempt", "queue"}
        assert client.get(f"/jobs/{next_job['job_id']}").json()["state"] == "RUNNING"
    # A refused ack still leases (the worker's slot is free either way), and an empty queue
    # leases nothing without waiting.
    first, second = body["leased"]
    answer = worker.post(
        "/jobs/ack",
        json={
            "acks": [
                {"job_id": first["job_id"], "lease_id": "stale"},
                {"job_id": second["job_id"], "lease_id": second["lease_id"]},
            ],
            "lease_next": {"queue": queue, "max_jobs": 5},
        },
    )
    body = answer.json()
    assert [r.get("code", r.get("state")) for r in body["results"]] == ["lease_mismatch", "ACKED"]
    assert [j["payload"] for j in body["leased"]] == ["next2"]
    answer = worker.post(
        "/jobs/ack",
        json={
            "acks": [{"job_id": first["job_id"], "lease_id": first["lease_id"]}],
            "lease_next": {"queue": queue},
        },
    )
    assert answer.json()["leased"] == [] and answer.json()["results"][0]["state"] == "ACKED"


def test_scopes(server: Any, client: httpx.Client, admin: httpx.Client) -> None:
    body = {"acks": [{"job_id": "j"}]}
    assert client.post("/jobs/ack", json=body).status_code == 403  # a client key cannot ack
    created = admin.post(
        "/admin/keys",
        json={"name": "acker", "owner_id": "ackb", "type": "worker", "scopes": ["jobs:ack"]},
    )
    assert created.status_code == 201
    with server.client(created.json()["key"]) as acker:
        assert acker.post("/jobs/ack", json=body).status_code == 200
        refused = acker.post("/jobs/ack", json={**body, "lease_next": {}})
        assert refused.status_code == 403 and "jobs:lease" in refused.json()["error"]
    assert httpx.post(server.url + "/jobs/ack", json=body).status_code == 401


# (body, the field a 400 names) of requests refused as a whole.
REFUSED = [
    ({}, "acks"),
    ({"acks": []}, "acks"),
    ({"acks": [{"job_id": "j"}] * 1001}, "acks"),
    ({"acks": [{"lease_id": "l"}]}, "acks[0].job_id"),
    ({"acks": [{"job_id": ""}]}, "acks[0].job_id"),
    ({"acks": [{"job_id": "j", "result": 5}]}, "acks[0].result"),
    ({"acks": [{"job_id": "j"}], "lease_next": {"max_jobs": 101}}, "lease_next.max_jobs"),
    ({"acks": [{"job_id": "j"}], "lease_next": {"max_jobs": 0}}, "lease_next.max_jobs"),
    ({"acks": [{"job_id": "j"}], "lease_next": {"lease_ms": 999}}, "lease_next.lease_ms"),
    ({"acks": [{"job_id": "j"}], "lease_next": {"queue": "a b"}}, "lease_next.queue"),
    ({"acks": [{"job_id": "j"}], "lease_next": 3}, "lease_next"),
]


@pytest.mark.parametrize(("body", "field"), REFUSED)
def test_bad_requests_are_400s_naming_the_field(
    worker: httpx.Client, body: dict[str, Any], field: str
) -> None:
    answer = worker.post("/jobs/ack", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "invalid_field" and answer.json()["field"] == field


def test_not_json_and_too_large(worker: httpx.Client) -> None:
    answer = worker.post("/jobs/ack", content=b"{nope")
    assert answer.status_code == 400 and answer.json()["code"] == "invalid_json"
    # 8 x --max-payload + 64 KiB, as for /jobs/batch.
    huge = b'{"acks": [{"job_id": "' + b"j" * (8 * 64 * 1024 + 64 * 1024) + b'"}]}'
    assert worker.post("/jobs/ack", content=huge).status_code == 413


def test_limits_and_answers_agree_with_openapi(
    server: Any, client: httpx.Client, worker: httpx.Client
) -> None:
    document = httpx.get(server.url + "/openapi.json").json()
    request = schema_of(document, "AckBatchRequest")
    for body, _ in REFUSED:
        assert not request.is_valid(body), body
    queue = new_queue()
    jobs = leased(client, worker, queue, 2)
    body = {
        "acks": [{"job_id": j["job_id"], "lease_id": j["lease_id"]} for j in jobs]
        + [{"job_id": "j" * 256}],
        "lease_next": {"queue": queue, "max_jobs": 100, "lease_ms": 3_600_000},
    }
    assert request.is_valid(body)
    assert client.post("/jobs", json={"payload": "p", "queue": queue}).status_code == 201
    answer = worker.post("/jobs/ack", json=body)
    assert answer.status_code == 200
    schema_of(document, "AckBatchResponse").validate(answer.json())
    assert len(answer.json()["leased"]) == 1
    assert not request.is_valid({"acks": [{"job_id": "j" * 257}]})
    assert worker.post("/jobs/ack", json={"acks": [{"job_id": "j" * 257}]}).status_code == 400
    assert request.is_valid({"acks": [{"job_id": "j"}] * 1000})
    assert worker.post("/jobs/ack", json={"acks": [{"job_id": "j"}] * 1000}).status_code == 200
    assert "/jobs/ack" in document["paths"]


def test_what_it_answered_survives_a_kill_9(jq_server_factory: Callable[..., Any]) -> None:
    server = jq_server_factory()
    with server.client(server.client_key) as client, server.client(server.worker_key) as worker:
        queue = new_queue()
        jobs = leased(client, worker, queue, 3)
        assert client.post("/jobs", json={"queue": queue, "payload": "next"}).status_code == 201
        answer = worker.post(
            "/jobs/ack",
            json={
                "acks": [
                    {"job_id": jobs[0]["job_id"], "lease_id": jobs[0]["lease_id"], "result": "a"},
                    {"job_id": jobs[1]["job_id"], "lease_id": jobs[1]["lease_id"],
                     "result_error": "e"},
                ],
                "lease_next": {"queue": queue},
            },
        ).json()  # fmt: skip
        [next_job] = answer["leased"]
    server.kill9()
    server.start()
    with server.client(server.client_key) as client, server.client(server.worker_key) as worker:

        def job(job_id: str) -> Any:
            return client.get(f"/jobs/{job_id}").json()

        assert job(jobs[0]["job_id"])["state"] == "ACKED"
        assert job(jobs[0]["job_id"])["result"] == "a"
        # The failed attempt: RETRY, or READY again if its backoff ran out during the restart.
        assert job(jobs[1]["job_id"])["state"] in ("RETRY", "READY")
        assert job(jobs[1]["job_id"])["result_error"] == "e"
        assert job(jobs[2]["job_id"])["state"] == "RUNNING"
        assert job(next_job["job_id"])["state"] == "RUNNING"
        # Its lease survived: the worker that got it settles it after the restart.
        after = worker.post(
            "/jobs/ack",
            json={"acks": [{"job_id": next_job["job_id"], "lease_id": next_job["lease_id"]}]},
        )
        assert after.json()["results"][0]["state"] == "ACKED"
