"""Forwarding in sharded mode (docs/scaling.md §2.3): any node accepts any request; one for a
shard this node holds no replica of is sent on to a node that holds it, and that node's answer
relayed as it is.

The engine decides, not this module: a call for a shard not held raises `ShardNotHeld` naming
the nodes that hold it, which the error table (server/errors.py) turns into a 421 carrying
`Jq-Forward-To`. This ASGI middleware keeps a copy of the request body as the app reads it, holds
back such a 421, and replays the request (method, path, query, headers, body: the caller's own
key, so the other node authorizes it as usual) to those nodes in turn over one keep-alive httpx
client, adding `Jq-Forwarded: <this node>` so a forwarded request is never forwarded again (a
second hop answers 503). The relayed answer carries `Jq-Placement: shard=<n>; nodes=<url> …`
(the node that answered first, then the shard's other replica nodes), so a client can see where
its queue lives and send the next request for it there (sdk/routing.py). Each forward counts in
`jq_forwarded_requests{shard}`. Installed only in sharded mode: other modes pay nothing.
"""

from __future__ import annotations

import logging

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jq_tool.server.errors import FORWARD_HEADER, FORWARD_STATUS, error_response
from jq_tool.server.metrics import RequestCounts

log = logging.getLogger("jq.forward")

FORWARDED_HEADER = b"jq-forwarded"
PLACEMENT_HEADER = "jq-placement"
# A forwarded long poll may wait as long as the caller asked (the lease routes cap wait_ms);
# the connect timeout is what finds a dead node.
FORWARD_TIMEOUT = httpx.Timeout(connect=1.0, read=120.0, write=10.0, pool=5.0)
# Hop-by-hop headers, and those httpx sets itself.
_DROPPED = frozenset({b"host", b"connection", b"keep-alive", b"transfer-encoding",
                      b"content-length", b"te", b"upgrade"})  # fmt: skip
_DROPPED_BACK = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})


class Forwarder:
    def __init__(self, app: ASGIApp, node_id: str, counts: RequestCounts | None = None) -> None:
        self.app = app
        self.node_id = node_id
        self.counts = counts or RequestCounts()
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(max_keepalive_connections=64, max_connections=256)
            self._client = httpx.AsyncClient(timeout=FORWARD_TIMEOUT, limits=limits)
        return self._client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = bytearray()
        body_done = False
        held: list[Message] = []  # a 421 to forward, held back from the caller

        async def recording_receive() -> Message:
            nonlocal body_done
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
                body_done = not message.get("more_body", False)
            return message

        async def holding_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == FORWARD_STATUS:
                headers = dict(message.get("headers", []))
                if FORWARD_HEADER.encode() in headers:
                    held.append(message)
                    return
            if held:
                return  # the held 421's body: dropped, the forwarded answer replaces it
            await send(message)

        await self.app(scope, recording_receive, holding_send)
        if not held:
            return
        while not body_done:
            message = await receive()
            if message["type"] != "http.request":
                break
            body.extend(message.get("body", b""))
            body_done = not message.get("more_body", False)
        targets = dict(held[0]["headers"])[FORWARD_HEADER.encode()].decode().split()
        await self._forward(scope, bytes(body), targets, send)

    async def _forward(self, scope: Scope, body: bytes, targets: list[str], send: Send) -> None:
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _DROPPED]
        shard = next((t for t in targets if not t.startswith("http")), "")
        urls = [t for t in targets if t.startswith("http")]
        if any(k.lower() == FORWARDED_HEADER for k, _ in headers) or not urls:
            why = "already forwarded once" if urls else "no node holding it is known"
            response = error_response(
                503, "unavailable", f"queue unavailable: shard {shard} not held here ({why})"
            )
            await response(scope, _no_body, send)
            return
        headers.append((FORWARDED_HEADER, self.node_id.encode()))
        self.counts.forwarded[shard] += 1
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        target_path = path.decode("latin-1") + (("?" + query.decode("latin-1")) if query else "")
        last = ""
        for url in urls:
            try:
                answer = await self.client().request(
                    scope["method"], url + target_path, headers=headers, content=body
                )
            except httpx.HTTPError as exc:
                last = f"{url}: {exc!r}"
                continue
            relayed = [
                (k.encode("latin-1"), v.encode("latin-1"))
                for k, v in answer.headers.multi_items()
                if k.lower() not in _DROPPED_BACK
            ]
            nodes = " ".join([url, *(other for other in urls if other != url)])
            relayed.append((PLACEMENT_HEADER.encode(), f"shard={shard}; nodes={nodes}".encode()))
            relayed.append((b"content-length", str(len(answer.content)).encode()))
            await send(
                {"type": "http.response.start", "status": answer.status_code, "headers": relayed}
            )
            await send({"type": "http.response.body", "body": answer.content})
            return
        log.warning("could not forward to shard %s: %s", shard, last)
        response = error_response(
            503, "unavailable", f"queue unavailable: no node holding shard {shard} answered"
        )
        await response(scope, _no_body, send)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
