"""`GET /events` for the SDK: the `text/event-stream` format decoded from bytes as they arrive
(`SseDecoder`), its events typed (`ServerEvent`: a `JobEvent` for each state change, the `Stats`
the server sends at once and every second), and the iterators both clients hand out
(`EventStream` for `for event in client.events()`, `AsyncEventStream` for `async for`).

A stream reads through its client's own connection pool (sdk/wire.py): the connection is opened
on the first read (or `open()`, or entering `with`), and held until the server ends the stream
or the stream is closed. Event kinds this SDK does not know, and bodies it cannot decode, are
passed over, so an older SDK keeps working against a newer server. `timeout` bounds opening the
stream and every quiet spell in it: the server writes stats every second, so a stream silent for
that long is dead and raises `ServerUnavailable`. Streams do not reconnect: a caller that wants
to keep following opens a new one, and reads what it missed (events are not replayed).
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import msgspec

from jq_tool.sdk.errors import ServerUnavailable, error_for_failure
from jq_tool.sdk.types import JobEvent, Stats
from jq_tool.sdk.wire import AsyncStreamedAnswer, SyncStreamedAnswer, TransportFailure

ServerEvent: TypeAlias = JobEvent | Stats

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"
_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "job": msgspec.json.Decoder(JobEvent),
    "stats": msgspec.json.Decoder(Stats),
}


@dataclass(frozen=True)
class SseEvent:
    """One event of a text/event-stream, as written: its name and its data lines joined."""

    event: str
    data: str


class SseDecoder:
    """Bytes of a text/event-stream in, whole events out, by the WHATWG rules the SDK needs:
    lines end in LF, CRLF or CR (a CRLF may be split between reads); a line starting with `:`
    is a comment; `event:` names the event, `data:` lines are joined with LF; a blank line
    dispatches, and an event without data is dropped. `id` and `retry` are read past: streams
    are not resumed."""

    def __init__(self) -> None:
        self._partial = b""  # an unfinished line
        self._after_cr = False  # the last read ended in CR: a leading LF belongs to it
        self._started = False
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        if chunk:
            self._after_cr = chunk.endswith(b"\r")
        data = self._partial + chunk
        if not self._started and len(data) >= len(_BOM):
            self._started = True
            data = data.removeprefix(_BOM)
        *lines, self._partial = _LINE_END.split(data)
        events = []
        for line in lines:
            event = self._line(line.decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = SseEvent(self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


def server_event(raw: SseEvent) -> ServerEvent | None:
    """The typed event for one event of `GET /events`; None for a kind this SDK does not know
    or a body it cannot read."""
    decoder = _DECODERS.get(raw.event)
    if decoder is None:
        return None
    try:
        event: ServerEvent = decoder.decode(raw.data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return event


def finished_event_for(event: ServerEvent | None, job_id: str) -> bool:
    """Whether `event` says `job_id` reached a finished state."""
    return isinstance(event, JobEvent) and event.job_id == job_id and event.finished


class BaseEventStream:
    """Everything but the reads: decoding what arrives into typed events, in order."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.ended = False  # the server ended the stream
        self._decoder = SseDecoder()
        self._events: deque[ServerEvent] = deque()

    def _take(self, data: bytes | None) -> ServerEvent | None:
        """Decode what a read brought (b"": the end, None: nothing yet); the next event."""
        if data == b"":
            self.ended = True
        elif data:
            for raw in self._decoder.feed(data):
                event = server_event(raw)
                if event is not None:
                    self._events.append(event)
        return self._events.popleft() if self._events else None

    def _quiet(self) -> ServerUnavailable:
        return ServerUnavailable(f"GET /events: no event for {self.timeout}s")

    @staticmethod
    def _broken(failure: TransportFailure) -> Exception:
        return error_for_failure("GET /events", failure)


class EventStream(BaseEventStream):
    """`for event in client.events(): ...`: typed events until the server ends the stream
    (`with client.events() as events:` closes it when the block ends)."""

    def __init__(self, opener: Callable[[float], SyncStreamedAnswer], timeout: float) -> None:
        super().__init__(timeout)
        self._opener = opener
        self._answer: SyncStreamedAnswer | None = None

    def open(self) -> EventStream:
        """Connect now (the first read would): typed errors for a refused stream."""
        if self._answer is None:
            self._answer = self._opener(self.timeout)
        return self

    def __enter__(self) -> EventStream:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> ServerEvent:
        event = self.next_event(self.timeout)
        if event is not None:
            return event
        self.close()
        if self.ended:
            raise StopIteration
        raise self._quiet()

    def next_event(self, wait: float) -> ServerEvent | None:
        """The next event, or None when none came within `wait` seconds or the stream ended
        (see `ended`)."""
        answer = self.open()._answer
        assert answer is not None
        deadline = time.monotonic() + wait
        event = self._take(None)
        while event is None and not self.ended:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                data = answer.read(left)
            except TransportFailure as exc:
                raise self._broken(exc) from exc
            if data is None:
                return None
            event = self._take(data)
        return event

    def close(self) -> None:
        if self._answer is not None:
            self._answer.close()


class AsyncEventStream(BaseEventStream):
    """`async for event in client.events(): ...`: typed events until the server ends the
    stream (`async with client.events() as events:` closes it when the block ends)."""

    def __init__(
        self, opener: Callable[[float], Awaitable[AsyncStreamedAnswer]], timeout: float
    ) -> None:
        super().__init__(timeout)
        self._opener = opener
        self._answer: AsyncStreamedAnswer | None = None

    async def open(self) -> AsyncEventStream:
        """Connect now (the first read would): typed errors for a refused stream."""
        if self._answer is None:
            self._answer = await self._opener(self.timeout)
        return self

    async def __aenter__(self) -> AsyncEventStream:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def __aiter__(self) -> AsyncEventStream:
        return self

    async def __anext__(self) -> ServerEvent:
        event = await self.next_event(self.timeout)
        if event is not None:
            return event
        self.close()
        if self.ended:
            raise StopAsyncIteration
        raise self._quiet()

    async def next_event(self, wait: float) -> ServerEvent | None:
        """The next event, or None when none came within `wait` seconds or the stream ended
        (see `ended`)."""
        answer = (await self.open())._answer
        assert answer is not None
        deadline = time.monotonic() + wait
        event = self._take(None)
        while event is None and not self.ended:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                data = await answer.read(left)
            except TransportFailure as exc:
                raise self._broken(exc) from exc
            if data is None:
                return None
            event = self._take(data)
        return event

    def close(self) -> None:
        """Hand the connection back (sync: it waits for nothing)."""
        if self._answer is not None:
            self._answer.close()

    async def aclose(self) -> None:
        self.close()
