"""Bad values refused clearly (issue 15, findings 4, 5, 6, 7 and 11), against a real server:
each request here was answered wrongly before (accepted, or a 500) and is a clear 4xx now, and
whatever the server writes back, the SDK reads."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import msgspec
import pytest

from jq_tool.sdk import Client


def assert_refused(
    response: httpx.Response, field: str | None, code: str = "invalid_field"
) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == code, body
    assert set(body) <= {"error", "code", "field"}
    if field is not None:
        assert body["field"] == field, body


# --- run_at (finding 4) -----------------------------------------------------------------------

NOT_RFC3339 = [
    "2030-01-01",  # a date alone
    "2030-W01-1",  # a week date
    "2030-01-01 00:00:00Z",  # a space for T
    "2030-01-01T00:00:00",  # no offset
    "2030-01-01T00:00Z",  # no seconds
    "2030-01-01T00:00:00\x00Z",  # an embedded NUL
    "2030-01-01T00:00:00Z\n",
    "２０３０-01-01T00:00:00Z",  # full-width digits
    "2030-02-30T00:00:00Z",  # no such day
    "2030-01-01T24:00:00Z",
    "2030-01-01T00:00:00+25:00",
]
OUT_OF_RANGE = [
    "0001-01-01T00:00:00Z",
    "0999-12-31T23:59:59Z",
    "1969-12-31T23:59:59.999Z",
    "9999-12-31T23:59:59-01:00",  # 10000-01-01 in UTC
]


@pytest.mark.parametrize("run_at", NOT_RFC3339 + OUT_OF_RANGE)
def test_run_at_must_be_rfc3339_within_1970_and_9999(client: httpx.Client, run_at: str) -> None:
    for response in (
        client.post("/jobs", json={"payload": "x", "run_at": run_at}),
        client.post("/jobs/batch", json={"jobs": [{"payload": "x", "run_at": run_at}]}),
    ):
        if response.request.url.path == "/jobs":
            assert_refused(response, "run_at")
        else:
            (entry,) = response.json()["results"]
            assert entry["field"] == "run_at" and entry["code"] == "invalid_field", entry


@pytest.mark.parametrize(
    ("run_at", "written"),
    [
        ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00.000Z"),
        ("9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z"),
        ("2030-06-01t12:00:00.123456+02:00", "2030-06-01T10:00:00.123Z"),
        ("2030-06-01T12:00:00z", "2030-06-01T12:00:00.000Z"),
    ],
)
def test_run_at_accepted_and_written_back_as_rfc3339(
    server: Any, client: httpx.Client, run_at: str, written: str
) -> None:
    queue = "run-at-" + uuid.uuid4().hex[:8]
    created = client.post("/jobs", json={"payload": "x", "run_at": run_at, "queue": queue})
    assert created.status_code == 201, created.text
    job = client.get(f"/jobs/{created.json()['job_id']}").json()
    assert job["run_at"] == written
    # The SDK, `jq get` and `jq list` read what the server wrote.
    with Client(server.url, key=server.client_key) as sdk:
        assert sdk.get(created.json()["job_id"]).run_at is not None
        assert len(sdk.list(queue=queue).jobs) == 1


# --- queue names (finding 5) ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["abc\n", "abc\r\n", "\nabc", "a" * 129, "", "a b", "ä"])
def test_queue_names_match_the_pattern_end_to_end(
    client: httpx.Client, worker: httpx.Client, name: str
) -> None:
    assert_refused(client.post("/jobs", json={"payload": "x", "queue": name}), "queue")
    assert_refused(worker.post("/jobs/lease", json={"queue": name}), "queue")
    if name:
        assert_refused(client.get("/jobs", params={"queue": name}), "queue")
    refusal = client.post("/jobs", json={"payload": "x", "queue": name}).json()
    assert "1-128 characters" in refusal["error"]


# --- 500s for client mistakes (finding 6) -----------------------------------------------------


# Body limits of the shared server (--max-payload 64KiB): past them a 413 says it first.
BODY_LIMITS = {"/jobs": 192 * 1024, "/jobs/batch": 576 * 1024, "/jobs/lease": 64 * 1024,
               "/admin/keys": 64 * 1024}  # fmt: skip


@pytest.mark.parametrize("depth", [65, 1000, 50_000])
def test_deep_json_is_a_400_not_a_500(server: Any, admin: httpx.Client, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    body = f'{{"payload": "x", "ignored": {nested}}}'.encode()
    routes = [path for path, limit in BODY_LIMITS.items() if len(body) <= limit]
    assert routes
    for path in routes:
        response = admin.post(path, content=body)
        assert_refused(response, None, "invalid_json")
        assert "64 levels" in response.json()["error"]
    assert "Traceback" not in server.log()


def test_json_at_64_levels_is_fine(client: httpx.Client) -> None:
    nested = "[" * 63 + "]" * 63  # inside the body's object: 64 levels in all
    response = client.post("/jobs", content=f'{{"payload": "x", "ignored": {nested}}}'.encode())
    assert response.status_code == 201, response.text
    brackets_in_text = '{"payload": "' + "[{" * 500 + '"}'
    assert client.post("/jobs", content=brackets_in_text.encode()).status_code == 201


@pytest.mark.parametrize("value", ["²", "٣", "１", "1e2", "3.0", "0x10", " 5"])
def test_numeric_query_parameters_are_ascii_digits(client: httpx.Client, value: str) -> None:
    for path in ("/jobs", "/queues"):
        assert_refused(client.get(path, params={"limit": value}), "limit")


# --- payload (finding 7) ----------------------------------------------------------------------


@pytest.mark.parametrize("body", [{}, {"payload": ""}, {"data": "x"}, {"payload": None}])
def test_payload_is_required_and_not_empty(client: httpx.Client, body: dict[str, Any]) -> None:
    response = client.post("/jobs", json=body)
    assert_refused(response, "payload")
    assert response.json()["error"] == "payload is required"
    (entry,) = client.post("/jobs/batch", json={"jobs": [body]}).json()["results"]
    assert entry["field"] == "payload" and entry["code"] == "invalid_field"


# --- the OpenAPI findings (finding 11) --------------------------------------------------------


def test_a_whole_number_written_as_a_float_is_an_integer(
    client: httpx.Client, worker: httpx.Client
) -> None:
    queue = "floats-" + uuid.uuid4().hex[:8]
    for _ in range(2):
        assert client.post("/jobs", json={"payload": "x", "queue": queue}).status_code == 201
    leased = worker.post("/jobs/lease", json={"queue": queue, "max_jobs": 2.0})
    assert leased.status_code == 200 and len(leased.json()) == 2, leased.text
    assert_refused(worker.post("/jobs/lease", json={"queue": queue, "max_jobs": 1.5}), "max_jobs")
    assert_refused(client.post("/jobs", json={"payload": "x", "max_retries": "3"}), "max_retries")


def test_405_says_which_methods_are_allowed(client: httpx.Client) -> None:
    response = client.put("/jobs")
    assert response.status_code == 405
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}
    assert response.json()["code"] == "method_not_allowed"


@pytest.mark.parametrize("action", ["cancel", "requeue"])
def test_cancel_and_requeue_refuse_a_body_that_is_not_an_object(
    client: httpx.Client, action: str
) -> None:
    response = client.post(f"/jobs/{uuid.uuid4()}/{action}", content=b"[1]")
    assert_refused(response, None, "invalid_json")


# --- a body in a content coding ---------------------------------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "br", "deflate", "GZIP", "gzip, identity", "x-made-up"])
def test_a_body_in_a_content_coding_is_refused_with_415(
    client: httpx.Client, worker: httpx.Client, coding: str
) -> None:
    """A compressing client (requests with a gzip adapter, an HTTP library's compression on by
    default) was told "not valid JSON: invalid character (byte 0)". Now a 415 says the coding,
    and Accept-Encoding says what is read (RFC 9110 §12.5.3); nothing is done."""
    import gzip

    queue = "coded-" + uuid.uuid4().hex[:8]
    body = gzip.compress(b'{"payload": "x", "queue": "%s"}' % queue.encode())
    for caller, path in ((client, "/jobs"), (client, "/jobs/batch"), (worker, "/jobs/lease")):
        response = caller.post(
            path,
            content=body,
            headers={"Content-Encoding": coding, "Content-Type": "application/json"},
        )
        assert response.status_code == 415, response.text
        assert response.json() == {
            "error": f"the body is sent with Content-Encoding {coding!r}: only an unencoded body "
            "is read",
            "code": "unsupported_encoding",
        }
        assert response.headers["accept-encoding"] == "identity"
    assert client.get("/jobs", params={"queue": queue}).json()["jobs"] == []


@pytest.mark.parametrize("coding", ["identity", "Identity", ""])
def test_an_identity_body_is_read(client: httpx.Client, coding: str) -> None:
    response = client.post(
        "/jobs", content=b'{"payload": "x"}', headers={"Content-Encoding": coding}
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("coding", ["gzip, chunked", "identity, chunked", "x-made-up, chunked"])
def test_a_transfer_coding_other_than_chunked_is_refused_with_501(
    server: Any, client: httpx.Client, coding: str
) -> None:
    """llhttp takes any codings before a final chunked and hands on the de-chunked bytes, still
    gzip'd: they were read as JSON (400 "invalid character"). RFC 9112 §6.1: 501."""
    import gzip
    import socket

    body = gzip.compress(b'{"payload": "x"}')
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    key = client.headers["authorization"].encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /jobs HTTP/1.1\r\nHost: jq\r\nAuthorization: " + key
            + b"\r\nTransfer-Encoding: " + coding.encode() + b"\r\n\r\n" + chunked
        )  # fmt: skip
        answer = sock.recv(65536)
    head, _, content = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 501 "), answer
    assert msgspec.json.decode(content) == {
        "error": f"the body is sent with Transfer-Encoding {coding!r}: only chunked alone is read",
        "code": "unsupported_encoding",
    }


