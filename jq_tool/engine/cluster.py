"""ClusterEngine: the Engine API (CommandEngine, engine/command_engine.py) with etcd as the log.

Every node runs beside one etcd member (Raft + bbolt: a write is acknowledged once a majority
fsynced it). A node appends batches of commands under `jq/log/` (one etcd put for many
commands: group commit), watches that prefix from its last applied revision and applies every
batch in revision order, so all nodes apply the same commands in the same order. A caller is
answered once its own batch came back through the watch and was applied here. Any node accepts
writes; reads that must be current (get, lease, ack) first catch up with etcd.

One node at a time, elected with an etcd lease on `jq/ticker`, runs the ticker (Expire, Purge)
and log maintenance; its commands are idempotent, so a brief double ticker is harmless. Each node
snapshots its state with the applied revision into its data dir (on CommandEngine's schedule)
and reports that revision under `jq/nodes/<id>`; the ticker publishes its own snapshot to etcd
(engine/cluster_snapshot.py) and deletes and compacts log keys that every node's snapshot has
passed. A node whose revision was compacted away (a new or wiped node) restores from the
published snapshot, then follows the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import msgspec

from jq_tool.core.model import Command
from jq_tool.core.wal_format import read_snapshot
from jq_tool.engine.base import EngineConfig, EngineUnavailable, Health, OutcomeUnknown
from jq_tool.engine.cluster_snapshot import fetch_snapshot, publish_snapshot
from jq_tool.engine.command_engine import CommandEngine, Proposal, now_ms
from jq_tool.engine.etcd_client import (
    EtcdClient,
    EtcdCompacted,
    EtcdError,
    EtcdOutcomeUnknown,
    KeyValue,
)
from jq_tool.engine.etcd_member import EtcdMember

log = logging.getLogger("jq.cluster")

# Every key lives under the engine's prefix: `jq/` (these constants) unless sharded, where a
# shard's keys live under `jq/s/<shard>/` (engine/sharded.py), so several shards can share an
# etcd group and several ClusterEngines one process.
DEFAULT_PREFIX = b"jq/"
LOG_PREFIX = b"jq/log/"
TICKER_KEY = b"jq/ticker"
NODES_PREFIX = b"jq/nodes/"
TICKER_TTL_S = 3  # a dead ticker node is replaced within about this long
MAINTENANCE_EVERY_S = 10.0
APPLY_TIMEOUT_S = 10.0  # a committed batch must come back through the watch within this
# /health knows a lost majority within about PROBE_EVERY_S + PROBE_TIMEOUT_S: a linearizable
# read that etcd's leader serves only after hearing from a majority.
PROBE_EVERY_S = 0.25
PROBE_TIMEOUT_S = 0.5
# A stop's parting calls to etcd (handing the ticker on, reporting the snapshot written at stop)
# are courtesies: the ticker's lease expires by itself within TICKER_TTL_S, and a missing report
# only keeps compaction at the node's previous snapshot. The node stopped last in a whole
# cluster's stop has no majority left: unbounded, it waited the client's timeout for each (~6 s).
STOP_COURTESY_S = 0.5
LOCAL_SNAPSHOT = "cluster.snap"

_batch_encoder = msgspec.msgpack.Encoder()
_batch_decoder = msgspec.msgpack.Decoder(list[Command])
# A batch value is a msgpack list of commands, or ZLIB_MARK + that list deflated (level 1).
# Every member stores, replicates and sends to every watcher each byte (base64 in JSON through
# the gateway): measured here, a 3-member cluster spent ~15% less CPU per put on values half
# the size, and the commands of a batch of small submits deflate to ~40% (~20 µs for 2 KB).
# Big batches (large payloads) stay as they are: deflating them would stall the loop. The mark
# is a msgpack positive fixint, never the start of a list, so older values decode as before.
ZLIB_MARK = b"Z"
COMPRESS_BELOW = 64 * 1024


def encode_batch(records: list[bytes]) -> bytes:
    value = _batch_encoder.encode([msgspec.Raw(record) for record in records])
    if len(value) < COMPRESS_BELOW:
        return ZLIB_MARK + zlib.compress(value, 1)
    return value


def decode_batch(value: bytes) -> list[Command]:
    if value[:1] == ZLIB_MARK:
        value = zlib.decompress(value[1:])
    return _batch_decoder.decode(value)


class NodeInfo(msgspec.Struct):
    snapshot_revision: int
    http_url: str = ""


class ClusterEngine(CommandEngine):
    # Concurrent etcd puts; arrivals meanwhile share the next batch. Each put costs the three
    # members about the same CPU whatever its size, so fewer, larger puts replicate a submit
    # for less: with 8 in flight over gRPC batches were ~15 commands at 64 connections, with
    # 2 ~20, with 1 ~35, and with 1 the nodes and members spent ~15% less CPU per replicated
    # submit and replicated ~15% more submits/s, at the same p99 (bench/cluster_bench.py,
    # alternating runs, docs/benchmarks.md). It is CommandEngine's default, set here because
    # for etcd it is a measured choice.
    APPENDS_IN_FLIGHT = 1

    def __init__(
        self,
        config: EngineConfig,
        *,
        clock: Callable[[], int] = now_ms,
        start_member: bool = True,
        prefix: bytes = DEFAULT_PREFIX,
    ) -> None:
        super().__init__(config, clock=clock)
        if config.cluster is None:
            raise ValueError("ClusterEngine needs a cluster config (cluster mode)")
        cluster = self.cluster = config.cluster
        self.prefix = prefix
        self._log_prefix = prefix + b"log/"
        self._ticker_key = prefix + b"ticker"
        self._nodes_prefix = prefix + b"nodes/"
        self.member = (
            EtcdMember(cluster, config.data_dir)
            if start_member and not cluster.etcd_endpoints
            else None
        )
        self._etcd = EtcdClient(cluster.endpoints(), timeout=3.0)
        self._local_snapshot = config.data_dir / LOCAL_SNAPSHOT
        self._boot = os.urandom(4).hex()  # batch keys stay unique across restarts of a node
        self._batch_seq = 0
        self._inflight: dict[bytes, list[Proposal]] = {}  # log key -> its callers
        self._applied_revision_reached = asyncio.Condition()
        self.applied_revision = 0
        self.role = "follower"
        self._quorum_ok = False
        self._tasks: list[asyncio.Task[None]] = []
        self._puts: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak refs

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        if self.member is not None:
            await self.member.start()
        # Each node keeps its own history, from the Purges it applies (history_store.py).
        await asyncio.to_thread(self.history.open)
        self._load_local_snapshot()
        self._serve()
        self._tasks = [
            asyncio.create_task(self._watch_loop(), name="jq-cluster-watch"),
            asyncio.create_task(self._leadership_loop(), name="jq-cluster-ticker"),
            asyncio.create_task(self._probe_loop(), name="jq-cluster-probe"),
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
        tasks = [*self._tasks, *(task for task in (self._flusher, self._warming) if task)]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._release_all_waiters()
        if self.role == "leader":
            try:
                async with asyncio.timeout(STOP_COURTESY_S):
                    kvs, _ = await self._etcd.range(self._ticker_key)
                    if kvs and kvs[0].value == self.cluster.node_id.encode():
                        await self._etcd.lease_revoke(kvs[0].lease)
            except (EtcdError, TimeoutError) as exc:
                log.info("stop: the ticker's lease is left to expire (%s)",
                         str(exc) or f"etcd did not answer within {STOP_COURTESY_S}s")  # fmt: skip
        with contextlib.suppress(Exception):
            await self._write_snapshot_now()
        await asyncio.to_thread(self.history.close)
        await self._etcd.close()
        if self.member is not None:
            await self.member.stop()
        self._started = False

    def health(self) -> Health:
        if self._fatal is not None:
            return Health(ok=False, role=self.role, reason=self._fatal)
        if not self._started or self._stopping:
            return Health(ok=False, role=self.role, reason="not running")
        if self.member is not None and not self.member.alive():
            return Health(ok=False, role=self.role, reason="etcd member exited")
        if not self._quorum_ok:
            return Health(ok=False, role=self.role, reason="not connected to an etcd majority")
        return Health(ok=True, role=self.role)

    async def _probe_loop(self) -> None:
        """Keep `_quorum_ok` current without waiting for a write to fail: a watch that is
        quiet does not say whether the majority is still there."""
        while True:
            reason = await self._etcd.majority_unreachable(PROBE_TIMEOUT_S)
            if reason is None:
                self._quorum_ok = True
            elif self._quorum_ok:
                self._quorum_ok = False
                log.warning("lost the etcd majority: %s", reason)
            await asyncio.sleep(PROBE_EVERY_S)

    # ------------------------------------------------------------------ the write path

    async def _append(self, batch: list[Proposal]) -> None:
        # The put runs on its own task, which releases the append slot when etcd answered (the
        # flusher waits for the slot, so at most APPENDS_IN_FLIGHT batches are in etcd at once).
        put = asyncio.create_task(self._put_batch(batch))
        self._puts.add(put)
        put.add_done_callback(self._puts.discard)

    async def _put_batch(self, batch: list[Proposal]) -> None:
        self._batch_seq += 1
        key = (
            self._log_prefix
            + f"{self.cluster.node_id}/{self._boot}/{self._batch_seq:012d}".encode()
        )
        # The records already encoded, as they are, in one (deflated) msgpack list.
        value = encode_batch([p.record for p in batch])
        self._inflight[key] = batch
        try:
            started = time.perf_counter()
            try:
                await self._etcd.put(key, value)
                self._quorum_ok = True
                self.log_metrics.append_seconds.observe(time.perf_counter() - started)
                self.log_metrics.batch_commands.observe(len(batch))
            except EtcdError as exc:
                self._quorum_ok = False  # /health says so until a write or the probe succeeds
                self.log_metrics.append_failures += 1
                self._inflight.pop(key, None)
                error: EngineUnavailable
                if isinstance(exc, EtcdOutcomeUnknown):
                    # Proposed, and no answer said what became of it: it may still commit, and
                    # is then applied here like any batch, its callers already told so.
                    error = OutcomeUnknown(f"cluster write outcome unknown: {exc}")
                else:
                    error = EngineUnavailable(f"cluster write refused: {exc}")
                self._refuse(batch, error)
                return
        finally:
            self._append_slots.release()
        if key in self._inflight:
            # Committed: the watch applies it and answers its callers. Only if that takes too
            # long are they told the outcome is unknown (a timer, not a waiting task woken by
            # every applied batch).
            self._loop.call_later(APPLY_TIMEOUT_S, self._apply_overdue, key)

    def _apply_overdue(self, key: bytes) -> None:
        batch = self._inflight.pop(key, None)
        if batch is not None:
            self._refuse(batch, OutcomeUnknown("committed, but not applied here in time"))

    async def _wait_applied(self, revision: int) -> None:
        async with self._applied_revision_reached:
            await self._applied_revision_reached.wait_for(lambda: self.applied_revision >= revision)

    # ------------------------------------------------------------------ the read path

    def _apply_batch(self, kv: KeyValue) -> None:
        """Apply one log batch; its callers are answered when this node proposed it."""
        self._apply_commands(decode_batch(kv.value), self._inflight.pop(kv.key, None))

    async def _watch_loop(self) -> None:
        while True:
            try:
                async for events in self._etcd.watch(self._log_prefix, self.applied_revision + 1):
                    self._quorum_ok = True
                    for event in events:
                        kv = event.kv
                        # A batch key put a second time (a put retried after an unknown
                        # outcome, when both landed) is the same batch: applied once.
                        if (
                            event.kind == "PUT"
                            and kv.mod_revision > self.applied_revision
                            and kv.create_revision == kv.mod_revision
                        ):
                            self._apply_batch(kv)
                    revision = events[-1].kv.mod_revision
                    async with self._applied_revision_reached:
                        self.applied_revision = max(self.applied_revision, revision)
                        self._applied_revision_reached.notify_all()
                    self._applied()
            except EtcdCompacted as exc:
                log.warning("log compacted past revision %d: restoring from the cluster "
                            "snapshot", self.applied_revision)  # fmt: skip
                await self._restore_cluster_snapshot(exc.compact_revision)
            except (EtcdError, OSError, TimeoutError, msgspec.DecodeError, zlib.error) as exc:
                self._quorum_ok = False
                log.debug("watch interrupted: %s", exc)
                self._etcd.rotate()
                await asyncio.sleep(0.2)

    async def _catch_up(self) -> None:
        """Wait until every log batch committed before this call is applied here."""
        try:
            kvs, _ = await self._etcd.range(
                self._log_prefix,
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

    def _snapshot_position(self) -> int:
        return self.applied_revision

    def _snapshot_path(self, position: int) -> Path:
        return self._local_snapshot  # one file, replaced by each newer revision

    async def _snapshot_written(self, position: int) -> None:
        """Report the node's snapshot revision: the ticker compacts the log below the lowest."""
        info = NodeInfo(snapshot_revision=position, http_url=self._http_url())
        try:
            async with asyncio.timeout(STOP_COURTESY_S if self._stopping else None):
                await self._etcd.put(
                    self._nodes_prefix + self.cluster.node_id.encode(), msgspec.json.encode(info)
                )
        except (EtcdError, TimeoutError) as exc:
            if self._stopping:
                log.info("stop: snapshot revision %d not reported (%s)", position,
                         str(exc) or f"etcd did not answer within {STOP_COURTESY_S}s")  # fmt: skip

    def _load_local_snapshot(self) -> None:
        path = self._local_snapshot
        if not path.exists():
            return
        loaded = read_snapshot(path)  # the local WAL's snapshot format; its index = a revision
        if isinstance(loaded, str):
            log.warning("ignoring local snapshot %s (%s); catching up from the cluster",
                        path, loaded)  # fmt: skip
            return
        revision, body = loaded
        self._machine.restore(body)
        self.applied_revision = self._snapshot_at = revision
        log.info("restored local snapshot at revision %d (%d jobs)", revision,
                 self._machine.job_count)  # fmt: skip

    def _http_url(self) -> str:
        return self.cluster.http_peers.get(self.cluster.node_id, "")

    async def _publish_cluster_snapshot(self) -> int:
        """The ticker's snapshot, in etcd, for nodes that have none of their own: its latest
        local snapshot, read from disk, so the loop does not encode the state here. Its revision
        is the one this node reported, so it is never below the compaction floor."""
        loaded: tuple[int, memoryview] | str = "no local snapshot yet"
        with contextlib.suppress(OSError):
            loaded = await asyncio.to_thread(read_snapshot, self._local_snapshot)
        body: bytes | memoryview
        if isinstance(loaded, str):
            revision, body = self.applied_revision, self._machine.snapshot()
        else:
            revision, body = loaded
        await publish_snapshot(self._etcd, revision, body, self.prefix)
        return revision

    async def _restore_cluster_snapshot(self, compact_revision: int) -> None:
        while True:
            try:
                revision, body = await fetch_snapshot(self._etcd, compact_revision, self.prefix)
            except (EtcdError, msgspec.DecodeError) as exc:
                log.warning("cannot restore the cluster snapshot yet: %s", exc)
                await asyncio.sleep(1)
                continue
            self._replaying = True
            try:
                self._machine.restore(body)
            finally:
                self._replaying = False
            self.applied_revision = revision
            log.info("restored the cluster snapshot at revision %d", revision)
            # The restored jobs are cold (core/cold_index.py) and the start's warm-up is done.
            self._start_warm_up()
            # Kept in the data dir, so that a restart need not fetch it again, and reported,
            # so that compaction can pass it: by a forked child, as every periodic snapshot
            # (encoded here, a million jobs held the loop ~2 s).
            if self._snapshot_task is not None:
                await self._snapshot_task  # one writer of the snapshot file at a time
            self._start_snapshot()
            return

    # ------------------------------------------------------------------ the ticker

    async def _leadership_loop(self) -> None:
        while True:
            lease = 0
            try:
                lease = await self._etcd.lease_grant(TICKER_TTL_S)
                if await self._etcd.create_if_absent(
                    self._ticker_key, self.cluster.node_id.encode(), lease=lease
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
            await self._ticker_sleep(min(self.config.lease_check_interval_ms, 1000))
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
        nodes, _ = await self._etcd.range(self._nodes_prefix, prefix=True)
        reported = {
            kv.key[len(self._nodes_prefix) :].decode(): msgspec.json.decode(kv.value, type=NodeInfo)
            for kv in nodes
        }
        if set(self.cluster.peers) - set(reported):
            return  # a member has never reported a snapshot: keep everything for it
        floor = min(info.snapshot_revision for info in reported.values())
        kvs, _ = await self._etcd.range(
            self._log_prefix, prefix=True, keys_only=True, max_mod_revision=floor, limit=10_000
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
