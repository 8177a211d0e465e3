"""One shard's replicated log, as jq would drive it: append a value (a msgpack list of commands),
learn its index once a quorum has it, and tail the log from an index in order.

Two implementations, each written the way jq's engine would use it:

- `EtcdLog`: etcd's v3 JSON gateway over plain HTTP with httpx, as `jq_tool/engine/etcd_client.py`
  does today (same client limits, base64 keys and values, one key per batch under a prefix;
  the etcd revision of the put is the index; the tail is the streaming `/v3/watch`).
- `JetStreamLog`: nats-py; a stream with num_replicas=3 and file storage per shard;
  `js.publish` waits for the PubAck, which the stream leader sends once a quorum of the
  stream's replicas stored the message; the stream sequence is the index; the tail is an
  ordered push consumer (what a JetStream KV watch uses).

Kept apart from jq_tool on purpose: the engine is being refactored, and these measurements must
keep running while it is.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Protocol

import httpx


class ShardLog(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def append(self, value: bytes) -> int:
        """Durable on a quorum (whatever the system means by it); returns the log index."""
        ...

    def tail(self, start: int) -> AsyncIterator[list[tuple[int, bytes]]]:
        """Batches of (index, value) from `start` on, in index order."""
        ...


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


class EtcdLog:
    def __init__(self, endpoints: list[str], shard: str, writer: str) -> None:
        self.endpoints = endpoints
        self.prefix = f"jq/{shard}/log/".encode()
        self.writer = writer
        self._seq = 0
        self._preferred = 0
        self._http: httpx.AsyncClient | None = None

    async def open(self) -> None:
        # The limits jq's EtcdClient uses.
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(5.0, connect=1.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def append(self, value: bytes) -> int:
        assert self._http is not None
        self._seq += 1
        key = self.prefix + f"{self.writer}/{self._seq:012d}".encode()
        body = {"key": _b64(key), "value": _b64(value)}
        # Like jq's EtcdClient: the preferred member first, the others when it fails.
        for attempt in range(len(self.endpoints)):
            endpoint = self.endpoints[(self._preferred + attempt) % len(self.endpoints)]
            try:
                response = await self._http.post(endpoint + "/v3/kv/put", json=body)
                response.raise_for_status()
            except httpx.HTTPError:
                if attempt == len(self.endpoints) - 1:
                    raise
                continue
            self._preferred = self.endpoints.index(endpoint)
            return int(response.json()["header"]["revision"])
        raise AssertionError("unreachable")

    async def tail(self, start: int) -> AsyncIterator[list[tuple[int, bytes]]]:
        assert self._http is not None
        body = {
            "create_request": {
                "key": _b64(self.prefix),
                "range_end": _b64(_prefix_end(self.prefix)),
                "start_revision": str(start),
            }
        }
        async with self._http.stream(
            "POST",
            self.endpoints[0] + "/v3/watch",
            json=body,
            timeout=httpx.Timeout(None, connect=1.0),
        ) as response:
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                events = json.loads(line).get("result", {}).get("events")
                if events:
                    yield [
                        (int(e["kv"]["mod_revision"]), base64.b64decode(e["kv"]["value"]))
                        for e in events
                    ]


class JetStreamLog:
    def __init__(self, servers: list[str], shard: str, writer: str) -> None:
        self.servers = servers
        self.stream = shard
        self.subject = f"{shard}.log"
        self.writer = writer
        self._nc = None
        self._js = None

    async def open(self) -> None:
        import nats

        self._nc = await nats.connect(servers=self.servers, max_reconnect_attempts=5)
        self._js = self._nc.jetstream(timeout=10)

    async def close(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()

    async def append(self, value: bytes) -> int:
        assert self._js is not None
        ack = await self._js.publish(self.subject, value, stream=self.stream)
        return int(ack.seq)

    async def tail(self, start: int) -> AsyncIterator[list[tuple[int, bytes]]]:
        from nats.js.api import ConsumerConfig, DeliverPolicy

        assert self._js is not None
        inbox: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()

        async def deliver(msg) -> None:  # type: ignore[no-untyped-def]
            inbox.put_nowait((msg.metadata.sequence.stream, msg.data))

        sub = await self._js.subscribe(
            self.subject,
            ordered_consumer=True,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(1, start)
            ),
            cb=deliver,
        )
        try:
            while True:
                batch = [await inbox.get()]
                while not inbox.empty():
                    batch.append(inbox.get_nowait())
                yield batch
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


async def create_stream(servers: list[str], shard: str) -> None:
    """One replicated stream per shard: R3, file storage, no limits jq would not set."""
    import nats
    from nats.js.api import StorageType, StreamConfig

    nc = await nats.connect(servers=servers)
    try:
        js = nc.jetstream(timeout=10)
        for attempt in range(50):
            try:
                await js.add_stream(
                    StreamConfig(
                        name=shard,
                        subjects=[f"{shard}.log"],
                        num_replicas=3,
                        storage=StorageType.FILE,
                    )
                )
                return
            except Exception:
                if attempt == 49:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await nc.close()


def make_log(kind: str, endpoints: list[str], shard: str, writer: str) -> ShardLog:
    if kind == "etcd":
        return EtcdLog(endpoints, shard, writer)
    if kind.startswith("jetstream"):
        return JetStreamLog(endpoints, shard, writer)
    raise ValueError(kind)
