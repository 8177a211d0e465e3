"""Flow control through the HTTP API of a real `jq serve` (issue 18): pause/resume and limits
on /queues/{name} (admin only to change, shown in GET /queues and /stats), unique jobs (the
scope matrix: a second submit in scope answers 200 with the first job and "unique": true;
owners never share), and dependencies (depends_on by id and by "$N" in a batch, WAITING until
the parents are acked, a failed parent cancelling the child, unknown or foreign parents 422)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.server.test_tenants import as_key, new_key, owner


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def submit(http: httpx.Client, queue: str, **fields: Any) -> httpx.Response:
    return http.post("/jobs", json={"payload": "p", "queue": queue, **fields})


def lease(http: httpx.Client, queue: str, n: int = 1) -> list[dict[str, Any]]:
    response = http.post("/jobs/lease", json={"queue": queue, "max_jobs": n})
    if response.status_code == 404:  # no job (docs/api.md)
        return []
    assert response.status_code == 200, response.text
    return response.json()


def ack(http: httpx.Client, job: dict[str, Any]) -> None:
    response = http.post(f"/jobs/{job['job_id']}/ack", json={"lease_id": job["lease_id"]})
    assert response.status_code == 200, response.text


def state(http: httpx.Client, job_id: str) -> str:
    return http.get(f"/jobs/{job_id}").json()["state"]


# --- pause, resume, limits -------------------------------------------------------------------


def test_pause_and_resume_a_queue(client: httpx.Client, admin: httpx.Client) -> None:
    queue = name("paused")
    for _ in range(3):
        assert submit(client, queue).status_code == 201
    paused = admin.post(f"/queues/{queue}/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] is True and paused.json()["counts"]["runnable"] == 3
    assert submit(client, queue).status_code == 201  # submits still land
    assert lease(admin, queue, 5) == []
    listed = admin.get("/queues", params={"limit": 1000}).json()["queues"]
    assert [q["paused"] for q in listed if q["name"] == queue] == [True]
    stats = admin.get("/stats").json()
    assert stats["flow"]["paused_queues"] >= 1
    assert stats["queues"].get(queue, {"paused": True})["paused"] is True
    assert admin.get(f"/queues/{queue}").json()["paused"] is True
    resumed = admin.post(f"/queues/{queue}/resume")
    assert resumed.json()["paused"] is False
    assert len(lease(admin, queue, 10)) == 4


def test_only_a_key_that_submits_and_leases_changes_a_queue(
    client: httpx.Client, worker: httpx.Client
) -> None:
    queue = name("guarded")
    assert client.post(f"/queues/{queue}/pause").status_code == 403
    assert worker.put(f"/queues/{queue}", json={"concurrency": 2}).status_code == 403
    assert client.get(f"/queues/{queue}").status_code == 200


def test_put_sets_limits_and_refuses_bad_ones(admin: httpx.Client) -> None:
    queue = name("limited")
    response = admin.put(
        f"/queues/{queue}", json={"concurrency": 2, "rate_limit": 10, "rate_period_ms": 1000}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["concurrency"], body["rate_limit"], body["rate_period_ms"]) == (2, 10, 1000)
    for bad in (
        {"concurrency": -1},
        {"rate_limit": 100_001},
        {"rate_period_ms": "x"},
        {"paused": "yes"},
    ):
        refused = admin.put(f"/queues/{queue}", json=bad)
        assert refused.status_code == 400, (bad, refused.text)
        assert refused.json()["code"]
    assert admin.put("/queues/bad%20name", json={}).status_code == 400
    cleared = admin.put(f"/queues/{queue}", json={"concurrency": 0, "rate_limit": 0})
    assert cleared.json()["concurrency"] == 0 and cleared.json()["rate_limit"] == 0


def test_a_rate_limit_without_a_period_depends_on_the_queue(admin: httpx.Client) -> None:
    # A well-formed body that the queue's state refuses: 409, not 400 (schemathesis found the
    # 400: a schema-valid request, every field but rate_limit null).
    fresh = name("q")
    body = {"paused": None, "concurrency": None, "rate_limit": 99_999, "rate_period_ms": None}
    no_period = admin.put(f"/queues/{fresh}", json={**body, "max_latency_ms": None})
    assert no_period.status_code == 409, no_period.text
    assert no_period.json()["code"] == "invalid_state"
    assert "rate_period_ms" in no_period.json()["error"]
    assert admin.get(f"/queues/{fresh}").json()["rate_limit"] == 0  # nothing changed
    # The same body is accepted by a queue that already has a window: it keeps it.
    windowed = name("q")
    first = admin.put(f"/queues/{windowed}", json={"rate_limit": 5, "rate_period_ms": 2000})
    assert first.status_code == 200, first.text
    again = admin.put(f"/queues/{windowed}", json=body)
    assert again.status_code == 200, again.text
    assert (again.json()["rate_limit"], again.json()["rate_period_ms"]) == (99_999, 2000)


def test_concurrency_limit_over_http(client: httpx.Client, admin: httpx.Client) -> None:
    queue = name("conc")
    for _ in range(6):
        submit(client, queue)
    admin.put(f"/queues/{queue}", json={"concurrency": 2})
    first = lease(admin, queue, 5)
    assert len(first) == 2
    assert lease(admin, queue, 5) == []
    ack(admin, first[0])
    assert len(lease(admin, queue, 5)) == 1


# --- unique jobs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "extra", "in_scope_after"),
    [
        ("queued", {}, {"READY": True, "RUNNING": False, "ACKED": False}),
        ("active", {}, {"READY": True, "RUNNING": True, "ACKED": False}),
        (
            "period",
            {"unique_period_ms": 3_600_000},
            {"READY": True, "RUNNING": True, "ACKED": True},
        ),
    ],
)
def test_unique_scope_matrix(
    client: httpx.Client,
    admin: httpx.Client,
    scope: str,
    extra: dict[str, Any],
    in_scope_after: dict[str, bool],
) -> None:
    queue = name(f"uniq-{scope}")
    key = uuid.uuid4().hex
    fields = {"unique_key": key, "unique_scope": scope, **extra}
    first = submit(client, queue, **fields)
    assert first.status_code == 201, first.text
    job_id = first.json()["job_id"]
    leased: dict[str, Any] | None = None
    for step in ("READY", "RUNNING", "ACKED"):
        if step == "RUNNING":
            (leased,) = lease(admin, queue)
        elif step == "ACKED":
            assert leased is not None
            ack(admin, leased)
        again = submit(client, queue, **fields)
        if in_scope_after[step]:
            assert again.status_code == 200, (step, again.text)
            assert again.json() == {"job_id": job_id, "unique": True}
        else:
            assert again.status_code == 201, (step, again.text)
            assert again.json()["job_id"] != job_id
            return


def test_unique_keys_are_per_owner(server: Any, admin: httpx.Client) -> None:
    key = uuid.uuid4().hex
    queue = name("uniq-owner")
    with (
        as_key(server, new_key(admin, owner())["key"]) as a,
        as_key(server, new_key(admin, owner())["key"]) as b,
    ):
        first = submit(a, queue, unique_key=key)
        other = submit(b, queue, unique_key=key)
        assert first.status_code == other.status_code == 201
        assert first.json()["job_id"] != other.json()["job_id"]


def test_unique_in_a_batch_and_period_needs_its_length(client: httpx.Client) -> None:
    queue = name("uniq-batch")
    key = uuid.uuid4().hex
    entry = {"payload": "p", "queue": queue, "unique_key": key}
    results = client.post("/jobs/batch", json={"jobs": [entry, entry]}).json()["results"]
    assert results[1] == {"job_id": results[0]["job_id"], "duplicate": False, "unique": True}
    refused = submit(client, queue, unique_key=key, unique_scope="period")
    assert refused.status_code == 400 and refused.json()["field"] == "unique_period_ms"


# --- dependencies -----------------------------------------------------------------------------


def test_fan_out_fan_in_in_one_batch(client: httpx.Client, admin: httpx.Client) -> None:
    queue = name("deps")
    sink = name("sink")
    jobs = [{"payload": f"part {i}", "queue": queue} for i in range(5)]
    jobs.append({"payload": "sum", "queue": sink, "depends_on": [f"${i}" for i in range(5)]})
    results = client.post("/jobs/batch", json={"jobs": jobs}).json()["results"]
    fan_in = results[5]["job_id"]
    view = client.get(f"/jobs/{fan_in}").json()
    assert view["state"] == "WAITING"
    assert view["depends_on"] == [r["job_id"] for r in results[:5]]
    assert view["on_parent_failure"] == "cancel"
    assert client.get("/jobs", params={"state": "WAITING", "queue": sink}).json()["jobs"]
    assert admin.get("/stats").json()["queues"][sink]["waiting"] == 1
    for job in lease(admin, queue, 5):
        assert lease(admin, sink) == []
        ack(admin, job)
    (leased,) = lease(admin, sink)
    assert leased["job_id"] == fan_in


def test_a_cancelled_parent_cancels_the_child(client: httpx.Client) -> None:
    queue = name("deps-cancel")
    parent = submit(client, queue).json()["job_id"]
    child = submit(client, queue, depends_on=[parent]).json()["job_id"]
    runs = submit(client, queue, depends_on=[parent], on_parent_failure="run").json()["job_id"]
    assert client.post(f"/jobs/{parent}/cancel").status_code == 200
    view = client.get(f"/jobs/{child}").json()
    assert view["state"] == "CANCELLED"
    assert view["result_error"] == f"parent {parent} is CANCELLED"
    assert state(client, runs) == "READY"


def test_unknown_and_foreign_parents_are_refused(
    server: Any, client: httpx.Client, admin: httpx.Client
) -> None:
    queue = name("deps-bad")
    missing = submit(client, queue, depends_on=["no-such-job"])
    assert missing.status_code == 422 and missing.json()["code"] == "unknown_parent"
    with as_key(server, new_key(admin, owner())["key"]) as other:
        theirs = submit(other, queue).json()["job_id"]
    foreign = submit(client, queue, depends_on=[theirs])
    assert foreign.status_code == 422 and foreign.json()["code"] == "unknown_parent"
    later = client.post(
        "/jobs/batch",
        json={"jobs": [{"payload": "p", "queue": queue, "depends_on": ["$1"]}, {"payload": "p"}]},
    ).json()["results"]
    assert later[0]["field"] == "depends_on" and "job_id" in later[1]
    assert submit(client, queue, depends_on=["$0"]).status_code == 400
