"""The job routes' fast lane (server/hot_routes.py) answers exactly as Starlette's router does:
the same app with and without it, driven in process over a real engine and key store, gets the
same status and body for the job routes, their odd neighbours (other methods, trailing slashes,
extra segments, encoded slashes) and a few routes that are not its own; and the request
metrics still count hot requests by their route template."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware

from jq_tool.auth import KeyType, open_key_store
from jq_tool.engine.factory import open_engine
from jq_tool.server.app import create_app
from jq_tool.server.errors import HANDLED_EXCEPTIONS, handle_exception
from jq_tool.server.hot_routes import JobsFirst
from jq_tool.server.metrics import RequestCounts, RequestMetricsMiddleware
from jq_tool.settings import Settings


async def call(
    app: Any, method: str, path: str, body: bytes = b"", key: str | None = None
) -> tuple[int, bytes]:
    headers = [(b"host", b"test"), (b"content-length", str(len(body)).encode())]
    if key:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
        "state": {},
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    status, parts = 0, []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        else:
            parts.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(parts)


@pytest.fixture
async def apps(tmp_path: Path) -> AsyncIterator[tuple[Any, Any, str, RequestCounts]]:
    settings = Settings(data_dir=tmp_path, lease_check_interval_ms=1000)
    engine = open_engine(settings)
    keystore = open_key_store(None, tmp_path)
    hot = create_app(engine, keystore, settings)
    counts = RequestCounts()
    plain = Starlette(
        routes=list(hot.routes),
        middleware=[Middleware(RequestMetricsMiddleware, counts=counts, log_access=False)],
        exception_handlers={exc: handle_exception for exc in HANDLED_EXCEPTIONS},
    )
    await engine.start()
    _, secret = await keystore.create(name="t", owner_id="t", type=KeyType.ADMIN)
    hot_counts = next(
        m.kwargs["counts"] for m in hot.user_middleware if m.cls is RequestMetricsMiddleware
    )
    try:
        yield hot, plain, secret, hot_counts
    finally:
        await engine.stop()
        await keystore.close()


PATHS = [
    ("POST", "/jobs", b'{"payload": "x", "idempotency_key": "same"}'),
    ("POST", "/jobs", b'{"priority": "high"}'),
    ("POST", "/jobs", b"{nope"),
    ("GET", "/jobs", b""),
    ("PUT", "/jobs", b""),
    ("POST", "/jobs/batch", b'{"jobs": [{"idempotency_key": "batch-same"}]}'),
    ("GET", "/jobs/batch", b""),
    ("POST", "/jobs/lease", b'{"queue": "empty"}'),
    ("GET", "/jobs/lease", b""),
    ("POST", "/jobs/ack", b'{"acks": [{"job_id": "nope"}]}'),
    ("POST", "/jobs/ack", b"{}"),
    ("GET", "/jobs/nope", b""),
    ("HEAD", "/jobs/nope", b""),
    ("DELETE", "/jobs/nope", b""),
    ("GET", "/jobs/nope/", b""),
    ("POST", "/jobs/nope/ack", b"{}"),
    ("POST", "/jobs/nope/ack/", b"{}"),
    ("POST", "/jobs/nope/ack/more", b"{}"),
    ("GET", "/jobs/nope/ack", b""),
    ("POST", "/jobs/nope/extend", b'{"lease_ms": 5}'),
    ("POST", "/jobs/nope/cancel", b""),
    ("POST", "/jobs/nope/requeue", b""),
    ("POST", "/jobs/nope/fly", b""),
    ("POST", "/jobs//ack", b"{}"),
    ("GET", "/jobs/a/b", b""),
    ("GET", "/jobsx", b""),
    ("GET", "/health", b""),
    ("GET", "/nowhere", b""),
]


@pytest.mark.parametrize("authorized", [True, False])
async def test_the_fast_lane_answers_as_the_router_does(
    apps: tuple[Any, Any, str, RequestCounts], authorized: bool
) -> None:
    hot, plain, secret, _ = apps
    key = secret if authorized else None
    for method, path, body in PATHS:  # once first: the idempotent submit is a duplicate after
        await call(plain, method, path, body, key)
    for method, path, body in PATHS:
        expected = await call(plain, method, path, body, key)
        got = await call(hot, method, path, body, key)
        assert got == expected, (method, path, body)


async def test_a_job_is_served_through_the_fast_lane_and_counted_by_template(
    apps: tuple[Any, Any, str, RequestCounts],
) -> None:
    hot, _, secret, counts = apps
    status, body = await call(hot, "POST", "/jobs", b'{"payload": "p"}', secret)
    assert status == 201
    status, leased = await call(hot, "POST", "/jobs/lease", b"{}", secret)
    assert status == 200
    job = json.loads(leased)
    ack = json.dumps({"lease_id": job["lease_id"]}).encode()
    status, _ = await call(hot, "POST", f"/jobs/{job['job_id']}/ack", ack, secret)
    assert status == 200
    assert counts.requests[("/jobs", 201)] == 1
    assert counts.requests[("/jobs/lease", 200)] == 1
    assert counts.requests[("/jobs/{id}/ack", 200)] == 1
    assert not any(route == "unmatched" for route, _ in counts.requests)
    assert isinstance(hot, JobsFirst) and hot.jobs_table is not None  # before any middleware


def test_an_answer_leaves_in_one_send(server: Any) -> None:
    """Head and body of an answer are written together (server/http_protocol.py): a client
    waiting for it reads it whole the first time it wakes, instead of twice."""
    import socket

    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = f"POST /jobs HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {server.client_key}\r\n"
        for i in range(50):
            body = json.dumps({"payload": f"p{i}"}).encode()
            request = f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
            sock.sendall(request)
            first = sock.recv(65536)
            assert first.startswith(b"HTTP/1.1 201") and first.endswith(b"}"), first


def _exchange(port: int, request: bytes, *, until_close: bool = False) -> bytes:
    """Send raw bytes and read what comes back: until the peer closes, or one quiet 0.5 s."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sock.settimeout(None if until_close else 0.5)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return received
            if not chunk:
                return received
            received += chunk


