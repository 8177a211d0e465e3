"""What the engine measures about its log, for `GET /metrics`: how long each durable append
(write + fdatasync, or an etcd put) takes, how many commands share one, and snapshots.

Plain counters kept by the engine on its own hot path (no locks: only the event loop thread
records), turned into Prometheus metric families when scraped.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client.metrics_core import HistogramMetricFamily, Metric

SECONDS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        from prometheus_client.metrics_core import HistogramMetricFamily

        cumulative, running = [], 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return HistogramMetricFamily(name, documentation, buckets=cumulative, sum_value=self.total)


class LogMetrics:
    def __init__(self) -> None:
        self.append_seconds = Histogram(SECONDS_BUCKETS)
        self.batch_commands = Histogram(BATCH_BUCKETS)
        self.snapshot_seconds = Histogram(SECONDS_BUCKETS)
        self.append_failures = 0
        self.appends_in_loop = 0  # lone callers' commands appended by the event loop (local WAL)
        self.appends_queued = 0  # written by the event loop, synced by the kernel (Linux AIO)

    def collect(self) -> Iterator[Metric]:
        # prometheus_client is imported by the first scrape, not by every server start.
        from prometheus_client.metrics_core import CounterMetricFamily

        yield self.append_seconds.family(
            "jq_wal_fsync_seconds",
            "Time of one durable append of a batch (WAL write + fdatasync, or an etcd put)",
        )
        yield self.batch_commands.family(
            "jq_wal_batch_commands", "Commands made durable together by one append (group commit)"
        )
        yield self.snapshot_seconds.family("jq_snapshot_seconds", "Time to write one snapshot")
        yield CounterMetricFamily(
            "jq_wal_append_failures", "Appends that failed", value=self.append_failures
        )
        yield CounterMetricFamily(
            "jq_wal_appends_in_loop",
            "Appends of a lone caller's commands made by the event loop itself, not the WAL thread",
            value=self.appends_in_loop,
        )
        yield CounterMetricFamily(
            "jq_wal_appends_queued",
            "Appends written by the event loop, their fdatasync queued to the kernel (Linux AIO)",
            value=self.appends_queued,
        )
