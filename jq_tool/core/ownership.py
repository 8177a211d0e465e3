"""Which queues a shard's state machine serves: the ownership table of sharded mode (issue 23).

A shard is one replicated log and one state machine owning a set of queues (docs/scaling.md
§2.1). Ownership is decided here, at each command's log index, never by the routing view of a
node: two nodes that disagree about where a queue lives can never both apply a command to it.
The table is off (`shard` None: every queue served, nothing refused) until a `StartShard`
command turns it on, so single-node and one-group cluster logs, which never hold one, replay
exactly as before.

When on, the table holds:
- the owned queues, each with its epoch, the move that brought it here ("" for one created
  here) and the move fencing it, if any: a fenced queue answers QUEUE_MOVING to every command
  and Expire/Purge leave it alone, so its jobs and keys stay exactly what the move exports;
- the staging area: chunks of moves being imported (ImportJobs), invisible until AdoptQueue;
- tombstones (queue -> target shard, epoch, move) and stubs (moved job id -> target shard), so
  a late request is told where its queue went;
- the moves this shard has finished here (adopted or aborted), so a late, retried command of an
  ended move changes nothing.

Idempotency keys are scoped by queue when sharded (`scoped_key`): a key lives with its queue and
moves with it. This module also builds a move's export (`export_chunks`): the fenced queue's
jobs and keys as ImportJobs commands of at most CHUNK_BYTES each, with a crc over all of them
that AdoptQueue checks. Pure functions of the state: any replica that applied the fence builds
the same export.
"""

from __future__ import annotations

import zlib

import msgspec

from jq_tool.core.model import (
    AbortMove,
    AdoptQueue,
    Error,
    ErrorCode,
    FenceQueue,
    ImportedKey,
    ImportJobs,
    Job,
    JobState,
    QueueSettings,
    ReleaseQueue,
    Schedule,
    StartShard,
)
from jq_tool.core.unique import UniqueEntry

__all__ = [
    "CHUNK_BYTES",
    "MoveEnd",
    "Ownership",
    "OwnershipSnapshot",
    "QueueOwner",
    "Staged",
    "Tombstone",
    "chunks_crc",
    "command_problem",
    "export_chunks",
    "moving",
    "scoped_key",
    "staged_import",
]

# A chunk's jobs and keys, encoded, stay under this (etcd refuses requests over 1.5 MiB; one
# oversized job still makes a chunk of its own).
CHUNK_BYTES = 512 * 1024


class QueueOwner(msgspec.Struct, array_like=True):
    epoch: int
    move_id: str = ""  # the move that brought the queue here; "" when it was created here
    fence: str = ""  # the move fencing it now; "" when it is served


class Tombstone(msgspec.Struct, array_like=True):
    target: int
    epoch: int
    move_id: str


class MoveEnd(msgspec.Struct, array_like=True):
    move_id: str
    aborted: bool  # False: adopted here


class OwnershipSnapshot(msgspec.Struct, array_like=True):
    """The table in a state machine snapshot (None there while ownership is off)."""

    shard: int
    queues: list[tuple[str, QueueOwner]] = []  # in adoption order
    tombstones: list[tuple[str, Tombstone]] = []
    stubs: list[tuple[str, int]] = []
    staged: list[ImportJobs] = []  # in arrival order
    ended: list[MoveEnd] = []


_jobs_encoder = msgspec.msgpack.Encoder()
_jobs_decoder = msgspec.msgpack.Decoder(list[Job])
_keys_decoder = msgspec.msgpack.Decoder(list[ImportedKey])
_schedules_decoder = msgspec.msgpack.Decoder(list[Schedule])
_settings_decoder = msgspec.msgpack.Decoder(QueueSettings)


def scoped_key(queue: str, key: str) -> str:
    """The idempotency map's key for (queue, key) when sharded: length-prefixed, so no two
    (queue, key) pairs share one, and a queue's keys are found by their prefix."""
    return f"{len(queue)}:{queue}{key}"


def _scope_prefix(queue: str) -> str:
    return f"{len(queue)}:{queue}"


