"""Requests at the edge of HTTP/1.1 framing, against a real `jq serve`: bytes that are not HTTP
get a JSON 400 and a counted log line (not a text/plain 400 and a warning line each, which any
client could use to fill the log), and a request that offers an Upgrade jq does not do
(`Upgrade: h2c` from `curl --http2`, Java's RestClient, Ktor) is answered as the plain HTTP/1.1
request it also is, with its body: httptools stops at the end of such a request's head and
takes the body for the other protocol's bytes, so uvicorn alone runs it with an empty body."""

from __future__ import annotations

import time

import pytest

from tests.hostile.conftest import HostileFactory, RawClient, submit_body

# What `curl --http2 http://…` adds to every request (curl 7.88); Java's RestClient and Ktor
# send the same three headers.
H2C_OFFER = (
    b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
)


def _post_head(key: str | None, extra: bytes, framing: bytes) -> bytes:
    return (
        b"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
        + (key or "").encode()
        + b"\r\nContent-Type: application/json\r\n"
        + extra
        + framing
        + b"\r\n"
    )


def _chunked(body: bytes, sizes: tuple[int, ...]) -> bytes:
    out, at = b"", 0
    for size in sizes:
        out += f"{size:x}\r\n".encode() + body[at : at + size] + b"\r\n"
        at += size
    assert at == len(body)
    return out + b"0\r\n\r\n"


def _payload_of(client: RawClient, key: str | None, job_id: str) -> str:
    answer = client.request("GET", f"/jobs/{job_id}", key=key)
    assert answer.status == 200, answer.body
    return str(answer.json()["payload"])


@pytest.mark.parametrize("how", ["one read", "head, then body", "chunked, in pieces"])
def test_an_upgrade_offer_is_answered_as_plain_http_with_its_body(
    hostile_server: HostileFactory, how: str
) -> None:
    server = hostile_server()
    key = server.client_key
    client = RawClient(server.port)
    try:
        for n in range(3):  # every request of a keep-alive connection offers it again
            payload = f'{how} #{n}: ünïcode, "quotes" and a {"long " * 50}tail'
            body = submit_body(payload)
            if how == "chunked, in pieces":
                head = _post_head(key, H2C_OFFER, b"Transfer-Encoding: chunked\r\n")
                framed = _chunked(body, (7, 1, len(body) - 8))
                sends = [head + framed[:5], framed[5:20], framed[20:]]
            else:
                head = _post_head(key, H2C_OFFER, f"Content-Length: {len(body)}\r\n".encode())
                sends = [head + body] if how == "one read" else [head, body[:9], body[9:]]
            for piece in sends:
                client.send(piece)
                time.sleep(0.02)  # each its own read on the server
            answer = client.read_answer()
            assert answer.status == 201, answer.body
            assert _payload_of(client, key, str(answer.json()["job_id"])) == payload
    finally:
        client.close()
    assert "Invalid HTTP request" not in server.log()


def test_requests_sent_behind_an_upgrade_offer_are_answered_in_order(
    hostile_server: HostileFactory,
) -> None:
    server = hostile_server()
    key = server.client_key
    first, second = submit_body("first"), submit_body("second")
    client = RawClient(server.port)
    try:
        # One write: a GET that offers h2c, a POST that offers it with a body, a plain POST.
        client.send(
            b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + H2C_OFFER
            + b"\r\n"
            + _post_head(key, H2C_OFFER, f"Content-Length: {len(first)}\r\n".encode())
            + first
            + _post_head(key, b"", f"Content-Length: {len(second)}\r\n".encode())
            + second
        )
        health = client.read_answer()
        assert health.status == 200 and health.json()["status"] == "ok"
        answers = [client.read_answer(), client.read_answer()]
        assert [a.status for a in answers] == [201, 201]
        payloads = [_payload_of(client, key, str(a.json()["job_id"])) for a in answers]
        assert payloads == ["first", "second"]
    finally:
        client.close()


# Each is refused by the parser before anything reaches the app.
MALFORMED = {
    "a method that is not one": b"G@T /health HTTP/1.1\r\nHost: x\r\n\r\n",
    "a space in a header name": b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
    "two Content-Lengths": (
        b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\nContent-Length: 3\r\n\r\n"
    ),
    "Content-Length with Transfer-Encoding": (
        b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    ),
    "a byte above ASCII in the path": b"GET /jobs/\xff HTTP/1.1\r\nHost: x\r\n\r\n",
    "a TLS ClientHello": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(32),
    "the HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "a bad chunk size": (
        b"POST /jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    ),
    "a bad chunk size in a declined Upgrade offer's body": (
        b"POST /jobs HTTP/1.1\r\nHost: x\r\n"
        + H2C_OFFER
        + b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"pay\r\nzz\r\n'
    ),
}


def test_bytes_that_are_not_http_get_a_json_400_and_a_counted_log_line(
    hostile_server: HostileFactory,
) -> None:
    server = hostile_server()
    for name, request in MALFORMED.items():
        client = RawClient(server.port)
        client.send(request)
        answer = client.read_answer()
        assert answer.status == 400, name
        assert answer.headers["content-type"] == "application/json", name
        body = answer.json()
        assert body["code"] == "invalid_http", name
        assert str(body["error"]).startswith("the request is not valid HTTP/1.1"), name
        assert answer.closed and client.closed_by_server(within=2.0), name
        client.close()
    # A flood of them costs the log one line per ten seconds, with the count, not a line each.
    for _ in range(300):
        client = RawClient(server.port)
        client.send(MALFORMED["a method that is not one"])
        assert client.read_answer().status == 400
        client.close()
    client = RawClient(server.port)
    stats = client.request("GET", "/stats", key=server.client_key)
    assert stats.status == 200 and stats.json()["total"] == 0  # nothing reached the log
    assert client.request("POST", "/jobs", key=server.client_key, body=submit_body()).status == 201
    client.close()
    log = server.log()
    assert "Invalid HTTP request received" not in log
    lines = [line for line in log.splitlines() if "connections not HTTP" in line]
    assert 1 <= len(lines) <= 2, lines
    assert "since the last such line (Invalid method encountered: 400)" in lines[0], lines


def test_a_connect_request_is_told_this_is_not_a_proxy(hostile_server: HostileFactory) -> None:
    # A client with this server configured as its HTTP proxy tunnels HTTPS with CONNECT; the
    # answer said "User callback error: HttpParserInvalidURLError" (uvicorn cannot parse a
    # host:port target).
    server = hostile_server()
    client = RawClient(server.port)
    client.send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    answer = client.read_answer()
    assert answer.status == 400
    assert answer.json() == {
        "error": "CONNECT is not served: this server is not a proxy",
        "code": "invalid_http",
    }
    assert answer.closed and client.closed_by_server(within=2.0)
    client.close()


def test_the_openapi_document_says_any_request_may_get_invalid_http(
    hostile_server: HostileFactory,
) -> None:
    server = hostile_server()
    client = RawClient(server.port)
    document: dict = client.request("GET", "/openapi.json").json()
    client.close()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert {"400", "431"} <= set(operation["responses"]), (method, path)
    assert "invalid_http" in document["components"]["responses"]["E400"]["description"]
