"""What this engine has seen of the workers, per queue (issue 19): when a worker last asked to
lease from a queue, how fast the queue drains, and how long its jobs waited between becoming
runnable and being leased (time in queue).

Not logged and not replicated: it is about requests and the moments commands were applied, not
about the queue's state, and each node sees its own (cluster mode: every node applies every
Lease, so each node's drain rate and wait times cover the whole cluster; lease requests are
the ones this node answered). Kept on the event loop thread without locks, like LogMetrics.

Memory and labels stay bounded whatever the number of queues: at most TRACKED_QUEUES queues are
tracked on their own (the first ones seen; the rest share `(other)` for wait times) and at
most ASKS_KEPT queues' last lease request times are remembered (the oldest forgotten first).
Wait times: a cumulative histogram per tracked queue (Prometheus `jq_queue_wait_seconds`) and a
sliding window of WINDOW_SLOTS slots of SLOT_MS each, from which the recent percentiles and the
drain rate are read.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import TYPE_CHECKING

from jq_tool.core.explain import ASKED_WITHIN_MS, QueueActivity
from jq_tool.engine.base import QueueLatency

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

TRACKED_QUEUES = 100  # queues with wait-time series of their own; the rest are "(other)"
OTHER = "(other)"  # not a valid queue name (the same label as jq_jobs uses)
ASKS_KEPT = 10_000  # queues whose last lease request time is remembered
SLOT_MS = 10_000
WINDOW_SLOTS = 30  # a 5-minute window of 10-second slots
DRAIN_WINDOW_MS = 60_000  # the drain rate is over the last minute
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                120.0, 300.0, 600.0, 1800.0, 3600.0)  # fmt: skip
_BUCKETS_MS = tuple(int(b * 1000) for b in WAIT_BUCKETS)


class _Tracked:
    __slots__ = ("counts", "total_ms", "slots", "slot", "current")

    def __init__(self) -> None:
        self.counts = [0] * (len(WAIT_BUCKETS) + 1)  # cumulative since start; last: +Inf
        self.total_ms = 0
        # slot number -> per-bucket counts in that slot; `current` is the newest slot's list
        self.slots: dict[int, list[int]] = {}
        self.slot = -1
        self.current: list[int] = []

    def observe(self, waited_ms: int, now: int) -> None:
        # On every lease: kept to a bisect, two increments and a comparison (about 0.4 µs).
        index = bisect.bisect_left(_BUCKETS_MS, waited_ms)
        self.counts[index] += 1
        self.total_ms += waited_ms
        slot = now // SLOT_MS
        if slot != self.slot:
            self._new_slot(slot)
        self.current[index] += 1

    def _new_slot(self, slot: int) -> None:
        current = self.slots.get(slot)
        if current is None:
            current = self.slots[slot] = [0] * (len(WAIT_BUCKETS) + 1)
            for old in [s for s in self.slots if s <= slot - WINDOW_SLOTS]:
                del self.slots[old]
        self.slot, self.current = slot, current

    def window(self, now: int, window_ms: int) -> list[int]:
        first = (now - window_ms) // SLOT_MS + 1
        summed = [0] * (len(WAIT_BUCKETS) + 1)
        for slot, counts in self.slots.items():
            if first <= slot <= now // SLOT_MS:
                for i, n in enumerate(counts):
                    summed[i] += n
        return summed


def _quantile(counts: list[int], q: float) -> float | None:
    """The upper bound of the bucket holding the q-quantile (the last finite bound for +Inf)."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    running = 0
    for i, n in enumerate(counts):
        running += n
        if running >= rank:
            return WAIT_BUCKETS[min(i, len(WAIT_BUCKETS) - 1)]
    return WAIT_BUCKETS[-1]


class QueueActivityTracker:
    def __init__(self) -> None:
        self._asked: dict[str, int] = {}  # queue -> last lease request (oldest first)
        self._tracked: dict[str, _Tracked] = {}
        self._other = _Tracked()

    def asked(self, queue: str, now: int) -> None:
        """A worker asked to lease from `queue` (whether or not it got a job)."""
        asked = self._asked
        if asked.pop(queue, None) is None and len(asked) >= ASKS_KEPT:
            del asked[next(iter(asked))]
        asked[queue] = now

    def leased(self, queue: str, waited_ms: int, now: int) -> None:
        """A job of `queue` was leased after waiting `waited_ms` since it became runnable."""
        tracked = self._tracked.get(queue)
        if tracked is None:
            if len(self._tracked) >= TRACKED_QUEUES:
                tracked = self._other
            else:
                tracked = self._tracked[queue] = _Tracked()
        tracked.observe(waited_ms if waited_ms > 0 else 0, now)

    def activity(self, queue: str, now: int) -> QueueActivity:
        recent = sorted(q for q, at in self._asked.items() if now - at <= ASKED_WITHIN_MS)
        return QueueActivity(
            last_asked_at=self._asked.get(queue),
            drain_per_s=self.drain_per_s(queue, now),
            asked_queues=recent,
        )

    def drain_per_s(self, queue: str, now: int) -> float:
        tracked = self._tracked.get(queue)
        if tracked is None:
            return 0.0
        leased = sum(tracked.window(now, DRAIN_WINDOW_MS))
        return round(leased / (DRAIN_WINDOW_MS / 1000), 3)

    def latency(self, queue: str, now: int) -> QueueLatency:
        tracked = self._tracked.get(queue)
        if tracked is None:
            return QueueLatency()
        counts = tracked.window(now, WINDOW_SLOTS * SLOT_MS)
        return QueueLatency(
            leased=sum(counts),
            wait_p50_s=_quantile(counts, 0.50),
            wait_p95_s=_quantile(counts, 0.95),
            wait_p99_s=_quantile(counts, 0.99),
            drain_per_s=self.drain_per_s(queue, now),
        )

    def tracked_queues(self) -> list[str]:
        return sorted(self._tracked)

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import HistogramMetricFamily

        family = HistogramMetricFamily(
            "jq_queue_wait_seconds",
            "Time in queue: from a job becoming runnable to its lease, per queue (the first "
            f"{TRACKED_QUEUES} queues seen; the rest are {OTHER})",
            labels=["queue"],
        )
        named = [(q, self._tracked[q]) for q in sorted(self._tracked)]
        if sum(self._other.counts):
            named.append((OTHER, self._other))
        for queue, tracked in named:
            cumulative, running = [], 0
            for bound, count in zip((*WAIT_BUCKETS, float("inf")), tracked.counts, strict=True):
                running += count
                cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
            family.add_metric([queue], cumulative, tracked.total_ms / 1000)
        yield family