class Ownership:
    """The table; the state machine calls it (see the module docstring)."""

    __slots__ = ("shard", "queues", "fenced", "tombstones", "stubs", "staged", "ended")

    def __init__(self) -> None:
        self.shard: int | None = None  # None: ownership off
        self.queues: dict[str, QueueOwner] = {}
        self.fenced: dict[str, str] = {}  # queue -> move id, the fenced subset of `queues`
        self.tombstones: dict[str, Tombstone] = {}
        self.stubs: dict[str, int] = {}
        self.staged: dict[str, dict[int, ImportJobs]] = {}  # move id -> chunk -> command
        self.ended: dict[str, bool] = {}  # move id -> aborted

    @property
    def on(self) -> bool:
        return self.shard is not None

    # -- refusals --------------------------------------------------------------------------

    def queue_refusal(self, queue: str) -> Error | None:
        """None when the shard serves `queue` now; NOT_OWNER or QUEUE_MOVING otherwise."""
        if self.shard is None:
            return None
        owner = self.queues.get(queue)
        if owner is not None:
            if owner.fence:
                return moving(queue)
            return None
        tomb = self.tombstones.get(queue)
        if tomb is not None:
            return Error(
                ErrorCode.NOT_OWNER,
                f"queue {queue!r} moved to shard {tomb.target} (epoch {tomb.epoch})",
            )
        return Error(ErrorCode.NOT_OWNER, f"queue {queue!r} is not on shard {self.shard}")

    def job_refusal(self, job_id: str, job: Job | None) -> Error | None:
        """For a command naming a job: QUEUE_MOVING when its queue is fenced, NOT_OWNER when
        the job moved away (its stub), None otherwise (a missing job is the handler's 404)."""
        if self.shard is None:
            return None
        if job is None:
            target = self.stubs.get(job_id)
            if target is None:
                return None
            return Error(ErrorCode.NOT_OWNER, f"job {job_id!r} moved to shard {target}")
        if job.queue in self.fenced:
            return moving(job.queue)
        return None

    # -- the snapshot ----------------------------------------------------------------------

    def dump(self) -> OwnershipSnapshot | None:
        if self.shard is None:
            return None
        return OwnershipSnapshot(
            self.shard,
            list(self.queues.items()),
            list(self.tombstones.items()),
            list(self.stubs.items()),
            [cmd for chunks in self.staged.values() for cmd in chunks.values()],
            [MoveEnd(move_id, aborted) for move_id, aborted in self.ended.items()],
        )

    def load(self, snap: OwnershipSnapshot | None) -> None:
        if snap is None:
            return
        self.shard = snap.shard
        self.queues = dict(snap.queues)
        self.fenced = {name: o.fence for name, o in self.queues.items() if o.fence}
        self.tombstones = dict(snap.tombstones)
        self.stubs = dict(snap.stubs)
        for cmd in snap.staged:
            self.staged.setdefault(cmd.move_id, {})[cmd.chunk] = cmd
        self.ended = {end.move_id: end.aborted for end in snap.ended}

    # -- queries for the engine (read-only) --------------------------------------------------

    def owner_of(self, queue: str) -> QueueOwner | None:
        return self.queues.get(queue)

    def staged_chunks(self, move_id: str) -> list[int]:
        return sorted(self.staged.get(move_id, {}))

    def moved_job(self, job_id: str) -> int | None:
        """The shard a job of a queue moved away from here went to, or None."""
        return self.stubs.get(job_id)

    def key_fenced(self, key: str) -> bool:
        """Whether a (scoped) idempotency key belongs to a fenced queue."""
        return any(key.startswith(_scope_prefix(queue)) for queue in self.fenced)

    def queue_keys(self, keys: dict[tuple[str, str], tuple[str, str | None, int]], queue: str
                   ) -> list[ImportedKey]:  # fmt: skip
        """The idempotency keys of `queue` (sharded keys are scoped: see scoped_key), in the
        map's order. O(keys): a move's export, not a hot path."""
        prefix = _scope_prefix(queue)
        return [
            ImportedKey(owner, key, job_id, fingerprint, end)
            for (owner, key), (job_id, fingerprint, end) in keys.items()
            if key.startswith(prefix)
        ]


def moving(queue: str) -> Error:
    return Error(
        ErrorCode.QUEUE_MOVING, f"queue {queue!r} is moving to another shard: retry shortly"
    )


