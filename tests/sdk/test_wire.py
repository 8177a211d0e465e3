"""The clients' HTTP/1.1 pools, answer reading through httptools, against small asyncio servers
on loopback that answer exactly the bytes each test scripts: Content-Length, chunked with
extensions and trailers, `Connection: close`, HTTP/1.0, bodiless and interim answers, idle
connections the server closed (one resend, only on a reused connection), silence, and malformed
answers (a TransportFailure, never a hang or a crash); and streamed answers (the /events
transport): the body read piece by piece as it arrives, the connection held until the body ends
or the stream is closed, and kept alive only when it ended. Each of these runs against both
pools, the blocking one from a worker thread so the scripted server keeps answering on the
test's loop; more share the blocking pool between threads."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from jq_tool.sdk.wire import (
    AsyncHttp11Pool,
    AsyncStreamedAnswer,
    SyncHttp11Pool,
    SyncStreamedAnswer,
    TransportFailure,
)

# What a server does with one request on one connection: the request bytes, the connection's
# 0-based number and the request's 0-based number on that connection.
Reply = Callable[[bytes, int, int, asyncio.StreamWriter], Awaitable[bool]]


class ScriptedServer:
    """A loopback server: reads whole requests and lets `reply` answer; stops reading a
    connection once `reply` returns False (it closed it, or wants it left silent)."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.connections
        self.connections += 1
        try:
            for index in range(1000):
                try:
                    request = await read_request(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                self.requests.append(request)
                if not await self.reply(request, number, index, writer):
                    return
        finally:
            writer.close()

    def close(self) -> None:
        assert self.server is not None
        self.server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


def answering(*answers: bytes, close: bool = False) -> Reply:
    """Reply with the given raw answers in turn (the last one repeats); close after each
    answer if `close`."""

    sent = 0

    async def reply(request: bytes, conn: int, index: int, writer: asyncio.StreamWriter) -> bool:
        nonlocal sent
        writer.write(answers[min(sent, len(answers) - 1)])
        sent += 1
        await writer.drain()
        return not close

    return reply


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Reply], Awaitable[ScriptedServer]]]:
    servers: list[ScriptedServer] = []

    async def start(reply: Reply) -> ScriptedServer:
        server = ScriptedServer(reply)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


Start = Callable[[Reply], Awaitable[ScriptedServer]]


class ThreadedStream:
    """A SyncStreamedAnswer behind AsyncStreamedAnswer's awaitable surface."""

    def __init__(self, sync: SyncStreamedAnswer) -> None:
        self.sync = sync
        self.status = sync.status

    @property
    def ended(self) -> bool:
        return self.sync.ended

    async def read(self, timeout: float) -> bytes | None:
        return await asyncio.to_thread(self.sync.read, timeout)

    async def read_all(self, timeout: float) -> bytes:
        return await asyncio.to_thread(self.sync.read_all, timeout)

    def close(self) -> None:
        self.sync.close()


class ThreadedPool:
    """A SyncHttp11Pool behind AsyncHttp11Pool's awaitable surface: each request runs in a
    thread."""

    def __init__(self, url: str, headers: dict[str, str], *, max_connections: int = 100) -> None:
        self.sync = SyncHttp11Pool(url, headers, max_connections=max_connections)

    @property
    def _idle(self) -> list[socket.socket]:
        return self.sync._idle

    async def request(self, method: str, path: str, **options: Any) -> tuple[int, bytes]:
        return await asyncio.to_thread(self.sync.request, method, path, **options)

    async def stream(self, method: str, path: str, **options: Any) -> ThreadedStream:
        return ThreadedStream(await asyncio.to_thread(self.sync.stream, method, path, **options))

    async def aclose(self) -> None:
        self.sync.close()


MakePool = type[AsyncHttp11Pool] | type[ThreadedPool]
Stream = AsyncStreamedAnswer | ThreadedStream


@pytest.fixture(params=[AsyncHttp11Pool, ThreadedPool], ids=["async", "sync"])
def make_pool(request: pytest.FixtureRequest) -> MakePool:
    pool: MakePool = request.param
    return pool


