"""The schedule routes against a real `jq serve`: create (201, a retried create 200, another
definition 409), list by name in pages, get with upcoming due times, change, pause/resume,
delete; bad input (a bad cron, an unknown time zone, huge names and expressions, bad
policies) answers 400 naming the field; a running schedule's jobs name it; /stats counts
schedules; random bodies never make a 500."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def unique(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create(client: httpx.Client, **fields: Any) -> httpx.Response:
    body = {"name": unique(), "cron": "0 3 * * *", "payload": "nightly report", **fields}
    return client.post("/schedules", json=body)


def test_create_answers_the_schedule(client: httpx.Client) -> None:
    name = unique("nightly")
    response = create(
        client, name=name, timezone="Europe/Berlin", queue="reports", priority=5, max_retries=1,
        overlap="skip", missed="run_once", grace_ms=5000,
    )  # fmt: skip
    assert response.status_code == 201, response.text
    body = response.json()
    assert {k: body[k] for k in ("name", "cron", "timezone", "queue", "priority")} == {
        "name": name,
        "cron": "0 3 * * *",
        "timezone": "Europe/Berlin",
        "queue": "reports",
        "priority": 5,
    }
    assert (body["overlap"], body["missed"], body["grace_ms"], body["paused"]) == (
        "skip",
        "run_once",
        5000,
        False,
    )
    assert body["next_fire_at"].endswith(("T01:00:00.000Z", "T02:00:00.000Z"))  # 03:00 Berlin
    assert (body["runs"], body["skipped_runs"], body["missed_runs"], body["version"]) == (
        0,
        0,
        0,
        1,
    )
    assert body["last_job_id"] is None and "upcoming" not in body


def test_a_retried_create_answers_200_and_another_definition_409(client: httpx.Client) -> None:
    body = {"name": unique(), "cron": "@hourly", "payload": "p"}
    assert client.post("/schedules", json=body).status_code == 201
    again = client.post("/schedules", json=body)
    assert again.status_code == 200 and again.json()["name"] == body["name"]
    other = client.post("/schedules", json={**body, "cron": "@daily"})
    assert other.status_code == 409 and other.json()["code"] == "schedule_exists"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * * *"}, "cron"),
        ({"cron": "@reboot"}, "cron"),
        ({"cron": "* * */20 * 1L"}, "cron"),  # never comes
        ({"cron": "* " * 200}, "cron"),
        ({"cron": ""}, "cron"),
        ({"cron": 5}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"timezone": "Europe"}, "timezone"),
        ({"timezone": "x" * 65}, "timezone"),
        ({"name": "x" * 129}, "name"),
        ({"name": "x" * 100_000}, "name"),
        ({"name": "has space"}, "name"),
        ({"name": ""}, "name"),
        ({"name": None}, "name"),
        ({"payload": ""}, "payload"),
        ({"payload": None}, "payload"),
        ({"queue": "bad queue"}, "queue"),
        ({"priority": 2**40}, "priority"),
        ({"max_retries": -1}, "max_retries"),
        ({"overlap": "sometimes"}, "overlap"),
        ({"missed": "all"}, "missed"),
        ({"grace_ms": -1}, "grace_ms"),
        ({"grace_ms": 8 * 86_400_000}, "grace_ms"),
        ({"paused": "yes"}, "paused"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    client: httpx.Client, fields: dict[str, Any], field: str
) -> None:
    response = create(client, **fields)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert response.json()["code"] == "invalid_field"


def test_a_missing_name_or_cron_is_a_400_naming_it(client: httpx.Client) -> None:
    for missing in ("name", "cron", "payload"):
        body = {"name": unique(), "cron": "@daily", "payload": "p"}
        del body[missing]
        response = client.post("/schedules", json=body)
        assert response.status_code == 400 and response.json()["field"] == missing


def test_a_payload_over_the_limit_is_a_413(client: httpx.Client) -> None:
    response = create(client, payload="x" * (64 * 1024 + 1))  # the shared server's limit
    assert response.status_code == 413 and response.json()["field"] == "payload"


def test_reading_needs_jobs_read_and_changing_jobs_submit(
    server: Any, worker: httpx.Client
) -> None:
    assert create(worker).status_code == 403
    assert worker.get("/schedules").status_code == 200
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get("/schedules").status_code == 401


def test_get_lists_the_upcoming_due_times(client: httpx.Client) -> None:
    name = create(client, cron="0 12 * * *", timezone="America/New_York").json()["name"]
    body = client.get(f"/schedules/{name}").json()
    assert len(body["upcoming"]) == 5
    assert body["upcoming"][0] == body["next_fire_at"]
    assert all(t.endswith(("T16:00:00.000Z", "T17:00:00.000Z")) for t in body["upcoming"])
    assert client.get(f"/schedules/{unique('nobody')}").status_code == 404


def test_pages_go_by_name(client: httpx.Client) -> None:
    prefix = unique("page")
    names = [f"{prefix}-{i}" for i in range(5)]
    for name in reversed(names):
        assert create(client, name=name).status_code == 201
    seen: list[str] = []
    cursor = f"{prefix}-"
    while True:
        page = client.get("/schedules", params={"cursor": cursor, "limit": 2}).json()
        seen += [s["name"] for s in page["schedules"] if s["name"].startswith(prefix)]
        if page["next_cursor"] is None or not page["next_cursor"].startswith(prefix):
            break
        cursor = page["next_cursor"]
    assert seen == names
    assert client.get("/schedules", params={"limit": 0}).json()["field"] == "limit"
    assert client.get("/schedules", params={"limit": 1001}).status_code == 400


def test_change_pause_resume_and_delete(client: httpx.Client) -> None:
    name = create(client, cron="0 3 * * *").json()["name"]
    changed = client.patch(f"/schedules/{name}", json={"cron": "30 4 * * *", "priority": 9})
    assert changed.status_code == 200, changed.text
    assert changed.json()["cron"] == "30 4 * * *" and changed.json()["priority"] == 9
    assert changed.json()["next_fire_at"].endswith("T04:30:00.000Z")
    assert changed.json()["version"] == 2
    bad = client.patch(f"/schedules/{name}", json={"timezone": "Nowhere/Land"})
    assert bad.status_code == 400 and bad.json()["field"] == "timezone"
    paused = client.post(f"/schedules/{name}/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    assert paused.json()["next_fire_at"] is None
    assert client.get(f"/schedules/{name}").json()["upcoming"] == []
    resumed = client.post(f"/schedules/{name}/resume")
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    assert resumed.json()["next_fire_at"].endswith("T04:30:00.000Z")
    deleted = client.delete(f"/schedules/{name}")
    assert deleted.status_code == 200 and deleted.json()["name"] == name
    for method, path in [
        ("GET", f"/schedules/{name}"),
        ("DELETE", f"/schedules/{name}"),
        ("PATCH", f"/schedules/{name}"),
        ("POST", f"/schedules/{name}/pause"),
        ("POST", f"/schedules/{name}/resume"),
    ]:
        response = client.request(method, path, json={} if method == "PATCH" else None)
        assert response.status_code == 404 and response.json()["code"] == "not_found", path


def test_a_running_schedule_makes_jobs_that_name_it(client: httpx.Client) -> None:
    queue = unique("q")
    name = create(client, cron="* * * * * *", queue=queue, payload="tick").json()["name"]
    try:
        deadline = time.monotonic() + 10
        jobs: list[dict[str, Any]] = []
        while time.monotonic() < deadline and len(jobs) < 2:
            time.sleep(0.2)
            jobs = client.get("/jobs", params={"queue": queue}).json()["jobs"]
        assert len(jobs) >= 2
        job = client.get(f"/jobs/{jobs[0]['job_id']}").json()
        assert job["schedule"] == name and job["payload"] == "tick"
        assert job["schedule_due_at"].endswith(".000Z")
        schedule = client.get(f"/schedules/{name}").json()
        assert schedule["runs"] >= 2 and schedule["last_job_id"] is not None
        schedules = client.get("/stats").json()["schedules"]
        assert schedules["count"] >= 1 and schedules["runs"] >= 2
        assert schedules["next_fire_at"] is not None
    finally:
        client.delete(f"/schedules/{name}")
    submitted = client.post("/jobs", json={"payload": "p", "queue": queue}).json()["job_id"]
    plain = client.get(f"/jobs/{submitted}").json()
    assert "schedule" not in plain and "schedule_due_at" not in plain


def test_openapi_publishes_the_schedule_routes(server: Any) -> None:
    document = httpx.get(server.url + "/openapi.json").json()
    assert set(document["paths"]["/schedules"]) == {"get", "post"}
    assert set(document["paths"]["/schedules/{name}"]) == {"get", "patch", "delete"}
    request = document["components"]["schemas"]["ScheduleRequest"]
    assert set(request["required"]) == {"name", "cron", "payload"}
    assert request["properties"]["cron"]["maxLength"] == 256


FIELDS = ["name", "cron", "timezone", "payload", "queue", "priority", "max_retries",
          "overlap", "missed", "grace_ms", "paused"]  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
bodies = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6) | json_values


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/schedules"),
        ("PATCH", "/schedules/never-made"),
        ("POST", "/schedules/never-made/pause"),
        ("POST", "/schedules/never-made/resume"),
    ],
)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies)
def test_random_bodies_never_make_a_500(
    client: httpx.Client, method: str, path: str, body: Any
) -> None:
    response = client.request(method, path, content=json.dumps(body).encode())
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert set(response.json()) <= {"error", "code", "field"}
    elif method == "POST" and path == "/schedules":
        client.delete(f"/schedules/{response.json()['name']}")
