"""`settle_many` (batch ack, ack-and-lease-next) over the cluster's log: three real etcd members,
three engines in this process. The settlements and the lease travel in one etcd batch, every
node applies them alike, and a job leased through one node is settled through another."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cluster.test_cluster_engine import cluster_configs, engine_for, pytestmark, wait_for
from jq_tool.core.model import ErrorCode, Job, JobState
from jq_tool.engine.base import CommandRejected, JobSpec, LeaseNext, Settlement
from jq_tool.engine.cluster import ClusterEngine

__all__ = ["pytestmark"]  # skipped without etcd, as the other cluster engine tests


@pytest.fixture
async def three(tmp_path: Path) -> AsyncIterator[list[ClusterEngine]]:
    engines = [engine_for(c, tmp_path) for c in cluster_configs()]
    await asyncio.gather(*(e.start() for e in engines))
    yield engines
    await asyncio.gather(*(e.stop() for e in engines), return_exceptions=True)


async def test_settle_many_and_lease_next_across_nodes(three: list[ClusterEngine]) -> None:
    a, b, c = three
    await a.submit_many([JobSpec(payload=f"p{i}") for i in range(4)])
    jobs = await b.lease("default", max_jobs=2)
    assert len(jobs) == 2
    batches_before = c.log_metrics.batch_commands.counts[:]
    outcomes, leased = await c.settle_many(
        [
            Settlement(jobs[0].id, jobs[0].lease_id, result="done"),
            Settlement(jobs[1].id, "stale"),
            Settlement("no-such-job", None),
        ],
        lease_next=LeaseNext("default", max_jobs=5),
    )
    assert isinstance(outcomes[0], Job) and outcomes[0].state is JobState.ACKED
    assert isinstance(outcomes[1], CommandRejected)
    assert outcomes[1].code is ErrorCode.LEASE_MISMATCH
    assert isinstance(outcomes[2], CommandRejected) and outcomes[2].code is ErrorCode.NOT_FOUND
    assert sorted(j.payload for j in leased) == ["p2", "p3"]

    # One put: the two settlements and the lease in one etcd batch of three commands (the
    # put's metrics are recorded when etcd answers it, which may be after the watch applied it).
    def grew() -> list[int]:
        return [
            n - m for n, m in zip(c.log_metrics.batch_commands.counts, batches_before, strict=True)
        ]

    await wait_for(lambda: sum(grew()) >= 1)
    await asyncio.sleep(0.2)
    assert grew() == [1 if i == 2 else 0 for i in range(len(grew()))]  # the bucket of 3 (<= 4)
    # Every node applied the same: the same state, byte for byte.
    await wait_for(lambda: len({e.applied_revision for e in three}) == 1)
    assert len({e._machine.snapshot() for e in three}) == 1
    # The jobs leased through c are settled through a.
    outcomes, _ = await a.settle_many([Settlement(j.id, j.lease_id) for j in leased])
    assert all(isinstance(o, Job) and o.state is JobState.ACKED for o in outcomes)
