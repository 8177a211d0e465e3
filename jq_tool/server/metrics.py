"""Prometheus metrics for `GET /metrics`, and the middleware that counts HTTP requests.

Each app gets its own CollectorRegistry (tests run many apps in one process). Queue gauges are
read from the engine at scrape time rather than updated on every change, and request counts
are plain dict increments on the hot path (one event loop, no lock needed), turned into a
counter family only when scraped.

Per-queue series are bounded whatever the number of queues: the METRICS_QUEUES busiest queues
get their own `jq_jobs` series, the rest are summed into one series labelled `queue="(other)"`
(a name no queue can have), and `jq_queues` counts them all. With 20,000 queues the page stays
well under 1 MiB (bench/queues_bench.py measures its size and build time).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING

import msgspec
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jq_tool.engine.base import Engine

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRICS_QUEUES = 250  # queues with series of their own in jq_jobs; the rest are "(other)"
OTHER_QUEUES = "(other)"  # not a valid queue name, so it never collides with one

access_log = logging.getLogger("jq.access")


class RequestCounts:
    """HTTP requests by route template and status, and engine commands by type."""

    def __init__(self) -> None:
        self.requests: defaultdict[tuple[str, int], int] = defaultdict(int)
        self.commands: defaultdict[str, int] = defaultdict(int)
        # Sharded mode: requests this node forwarded, by the shard they were for.
        self.forwarded: defaultdict[str, int] = defaultdict(int)


class QueueCollector:
    """A prometheus_client collector (it needs only `collect`)."""

    def __init__(self, engine: Engine, counts: RequestCounts) -> None:
        self.engine = engine
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.engine.stats(top=METRICS_QUEUES)
        jobs = GaugeMetricFamily("jq_jobs", "Jobs by state and queue", labels=["state", "queue"])
        # Every count the engine keeps, by its own field names: a new one shows up here too.
        others = msgspec.structs.asdict(stats.totals)
        for queue, queue_stats in sorted(stats.queues.items()):
            for state, count in msgspec.structs.asdict(queue_stats).items():
                others[state] -= count
                if state != "total":  # the sum of the others: a query sums them
                    jobs.add_metric([state, queue], count)
        if stats.queue_count > len(stats.queues):
            for state, count in others.items():
                if state != "total":
                    jobs.add_metric([state, OTHER_QUEUES], count)
        yield jobs
        yield GaugeMetricFamily(
            "jq_queues", "Queues holding at least one job", value=stats.queue_count
        )
        events = CounterMetricFamily(
            "jq_job_transitions", "Job transitions since the queue was created", labels=["kind"]
        )
        for kind, count in msgspec.structs.asdict(stats.counters).items():
            events.add_metric([kind], count)
        yield events
        commands = CounterMetricFamily(
            "jq_commands", "Engine commands issued by this server process", labels=["type"]
        )
        for kind, count in sorted(self.counts.commands.items()):
            commands.add_metric([kind], count)
        yield commands
        requests = CounterMetricFamily(
            "jq_http_requests", "HTTP requests by route and status", labels=["route", "status"]
        )
        for (route, status), count in sorted(self.counts.requests.items()):
            requests.add_metric([route, str(status)], count)
        yield requests
        if self.counts.forwarded:
            forwarded = CounterMetricFamily(
                "jq_forwarded_requests",
                "Requests this node sent on to a node holding their shard (sharded mode)",
                labels=["shard"],
            )
            for shard, count in sorted(self.counts.forwarded.items()):
                forwarded.add_metric([shard], count)
            yield forwarded
        # What finished jobs are held, in memory and on disk (issue 21); the evictions are
        # jq_job_transitions{kind="evicted"} and {kind="dead_dropped"}.
        held = self.engine.retention_stats()
        for name, help_text, value in (
            ("jq_finished_in_memory", "ACKED and CANCELLED jobs held in memory",
             held.finished_in_memory),
            ("jq_dead_in_memory", "DEAD jobs held in memory", held.dead_in_memory),
            ("jq_finished_memory_bytes", "Estimated bytes of the finished and DEAD jobs held",
             held.bytes_in_memory),
            ("jq_history_records", "Final records of forgotten jobs in the history store",
             held.finished_on_disk),
            ("jq_history_bytes", "Size of the history store's files", held.history_bytes),
        ):  # fmt: skip
            yield GaugeMetricFamily(name, help_text, value=value)
        health = self.engine.health()
        yield GaugeMetricFamily("jq_up", "1 when the engine accepts writes", value=int(health.ok))
        yield from self.engine.metrics()  # the log's own: append latency, batch sizes, ...


class MetricsRegistry:
    """This app's registry, made on the first scrape: prometheus_client (and the http.client it
    brings) is imported then, not by every server start, whose time is a measured target."""

    def __init__(self, engine: Engine, counts: RequestCounts) -> None:
        self._collector = QueueCollector(engine, counts)
        self._registry: CollectorRegistry | None = None
        self._more: list[object] = []  # other collectors (queue latency), added by the app

    def add(self, collector: object) -> None:
        """Another collector (an object with `collect()`), registered on the first scrape."""
        self._more.append(collector)

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        if self._registry is None:
            self._registry = CollectorRegistry(auto_describe=False)
            self._registry.register(self._collector)
            for collector in self._more:
                self._registry.register(collector)  # type: ignore[arg-type]
        return bytes(generate_latest(self._registry))


def build_registry(engine: Engine, counts: RequestCounts) -> MetricsRegistry:
    return MetricsRegistry(engine, counts)


def render(registry: MetricsRegistry) -> bytes:
    return registry.render()


class RequestMetricsMiddleware:
    """Pure ASGI: counts each response by route template (never the raw path, which may carry
    a key in DELETE /keys/{key}) and optionally writes an access log line the same way."""

    def __init__(self, app: ASGIApp, counts: RequestCounts, log_access: bool) -> None:
        self.app = app
        self.counts = counts
        self.log_access = log_access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter() if self.log_access else 0.0

        async def send_and_count(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_count)
        finally:
            count_request(self.counts, scope, status, started if self.log_access else None)


def count_request(counts: RequestCounts, scope: Scope, status: int, started: float | None) -> None:
    """Count one answered request by its route template and status; with `started` (the
    access log is on), log it the same way."""
    route = _route_template(scope)
    counts.requests[(route, status)] += 1
    if started is not None:
        access_log.info(
            "%s %s %d %.1fms",
            scope["method"],
            route,
            status,
            (time.perf_counter() - started) * 1000,
        )


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else "unmatched"
