"""Live updates: the `GET /events` Server-Sent Events stream, its stream tickets
(`POST /events/ticket`) and the two routes that serve them.

A stream sends `event: stats` (the /stats body) at once and then every second, and
`event: job` for each state change the engine publishes, or, asked with `?batch=1`, one
`event: jobs` frame holding a JSON array of the events taken together (up to 256): a browser
dispatches every SSE event on its own, so a burst sent one by one keeps a page busy far longer
than the same events as a few hundred arrays (the dashboard asks for arrays). A slow reader loses
job events rather than slowing the engine (the engine's subscription drops, and so does our
bounded buffer).
Streams end when the server starts draining, so SIGTERM is not held up by open dashboards.

Browsers cannot set headers on an EventSource, and an API key in a URL ends up in histories
and proxy logs; so a key with `jobs:read` trades itself for a ticket (`POST /events/ticket`): a
short-lived, read-only token, valid only for `/events`, signed with the key store's ticket
secret (`TicketBook`), so that it works on every server sharing the store (a cluster behind a
round-robin balancer) and after a restart, and nothing is kept per ticket.

At most `--max-streams` streams are open at once (`StreamSlots`); one more is answered 503
`too_many_streams` with Retry-After, so dashboards cannot take every connection from submitters.

A stream lives no longer than its key (`OpenStreams`): a revoke closes every open stream of
that key at once, whether it was made here or, through the key store's revoke feed (Redis
pub/sub), on another server; and once a second the keys behind open streams are looked up
again, so a revoke whose notice was lost closes them all the same. A ticket's key is looked up
whenever the ticket opens a stream: a revoked key's tickets open none.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Send
from starlette.types import Scope as AsgiScope

from jq_tool.auth import ApiKey, KeyStore, KeyStoreUnavailable, Scope
from jq_tool.engine.base import Engine, JobEvent, split_error
from jq_tool.server.auth_guard import Guard
from jq_tool.server.errors import TOO_MANY_STREAMS, UNAUTHORIZED, ApiError, invalid_field
from jq_tool.server.stats import StatsView
from jq_tool.server.wire import JSONResponse, StreamTicket, encode_json, rfc3339

log = logging.getLogger("jq.server")

STATS_INTERVAL_S = 1.0
RECHECK_INTERVAL_S = 1.0  # how often the keys behind open streams are looked up again
_BUFFERED_EVENTS = 4096
_EVENTS_PER_CHUNK = 256
_TICKET_MAC_BYTES = 18  # of the HMAC-SHA256: 144 bits, as the random tickets before had 192


class TicketBook:
    """Issues and checks stream tickets: `<key id>.<expiry, ms, hex>.<nonce>.<MAC>`, the MAC an
    HMAC-SHA256 of the rest under the key store's ticket secret. Nothing is stored per ticket:
    any server sharing the store checks one, a restart keeps them valid, and a key minting
    tickets in a loop costs no memory. The key id in a ticket is no secret (key listings show
    it); the MAC is what cannot be made without the secret."""

    def __init__(self, ttl_ms: int, keystore: KeyStore) -> None:
        self.ttl_ms = ttl_ms
        self.keystore = keystore

    async def issue(self, key: ApiKey) -> tuple[str, str]:
        """A new ticket for `key`; returns (ticket, expires_at as RFC 3339)."""
        expires_at = _now_ms() + self.ttl_ms
        # The nonce makes two tickets issued in one millisecond differ (they are equally valid).
        body = f"{key.key_id}.{expires_at:x}.{secrets.token_urlsafe(6)}"
        return f"{body}.{await self._mac(body)}", rfc3339(expires_at)

    async def redeem(self, ticket: str) -> str | None:
        """The id of the key a valid, unexpired ticket was issued to; None otherwise. Reusable
        until it expires, because an EventSource reconnects with the same URL. The caller
        looks the key up (it may have been revoked since)."""
        if not ticket.isascii():
            return None
        parts = ticket.rsplit(".", 3)  # from the right: the nonce and MAC have no dots
        if len(parts) != 4:
            return None
        key_id, expiry, nonce, mac = parts
        if not (key_id and nonce and 0 < len(expiry) <= 16):
            return None
        body = ticket[: -len(mac) - 1]
        try:
            expires_at = int(expiry, 16)
        except ValueError:
            return None
        if not hmac.compare_digest(mac, await self._mac(body)) or expires_at <= _now_ms():
            return None
        return key_id

    async def _mac(self, body: str) -> str:
        secret = await self.keystore.ticket_secret()
        digest = hmac.new(secret, body.encode(), hashlib.sha256).digest()[:_TICKET_MAC_BYTES]
        return base64.urlsafe_b64encode(digest).decode()


class Stream:
    """One open /events response: the key it was opened with and its buffer of events. `None`
    in the buffer (or `closed`) ends it."""

    # A plain class, not a frozen dataclass: its six generated methods were ~0.8 ms of every
    # start (issue 20), and a route table needs none of them.
    __slots__ = ("key_id", "buffer", "closed")

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        self.buffer: asyncio.Queue[JobEvent | None] = asyncio.Queue(maxsize=_BUFFERED_EVENTS)
        self.closed = False

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(asyncio.QueueFull):
            self.buffer.put_nowait(None)  # wakes an idle stream; a busy one sees `closed`


class OpenStreams:
    """The open /events streams by key, so that a revoked key's streams end within a second:
    at once when the revoke is heard (`revoked`, called by the key store for revokes made here
    and, in Redis mode, on other servers), and otherwise at the next look-up of every key
    behind an open stream (`_recheck`, once a second while any stream is open)."""

    def __init__(self, keystore: KeyStore) -> None:
        self.keystore = keystore
        self._streams: dict[str, set[Stream]] = {}
        self._rechecker: asyncio.Task[None] | None = None

    def open(self, key_id: str) -> Stream:
        stream = Stream(key_id)
        self._streams.setdefault(key_id, set()).add(stream)
        if self._rechecker is None or self._rechecker.done():
            self._rechecker = asyncio.create_task(self._recheck(), name="jq-events-recheck")
        return stream

    def close(self, stream: Stream) -> None:
        streams = self._streams.get(stream.key_id)
        if streams is not None:
            streams.discard(stream)
            if not streams:
                del self._streams[stream.key_id]

    async def stop(self) -> None:
        """At shutdown: stop the re-check (the streams themselves end with the drain)."""
        if self._rechecker is not None:
            self._rechecker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rechecker
            self._rechecker = None

    def revoked(self, key_id: str) -> None:
        """A key was revoked: end its streams."""
        for stream in self._streams.pop(key_id, ()):
            stream.close()

    async def _recheck(self) -> None:
        while self._streams:
            await asyncio.sleep(RECHECK_INTERVAL_S)
            for key_id in list(self._streams):
                try:
                    key = await self.keystore.get(key_id)
                except KeyStoreUnavailable:
                    return  # an outage is not a revoke; the next stream opened starts again
                if key is None or key.revoked_at is not None:
                    log.info("closing the event streams of revoked key %s", key_id)
                    self.revoked(key_id)


def _now_ms() -> int:
    # The server's one wall-clock read: tickets expire by it. Queue times come from the engine.
    return time.time_ns() // 1_000_000


def sse_frame(event: str, data: bytes) -> bytes:
    # msgspec never emits raw newlines, so one `data:` line carries the whole JSON document.
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


EVENT_MESSAGE_CHARS = 200  # of an error message in a job event


def _batch_flag(request: Request) -> bool:
    value = request.query_params.get("batch", "0")
    if value not in ("0", "1", "true", "false"):
        raise invalid_field("batch", "batch must be 1 or 0 (true or false)")
    return value in ("1", "true")


def job_event_body(event: JobEvent) -> dict[str, object]:
    error_class, message = split_error(event.error) if event.error else (None, None)
    return {
        "job_id": event.job_id,
        "queue": event.queue,
        "state": event.state.value,
        "previous": event.previous.value if event.previous is not None else None,
        "attempts": event.attempts,
        "priority": event.priority,
        "at": rfc3339(event.at),
        "run_at": rfc3339(event.run_at),
        "worker": event.worker,
        # The current error split as in the job view (the message cut to EVENT_MESSAGE_CHARS):
        # the list's error column, live, without a GET per row.
        "error_class": error_class,
        "error_message": None if message is None else message[:EVENT_MESSAGE_CHARS],
    }


async def event_stream(
    engine: Engine,
    stats: StatsView,
    draining: asyncio.Event,
    key_id: str,
    streams: OpenStreams,
    batch: bool = False,
) -> AsyncIterator[bytes]:
    """The body of one /events response; it ends when the server drains or the key is revoked.
    The stream is registered here, where its `finally` is sure to run: a response whose body
    never starts (the client left at once) leaves nothing behind."""
    stream = streams.open(key_id)  # closed in the `finally` below
    buffer = stream.buffer

    async def pump() -> None:
        async for event in engine.subscribe():
            with contextlib.suppress(asyncio.QueueFull):
                buffer.put_nowait(event)

    pump_task = asyncio.create_task(pump(), name="jq-events-pump")
    try:
        yield b"retry: 2000\n\n" + sse_frame("stats", stats.frame())
        next_stats = time.monotonic() + STATS_INTERVAL_S
        while not draining.is_set() and not stream.closed:
            timeout = next_stats - time.monotonic()
            if timeout <= 0:
                yield sse_frame("stats", stats.frame())
                next_stats = time.monotonic() + STATS_INTERVAL_S
                continue
            try:
                first = await asyncio.wait_for(buffer.get(), timeout)
            except TimeoutError:
                continue
            # Up to a chunk of what is buffered; the next one is taken out only when it fits
            # (taken and left behind, it was lost: one event per full chunk).
            bodies: list[dict[str, object]] = []
            event: JobEvent | None = first
            while event is not None:  # None: closed (see Stream.close)
                bodies.append(job_event_body(event))
                if len(bodies) >= _EVENTS_PER_CHUNK or buffer.empty():
                    break
                event = buffer.get_nowait()
            if stream.closed:
                return  # revoked: not one more event for that key
            if batch:
                yield sse_frame("jobs", encode_json(bodies))
            else:
                yield b"".join(sse_frame("job", encode_json(body)) for body in bodies)
    finally:
        streams.close(stream)
        pump_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump_task


class StreamSlots:
    """How many /events streams may be open at once (`--max-streams`)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def take(self) -> None:
        if self.open >= self.limit:
            message = f"too many event streams open (at most {self.limit}); retry shortly"
            raise ApiError(503, TOO_MANY_STREAMS, message)
        self.open += 1

    def release(self) -> None:
        self.open -= 1


