"""A small asyncio client for etcd's v3 JSON gateway (plain HTTP, httpx).

Only what cluster mode uses: put, range, delete, txn, leases, watch, compaction, status. The
gateway speaks proto3 JSON: keys and values base64, int64 as strings, default values omitted
(a count of 0 or a failed txn's `succeeded` are simply absent). Endpoints are tried in turn:
a node talks to its own member first and falls back to the others.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx


class EtcdError(Exception):
    """etcd answered with an error (or not at all)."""


class EtcdUnavailable(EtcdError):
    """No endpoint answered in time: no quorum, or the members are down."""


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


class EtcdClient:
    def __init__(self, endpoints: Sequence[str], *, timeout: float = 5.0) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self._preferred = 0
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=1.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        last: Exception | None = None
        for attempt in range(len(self.endpoints)):
            index = (self._preferred + attempt) % len(self.endpoints)
            try:
                response = await self._http.post(self.endpoints[index] + path, json=body)
            except httpx.HTTPError as exc:
                last = exc
                continue
            if response.status_code >= 500 or response.status_code == 429:
                last = EtcdError(f"{path}: HTTP {response.status_code}: {response.text[:200]}")
                continue
            data: dict[str, Any] = response.json()
            if "error" in data or "code" in data and response.status_code != 200:
                raise EtcdError(f"{path}: {data.get('error') or data.get('message')}")
            self._preferred = index
            return data
        raise EtcdUnavailable(f"no etcd endpoint answered {path}: {last}")

    @staticmethod
    def revision_of(data: dict[str, Any]) -> int:
        return int(data.get("header", {}).get("revision", 0))

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        return self.revision_of(await self._call("/v3/kv/put", body))

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

    async def status(self, endpoint: str | None = None) -> dict[str, Any]:
        if endpoint is None:
            return await self._call("/v3/maintenance/status", {})
        response = await self._http.post(endpoint.rstrip("/") + "/v3/maintenance/status", json={})
        result: dict[str, Any] = response.json()
        return result

    async def watch(self, prefix: bytes, start_revision: int) -> AsyncIterator[list[WatchEvent]]:
        """Batches of events under prefix from start_revision on, in revision order. Ends (so
        the caller re-watches from its own last revision) when the stream breaks; raises
        EtcdCompacted if start_revision is gone."""
        body = {
            "create_request": {
                "key": b64(prefix),
                "range_end": b64(prefix_end(prefix)),
                "start_revision": str(start_revision),
            }
        }
        endpoint = self.endpoints[self._preferred]
        timeout = httpx.Timeout(None, connect=1.0)
        async with self._http.stream(
            "POST", endpoint + "/v3/watch", json=body, timeout=timeout
        ) as response:
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                message = json.loads(line)
                result = message.get("result")
                if result is None:
                    raise EtcdError(f"watch failed: {message.get('error', message)}")
                if int(result.get("compact_revision", 0)):
                    raise EtcdCompacted(int(result["compact_revision"]))
                if result.get("canceled"):
                    raise EtcdError(f"watch cancelled: {result.get('cancel_reason', '')}")
                events = result.get("events")
                if events:
                    yield [
                        WatchEvent(kind=e.get("type", "PUT"), kv=KeyValue.from_json(e["kv"]))
                        for e in events
                    ]

    def rotate(self) -> None:
        """Prefer the next endpoint (after the preferred one failed a stream)."""
        self._preferred = (self._preferred + 1) % len(self.endpoints)
