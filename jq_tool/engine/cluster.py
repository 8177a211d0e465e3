"""ClusterEngine: the same Engine API and state machine as LocalEngine, with etcd as the log.

Every node runs beside one etcd member (Raft + bbolt: a write is acknowledged once a majority
fsynced it). A node appends batches of commands under `jq/log/` (one etcd put for many
commands: group commit), watches that prefix from its last applied revision and applies every
batch in revision order, so all nodes apply the same commands in the same order. A caller is
answered once its own batch came back through the watch and was applied here. Any node accepts
writes; reads that must be current (get, lease, ack) first catch up with etcd.

One node at a time, elected with an etcd lease on `jq/ticker`, runs the ticker (Expire, Purge)
and log maintenance; its commands are idempotent, so a brief double ticker is harmless. Each node
snapshots its state with the applied revision into its data dir and reports that revision under
`jq/nodes/<id>`; the ticker publishes its own snapshot to etcd (`jq/snapshot/`) and deletes and
compacts log keys that every node's snapshot has passed. A node whose revision was compacted
away (a new or wiped node) restores from the published snapshot, then follows the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import crc32c
import httpx
import msgspec

from jq_tool.core.model import Command, Result
from jq_tool.core.wal import write_snapshot_file
from jq_tool.core.wal_format import encode_snapshot_header, read_snapshot
from jq_tool.engine.base import EngineUnavailable, Health
from jq_tool.engine.command_engine import CommandEngine, now_ms
from jq_tool.engine.etcd_client import (
    EtcdClient,
    EtcdCompacted,
    EtcdError,
    KeyValue,
)
from jq_tool.engine.etcd_member import ClusterConfig, EtcdMember
from jq_tool.engine.forked_snapshot import SnapshotChildFailed, fork_snapshot
from jq_tool.engine.local import EngineConfig
from jq_tool.engine.metrics import LogMetrics

log = logging.getLogger("jq.cluster")

LOG_PREFIX = b"jq/log/"
TICKER_KEY = b"jq/ticker"
NODES_PREFIX = b"jq/nodes/"
SNAPSHOT_META = b"jq/snapshot/meta"
SNAPSHOT_CHUNKS = b"jq/snapshot/chunks/"
SNAPSHOT_CHUNK_BYTES = 1 << 20  # below etcd's 1.5 MiB request limit
MAX_PUTS_IN_FLIGHT = 8  # concurrent etcd puts; arrivals meanwhile share the next batch
MAX_BATCH_BYTES = 1 << 20
TICKER_TTL_S = 3  # a dead ticker node is replaced within about this long
MAINTENANCE_EVERY_S = 10.0
APPLY_TIMEOUT_S = 10.0  # a committed batch must come back through the watch within this
LOCAL_SNAPSHOT = "cluster.snap"

_batch_encoder = msgspec.msgpack.Encoder()
_batch_decoder = msgspec.msgpack.Decoder(list[Command])


class NodeInfo(msgspec.Struct):
    snapshot_revision: int
    http_url: str = ""


class SnapshotMeta(msgspec.Struct):
    revision: int
    chunks: int
    size: int
    crc: int


class _Proposal:
    __slots__ = ("command", "future")

    def __init__(self, command: Command, future: asyncio.Future[Result]) -> None:
        self.command = command
        self.future = future


class ClusterEngine(CommandEngine):
    def __init__(
        self,
        config: EngineConfig,
        cluster: ClusterConfig,
        *,
        clock: Callable[[], int] = now_ms,
        start_member: bool = True,
    ) -> None:
        super().__init__(lease_ms=config.lease_ms, machine_config=config.machine, clock=clock)
        self.config = config
        self.cluster = cluster
        self.member = (
            EtcdMember(cluster, config.data_dir)
            if start_member and not cluster.etcd_endpoints
            else None
        )
        self._etcd = EtcdClient(cluster.endpoints(), timeout=3.0)
        self._boot = os.urandom(4).hex()  # batch keys stay unique across restarts of a node
        self._batch_seq = 0
        self._pending: list[_Proposal] = []
        self._inflight: dict[bytes, list[_Proposal]] = {}
        self._slots = asyncio.Semaphore(MAX_PUTS_IN_FLIGHT)
        self._wakeup = asyncio.Event()
        self._applied = asyncio.Condition()
        self.applied_revision = 0
        self._snapshot_revision = 0
        self._applied_since_snapshot = 0
        self._snapshot_task: asyncio.Task[None] | None = None  # a forked child writing one
        self.role = "follower"
        self._quorum_ok = False
        self._tasks: list[asyncio.Task[None]] = []
        self._puts: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak refs
        self._started = False
        self.log_metrics = LogMetrics()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        if self.member is not None:
            await self.member.start()
        self._load_local_snapshot()
        self._started = True
        self._tasks = [
            asyncio.create_task(self._watch_loop(), name="jq-cluster-watch"),
            asyncio.create_task(self._flush_loop(), name="jq-cluster-flush"),
            asyncio.create_task(self._leadership_loop(), name="jq-cluster-ticker"),
        ]
        # Serve once caught up with the log, when a majority is reachable; without one the
        # node still starts (writes answer 503 until the cluster forms).
        with contextlib.suppress(EngineUnavailable, TimeoutError):
            await asyncio.wait_for(self._catch_up(), 30)

    async def stop(self) -> None:
        if not self._started or self._stopping:
            return
        self._stopping = True
        self._wakeup.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._release_all_waiters()
        if self.role == "leader":
            with contextlib.suppress(EtcdError):
                kvs, _ = await self._etcd.range(TICKER_KEY)
                if kvs and kvs[0].value == self.cluster.node_id.encode():
                    await self._etcd.lease_revoke(kvs[0].lease)
        with contextlib.suppress(Exception):
            await self._write_local_snapshot()
        await self._etcd.close()
        if self.member is not None:
            await self.member.stop()
        self._started = False

    def health(self) -> Health:
        if not self._started or self._stopping:
            return Health(ok=False, role=self.role, reason="not running")
        if self.member is not None and not self.member.alive():
            return Health(ok=False, role=self.role, reason="etcd member exited")
        if not self._quorum_ok:
            return Health(ok=False, role=self.role, reason="not connected to an etcd majority")
        return Health(ok=True, role=self.role)

    # ------------------------------------------------------------------ the write path

    async def _propose(self, command: Command) -> Result:
        if not self._started or self._stopping:
            raise EngineUnavailable("engine is not running")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append(_Proposal(command, future))
        self._wakeup.set()
        return await future  # cancelling the caller drops only the answer, as in LocalEngine

    async def _flush_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                await self._slots.acquire()
                batch, self._pending = self._pending, []
                put = asyncio.create_task(self._put_batch(batch))
                self._puts.add(put)
                put.add_done_callback(self._puts.discard)

    async def _put_batch(self, batch: list[_Proposal]) -> None:
        self._batch_seq += 1
        key = LOG_PREFIX + f"{self.cluster.node_id}/{self._boot}/{self._batch_seq:012d}".encode()
        value = _batch_encoder.encode([p.command for p in batch])
        self._inflight[key] = batch
        try:
            started = time.perf_counter()
            try:
                revision = await self._etcd.put(key, value)
                self._quorum_ok = True
                self.log_metrics.append_seconds.observe(time.perf_counter() - started)
                self.log_metrics.batch_commands.observe(len(batch))
            except EtcdError as exc:
                self._quorum_ok = False  # /health says so until a write or read succeeds
                self.log_metrics.append_failures += 1
                # The outcome is unknown (the put may still commit): nothing is acknowledged.
                # Retried submits carry idempotency keys; a lost lease simply expires.
                self._inflight.pop(key, None)
                error = EngineUnavailable(f"cluster write failed: {exc}")
                for proposal in batch:
                    if not proposal.future.done():
                        proposal.future.set_exception(error)
                return
        finally:
            self._slots.release()
        if self.applied_revision < revision:
            try:
                await asyncio.wait_for(self._wait_applied(revision), APPLY_TIMEOUT_S)
            except TimeoutError:
                self._inflight.pop(key, None)
                error = EngineUnavailable("committed, but not applied here in time")
                for proposal in batch:
                    if not proposal.future.done():
                        proposal.future.set_exception(error)

    async def _wait_applied(self, revision: int) -> None:
        async with self._applied:
            await self._applied.wait_for(lambda: self.applied_revision >= revision)

    # ------------------------------------------------------------------ the read path

    def _apply_batch(self, kv: KeyValue) -> None:
        commands = _batch_decoder.decode(kv.value)
        results = [self._machine.apply(command) for command in commands]
        batch = self._inflight.pop(kv.key, None)
        if batch is not None:
            for proposal, result in zip(batch, results, strict=True):
                if not proposal.future.done():
                    proposal.future.set_result(result)
        self._applied_since_snapshot += len(commands)

    async def _watch_loop(self) -> None:
        while True:
            try:
                async for events in self._etcd.watch(LOG_PREFIX, self.applied_revision + 1):
                    self._quorum_ok = True
                    for event in events:
                        if event.kind == "PUT" and event.kv.mod_revision > self.applied_revision:
                            self._apply_batch(event.kv)
                    revision = events[-1].kv.mod_revision
                    async with self._applied:
                        self.applied_revision = max(self.applied_revision, revision)
                        self._applied.notify_all()
                    self._wake_lease_waiters()
                    if self._applied_since_snapshot >= self.config.snapshot_every:
                        self._start_local_snapshot()
            except EtcdCompacted as exc:
                log.warning("log compacted past revision %d: restoring from the cluster "
                            "snapshot", self.applied_revision)  # fmt: skip
                await self._restore_cluster_snapshot(exc.compact_revision)
            except (EtcdError, httpx.HTTPError, OSError) as exc:
                self._quorum_ok = False
                log.debug("watch interrupted: %s", exc)
                self._etcd.rotate()
                await asyncio.sleep(0.2)

    async def _catch_up(self) -> None:
        """Wait until every log batch committed before this call is applied here."""
        try:
            kvs, _ = await self._etcd.range(
                LOG_PREFIX,
                prefix=True,
                keys_only=True,
                min_mod_revision=self.applied_revision + 1,
                newest_first=True,
                limit=1,
            )
        except EtcdError as exc:
            self._quorum_ok = False
            raise EngineUnavailable(f"cluster unreachable: {exc}") from exc
        if kvs:
            try:
                await asyncio.wait_for(self._wait_applied(kvs[0].mod_revision), APPLY_TIMEOUT_S)
            except TimeoutError as exc:
                raise EngineUnavailable("could not catch up with the cluster log") from exc
        self._quorum_ok = True

    # ------------------------------------------------------------------ snapshots

    def _snapshot_path(self) -> Path:
        return self.config.data_dir / LOCAL_SNAPSHOT

    def _load_local_snapshot(self) -> None:
        path = self._snapshot_path()
        if not path.exists():
            return
        loaded = read_snapshot(path)  # the local WAL's snapshot format; its index = a revision
        if isinstance(loaded, str):
            log.warning("ignoring local snapshot %s (%s); catching up from the cluster",
                        path, loaded)  # fmt: skip
            return
        revision, body = loaded
        self._machine.restore(body)
        self.applied_revision = self._snapshot_revision = revision
        log.info("restored local snapshot at revision %d (%d jobs)", revision,
                 self._machine.job_count)  # fmt: skip

    def _start_local_snapshot(self) -> None:
        """Called by the watch loop, where the state matches applied_revision exactly. A forked
        child (engine/forked_snapshot.py) encodes and writes it, so the loop never stalls on a
        snapshot while the node serves; a background task reports it when it is on disk."""
        revision = self.applied_revision
        if revision <= self._snapshot_revision or self._snapshot_task is not None:
            return
        self._applied_since_snapshot = 0
        try:
            child = fork_snapshot(self._machine.snapshot, self._snapshot_path(), revision)
        except OSError as exc:  # no fork: EAGAIN, ENOMEM
            log.error("local snapshot failed, will retry: %s", exc)
            return
        self._snapshot_task = asyncio.create_task(
            self._finish_local_snapshot(revision, asyncio.to_thread(child.wait)),
            name="jq-cluster-snapshot",
        )

    async def _finish_local_snapshot(self, revision: int, written: Awaitable[None]) -> None:
        try:
            await written
        except (OSError, SnapshotChildFailed) as exc:
            log.error("local snapshot failed, will retry: %s", exc)
            return
        finally:
            self._snapshot_task = None
        await self._report_snapshot(revision)

    async def _write_local_snapshot(self) -> None:
        """In process: at stop, and right after restoring the cluster snapshot."""
        if self._snapshot_task is not None:
            await self._snapshot_task  # one writer of the snapshot file at a time
        revision = self.applied_revision
        if revision <= self._snapshot_revision:
            return
        body = self._machine.snapshot()
        self._applied_since_snapshot = 0
        header = encode_snapshot_header(revision, body)
        await asyncio.to_thread(write_snapshot_file, self._snapshot_path(), header, body)
        await self._report_snapshot(revision)

    async def _report_snapshot(self, revision: int) -> None:
        self._snapshot_revision = revision
        info = NodeInfo(snapshot_revision=revision, http_url=self._http_url())
        with contextlib.suppress(EtcdError):
            await self._etcd.put(
                NODES_PREFIX + self.cluster.node_id.encode(), msgspec.json.encode(info)
            )

    def _http_url(self) -> str:
        return self.cluster.http_peers.get(self.cluster.node_id, "")

    async def _publish_cluster_snapshot(self) -> int:
        """The ticker's snapshot, in etcd, for nodes that have none of their own: its latest
        local snapshot, read from disk, so the loop does not encode the state here. Its revision
        is the one this node reported, so it is never below the compaction floor."""
        loaded: tuple[int, bytes] | str = "no local snapshot yet"
        with contextlib.suppress(OSError):
            loaded = await asyncio.to_thread(read_snapshot, self._snapshot_path())
        if isinstance(loaded, str):
            revision, body = self.applied_revision, self._machine.snapshot()
        else:
            revision, body = loaded
        chunks = [
            body[i : i + SNAPSHOT_CHUNK_BYTES] for i in range(0, len(body), SNAPSHOT_CHUNK_BYTES)
        ] or [b""]
        base = SNAPSHOT_CHUNKS + f"{revision:020d}/".encode()
        for number, chunk in enumerate(chunks):
            await self._etcd.put(base + f"{number:06d}".encode(), chunk)
        meta = SnapshotMeta(revision=revision, chunks=len(chunks), size=len(body),
                            crc=crc32c.crc32c(body))  # fmt: skip
        previous, _ = await self._etcd.range(SNAPSHOT_META)
        await self._etcd.put(SNAPSHOT_META, msgspec.json.encode(meta))
        if previous:
            old = msgspec.json.decode(previous[0].value, type=SnapshotMeta)
            if old.revision != revision:
                old_base = SNAPSHOT_CHUNKS + f"{old.revision:020d}/".encode()
                kvs, _ = await self._etcd.range(old_base, prefix=True, keys_only=True)
                await self._etcd.delete([kv.key for kv in kvs])
        return revision

    async def _restore_cluster_snapshot(self, compact_revision: int) -> None:
        while True:
            try:
                kvs, _ = await self._etcd.range(SNAPSHOT_META)
                if not kvs:
                    raise EtcdError("no cluster snapshot published yet")
                meta = msgspec.json.decode(kvs[0].value, type=SnapshotMeta)
                base = SNAPSHOT_CHUNKS + f"{meta.revision:020d}/".encode()
                chunks, _ = await self._etcd.range(base, prefix=True)
                body = b"".join(kv.value for kv in sorted(chunks, key=lambda kv: kv.key))
                if len(body) != meta.size or crc32c.crc32c(body) != meta.crc:
                    raise EtcdError("cluster snapshot changed while reading it")
                if meta.revision < compact_revision - 1:
                    raise EtcdError("cluster snapshot older than the compaction")
                self._replaying = True
                try:
                    self._machine.restore(body)
                finally:
                    self._replaying = False
                self.applied_revision = meta.revision
                log.info("restored the cluster snapshot at revision %d", meta.revision)
                await self._write_local_snapshot()
                return
            except (EtcdError, msgspec.DecodeError) as exc:
                log.warning("cannot restore the cluster snapshot yet: %s", exc)
                await asyncio.sleep(1)

    # ------------------------------------------------------------------ the ticker

    async def _leadership_loop(self) -> None:
        while True:
            lease = 0
            try:
                lease = await self._etcd.lease_grant(TICKER_TTL_S)
                if await self._etcd.create_if_absent(
                    TICKER_KEY, self.cluster.node_id.encode(), lease=lease
                ):
                    self.role = "leader"
                    log.info("entering Leader state (node %s runs the ticker)",
                             self.cluster.node_id)  # fmt: skip
                    await self._lead(lease)
                else:
                    await self._etcd.lease_revoke(lease)
                    lease = 0
                    await asyncio.sleep(1.0)
            except (EtcdError, EngineUnavailable) as exc:
                log.debug("ticker election: %s", exc)
                await asyncio.sleep(0.5)
            if self.role == "leader":
                log.info("entering Follower state (node %s)", self.cluster.node_id)
                self.role = "follower"
            if lease:
                with contextlib.suppress(EtcdError):
                    await self._etcd.lease_revoke(lease)

    async def _lead(self, lease: int) -> None:
        """Keep the ticker lease alive and do the ticker's work until the lease is lost."""
        last_keepalive = last_maintenance = time.monotonic()
        self._last_purge = self._clock()
        while True:
            # At most a second between two looks, so the lease (TTL 3 s) is kept alive.
            await asyncio.sleep(self._ticker_pause_ms(min(self.config.tick_ms, 1000)) / 1000)
            if time.monotonic() - last_keepalive >= 1.0:
                if await self._etcd.lease_keepalive(lease) <= 0:
                    return
                last_keepalive = time.monotonic()
            await self._tick(self.config.retention_ms)
            if time.monotonic() - last_maintenance >= MAINTENANCE_EVERY_S:
                last_maintenance = time.monotonic()
                await self._compact_log()

    async def _compact_log(self) -> None:
        """Delete and compact log keys that every node's snapshot (and the published cluster
        snapshot) has passed, so etcd does not grow forever."""
        nodes, _ = await self._etcd.range(NODES_PREFIX, prefix=True)
        reported = {
            kv.key[len(NODES_PREFIX) :].decode(): msgspec.json.decode(kv.value, type=NodeInfo)
            for kv in nodes
        }
        if set(self.cluster.peers) - set(reported):
            return  # a member has never reported a snapshot: keep everything for it
        floor = min(info.snapshot_revision for info in reported.values())
        kvs, _ = await self._etcd.range(
            LOG_PREFIX, prefix=True, keys_only=True, max_mod_revision=floor, limit=10_000
        )
        if not kvs:
            return
        published = await self._publish_cluster_snapshot()
        floor = min(floor, published)
        doomed = [kv.key for kv in kvs if kv.mod_revision <= floor]
        for i in range(0, len(doomed), 100):
            await self._etcd.delete(doomed[i : i + 100])
        await self._etcd.compact(floor)
        log.info("compacted the cluster log up to revision %d (%d batches)", floor, len(doomed))
