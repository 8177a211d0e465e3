"""Process-wide settings for a process that runs an engine: `jq serve`, and the benchmarks that
measure the engine the way `jq serve` runs it."""

from __future__ import annotations

import gc


def tune_gc() -> None:
    """Collect cyclic garbage far less often than CPython's default (every 700 allocations).
    Requests and commands make short-lived garbage that reference counting frees anyway, and
    each pass of the collector pauses every caller in flight: measured with wrk at 64
    connections, the default thresholds tripled the p99 of POST /jobs, and they cost the engine
    about a quarter of its durable submit rate with 256 submitters (bench/core_bench.py)."""
    gc.set_threshold(50_000, 50, 1000)
