"""Nothing shared between owners (issue 15, findings 1, 2, 3 and 9), against real `jq serve`
processes: idempotency keys scoped to the owner and tied to the request (same/different body,
same/different owner, batch entries, after expiry, after kill -9 and replay), the revoke rules,
revoking by key id only, and a revoke ending the key's open /events streams."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

SSE_TIMEOUT = httpx.Timeout(10.0, read=10.0)


def new_key(admin: httpx.Client, owner: str, key_type: str = "client", **extra: Any) -> Any:
    created = admin.post(
        "/admin/keys", json={"name": "k", "owner_id": owner, "type": key_type, **extra}
    )
    assert created.status_code == 201, created.text
    return created.json()


def as_key(server: Any, secret: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {secret}"})


def owner() -> str:
    return "team-" + uuid.uuid4().hex[:8]


def job_count(http: httpx.Client, queue: str) -> int:
    return len(http.get("/jobs", params={"queue": queue, "limit": 1000}).json()["jobs"])


# --- idempotency ------------------------------------------------------------------------------


def test_same_key_same_request_is_the_first_job(server: Any, admin: httpx.Client) -> None:
    with as_key(server, new_key(admin, owner())["key"]) as http:
        queue, key = "idem-" + uuid.uuid4().hex[:8], uuid.uuid4().hex
        body = {"payload": "p", "queue": queue, "priority": 3, "delay_ms": 1000}
        first = http.post("/jobs", json=body, headers={"Idempotency-Key": key})
        assert first.status_code == 201, first.text
        again = http.post("/jobs", json={**body, "idempotency_key": key})
        assert again.status_code == 200
        assert again.json() == {"job_id": first.json()["job_id"], "duplicate": True}
        assert job_count(http, queue) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"payload": "another payload"},
        {"queue": "idem-other-queue"},
        {"priority": 4},
        {"max_retries": 0},
        {"delay_ms": 2000},
        {"delay_ms": None, "run_at": "2099-01-01T00:00:00Z"},
    ],
)
def test_same_key_different_request_is_422_and_creates_nothing(
    server: Any, admin: httpx.Client, change: dict[str, Any]
) -> None:
    with as_key(server, new_key(admin, owner())["key"]) as http:
        queue, key = "idem-" + uuid.uuid4().hex[:8], uuid.uuid4().hex
        body = {"payload": "p", "queue": queue, "priority": 3, "delay_ms": 1000}
        first = http.post("/jobs", json={**body, "idempotency_key": key})
        assert first.status_code == 201
        submitted = http.get("/stats").json()["totals"]["submitted"]
        reused = http.post("/jobs", json={**body, **change, "idempotency_key": key})
        assert reused.status_code == 422, reused.text
        assert reused.json()["code"] == "idempotency_key_reused"
        assert first.json()["job_id"] in reused.json()["error"]
        assert http.get("/stats").json()["totals"]["submitted"] == submitted
        assert job_count(http, queue) == 1
        # The key still answers its own request.
        assert http.post("/jobs", json={**body, "idempotency_key": key}).status_code == 200


def test_another_owner_with_the_same_key_gets_its_own_job(server: Any, admin: httpx.Client) -> None:
    key, queue = uuid.uuid4().hex, "idem-" + uuid.uuid4().hex[:8]
    body = {"payload": "p", "queue": queue, "idempotency_key": key}
    team_a, team_b = owner(), owner()
    with (
        as_key(server, new_key(admin, team_a)["key"]) as a,
        as_key(server, new_key(admin, team_a, "admin")["key"]) as a_admin,
        as_key(server, new_key(admin, team_b)["key"]) as b,
    ):
        first = a.post("/jobs", json=body)
        theirs = b.post("/jobs", json=body)
        assert first.status_code == theirs.status_code == 201
        assert theirs.json()["job_id"] != first.json()["job_id"]
        # Another key of the same owner shares the owner's keys.
        mine = a_admin.post("/jobs", json=body)
        assert mine.status_code == 200 and mine.json()["job_id"] == first.json()["job_id"]
        # And another owner's different body is its own business, not a reuse of ours.
        assert b.post("/jobs", json={**body, "payload": "q"}).status_code == 422
        assert job_count(a, queue) == 2


def test_batch_entries_follow_the_same_rules(server: Any, admin: httpx.Client) -> None:
    queue, key = "idem-" + uuid.uuid4().hex[:8], uuid.uuid4().hex
    entry = {"payload": "p", "queue": queue, "idempotency_key": key}
    with (
        as_key(server, new_key(admin, owner())["key"]) as a,
        as_key(server, new_key(admin, owner())["key"]) as b,
    ):
        results = a.post(
            "/jobs/batch", json={"jobs": [entry, entry, {**entry, "payload": "other"}]}
        ).json()["results"]
        assert results[0]["duplicate"] is False
        assert results[1] == {"job_id": results[0]["job_id"], "duplicate": True}
        assert results[2]["code"] == "idempotency_key_reused" and results[2]["field"] is None
        single = a.post("/jobs", json=entry)
        assert single.status_code == 200 and single.json()["job_id"] == results[0]["job_id"]
        (theirs,) = b.post("/jobs/batch", json={"jobs": [entry]}).json()["results"]
        assert theirs["duplicate"] is False and theirs["job_id"] != results[0]["job_id"]
        assert job_count(a, queue) == 2


def test_keys_are_forgotten_after_the_keep_time(jq_server_factory: Any) -> None:
    server = jq_server_factory("--idempotency-keep", "1s")
    with server.client(server.client_key) as http:
        body = {"payload": "p", "idempotency_key": "k-" + uuid.uuid4().hex}
        first = http.post("/jobs", json=body).json()["job_id"]
        assert http.post("/jobs", json=body).json() == {"job_id": first, "duplicate": True}
        time.sleep(1.2)
        later = http.post("/jobs", json={**body, "payload": "new"})
        assert later.status_code == 201 and later.json()["job_id"] != first


def test_idempotency_survives_kill_9_and_a_changed_setting(jq_server_factory: Any) -> None:
    """The keep time travels in the Submit command: a restart with another setting does not
    change what the log says."""
    server = jq_server_factory("--idempotency-keep", "1h")
    body = {"payload": "p", "queue": "replayed", "idempotency_key": "k-" + uuid.uuid4().hex}
    with server.client(server.client_key) as http:
        first = http.post("/jobs", json=body).json()["job_id"]
    server.kill9()
    server.args = ("--idempotency-keep", "1s")
    server.start()
    time.sleep(1.2)
    with server.client(server.client_key) as http:
        assert http.post("/jobs", json=body).json() == {"job_id": first, "duplicate": True}
        reused = http.post("/jobs", json={**body, "payload": "other"})
        assert reused.status_code == 422 and reused.json()["code"] == "idempotency_key_reused"
    with server.client(server.admin_key) as other_owner:
        assert other_owner.post("/jobs", json=body).status_code == 201


# --- revoking ---------------------------------------------------------------------------------


def test_revoke_needs_keys_read_and_the_same_owner(server: Any, admin: httpx.Client) -> None:
    team = owner()
    reader_only = new_key(admin, team, scopes=["jobs:read"])  # no keys:read
    client = new_key(admin, team)
    sibling = new_key(admin, team, "worker")
    team_admin = new_key(admin, team, "admin")
    stranger = new_key(admin, owner(), "worker")
    with as_key(server, reader_only["key"]) as http:
        refused = http.delete(f"/keys/{sibling['key_id']}")
        assert refused.status_code == 403 and "keys:read" in refused.json()["error"]
    with as_key(server, client["key"]) as http:
        assert http.delete(f"/keys/{stranger['key_id']}").status_code == 403
        # The same owner's admin key: only a key with keys:create may revoke it.
        refused = http.delete(f"/keys/{team_admin['key_id']}")
        assert refused.status_code == 403 and "keys:create" in refused.json()["error"]
        assert http.delete(f"/keys/{sibling['key_id']}").status_code == 200
    assert admin.get("/admin/keys").json()  # the admins are all still there
    for key in (team_admin, stranger):
        revoked = admin.delete(f"/keys/{key['key_id']}")
        assert revoked.status_code == 200 and revoked.json()["key"] == key["key_id"]


def test_an_admin_key_without_keys_create_cannot_revoke_an_admin_key(
    server: Any, admin: httpx.Client
) -> None:
    revoker = new_key(admin, owner(), "admin", scopes=["keys:read", "keys:revoke"])
    victim_admin, victim_client = new_key(admin, owner(), "admin"), new_key(admin, owner())
    with as_key(server, revoker["key"]) as http:
        assert http.delete(f"/keys/{victim_admin['key_id']}").status_code == 403
        assert http.delete(f"/keys/{victim_client['key_id']}").status_code == 200


def test_a_secret_in_the_path_is_refused_and_revokes_nothing(
    server: Any, admin: httpx.Client
) -> None:
    victim = new_key(admin, owner())
    refused = admin.delete(f"/keys/{victim['key']}")
    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == "invalid_field" and refused.json()["field"] == "key"
    assert victim["key"] not in refused.text
    with as_key(server, victim["key"]) as http:
        assert http.get("/stats").status_code == 200  # still a live key
    assert victim["key"] not in server.log()


# --- a revoke ends the key's streams ----------------------------------------------------------


class StreamWatcher:
    """Reads an /events stream in a thread and notes when it ends."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self.frames = 0
        self.ended = threading.Event()
        self.opened = threading.Event()
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(url, kwargs), daemon=True)
        self._thread.start()

    def _read(self, url: str, kwargs: dict[str, Any]) -> None:
        try:
            with httpx.stream("GET", url, timeout=SSE_TIMEOUT, **kwargs) as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    self.opened.set()
                    if line.startswith("event:"):
                        self.frames += 1
                    if self.stop.is_set():
                        return
        except httpx.HTTPError:
            pass
        finally:
            self.ended.set()


