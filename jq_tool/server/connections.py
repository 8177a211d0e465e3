"""Connection limits: the bounds a hostile or leaky client meets before any request reaches the
app. `GuardedHttpToolsProtocol` is uvicorn's httptools protocol with these additions, because
uvicorn's own settings do not cover them:

- **A connection cap** (`--max-connections`). uvicorn's `limit_concurrency` answers 503 only
  once a request head has arrived (and without Retry-After), so a flood of idle sockets never
  meets it. Here a connection over the cap is refused when it is accepted: its request line is
  read (at most 8 KiB, at most a second), then it gets `503 too_many_connections` with
  `Retry-After: 1`, its write side is shut and the rest is discarded until the client closes
  (closing at once, with the request unread, would make the kernel answer RST and lose the
  503). `GET /health` alone is served even over the cap, so that an orchestrator does not
  restart a server that is only busy. At most `REFUSING_SLOTS` connections are being refused
  at once; a new one evicts the oldest.
- **A header-read timeout** (`--header-timeout`, 10 s). uvicorn's `timeout_keep_alive` closes a
  keep-alive connection that is idle after a response, but a fresh connection that never sends
  a byte, or a head trickled a byte at a time (slowloris), is never timed out by uvicorn. Here
  every connection must complete its request head within the timeout, counted from when it was
  accepted or its previous response was sent, and a body must not stall for that long while
  the app is reading it. uvicorn's `timeout_keep_alive` (`--keep-alive-timeout`) still closes
  idle keep-alive connections.
- **A request head size limit** (`--max-header-size`, 64 KiB). httptools (llhttp) has no
  limit, and it grows a header value by concatenation on every read, so a 40 MB header took
  seconds of loop time; uvicorn's `h11_max_incomplete_event_size` applies to h11 only. Here the
  bytes of a head are counted before the parser sees them: once the limit is crossed the
  client gets `431 header_too_large` and the connection is closed, without reading the rest.
- **Bytes that are not HTTP/1.1** (a bad method or header, two Content-Lengths, a TLS or HTTP/2
  preface) get `400 invalid_http` as JSON, like every other error, and the connection is
  closed; they are counted in a log line at most every ten seconds. uvicorn answers them in
  plain text and logs a warning for each, which lets any client write the log full.
- **An Upgrade offer is declined by answering the plain request** (RFC 9110 section 7.8).
  `curl --http2`, Java's RestClient and Ktor offer `Upgrade: h2c` on ordinary requests. llhttp
  (through httptools) ends such a request at its head and leaves the body to the protocol
  offered, so uvicorn runs it with an empty body and then fails on the body's bytes as the next
  request (uvicorn issue 2722). Here the body is handed to the parser again behind a head made
  up to frame it (its Content-Length, or chunked), and what follows it is parsed as the next
  request.
- **Pipelined requests are read no further ahead than they are answered**
  (`PIPELINE_DEPTH`): uvicorn queues every request of a read (~2 KB each) and resumes reading
  after each answer, so a client pipelining thousands of requests without reading held
  hundreds of megabytes. Here a long read is parsed in pieces, and once 16 requests wait the
  rest is held unparsed, reading paused, until answers catch up.
- **A client must read its answers**: one that takes none of what is written to it for the
  header timeout is reset, or it would hold its connection (and, at the cap, every new
  client's 503) forever. Reading at any pace keeps it.
- **Deadlines without timers**: a sweep every 0.25 s closes what is overdue, so a request costs
  two float stores rather than a timer armed and cancelled. A connection whose request the app
  is still answering (a long poll, an event stream) is not overdue: the sweep moves its
  deadline on, so the next head's time starts at most a sweep before the answer ends. uvicorn's
  keep-alive timeout (`--keep-alive-timeout`) is kept the same way: uvicorn arms a timer after
  every answer and cancels it at the next request's first bytes (~3% of a lone submit's
  server work, measured with callgrind); here a connection idle after its answer has the
  earlier of the two deadlines, and its first byte puts back the header timeout, counted from
  the answer as before. An idle connection whose keep-alive time ran out is closed quietly, as
  uvicorn closes it; either closes at most one sweep (0.25 s) late.

Event streams have their own cap (`--max-streams`, server/events.py); they count here as
connections too. Body size limits stay where they are (server/requests.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import struct
import termios
import time
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from jq_tool.server.errors import (
    HEADER_TOO_LARGE,
    INVALID_HTTP,
    TOO_MANY_CONNECTIONS,
    closing_response,
)
from jq_tool.server.http_protocol import JoinedWritesProtocol
from jq_tool.settings import Settings

log = logging.getLogger("jq.server")

# Connections over the cap being refused at once (each holds a descriptor until it is done).
REFUSING_SLOTS = 32
# How long a refused connection may take to send its request line and to close after the 503.
REFUSAL_WAIT_S = 1.0
# A refused connection's request line is read to spot GET /health; no more than this.
_REQUEST_LINE_LIMIT = 8192
SWEEP_INTERVAL_S = 0.25
# Requests read ahead of the one being answered (HTTP/1.1 pipelining), at most. Past it the
# connection's bytes wait unparsed and reading stops, until answers catch up: a queued request
# costs ~2 KB (uvicorn's cycle and scope), ~100 times the bytes it was sent in.
PIPELINE_DEPTH = 16
# Bytes of a read handed to the parser at once, at least, when the read is longer: one piece
# holds at most one complete head past its first _PIECE bytes (every head ends in CRLF CRLF,
# which llhttp insists on), so a read of tiny pipelined requests queues at most ~_PIECE / 18
# past PIPELINE_DEPTH, while a body is fed in pieces this large or larger (uvicorn copies a
# body it holds on every piece: smaller pieces would make big bodies quadratic).
_PIECE = 2048
# One warning per kind of refusal at most this often, with a count: an attack must not
# become a flood of log lines.
_LOG_EVERY_S = 10.0

_NORMAL, _REFUSING, _DRAINING, _CLOSED = range(4)


class ConnectionLimits:
    """The limits and the live connections of one server (shared by its protocol instances)."""

    def __init__(
        self,
        *,
        max_connections: int,
        header_timeout_s: float,
        max_header_bytes: int,
        refusing_slots: int = REFUSING_SLOTS,
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.max_header_bytes = max_header_bytes
        self.refusing_slots = refusing_slots
        self.admitted: set[GuardedHttpToolsProtocol] = set()
        self.refusing: dict[GuardedHttpToolsProtocol, None] = {}  # oldest first
        self.now = time.monotonic()  # the loop's clock, as of the last sweep
        self.busy_response = closing_response(
            503,
            TOO_MANY_CONNECTIONS,
            f"too many connections (at most {max_connections}); retry shortly",
        )
        self.head_too_large_response = closing_response(
            431,
            HEADER_TOO_LARGE,
            f"the request line and headers exceed {max_header_bytes} bytes",
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._counts = {"refused": 0, "head too large": 0, "timed out": 0, "not HTTP": 0}
        self._logged_at = {name: 0.0 for name in self._counts}

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            max_connections=settings.max_connections,
            header_timeout_s=settings.header_timeout_ms / 1000,
            max_header_bytes=settings.max_header_bytes,
        )

    def protocol_class(self) -> type[GuardedHttpToolsProtocol]:
        """The class to give uvicorn (`Config(http=...)`): its instances share these limits."""
        return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": self})

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the deadline sweep on the server's loop (at its first connection)."""
        if self._loop is None:
            self._loop = loop
            self.now = loop.time()
            loop.call_later(SWEEP_INTERVAL_S, self._sweep)

    def _sweep(self) -> None:
        assert self._loop is not None
        now = self.now = self._loop.time()
        for protocol in [p for p in self.admitted if 0.0 < p.deadline <= now]:
            protocol.deadline_passed()
        for protocol in [p for p in self.refusing if p.deadline <= now]:
            protocol.stop_refusing()
        self._loop.call_later(SWEEP_INTERVAL_S, self._sweep)

    def note(self, what: str, detail: str) -> None:
        """Count a refusal and log it, once per _LOG_EVERY_S per kind with the count since."""
        self._counts[what] += 1
        now = time.monotonic()
        if now - self._logged_at[what] >= _LOG_EVERY_S:
            count, self._counts[what] = self._counts[what], 0
            self._logged_at[what] = now
            log.warning("connections %s: %d since the last such line (%s)", what, count, detail)