def _answers(raw: bytes) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """Split raw HTTP/1.1 answers (each with a content-length) into (status line, headers, body)."""
    answers = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        headers = dict(line.lower().split(b": ", 1) for line in lines)
        length = int(headers.get(b"content-length", b"0"))
        answers.append((status, headers, rest[:length]))
        raw = rest[length:]
    return answers


def test_job_answers_written_in_one_piece_keep_http_semantics(server: Any) -> None:
    """Job routes' answers are written in one buffer (server/http_protocol.py answer_at_once),
    not through ASGI messages: pipelined requests are answered in order, each with the headers
    uvicorn's own answers carry; `Connection: close` and HTTP/1.0 get `connection: close` and
    the connection is closed; a HEAD (which goes the ASGI way) has headers and no body."""
    port = int(server.url.rsplit(":", 1)[1])
    auth = f"Authorization: Bearer {server.client_key}\r\n"

    def submit(extra: str = "", version: str = "1.1") -> bytes:
        body = json.dumps({"payload": "one piece"}).encode()
        head = f"POST /jobs HTTP/{version}\r\nHost: t\r\n{auth}{extra}"
        return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body

    # Three pipelined submits in one packet: three answers, in order, the connection kept.
    answers = _answers(_exchange(port, submit() * 3))
    assert [status for status, _, _ in answers] == [b"HTTP/1.1 201 Created"] * 3
    job_ids = [json.loads(body)["job_id"] for _, _, body in answers]
    assert len(set(job_ids)) == 3
    for _, headers, body in answers:
        assert headers[b"content-type"] == b"application/json"
        assert int(headers[b"content-length"]) == len(body)
        assert b"date" in headers  # uvicorn's default header, as on its own answers
        assert b"connection" not in headers

    # Connection: close, and HTTP/1.0: the answer says so and the server closes.
    for request in (submit("Connection: close\r\n"), submit(version="1.0")):
        raw = _exchange(port, request, until_close=True)
        [(status, headers, body)] = _answers(raw)
        assert status.endswith(b"201 Created")
        assert headers[b"connection"] == b"close"
        assert json.loads(body)["job_id"]

    # An error answer of a job route takes the same path: 401 with its JSON body.
    body = b'{"payload": "x"}'
    raw = _exchange(port, b"POST /jobs HTTP/1.1\r\nHost: t\r\nContent-Length: 16\r\n\r\n" + body)
    [(status, headers, answer)] = _answers(raw)
    assert status == b"HTTP/1.1 401 Unauthorized"
    assert json.loads(answer)["code"] == "unauthorized"

    # HEAD of a job: the GET's headers, no body.
    job = job_ids[0]
    raw = _exchange(port, f"HEAD /jobs/{job} HTTP/1.1\r\nHost: t\r\n{auth}\r\n".encode())
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length: " in head.lower()
    assert rest == b""
