"""Moving a queue from one shard to another (docs/scaling.md §2.6) as a resumable driver.

A move of queue q from shard A (epoch e) to shard B, move id M:

    0 announce  CAS placement q: {A, e} -> {A, e, move {to B, id M, source A}}
    1 fence     FenceQueue(q, M) on A: every command on q at A answers QUEUE_MOVING
    2 copy      A's export (read from a replica that applied the fence) -> ImportJobs chunks on B
    3 adopt     AdoptQueue(q, e+1, M) on B: checks every chunk and the crc, jobs live at once
    4 flip      CAS placement q -> {B, e+1, move {…, committed}}: the commit point
    5 release   ReleaseQueue(q, M, B) on A (tombstone and stubs), then CAS the move record away
    6 drain     the engine's: requests held on QUEUE_MOVING re-read the placement and go to B

Every shard command is idempotent by M (a repeat answers `repeated` and changes nothing), so the
driver is resumable from the placement record alone: whoever runs `resume(q)` after a crash (of
this driver, or of a shard's leader) redoes the steps from 1 or from 5 (after the commit point),
and a repeated command costs a log record, never a second copy. `abort(q)` before the commit
point gives the move up: the target gives back what it staged or adopted, the source unfences,
the record loses its move; after the commit point only `resume` is allowed.

The driver is written against two small Protocols, so it runs on real shards and in tests alike:
`ShardLog` (propose a command on one shard's log; read a fenced queue's export) and
`PlacementStore` (read a queue's record with its revision; compare-and-swap it). Placement
records here have the JSON shape of engine/placement.py's, plus the move's source and whether
it is committed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import msgspec

from jq_tool.core.model import (
    AbortMove,
    AdoptQueue,
    Command,
    Error,
    ErrorCode,
    FenceQueue,
    ImportJobs,
    OwnershipResult,
    ReleaseQueue,
    Result,
)
from jq_tool.engine.command_engine import CommandEngine, now_ms

__all__ = [
    "EngineShard",
    "MoveError",
    "MoveOutcome",
    "MoveRecord",
    "Placement",
    "PlacementStore",
    "QueueMover",
    "ShardLog",
    "Versioned",
]

log = logging.getLogger("jq.moves")


class MoveRecord(msgspec.Struct, omit_defaults=True):
    """A move in progress, in the queue's placement record (step 0 writes it)."""

    to: int
    id: str
    source: int = -1  # the shard the queue leaves
    committed: bool = False  # the flip happened (step 4): only the release is left


class Placement(msgspec.Struct, omit_defaults=True):
    """A queue's placement record: its shard, its epoch (counts moves) and a move, if any."""

    shard: int
    epoch: int = 1
    move: MoveRecord | None = None


class Versioned(msgspec.Struct):
    """A placement record as read, with the revision a CAS must name (None, 0: no record)."""

    record: Placement | None
    revision: int


class ShardLog(Protocol):
    """One shard, as the driver needs it."""

    async def propose(self, command: Command) -> Result:
        """Make `command` durable in this shard's log and return its result (an Error result
        is an answer, not an exception; a log that cannot write raises)."""
        ...

    async def export(self, queue: str, move_id: str) -> list[ImportJobs]:
        """The export of `queue`, fenced by `move_id`, from a replica that applied the fence
        (StateMachine.export_queue). Raises ValueError when the queue is not fenced there."""
        ...


class PlacementStore(Protocol):
    async def get(self, queue: str) -> Versioned: ...

    async def cas(self, queue: str, expected_revision: int, record: Placement) -> bool:
        """Write `record` if the queue's record is still at `expected_revision` (0: absent)."""
        ...


class EngineShard:
    """ShardLog over a CommandEngine in this process (a LocalEngine, or a ClusterEngine whose
    replica answers a proposal only after applying it, so its export follows its own fence)."""

    def __init__(self, engine: CommandEngine) -> None:
        self.engine = engine

    async def propose(self, command: Command) -> Result:
        return await self.engine.propose(command)

    async def export(self, queue: str, move_id: str) -> list[ImportJobs]:
        return self.engine.export_queue(queue, move_id)