async def test_content_length_answers_reuse_one_connection(
    scripted: Start, make_pool: MakePool
) -> None:
    server = await scripted(answering(b'HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{"a":1}'))
    pool = make_pool(server.url + "/base/", {"Authorization": "Bearer secret-k"})
    try:
        for _ in range(3):
            assert await pool.request("POST", "/jobs", body=b'{"x":2}') == (200, b'{"a":1}')
        assert await pool.request("GET", "/jobs", params={"state": "READY", "limit": 5}) == (
            200,
            b'{"a":1}',
        )
    finally:
        await pool.aclose()
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /base/jobs HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nAuthorization: Bearer secret-k\r\n" in first
    assert b"\r\nContent-Length: 7\r\n" in first and first.endswith(b'\r\n\r\n{"x":2}')
    assert server.requests[3].startswith(b"GET /base/jobs?state=READY&limit=5 HTTP/1.1\r\n")


async def test_a_base_path_and_the_key_on_connections_the_server_closes(
    scripted: Start, make_pool: MakePool
) -> None:
    # Answers as if keep-alive, then closes: like a server's idle timeout firing.
    server = await scripted(
        answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", close=True)
    )
    pool = make_pool(server.url + "/base", {"Authorization": "Bearer k"})
    try:
        for _ in range(3):
            assert await pool.request("POST", "/jobs", body=b'{"a":1}') == (200, b"ok")
            await asyncio.sleep(0.05)
    finally:
        await pool.aclose()
    assert server.connections == 3
    first = server.requests[0]
    assert first.startswith(b"POST /base/jobs HTTP/1.1\r\n")
    assert b"Authorization: Bearer k\r\n" in first and first.endswith(b'{"a":1}')


async def test_chunked_answer_with_an_extension_and_query_params(
    scripted: Start, make_pool: MakePool
) -> None:
    server = await scripted(
        answering(
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'3\r\n{"a\r\n4;ext=1\r\n":1}\r\n0\r\n\r\n'
        )
    )
    pool = make_pool(server.url, {})
    try:
        for _ in range(2):
            answer = await pool.request("GET", "/jobs", params={"state": "READY", "limit": 5})
            assert answer == (201, b'{"a":1}')
        targets = [request.split(b"\r\n")[0] for request in server.requests]
        assert targets == [b"GET /jobs?state=READY&limit=5 HTTP/1.1"] * 2
        assert len(pool._idle) == 1  # one connection, reused
    finally:
        await pool.aclose()


async def test_chunked_with_extensions_and_trailers_fed_byte_by_byte(
    scripted: Start, make_pool: MakePool
) -> None:
    answer = (
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
        b"3;name=value\r\nabc\r\n"
        b'A;quoted="x y"\r\n0123456789\r\n'
        b"0;last\r\nX-Checksum: 42\r\nX-More: yes\r\n\r\n"
    )

    async def dribble(request: bytes, conn: int, index: int, writer: asyncio.StreamWriter) -> bool:
        for byte in range(len(answer)):
            writer.write(answer[byte : byte + 1])
            await writer.drain()
        return True

    server = await scripted(dribble)
    pool = make_pool(server.url, {})
    try:
        for _ in range(2):
            assert await pool.request("GET", "/x") == (201, b"abc0123456789")
        assert server.connections == 1 and len(pool._idle) == 1
    finally:
        await pool.aclose()


