"""Queue latency for /stats, /metrics and /health (issue 19): per queue, the age of its oldest
runnable job and the recent time-in-queue percentiles and drain rate (from the engine's
`queue_latency`), and the queues over their threshold: the queue setting `max_latency_ms`
(`PUT /queues/{name}`, a logged SetQueue like the queue's other flow settings).

Which queues: the LATENCY_QUEUES busiest ones plus every queue with a threshold, so that
however many queues there are, the work per look and the number of series stay bounded; a look
is cached for CACHE_S, so /stats frames, scrapes and health probes share it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import msgspec

from jq_tool.engine.base import Engine, QueueLatency
from jq_tool.server.wire import HealthProblem

if TYPE_CHECKING:
    from prometheus_client.core import Metric

LATENCY_QUEUES = 50
CACHE_S = 1.0


class LatencyWatch:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._latest: dict[str, QueueLatency] = {}
        self._at = -CACHE_S

    def latencies(self) -> dict[str, QueueLatency]:
        now = time.monotonic()
        if now - self._at < CACHE_S:
            return self._latest
        stats = self.engine.stats(top=LATENCY_QUEUES)
        thresholds = {
            s.name: s.max_latency_ms for s in self.engine.queue_settings_page() if s.max_latency_ms
        }
        names = sorted(set(stats.queues) | set(thresholds))
        found: dict[str, QueueLatency] = {}
        for name in names:
            latency = self.engine.queue_latency(name)
            threshold = thresholds.get(name)
            if threshold is not None:
                latency.max_latency_s = threshold / 1000
            found[name] = latency
        self._latest, self._at = found, now
        return found

    def breaches(self) -> list[HealthProblem]:
        """A warning per queue whose oldest runnable job has waited past its threshold."""
        warnings = []
        for name, latency in self.latencies().items():
            age, limit = latency.oldest_runnable_age_s, latency.max_latency_s
            if age is not None and limit is not None and age > limit:
                warnings.append(
                    HealthProblem(
                        "max_latency",
                        f"queue {name!r}: its oldest runnable job has waited {age:g}s, "
                        f"more than its max latency {limit:g}s",
                    )
                )
        return warnings

    def stats_body(self) -> dict[str, dict[str, object]]:
        return {name: msgspec.structs.asdict(lat) for name, lat in self.latencies().items()}

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        oldest = GaugeMetricFamily(
            "jq_queue_oldest_runnable_age_seconds",
            "Age of the queue's oldest runnable job (0: none runnable); the busiest "
            f"{LATENCY_QUEUES} queues and those with a max latency",
            labels=["queue"],
        )
        limit = GaugeMetricFamily(
            "jq_queue_max_latency_seconds",
            "The queue's max latency threshold (its max_latency_ms setting)",
            labels=["queue"],
        )
        breached = GaugeMetricFamily(
            "jq_queue_latency_breached",
            "1 while the queue's oldest runnable job has waited past its max latency",
            labels=["queue"],
        )
        drain = GaugeMetricFamily(
            "jq_queue_drain_per_second", "Jobs leased per second over the last minute",
            labels=["queue"],
        )  # fmt: skip
        for name, latency in self.latencies().items():
            age = latency.oldest_runnable_age_s or 0.0
            oldest.add_metric([name], age)
            drain.add_metric([name], latency.drain_per_s)
            if latency.max_latency_s is not None:
                limit.add_metric([name], latency.max_latency_s)
                breached.add_metric([name], float(age > latency.max_latency_s))
        yield oldest
        yield limit
        yield breached
        yield drain
