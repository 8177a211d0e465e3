"""uvicorn's HTTP/1.1 protocol (httptools), with the writes of one event-loop turn leaving in one
send.

uvicorn writes an answer's head when the app sends `http.response.start` and its body at
`http.response.body`, and uvloop's transport sends each write at once: with TCP_NODELAY every
answer left as two segments (measured on loopback: 236 of 300 no-op answers were read by the
client in two reads). A client waiting for its answer then wakes twice, and the server makes two
send calls. Here the transport is wrapped so that a write is held until the next one, which it
joins, or at the latest until the end of that turn of the loop (one `call_soon`): the head and
body of every answer whose app does not wait between them (all of jq's, but the /events
stream's) leave together, as soon as the body is written. (A `100 Continue` that uvicorn writes
when the app first reads the body of a request that asked for one is the held write then: it
leaves with the answer's head, and the body in a second send.) Nothing else about the
protocol changes.

The job routes skip the ASGI messages altogether (`answer_at_once`): their answer is a plain
Response with its whole body, so its head and body are made into one buffer and written
at once, with the same bookkeeping uvicorn's `send` does at the end of an answer. Measured on
a durable submit, the two `send` messages (Starlette's `Response.__call__`, uvicorn's
per-message checks and head building, the held write and its `call_soon`) were the largest
part of the server's work after parsing.
"""

from __future__ import annotations

import asyncio
from typing import Any

# uvicorn's package without its __init__ (server/asgi_server.py), before uvicorn's protocol:
# the app imports this module (hot_routes) before the runner imports asgi_server.
import jq_tool.server.asgi_server  # noqa: F401

# isort: split
from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import (
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)


class _JoinedWrites:
    """A transport whose writes in one loop turn are sent as one; the rest is the transport's."""

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        pending = self._pending
        if pending is None:
            # Held until the next write (an answer's body follows its head at once) or, at the
            # latest, the end of this turn of the loop (a stream's head, a lone write).
            self._pending = [data]
            self._loop.call_soon(self._flush)
        else:
            self._pending = None
            pending.append(data)
            self._send(b"".join(pending))

    def write_now(self, data: bytes) -> None:
        """Send `data` at once, after anything held (a whole answer: nothing will join it)."""
        pending, self._pending = self._pending, None
        if pending:
            pending.append(data)
            data = b"".join(pending)
        self._send(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending:
            self._send(pending[0] if len(pending) == 1 else b"".join(pending))

    def _send(self, data: bytes) -> None:
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._flush()  # an answer written just before a close must still leave
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()  # what was written before the end of the stream leaves before it
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class JoinedWritesProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over `_JoinedWrites`: pass as `uvicorn.Config(http=...)`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        joined: Any = _JoinedWrites(transport, self.loop)
        super().connection_made(joined)


_ASGI_CALL = Response.__call__


def answer_at_once(send: Any, scope: Any, response: Response) -> bool:
    """Write `response` for the request `send` answers as one buffer, doing what uvicorn's
    `RequestResponseCycle.send` does for an answer's start and its last body message. True if
    it was written; False (nothing done) when the answer must go the ASGI way: `send` is not
    uvicorn's httptools cycle (a middleware wraps it: sharded mode), the answer has started,
    the client is gone or slow to read (writes paused: `send` waits for the drain), a HEAD
    request, a background task, a streaming or file response, uvicorn's access log on, or
    headers uvicorn's `send` would treat otherwise (transfer-encoding, a value it refuses, a
    body without its content-length)."""
    cycle = getattr(send, "__self__", None)
    if (
        type(cycle) is not RequestResponseCycle
        or cycle.response_started
        or cycle.disconnected
        or cycle.flow.write_paused
        or cycle.access_log  # uvicorn's own access log (jq serve logs access itself)
        or scope["method"] == "HEAD"
        or response.background is not None
        or type(response).__call__ is not _ASGI_CALL
    ):
        return False
    body = response.body
    if type(body) is not bytes:
        return False
    status = response.status_code
    keep_alive = cycle.keep_alive
    close_said = False
    length_said = status in (204, 304)  # no body, no length
    content = [STATUS_LINE[status]]
    for name, value in (*cycle.default_headers, *response.raw_headers):
        if name == b"transfer-encoding" or HEADER_VALUE_RE.search(value):
            return False
        if name == b"content-length":
            if value != b"%d" % len(body):
                return False  # uvicorn's send would refuse it
            length_said = True
        elif name == b"connection" and b"close" in value.lower():
            keep_alive = False
            close_said = True
        content += (name, b": ", value, b"\r\n")
    if not length_said:
        return False  # uvicorn's send would frame the body as chunked
    if not keep_alive and not close_said:
        content.append(b"connection: close\r\n")
    content += (b"\r\n", body)
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    cycle.keep_alive = keep_alive
    transport = cycle.transport
    data = b"".join(content)
    if isinstance(transport, _JoinedWrites):
        transport.write_now(data)
    else:
        transport.write(data)
    cycle.response_complete = True
    cycle.message_event.set()
    if not keep_alive:
        transport.close()
    cycle.on_response()
    return True
