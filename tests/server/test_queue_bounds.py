"""However many queues a client makes (issue 15, finding 5): a cap on queues holding jobs
(`--max-queues`, 429 past it, decided by the state machine from the cap in each Submit, so the
same after kill -9 and replay), and answers that stay small with 20,000 queues: /stats and each
/events frame under 64 KiB, /metrics under 1 MiB, every queue reachable through GET /queues.
How long /metrics takes to build is measured by bench/metrics_bench.py, not here."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

QUEUES = 20_000


def submit_to_queues(http: httpx.Client, names: list[str]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for start in range(0, len(names), 1000):
        jobs = [{"payload": "x", "queue": name} for name in names[start : start + 1000]]
        response = http.post("/jobs/batch", json={"jobs": jobs}, timeout=60)
        assert response.status_code == 201, response.text
        results += response.json()["results"]
    return results


def test_the_queue_cap_refuses_one_more_queue(jq_server_factory: Any) -> None:
    server = jq_server_factory("--max-queues", "3", "--lease-check-interval", "200ms")
    with server.client(server.client_key) as http:
        for name in ("q1", "q2", "q3"):
            assert http.post("/jobs", json={"payload": "x", "queue": name}).status_code == 201
        refused = http.post("/jobs", json={"payload": "x", "queue": "q4"})
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "too_many_queues"
        assert "3 queues" in refused.json()["error"] and refused.headers["retry-after"]
        # An existing queue takes more jobs; a batch refuses only its new-queue entries.
        assert http.post("/jobs", json={"payload": "x", "queue": "q1"}).status_code == 201
        results = submit_to_queues(http, ["q2", "q5"])
        assert "job_id" in results[0] and results[1]["code"] == "too_many_queues"
    server.kill9()
    server.start()
    with server.client(server.client_key) as http:
        assert http.post("/jobs", json={"payload": "x", "queue": "q6"}).status_code == 429
        assert http.get("/stats").json()["queue_count"] == 3


@pytest.fixture(scope="module")
def crowded(jq_module_server_factory: Any) -> Any:
    """A server holding jobs in 20,000 queues (twenty batch calls, as in the finding)."""
    server = jq_module_server_factory("--max-queues", str(QUEUES))
    names = [f"crowd-{i:05d}-{'x' * 40}" for i in range(QUEUES)]
    with server.client(server.client_key) as http:
        results = submit_to_queues(http, names)
        assert all("job_id" in r for r in results)
        refused = http.post("/jobs", json={"payload": "x", "queue": "one-too-many"})
        assert refused.status_code == 429
        # Make a few queues busier than the rest: they lead /stats.
        for name in names[-3:]:
            for _ in range(5):
                http.post("/jobs", json={"payload": "x", "queue": name})
    server.names = names
    return server


def test_stats_stay_under_64_kib(crowded: Any) -> None:
    with crowded.client(crowded.client_key) as http:
        response = http.get("/stats")
    assert response.status_code == 200
    assert len(response.content) < 64 * 1024, len(response.content)
    stats = response.json()
    assert stats["queue_count"] == QUEUES and stats["total"] == QUEUES + 15
    assert 0 < len(stats["queues"]) <= 100
    assert set(crowded.names[-3:]) <= set(stats["queues"])  # the busiest are shown
    assert stats["queues"][crowded.names[-1]]["runnable"] == 6


def test_each_events_frame_stays_under_64_kib(crowded: Any) -> None:
    headers = {"Authorization": f"Bearer {crowded.client_key}"}
    timeout = httpx.Timeout(10.0, read=10.0)
    with httpx.stream("GET", crowded.url + "/events", headers=headers, timeout=timeout) as r:
        frames = 0
        for line in r.iter_lines():
            assert len(line) < 64 * 1024
            if line.startswith("data:"):
                stats = json.loads(line[5:])
                assert stats["queue_count"] == QUEUES
                frames += 1
                if frames == 2:
                    break


def test_metrics_stay_under_1_mib_with_an_other_series(crowded: Any) -> None:
    with crowded.client(crowded.client_key) as http:
        response = http.get("/metrics")
    assert response.status_code == 200
    assert len(response.content) < 1024 * 1024, len(response.content)
    text = response.text
    assert f"jq_queues {float(QUEUES)}" in text
    assert 'queue="(other)",state="runnable"' in text
    queues = {line.split('queue="', 1)[1].split('"', 1)[0] for line in text.splitlines()
              if line.startswith("jq_jobs{")}  # fmt: skip
    assert len(queues) <= 251 and crowded.names[-1] in queues
    runnable = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("jq_jobs{") and 'state="runnable"' in line
    )
    assert runnable == QUEUES + 15  # the (other) series holds the rest: nothing lost


def test_every_queue_is_reachable_through_get_queues(crowded: Any) -> None:
    seen: list[str] = []
    cursor = None
    with crowded.client(crowded.client_key) as http:
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            page = http.get("/queues", params=params)
            assert page.status_code == 200 and len(page.content) < 1024 * 1024
            body = page.json()
            seen += [queue["name"] for queue in body["queues"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == sorted(crowded.names)
        first = http.get("/queues", params={"limit": 2}).json()
        assert first["queues"][0] == {
            "name": crowded.names[0], "runnable": 1, "running": 0, "scheduled": 0, "retry": 0,
            "dead": 0, "acked": 0, "cancelled": 0, "total": 1, "waiting": 0, "paused": False,
            "concurrency": 0, "rate_limit": 0, "rate_period_ms": 0,
        }  # fmt: skip
        assert first["next_cursor"] == crowded.names[1]
        refused = http.get("/queues", params={"cursor": "bad name\n"})
        assert refused.status_code == 400 and refused.json()["field"] == "cursor"


def test_health_answers_while_streams_are_open(crowded: Any) -> None:
    """Finding 5: with 40 streams on 20,000 queues, /health took 3.7 s. The streams share one
    encoded frame now; /health is checked only for its answer here (bench/ times it)."""
    headers = {"Authorization": f"Bearer {crowded.client_key}"}
    streams = []
    try:
        for _ in range(40):
            client = httpx.Client(timeout=httpx.Timeout(10.0, read=10.0))
            request = client.build_request("GET", crowded.url + "/events", headers=headers)
            response = client.send(request, stream=True)
            assert response.status_code == 200
            streams.append((client, response))
        assert httpx.get(crowded.url + "/health", timeout=10).json()["status"] == "ok"
    finally:
        for client, response in streams:
            response.close()
            client.close()
