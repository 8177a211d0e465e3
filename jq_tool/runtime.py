"""Process-wide settings for a process that runs an engine: `jq serve`, and the benchmarks that
measure the engine the way `jq serve` runs it."""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator


def tune_gc() -> None:
    """While the process starts (imports, building the app): collect cyclic garbage far less
    often than CPython's default (every 700 allocations); `tune_gc_for_serving` follows.
    Requests and commands make short-lived garbage that reference counting frees anyway, and
    each pass of the collector pauses every caller in flight: measured with wrk at 64
    connections, the default thresholds tripled the p99 of POST /jobs, and they cost the engine
    about a quarter of its durable submit rate with 256 submitters (bench/core_bench.py)."""
    gc.set_threshold(50_000, 50, 1000)


# While serving: a young collection every 5,000 net allocations (not 50,000), an older one every
# 10 of those, a full one as rarely as before (5,000 x 10 x 50,000 = 50,000 x 50 x 1,000
# allocations). A collection walks what survived since the last one, and a submit leaves a
# few tracked objects alive (index entries the collector must see once before it can untrack
# them): with 50,000 the young generation held ~25,000 submits' worth, and each pass paused
# every request in flight for 5-15 ms (up to 60 ms) at peak load, the p99 of a wrk run at 64
# connections. With 5,000 a pass takes ~0.4 ms, the older one ~0.4-1 ms; the collector's total
# time did not grow (measured in process: 64 submitters, 8 s, gc.callbacks timing each pass).
SERVING_GC_THRESHOLDS = (5_000, 10, 50_000)


def tune_gc_for_serving() -> None:
    """The collector's thresholds once the process is up and everything it made while starting
    is frozen (server/runner.py): many short passes rather than few long ones."""
    gc.set_threshold(*SERVING_GC_THRESHOLDS)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection inside: for recovery, which makes a million long-lived objects in
    a row (a snapshot's jobs, heaps and maps) that every collection would walk again for
    nothing. Measured on 1M queued jobs: recovery 10-20% faster.

    On the way out, what was made inside leaves the young generation without being walked:
    the collector's count kept rising while it was paused, so the first allocation after it
    resumed started a young collection of every object made inside, which with 1M jobs queued
    walked 2M heap entries (~0.3 s of every restart) to find no garbage. gc.freeze moves them
    out of its sight. Where the process froze before (jq serve freezes its modules and app
    once built: server/runner.py), the restored state stays frozen with them: it lives as long
    as the process too. Elsewhere (a test or a benchmark opening engines one after another)
    gc.unfreeze hands them to the oldest generation instead, where only a full collection
    looks, so that a cycle left behind by what ran before can still be collected."""
    keep_frozen = gc.get_freeze_count() > 0
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if not keep_frozen:
            gc.unfreeze()
        if was_enabled:
            gc.enable()


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value


def tune_malloc() -> None:
    """Pin glibc's mmap threshold at its starting 128 KiB. By default glibc raises the
    threshold to the size of any mmapped block that is freed (up to 32 MiB); after that, big
    temporary buffers (the snapshot read at recovery, replayed WAL chunks, large request
    bodies) come from the heap and leave holes that stay in RSS: in issue 21's soak each
    restart's RSS stayed 10-20 MiB above the process it replaced, its heap over half free.
    Pinned, such a buffer is its own mapping, given back to the OS when freed. Does nothing
    where the C library has no mallopt."""
    if sys.platform != "linux":
        return
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
