"""The placement table of sharded mode (docs/scaling.md §2.2): which shard owns which queue, and
which nodes hold a replica of which shard, kept in the meta group's etcd (shard 0's group in the
prototype) under `jq/placement/`.

    jq/placement/q/<queue>        -> {"shard": 1, "epoch": 3, "move": {"to": 0, "id": "…", …}}
    jq/placement/r/<shard>/<node> -> that node's HTTP URL (it holds a replica of the shard)

Every node loads the whole table, then watches the prefix from the revision it read, so reads are
local and never wait on the meta group. Every change is a compare-and-swap on the key's
revision: a queue is created only if its key does not exist (`create_revision == 0`: two nodes
that see a new queue at once agree on one shard), and a move flips it only if nobody changed it
since it was read. The table only *routes*: who owns a queue is decided by the shards' own logs
(AdoptQueue, FenceQueue, ReleaseQueue), so a stale view costs a retry, never a wrong answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import msgspec

from jq_tool.engine.etcd_client import EtcdClient, EtcdCompacted, EtcdError, KeyValue
from jq_tool.engine.moves import Placement, Versioned

log = logging.getLogger("jq.placement")

PLACEMENT_PREFIX = b"jq/placement/"
QUEUES_PREFIX = PLACEMENT_PREFIX + b"q/"
REPLICAS_PREFIX = PLACEMENT_PREFIX + b"r/"


_decode_placement = msgspec.json.Decoder(Placement).decode


class PlacementTable:
    """The local copy of the table, kept current by a watch; writes go to etcd by CAS. Also
    the move driver's PlacementStore (engine/moves.py): `get` and `cas` on etcd itself."""

    def __init__(self, etcd: EtcdClient) -> None:
        self.etcd = self._etcd = etcd
        self.queues: dict[str, Placement] = {}
        self._mod_revisions: dict[str, int] = {}  # queue -> its key's mod_revision
        self.replicas: dict[int, dict[str, str]] = {}  # shard -> node -> HTTP URL
        self.revision = 0  # the etcd revision this copy is current to
        self.loaded = False
        self._changed = asyncio.Condition()
        self._watch: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self, timeout: float = 30.0) -> None:
        """Load the table (retrying while the meta group elects a leader), then watch it."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                await self.load()
                break
            except EtcdError as exc:
                if asyncio.get_running_loop().time() >= deadline:
                    log.warning("placement table not loaded yet: %s", exc)
                    break
                await asyncio.sleep(0.5)
        self._watch = asyncio.create_task(self._watch_loop(), name="jq-placement-watch")

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch
        await self._etcd.close()

    async def load(self) -> None:
        kvs, revision = await self._etcd.range(PLACEMENT_PREFIX, prefix=True)
        self.queues.clear()
        self._mod_revisions.clear()
        self.replicas.clear()
        for kv in kvs:
            self._put(kv)
        self.revision = revision
        self.loaded = True
        await self._notify()

    async def _watch_loop(self) -> None:
        while True:
            try:
                if not self.loaded:
                    await self.load()
                async for events in self._etcd.watch(PLACEMENT_PREFIX, self.revision + 1):
                    for event in events:
                        if event.kind == "PUT":
                            self._put(event.kv)
                        else:
                            self._delete(event.kv.key)
                    self.revision = max(self.revision, events[-1].kv.mod_revision)
                    await self._notify()
            except EtcdCompacted:
                self.loaded = False  # read the whole table again
            except (EtcdError, OSError, TimeoutError, msgspec.DecodeError) as exc:
                log.debug("placement watch interrupted: %s", exc)
                self._etcd.rotate()
                await asyncio.sleep(0.2)

    def _put(self, kv: KeyValue) -> None:
        if kv.key.startswith(QUEUES_PREFIX):
            queue = kv.key[len(QUEUES_PREFIX) :].decode()
            if kv.mod_revision >= self._mod_revisions.get(queue, 0):
                self.queues[queue] = _decode_placement(kv.value)
                self._mod_revisions[queue] = kv.mod_revision
        elif kv.key.startswith(REPLICAS_PREFIX):
            shard, _, node = kv.key[len(REPLICAS_PREFIX) :].decode().partition("/")
            if shard.isdigit():
                self.replicas.setdefault(int(shard), {})[node] = kv.value.decode()

    def _delete(self, key: bytes) -> None:
        if key.startswith(QUEUES_PREFIX):
            queue = key[len(QUEUES_PREFIX) :].decode()
            self.queues.pop(queue, None)
            self._mod_revisions.pop(queue, None)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------ reads (local)

    def lookup(self, queue: str) -> Placement | None:
        return self.queues.get(queue)

    def replica_urls(self, shard: int) -> list[str]:
        return sorted(self.replicas.get(shard, {}).values())

    def queue_counts(self, shards: list[int]) -> dict[int, int]:
        counts = dict.fromkeys(shards, 0)
        for placement in self.queues.values():
            if placement.shard in counts:
                counts[placement.shard] += 1
        return counts

    async def wait_for_change(
        self, timeout: float, give_up: Callable[[], Awaitable[object]] | None = None
    ) -> None:
        """Return when the table changes, after `timeout` seconds, or when give_up() does."""

        async def changed() -> None:
            async with self._changed:
                await self._changed.wait()

        waits: set[asyncio.Future[object]] = {asyncio.ensure_future(changed())}
        if give_up is not None:
            waits.add(asyncio.ensure_future(give_up()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    # ------------------------------------------------------------------ reads (from etcd)

    async def refresh(self, queue: str) -> Placement | None:
        """The queue's placement as etcd has it now (after NOT_OWNER: the local copy is behind)."""
        kvs, _ = await self._etcd.range(QUEUES_PREFIX + queue.encode())
        if not kvs:
            return self.queues.get(queue)
        self._put(kvs[0])
        return self.queues.get(queue)

    def mod_revision(self, queue: str) -> int:
        return self._mod_revisions.get(queue, 0)

    # ------------------------------------------------------------------ writes (CAS)

    async def create(self, queue: str, placement: Placement) -> Placement:
        """Place a new queue unless another node placed it first; returns the placement that
        holds (ours, or the winner's)."""
        key = QUEUES_PREFIX + queue.encode()
        if await self._etcd.put_if_unchanged(key, msgspec.json.encode(placement), 0):
            await self.refresh(queue)
            return self.queues.get(queue) or placement
        winner = await self.refresh(queue)
        assert winner is not None, "a placement that exists was read back"
        return winner

    async def get(self, queue: str) -> Versioned:
        """The queue's record as etcd has it now, with the revision a CAS must name."""
        kvs, _ = await self._etcd.range(QUEUES_PREFIX + queue.encode())
        if not kvs:
            return Versioned(None, 0)
        self._put(kvs[0])
        return Versioned(_decode_placement(kvs[0].value), kvs[0].mod_revision)

    async def cas(self, queue: str, expected_revision: int, record: Placement) -> bool:
        """Change a queue's placement if its key is still at `expected_revision` (0: absent)."""
        key = QUEUES_PREFIX + queue.encode()
        value = msgspec.json.encode(record)
        changed = await self._etcd.put_if_unchanged(key, value, expected_revision)
        await self.refresh(queue)
        return changed

    async def register_replica(self, shard: int, node: str, url: str) -> None:
        await self._etcd.put(REPLICAS_PREFIX + f"{shard}/{node}".encode(), url.encode())
        self.replicas.setdefault(shard, {})[node] = url
