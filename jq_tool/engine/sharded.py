"""ShardedEngine (prototype of docs/scaling.md §2): the Engine API over several shards, each an
independent replicated log + state machine (a `ClusterEngine` under its own key prefix
`jq/s/<shard>/`, on its own etcd group), with queues spread over them by the placement table
(engine/placement.py).

A node runs one ClusterEngine per shard it holds a replica of (SHARD_REPLICAS, default every
shard), all in its one event loop. A call that names a queue goes to the queue's shard; a new
queue is placed on the least loaded shard this node holds (created in the table by CAS, so two
nodes agree); a call that names a job goes to the held shard that has the job in memory (after
a move, the shard the job moved to), else to the shard its id names. A call for a shard this
node does not hold raises `ShardNotHeld`: the server forwards the request (server/forward.py).
A shard's state machine refusing a command because it does not own the queue (NOT_OWNER: this
node's table was behind) or because the queue is being moved (QUEUE_MOVING) is not shown to the
caller: the call is retried after re-reading the placement, for up to MOVE_HOLD_S.

Reads that span queues (stats, lists, dead-letter groups, events, schedules) merge the held
shards. A schedule lives on its queue's shard (its ticker fires it; a move takes it along).
A shard without a quorum stops its own queues only: calls routed to it answer 503, the other
shards' queues do not notice.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator
from typing import TYPE_CHECKING, TypeVar

import msgspec

from jq_tool.core.job_ids import shard_of_job_id
from jq_tool.core.model import (
    AdoptQueue,
    DeadGroupAction,
    Error,
    ErrorCode,
    Job,
    JobState,
    QueueSettings,
    ReleaseQueue,
    Result,
    Schedule,
    ScheduleSpec,
    StartShard,
)
from jq_tool.core.search import JobFilter
from jq_tool.core.state_machine import Counters, QueueStats, ScheduleStats, Stats
from jq_tool.engine.base import (
    CommandRejected,
    DeadGroupOutcome,
    DeadGroupSummary,
    EngineConfig,
    EngineUnavailable,
    Explanation,
    Health,
    JobEvent,
    JobSpec,
    LeaseNext,
    MoveRefused,
    QueueChange,
    QueueLatency,
    RetentionStats,
    ScheduleChanges,
    Settlement,
    ShardNotHeld,
    SubmitOutcome,
)
from jq_tool.engine.cluster import ClusterEngine
from jq_tool.engine.command_engine import now_ms
from jq_tool.engine.etcd_client import EtcdClient, EtcdError
from jq_tool.engine.moves import EngineShard, MoveError, MoveOutcome, Placement, QueueMover
from jq_tool.engine.placement import PlacementTable

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("jq.sharded")

T = TypeVar("T")

# How long a call refused with NOT_OWNER or QUEUE_MOVING is held and retried (§2.6 step 6).
MOVE_HOLD_S = 2.0
LONG_POLL_SLICE_S = 1.0  # a long poll looks at the placement again this often
START_TIMEOUT_S = 60.0  # a shard's group may still be electing its first leader
MOVE_LEASE_TTL_S = 10  # one driver per move: a dead driver's lease lapses, another may resume
RETRY_PAUSE_S = 0.05
# The state machine's refusals that mean "ask again, elsewhere or later" (docs/scaling.md §2.1).
NOT_OWNER = "not_owner"
QUEUE_MOVING = "queue_moving"
_REROUTE = frozenset({NOT_OWNER, QUEUE_MOVING})
MOVES_PREFIX = b"jq/moves/"  # in the meta group: who drives a queue's move
# How often a node looks for moves whose driver died (its jq/moves/<q> key lapsed with its lease).
MOVE_RECONCILE_INTERVAL_S = 2.0


def shard_prefix(shard: int) -> bytes:
    return f"jq/s/{shard}/".encode()


def shard_config(config: EngineConfig, shard: int, endpoints: tuple[str, ...]) -> EngineConfig:
    """One shard's engine config: its own data dir under the node's, its own etcd group."""
    assert config.cluster is not None
    cluster = msgspec.structs.replace(config.cluster, etcd_endpoints=endpoints, peers={})
    return msgspec.structs.replace(
        config, data_dir=config.data_dir / f"shard-{shard}", cluster=cluster
    )


def _rerouted(exc: object) -> bool:
    return isinstance(exc, CommandRejected) and exc.code in _REROUTE


class ShardedEngine:
    def __init__(
        self,
        config: EngineConfig,
        shards: dict[int, tuple[str, ...]],
        held: tuple[int, ...] | None = None,
        *,
        clock: Callable[[], int] = now_ms,
        move_pause_after_step: str = "",
    ) -> None:
        if config.cluster is None or 0 not in shards:
            raise ValueError("ShardedEngine needs a cluster config and shard 0")
        self.config = config
        self.node_id = config.cluster.node_id
        self.http_url = config.cluster.http_peers.get(self.node_id, "")
        self.shard_ids = sorted(shards)
        held = tuple(self.shard_ids) if held is None else held
        self.engines: dict[int, ClusterEngine] = {
            shard: ClusterEngine(
                shard_config(config, shard, shards[shard]), clock=clock, prefix=shard_prefix(shard)
            )
            for shard in held
        }
        for shard, engine in self.engines.items():
            engine.shard = shard  # its job ids name it
        self.placement = PlacementTable(EtcdClient(shards[0], timeout=3.0))
        self._creating: dict[str, asyncio.Lock] = {}
        self._started = False
        self._reconciler: asyncio.Task[None] | None = None
        self._after_move_step = _pause_hook(move_pause_after_step)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.placement.start()
        await asyncio.gather(*(engine.start() for engine in self.engines.values()))
        await asyncio.gather(*(self._start_shard(shard) for shard in self.engines))
        for shard in self.engines:
            with contextlib.suppress(EtcdError):
                await self.placement.register_replica(shard, self.node_id, self.http_url)
        self._reconciler = asyncio.create_task(self._reconcile_loop(), name="jq-move-reconciler")
        self._started = True

    async def _start_shard(self, shard: int) -> None:
        """Ownership on: StartShard is the first command of a shard's log (whichever node logs
        it first; a repeat changes nothing). Until it is applied a shard serves no request."""
        engine = self.engines[shard]
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                result = await engine.propose(StartShard(shard, engine._clock()))
            except EngineUnavailable as exc:
                if time.monotonic() >= deadline:
                    raise EngineUnavailable(f"shard {shard} could not start: {exc}") from exc
                await asyncio.sleep(0.5)
                continue
            if isinstance(result, Error):
                raise EngineUnavailable(f"shard {shard}'s log is not shard {shard}'s: {result}")
            return

    async def stop(self) -> None:
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler
        await asyncio.gather(*(engine.stop() for engine in self.engines.values()))
        await self.placement.stop()
        self._started = False

    def watch_requests(self, requests: Collection[asyncio.Task[None]]) -> None:
        """Nothing: the shards' engines replicate through etcd and have no lone path."""

    def health(self) -> Health:
        """Ok when this node can route (its placement table is loaded); each held shard's own
        health is in `shards`, so a load balancer keeps a node whose one shard is down."""
        shards = {str(shard): engine.health() for shard, engine in self.engines.items()}
        role = "leader" if any(h.role == "leader" for h in shards.values()) else "follower"
        if not self.placement.loaded:
            return Health(False, role, "placement table not loaded", shards)
        return Health(True, role, None, shards)

    # ------------------------------------------------------------------ routing

    def _not_held(self, shard: int) -> ShardNotHeld:
        urls = [url for url in self.placement.replica_urls(shard) if url != self.http_url]
        return ShardNotHeld(shard, urls)

    def _engine(self, shard: int) -> ClusterEngine:
        engine = self.engines.get(shard)
        if engine is None:
            raise self._not_held(shard)
        return engine

    def shard_of_queue(self, queue: str) -> int | None:
        placement = self.placement.lookup(queue)
        return None if placement is None else placement.shard

    async def _place(self, queue: str) -> Placement:
        """The queue's placement, placing a new queue on the least loaded shard this node
        holds (any shard when it holds none: the request is then forwarded there)."""
        placement = self.placement.lookup(queue)
        if placement is not None:
            return placement
        lock = self._creating.setdefault(queue, asyncio.Lock())
        try:
            async with lock:
                try:
                    placement = self.placement.lookup(queue) or await self.placement.refresh(queue)
                    if placement is not None:
                        return placement
                    candidates = sorted(self.engines) or self.shard_ids
                    counts = self.placement.queue_counts(candidates)
                    # Ties go by the queue's name, so queues created at once on several
                    # nodes (each seeing the same counts) still spread.
                    spin = zlib.crc32(queue.encode())
                    shard = min(
                        candidates,
                        key=lambda s: (counts[s], (candidates.index(s) - spin) % len(candidates)),
                    )
                    # The shard's log adopts the queue first, then the table names it: the
                    # table never routes to a shard that would refuse the queue.
                    engine = self._engine(shard)
                    _owned(await engine.propose(AdoptQueue(queue, 1, "", engine._clock())))
                    placed = await self.placement.create(queue, Placement(shard))
                    if placed.shard != shard:
                        # Another node placed it first, elsewhere: give the empty one back.
                        await engine.propose(ReleaseQueue(queue, "", placed.shard, engine._clock()))
                    return placed
                except EtcdError as exc:
                    raise EngineUnavailable(f"placement table unavailable: {exc}") from exc
        finally:
            if not lock.locked():
                self._creating.pop(queue, None)

    async def _for_queue(
        self, queue: str, call: Callable[[ClusterEngine], Awaitable[T]], *, create: bool = True
    ) -> T:
        """Run `call` on the queue's shard; NOT_OWNER and QUEUE_MOVING re-route it."""
        deadline = time.monotonic() + MOVE_HOLD_S
        while True:
            placement = await self._place(queue) if create else self.placement.lookup(queue)
            shard = placement.shard if placement is not None else self.shard_ids[0]
            try:
                return await call(self._engine(shard))
            except CommandRejected as exc:
                if not _rerouted(exc) or time.monotonic() >= deadline:
                    raise
            await self._reroute_pause(queue)

    async def _reroute_pause(self, queue: str | None) -> None:
        if queue is not None:
            with contextlib.suppress(EtcdError):
                await self.placement.refresh(queue)
        await asyncio.sleep(RETRY_PAUSE_S)

    def _engine_for_job(self, job_id: str) -> ClusterEngine:
        """The held shard that has the job now (the one its queue is placed on, when a move
        left it on two); else the shard its id names (which catches up with its log, or
        knows where the job's queue moved); a forward when this node does not hold that."""
        holding = [engine for engine in self.engines.values() if engine.holds(job_id)]
        if len(holding) == 1:
            return holding[0]
        if holding:
            owner = self.shard_of_queue(holding[0].queue_job_of(job_id) or "")
            engine = self.engines.get(owner) if owner is not None else None
            return engine if engine in holding else holding[0]
        shard = shard_of_job_id(job_id)
        if shard is None or shard not in self.shard_ids:
            shard = self.shard_ids[0]  # not a sharded id: nobody has it, that shard says so
        return self._engine(shard)

    async def _for_job(self, job_id: str, call: Callable[[ClusterEngine], Awaitable[T]]) -> T:
        deadline = time.monotonic() + MOVE_HOLD_S
        while True:
            engine = self._engine_for_job(job_id)
            try:
                return await call(engine)
            except CommandRejected as exc:
                if not _rerouted(exc) or time.monotonic() >= deadline:
                    raise
            await self._reroute_pause(engine.queue_job_of(job_id))

    # ------------------------------------------------------------------ jobs

    async def submit(self, spec: JobSpec) -> SubmitOutcome:
        return (await self.submit_many([spec]))[0]

    async def submit_many(self, specs: builtins.list[JobSpec]) -> builtins.list[SubmitOutcome]:
        if any(p.startswith("$") for spec in specs for p in spec.depends_on):
            # "$N" names an entry of the same batch: the batch must stay one command.
            shards = {(await self._place(spec.queue)).shard for spec in specs}
            if len(shards) > 1:
                raise CommandRejected(
                    ErrorCode.INVALID, "a batch whose jobs depend on each other must use queues "
                    "of one shard",
                )  # fmt: skip
        outcomes: builtins.list[SubmitOutcome | None] = [None] * len(specs)
        todo = list(range(len(specs)))
        deadline = time.monotonic() + MOVE_HOLD_S
        while True:
            groups: dict[int, builtins.list[int]] = {}
            for index in todo:
                groups.setdefault((await self._place(specs[index].queue)).shard, []).append(index)
            engines = {shard: self._engine(shard) for shard in groups}
            results = await asyncio.gather(
                *(engines[s].submit_many([specs[i] for i in idx]) for s, idx in groups.items())
            )
            todo = []
            for (_, indexes), answers in zip(groups.items(), results, strict=True):
                for index, outcome in zip(indexes, answers, strict=True):
                    outcomes[index] = outcome
                    if outcome.code in _REROUTE:
                        todo.append(index)
            if not todo or time.monotonic() >= deadline:
                break
            for index in todo:
                await self._reroute_pause(specs[index].queue)
        return [outcome for outcome in outcomes if outcome is not None]

    async def lease(
        self,
        queue: str,
        *,
        max_jobs: int = 1,
        lease_ms: int | None = None,
        wait_ms: int = 0,
        give_up: Callable[[], Awaitable[object]] | None = None,
        worker: str | None = None,
    ) -> builtins.list[Job]:
        """The queue's shard leases. A long poll waits in slices of LONG_POLL_SLICE_S on the
        shard the placement names, looking again between them: a queue that was placed or
        moved meanwhile is waited on at its new place. A slice ends by its own timeout, never by
        cancelling a lease that may be in flight (its jobs would be leased and not answered)."""
        deadline = time.monotonic() + wait_ms / 1000
        gave_up = asyncio.Event()
        watching: asyncio.Future[None] | None = None
        if give_up is not None and wait_ms > 0:
            watching = asyncio.ensure_future(self._set_when_done(give_up, gave_up))

        async def given_up() -> None:
            await gave_up.wait()

        try:
            while True:
                placement = self.placement.lookup(queue)
                remaining = deadline - time.monotonic()
                if placement is None:
                    if remaining <= 0 or gave_up.is_set():
                        return []
                    # A queue nobody has placed holds no job yet: wait for its first submit.
                    await self.placement.wait_for_change(min(remaining, 1.0), given_up)
                    continue
                slice_ms = max(min(int(remaining * 1000), int(LONG_POLL_SLICE_S * 1000)), 0)
                try:
                    jobs = await self._engine(placement.shard).lease(
                        queue,
                        max_jobs=max_jobs,
                        lease_ms=lease_ms,
                        wait_ms=slice_ms,
                        give_up=given_up if watching is not None else None,
                        worker=worker,
                    )
                except CommandRejected as exc:
                    if not _rerouted(exc) or time.monotonic() >= deadline + MOVE_HOLD_S:
                        raise
                    await self._reroute_pause(queue)
                    continue
                if jobs or gave_up.is_set() or time.monotonic() >= deadline:
                    return jobs
        finally:
            if watching is not None:
                watching.cancel()

    @staticmethod
    async def _set_when_done(give_up: Callable[[], Awaitable[object]], flag: asyncio.Event) -> None:
        await give_up()
        flag.set()

    async def ack(self, job_id: str, *, lease_id: str | None, result: str | None) -> Job:
        return await self._for_job(
            job_id, lambda e: e.ack(job_id, lease_id=lease_id, result=result)
        )

    async def fail(
        self, job_id: str, *, lease_id: str | None, error: str, retry: bool = True
    ) -> Job:
        return await self._for_job(
            job_id, lambda e: e.fail(job_id, lease_id=lease_id, error=error, retry=retry)
        )

    async def settle_many(
        self, settlements: builtins.list[Settlement], *, lease_next: LeaseNext | None = None
    ) -> tuple[builtins.list[Job | CommandRejected], builtins.list[Job]]:
        outcomes: builtins.list[Job | CommandRejected] = [
            CommandRejected(ErrorCode.INVALID, "not settled")
        ] * len(settlements)
        todo = list(range(len(settlements)))
        leased: builtins.list[Job] = []
        deadline = time.monotonic() + MOVE_HOLD_S
        while True:
            groups: dict[ClusterEngine, builtins.list[int]] = {}
            for index in todo:
                groups.setdefault(self._engine_for_job(settlements[index].job_id), []).append(index)
            calls = [
                engine.settle_many([settlements[i] for i in indexes])
                for engine, indexes in groups.items()
            ]
            answers = await asyncio.gather(*calls)
            todo = []
            for indexes, (settled, _) in zip(groups.values(), answers, strict=True):
                for index, outcome in zip(indexes, settled, strict=True):
                    outcomes[index] = outcome
                    if _rerouted(outcome):
                        todo.append(index)
            if not todo or time.monotonic() >= deadline:
                break
            await asyncio.sleep(RETRY_PAUSE_S)
        if lease_next is not None and self.placement.lookup(lease_next.queue) is not None:
            # After the settlements: the worker's slots are free whatever their outcomes.
            next_ = lease_next
            _, leased = await self._for_queue(
                next_.queue, lambda e: e.settle_many([], lease_next=next_), create=False
            )
        return outcomes, leased

    async def extend(self, job_id: str, *, lease_id: str | None, lease_ms: int | None) -> Job:
        return await self._for_job(
            job_id, lambda e: e.extend(job_id, lease_id=lease_id, lease_ms=lease_ms)
        )

    async def release(self, job_id: str, *, lease_id: str | None, delay_ms: int = 0) -> Job:
        return await self._for_job(
            job_id, lambda e: e.release(job_id, lease_id=lease_id, delay_ms=delay_ms)
        )

    async def cancel(self, job_id: str) -> Job:
        return await self._for_job(job_id, lambda e: e.cancel(job_id))

    async def requeue(self, job_id: str) -> Job:
        return await self._for_job(job_id, lambda e: e.requeue(job_id))

    async def get(self, job_id: str) -> Job | None:
        engine = self._engine_for_job(job_id)
        job = await engine.get(job_id)
        if job is None:
            # Not where its id points: its queue moved (the shard keeps only a stub). A miss
            # is rare (a 404), so the other held shards are asked, each caught up.
            for other in self.engines.values():
                if other is not engine:
                    job = await other.get(job_id)
                    if job is not None:
                        return job
        return job

    async def get_finished(self, job_id: str) -> Job | None:
        for engine in self.engines.values():
            job = await engine.get_finished(job_id)
            if job is not None:
                return job
        return None

    async def catch_up(self) -> None:
        await asyncio.gather(*(engine.catch_up() for engine in self.engines.values()))

    async def bulk(self, action: str, job_ids: builtins.list[str]) -> builtins.list[str]:
        groups: dict[ClusterEngine, builtins.list[str]] = {}
        for job_id in job_ids:
            groups.setdefault(self._engine_for_job(job_id), []).append(job_id)
        changed: builtins.list[str] = []
        for engine, ids in groups.items():
            changed.extend(await engine.bulk(action, ids))
        return changed

    async def progress(
        self, job_id: str, *, lease_id: str | None, percent: float, note: str
    ) -> Job:
        return await self._for_job(
            job_id, lambda e: e.progress(job_id, lease_id=lease_id, percent=percent, note=note)
        )

    async def explain(self, job_id: str) -> Explanation | None:
        return await self._engine_for_job(job_id).explain(job_id)

    # ------------------------------------------------------------------ merged reads

    def retention_stats(self) -> RetentionStats:
        total = RetentionStats()
        for engine in self.engines.values():
            part = engine.retention_stats()
            for name in RetentionStats.__struct_fields__:
                setattr(total, name, getattr(total, name) + getattr(part, name))
        return total

    async def list(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[builtins.list[Job], str | None]:
        """One queue: its shard's list. All queues: shard after shard (each newest first);
        the cursor names the shard it is in (`<shard>:<its cursor>`)."""
        if queue is not None:
            shard = self.shard_of_queue(queue)
            if shard is None:
                return [], None
            return await self._engine(shard).list(
                state=state, queue=queue, limit=limit, cursor=cursor
            )
        return await self._paged(
            cursor, lambda e, c: e.list(state=state, limit=limit, cursor=c), limit
        )

    async def _paged(
        self,
        cursor: str | None,
        page: Callable[
            [ClusterEngine, str | None], Awaitable[tuple[builtins.list[Job], str | None]]
        ],
        limit: int,
    ) -> tuple[builtins.list[Job], str | None]:
        shards = sorted(self.engines)
        start, inner = self._cursor_start(shards, cursor)
        jobs: builtins.list[Job] = []
        for position in range(start, len(shards)):
            shard = shards[position]
            got, next_inner = await page(self.engines[shard], inner)
            jobs.extend(got)
            inner = None
            if next_inner is not None:
                return jobs, f"{shard}:{next_inner}"
            if len(jobs) >= limit and position + 1 < len(shards):
                return jobs, f"{shards[position + 1]}:"
        return jobs, None

    def _cursor_start(
        self, shards: builtins.list[int], cursor: str | None
    ) -> tuple[int, str | None]:
        """Where a merged page resumes: the position of the shard a `<shard>:<inner>` cursor
        names in `shards`, and that shard's own cursor. Raises ValueError for a bad one."""
        if not cursor:
            return 0, None
        head, _, rest = cursor.partition(":")
        if not head.isdigit() or int(head) not in self.engines:
            raise ValueError("bad cursor")
        return shards.index(int(head)), rest or None

    def search(
        self,
        where: JobFilter,
        *,
        limit: int = 50,
        cursor: str | None = None,
        scan_limit: int | None = None,
    ) -> tuple[builtins.list[Job], str | None]:
        shards = sorted(self.engines)
        start, inner = self._cursor_start(shards, cursor)
        jobs: builtins.list[Job] = []
        for position in range(start, len(shards)):
            shard = shards[position]
            got, next_inner = self.engines[shard].search(
                where, limit=limit - len(jobs), cursor=inner, scan_limit=scan_limit
            )
            jobs.extend(got)
            inner = None
            if next_inner is not None:
                return jobs, f"{shard}:{next_inner}"
            if len(jobs) >= limit:
                more = position + 1 < len(shards)
                return jobs, f"{shards[position + 1]}:" if more else None
        return jobs, None

    def stats(self, top: int | None = None) -> Stats:
        parts = [engine.stats(top) for engine in self.engines.values()]
        totals = _sum_structs(QueueStats, [part.totals for part in parts])
        counters = _sum_structs(Counters, [part.counters for part in parts])
        queues: dict[str, QueueStats] = {}
        for part in parts:
            for name, counts in part.queues.items():
                queues[name] = (
                    _sum_structs(QueueStats, [queues[name], counts]) if (name in queues) else counts
                )
        if top is not None:
            busiest = sorted(queues.items(), key=lambda item: -item[1].total)[:top]
            queues = dict(busiest)
        queue_count = sum(part.queue_count for part in parts)
        return Stats(totals=totals, queues=queues, counters=counters, queue_count=queue_count)

    def queue_page(self, after: str | None, limit: int) -> builtins.list[tuple[str, QueueStats]]:
        merged: builtins.list[tuple[str, QueueStats]] = []
        for engine in self.engines.values():
            merged.extend(engine.queue_page(after, limit))
        return sorted(merged, key=lambda item: item[0])[:limit]

    def running(self, queue: str | None = None) -> builtins.list[Job]:
        jobs: builtins.list[Job] = []
        for engine in self.engines.values():
            jobs.extend(engine.running(queue))
        return jobs

    def minute_counts(
        self, queue: str | None, minutes: int, last_minute: int
    ) -> tuple[bool, builtins.list[int], builtins.list[int], builtins.list[int]]:
        tracked_any = False
        sums = [[0] * minutes for _ in range(3)]
        for engine in self.engines.values():
            tracked, *series = engine.minute_counts(queue, minutes, last_minute)
            tracked_any = tracked_any or tracked
            for total, part in zip(sums, series, strict=True):
                for i, value in enumerate(part[:minutes]):
                    total[i] += value
        return tracked_any, sums[0], sums[1], sums[2]

    def oldest_runnable_since(self, queue: str) -> int | None:
        engine = self._held_engine_of(queue)
        return None if engine is None else engine.oldest_runnable_since(queue)

    def _held_engine_of(self, queue: str) -> ClusterEngine | None:
        shard = self.shard_of_queue(queue)
        return None if shard is None else self.engines.get(shard)

    def metrics(self) -> Iterator[Metric]:
        # One shard's log metrics (the families would repeat per shard otherwise).
        for shard in sorted(self.engines)[:1]:
            yield from self.engines[shard].metrics()

    def subscribe(self) -> AsyncIterator[JobEvent]:
        return self._merged_events()

    async def _merged_events(self) -> AsyncIterator[JobEvent]:
        merged: asyncio.Queue[JobEvent] = asyncio.Queue(maxsize=10_000)

        async def pump(source: AsyncIterator[JobEvent]) -> None:
            async for event in source:
                with contextlib.suppress(asyncio.QueueFull):
                    merged.put_nowait(event)

        pumps = [asyncio.ensure_future(pump(e.subscribe())) for e in self.engines.values()]
        try:
            while True:
                yield await merged.get()
        finally:
            for task in pumps:
                task.cancel()

    def dead_groups(self) -> builtins.list[DeadGroupSummary]:
        groups: builtins.list[DeadGroupSummary] = []
        for engine in self.engines.values():
            groups.extend(engine.dead_groups())
        return sorted(groups, key=lambda group: -group.count)

    async def settle_dead_group(
        self, fingerprint: str, action: DeadGroupAction, *, chunk: int = 500
    ) -> DeadGroupOutcome:
        total = DeadGroupOutcome(0, 0, 0)
        found = False
        for engine in self.engines.values():
            try:
                part = await engine.settle_dead_group(fingerprint, action, chunk=chunk)
            except CommandRejected as exc:
                if exc.code != ErrorCode.NOT_FOUND:
                    raise
                continue
            found = True
            total = DeadGroupOutcome(
                total.settled + part.settled,
                total.commands + part.commands,
                total.remaining + part.remaining,
            )
        if not found:
            raise CommandRejected(ErrorCode.NOT_FOUND, f"no dead-letter group {fingerprint!r}")
        return total

    def queue_latency(self, queue: str) -> QueueLatency:
        engine = self._held_engine_of(queue)
        return QueueLatency() if engine is None else engine.queue_latency(queue)

    # ------------------------------------------------------------------ queue settings

    async def set_queue(self, change: QueueChange) -> QueueSettings:
        return await self._for_queue(change.queue, lambda e: e.set_queue(change))

    def queue_settings(self, name: str) -> QueueSettings:
        engine = self._held_engine_of(name)
        return QueueSettings(name) if engine is None else engine.queue_settings(name)

    def queue_settings_page(self) -> builtins.list[QueueSettings]:
        page: builtins.list[QueueSettings] = []
        for shard, engine in self.engines.items():
            page.extend(
                s for s in engine.queue_settings_page() if self.shard_of_queue(s.name) == shard
            )
        return sorted(page, key=lambda s: s.name)

    def queue_stats(self, name: str) -> QueueStats | None:
        engine = self._held_engine_of(name)
        return None if engine is None else engine.queue_stats(name)

    # ------------------------------------------------------------------ moves and the admin view

    def shard_health(self, shard: int) -> Health | None:
        if shard not in self.shard_ids:
            return None
        return self._engine(shard).health()

    def placement_view(self) -> dict[str, object]:
        table = self.placement
        health = self.health().shards or {}
        counts = table.queue_counts(self.shard_ids)
        shards = {
            str(shard): {
                "held": shard in self.engines,
                "health": health.get(str(shard)),
                "replicas": table.replica_urls(shard),
                "queues": counts[shard],
            }
            for shard in self.shard_ids
        }
        return {"node": self.node_id, "revision": table.revision, "shards": shards,
                "queues": dict(table.queues)}  # fmt: skip

    async def move_queue(self, queue: str, to: int) -> MoveOutcome:
        """Move a queue to shard `to` (docs/scaling.md §2.6; engine/moves.py drives it), or
        finish a move of it that stopped. This node must hold both shards (else the request is
        forwarded to one that holds the source). One driver per queue at a time: an etcd lease
        on `jq/moves/<queue>` in the meta group. Raises MoveRefused when it cannot go on."""
        try:
            return await self._move_queue(queue, to)
        except MoveError as exc:
            raise MoveRefused(str(exc)) from None

    async def _move_queue(self, queue: str, to: int) -> MoveOutcome:
        current = self.placement.lookup(queue) or await self.placement.refresh(queue)
        if current is None:
            raise MoveError(f"queue {queue!r} has no placement (no job was ever submitted)")
        for shard in (current.shard, to, *([current.move.source] if current.move else [])):
            if shard not in self.shard_ids:
                raise MoveError(f"no shard {shard}")
            self._engine(shard)
        shards = {shard: EngineShard(engine) for shard, engine in self.engines.items()}
        etcd = self.placement.etcd
        lease = await etcd.lease_grant(MOVE_LEASE_TTL_S)
        key = MOVES_PREFIX + queue.encode()
        keepalive: asyncio.Task[None] | None = None
        try:
            if not await etcd.create_if_absent(key, self.node_id.encode(), lease=lease):
                raise MoveError(f"another node is moving {queue!r} now")
            keepalive = asyncio.create_task(_keep_alive(etcd, lease))
            mover = QueueMover(self.placement, shards, after_step=self._after_move_step)
            if current.move is not None and current.move.to == to:
                return await mover.resume(queue)
            return await mover.move(queue, to)
        finally:
            if keepalive is not None:
                keepalive.cancel()
            with contextlib.suppress(EtcdError):
                await etcd.lease_revoke(lease)

    async def resume_stopped_moves(self) -> builtins.list[MoveOutcome]:
        """Finish every move whose driver died (docs/scaling.md §2.6, "a crash at every step").
        A live driver holds `jq/moves/<q>` under its etcd lease; once that lapses (the driver's
        node was killed), the first node holding both shards to take the key resumes the move
        from its placement record: steps 1-5 before the commit point, the release after it.
        Every node looks, the key makes one of them drive; a lost race is a MoveError, skipped."""
        finished: builtins.list[MoveOutcome] = []
        for queue, placement in builtins.list(self.placement.queues.items()):
            move = placement.move
            if move is None or move.source not in self.engines or move.to not in self.engines:
                continue
            driver, _ = await self.placement.etcd.range(MOVES_PREFIX + queue.encode())
            if driver:
                continue  # its driver is alive (or its lease has not lapsed yet)
            log.info("move %s of %r has no driver: resuming it here", move.id, queue)
            try:
                finished.append(await self._move_queue(queue, move.to))
            except MoveError as exc:
                log.info("move %s of %r not resumed here: %s", move.id, queue, exc)
        return finished

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(MOVE_RECONCILE_INTERVAL_S)
            try:
                await self.resume_stopped_moves()
            except Exception as exc:  # a shard or the meta group down: look again later
                log.info("resuming stopped moves: %s (again in %.0f s)", exc,
                         MOVE_RECONCILE_INTERVAL_S)  # fmt: skip

    # ------------------------------------------------------------------ schedules (by queue)

    def _engine_for_schedule(self, name: str) -> ClusterEngine:
        """The held shard that has the schedule (the one its queue is placed on, when a move
        left it on two); a forward when no held shard has it and this node lacks some."""
        holding = [e for e in self.engines.values() if e.queue_of_schedule(name) is not None]
        if len(holding) == 1:
            return holding[0]
        if holding:
            owner = self.shard_of_queue(holding[0].queue_of_schedule(name) or "")
            engine = self.engines.get(owner) if owner is not None else None
            return engine if engine in holding else holding[0]
        unheld = [shard for shard in self.shard_ids if shard not in self.engines]
        if unheld:
            raise self._not_held(unheld[0])
        raise CommandRejected(ErrorCode.NOT_FOUND, f"no schedule {name!r}")

    async def _for_schedule(self, name: str, call: Callable[[ClusterEngine], Awaitable[T]]) -> T:
        deadline = time.monotonic() + MOVE_HOLD_S
        while True:
            engine = self._engine_for_schedule(name)
            try:
                return await call(engine)
            except CommandRejected as exc:
                if not _rerouted(exc) or time.monotonic() >= deadline:
                    raise
            await self._reroute_pause(engine.queue_of_schedule(name))

    async def create_schedule(
        self, spec: ScheduleSpec, *, paused: bool = False
    ) -> tuple[Schedule, bool]:
        """On the shard of the schedule's queue: its ticker fires it, a move takes it along.
        Schedule names stay one namespace: one of that name on another shard answers as the
        local machine would (the same definition: a retried create; else SCHEDULE_EXISTS)."""
        queue_shard = (await self._place(spec.queue)).shard
        for shard, engine in self.engines.items():
            if shard != queue_shard and engine.queue_of_schedule(spec.name) is not None:
                existing = await engine.get_schedule(spec.name)
                if existing is not None and existing.spec == spec:
                    return existing, False
                raise CommandRejected(
                    ErrorCode.SCHEDULE_EXISTS,
                    f"a schedule named {spec.name!r} exists with another definition: change "
                    "it (PATCH), or delete it first",
                )
        return await self._for_queue(spec.queue, lambda e: e.create_schedule(spec, paused=paused))

    async def update_schedule(self, name: str, changes: ScheduleChanges) -> Schedule:
        if changes.queue is not None:
            now_on = self.shard_of_queue(self._engine_for_schedule(name).queue_of_schedule(name)
                                         or "")  # fmt: skip
            if (await self._place(changes.queue)).shard != now_on:
                raise CommandRejected(
                    ErrorCode.INVALID,
                    f"queue {changes.queue!r} is on another shard than schedule {name!r}'s: "
                    "delete the schedule and create it for that queue",
                )
        return await self._for_schedule(name, lambda e: e.update_schedule(name, changes))

    async def delete_schedule(self, name: str) -> Schedule:
        return await self._for_schedule(name, lambda e: e.delete_schedule(name))

    async def get_schedule(self, name: str) -> Schedule | None:
        try:
            return await self._engine_for_schedule(name).get_schedule(name)
        except CommandRejected as exc:
            if exc.code != ErrorCode.NOT_FOUND:
                raise
            return None

    def schedule_page(self, after: str | None, limit: int) -> builtins.list[Schedule]:
        """The held shards' schedules merged by name; a schedule a move left on two shards
        is shown once, from the shard its queue is placed on."""
        merged: dict[str, Schedule] = {}
        for shard, engine in self.engines.items():
            for schedule in engine.schedule_page(after, limit):
                placed = self.shard_of_queue(schedule.spec.queue)
                if schedule.spec.name not in merged or placed == shard:
                    merged[schedule.spec.name] = schedule
        return [merged[name] for name in sorted(merged)[:limit]]

    def schedule_times(self, schedule: Schedule, count: int) -> builtins.list[int]:
        # Pure cron arithmetic: any held shard's engine computes it.
        for engine in self.engines.values():
            return engine.schedule_times(schedule, count)
        return []

    def schedule_stats(self) -> ScheduleStats:
        total = ScheduleStats()
        for engine in self.engines.values():
            part = engine.schedule_stats()
            total.count += part.count
            total.paused += part.paused
            total.runs += part.runs
            total.skipped += part.skipped
            total.missed += part.missed
            if part.next_due is not None:
                total.next_due = min(part.next_due, total.next_due or part.next_due)
        return total


async def _keep_alive(etcd: EtcdClient, lease: int) -> None:
    while True:
        await asyncio.sleep(MOVE_LEASE_TTL_S / 3)
        with contextlib.suppress(EtcdError):
            await etcd.lease_keepalive(lease)


def _pause_hook(step: str) -> Callable[[int], Awaitable[None]]:
    """The move driver's step hook: nothing, unless the test-only setting
    `--test-move-pause-after-step` names a step (tests/shards/test_move_resume.py stops the
    driver there for good, then kills its node mid-move)."""
    pause_after = int(step) if step.isdigit() else -1

    async def after_step(done: int) -> None:
        if done == pause_after:
            log.warning("--test-move-pause-after-step=%d: the move driver stops here", done)
            await asyncio.Event().wait()

    return after_step


def _owned(result: Result) -> None:
    if isinstance(result, Error):
        raise CommandRejected(result.code, result.message)


S = TypeVar("S", bound=msgspec.Struct)


def _sum_structs(kind: type[S], parts: builtins.list[S]) -> S:
    """Field by field: numbers add up, flags (a queue's `paused`) hold if any part says so, a
    queue's limits are the first part's."""
    if not parts:
        return kind()
    if len(parts) == 1:
        return parts[0]
    values: dict[str, object] = {}
    for name in kind.__struct_fields__:
        items = [getattr(part, name) for part in parts]
        if isinstance(items[0], bool):
            values[name] = any(items)
        elif isinstance(items[0], int) and name not in ("concurrency", "rate_limit",
                                                         "rate_period_ms"):  # fmt: skip
            values[name] = sum(items)
        else:
            values[name] = items[0] if items else None
    return kind(**values)
