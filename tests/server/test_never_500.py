"""Whatever a client sends, the answer is a JSON error or a success, never a 500: random JSON
values (hypothesis) and odd bytes against every route of a real server."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
FIELDS = ["payload", "max_retries", "priority", "delay_ms", "run_at", "queue", "idempotency_key",
          "wait_ms", "max_jobs", "lease_ms", "result", "result_error", "lease_id", "jobs", "name",
          "owner_id", "type", "scopes", "acks", "lease_next", "job_id"]  # fmt: skip
bodies = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5) | json_values

ROUTES = [
    ("POST", "/jobs"),
    ("POST", "/jobs/batch"),
    ("POST", "/jobs/lease"),
    ("POST", "/jobs/ack"),
    ("POST", "/jobs/some-id/ack"),
    ("POST", "/jobs/some-id/extend"),
    ("POST", "/jobs/some-id/release"),
    ("POST", "/jobs/some-id/cancel"),
    ("POST", "/jobs/some-id/requeue"),
    ("POST", "/admin/keys"),
    ("POST", "/events/ticket"),
    ("POST", "/_noop"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies)
def test_random_bodies(admin: httpx.Client, method: str, path: str, body: Any) -> None:
    response = admin.request(method, path, content=json.dumps(body).encode())
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert set(response.json()) <= {"error", "code", "field"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/jobs/%00%ff"),
        ("GET", "/jobs?limit=-3&state=&cursor=%00"),
        ("GET", "/jobs?limit=99999999999999999999999"),
        ("DELETE", "/keys/%20"),
        ("DELETE", "/keys/admin_zzzz"),
        ("DELETE", "/keys/" + "x" * 5000),
        ("DELETE", "/workers/%00%ff"),
        ("DELETE", "/workers/" + "x" * 5000),
        ("DELETE", "/workers/a/../../b"),
        ("DELETE", "/workers/"),
        ("GET", "/events?ticket=" + "t" * 3000),
        ("PUT", "/jobs"),
        ("GET", "/jobs/lease"),
    ],
)
def test_odd_requests(admin: httpx.Client, method: str, path: str) -> None:
    response = admin.request(method, path)
    assert response.status_code < 500, response.text
    assert "code" in response.json()


def test_odd_content_length(server: Any) -> None:
    response = httpx.post(
        server.url + "/jobs",
        content=b'{"payload":"x"}',
        headers={**server.headers(server.client_key), "Content-Length": "15"},
    )
    assert response.status_code == 201
