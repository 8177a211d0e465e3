"""The SDK's one transport: HTTP/1.1 keep-alive connection pools that carry every call of a
client, the `/events` stream included. `AsyncHttp11Pool` (asyncio streams, one event loop) serves
`AsyncClient` and the workers; `SyncHttp11Pool` (blocking sockets, shared by the caller's
threads) serves `Client`. `https://` URLs are spoken over TLS with the context sdk/tls.py makes
of the client's `verify=`.

Why not httpx: measured on this project's machines, one httpx.AsyncClient request costs ~10x the
CPU of the same request over a plain asyncio stream (anyio and httpcore's pool bookkeeping), and
a worker process spends nearly all of its time making requests; a sync httpx.Client request cost
0.3-0.6 ms of CPU in pure Python (httpcore, h11), ~6x the blocking pool's, and threads sharing a
process queued for the GIL. So the pools are ours, but reading an answer is not:
`httptools.HttpResponseParser` (llhttp, the C parser uvicorn uses) parses status line, headers,
Content-Length and chunked bodies (extensions, trailers), skips interim 1xx answers, and says
whether the connection may be kept. We only note whether the body is framed, so an answer
without a length is read to EOF. (h11 reads the same answers correctly but cost ~30x the CPU per
answer here.) Requests are our own fixed, well-formed output: an f-string, with header values
checked once for CR/LF.

Two ways to ask: `request()` reads the whole answer within one timeout; `stream()` returns once
the answer's head is in, and its body is then read piece by piece as it arrives (`read(timeout)`
waits at most that long for the next bytes). A streamed answer holds its connection, and its
place among `max_connections`, until the body has ended or the caller closes it; only a body
read to its end leaves a connection fit for the keep-alive pool.

A request that fails on a reused connection before any byte of the answer arrived is sent once
more on a fresh connection: the server had closed that idle connection and never read the
request. Every other failure is a `TransportFailure`, which the clients turn into
`ServerUnavailable`: one before the request left (refused, no free connection) as it is, one
after (reset, timed out, truncated or malformed answer) as an `AnswerLost`, which the clients
turn into `OutcomeUnknown` for a write, since the server may have acted on it. A server
certificate that TLS verification refused is a `CertificateRefused`, which no retry can help.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import socket
import ssl
import struct
import time
from urllib.parse import urlencode, urlsplit

import httptools

from jq_tool.sdk.tls import Verify, tls_context

_HEAD_LIMIT = 1 << 20  # bytes of status line + headers we accept
_READ_SIZE = 1 << 16
# HEAD and CONNECT answers carry a length but no body; llhttp cannot be told which request an
# answer belongs to, and the jq API uses neither.
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_NOT_IN_NAME = frozenset(":\r\n\0 \t")
_NOT_IN_VALUE = frozenset("\r\n\0")


class TransportFailure(Exception):
    """No answer: the connection could not be made, broke, or the answer timed out."""


class AnswerLost(TransportFailure):
    """The request was sent, or may have been, and no complete answer came (reset, timed out,
    cut short): the server may have acted on it."""


class CertificateRefused(TransportFailure):
    """TLS verification refused the server's certificate (or its host name)."""


