"""Ownership on, with every queue adopted, changes nothing a single node does (issue 23).

The determinism suite's seeded busy log (tests/core/test_determinism.py: submits with keys,
priorities and parents, leases, acks, failures, expiry, purges with bounds, schedules, flow
settings, dead-letter groups) is played on an unsharded machine and on a shard that adopted
every queue first; both must give the same results, the same transition events, the same stats
and the same jobs. Two differences are by design and kept out of the log: sharded idempotency
and unique keys are per queue, and a job's parents must be in its own queue, so the log's keys
name their queue and parents in other queues are dropped. Then a log with a whole move in it
is replayed: the same state, byte for byte, every time.
"""

from __future__ import annotations

import msgspec
import pytest

from jq_tool.core.model import (
    AdoptQueue,
    Command,
    CreateSchedule,
    FenceQueue,
    FireSchedule,
    JobFlow,
    NewJob,
    ReleaseQueue,
    StartShard,
    Submit,
    UpdateSchedule,
    decode_command,
    encode_command,
)
from jq_tool.core.state_machine import StateMachine
from tests.core.test_determinism import CONFIG, QUEUES, T0, Recorder, record_log


def _shardable(log: list[Command]) -> list[Command]:
    """The log with idempotency and unique keys that name their queue and parents only of
    the same queue (as the job's queue is known from the commands that made it)."""
    queue_of: dict[str, str] = {}
    schedule_queue: dict[str, str] = {}
    out: list[Command] = []
    for command in log:
        if isinstance(command, (CreateSchedule, UpdateSchedule)):
            schedule_queue[command.spec.name] = command.spec.queue
        elif isinstance(command, FireSchedule) and command.job_id is not None:
            queue_of.setdefault(command.job_id, schedule_queue.get(command.name, "?"))
        elif isinstance(command, Submit):
            jobs = []
            for nj in command.jobs:
                key = nj.idempotency_key
                flow = nj.flow
                if flow is not None:
                    same = [p for p in flow.depends_on if queue_of.get(p) == nj.queue]
                    unique = flow.unique_key
                    unique = None if unique is None else f"{nj.queue}/{unique}"
                    flow = msgspec.structs.replace(flow, depends_on=same, unique_key=unique)
                jobs.append(
                    msgspec.structs.replace(
                        nj, idempotency_key=None if key is None else f"{nj.queue}/{key}", flow=flow
                    )
                )
                queue_of.setdefault(nj.id, nj.queue)
            command = msgspec.structs.replace(command, jobs=jobs)
        out.append(command)
    return out


def _everything(sm: StateMachine) -> tuple[object, ...]:
    jobs, _ = sm.list_jobs(limit=10**6)
    return (
        sm.stats(),
        [msgspec.structs.asdict(job) for job in jobs],
        sm.next_due(),
        sm.dead_groups(),
        sm.held(),
        sm.idempotency_key_count,
        [sm.has_runnable(queue, T0 + 10**9) for queue in QUEUES],
    )


@pytest.mark.parametrize("seed", [11, 2027])
def test_ownership_on_with_every_queue_adopted_changes_nothing(seed: int) -> None:
    log, _, _, _ = record_log(seed, 6000)
    log = _shardable(log)
    assert any(isinstance(c, Submit) and any(j.flow and j.flow.depends_on for j in c.jobs)
               for c in log)  # fmt: skip
    plain, sharded = Recorder(), Recorder()
    for command in [StartShard(7, T0), *(AdoptQueue(queue, 1, now=T0) for queue in QUEUES)]:
        sharded.sm.apply(command)
    plain_results = [plain.sm.apply(command) for command in log]
    sharded_results = [sharded.sm.apply(command) for command in log]
    assert sharded_results == plain_results
    assert sharded.events == plain.events
    assert _everything(sharded.sm) == _everything(plain.sm)
    # ... and the unsharded machine never carries ownership state in its snapshot
    assert plain.sm.ownership.dump() is None


def test_a_log_with_a_move_replays_to_the_same_bytes() -> None:
    log, _, _, _ = record_log(5, 3000)
    log = _shardable(log)
    source: list[Command] = [StartShard(1, T0), *(AdoptQueue(q, 1, now=T0) for q in QUEUES)]
    source += log
    now = T0 + 10**8
    source.append(FenceQueue("emails", "m-1", now))
    driver = StateMachine(CONFIG)
    for command in source:
        driver.apply(command)
    chunks = driver.export_queue("emails", "m-1", 4096)
    assert len(chunks) > 1
    source.append(ReleaseQueue("emails", "m-1", 2, now + 1))
    source += [Submit(now + 2, [NewJob("after", "reports", flow=JobFlow())])]
    target: list[Command] = [StartShard(2, T0), AdoptQueue("other", 1), *chunks]
    target.append(AdoptQueue("emails", 2, "m-1", now + 1))
    for shard_log in (source, target):
        snapshots = set()
        for _ in range(2):
            sm = StateMachine(CONFIG)
            for command in shard_log:
                sm.apply(decode_command(encode_command(command)))
            snapshots.add(sm.snapshot())
            restored = StateMachine(CONFIG)
            restored.restore(sm.snapshot())
            snapshots.add(restored.snapshot())
        assert len(snapshots) == 1
        assert sm.queue_stats("emails") is not None if shard_log is target else True