class _SlotStream(StreamingResponse):
    """A stream that gives its slot back when it ends, however it ends."""

    def __init__(self, slots: StreamSlots, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._slots = slots

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slots.release()


class EventRoutes:
    """GET /events (Bearer key or ticket) and POST /events/ticket."""

    # A plain class, not a frozen dataclass: its six generated methods were ~0.8 ms of every
    # start (issue 20), and a route table needs none of them.
    __slots__ = ("engine", "guard", "stats", "tickets", "draining", "slots", "streams")

    def __init__(
        self,
        engine: Engine,
        guard: Guard,
        stats: StatsView,
        tickets: TicketBook,
        draining: asyncio.Event,
        slots: StreamSlots,
        streams: OpenStreams,
    ) -> None:
        self.engine = engine
        self.guard = guard
        self.stats = stats
        self.tickets = tickets
        self.draining = draining
        self.slots = slots  # at most --max-streams open at once
        self.streams = streams  # which are open, by key: a revoke ends them

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/events", self.events, methods=["GET"]),
            Route("/events/ticket", self.issue_ticket, methods=["POST"]),
        ]

    async def issue_ticket(self, request: Request) -> Response:
        key = await self.guard.require(request, Scope.JOBS_READ)
        ticket, expires_at = await self.tickets.issue(key)
        return JSONResponse(StreamTicket(ticket, expires_at))

    async def events(self, request: Request) -> Response:
        ticket = request.query_params.get("ticket")
        if ticket:
            key_id = await self.tickets.redeem(ticket)
            if key_id is None:
                raise ApiError(401, UNAUTHORIZED, "unknown or expired ticket")
            # The key behind a ticket may have been revoked since: ask the store.
            current = await self.guard.keystore.get(key_id)
            if current is None or current.revoked_at is not None:
                raise ApiError(401, UNAUTHORIZED, "the key behind this ticket was revoked")
            key = current
        else:
            key = await self.guard.require(request, Scope.JOBS_READ)
        batch = _batch_flag(request)  # before a slot is taken: a refusal holds none
        self.slots.take()
        return _SlotStream(
            self.slots,
            event_stream(
                self.engine,
                self.stats,
                self.draining,
                key.key_id,
                self.streams,
                batch=batch,
            ),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
