"""The /stats body, shared by GET /stats and the `event: stats` frames of /events, the GET
/queues pages, and the throughput meter behind `submits_per_sec` and `acks_per_sec`.

The engine keeps monotonic counters; the meter samples them once a second in a background task
and reports the rate over the last sample interval, so a request for /stats costs no more
than reading a few integers.

It also sums up the schedules (periodic jobs): how many, how many paused, the next due
time, and their runs, skipped and missed runs (O(schedules), at most 10,000).

However many queues there are, a stats body stays small (under 64 KiB): the totals, plus the
STATS_QUEUES busiest queues and `queue_count`; GET /queues pages through all of them. The
/events streams share one encoded stats frame, rebuilt at most every FRAME_TTL_S, so forty
open dashboards cost one body a second, not forty.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import msgspec

from jq_tool.engine.base import Engine
from jq_tool.server.wire import rfc3339

_QUEUE_SETTING_FIELDS = ("paused", "concurrency", "rate_limit", "rate_period_ms")
STATS_QUEUES = 100  # the busiest queues in /stats and each stats frame of /events
FRAME_TTL_S = 0.5  # an /events stats frame may be this old when a stream sends it


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
        counters = self.engine.stats(top=0).counters
        last = (time.monotonic(), counters.submitted, counters.acked)
        while True:
            await asyncio.sleep(self.interval)
            counters = self.engine.stats(top=0).counters
            sample = (time.monotonic(), counters.submitted, counters.acked)
            elapsed = sample[0] - last[0]
            if elapsed > 0:
                self.submits_per_sec = round((sample[1] - last[1]) / elapsed, 1)
                self.acks_per_sec = round((sample[2] - last[2]) / elapsed, 1)
            last = sample


class StatsView:
    """Builds the /stats body of docs/api.md."""

    def __init__(
        self, engine: Engine, meter: ThroughputMeter, node_id: str, latency: Any = None
    ) -> None:
        self.engine = engine
        self.latency = latency  # server/latency.py's LatencyWatch: per-queue latency
        self.meter = meter
        self.node_id = node_id
        self.started = time.monotonic()
        self._frame = b""
        self._frame_at = -FRAME_TTL_S

    def body(self) -> dict[str, Any]:
        stats = self.engine.stats(top=STATS_QUEUES)
        body: dict[str, Any] = msgspec.structs.asdict(stats.totals)
        for setting in _QUEUE_SETTING_FIELDS:  # a queue's own, not a total
            del body[setting]
        body["queues"] = {
            name: msgspec.structs.asdict(queue) for name, queue in sorted(stats.queues.items())
        }
        body["queue_count"] = stats.queue_count
        body["submits_per_sec"] = self.meter.submits_per_sec
        body["acks_per_sec"] = self.meter.acks_per_sec
        body["totals"] = msgspec.structs.asdict(stats.counters)
        schedules = self.engine.schedule_stats()
        body["schedules"] = {
            "count": schedules.count,
            "paused": schedules.paused,
            "next_fire_at": rfc3339(schedules.next_due),
            "runs": schedules.runs,
            "skipped_runs": schedules.skipped,
            "missed_runs": schedules.missed,
        }
        # What finished jobs are held, in memory and on disk (issue 21).
        body["held"] = msgspec.structs.asdict(self.engine.retention_stats())
        settings = self.engine.queue_settings_page()
        body["flow"] = {
            "paused_queues": sum(1 for s in settings if s.paused),
            "limited_queues": sum(1 for s in settings if s.concurrency or s.rate_limit),
        }
        if self.latency is not None:
            body["latency"] = self.latency.stats_body()
        body["role"] = self.engine.health().role
        body["node_id"] = self.node_id
        body["uptime_s"] = round(time.monotonic() - self.started, 3)
        return body

    def frame(self) -> bytes:
        """The stats body, JSON-encoded, for the /events streams: one encoding shared by every
        stream for up to FRAME_TTL_S."""
        now = time.monotonic()
        if now - self._frame_at >= FRAME_TTL_S:
            self._frame = msgspec.json.encode(self.body())
            self._frame_at = now
        return self._frame