def command_problem(cmd: object) -> str | None:
    """What is malformed in an ownership command (the state machine's validation step)."""
    if isinstance(cmd, StartShard):
        return _shard_problem(cmd.shard, "shard")
    if isinstance(cmd, (AdoptQueue, FenceQueue, ReleaseQueue, AbortMove)):
        problem = _text_problem(cmd.queue, "queue") or _text_problem(
            cmd.move_id, "move_id", nonempty=not isinstance(cmd, (AdoptQueue, ReleaseQueue))
        )
        if problem:
            return problem
        if isinstance(cmd, AdoptQueue) and (type(cmd.epoch) is not int or cmd.epoch < 1):
            return "epoch must be a positive integer"
        if isinstance(cmd, ReleaseQueue):
            return _shard_problem(cmd.target, "target")
        return None
    if isinstance(cmd, ImportJobs):
        problem = _text_problem(cmd.move_id, "move_id", nonempty=True) or _text_problem(
            cmd.queue, "queue"
        )
        if problem:
            return problem
        if type(cmd.total) is not int or cmd.total < 1:
            return "total must be a positive integer"
        if type(cmd.chunk) is not int or not 0 <= cmd.chunk < cmd.total:
            return "chunk must be an integer from 0 to total - 1"
        if type(cmd.crc) is not int or not 0 <= cmd.crc < 2**32:
            return "crc must be a 32-bit unsigned integer"
        if type(cmd.jobs) is not list or not all(isinstance(j, Job) for j in cmd.jobs):
            return "jobs must be a list of jobs"
        if type(cmd.keys) is not list or not all(isinstance(k, ImportedKey) for k in cmd.keys):
            return "keys must be a list of keys"
        for job in cmd.jobs:
            problem = _imported_job_problem(job, cmd.queue)
            if problem:
                return problem
        if cmd.settings is not None and not isinstance(cmd.settings, QueueSettings):
            return "settings must be queue settings"
        if type(cmd.schedules) is not list or not all(
            isinstance(s, Schedule) and s.spec.queue == cmd.queue for s in cmd.schedules
        ):
            return "schedules must be a list of the command's queue's schedules"
        return None
    return None


def _imported_job_problem(job: Job, queue: str) -> str | None:
    if type(job.id) is not str or not job.id:
        return "an imported job needs an id"
    if job.queue != queue:
        return "every imported job must be of the command's queue"
    if not isinstance(job.state, JobState):
        return f"job {job.id!r} has no valid state"
    for value in (job.seq, job.run_at, job.created_at, job.attempts, job.priority):
        if type(value) is not int:
            return f"job {job.id!r} has a field that is not an integer"
    if job.state is JobState.RUNNING and (type(job.lease_until) is not int or not job.lease_id):
        return f"running job {job.id!r} has no lease"
    return None


def _text_problem(value: object, name: str, *, nonempty: bool = False) -> str | None:
    if type(value) is not str:
        return f"{name} must be a string"
    if nonempty and not value:
        return f"{name} must not be empty"
    return None


def _shard_problem(value: object, name: str) -> str | None:
    if type(value) is not int or not 0 <= value <= 0xFFFF:
        return f"{name} must be a shard number between 0 and 65535"
    return None


# -- the export ----------------------------------------------------------------------------


def _chunk_bytes(cmd: ImportJobs) -> tuple[bytes, bytes, bytes]:
    return (
        _jobs_encoder.encode(cmd.jobs),
        _jobs_encoder.encode(cmd.keys),
        # Schedules count only when there are some: the crc of an older log's chunks holds.
        _jobs_encoder.encode(
            (cmd.settings, cmd.awaited, cmd.unique, cmd.schedules)
            if cmd.schedules
            else (cmd.settings, cmd.awaited, cmd.unique)
        ),
    )


def chunks_crc(chunks: list[ImportJobs]) -> int:
    """The crc of an export: CRC-32 over each chunk's encoded jobs, keys, settings and
    awaited parents, in chunk order."""
    crc = 0
    for cmd in chunks:
        for part in _chunk_bytes(cmd):
            crc = zlib.crc32(part, crc)
    return crc