class BaseHttp11Pool:
    """Everything but I/O: the URL, TLS and headers, checked once, and the bytes of each
    request."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        *,
        max_connections: int = 100,
        verify: Verify = True,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.ssl: ssl.SSLContext | None = tls_context(verify) if parts.scheme == "https" else None
        authority = parts.netloc.rpartition("@")[2]
        fixed = {"Host": authority, "Connection": "keep-alive", **headers}
        for name, value in fixed.items():
            # The value is never shown: it may be an API key.
            if not name or _NOT_IN_NAME.intersection(name):
                raise ValueError(f"invalid HTTP header name: {name!r}")
            if _NOT_IN_VALUE.intersection(value) or not value.isascii():
                raise ValueError(f"HTTP header {name!r}: value must be ASCII without CR, LF, NUL")
        self._fixed_head = "".join(f"{name}: {value}\r\n" for name, value in fixed.items())
        self.max_connections = max_connections

    def _request_bytes(
        self, method: str, path: str, body: bytes | None, params: dict[str, object] | None
    ) -> bytes:
        if method not in _METHODS:
            raise ValueError(f"unsupported HTTP method: {method!r}")
        target = self.prefix + path
        if not (target.isascii() and target.isprintable()) or " " in target:
            raise ValueError(f"request path must be printable ASCII without spaces: {path!r}")
        if params:
            target += "?" + urlencode({k: str(v) for k, v in params.items()})
        head = f"{method} {target} HTTP/1.1\r\n{self._fixed_head}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        elif method in ("POST", "PUT", "PATCH"):
            head += "Content-Length: 0\r\n"
        return head.encode("latin-1") + b"\r\n" + (body or b"")

    @staticmethod
    def _resend(what: str, exc: BaseException, reused: bool) -> bool:
        """After an exchange failed (its connection closed): True to send the request once more
        on a fresh connection, which is right only when a reused connection turned out stale;
        raises the TransportFailure for any other failure; False for what is not a failure of
        the exchange (a cancellation), to be raised as it is."""
        if isinstance(exc, _StaleConnection):
            if reused:
                return True
            raise AnswerLost(f"{what}: connection closed") from None
        if isinstance(exc, _EXCHANGE_FAILURES):
            raise _failure(what, exc) from exc
        return False

    def _connect_failure(self, exc: BaseException) -> TransportFailure:
        where = f"cannot connect to {self.host}:{self.port}: {exc or 'timed out'}"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return CertificateRefused(where)
        return TransportFailure(where)

    def _put_back(self, connection: object, reusable: bool) -> None:
        raise NotImplementedError

    def _free_slot(self) -> None:
        raise NotImplementedError


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class AsyncHttp11Pool(BaseHttp11Pool):
    """The pool over asyncio streams, for one event loop."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        *,
        max_connections: int = 100,
        verify: Verify = True,
    ) -> None:
        super().__init__(url, headers, max_connections=max_connections, verify=verify)
        self._idle: list[Connection] = []
        self._semaphore: asyncio.Semaphore | None = None

    @property
    def _slots(self) -> asyncio.Semaphore:
        # Made on first use: it belongs to the loop the pool is used on.
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.max_connections)
        return self._semaphore

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        params: dict[str, object] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, bytes]:
        """Send one request; (status, body) of the answer."""
        status, content, _ = await self.exchange(
            method, path, body=body, params=params, timeout=timeout
        )
        return status, content

    async def exchange(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        params: dict[str, object] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, bytes, bytes | None]:
        """`request`, plus the answer's Jq-Placement header (None without one)."""
        message = self._request_bytes(method, path, body, params)
        async with self._slots:
            connection, answer = await self._send(method, path, message, timeout, whole=True)
            self._put_back(connection, answer.reusable)
            return answer.status, answer.take_body(), answer.placement

    async def stream(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, object] | None = None,
        timeout: float = 10.0,
    ) -> AsyncStreamedAnswer:
        """Send one request and return once the answer's head is in (within `timeout`); read
        the body from the streamed answer, and close it."""
        message = self._request_bytes(method, path, None, params)
        await self._slots.acquire()
        try:
            connection, answer = await self._send(method, path, message, timeout, whole=False)
        except BaseException:
            self._slots.release()
            raise
        return AsyncStreamedAnswer(self, connection, answer, f"{method} {path}")

    async def _send(
        self, method: str, path: str, message: bytes, timeout: float, *, whole: bool
    ) -> tuple[Connection, _Answer]:
        resent = False
        while True:
            # The resend goes on a fresh connection: other idle ones may be stale too.
            reused = bool(self._idle) and not resent
            connection = self._idle.pop() if reused else await self._connect(timeout)
            try:
                async with asyncio.timeout(timeout):
                    return connection, await _exchange(connection, message, whole=whole)
            except BaseException as exc:
                self._close(connection)  # even when cancelled mid-exchange: it is unusable
                if not self._resend(f"{method} {path}", exc, reused):
                    raise
                resent = True

    async def _connect(self, timeout: float) -> Connection:
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                )
        except (OSError, TimeoutError) as exc:
            raise self._connect_failure(exc) from exc

    @staticmethod
    def _close(connection: Connection) -> None:
        connection[1].close()

    def _put_back(self, connection: object, reusable: bool) -> None:
        assert isinstance(connection, tuple)
        if reusable:
            self._idle.append(connection)
        else:
            self._close(connection)

    def _free_slot(self) -> None:
        self._slots.release()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()
        for _, writer in idle:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class SyncHttp11Pool(BaseHttp11Pool):
    """The pool over blocking sockets, safe to share between threads. `timeout` bounds the whole
    request: waiting for a free connection, connecting, sending and reading the answer (for a
    stream: up to the answer's head)."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        *,
        max_connections: int = 100,
        verify: Verify = True,
    ) -> None:
        super().__init__(url, headers, max_connections=max_connections, verify=verify)
        # Idle connections, most recent last. list.pop() and .append() are atomic under the
        # GIL: threads share the list without a lock.
        self._idle: list[socket.socket] = []
        # One token per connection a request may hold: a C queue, where a BoundedSemaphore
        # (a Condition in Python) cost ~6 µs per request here.
        self._slots: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(max_connections):
            self._slots.put(None)
        # Plain TCP connections in blocking mode with the kernel's send/receive timeout set
        # to this many seconds (see _arm); a socket not here is in Python's timeout mode.
        self._armed: dict[socket.socket, float] = {}

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        params: dict[str, object] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, bytes]:
        """Send one request; (status, body) of the answer."""
        status, content, _ = self.exchange(method, path, body=body, params=params, timeout=timeout)
        return status, content

    def exchange(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        params: dict[str, object] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, bytes, bytes | None]:
        """`request`, plus the answer's Jq-Placement header (None without one)."""
        message = self._request_bytes(method, path, body, params)
        deadline = self._take_slot(method, path, timeout)
        try:
            connection, answer = self._send(method, path, message, deadline, whole=True)
            self._put_back(connection, answer.reusable)
            return answer.status, answer.take_body(), answer.placement
        finally:
            self._slots.put(None)

    def stream(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, object] | None = None,
        timeout: float = 10.0,
    ) -> SyncStreamedAnswer:
        """Send one request and return once the answer's head is in (within `timeout`); read
        the body from the streamed answer, and close it."""
        message = self._request_bytes(method, path, None, params)
        deadline = self._take_slot(method, path, timeout)
        try:
            connection, answer = self._send(method, path, message, deadline, whole=False)
        except BaseException:
            self._slots.put(None)
            raise
        self._armed.pop(connection, None)  # its reads set Python timeouts from now on
        return SyncStreamedAnswer(self, connection, answer, f"{method} {path}")

    def _take_slot(self, method: str, path: str, timeout: float) -> float:
        """Wait for a free connection slot; the deadline of the request."""
        deadline = time.monotonic() + timeout
        try:
            self._slots.get(timeout=timeout)
        except queue.Empty:
            raise TransportFailure(
                f"{method} {path}: TimeoutError: no free connection within {timeout}s"
            ) from None
        return deadline

    def _send(
        self, method: str, path: str, message: bytes, deadline: float, *, whole: bool
    ) -> tuple[socket.socket, _Answer]:
        resent = False
        while True:
            # The resend goes on a fresh connection: other idle ones may be stale too.
            connection = None
            if not resent:
                with contextlib.suppress(IndexError):
                    connection = self._idle.pop()
            reused = connection is not None
            if connection is None:
                connection = self._connect(deadline)
            try:
                if self.ssl is None:
                    self._arm(connection, deadline)
                    answer = _exchange_armed(connection, message, deadline, whole=whole)
                else:
                    answer = _exchange_blocking(connection, message, deadline, whole=whole)
                return connection, answer
            except BaseException as exc:
                self._armed.pop(connection, None)
                connection.close()  # even when interrupted mid-exchange: it is unusable
                if not self._resend(f"{method} {path}", exc, reused):
                    raise
                resent = True

    def _arm(self, connection: socket.socket, deadline: float) -> None:
        """Blocking mode, with the kernel's send and receive timeouts (SO_SNDTIMEO,
        SO_RCVTIMEO) at the time left: a Python socket timeout costs a poll() before every
        send and recv and an ioctl for each settimeout. The timeouts are set again only when
        they are off by more than a tenth of a second (and 1%): most calls of a client ask for
        the same timeout."""
        left = _time_left(deadline)
        armed = self._armed.get(connection)
        if armed is not None and abs(armed - left) <= 0.1 + left / 100:
            return
        if armed is None:
            connection.settimeout(None)
        _set_kernel_timeouts(connection, left)
        self._armed[connection] = left

    def _connect(self, deadline: float) -> socket.socket:
        connection: socket.socket | None = None
        try:
            connection = socket.create_connection((self.host, self.port), _time_left(deadline))
            # Requests are small and each waits for its answer: Nagle would only add latency.
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl is not None:
                connection.settimeout(_time_left(deadline))
                connection = self.ssl.wrap_socket(connection, server_hostname=self.host)
        except OSError as exc:
            if connection is not None:
                connection.close()
            raise self._connect_failure(exc) from exc
        return connection

    def _put_back(self, connection: object, reusable: bool) -> None:
        assert isinstance(connection, socket.socket)
        if reusable:
            self._idle.append(connection)
        else:
            self._armed.pop(connection, None)
            connection.close()

    def _free_slot(self) -> None:
        self._slots.put(None)

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            self._armed.pop(connection, None)
            connection.close()