class MoveError(Exception):
    """The move cannot go on as asked (another move, a refusal from a shard, a lost CAS race);
    nothing was left half-done that resume or abort cannot finish."""


class MoveOutcome(msgspec.Struct):
    queue: str
    move_id: str
    shard: int  # where the queue is now
    epoch: int
    moved: bool  # True: done; False: aborted (or there was nothing to do)
    jobs: int = 0  # jobs the target adopted (0 when it had adopted them before a resume)


# Step hooks: called after each step completes (tests stop the driver there).
StepHook = Callable[[int], Awaitable[None]]


def new_move_id() -> str:
    return os.urandom(8).hex()


async def _no_hook(step: int) -> None:
    return None


class QueueMover:
    """Runs moves over a placement store and the shards by number. One driver per move at a
    time (the engine holds an etcd lease on `jq/moves/<q>` around it); a second driver that
    races it anyway loses a CAS and stops with MoveError, the shards' commands being
    idempotent."""

    def __init__(
        self,
        placement: PlacementStore,
        shards: Mapping[int, ShardLog],
        *,
        clock: Callable[[], int] = now_ms,
        after_step: StepHook = _no_hook,
    ) -> None:
        self._placement = placement
        self._shards = shards
        self._clock = clock
        self._after_step = after_step

    # ------------------------------------------------------------------ the public surface

    async def move(self, queue: str, target: int, move_id: str | None = None) -> MoveOutcome:
        """Steps 0 to 5: announce, then everything resume does."""
        await self.announce(queue, target, move_id)
        return await self.resume(queue)

    async def announce(self, queue: str, target: int, move_id: str | None = None) -> str:
        """Step 0: record the move in the placement (or find the same move recorded)."""
        if target not in self._shards:
            raise MoveError(f"no shard {target}")
        current, record = await self._placed(queue)
        if record.move is not None:
            move = record.move
            if move.to == target and not move.committed and move_id in (None, move.id):
                return move.id  # announced before (a retried call): go on with it
            raise MoveError(f"queue {queue!r} is moving already (move {move.id} to {move.to})")
        if record.shard == target:
            raise MoveError(f"queue {queue!r} is on shard {target} already")
        move_id = move_id or new_move_id()
        announced = Placement(record.shard, record.epoch, MoveRecord(target, move_id, record.shard))
        if not await self._placement.cas(queue, current.revision, announced):
            raise MoveError(f"the placement of {queue!r} changed meanwhile: try again")
        log.info("move %s of %r: shard %d -> %d announced", move_id, queue, record.shard, target)
        await self._after_step(0)
        return move_id

    async def _placed(self, queue: str) -> tuple[Versioned, Placement]:
        """The queue's placement record as stored, and the record itself (MoveError if none)."""
        current = await self._placement.get(queue)
        if current.record is None:
            raise MoveError(f"queue {queue!r} has no placement")
        return current, current.record

    async def resume(self, queue: str) -> MoveOutcome:
        """Finish the move the placement record names, from wherever it stopped."""
        current, record = await self._placed(queue)
        move = record.move
        if move is None:
            return MoveOutcome(queue, "", record.shard, record.epoch, moved=False)
        if move.committed:
            await self._release(queue, move, current)
            return MoveOutcome(queue, move.id, record.shard, record.epoch, moved=True)

        source, target = self._shard(move.source), self._shard(move.to)
        # 1: fence. An aborted move's fence is refused by the source: finish the abort.
        fenced = await source.propose(FenceQueue(queue, move.id, self._clock()))
        if _ended(fenced):
            await self._forget_move(queue, current, record)
            raise MoveError(f"move {move.id} of {queue!r} was aborted")
        _expect(fenced, f"fence {queue!r} on shard {move.source}")
        await self._after_step(1)

        # 2: copy. Chunks the target staged before are answered `repeated`.
        chunks = await source.export(queue, move.id)
        for chunk in chunks:
            chunk.now = self._clock()
            _expect(await target.propose(chunk), f"import chunk {chunk.chunk} on {move.to}")
        await self._after_step(2)

        # 3: adopt, at the next epoch. Refused for a schedule name the target holds for
        # another queue: nothing moved yet, so the move is undone and says why.
        epoch = record.epoch + 1
        answer = await target.propose(AdoptQueue(queue, epoch, move.id, self._clock()))
        if isinstance(answer, Error) and answer.code is ErrorCode.SCHEDULE_EXISTS:
            await self.abort(queue)
            raise MoveError(f"move {move.id} of {queue!r} undone: {answer.message}")
        adopted = _expect(answer, f"adopt {queue!r} on shard {move.to}")
        await self._after_step(3)

        # 4: flip, the commit point.
        flipped = Placement(
            move.to, epoch, MoveRecord(move.to, move.id, move.source, committed=True)
        )
        if not await self._placement.cas(queue, current.revision, flipped):
            again = await self._placement.get(queue)
            if again.record != flipped:
                raise MoveError(f"the placement of {queue!r} changed meanwhile: resume again")
            current = again  # another driver flipped it: the same move, go on
        else:
            current = await self._placement.get(queue)
        log.info("move %s of %r: shard %d owns it (epoch %d)", move.id, queue, move.to, epoch)
        await self._after_step(4)

        # 5: release on the source, then the record loses its move.
        assert current.record is not None and current.record.move is not None
        await self._release(queue, current.record.move, current)
        return MoveOutcome(queue, move.id, move.to, epoch, moved=True, jobs=adopted.jobs)

    async def abort(self, queue: str) -> MoveOutcome:
        """Give up the queue's move before its commit point: the target gives back what it
        staged or adopted, the source unfences, the record loses its move."""
        current, record = await self._placed(queue)
        move = record.move
        if move is None:
            return MoveOutcome(queue, "", record.shard, record.epoch, moved=False)
        if move.committed:
            raise MoveError(f"move {move.id} of {queue!r} is committed: resume it")
        source, target = self._shard(move.source), self._shard(move.to)
        now = self._clock()
        given_back = await target.propose(AbortMove(queue, move.id, now))
        if isinstance(given_back, Error) and given_back.code is ErrorCode.INVALID_STATE:
            # Adopted (step 3) but never routed to: the target releases it back.
            _expect(
                await target.propose(ReleaseQueue(queue, move.id, move.source, now)),
                f"give {queue!r} back from shard {move.to}",
            )
        else:
            _expect(given_back, f"abort on shard {move.to}")
        _expect(await source.propose(AbortMove(queue, move.id, now)), f"unfence on {move.source}")
        await self._forget_move(queue, current, record)
        log.info("move %s of %r aborted: it stays on shard %d", move.id, queue, record.shard)
        return MoveOutcome(queue, move.id, record.shard, record.epoch, moved=False)

    # ------------------------------------------------------------------ steps

    def _shard(self, number: int) -> ShardLog:
        shard = self._shards.get(number)
        if shard is None:
            raise MoveError(f"no shard {number}")
        return shard

    async def _release(self, queue: str, move: MoveRecord, current: Versioned) -> None:
        source = self._shard(move.source)
        _expect(
            await source.propose(ReleaseQueue(queue, move.id, move.to, self._clock())),
            f"release {queue!r} on shard {move.source}",
        )
        record = current.record
        assert record is not None
        done = Placement(record.shard, record.epoch)
        if not await self._placement.cas(queue, current.revision, done):
            again = await self._placement.get(queue)
            if again.record is None or again.record.move is not None:
                raise MoveError(f"the placement of {queue!r} changed meanwhile: resume again")
        await self._after_step(5)

    async def _forget_move(self, queue: str, current: Versioned, record: Placement) -> None:
        stays = Placement(record.shard, record.epoch)
        if not await self._placement.cas(queue, current.revision, stays):
            raise MoveError(f"the placement of {queue!r} changed meanwhile: abort again")


def _ended(result: Result) -> bool:
    return (
        isinstance(result, Error)
        and result.code is ErrorCode.INVALID_STATE
        and "has ended here" in result.message
    )


def _expect(result: Result, what: str) -> OwnershipResult:
    if isinstance(result, Error):
        raise MoveError(f"{what}: {result.code.value}: {result.message}")
    if not isinstance(result, OwnershipResult):
        raise MoveError(f"{what}: unexpected answer {type(result).__name__}")
    return result
