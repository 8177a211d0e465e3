"""The async client's HTTP/1.1 pool against small real socket servers: keep-alive reuse, a
connection the server closed while idle (the request goes again on a fresh one), chunked
answers, and a server that answers nothing (a TransportFailure, never a hang)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from jq_tool.sdk.wire import Http11Pool, TransportFailure

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


async def test_keep_alive_and_a_connection_closed_while_idle() -> None:
    connections = 0
    seen: list[bytes] = []

    async def one_answer_per_connection(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Answers as if keep-alive, then closes: like a server's idle timeout firing.
        nonlocal connections
        connections += 1
        seen.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server, url = await serve(one_answer_per_connection)
    pool = Http11Pool(url + "/base", {"Authorization": "Bearer k"})
    try:
        for _ in range(3):
            assert await pool.request("POST", "/jobs", body=b'{"a":1}') == (200, b"ok")
            await asyncio.sleep(0.05)
        assert connections == 3
        first = seen[0]
        assert first.startswith(b"POST /base/jobs HTTP/1.1\r\n")
        assert b"Authorization: Bearer k\r\n" in first and first.endswith(b'{"a":1}')
    finally:
        await pool.aclose()
        server.close()


async def test_chunked_answer_and_query_params() -> None:
    targets: list[bytes] = []

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                request = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            targets.append(request.split(b"\r\n")[0])
            writer.write(
                b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                b'3\r\n{"a\r\n4;ext=1\r\n":1}\r\n0\r\n\r\n'
            )
            await writer.drain()

    server, url = await serve(chunked)
    pool = Http11Pool(url, {})
    try:
        for _ in range(2):
            answer = await pool.request("GET", "/jobs", params={"state": "READY", "limit": 5})
            assert answer == (201, b'{"a":1}')
        assert targets == [b"GET /jobs?state=READY&limit=5 HTTP/1.1"] * 2
        assert len(pool._idle) == 1  # one connection, reused
    finally:
        await pool.aclose()
        server.close()


async def test_silence_and_refusal_are_transport_failures() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    server, url = await serve(silent)
    pool = Http11Pool(url, {})
    try:
        with pytest.raises(TransportFailure):
            await pool.request("GET", "/stats", timeout=0.2)
    finally:
        await pool.aclose()
        server.close()
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(TransportFailure):
        await Http11Pool(f"http://127.0.0.1:{port}", {}).request("GET", "/", timeout=1)
    with pytest.raises(ValueError):
        Http11Pool("ftp://example.com", {})