@pytest.fixture
def viewer(server: Any, admin: httpx.Client) -> Iterator[dict[str, Any]]:
    key = new_key(admin, owner())
    yield key
    admin.delete(f"/keys/{key['key_id']}")


def test_revoke_ends_open_streams_of_the_key_and_its_tickets(
    server: Any, admin: httpx.Client, viewer: dict[str, Any]
) -> None:
    headers = {"Authorization": f"Bearer {viewer['key']}"}
    ticket = httpx.post(server.url + "/events/ticket", headers=headers).json()["ticket"]
    by_header = StreamWatcher(server.url + "/events", headers=headers)
    by_ticket = StreamWatcher(server.url + "/events", params={"ticket": ticket})
    bystander = StreamWatcher(
        server.url + "/events", headers={"Authorization": f"Bearer {server.client_key}"}
    )
    for watcher in (by_header, by_ticket, bystander):
        assert watcher.opened.wait(10)
    assert admin.delete(f"/keys/{viewer['key_id']}").status_code == 200
    # Before issue 15 these kept streaming for 45 s and more; now they end at once (the bound
    # here only keeps a slow machine from failing the test; bench/ is where time is measured).
    assert by_header.ended.wait(5), "the stream of a revoked key stayed open"
    assert by_ticket.ended.wait(5), "the ticket stream of a revoked key stayed open"
    assert not bystander.ended.is_set()
    bystander.stop.set()
    assert httpx.get(server.url + "/events", params={"ticket": ticket}).status_code == 401
