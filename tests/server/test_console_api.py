"""The console's routes against a real `jq serve` (issue 17): attempt history and the current
error in GET /jobs/{id} and GET /jobs, worker ids on leases and GET /workers, the queue view
(counts, latency, leases held), the per-minute history; bad input is a 400 naming the field,
and every new route checks its scope (401 without a key, 403 without the scope)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

TRACE = (
    "Traceback (most recent call last):\n"
    '  File "worker.py", line 12, in handle\n'
    "    raise ValueError('bad input')\n"
    "ValueError: bad input"
)


def unique(prefix: str = "q") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def submit(client: httpx.Client, queue: str, **fields: Any) -> str:
    response = client.post("/jobs", json={"payload": "p", "queue": queue, **fields})
    assert response.status_code == 201, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def lease(worker: httpx.Client, queue: str, worker_id: str | None = None) -> dict[str, Any]:
    headers = {} if worker_id is None else {"X-Jq-Worker": worker_id}
    response = worker.post("/jobs/lease", json={"queue": queue, "wait_ms": 5000}, headers=headers)
    assert response.status_code == 200, response.text
    leased: dict[str, Any] = response.json()
    return leased


@pytest.fixture
def reader_without_scope(server: Any, admin: httpx.Client) -> Iterator[httpx.Client]:
    """A key that may submit but not read."""
    response = admin.post(
        "/admin/keys",
        json={"name": "no-read", "owner_id": unique("owner"), "type": "client",
              "scopes": ["jobs:submit"]},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    with server.client(response.json()["key"]) as http:
        yield http


def test_a_successful_retry_shows_its_history_not_a_stale_error(
    client: httpx.Client, worker: httpx.Client
) -> None:
    queue = unique()
    job_id = submit(client, queue, max_retries=3)
    first = lease(worker, queue, "host-a:11:abc")
    running = client.get(f"/jobs/{job_id}").json()
    assert running["worker"] == "host-a:11:abc" and running["error_class"] is None
    assert [a["outcome"] for a in running["attempt_history"]] == ["running"]

    settled = worker.post(
        f"/jobs/{job_id}/ack",
        json={"lease_id": first["lease_id"], "result_error": TRACE, "retry": False},
    )
    assert settled.json()["state"] == "DEAD"
    dead = client.get(f"/jobs/{job_id}").json()
    assert (dead["error_class"], dead["error_message"]) == ("ValueError", "bad input")
    assert dead["result_error"] == TRACE and dead["worker"] is None
    listed = client.get("/jobs", params={"queue": queue}).json()["jobs"][0]
    assert (listed["error_class"], listed["error_message"]) == ("ValueError", "bad input")
    assert "attempt_history" not in listed

    assert client.post(f"/jobs/{job_id}/requeue").status_code == 200
    second = lease(worker, queue, "host-b:22:def")
    acked = worker.post(
        f"/jobs/{job_id}/ack", json={"lease_id": second["lease_id"], "result": "ok"}
    )
    assert acked.json()["state"] == "ACKED"
    done = client.get(f"/jobs/{job_id}").json()
    assert done["result_error"] is None and done["error_class"] is None
    history = done["attempt_history"]
    assert [(a["outcome"], a["worker"]) for a in history] == [
        ("failed", "host-a:11:abc"),
        ("acked", "host-b:22:def"),
    ]
    assert history[0]["error_class"] == "ValueError" and history[0]["traceback"] == TRACE
    assert history[0]["started_at"] <= history[0]["ended_at"] <= history[1]["started_at"]


def test_workers_and_the_queue_view_show_the_leases_held(
    client: httpx.Client, worker: httpx.Client
) -> None:
    queue, worker_id = unique(), unique("host") + ":7:x"
    ids = [submit(client, queue) for _ in range(3)]
    leased = lease(worker, queue, worker_id)
    workers = client.get("/workers", params={"limit": 1000}).json()["workers"]
    mine = [w for w in workers if w["worker_id"] == worker_id]
    assert len(mine) == 1 and mine[0]["leases"] == 1 and mine[0]["queues"] == [queue]
    assert mine[0]["last_seen"] is not None

    view = client.get(f"/queues/{queue}/overview").json()
    assert (view["runnable"], view["running"], view["total"]) == (2, 1, 3)
    assert view["latency_ms"] is not None and view["latency_ms"] >= 0
    assert view["oldest_runnable_at"] is not None
    assert [(held["job_id"], held["worker"]) for held in view["leases"]] == [
        (leased["job_id"], worker_id)
    ]
    assert leased["job_id"] == ids[0]
    assert len(view["throughput"]["submitted"]) == 60 and sum(view["throughput"]["submitted"]) == 3

    # The leases page through.
    for _ in range(2):
        lease(worker, queue, worker_id)
    first = client.get(f"/queues/{queue}/overview", params={"limit": 2}).json()
    assert len(first["leases"]) == 2 and first["next_cursor"] is not None
    rest = client.get(
        f"/queues/{queue}/overview", params={"limit": 2, "cursor": first["next_cursor"]}
    )
    assert [h["job_id"] for h in first["leases"] + rest.json()["leases"]] == ids
    assert rest.json()["next_cursor"] is None
    empty = client.get(f"/queues/{queue}/overview").json()
    assert empty["latency_ms"] is None and empty["oldest_runnable_at"] is None


def listed(client: httpx.Client, worker_id: str) -> list[dict[str, Any]]:
    workers = client.get("/workers", params={"limit": 1000}).json()["workers"]
    return [w for w in workers if w["worker_id"] == worker_id]


def test_a_worker_that_stopped_is_forgotten_at_once(
    client: httpx.Client, worker: httpx.Client
) -> None:
    """A stopping worker says so (the SDK's workers do): it leaves GET /workers at once rather
    than 5 minutes after its last poll, so a restart of every worker does not list each twice.
    The leases it still holds are in the log and stay listed."""
    queue, idle, busy = unique(), unique("host") + ":1:a", unique("host/x") + ":2:b"
    submit(client, queue)
    worker.post("/jobs/lease", json={"queue": queue + "-empty"}, headers={"X-Jq-Worker": idle})
    leased = lease(worker, queue, busy)
    assert listed(client, idle) and listed(client, busy)[0]["leases"] == 1

    gone = worker.delete(f"/workers/{idle}")
    assert gone.status_code == 200, gone.text
    assert gone.json() == {"worker_id": idle, "forgotten": True}
    assert listed(client, idle) == []
    again = worker.delete(f"/workers/{idle}")
    assert again.status_code == 200 and again.json()["forgotten"] is False

    holding = worker.delete(f"/workers/{busy}")  # a '/' in an id is a path of two segments
    assert holding.status_code == 200 and holding.json()["forgotten"] is True, holding.text
    [row] = listed(client, busy)
    assert (row["leases"], row["last_seen"], row["queues"]) == (1, None, [])
    worker.post(f"/jobs/{leased['job_id']}/ack", json={"lease_id": leased["lease_id"]})
    assert listed(client, busy) == []


def test_forgetting_a_worker_needs_the_lease_scope_and_a_well_formed_id(
    server: Any, client: httpx.Client, worker: httpx.Client
) -> None:
    response = client.delete("/workers/host:1:a")  # a client key does not lease
    assert response.status_code == 403 and response.json()["code"] == "forbidden"
    with server.client(None) as anonymous:
        assert anonymous.delete("/workers/host:1:a").status_code == 401
    for bad in ("has%20space", "x" * 129, "tab%09"):
        response = worker.delete(f"/workers/{bad}")
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["field"] == "worker_id"


def test_history_counts_per_minute(client: httpx.Client, worker: httpx.Client) -> None:
    queue = unique()
    for _ in range(4):
        submit(client, queue)
    leased = lease(worker, queue)
    worker.post(f"/jobs/{leased['job_id']}/ack", json={"lease_id": leased["lease_id"]})
    hour = client.get("/stats/history", params={"queue": queue}).json()
    assert hour["window"] == "1h" and hour["tracked"] is True and hour["step_ms"] == 60_000
    assert len(hour["submitted"]) == len(hour["acked"]) == len(hour["failed"]) == 60
    assert (sum(hour["submitted"]), sum(hour["acked"])) == (4, 1)
    day = client.get("/stats/history", params={"window": "24h"}).json()
    assert len(day["submitted"]) == 1440 and sum(day["submitted"]) >= 4 and day["queue"] is None


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/stats/history", {"window": "2h"}, "window"),
        ("/stats/history", {"queue": "bad name"}, "queue"),
        ("/workers", {"limit": "0"}, "limit"),
        ("/queues/x/overview", {"cursor": "abc"}, "cursor"),
        ("/queues/bad%20name/overview", {}, "name"),
    ],
)
def test_bad_queries_name_the_field(
    client: httpx.Client, path: str, params: dict[str, str], field: str
) -> None:
    response = client.get(path, params=params)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field


def test_a_bad_worker_id_is_a_400_and_an_unknown_queue_a_404(
    client: httpx.Client, worker: httpx.Client
) -> None:
    response = worker.post(
        "/jobs/lease", json={"queue": unique()}, headers={"X-Jq-Worker": "has space"}
    )
    assert response.status_code == 400 and response.json()["field"] == "X-Jq-Worker"
    # The batch ack describes the header too: refused there even when nothing is leased.
    response = worker.post(
        "/jobs/ack", json={"acks": [{"job_id": "0"}]}, headers={"X-Jq-Worker": "has space"}
    )
    assert response.status_code == 400 and response.json()["field"] == "X-Jq-Worker"
    response = client.get(f"/queues/{unique()}/overview")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


@pytest.mark.parametrize("path", ["/workers", "/queues/default/overview", "/stats/history"])
def test_every_console_route_checks_its_scope(
    server: Any, reader_without_scope: httpx.Client, path: str
) -> None:
    with server.client(None) as anonymous:
        assert anonymous.get(path).status_code == 401
    response = reader_without_scope.get(path)
    assert response.status_code == 403 and response.json()["code"] == "forbidden"


def _job_event(server: Any, job_of: Any) -> dict[str, Any]:
    """The first `event: job` of /events about the job `job_of()` submits once streaming."""
    headers = {"Authorization": f"Bearer {server.client_key}"}
    with httpx.stream("GET", server.url + "/events", headers=headers, timeout=10) as stream:
        name, job_id = None, None
        for line in stream.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:") and name == "stats" and job_id is None:
                job_id = job_of()
            elif line.startswith("data:") and name == "job":
                data: dict[str, Any] = json.loads(line[5:])
                if data["job_id"] == job_id:
                    return data
    raise AssertionError("no job event")


def test_a_live_event_of_a_delayed_job_carries_its_run_at(
    server: Any, client: httpx.Client
) -> None:
    queue = unique()
    event = _job_event(server, lambda: submit(client, queue, delay_ms=3_600_000))
    assert event["state"] == "READY" and event["run_at"] > event["at"]
    assert event["worker"] is None and event["error_class"] is None


def test_search_by_state_id_prefix_and_error(client: httpx.Client, worker: httpx.Client) -> None:
    queue = unique()
    later = submit(client, queue, delay_ms=3_600_000)
    now_id = submit(client, queue)
    failing = submit(client, unique())
    leased = lease(worker, client.get(f"/jobs/{failing}").json()["queue"])
    worker.post(
        f"/jobs/{failing}/ack",
        json={"lease_id": leased["lease_id"], "result_error": TRACE, "retry": False},
    )
    scheduled = client.get("/jobs", params={"queue": queue, "state": "scheduled"}).json()
    assert [j["job_id"] for j in scheduled["jobs"]] == [later]
    assert scheduled["jobs"][0]["run_at"] > scheduled["jobs"][0]["created_at"]
    ready = client.get("/jobs", params={"queue": queue, "state": "READY"}).json()["jobs"]
    assert {j["job_id"] for j in ready} == {later, now_id}
    by_prefix = client.get("/jobs", params={"id_prefix": now_id[:18]}).json()["jobs"]
    assert [j["job_id"] for j in by_prefix] == [now_id]
    by_error = client.get("/jobs", params={"error": "VALUEERROR: BAD", "state": "dead"}).json()
    assert failing in [j["job_id"] for j in by_error["jobs"]]
    bad = client.get("/jobs", params={"state": "sleeping"})
    assert bad.status_code == 400 and bad.json()["field"] == "state"


def test_cursor_paging_over_1000_jobs_with_inserts_misses_and_repeats_nothing(
    client: httpx.Client,
) -> None:
    """Both the plain listing and a search (state=scheduled is one) page by cursor: jobs
    submitted between pages are newer than every cursor, so no job shows twice or is missed."""
    queue = unique()
    batch = [{"payload": str(i), "queue": queue, "delay_ms": 3_600_000} for i in range(1000)]
    response = client.post("/jobs/batch", json={"jobs": batch})
    first = {r["job_id"] for r in response.json()["results"]}
    assert len(first) == 1000
    inserted: set[str] = set()
    for state in (None, "scheduled"):
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"queue": queue, "limit": 37}
            if state:
                params["state"] = state
            if cursor:
                params["cursor"] = cursor
            page = client.get("/jobs", params=params).json()
            seen += [j["job_id"] for j in page["jobs"]]
            inserted.add(submit(client, queue, delay_ms=3_600_000))
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen))
        assert first <= set(seen) and not (set(seen) - first - inserted)


def test_bulk_requeue_and_cancel(client: httpx.Client, worker: httpx.Client) -> None:
    queue = unique()
    dead = [submit(client, queue, max_retries=0) for _ in range(7)]
    for _ in dead:
        leased = lease(worker, queue)
        worker.post(
            f"/jobs/{leased['job_id']}/ack",
            json={"lease_id": leased["lease_id"], "result_error": "boom"},
        )
    waiting = [submit(client, queue) for _ in range(3)] + [
        submit(client, queue, delay_ms=3_600_000)
    ]
    refused = worker.post("/jobs/bulk", json={"action": "requeue", "queue": queue})
    assert refused.status_code == 403
    cancel_scheduled = client.post(
        "/jobs/bulk", json={"action": "cancel", "queue": queue, "states": ["SCHEDULED"]}
    ).json()
    assert cancel_scheduled == {"action": "cancel", "matched": 1, "changed": 1, "chunks": 1}
    requeued = client.post("/jobs/bulk", json={"action": "requeue", "queue": queue}).json()
    assert requeued == {"action": "requeue", "matched": 7, "changed": 7, "chunks": 1}
    again = client.post("/jobs/bulk", json={"action": "requeue", "queue": queue}).json()
    assert again["matched"] == again["changed"] == 0
    cancelled = client.post(
        "/jobs/bulk", json={"action": "cancel", "queue": queue, "limit": 5}
    ).json()
    assert cancelled["changed"] == 5
    states = [client.get(f"/jobs/{job_id}").json()["state"] for job_id in dead + waiting]
    assert states.count("CANCELLED") == 6 and states.count("READY") == 5
    bad = client.post("/jobs/bulk", json={"action": "delete"})
    assert bad.status_code == 400 and bad.json()["field"] == "action"


def test_bulk_needs_a_key_that_may_submit(server: Any, worker: httpx.Client) -> None:
    body = {"action": "cancel", "queue": unique()}
    with server.client(None) as anonymous:
        assert anonymous.post("/jobs/bulk", json=body).status_code == 401
    response = worker.post("/jobs/bulk", json=body)
    assert response.status_code == 403 and response.json()["code"] == "forbidden"


def test_every_job_state_can_be_listed() -> None:
    from jq_tool.core.model import JobState
    from jq_tool.server.validation import ListState

    assert {s.value for s in JobState} | {"SCHEDULED"} == {s.value for s in ListState}


def test_live_events_carry_the_worker_and_the_error(
    server: Any, client: httpx.Client, worker: httpx.Client
) -> None:
    queue = unique()
    headers = {"Authorization": f"Bearer {server.client_key}"}
    seen: dict[str, dict[str, Any]] = {}
    with httpx.stream("GET", server.url + "/events", headers=headers, timeout=10) as stream:
        name, job_id = None, None
        for line in stream.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:") and name == "stats" and job_id is None:
                job_id = submit(client, queue, max_retries=0)
                leased = lease(worker, queue, "evt-box:3:c")
                worker.post(
                    f"/jobs/{job_id}/ack",
                    json={"lease_id": leased["lease_id"], "result_error": TRACE},
                )
            elif line.startswith("data:") and name == "job":
                data = json.loads(line[5:])
                if data["job_id"] == job_id:
                    seen[data["state"]] = data
                    if data["state"] == "DEAD":
                        break
    assert seen["RUNNING"]["worker"] == "evt-box:3:c"
    assert (seen["DEAD"]["error_class"], seen["DEAD"]["error_message"]) == (
        "ValueError",
        "bad input",
    )
