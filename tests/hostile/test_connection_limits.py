"""Each bound on connections, one at a time, against a real `jq serve` (issue 14): the cap
refuses politely (503 + Retry-After, then closed) while admitted connections go on and GET
/health still answers; connections that do not send a whole head (idle, slowloris) or stall a
body are closed; request heads are limited to the byte; /events streams have their own cap."""

from __future__ import annotations

import socket
import time

import httpx

from tests.hostile.conftest import HostileFactory, RawClient, submit_body, wait_for


def test_over_the_cap_a_connection_gets_503_retry_after_and_is_closed(
    hostile_server: HostileFactory,
) -> None:
    server = hostile_server("--max-connections", "6", "--header-timeout", "30s")
    admitted = [RawClient(server.port) for _ in range(5)]
    worker = RawClient(server.port)  # the sixth: a client already in keeps working
    key = server.client_key
    try:
        assert worker.request("POST", "/jobs", key=key, body=submit_body()).status == 201
        for _ in range(3):  # every connection over the cap, however many
            extra = RawClient(server.port)
            answer = extra.request("POST", "/jobs", key=server.client_key, body=submit_body())
            assert answer.status == 503 and answer.headers["retry-after"] == "1"
            assert answer.json()["code"] == "too_many_connections" and answer.closed
            assert extra.closed_by_server(within=5.0)
            extra.close()
        # GET /health is answered even over the cap (an orchestrator must not see a busy
        # server as a dead one), and that connection is closed after it.
        probe = RawClient(server.port)
        health = probe.request("GET", "/health")
        assert health.status == 200 and health.json()["status"] == "ok" and health.closed
        probe.close()
        # Admitted connections were never disturbed.
        for client in admitted:
            assert not client.closed_by_server(within=0.05)
        assert worker.request("POST", "/jobs", key=key, body=submit_body()).status == 201
    finally:
        for client in [*admitted, worker]:
            client.close()
    # Once they are gone, new connections are served again.
    assert wait_for(lambda: _submit(server.url, server.client_key) == 201, timeout=5.0)


def _submit(url: str, key: str | None) -> int:
    try:
        return httpx.post(
            url + "/jobs", json={"payload": "x"}, headers={"Authorization": f"Bearer {key}"}
        ).status_code
    except httpx.HTTPError:
        return 0