async def test_connection_close_is_honoured(scripted: Start, make_pool: MakePool) -> None:
    # The server keeps the socket open: only the header says the connection is done.
    server = await scripted(
        answering(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
    )
    pool = make_pool(server.url, {})
    try:
        assert await pool.request("GET", "/a") == (200, b"ok")
        assert pool._idle == []
        assert await pool.request("GET", "/b") == (200, b"ok")
    finally:
        await pool.aclose()
    assert server.connections == 2


async def test_http10_answer_without_length_is_read_to_eof(
    scripted: Start, make_pool: MakePool
) -> None:
    server = await scripted(
        answering(b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nall of it", close=True)
    )
    pool = make_pool(server.url, {})
    try:
        assert await pool.request("GET", "/a") == (200, b"all of it")
        assert pool._idle == []
        assert await pool.request("GET", "/b") == (200, b"all of it")
    finally:
        await pool.aclose()
    assert server.connections == 2


async def test_http10_with_length_is_not_kept(scripted: Start, make_pool: MakePool) -> None:
    server = await scripted(answering(b"HTTP/1.0 202 Accepted\r\nContent-Length: 3\r\n\r\nyes"))
    pool = make_pool(server.url, {})
    try:
        assert await pool.request("POST", "/a") == (202, b"yes")
        assert pool._idle == []
    finally:
        await pool.aclose()


async def test_http11_without_length_is_read_to_eof(scripted: Start, make_pool: MakePool) -> None:
    server = await scripted(answering(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", close=True))
    pool = make_pool(server.url, {})
    try:
        assert await pool.request("GET", "/a") == (200, b"until the end")
        assert pool._idle == []
    finally:
        await pool.aclose()


async def test_bodiless_and_interim_answers_keep_the_connection(
    scripted: Start, make_pool: MakePool
) -> None:
    server = await scripted(
        answering(
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext",
        )
    )
    pool = make_pool(server.url, {})
    try:
        assert await pool.request("DELETE", "/a") == (204, b"")
        assert await pool.request("GET", "/b") == (304, b"")
        assert await pool.request("GET", "/c") == (200, b"final")
        assert await pool.request("GET", "/d") == (200, b"next")
    finally:
        await pool.aclose()
    assert server.connections == 1


async def test_a_connection_closed_while_idle_is_resent_once(
    scripted: Start, make_pool: MakePool
) -> None:
    # Claims keep-alive, then closes after each answer: like a server's idle timeout firing.
    server = await scripted(
        answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", close=True)
    )
    pool = make_pool(server.url, {})
    try:
        assert await pool.request("POST", "/jobs", body=b"{}") == (200, b"ok")
        await asyncio.sleep(0.05)  # let the close arrive, so the next request finds it stale
        assert await pool.request("POST", "/jobs", body=b"{}") == (200, b"ok")
    finally:
        await pool.aclose()
    assert server.connections == 2
    assert len(server.requests) == 2  # the stale connection never read the request


async def test_the_resend_happens_only_once(scripted: Start, make_pool: MakePool) -> None:
    # Each connection answers its first request and drops every later one without a byte:
    # like a server that died while reading.
    async def then_drop(
        request: bytes, conn: int, index: int, writer: asyncio.StreamWriter
    ) -> bool:
        if index == 0 and b" /warm " in request:
            await asyncio.sleep(0.05)  # keep both warm-up requests on their own connections
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            return True
        return False

    server = await scripted(then_drop)
    pool = make_pool(server.url, {})
    try:
        warm = await asyncio.gather(pool.request("GET", "/warm"), pool.request("GET", "/warm"))
        assert warm == [(200, b"ok")] * 2 and len(pool._idle) == 2
        with pytest.raises(TransportFailure, match="connection closed"):
            await pool.request("POST", "/jobs", body=b"{}")
    finally:
        await pool.aclose()
    # The submit went on one reused connection, then once more on a fresh one, never on the
    # second idle connection nor a third time.
    assert [r.split(b" ")[1] for r in server.requests] == [b"/warm", b"/warm", b"/jobs", b"/jobs"]
    assert server.connections == 3


async def test_no_resend_on_a_fresh_connection(scripted: Start, make_pool: MakePool) -> None:
    async def drop(request: bytes, conn: int, index: int, writer: asyncio.StreamWriter) -> bool:
        return False

    server = await scripted(drop)
    pool = make_pool(server.url, {})
    try:
        with pytest.raises(TransportFailure, match="connection closed"):
            await pool.request("POST", "/jobs", body=b"{}")
    finally:
        await pool.aclose()
    assert len(server.requests) == 1


async def test_no_resend_once_part_of_the_answer_arrived(
    scripted: Start, make_pool: MakePool
) -> None:
    async def half(request: bytes, conn: int, index: int, writer: asyncio.StreamWriter) -> bool:
        if index == 0:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Len")
        await writer.drain()
        return index == 0

    server = await scripted(half)
    pool = make_pool(server.url, {})
    try:
        assert await pool.request("POST", "/a", body=b"{}") == (200, b"ok")
        with pytest.raises(TransportFailure, match="closed mid-answer"):
            await pool.request("POST", "/b", body=b"{}")
    finally:
        await pool.aclose()
    assert len(server.requests) == 2


async def test_silence_is_a_timeout(scripted: Start, make_pool: MakePool) -> None:
    async def silent(request: bytes, conn: int, index: int, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(30)
        return False

    server = await scripted(silent)
    pool = make_pool(server.url, {})
    try:
        with pytest.raises(TransportFailure, match="TimeoutError"):
            await pool.request("GET", "/stats", timeout=0.2)
        assert pool._idle == []
    finally:
        await pool.aclose()


async def test_the_timeout_bounds_the_whole_exchange(scripted: Start, make_pool: MakePool) -> None:
    # Every byte comes well within the timeout; the whole answer does not.
    async def dribble(request: bytes, conn: int, index: int, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.05)
        return False

    server = await scripted(dribble)
    pool = make_pool(server.url, {})
    started = time.monotonic()
    try:
        with pytest.raises(TransportFailure, match="TimeoutError"):
            await pool.request("GET", "/slow", timeout=0.3)
    finally:
        await pool.aclose()
    assert time.monotonic() - started < 2


async def test_a_refused_connection_is_a_transport_failure(
    scripted: Start, make_pool: MakePool
) -> None:
    server = await scripted(answering(b""))
    url = server.url
    server.close()
    assert server.server is not None
    await server.server.wait_closed()
    with pytest.raises(TransportFailure, match="cannot connect"):
        await make_pool(url, {}).request("GET", "/", timeout=2)


MALFORMED = {
    "not http": b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    "bad status": b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
    "bad length": b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
    "two lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "bad chunk size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
    "chunk too short": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab\r\n0\r\n\r\n",
    "header without colon": b"HTTP/1.1 200 OK\r\nnonsense\r\nContent-Length: 0\r\n\r\n",
    "unasked upgrade": (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"
    ),
}


@pytest.mark.parametrize("answer", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_answer_is_a_transport_failure(
    scripted: Start, make_pool: MakePool, answer: bytes
) -> None:
    # The server leaves the socket open: the failure must come from parsing, not from EOF.
    async def reply(request: bytes, conn: int, index: int, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer if conn == 0 else b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        return True

    server = await scripted(reply)
    pool = make_pool(server.url, {})
    try:
        with pytest.raises(TransportFailure, match="malformed answer|closed mid-answer"):
            await pool.request("GET", "/a", timeout=5)
        assert pool._idle == []
        assert await pool.request("GET", "/b") == (200, b"ok")  # the pool is still usable
    finally:
        await pool.aclose()


async def test_truncated_answers_are_transport_failures(
    scripted: Start, make_pool: MakePool
) -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Le",
    ]
    server = await scripted(answering(*answers, close=True))
    pool = make_pool(server.url, {})
    try:
        for _ in answers:
            with pytest.raises(TransportFailure, match="closed mid-answer"):
                await pool.request("GET", "/a")
    finally:
        await pool.aclose()


async def test_an_endless_head_is_refused(scripted: Start, make_pool: MakePool) -> None:
    async def endless(request: bytes, conn: int, index: int, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        line = b"X-Filler: " + b"f" * 1000 + b"\r\n"
        for _ in range(1200):
            writer.write(line)
            await writer.drain()
        return True

    server = await scripted(endless)
    pool = make_pool(server.url, {})
    try:
        with pytest.raises(TransportFailure, match="head longer than"):
            await pool.request("GET", "/a")
    finally:
        await pool.aclose()


async def test_bytes_after_the_answer_stop_reuse(scripted: Start, make_pool: MakePool) -> None:
    server = await scripted(
        answering(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray"
        )
    )
    pool = make_pool(server.url, {})
    try:
        assert await pool.request("GET", "/a") == (200, b"ok")
        assert pool._idle == []
        assert await pool.request("GET", "/b") == (200, b"ok")
    finally:
        await pool.aclose()
    assert server.connections == 2


async def test_threads_share_the_blocking_pool(scripted: Start) -> None:
    async def echo(request: bytes, conn: int, index: int, writer: asyncio.StreamWriter) -> bool:
        target = request.split(b" ")[1]
        await asyncio.sleep(0.001)  # let requests from different threads overlap
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(target), target))
        await writer.drain()
        return True

    server = await scripted(echo)
    pool = SyncHttp11Pool(server.url, {}, max_connections=3)

    def requests(thread: int) -> list[tuple[bytes, tuple[int, bytes]]]:
        sent = []
        for number in range(50):
            path = f"/t{thread}/{number}"
            sent.append((path.encode(), pool.request("POST", path, body=b"{}", timeout=10)))
        return sent

    loop = asyncio.get_running_loop()
    try:
        with ThreadPoolExecutor(max_workers=8) as threads:
            results = await asyncio.gather(
                *(loop.run_in_executor(threads, requests, thread) for thread in range(8))
            )
        assert len(pool._idle) <= 3
    finally:
        pool.close()
    assert pool._idle == []
    answers = [answer for sent in results for answer in sent]
    assert len(answers) == 400
    assert all(answer == (200, path) for path, answer in answers)
    assert len(server.requests) == 400 and server.connections <= 3


async def test_waiting_for_a_free_connection_counts_against_the_timeout(scripted: Start) -> None:
    async def slow(request: bytes, conn: int, index: int, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(1)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        return True

    server = await scripted(slow)
    pool = SyncHttp11Pool(server.url, {}, max_connections=1)
    try:
        busy = asyncio.create_task(asyncio.to_thread(pool.request, "GET", "/slow"))
        await asyncio.sleep(0.2)  # the only connection is now taken
        with pytest.raises(TransportFailure, match="TimeoutError: no free connection"):
            await asyncio.to_thread(pool.request, "GET", "/queued", timeout=0.3)
        assert await busy == (200, b"ok")
    finally:
        pool.close()
    assert len(server.requests) == 1


def test_header_values_with_line_breaks_are_refused_without_showing_them(
    make_pool: MakePool,
) -> None:
    with pytest.raises(ValueError, match="Authorization") as refused:
        make_pool("http://127.0.0.1:1", {"Authorization": "Bearer k\r\nX-Evil: 1"})
    assert "Bearer" not in str(refused.value)
    with pytest.raises(ValueError, match="Authorization") as refused:
        make_pool("http://127.0.0.1:1", {"Authorization": "Bearer kéy"})
    assert "Bearer" not in str(refused.value)
    with pytest.raises(ValueError, match="header name"):
        make_pool("http://127.0.0.1:1", {"X Bad": "v"})
    with pytest.raises(ValueError, match="not an http"):
        make_pool("ftp://example.com", {})


async def test_bad_requests_are_refused_before_sending(make_pool: MakePool) -> None:
    pool = make_pool("http://127.0.0.1:1", {})
    with pytest.raises(ValueError, match="method"):
        await pool.request("HEAD", "/jobs")
    with pytest.raises(ValueError, match="path"):
        await pool.request("GET", "/jobs/a b")
    with pytest.raises(ValueError, match="path"):
        await pool.request("GET", "/jobs/a\r\nX: y")
    with pytest.raises(ValueError, match="path"):
        await pool.request("GET", "/jobs/é")


# --- streamed answers ------------------------------------------------------------------------

EVENT_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def read_to_end(stream: Stream) -> bytes:
    body = b""
    while part := await stream.read(5):
        body += part
    assert part == b"" and stream.ended
    return body


async def test_a_streamed_body_is_read_as_it_arrives(scripted: Start, make_pool: MakePool) -> None:
    release = asyncio.Event()

    async def reply(request: bytes, conn: int, index: int, writer: asyncio.StreamWriter) -> bool:
        if b" /events " not in request:
            writer.write(OK)
        else:
            writer.write(EVENT_STREAM_HEAD + b"5\r\nfirst\r\n")
            await writer.drain()
            await release.wait()
            for byte in b"6\r\nsecond\r\n0\r\n\r\n":  # the rest dribbles in
                writer.write(bytes([byte]))
                await writer.drain()
        await writer.drain()
        return True

    server = await scripted(reply)
    pool = make_pool(server.url, {})
    try:
        stream = await pool.stream("GET", "/events", timeout=5)
        assert stream.status == 200
        assert await stream.read(5) == b"first"
        assert await stream.read(0.2) is None  # quiet: the stream stays open
        assert pool._idle == []
        release.set()
        assert await read_to_end(stream) == b"second"
        stream.close()
        stream.close()  # twice is harmless
        assert len(pool._idle) == 1  # read to its end: the connection is kept
        assert await pool.request("GET", "/after") == (200, b"ok")
    finally:
        await pool.aclose()
    assert server.connections == 1


async def test_a_stream_closed_early_never_goes_back_to_the_pool(
    scripted: Start, make_pool: MakePool
) -> None:
    async def reply(request: bytes, conn: int, index: int, writer: asyncio.StreamWriter) -> bool:
        if b" /events " in request:
            writer.write(EVENT_STREAM_HEAD + b"5\r\nfirst\r\n")
            await writer.drain()
            await asyncio.sleep(30)  # never ends
            return False
        writer.write(OK)
        await writer.drain()
        return True

    server = await scripted(reply)
    pool = make_pool(server.url, {})
    try:
        stream = await pool.stream("GET", "/events")
        assert await stream.read(5) == b"first"
        stream.close()
        assert pool._idle == []
        with pytest.raises(TransportFailure, match="closed"):
            await stream.read(1)
        assert await pool.request("GET", "/after") == (200, b"ok")
    finally:
        await pool.aclose()
    assert server.connections == 2


async def test_a_stream_holds_its_connection_slot(scripted: Start, make_pool: MakePool) -> None:
    async def reply(request: bytes, conn: int, index: int, writer: asyncio.StreamWriter) -> bool:
        writer.write(EVENT_STREAM_HEAD if b" /events " in request else OK)
        await writer.drain()
        return True

    server = await scripted(reply)
    pool = make_pool(server.url, {}, max_connections=1)
    try:
        stream = await pool.stream("GET", "/events")
        # The one slot is the stream's: the async pool waits for it, the blocking one gives up
        # after its timeout.
        with pytest.raises((TransportFailure, TimeoutError)):
            await asyncio.wait_for(pool.request("GET", "/queued", timeout=0.3), 1)
        stream.close()
        assert await pool.request("GET", "/after", timeout=5) == (200, b"ok")
    finally:
        await pool.aclose()
    assert [request.split(b" ")[1] for request in server.requests] == [b"/events", b"/after"]


async def test_a_refused_stream_is_read_whole_and_kept(
    scripted: Start, make_pool: MakePool
) -> None:
    refusal = b'{"error":"no key","code":"unauthorized"}'
    server = await scripted(
        answering(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: %d\r\n\r\n%s" % (len(refusal), refusal)
        )  # fmt: skip
    )
    pool = make_pool(server.url, {})
    try:
        stream = await pool.stream("GET", "/events")
        assert stream.status == 401
        assert await stream.read_all(5) == refusal
        assert len(pool._idle) == 1
    finally:
        await pool.aclose()


async def test_a_stream_cut_mid_body_is_a_transport_failure(
    scripted: Start, make_pool: MakePool
) -> None:
    server = await scripted(answering(EVENT_STREAM_HEAD + b"5\r\nfirst\r\n", close=True))
    pool = make_pool(server.url, {})
    try:
        stream = await pool.stream("GET", "/events")
        assert await stream.read(5) == b"first"
        with pytest.raises(TransportFailure, match="closed mid-answer"):
            await stream.read(5)
        assert pool._idle == []
    finally:
        await pool.aclose()


async def test_a_stream_without_length_ends_with_the_connection(
    scripted: Start, make_pool: MakePool
) -> None:
    server = await scripted(answering(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", close=True))
    pool = make_pool(server.url, {})
    try:
        stream = await pool.stream("GET", "/events")
        assert await read_to_end(stream) == b"until the end"
        stream.close()
        assert pool._idle == []
    finally:
        await pool.aclose()