class GuardedHttpToolsProtocol(JoinedWritesProtocol):
    """uvicorn's httptools protocol under ConnectionLimits (see the module docstring), writing
    through server/http_protocol.py's joined writes.

    Every request passes through data_received, on_headers_complete and on_message_complete:
    they call the base methods directly (no super() lookup) and only store numbers. The head
    budget doubles as the state: an int while a head is being read, None while a body is."""

    limits: ConnectionLimits  # set on the subclass that ConnectionLimits.protocol_class makes

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits = self.limits
        self._timeout = limits.header_timeout_s
        self._max_head = limits.max_header_bytes
        self.deadline = 0.0  # loop time by which the client must have sent more
        # Idle after an answer: when that answer ended (loop time), else None.
        self._idle_since: float | None = None
        # Whether an idle connection's deadline is the keep-alive timeout (the earlier one).
        self._keep_alive_first = self.timeout_keep_alive < self._timeout
        self._mode = _NORMAL
        self._head_budget: int | None = self._max_head  # None: reading a body
        self._one_shot = False  # a GET /health let through over the cap: close after it
        self._refused_bytes = b""
        # The parser is reading a head made up to frame the body of a declined Upgrade offer
        # (_decline_upgrade): its callbacks up to the end of that head are not a request.
        self._framing_head = False
        # Bytes read but not parsed yet, because PIPELINE_DEPTH requests wait for the app.
        self._unparsed: bytes | None = None
        # When the transport last stopped taking writes, or the client was last seen to read
        # since (loop time); and how many bytes it had not received then (_unsent).
        self._write_paused_at = 0.0
        self._unsent_seen = 0

    # -- admission --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = self._limits
        limits.watch(self.loop)
        if len(limits.admitted) < limits.max_connections:
            limits.admitted.add(self)
            self.deadline = limits.now + self._timeout
            return
        self._mode = _REFUSING
        limits.note("refused", f"over the cap of {limits.max_connections}")
        if len(limits.refusing) >= limits.refusing_slots:
            next(iter(limits.refusing)).stop_refusing()
        limits.refusing[self] = None
        self.deadline = limits.now + REFUSAL_WAIT_S

    def connection_lost(self, exc: Exception | None) -> None:
        self._limits.admitted.discard(self)
        self._limits.refusing.pop(self, None)
        self._mode = _CLOSED
        super().connection_lost(exc)
        # Each cycle refers back to this protocol (its `on_response`): dropping them here lets
        # a closed connection be freed by reference counting, not by a full GC collection, which
        # the server's GC thresholds make rare (server/runner.py).
        self.pipeline.clear()
        self.cycle = None  # type: ignore[assignment]
        self._unparsed = None

    # -- reading ----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._mode:  # not _NORMAL
            if self._mode == _REFUSING:
                self._read_refused(data)
            return  # draining a refused connection, or closed: discarded
        if self._unparsed is not None:  # requests wait for the app: keep the bytes in order
            self._unparsed += data
            # uvicorn resumes reading whenever an app waits in receive() (a long poll watching
            # for its client to leave): one read each time, then paused again.
            self.flow.pause_reading()
        elif len(data) > _PIECE:
            self._receive_pieces(data)
        else:
            self._receive(data)

    def _receive_pieces(self, data: bytes) -> None:
        """Parse `data` a piece at a time (_PIECE), and stop once PIPELINE_DEPTH requests wait
        for the app: the rest waits in `_unparsed`, reading paused, until on_response_complete
        takes it up. (A request cut off there in its body is the last one queued: the queue
        is below the depth, and the rest parsed, before its app runs.)"""
        pos, end = 0, len(data)
        while pos < end:
            if self._mode or self.transport.is_closing():
                return  # an answer to bad bytes closed the connection
            if len(self.pipeline) >= PIPELINE_DEPTH:
                self._unparsed = data[pos:]
                self.flow.pause_reading()
                return
            cut = data.find(b"\r\n\r\n", pos + _PIECE - 4)
            cut = end if cut < 0 else cut + 4
            self._receive(data if pos == 0 and cut == end else data[pos:cut])
            pos = cut
            if self._unparsed is not None:
                # The piece came back through data_received (a head over its budget: the rest
                # after the budget) and was kept back in part: what follows it goes after.
                self._unparsed += data[pos:]
                return

    def _receive(self, data: bytes) -> None:
        if self._idle_since is not None:
            # The next request's first bytes: the header timeout, counted from the answer.
            self.deadline = self._idle_since + self._timeout
            self._idle_since = None
        budget = self._head_budget
        if budget is None:  # body bytes: the client is still sending
            self.deadline = self._limits.now + self._timeout
        elif len(data) > budget:
            self._head_over_budget(data, budget)
            return
        else:
            self._head_budget = budget - len(data)
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        """uvicorn's data_received, but for what it does with bytes that are not HTTP and with
        Upgrade offers (module docstring). uvicorn's keep-alive timer, which its version also
        cancels here, is never armed on these connections (on_response_complete)."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._decline_upgrade(data[upgrade.args[0] :])
        except httptools.HttpParserError as exc:
            self._not_http(exc)

    def _decline_upgrade(self, rest: bytes) -> None:
        """The parser stopped at the end of a request's head because it offers an Upgrade; it
        has run the request's callbacks to on_message_complete, which made uvicorn's cycle
        complete with an empty body (its app task has not run yet: it is only scheduled), and
        it starts a new message with the next bytes. `rest` is what followed the head in this
        read: the body, if the request has one, and anything sent after it."""
        framing = _body_framing(self.headers)
        cycle = self.cycle
        # An httptools that reads such a body itself (httptools issue 124) has put it in the
        # cycle already: then `rest` is only what follows it.
        if framing and cycle is not None and not cycle.body and not cycle.response_complete:
            cycle.more_body = True
            cycle.message_event.clear()
            self._framing_head = True
            if not cycle.keep_alive:
                # The offer is the connection's last request (`Connection: close`, HTTP/1.0):
                # llhttp has closed the connection's stream at the end of its head, and drops
                # every byte after it (uvicorn makes it lenient about data after close), the
                # body too, which the app would then wait for until shutdown. A new parser
                # reads the body, and as before nothing after it.
                self.parser = _new_parser(self)
                framing += b"Connection: close\r\n"
            rest = b"PUT / HTTP/1.1\r\n" + framing + b"\r\n" + rest
        if rest:
            self._parse(rest)

    def _not_http(self, exc: httptools.HttpParserError) -> None:
        reason = str(exc) or type(exc).__name__
        message = None
        if isinstance(exc, httptools.HttpParserCallbackError):
            if self.parser.get_method() == b"CONNECT":  # read before the target's callback
                # uvicorn's URL callback cannot parse a CONNECT target (host:port).
                reason, message = "CONNECT", "CONNECT is not served: this server is not a proxy"
            elif exc.__context__ is not None:
                # A callback of uvicorn's or jq's raised: its type, never its text (which may
                # quote the request).
                reason = f"{reason}: {type(exc.__context__).__name__}"
        self._limits.note("not HTTP", f"{reason}: 400")
        message = message or f"the request is not valid HTTP/1.1 ({reason})"
        self._close_with(closing_response(400, INVALID_HTTP, message))

    def _head_over_budget(self, data: bytes, budget: int) -> None:
        """`data` would take the head past its limit: let the parser see only what fits. If the
        head completes within it, go on with the rest; if not, 431 and close, unread."""
        self._head_budget = -1  # on_headers_complete replaces it if the head completes
        if budget:
            self._parse(data[:budget])
        if self._mode or self.transport.is_closing():
            return
        if self._head_budget == -1:
            self._limits.note("head too large", f"over {self._max_head} bytes: 431")
            self._close_with(self._limits.head_too_large_response)
            return
        self.data_received(data[budget:])

    def on_headers_complete(self) -> None:
        if self._framing_head:  # not a request: the body of the cycle before follows
            self._framing_head = False
            self._head_budget = None
            return
        _on_headers_complete(self)
        self._head_budget = None
        self.deadline = self._limits.now + self._timeout  # for the body, if one follows
        if self._one_shot and self.cycle is not None:
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        _on_message_complete(self)
        self._head_budget = self._max_head  # the next head starts here
        self.deadline = self._limits.now + self._timeout

    def on_response_complete(self) -> None:
        """uvicorn's, with the keep-alive timer replaced by the deadline (module docstring).
        The client's turn starts when the answer is done: after a long one (a long poll) a
        keep-alive connection gets a whole header timeout for its next request, not what was
        left of a deadline re-armed while the app was answering (the sweep could close it
        between the answer and the next request's first bytes)."""
        now = self.loop.time()
        self.deadline = now + self._timeout
        self.server_state.total_requests += 1
        if self.transport.is_closing():  # the answer's end closed it (`Connection: close`)
            self._unsent_seen = self._unsent()
            return
        if self.pipeline:  # the next request is read already: its answer is the app's turn
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._idle_since = now
            if self._keep_alive_first:
                self.deadline = now + self.timeout_keep_alive
        if len(self.pipeline) >= PIPELINE_DEPTH:
            return  # reading stays paused (on_headers_complete paused it)
        if self._unparsed is not None:
            unparsed, self._unparsed = self._unparsed, None
            self._receive_pieces(unparsed)
            if self._unparsed is not None or self._mode or self.transport.is_closing():
                return
        self.flow.resume_reading()

    def pause_writing(self) -> None:
        self._write_paused_at = self.loop.time()
        self._unsent_seen = self._unsent()
        super().pause_writing()

    def deadline_passed(self) -> None:
        """Called by the sweep when the deadline is past: close, unless it is not the client's
        turn (the app is working on its request, or not reading its body yet). A client that
        takes none of what is written to it for the timeout (writes paused, or a close waiting
        for them to leave) is cut off, or it would hold its connection forever; one that reads,
        however slowly, is not (as nginx's `send_timeout`)."""
        now = self._limits.now
        if self._mode == _CLOSED or self.transport.is_closing():
            if self._took_some():
                self.deadline = now + self._timeout
                return
            self._limits.note("timed out", f"what was written not read within {self._timeout}s")
            self._abort()
            return
        if self.flow.write_paused:
            if now - self._write_paused_at >= self._timeout:
                if not self._took_some():
                    self._limits.note("timed out", f"an answer not read within {self._timeout}s")
                    self._abort()
                    return
                self._write_paused_at = now
            self.deadline = self._write_paused_at + self._timeout
            return
        cycle = self.cycle
        waiting_for_app = (
            self._unparsed is not None  # kept back until the queued requests are answered
            or (self._head_budget is not None and cycle is not None and not cycle.response_complete)
            or (self._head_budget is None and self.flow is not None and self.flow.read_paused)
        )
        if waiting_for_app:
            self.deadline = now + self._timeout
            return
        if not (self._idle_since is not None and self._keep_alive_first):
            self._limits.note("timed out", f"no request head or body within {self._timeout}s")
        # else idle after an answer for the keep-alive time: closed quietly, as uvicorn does.
        self._close()

    def _took_some(self) -> bool:
        """Whether the client has read some of what was written to it since the last look."""
        unsent = self._unsent()
        took, self._unsent_seen = unsent < self._unsent_seen, unsent
        return took

    def _unsent(self) -> int:
        """Bytes written to this connection that its client has not received: the transport's
        buffer and the kernel's send queue. The kernel's counts too: it takes more from the
        transport only once half of its queue has left (Linux's `sk_stream_min_wspace`), so a
        client reading slowly out of a queue of megabytes leaves the transport's buffer as it
        is for seconds."""
        unsent = self.transport.get_write_buffer_size()
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, ValueError):
                queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
                unsent += struct.unpack("i", queued)[0]
        return unsent

    def _close(self) -> None:
        """Close once what was written has left; a client that reads none of it for the
        timeout is cut off (deadline_passed)."""
        self._mode = _CLOSED
        self.deadline = self._limits.now + self._timeout
        self.transport.close()
        self._unsent_seen = self._unsent()

    def _abort(self) -> None:
        """Cut the connection off with a reset: what the client did not read is dropped, in the
        kernel too (a plain close would leave it there, waiting for the client to read it)."""
        self._mode = _CLOSED
        self.deadline = 0.0
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, ValueError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    # -- refusing over the cap --------------------------------------------------------------

    def _read_refused(self, data: bytes) -> None:
        self._refused_bytes += data
        line_end = self._refused_bytes.find(b"\r\n")
        if line_end < 0:
            if len(self._refused_bytes) > _REQUEST_LINE_LIMIT:
                self._answer_busy()
            return
        method, _, rest = self._refused_bytes[:line_end].partition(b" ")
        path = rest.partition(b" ")[0].partition(b"?")[0]
        if method in (b"GET", b"HEAD") and path == b"/health":
            # Served like any request, then closed: health checks work while the server is busy.
            self._limits.refusing.pop(self, None)
            self._limits.admitted.add(self)
            self._mode = _NORMAL
            self._one_shot = True
            buffered, self._refused_bytes = self._refused_bytes, b""
            self.data_received(buffered)
            return
        self._answer_busy()

    def _answer_busy(self) -> None:
        """503 with Retry-After, write side shut; what the client sends next is discarded."""
        self._refused_bytes = b""
        self._mode = _DRAINING
        self.transport.write(self._limits.busy_response)
        if self.transport.can_write_eof():
            self.transport.write_eof()

    def stop_refusing(self) -> None:
        """Out of time or evicted by a newer refused connection: answer if not yet, close."""
        self._limits.refusing.pop(self, None)
        if self._mode == _REFUSING:
            self.transport.write(self._limits.busy_response)
        self._mode = _CLOSED
        self.transport.close()

    def _close_with(self, response: bytes) -> None:
        self.transport.write(response)
        self._close()


def _new_parser(protocol: HttpToolsProtocol) -> httptools.HttpRequestParser:
    """A parser for `protocol` as uvicorn makes one (lenient about data after close)."""
    parser = httptools.HttpRequestParser(protocol)
    parser.set_dangerous_leniencies(lenient_data_after_close=True)
    return parser


def _body_framing(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The header that frames a request's body, from its headers as uvicorn keeps them (names
    lowercased; llhttp has refused two Content-Lengths, or one beside Transfer-Encoding), or
    b"" when it has no body."""
    for name, value in headers:
        if name == b"content-length" and value.strip() not in (b"", b"0"):
            return b"Content-Length: " + value.strip() + b"\r\n"
        if name == b"transfer-encoding":
            return b"Transfer-Encoding: chunked\r\n"
    return b""


# The base class's methods, called directly on the hot path (cheaper than super()).
_on_headers_complete = HttpToolsProtocol.on_headers_complete
_on_message_complete = HttpToolsProtocol.on_message_complete
