"""A small asyncio client for etcd's v3 API: its JSON gateway (plain HTTP), and gRPC for puts and
the watch.

Only what cluster mode uses: put, range, delete, txn, leases, watch, compaction, status. Puts and
watches, the log's hot path, travel over gRPC (engine/etcd_grpc.py: the gateway's JSON and its
loopback call cost each member more CPU than the put itself); the rest over the gateway, which
speaks proto3 JSON: keys and values base64, int64 as strings, default values omitted
(a count of 0 or a failed txn's `succeeded` are simply absent). Endpoints are tried in turn:
a node talks to its own member first and falls back to the others.

Calls travel over our own keep-alive HTTP/1.1 connections (asyncio streams; answers, the
watch's endless one included, parsed by httptools, the C parser uvicorn uses): measured here,
one put through httpx cost about 1 ms of CPU and a 3-member cluster took ~400 puts/s from 8
concurrent callers; the same puts over plain streams cost ~0.1 ms and etcd took ~1,100/s.

A write can fail in two ways that mean different things to the caller. `EtcdUnavailable`: no
endpoint took the request (refused before anything was sent, or etcd said it did not propose
it: no leader, proposal dropped, too many requests, no space), so it did not happen.
`EtcdOutcomeUnknown`: a request was sent and no answer said what became of it (a timeout, a
connection broken mid-request, etcd's own "context deadline exceeded" or "request timed out"):
it may still commit. Callers retry a put of the same key safely (ClusterEngine ignores a batch
key put a second time), so an unknown outcome is also resolved when a later endpoint answers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools
import msgspec

from jq_tool.engine.etcd_grpc import CallFailed, GrpcEndpoint


class EtcdError(Exception):
    """etcd answered with an error (or not at all)."""


class EtcdUnavailable(EtcdError):
    """No endpoint took the request: nothing was done (members down, no leader, overloaded)."""


class EtcdOutcomeUnknown(EtcdError):
    """A request was sent but no answer said what became of it: a write may still commit."""


class EtcdCompacted(EtcdError):
    """A watch or read asked for a revision that was compacted away."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted (compact revision {compact_revision})")
        self.compact_revision = compact_revision


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with prefix."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int

    @classmethod
    def from_json(cls, kv: dict[str, Any]) -> KeyValue:
        return cls(
            key=unb64(kv.get("key")),
            value=unb64(kv.get("value")),
            create_revision=int(kv.get("create_revision", 0)),
            mod_revision=int(kv.get("mod_revision", 0)),
            lease=int(kv.get("lease", 0)),
        )


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # "PUT" or "DELETE"
    kv: KeyValue


# etcd's answers that say a request was refused before it was proposed to Raft: a write that
# got one of these did not happen. Any other failure after the request was sent is unknown.
_NOT_PROPOSED = (
    "etcdserver: no leader",
    "raft proposal dropped",
    "etcdserver: too many requests",
    "etcdserver: not capable",
    "etcdserver: request is too large",
    "database space exceeded",
)
_DELETE = 1  # mvccpb.Event.EventType.DELETE
CONNECT_TIMEOUT_S = 1.0
_READ_SIZE = 1 << 16
_IDLE_PER_ENDPOINT = 32
_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode


class _NotSent(Exception):
    """The request never left: no connection could be made."""


class _NoAnswer(Exception):
    """The request was sent and no complete answer came back."""


class _Stale(Exception):
    """A kept-alive connection was closed before any byte of the answer arrived."""


class _Answer:
    """httptools' callbacks for one answer: its status, body, whether it is complete and
    whether the connection may be kept."""

    __slots__ = ("parser", "status", "keep", "body", "complete")

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.keep = False
        self.body = bytearray()
        self.complete = False

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        # Only valid here: llhttp clears its flags once the message is complete.
        self.keep = self.parser.should_keep_alive()

    def on_body(self, data: bytes) -> None:
        self.body += data

    def on_message_complete(self) -> None:
        self.complete = True


