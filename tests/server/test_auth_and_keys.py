"""Who may do what: 401/403 for every route and key type, and the key routes."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

# (method, path, json body, scope) for every authenticated route of docs/api.md.
JOB_ID = "00000000-0000-0000-0000-000000000000"
ROUTES: list[tuple[str, str, dict[str, Any] | None, str | None]] = [
    ("POST", "/jobs", {"payload": "x", "queue": "scope-matrix"}, "jobs:submit"),
    ("POST", "/jobs/batch", {"jobs": [{"queue": "scope-matrix"}]}, "jobs:submit"),
    ("POST", f"/jobs/{JOB_ID}/cancel", None, "jobs:submit"),
    ("POST", f"/jobs/{JOB_ID}/requeue", None, "jobs:submit"),
    ("POST", "/jobs/lease", {"queue": "scope-matrix-empty"}, "jobs:lease"),
    ("POST", f"/jobs/{JOB_ID}/ack", {"result": "x"}, "jobs:ack"),
    ("POST", f"/jobs/{JOB_ID}/extend", {}, "jobs:ack"),
    ("GET", f"/jobs/{JOB_ID}", None, "jobs:read"),
    ("GET", "/jobs", None, "jobs:read"),
    ("GET", "/stats", None, "jobs:read"),
    ("GET", "/metrics", None, "jobs:read"),
    ("POST", "/events/ticket", None, "jobs:read"),
    ("GET", "/keys", None, "keys:read"),
    ("GET", "/admin/keys", None, "keys:create"),
    ("POST", "/admin/keys", {"name": "n", "owner_id": "o", "type": "client"}, "keys:create"),
    ("DELETE", "/keys/client_0000000000000000", None, None),
]

SCOPES = {
    "client": {"jobs:submit", "jobs:read", "keys:read"},
    "worker": {"jobs:lease", "jobs:ack", "jobs:read", "keys:read"},
    "admin": {"jobs:submit", "jobs:read", "jobs:lease", "jobs:ack", "keys:read", "keys:create",
              "keys:revoke"},
}  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES)
def test_no_key_or_a_bad_key_is_401(
    server: Any, method: str, path: str, body: dict[str, Any] | None, scope: str | None
) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer client_notarealkeynotarealkeynotarealkey0000000"},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": f"Bearer {server.client_key}x"},
    ):
        response = httpx.request(method, server.url + path, json=body, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["code"] == "unauthorized"


def test_an_authorization_header_of_another_form_is_told_so_without_echoing_it(
    server: Any,
) -> None:
    """Sending the bare key, `Token <key>`, `Basic …` or a tab for the space was answered
    "missing API key", which sent people looking for a header they had sent. The answer says
    what form is wanted and never quotes the header: a bare key would come back in it."""
    key = server.client_key
    for value in (key, f"Token {key}", "Basic dXNlcjpwYXNz", f"Bearer\t{key}", "Bearer"):
        response = httpx.post(server.url + "/jobs", json={"payload": "x"},
                              headers={"Authorization": value})  # fmt: skip
        assert response.status_code == 401, (value, response.text)
        assert response.json() == {
            "error": "the Authorization header is not 'Bearer <key>' (one space between them)",
            "code": "unauthorized",
        }
        assert response.headers["www-authenticate"] == "Bearer"
    missing = httpx.post(server.url + "/jobs", json={"payload": "x"})
    assert missing.json()["error"] == "missing API key: send 'Authorization: Bearer <key>'"


@pytest.mark.parametrize("key_type", ["client", "worker", "admin"])
@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES)
def test_scope_matrix(
    server: Any,
    key_type: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    scope: str | None,
) -> None:
    key = getattr(server, f"{key_type}_key")
    response = httpx.request(
        method, server.url + path, json=body, headers={"Authorization": f"Bearer {key}"}
    )
    if scope is not None and scope not in SCOPES[key_type]:
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "forbidden"
    else:
        # Allowed: the route ran (the fake job or key id may well be unknown).
        assert response.status_code in (200, 201, 404), response.text


def test_create_list_and_revoke_keys(server: Any, admin: httpx.Client) -> None:
    owner = "team-" + uuid.uuid4().hex[:8]
    created = admin.post("/admin/keys", json={"name": "Prod worker", "owner_id": owner,
                                              "type": "worker"})  # fmt: skip
    assert created.status_code == 201, created.text
    body = created.json()
    secret = body["key"]
    assert secret.startswith("worker_")
    assert body["type"] == "worker" and body["owner_id"] == owner and body["name"] == "Prod worker"
    assert set(body["scopes"]) == SCOPES["worker"]
    assert body["key_id"].startswith("worker_") and body["created_at"].endswith("Z")

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {secret}"}) as new:
        assert new.post("/jobs/lease", json={"queue": "q-" + owner}).status_code == 404
        own = new.get("/keys")
        assert own.status_code == 200
        assert [key["key_id"] for key in own.json()] == [body["key_id"]]
        assert "key" not in own.json()[0]

    listing = admin.get("/admin/keys")
    assert listing.status_code == 200
    entry = next(key for key in listing.json() if key["key_id"] == body["key_id"])
    assert set(entry) == {"key_id", "key_prefix", "name", "owner_id", "type", "scopes",
                          "created_at", "revoked_at"}  # fmt: skip
    assert entry["revoked_at"] is None
    assert secret not in listing.text

    # Issue 15: never by the secret in a URL; by the public key_id.
    by_secret = admin.delete(f"/keys/{secret}")
    assert by_secret.status_code == 400 and by_secret.json()["field"] == "key", by_secret.text
    assert "key_id" in by_secret.json()["error"]
    revoked = admin.delete(f"/keys/{body['key_id']}")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["message"] == "Key revoked successfully"
    assert revoked.json()["key"] == body["key_id"]
    assert revoked.json()["revoked_at"].endswith("Z")
    after = httpx.post(server.url + "/jobs/lease", headers={"Authorization": f"Bearer {secret}"})
    assert after.status_code == 401


def test_scoped_key_and_bad_key_bodies(admin: httpx.Client) -> None:
    narrow = admin.post(
        "/admin/keys",
        json={"name": "reader", "owner_id": "o", "type": "client", "scopes": ["jobs:read"]},
    )
    assert narrow.status_code == 201 and narrow.json()["scopes"] == ["jobs:read"]
    for body, field in (
        ({"name": "n", "owner_id": "o", "type": "root"}, "type"),
        ({"name": "n", "owner_id": "o"}, "type"),
        ({"owner_id": "o", "type": "client"}, "name"),
        ({"name": "", "owner_id": "o", "type": "client"}, "name"),
        ({"name": "n", "owner_id": "o", "type": "client", "scopes": ["keys:create"]}, "scopes"),
        (
            {"name": "n", "owner_id": "o", "type": "client", "scopes": ["jobs:read", "fly"]},
            "scopes[1]",
        ),
    ):
        response = admin.post("/admin/keys", json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["code"] == "invalid_field"
        assert response.json()["field"] == field, (body, response.json())


def test_revoke_rules(server: Any, admin: httpx.Client) -> None:
    def create(owner: str, key_type: str = "client") -> dict[str, Any]:
        body = {"name": "k", "owner_id": owner, "type": key_type}
        return dict(admin.post("/admin/keys", json=body).json())

    owner = "own-" + uuid.uuid4().hex[:8]
    mine, sibling, stranger = create(owner), create(owner, "worker"), create("other-" + owner)
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {mine['key']}"}
    ) as http:
        refused = http.delete(f"/keys/{stranger['key_id']}")
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
        assert http.delete(f"/keys/{sibling['key_id']}").status_code == 200
        assert http.delete("/keys/client_ffffffffffffffff").status_code == 404
    assert admin.delete(f"/keys/{stranger['key_id']}").status_code == 200


def test_secrets_never_reach_the_log(server: Any, admin: httpx.Client) -> None:
    created = admin.post("/admin/keys", json={"name": "n", "owner_id": "o", "type": "admin"})
    secret = created.json()["key"]
    httpx.get(server.url + "/stats", headers={"Authorization": f"Bearer {secret}"})
    admin.delete(f"/keys/{secret}")
    log = server.log()
    assert secret not in log
    seeded = [server.client_key, server.worker_key, server.admin_key]
    for key in seeded:
        # The "Created … key" log line and the first-start panel (issue 16), nothing else.
        lines = [line for line in log.splitlines() if key in line]
        assert len(lines) >= 2 and "Created" in lines[0], lines
        assert all(line.startswith("│ ") for line in lines[1:]), lines
