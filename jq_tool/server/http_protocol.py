"""uvicorn's HTTP/1.1 protocol (httptools), with the writes of one event-loop turn leaving in one
send.

uvicorn writes an answer's head when the app sends `http.response.start` and its body at
`http.response.body`, and uvloop's transport sends each write at once: with TCP_NODELAY every
answer left as two segments (measured on loopback: 236 of 300 no-op answers were read by the
client in two reads). A client waiting for its answer then wakes twice, and the server makes two
send calls. Here the transport is wrapped so that a write is held until the next one, which it
joins, or at the latest until the end of that turn of the loop (one `call_soon`): the head and
body of every answer whose app does not wait between them (all of jq's, but the /events
stream's) leave together, as soon as the body is written. Nothing else about the protocol
changes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


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