class _Connection:
    """One keep-alive HTTP/1.1 connection to a gateway endpoint, one request at a time."""

    __slots__ = ("reader", "writer", "reusable")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.reusable = False

    async def exchange(self, request: bytes, deadline: float) -> tuple[int, bytes]:
        answer = _Answer()
        self.writer.write(request)
        received = False
        async with asyncio.timeout_at(deadline):
            while not answer.complete:
                try:
                    data = await self.reader.read(_READ_SIZE)
                except ConnectionResetError:
                    if received:
                        raise
                    raise _Stale from None
                if not data:
                    if received:
                        raise ConnectionError("etcd closed the connection mid-answer")
                    raise _Stale
                received = True
                answer.parser.feed_data(data)
        self.reusable = answer.keep
        return answer.status, bytes(answer.body)

    def close(self) -> None:
        self.writer.close()


class _Endpoint:
    """One gateway URL and its idle connections."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"etcd endpoints are http:// URLs, got {url!r}")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or 80
        self._host_header = parts.netloc.encode()
        self._idle: list[_Connection] = []

    def request(self, path: str, payload: bytes) -> bytes:
        return (
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s"
            % (path.encode(), self._host_header, len(payload), payload)
        )

    async def post(self, request: bytes, deadline: float) -> tuple[int, bytes]:
        """Send one request, read its answer. Raises _NotSent when it never left, _NoAnswer
        when it left and no answer came. A kept-alive connection that etcd had closed (a member
        restart) is replaced by a fresh one once, with every other idle one."""
        sent = False
        for reuse in (True, False):
            connection = self._idle.pop() if reuse and self._idle else None
            if connection is None:
                try:
                    connection = await self.open(deadline)
                except (OSError, TimeoutError) as exc:
                    if sent:
                        raise _NoAnswer(f"reconnect failed: {exc!r}") from exc
                    raise _NotSent(f"cannot connect: {exc!r}") from exc
                reuse = False
            sent = True
            try:
                status, body = await connection.exchange(request, deadline)
            except _Stale:
                connection.close()
                if reuse:
                    self.drop_idle()
                    continue
                raise _NoAnswer("connection closed before the answer") from None
            except (OSError, TimeoutError, httptools.HttpParserError) as exc:
                connection.close()
                raise _NoAnswer(repr(exc) if str(exc) == "" else str(exc)) from exc
            except BaseException:  # cancelled mid-exchange: the connection is in an unknown state
                connection.close()
                raise
            if connection.reusable and len(self._idle) < _IDLE_PER_ENDPOINT:
                self._idle.append(connection)
            else:
                connection.close()
            return status, body
        raise _NoAnswer("no answer")  # pragma: no cover - the loop returns or raises

    async def open(self, deadline: float) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout_at(min(deadline, loop.time() + CONNECT_TIMEOUT_S)):
            reader, writer = await asyncio.open_connection(self.host, self.port)
        return _Connection(reader, writer)

    def drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


class EtcdClient:
    def __init__(self, endpoints: Sequence[str], *, timeout: float = 5.0) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self._endpoints = [_Endpoint(url) for url in self.endpoints]
        self._grpc = [GrpcEndpoint(url) for url in self.endpoints]
        self._preferred = 0

    async def close(self) -> None:
        for endpoint in self._endpoints:
            endpoint.drop_idle()
        for channel in self._grpc:
            await channel.close()

    def _turns(self, loop: asyncio.AbstractEventLoop, deadline: float) -> Iterator[int]:
        """The endpoints' indexes in the order a call tries them: the one that answered last
        first, then the others in turn, while the deadline allows (the first always)."""
        count = len(self.endpoints)
        for attempt in range(count):
            if attempt and loop.time() >= deadline:
                return
            yield (self._preferred + attempt) % count

    @staticmethod
    def _not_taken(call: str, maybe_done: bool, last: str) -> EtcdError:
        """What a call that no endpoint took raises: its outcome is unknown when one of them
        may have proposed it."""
        if maybe_done:
            return EtcdOutcomeUnknown(f"{call}: outcome unknown: {last}")
        return EtcdUnavailable(f"no etcd endpoint took {call}: {last}")

    async def _call(
        self, path: str, body: dict[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]:
        """One unary call, the endpoints tried in turn within `timeout` (the client's by
        default). Raises EtcdUnavailable when no endpoint took it, EtcdOutcomeUnknown when one
        may have (see the module's docstring), EtcdError for etcd's definite refusals."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        payload = _json_encode(body)
        maybe_done = False
        last = "no endpoint was tried"
        for index in self._turns(loop, deadline):
            endpoint = self._endpoints[index]
            try:
                status, content = await endpoint.post(endpoint.request(path, payload), deadline)
            except _NotSent as exc:
                last = f"{endpoint.url}: {exc}"
                continue
            except _NoAnswer as exc:
                maybe_done = True
                last = f"{endpoint.url}: no answer ({exc})"
                continue
            try:
                data: dict[str, Any] = _json_decode(content) if content else {}
            except msgspec.DecodeError:
                data = {"error": content[:200].decode("utf-8", "replace")}
            if not isinstance(data, dict):
                data = {"error": f"unexpected answer: {content[:200]!r}"}
            if status >= 500 or status == 429:
                message = str(data.get("error") or data.get("message") or f"HTTP {status}")
                last = f"{endpoint.url}: HTTP {status}: {message[:200]}"
                if not any(marker in message for marker in _NOT_PROPOSED):
                    maybe_done = True
                continue
            if "error" in data or "code" in data and status != 200:
                raise EtcdError(f"{path}: {data.get('error') or data.get('message')}")
            self._preferred = index
            return data
        raise self._not_taken(path, maybe_done, last)

    async def majority_unreachable(self, timeout: float) -> str | None:
        """None when an endpoint answers a linearizable read within `timeout` (etcd's leader
        serves one only after hearing from a majority), else why not. The endpoints are asked
        in the order writes use them, within the one deadline."""
        payload = _json_encode({"key": b64(b"jq/health"), "count_only": True})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        reasons: list[str] = []
        for index in self._turns(loop, deadline):
            endpoint = self._endpoints[index]
            try:
                status, _ = await endpoint.post(endpoint.request("/v3/kv/range", payload), deadline)
            except (_NotSent, _NoAnswer) as exc:
                reasons.append(f"{endpoint.url}: {exc}")
                continue
            if status == 200:
                return None
            reasons.append(f"{endpoint.url}: HTTP {status}")
        return f"no etcd majority answered within {timeout:.1f}s ({'; '.join(reasons)})"

    @staticmethod
    def revision_of(data: dict[str, Any]) -> int:
        return int(data.get("header", {}).get("revision", 0))

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        """Put key over gRPC, the endpoints tried in turn within the client's timeout; returns
        the revision. Raises as `_call` does (see the module's docstring)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        maybe_done = False
        last = "no endpoint was tried"
        for index in self._turns(loop, deadline):
            try:
                revision = await self._grpc[index].put(key, value, lease, deadline - loop.time())
            except CallFailed as exc:
                last = f"{self.endpoints[index]}: {exc}"
                if not exc.sent or any(marker in exc.details for marker in _NOT_PROPOSED):
                    continue
                if exc.refused:
                    raise EtcdError(f"put: {exc.details}") from exc
                maybe_done = True
                continue
            self._preferred = index
            return revision
        raise self._not_taken("put", maybe_done, last)

    async def range(
        self,
        key: bytes,
        *,
        prefix: bool = False,
        limit: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
        max_mod_revision: int = 0,
        min_mod_revision: int = 0,
        newest_first: bool = False,
    ) -> tuple[list[KeyValue], int]:
        """Returns (kvs, header revision). newest_first sorts by mod revision, descending."""
        body: dict[str, Any] = {"key": b64(key)}
        if prefix:
            body["range_end"] = b64(prefix_end(key))
        if limit:
            body["limit"] = str(limit)
        if keys_only:
            body["keys_only"] = True
        if count_only:
            body["count_only"] = True
        if max_mod_revision:
            body["max_mod_revision"] = str(max_mod_revision)
        if min_mod_revision:
            body["min_mod_revision"] = str(min_mod_revision)
        if newest_first:
            body["sort_order"] = "DESCEND"
            body["sort_target"] = "MOD"
        data = await self._call("/v3/kv/range", body)
        kvs = [KeyValue.from_json(kv) for kv in data.get("kvs", [])]
        return kvs, self.revision_of(data)

    async def current_revision(self) -> int:
        _, revision = await self.range(b"\0", count_only=True)
        return revision

    async def delete(self, keys: Sequence[bytes]) -> int:
        if not keys:
            return 0
        ops = [{"request_delete_range": {"key": b64(k)}} for k in keys]
        return self.revision_of(await self._call("/v3/kv/txn", {"success": ops}))

    async def create_if_absent(self, key: bytes, value: bytes, *, lease: int = 0) -> bool:
        """Put key only if it does not exist; True when this call created it."""
        put: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            put["lease"] = str(lease)
        body = {
            "compare": [
                {"key": b64(key), "result": "EQUAL", "target": "CREATE", "create_revision": "0"}
            ],
            "success": [{"request_put": put}],
        }
        data = await self._call("/v3/kv/txn", body)
        return bool(data.get("succeeded", False))

    async def put_if_unchanged(self, key: bytes, value: bytes, mod_revision: int) -> bool:
        """Put key only if its mod_revision is still `mod_revision` (compare-and-swap; 0: only
        if it does not exist); True when this call changed it."""
        body = {
            "compare": [
                {
                    "key": b64(key),
                    "result": "EQUAL",
                    "target": "MOD",
                    "mod_revision": str(mod_revision),
                }  # fmt: skip
            ],
            "success": [{"request_put": {"key": b64(key), "value": b64(value)}}],
        }
        data = await self._call("/v3/kv/txn", body)
        return bool(data.get("succeeded", False))

    async def lease_grant(self, ttl_s: int) -> int:
        data = await self._call("/v3/lease/grant", {"TTL": str(ttl_s)})
        return int(data["ID"])

    async def lease_keepalive(self, lease: int) -> int:
        """Returns the remaining TTL; 0 means the lease is gone."""
        data = await self._call("/v3/lease/keepalive", {"ID": str(lease)})
        return int(data.get("result", {}).get("TTL", 0))

    async def lease_revoke(self, lease: int) -> None:
        with contextlib.suppress(EtcdError):  # already gone is fine
            await self._call("/v3/lease/revoke", {"ID": str(lease)})

    async def compact(self, revision: int) -> None:
        try:
            await self._call("/v3/kv/compaction", {"revision": str(revision)})
        except EtcdError as exc:
            if "compacted" not in str(exc):
                raise

    async def status(self) -> dict[str, Any]:
        return await self._call("/v3/maintenance/status", {})

    async def watch(self, prefix: bytes, start_revision: int) -> AsyncIterator[list[WatchEvent]]:
        """Batches of events under prefix from start_revision on, in revision order, from the
        preferred endpoint, over gRPC. Ends (so the caller re-watches from its own last
        revision) when the stream ends; raises EtcdError when it broke or could not be made
        (the caller then tries the next endpoint), EtcdCompacted if start_revision is gone."""
        endpoint = self._grpc[self._preferred]
        try:
            async for answer in endpoint.watch(prefix, prefix_end(prefix), start_revision):
                if answer.compact_revision:
                    raise EtcdCompacted(int(answer.compact_revision))
                if answer.canceled:
                    raise EtcdError(f"watch cancelled: {answer.cancel_reason}")
                if answer.events:
                    yield [
                        WatchEvent(
                            kind="DELETE" if event.type == _DELETE else "PUT",
                            kv=KeyValue(
                                key=event.kv.key,
                                value=event.kv.value,
                                create_revision=event.kv.create_revision,
                                mod_revision=event.kv.mod_revision,
                                lease=event.kv.lease,
                            ),
                        )
                        for event in answer.events
                    ]
        except CallFailed as exc:
            raise EtcdError(f"watch broke: {exc}") from exc

    def rotate(self) -> None:
        """Prefer the next endpoint (after the preferred one failed a stream)."""
        self._preferred = (self._preferred + 1) % len(self.endpoints)
