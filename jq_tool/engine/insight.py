"""The insight calls of the Engine API (issue 19), mixed into CommandEngine: explain a job,
list and settle dead-letter groups, report progress, and read a queue's latency.

Reads come from the state machine's live state and from the engine's own `QueueActivityTracker`
(lease requests and wait times, engine/queue_activity.py); writes are logged commands like any
other. A whole dead-letter group is settled by `settle_dead_group` as a series of
`SettleDeadGroup` commands of at most `chunk` jobs each, each its own durable write and atomic:
the other requests' commands interleave with them, and a crash between two leaves every job
either settled once or not at all (a retried request takes the rest, since a settled job has
left the group).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from jq_tool.core.dead_groups import DeadGroupSummary
from jq_tool.core.explain import Explanation, explain
from jq_tool.core.model import (
    DeadGroupAction,
    DeadGroupResult,
    Error,
    ErrorCode,
    Job,
    JobResult,
    Progress,
    Result,
)
from jq_tool.engine.base import CommandRejected, DeadGroupOutcome, QueueLatency
from jq_tool.engine.queue_activity import QueueActivityTracker

if TYPE_CHECKING:
    from jq_tool.core.model import Command
    from jq_tool.core.state_machine import StateMachine

DEAD_GROUP_CHUNK = 500  # jobs per SettleDeadGroup command unless the request says fewer


class InsightCalls:
    """A mixin: CommandEngine supplies these."""

    _machine: StateMachine
    _clock: Callable[[], int]
    queue_activity: QueueActivityTracker

    async def _propose(self, command: Command) -> Result:
        raise NotImplementedError

    async def _catch_up(self) -> None:
        raise NotImplementedError

    async def explain(self, job_id: str) -> Explanation | None:
        await self._catch_up()
        job = self._machine.get(job_id)
        if job is None:
            return None
        now = self._clock()
        return explain(job, self._machine, self.queue_activity.activity(job.queue, now), now)

    def dead_groups(self) -> list[DeadGroupSummary]:
        return self._machine.dead_groups()

    async def settle_dead_group(
        self, fingerprint: str, action: DeadGroupAction, *, chunk: int = DEAD_GROUP_CHUNK
    ) -> DeadGroupOutcome:
        """Requeue or cancel every job of the group that died before now. Raises
        CommandRejected (NOT_FOUND) when no such group exists."""
        from jq_tool.core.model import SettleDeadGroup

        await self._catch_up()
        if self._machine.dead_group(fingerprint) is None:
            raise CommandRejected(ErrorCode.NOT_FOUND, f"no dead-letter group {fingerprint!r}")
        dead_before = self._clock()
        settled = commands = 0
        remaining = 0
        while True:
            result = await self._propose(
                SettleDeadGroup(self._clock(), fingerprint, action, chunk, dead_before)
            )
            if isinstance(result, Error):
                raise CommandRejected(result.code, result.message)
            assert isinstance(result, DeadGroupResult)
            commands += 1
            settled += len(result.job_ids)
            remaining = result.remaining
            if len(result.job_ids) < chunk:
                return DeadGroupOutcome(settled, commands, remaining)
            await asyncio.sleep(0)  # let other requests' commands into the next batch

    async def progress(
        self, job_id: str, *, lease_id: str | None, percent: float, note: str
    ) -> Job:
        if self._machine.get(job_id) is None:
            await self._catch_up()
            if self._machine.get(job_id) is None:
                raise CommandRejected(ErrorCode.NOT_FOUND, f"job {job_id} not found")
        result = await self._propose(Progress(self._clock(), job_id, lease_id, percent, note))
        if isinstance(result, Error):
            raise CommandRejected(result.code, result.message)
        assert isinstance(result, JobResult)
        return result.job

    def queue_latency(self, queue: str) -> QueueLatency:
        """The queue's recent time in queue and drain rate, and the age of its oldest runnable
        job (O(log n) amortized)."""
        now = self._clock()
        latency = self.queue_activity.latency(queue, now)
        since = self._machine.oldest_runnable_since(queue)
        if since is not None:
            latency.oldest_runnable_age_s = round(max(now - since, 0) / 1000, 3)
        return latency
