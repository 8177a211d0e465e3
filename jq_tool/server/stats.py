"""The /stats body, shared by GET /stats and the `event: stats` frames of /events, and the
throughput meter behind its `submits_per_sec` and `acks_per_sec`.

The engine keeps monotonic counters; the meter samples them once a second in a background task
and reports the rate over the last sample interval, so a request for /stats costs no more
than reading a few integers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import msgspec

from jq_tool.engine.base import Engine


class ThroughputMeter:
    """Submits/s and acks/s from the engine's counters, sampled every `interval` seconds."""

    def __init__(self, engine: Engine, interval: float = 1.0) -> None:
        self.engine = engine
        self.interval = interval
        self.submits_per_sec = 0.0
        self.acks_per_sec = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="jq-throughput-meter")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        counters = self.engine.stats().counters
        last = (time.monotonic(), counters.submitted, counters.acked)
        while True:
            await asyncio.sleep(self.interval)
            counters = self.engine.stats().counters
            sample = (time.monotonic(), counters.submitted, counters.acked)
            elapsed = sample[0] - last[0]
            if elapsed > 0:
                self.submits_per_sec = round((sample[1] - last[1]) / elapsed, 1)
                self.acks_per_sec = round((sample[2] - last[2]) / elapsed, 1)
            last = sample


class StatsView:
    """Builds the /stats body of docs/api.md."""

    def __init__(self, engine: Engine, meter: ThroughputMeter, node_id: str) -> None:
        self.engine = engine
        self.meter = meter
        self.node_id = node_id
        self.started = time.monotonic()

    def body(self) -> dict[str, Any]:
        stats = self.engine.stats()
        body: dict[str, Any] = msgspec.structs.asdict(stats.totals)
        body["queues"] = {
            name: msgspec.structs.asdict(queue) for name, queue in sorted(stats.queues.items())
        }
        body["submits_per_sec"] = self.meter.submits_per_sec
        body["acks_per_sec"] = self.meter.acks_per_sec
        body["totals"] = msgspec.structs.asdict(stats.counters)
        body["role"] = self.engine.health().role
        body["node_id"] = self.node_id
        body["uptime_s"] = round(time.monotonic() - self.started, 3)
        return body