def test_a_header_given_twice_is_refused_naming_it(
    server: Any, client: httpx.Client, worker: httpx.Client
) -> None:
    """Two Authorization headers were read as the first (a proxy in front may read the last:
    two parties, two callers), two Idempotency-Keys likewise; like a query parameter given
    twice, each is now a 400 naming it, and nothing is done."""
    key = client.headers["authorization"]
    queue = "twice-" + uuid.uuid4().hex[:8]
    body = {"payload": "x", "queue": queue}
    cases = [
        ("Authorization", [("Authorization", key), ("Authorization", "Bearer someone-else")]),
        ("Authorization", [("Authorization", "Bearer someone-else"), ("Authorization", key)]),
        ("Idempotency-Key", [("Authorization", key), ("Idempotency-Key", "a"),
                             ("Idempotency-Key", "b")]),
    ]  # fmt: skip
    for field, headers in cases:
        response = httpx.post(f"{server.url}/jobs", json=body, headers=headers)
        assert response.status_code == 400, response.text
        assert response.json() == {
            "error": f"the {field} header is given more than once",
            "code": "invalid_field",
            "field": field,
        }
    assert client.get("/jobs", params={"queue": queue}).json()["jobs"] == []
    lease = httpx.post(
        f"{server.url}/jobs/lease",
        json={"queue": queue},
        headers=[("Authorization", worker.headers["authorization"]),
                 ("X-Jq-Worker", "a"), ("X-Jq-Worker", "b")],
    )  # fmt: skip
    assert lease.status_code == 400 and lease.json()["field"] == "X-Jq-Worker", lease.text