class BaseStreamedAnswer:
    """An answer whose head is in and whose body is read as it arrives: everything but the
    reads. It holds its connection and pool slot until `close()`, which hands the connection
    back to the pool only when the body was read to its end."""

    def __init__(
        self, pool: BaseHttp11Pool, connection: object, answer: _Answer, what: str
    ) -> None:
        self.status = answer.status
        self._pool = pool
        self._connection = connection
        self._answer = answer
        self._what = what
        self._closed = False

    @property
    def ended(self) -> bool:
        """Whether the whole body has arrived (some of it may still be unread)."""
        return self._answer.complete

    def _ready(self) -> bytes | None:
        """Body bytes already parsed, b"" once the body ended, None when a read must wait."""
        body = self._answer.take_body()
        if body or self._answer.complete:
            return body
        if self._closed:
            raise TransportFailure(f"{self._what}: the stream was closed")
        return None

    def _feed(self, data: bytes) -> None:
        try:
            self._answer.feed(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade, _BrokenAnswer) as exc:
            self.close()
            raise _failure(self._what, exc) from exc

    def _read_failed(self, exc: BaseException) -> TransportFailure:
        self.close()
        return _failure(self._what, exc)

    def __del__(self) -> None:
        # Dropped unclosed (a `break` out of `for event in client.events()`): the slot must
        # come back, or the pool would be one connection smaller for good.
        with contextlib.suppress(Exception):
            self.close()

    def close(self) -> None:
        """Give the connection back (kept alive only if the body was read to its end) and free
        its pool slot. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._pool._put_back(self._connection, self._answer.complete and self._answer.reusable)
        self._pool._free_slot()
        self._answer.release()


class AsyncStreamedAnswer(BaseStreamedAnswer):
    async def read(self, timeout: float) -> bytes | None:
        """The next bytes of the body; b"" once it has ended; None when none arrived within
        `timeout` seconds (the stream stays open). Raises TransportFailure and closes when the
        connection breaks or the answer cannot be read."""
        reader = self._reader
        deadline = time.monotonic() + timeout
        while (ready := self._ready()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                async with asyncio.timeout(left):
                    data = await reader.read(_READ_SIZE)
            except TimeoutError:
                return None
            except OSError as exc:
                raise self._read_failed(exc) from exc
            except BaseException:
                self.close()  # cancelled mid-read: nobody will read the rest
                raise
            self._feed(data)
        return ready

    async def read_all(self, timeout: float) -> bytes:
        """The rest of the body, within `timeout` seconds; then the answer is closed."""
        parts: list[bytes] = []
        deadline = time.monotonic() + timeout
        try:
            while part := await self.read(max(0.0, deadline - time.monotonic())):
                parts.append(part)
            if part is None:
                raise _failure(self._what, TimeoutError("timed out"))
        finally:
            self.close()
        return b"".join(parts)

    @property
    def _reader(self) -> asyncio.StreamReader:
        assert isinstance(self._connection, tuple)
        return self._connection[0]


class SyncStreamedAnswer(BaseStreamedAnswer):
    def read(self, timeout: float) -> bytes | None:
        """The next bytes of the body; b"" once it has ended; None when none arrived within
        `timeout` seconds (the stream stays open). Raises TransportFailure and closes when the
        connection breaks or the answer cannot be read."""
        connection = self._socket
        deadline = time.monotonic() + timeout
        while (ready := self._ready()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                connection.settimeout(left)
                data = connection.recv(_READ_SIZE)
            except TimeoutError:
                return None
            except OSError as exc:
                raise self._read_failed(exc) from exc
            except BaseException:
                self.close()  # interrupted mid-read: nobody will read the rest
                raise
            self._feed(data)
        return ready

    def read_all(self, timeout: float) -> bytes:
        """The rest of the body, within `timeout` seconds; then the answer is closed."""
        parts: list[bytes] = []
        deadline = time.monotonic() + timeout
        try:
            while part := self.read(max(0.0, deadline - time.monotonic())):
                parts.append(part)
            if part is None:
                raise _failure(self._what, TimeoutError("timed out"))
        finally:
            self.close()
        return b"".join(parts)

    @property
    def _socket(self) -> socket.socket:
        assert isinstance(self._connection, socket.socket)
        return self._connection


class _StaleConnection(Exception):
    """The server had closed this idle connection: nothing was read, nothing was done."""


class _BrokenAnswer(Exception):
    """The answer stopped part way (EOF inside the head or a framed body) or its head was
    too long."""


# What a send or the first read raises on a connection the server had already closed.
_NOTHING_READ = (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError)
# Every other way an exchange fails; each is a TransportFailure, see _failure.
_EXCHANGE_FAILURES = (
    httptools.HttpParserError,
    httptools.HttpParserUpgrade,
    _BrokenAnswer,
    OSError,
    TimeoutError,
)


def _failure(what: str, exc: BaseException) -> AnswerLost:
    if isinstance(exc, httptools.HttpParserError | httptools.HttpParserUpgrade):
        return AnswerLost(f"{what}: malformed answer: {exc}")
    if isinstance(exc, _BrokenAnswer):
        return AnswerLost(f"{what}: {exc}")
    return AnswerLost(f"{what}: {type(exc).__name__}: {exc or 'no answer'}")


class _Answer:
    """One answer being read: its bytes go to httptools, whose callbacks land here. Interim 1xx
    answers are dropped: the next message on the stream is the real one."""

    __slots__ = (
        "parser",
        "status",
        "parts",
        "framed",
        "head_done",
        "head_bytes",
        "done",
        "complete",
        "keep",
        "extra",
        "placement",
    )

    def __init__(self) -> None:
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.status = 0
        self.parts: list[bytes] = []
        self.framed = False
        self.head_done = False
        self.head_bytes = 0
        self.done = False
        self.complete = False  # nothing more to read: the body ended, or the stream broke step
        self.keep = False
        self.extra = False
        self.placement: bytes | None = None  # Jq-Placement (sharded mode; sdk/routing.py)

    @property
    def started(self) -> bool:
        """Whether the final answer's head is in (its body may follow)."""
        return self.head_done and self.status >= 200

    @property
    def reusable(self) -> bool:
        """Whether the connection may carry the next request (once the answer is complete)."""
        return self.keep and not self.extra

    def feed(self, data: bytes) -> bool:
        """Parse the next bytes read, b"" once the server closed; True when the answer is
        whole. An answer that cannot be read raises _BrokenAnswer or an httptools error."""
        self.complete = self._parse(data)
        return self.complete

    def _parse(self, data: bytes) -> bool:
        if not data:
            if self.head_done and not self.framed:
                self.keep = False  # no length: the body ends with the connection
                return True
            raise _BrokenAnswer("connection closed mid-answer")
        assert self.parser is not None
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            if not self.done:
                raise
            self.keep = False  # bytes after the answer: the stream is out of step
            return True
        if self.done:
            return True
        if not self.head_done:
            self.head_bytes += len(data)
            if self.head_bytes > _HEAD_LIMIT:
                raise _BrokenAnswer(f"answer head longer than {_HEAD_LIMIT} bytes")
        return False

    def take_body(self) -> bytes:
        """The body bytes parsed since the last call."""
        body = b"".join(self.parts)
        self.parts.clear()
        return body

    def release(self) -> None:
        self.parser = None  # the parser holds the answer: no cycle left for the GC

    def on_message_begin(self) -> None:
        # A second message after the answer: the server sent more than one answer; the stream
        # no longer lines up with our requests.
        self.extra = self.done

    def on_header(self, name: bytes, value: bytes) -> None:
        # To tell an answer read to EOF from a framed one cut short (llhttp does the framing),
        # and to hear where a sharded server says the request's queue lives.
        name = name.lower()
        if name == b"content-length" or (
            name == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self.framed = True
        elif name == b"jq-placement":
            self.placement = value

    def on_headers_complete(self) -> None:
        if self.done:
            return
        assert self.parser is not None
        self.status = self.parser.get_status_code()
        # Only valid here: llhttp clears its flags once the message is complete.
        self.keep = self.parser.should_keep_alive()
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        if not self.done:
            self.parts.append(body)

    def on_message_complete(self) -> None:
        if self.done:
            return
        if self.status < 200:
            self.parts.clear()
            self.framed = self.head_done = False
            return
        self.done = True


async def _exchange(connection: Connection, message: bytes, *, whole: bool) -> _Answer:
    """Send `message`; read the answer whole, or (`whole=False`) up to its head."""
    reader, writer = connection
    try:
        writer.write(message)
        await writer.drain()
        data = await reader.read(_READ_SIZE)
    except _NOTHING_READ:
        raise _StaleConnection from None
    if not data:
        raise _StaleConnection
    answer = _Answer()
    try:
        while not answer.feed(data) and (whole or not answer.started):
            data = await reader.read(_READ_SIZE)
    except BaseException:
        answer.release()
        raise
    if whole:
        answer.release()
    return answer


def _exchange_blocking(
    connection: socket.socket, message: bytes, deadline: float, *, whole: bool
) -> _Answer:
    """Send `message`; read the answer whole, or (`whole=False`) up to its head."""
    try:
        connection.settimeout(_time_left(deadline))
        connection.sendall(message)
        connection.settimeout(_time_left(deadline))
        data = connection.recv(_READ_SIZE)
    except _NOTHING_READ:
        raise _StaleConnection from None
    if not data:
        raise _StaleConnection
    answer = _Answer()
    try:
        while not answer.feed(data) and (whole or not answer.started):
            connection.settimeout(_time_left(deadline))
            data = connection.recv(_READ_SIZE)
    except BaseException:
        answer.release()
        raise
    if whole:
        answer.release()
    return answer


def _exchange_armed(
    connection: socket.socket, message: bytes, deadline: float, *, whole: bool
) -> _Answer:
    """`_exchange_blocking` on a socket in blocking mode whose kernel timeouts are armed
    (`SyncHttp11Pool._arm`): a send or receive that times out raises EAGAIN, which is the
    TimeoutError of this exchange."""
    try:
        connection.sendall(message)
        data = connection.recv(_READ_SIZE)
    except _NOTHING_READ:
        raise _StaleConnection from None
    except BlockingIOError:
        raise TimeoutError("timed out") from None
    if not data:
        raise _StaleConnection
    answer = _Answer()
    try:
        while not answer.feed(data) and (whole or not answer.started):
            # A long answer: each further read within what is left of the deadline.
            left = _time_left(deadline)
            _set_kernel_timeouts(connection, left)
            try:
                data = connection.recv(_READ_SIZE)
            except BlockingIOError:
                raise TimeoutError("timed out") from None
    except BaseException:
        answer.release()
        raise
    if whole:
        answer.release()
    return answer


def _set_kernel_timeouts(connection: socket.socket, seconds: float) -> None:
    # A zero timeval means "no timeout": the shortest one is a microsecond.
    micros = max(1, int(seconds * 1_000_000))
    value = _TIMEVAL.pack(micros // 1_000_000, micros % 1_000_000)
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


_TIMEVAL = struct.Struct("@ll")  # struct timeval: seconds, microseconds (Linux, 64-bit longs)


def _time_left(deadline: float) -> float:
    """Seconds left for the next blocking call; TimeoutError once the deadline has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left
