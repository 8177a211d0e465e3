"""What the engine keeps of the workers per queue (issue 19): wait times in buckets over a
sliding window (percentiles, drain rate), lease requests, and the bounds that keep memory and
Prometheus labels finite whatever the number of queues."""

from __future__ import annotations

from jq_tool.engine import queue_activity
from jq_tool.engine.queue_activity import (
    ASKS_KEPT,
    OTHER,
    SLOT_MS,
    TRACKED_QUEUES,
    WINDOW_SLOTS,
    QueueActivityTracker,
)

T0 = 1_700_000_000_000


def test_percentiles_and_drain_rate_over_the_window() -> None:
    tracker = QueueActivityTracker()
    for i in range(100):
        tracker.leased("q", 40 if i < 90 else 4000, T0 + i * 100)  # 90 quick, 10 slow
    latency = tracker.latency("q", T0 + 10_000)
    assert latency.leased == 100
    assert (latency.wait_p50_s, latency.wait_p95_s) == (0.05, 5.0)  # bucket upper bounds
    assert latency.drain_per_s == round(100 / 60, 3)
    # Once the window has passed, nothing is recent; the cumulative histogram keeps them.
    later = T0 + (WINDOW_SLOTS + 1) * SLOT_MS
    tracker.leased("q", 1, later)
    assert tracker.latency("q", later).leased == 1
    assert tracker.drain_per_s("q", later + 61_000) == 0.0
    (family,) = tracker.collect()
    (count,) = [s.value for s in family.samples if s.name.endswith("_count")]
    assert count == 101


def test_queues_and_asks_stay_bounded() -> None:
    tracker = QueueActivityTracker()
    for i in range(TRACKED_QUEUES + 50):
        tracker.leased(f"q{i}", 10, T0)
    assert len(tracker.tracked_queues()) == TRACKED_QUEUES
    (family,) = tracker.collect()
    labels = {s.labels["queue"] for s in family.samples}
    assert len(labels) == TRACKED_QUEUES + 1 and OTHER in labels
    for i in range(ASKS_KEPT + 10):
        tracker.asked(f"a{i}", T0 + i)
    assert len(tracker._asked) == ASKS_KEPT  # the oldest were forgotten
    activity = tracker.activity("a5", T0 + ASKS_KEPT)
    assert activity.last_asked_at is None  # forgotten
    assert tracker.activity(f"a{ASKS_KEPT + 9}", T0 + ASKS_KEPT + 9).last_asked_at is not None


def test_asked_queues_are_the_last_minutes() -> None:
    tracker = QueueActivityTracker()
    tracker.asked("old", T0)
    tracker.asked("new", T0 + 120_000)
    activity = tracker.activity("other", T0 + 121_000)
    assert activity.asked_queues == ["new"] and activity.last_asked_at is None
    assert queue_activity.DRAIN_WINDOW_MS == 60_000