def test_idle_slow_and_stalled_connections_are_closed(hostile_server: HostileFactory) -> None:
    server = hostile_server("--header-timeout", "1s", "--keep-alive-timeout", "1s")
    idle = RawClient(server.port)  # never sends a byte
    slowloris = RawClient(server.port)
    slowloris.send(b"POST /jobs HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    stalled = RawClient(server.port)  # a whole head, then a body that stops coming
    stalled.send(
        b"POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + (server.client_key or "").encode()
        + b'\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"pay'
    )
    kept_alive = RawClient(server.port)
    assert kept_alive.request("GET", "/health").status == 200  # then idle after its answer
    closed: dict[str, bool] = {}
    deadline = time.monotonic() + 8.0
    while time.monotonic() < deadline and len(closed) < 4:
        for name, client in (
            ("idle", idle),
            ("slowloris", slowloris),
            ("stalled body", stalled),
            ("idle keep-alive", kept_alive),
        ):
            if name in closed:
                continue
            if name == "slowloris":
                try:
                    slowloris.send(b"a")  # a byte every 0.1 s: still never a whole head
                except OSError:
                    closed[name] = True
                    continue
            if client.closed_by_server(within=0.02):
                closed[name] = True
        time.sleep(0.1)
    assert set(closed) == {"idle", "slowloris", "stalled body", "idle keep-alive"}, closed
    # A request that keeps its promises is not affected.
    assert _submit(server.url, server.client_key) == 201
    assert "timed out" in server.log()
    for client in (idle, slowloris, stalled, kept_alive):
        client.close()


def test_keep_alive_timeout_is_kept_by_the_sweep(hostile_server: HostileFactory) -> None:
    """The keep-alive timeout has no timer per answer (server/connections.py): an idle
    keep-alive connection is closed after --keep-alive-timeout, quietly; one that starts its
    next head in time is then under the header timeout, counted from its answer; and one that
    sends its next request in time is served and kept."""
    server = hostile_server("--header-timeout", "3s", "--keep-alive-timeout", "1s")
    idle, slow_head, busy = RawClient(server.port), RawClient(server.port), RawClient(server.port)
    for client in (idle, slow_head, busy):
        assert client.request("GET", "/health").status == 200
    answered = time.monotonic()
    time.sleep(0.6)
    slow_head.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # a head begun, never ended
    assert busy.request("GET", "/health").status == 200  # in time: served, kept alive
    # The idle one goes after ~1 s (plus at most a sweep), the others stay past it.
    assert idle.closed_by_server(within=3.0)
    idle_closed = time.monotonic() - answered
    assert 0.9 <= idle_closed < 2.8, idle_closed
    assert "timed out" not in server.log()  # a keep-alive expiry is not an offence
    assert not slow_head.closed_by_server(within=0.05)
    # The begun head has the header timeout, from its answer: closed at ~3 s, with a warning.
    assert slow_head.closed_by_server(within=4.0)
    head_closed = time.monotonic() - answered
    assert 2.8 <= head_closed < 4.5, head_closed
    assert wait_for(lambda: "timed out: 1 since" in server.log(), timeout=5.0), server.log()
    for client in (idle, slow_head, busy):
        client.close()


def test_request_heads_are_limited_to_the_byte(hostile_server: HostileFactory) -> None:
    server = hostile_server("--max-header-size", "4KiB")

    def head_of(size: int, *, body: bytes = b"") -> bytes:
        start = b"POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        start += (server.client_key or "").encode() + b"\r\n"
        start += b"Content-Type: application/json\r\nContent-Length: %d\r\nX-Pad: " % len(body)
        return start + b"p" * (size - len(start) - 4) + b"\r\n\r\n"

    body = submit_body()
    at_limit = RawClient(server.port)
    at_limit.send(head_of(4096, body=body) + body)  # head and body in one write
    assert at_limit.read_answer().status == 201
    at_limit.close()

    over = RawClient(server.port)
    over.send(head_of(4097, body=body) + body)
    answer = over.read_answer()
    assert answer.status == 431 and answer.closed
    assert answer.json()["code"] == "header_too_large"
    assert over.closed_by_server(within=5.0)
    over.close()

    # Many small headers count the same as one big one.
    many = RawClient(server.port)
    many.send(b"GET /health HTTP/1.1\r\n" + b"X-A: b\r\n" * 1000 + b"\r\n")
    assert many.read_answer().status == 431
    many.close()
    assert httpx.get(server.url + "/health").status_code == 200


def test_event_streams_have_their_own_cap(hostile_server: HostileFactory) -> None:
    server = hostile_server("--max-streams", "2")
    headers = {"Authorization": f"Bearer {server.client_key}"}
    streams = []
    for _ in range(2):
        stream = socket.create_connection(("127.0.0.1", server.port), timeout=5.0)
        stream.sendall(
            f"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.client_key}"
            "\r\n\r\n".encode()
        )
        assert stream.recv(4096).startswith(b"HTTP/1.1 200")
        streams.append(stream)
    third = httpx.get(server.url + "/events", headers=headers, timeout=5.0)
    assert third.status_code == 503 and third.headers["retry-after"] == "1"
    assert third.json()["code"] == "too_many_streams"
    # Dashboards at their cap take nothing from submitters.
    assert _submit(server.url, server.client_key) == 201
    streams.pop().close()

    def a_stream_opens() -> bool:
        with (
            httpx.Client(timeout=5.0) as client,
            client.stream("GET", server.url + "/events", headers=headers) as response,
        ):
            return response.status_code == 200

    # The slot comes back once the server notices the closed stream (at its next frame).
    assert wait_for(a_stream_opens, timeout=10.0, every=0.2)
    for stream in streams:
        stream.close()


def test_long_polls_and_streams_outlive_the_header_timeout(hostile_server: HostileFactory) -> None:
    # The header timeout is the client's time to send; a request the app is still answering
    # (a long poll, an event stream) is never cut by it.
    server = hostile_server("--header-timeout", "1s")
    poll = RawClient(server.port, timeout=10.0)
    started = time.monotonic()
    answer = poll.request(
        "POST", "/jobs/lease", key=server.worker_key, body=b'{"queue":"empty","wait_ms":3000}'
    )
    assert answer.status == 404 and time.monotonic() - started >= 2.5  # waited, nothing came
    # The same connection serves the next request: it was kept alive, not timed out.
    assert poll.request("GET", "/health").status == 200
    poll.close()

    stream = RawClient(server.port, timeout=10.0)
    stream.send(
        f"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.client_key}"
        "\r\n\r\n".encode()
    )
    frames = b""
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:  # stats frames come every second
        stream.sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = stream.sock.recv(65536)
        except TimeoutError:
            break
        assert chunk, "the stream was closed"
        frames += chunk
    assert frames.startswith(b"HTTP/1.1 200") and frames.count(b"event: stats") >= 3
    stream.close()


def test_upgrade_requests_cannot_leak_connection_slots(hostile_server: HostileFactory) -> None:
    # jq serves no websockets: an Upgrade request is plain HTTP to it, so it stays under the
    # guard (handed to another protocol, its slot was never given back).
    server = hostile_server("--max-connections", "4")
    for _ in range(12):
        client = RawClient(server.port)
        client.send(
            b"GET /events HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        assert client.read_answer().status == 401  # /events without a key, as plain HTTP
        client.close()
    # Every slot came back: four connections at once are all admitted, not refused.
    clients = [RawClient(server.port) for _ in range(4)]
    for client in clients:
        assert (
            client.request("POST", "/jobs", key=server.client_key, body=submit_body()).status == 201
        )
    for client in clients:
        client.close()
    # uvicorn's two warnings per upgrade request are not repeated into jq's log.
    assert "Unsupported upgrade request" not in server.log()
