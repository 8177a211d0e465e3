"""/events (SSE, with Bearer or ticket), /metrics and /openapi.json against a real server."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
from starlette.routing import Mount, Route

SSE_TIMEOUT = httpx.Timeout(10.0, read=10.0)


def read_events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """(event name, decoded data) per SSE frame of a streaming response."""
    name, data = "message", []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def test_events_deliver_stats_and_job_events(server: Any, client: httpx.Client) -> None:
    queue = "ev-" + uuid.uuid4().hex[:8]
    headers = {"Authorization": f"Bearer {server.client_key}"}
    with httpx.stream("GET", server.url + "/events", headers=headers, timeout=SSE_TIMEOUT) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = read_events(r)
        name, stats = next(events)
        assert name == "stats" and "runnable" in stats and "queues" in stats
        job_id = client.post("/jobs", json={"queue": queue, "payload": "x"}).json()["job_id"]
        seen_stats = 0
        for name, data in events:
            if name == "stats":
                seen_stats += 1
            if name == "job" and data["job_id"] == job_id:
                assert data == {
                    "job_id": job_id, "queue": queue, "state": "READY", "previous": None,
                    "attempts": 0, "priority": 0, "at": data["at"], "run_at": data["at"],
                    "worker": None, "error_class": None, "error_message": None,
                }  # fmt: skip
                assert data["at"].endswith("Z")
                break
        else:
            raise AssertionError("the stream ended without the job event")


def test_batched_events_come_as_arrays_in_submit_order(server: Any, client: httpx.Client) -> None:
    """`?batch=1`: job events as `event: jobs` arrays (what the dashboard asks for), every event
    in order, none as a single `job` frame."""
    queue = "evb-" + uuid.uuid4().hex[:8]
    headers = {"Authorization": f"Bearer {server.client_key}"}
    url = server.url + "/events?batch=1"
    with httpx.stream("GET", url, headers=headers, timeout=SSE_TIMEOUT) as r:
        assert r.status_code == 200
        events = read_events(r)
        assert next(events)[0] == "stats"
        jobs = [{"queue": queue, "payload": str(i)} for i in range(300)]
        answer = client.post("/jobs/batch", json={"jobs": jobs})
        ids = [entry["job_id"] for entry in answer.json()["results"]]
        seen: list[str] = []
        deadline = time.monotonic() + 10
        for name, data in events:
            assert name in ("stats", "jobs")
            if name == "jobs":
                assert isinstance(data, list) and 1 <= len(data) <= 256
                seen += [e["job_id"] for e in data if e["queue"] == queue]
            if len(seen) >= len(ids) or time.monotonic() > deadline:
                break
        assert seen == ids


def test_no_job_event_is_lost_between_chunks(server: Any, client: httpx.Client) -> None:
    """More events than one chunk (256) at once: every one arrives as its own `job` frame, in
    order (the event after a full chunk was once taken out of the buffer and dropped)."""
    queue = "evc-" + uuid.uuid4().hex[:8]
    headers = {"Authorization": f"Bearer {server.client_key}"}
    with httpx.stream("GET", server.url + "/events", headers=headers, timeout=SSE_TIMEOUT) as r:
        events = read_events(r)
        assert next(events)[0] == "stats"
        jobs = [{"queue": queue, "payload": str(i)} for i in range(600)]
        answer = client.post("/jobs/batch", json={"jobs": jobs})
        ids = [entry["job_id"] for entry in answer.json()["results"]]
        seen: list[str] = []
        deadline = time.monotonic() + 10
        for name, data in events:
            if name == "job" and data["queue"] == queue:
                seen.append(data["job_id"])
            if len(seen) >= len(ids) or time.monotonic() > deadline:
                break
        assert seen == ids


def test_a_wrong_batch_value_is_a_400(server: Any) -> None:
    headers = {"Authorization": f"Bearer {server.client_key}"}
    answer = httpx.get(server.url + "/events?batch=yes", headers=headers)
    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid_field"


def test_events_need_a_key_or_ticket(server: Any, worker: httpx.Client) -> None:
    assert httpx.get(server.url + "/events").status_code == 401
    assert httpx.get(server.url + "/events", params={"ticket": "nope"}).status_code == 401


def test_ticket_opens_the_stream_and_expires(server: Any, client: httpx.Client) -> None:
    issued = client.post("/events/ticket")
    assert issued.status_code == 200
    ticket = issued.json()["ticket"]
    assert issued.json()["expires_at"].endswith("Z")
    assert server.client_key not in ticket
    with httpx.stream(
        "GET", server.url + "/events", params={"ticket": ticket}, timeout=SSE_TIMEOUT
    ) as response:
        assert response.status_code == 200
        name, _ = next(read_events(response))
        assert name == "stats"
    # A ticket is read-only: it is not an API key anywhere else.
    bearer = {"Authorization": f"Bearer {ticket}"}
    assert httpx.get(server.url + "/stats", headers=bearer).status_code == 401
    assert httpx.get(server.url + "/stats", params={"ticket": ticket}).status_code == 401
    # The shared server's tickets live 2 s (--ticket-ttl 2s).
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status = _status_of_stream(server.url, ticket)
        if status == 401:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the ticket never expired")


def _status_of_stream(url: str, ticket: str) -> int:
    with httpx.stream("GET", url + "/events", params={"ticket": ticket}, timeout=SSE_TIMEOUT) as r:
        return r.status_code


def test_ticket_of_a_revoked_key_stops_working(server: Any, admin: httpx.Client) -> None:
    created = admin.post(
        "/admin/keys", json={"name": "viewer", "owner_id": "viewers", "type": "client"}
    ).json()
    secret = created["key"]
    ticket = httpx.post(
        server.url + "/events/ticket", headers={"Authorization": f"Bearer {secret}"}
    ).json()["ticket"]
    assert _status_of_stream(server.url, ticket) == 200
    admin.delete(f"/keys/{created['key_id']}")
    assert _status_of_stream(server.url, ticket) == 401


def test_ticket_needs_jobs_read(server: Any, admin: httpx.Client) -> None:
    secret = admin.post(
        "/admin/keys",
        json={"name": "w", "owner_id": "w", "type": "worker", "scopes": ["jobs:lease"]},
    ).json()["key"]
    headers = {"Authorization": f"Bearer {secret}"}
    assert httpx.post(server.url + "/events/ticket", headers=headers).status_code == 403
    assert httpx.get(server.url + "/events", headers=headers).status_code == 403


def test_metrics_text(server: Any, client: httpx.Client) -> None:
    client.post("/jobs", json={"queue": "metrics-q", "payload": "x"})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'jq_jobs{queue="metrics-q",state="runnable"}' in text
    assert 'jq_commands_total{type="submit"}' in text
    assert 'jq_http_requests_total{route="/jobs",status="201"}' in text
    assert "jq_up 1.0" in text
    # The engine's own log metrics: every durable append is timed, and group commit is seen.
    assert 'jq_wal_fsync_seconds_bucket{le="+Inf"}' in text
    fsyncs = next(
        line for line in text.splitlines() if line.startswith("jq_wal_fsync_seconds_count")
    )
    assert float(fsyncs.split()[-1]) >= 1
    assert "jq_wal_batch_commands_sum" in text
    assert server.client_key not in text


def test_openapi_lists_every_route(server: Any) -> None:
    from jq_tool.server.openapi import openapi_document

    response = httpx.get(server.url + "/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    assert document == json.loads(json.dumps(openapi_document()))
    from jq_tool.server.events import EventRoutes
    from jq_tool.server.openapi_route import openapi_routes
    from jq_tool.server.routes_jobs import JobRoutes
    from jq_tool.server.routes_keys import KeyRoutes
    from jq_tool.server.routes_monitoring import MonitoringRoutes
    from jq_tool.server.routes_shards import ShardRoutes

    groups = (JobRoutes, KeyRoutes, MonitoringRoutes, EventRoutes)
    routes = [route for group in groups for route in group.routes(_Fake())]  # type: ignore[arg-type]
    routes += openapi_routes()
    sharded = json.loads(json.dumps(openapi_document(sharded=True)))
    shard_routes = ShardRoutes(_Fake(), _Fake()).routes()  # type: ignore[arg-type]
    for route, paths in [*((r, document["paths"]) for r in routes),
                         *((r, sharded["paths"]) for r in shard_routes)]:  # fmt: skip
        assert isinstance(route, Route | Mount)
        assert route.path in paths, route.path
        for method in (route.methods or set()) - {"HEAD"}:
            assert method.lower() in paths[route.path], (method, route.path)
    # A single node has no sharded routes, and its document does not list them.
    assert not {r.path for r in shard_routes} & set(document["paths"])
    assert sharded["paths"].items() >= document["paths"].items()
    for path in ("/openapi.json", "/health", "/admin/keys", "/keys/{key}", "/events/ticket"):
        assert path in document["paths"]


class _Fake:
    """Attribute bag standing in for a route group's instance: routes() only reads
    bound methods, which it gets from the class."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args: None