def export_chunks(
    move_id: str,
    queue: str,
    jobs: list[Job],
    keys: list[ImportedKey],
    settings: QueueSettings | None,
    awaited: list[tuple[str, list[str]]],
    unique: list[UniqueEntry],
    limit: int = CHUNK_BYTES,
    schedules: list[Schedule] | None = None,
) -> list[ImportJobs]:
    """A fenced queue's jobs (in submission order) and keys as ImportJobs commands, each
    holding at most `limit` encoded bytes of jobs and keys (at least one item), all carrying
    the crc of the whole; the first also carries the queue's flow settings, the parents its
    WAITING jobs still wait for, its unique keys and its schedules. Copies: the commands share
    nothing with the machine's jobs."""
    # Each item encoded once, to measure it; decoded back as fresh objects.
    chunks: list[ImportJobs] = []
    current_jobs: list[bytes] = []
    current_keys: list[bytes] = []
    size = 0

    def close() -> None:
        chunks.append(
            ImportJobs(
                move_id,
                queue,
                len(chunks),
                0,
                _jobs_decoder.decode(_list_of(current_jobs)),
                _keys_decoder.decode(_list_of(current_keys)),
            )
        )
        current_jobs.clear()
        current_keys.clear()

    for job in jobs:
        item = _jobs_encoder.encode(job)
        if size and size + len(item) > limit:
            close()
            size = 0
        current_jobs.append(item)
        size += len(item)
    for key in keys:
        item = _jobs_encoder.encode(key)
        if size and size + len(item) > limit:
            close()
            size = 0
        current_keys.append(item)
        size += len(item)
    close()
    first = chunks[0]
    if settings is not None:
        first.settings = _settings_decoder.decode(_jobs_encoder.encode(settings))
    first.awaited = [(child, list(parents)) for child, parents in awaited]
    first.unique = list(unique)
    first.schedules = _schedules_decoder.decode(_jobs_encoder.encode(schedules or []))
    crc = chunks_crc(chunks)
    for cmd in chunks:
        cmd.total = len(chunks)
        cmd.crc = crc
    return chunks


def _list_of(items: list[bytes]) -> bytes:
    """A msgpack array of already-encoded items."""
    n = len(items)
    if n < 16:
        head = bytes([0x90 | n])
    elif n < 65536:
        head = b"\xdc" + n.to_bytes(2, "big")
    else:
        head = b"\xdd" + n.to_bytes(4, "big")
    return head + b"".join(items)


class Staged(msgspec.Struct):
    """A move's staged chunks put together, as fresh objects."""

    jobs: list[Job]
    keys: list[ImportedKey]
    settings: QueueSettings | None
    awaited: list[tuple[str, list[str]]]
    unique: list[UniqueEntry]
    schedules: list[Schedule] = []


def staged_import(staged: dict[int, ImportJobs]) -> Staged | str:
    """The jobs, keys and settings of a move's staged chunks, as fresh objects, or what is
    wrong with them (a chunk missing, totals or crcs that disagree, a crc that does not match)."""
    if not staged:
        return "no chunk of this move is staged here"
    first = next(iter(staged.values()))
    total, crc = first.total, first.crc
    if any(cmd.total != total or cmd.crc != crc for cmd in staged.values()):
        return "the staged chunks disagree on their total or crc"
    missing = [i for i in range(total) if i not in staged]
    if missing:
        return f"chunks {missing[:10]} of {total} are not staged"
    ordered = [staged[i] for i in range(total)]
    if chunks_crc(ordered) != crc:
        return "the staged chunks do not match the export's crc"
    jobs: list[Job] = []
    keys: list[ImportedKey] = []
    for cmd in ordered:
        encoded_jobs, encoded_keys, _ = _chunk_bytes(cmd)
        jobs.extend(_jobs_decoder.decode(encoded_jobs))
        keys.extend(_keys_decoder.decode(encoded_keys))
    settings = ordered[0].settings
    if settings is not None:
        settings = _settings_decoder.decode(_jobs_encoder.encode(settings))
    awaited = [(child, list(parents)) for child, parents in ordered[0].awaited]
    schedules = _schedules_decoder.decode(_jobs_encoder.encode(ordered[0].schedules))
    return Staged(jobs, keys, settings, awaited, list(ordered[0].unique), schedules)
