"""A wrong method on a known path is a 405 with `Allow` and a JSON body from the error table,
before authentication and never confused with a parameterised route that matches the same
path (GET /jobs/lease is not GET /jobs/{id})."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/jobs/lease", {"POST"}),
        ("GET", "/jobs/batch", {"POST"}),
        ("DELETE", "/jobs", {"GET", "HEAD", "POST"}),
        ("PUT", "/health", {"GET", "HEAD"}),
        ("GET", "/jobs/some-id/ack", {"POST"}),
        ("POST", "/jobs/some-id", {"GET", "HEAD"}),
        ("GET", "/keys/client_secret_never_echoed", {"DELETE"}),
        ("PATCH", "/admin/keys", {"GET", "HEAD", "POST"}),
        ("GET", "/events/ticket", {"POST"}),
        ("POST", "/stats", {"GET", "HEAD"}),
        ("DELETE", "/", {"GET", "HEAD"}),
        ("POST", "/static/dashboard.js", {"GET", "HEAD"}),
    ],
)
def test_wrong_method_is_405_with_allow(
    server: Any, admin: Any, method: str, path: str, allow: set[str]
) -> None:
    for client in (admin, server.client(None)):  # with a key and without one
        answer = client.request(method, path)
        assert answer.status_code == 405, (method, path, answer.text)
        assert {m.strip() for m in answer.headers["allow"].split(",")} == allow
        body = answer.json()
        assert body["code"] == "method_not_allowed"
        assert method in body["error"] and "secret" not in body["error"]


def test_right_methods_still_reach_their_routes(server: Any, client: Any, worker: Any) -> None:
    assert client.get("/jobs/lease").status_code == 405  # not "job not found"
    assert client.get("/jobs/no-such-job").json()["code"] == "not_found"
    assert worker.post("/jobs/lease", json={"queue": "wrong-method-q"}).status_code == 404
    assert client.head("/health").status_code == 200
    assert client.get("/no/such/path").status_code == 404
    assert client.get("/no/such/path").json()["code"] == "not_found"


def test_405s_are_counted_by_route_template(server: Any, admin: Any) -> None:
    admin.get("/keys/client_secret_in_a_path")
    metrics = admin.get("/metrics").text
    assert 'route="/keys/{key}",status="405"' in metrics
    assert "client_secret_in_a_path" not in metrics
