"""The retry backoff of a failed attempt: how long a job waits in RETRY before it is runnable again.

Exponential in the attempt number, capped, and scaled by a jitter factor in [0.5, 1.0) so that
jobs failing together do not all come back together. The jitter is a hash of the job id and the
attempt number, never a random source: every replica of the state machine must compute the same
run_at from the same log.
"""

from __future__ import annotations

import zlib

# Keeps now + backoff inside a signed 64-bit integer, which is what msgpack snapshots can hold.
MAX_BACKOFF_MS = 2**62


def retry_backoff_ms(job_id: str, attempts: int, base_ms: int, max_ms: int) -> int:
    """Milliseconds to wait after failed attempt number `attempts` (1 for the first attempt).

    min(base_ms * 2**(attempts-1), max_ms), times a factor in [0.5, 1.0) derived from
    crc32(f"{job_id}:{attempts}"). Integer arithmetic only, so it is exact everywhere.
    """
    base = max(base_ms, 0)
    cap = min(max(max_ms, 0), MAX_BACKOFF_MS)
    exponent = max(attempts - 1, 0)
    # Past 2**62 every base would exceed the cap anyway; skip building a huge integer.
    exponential = cap if exponent >= 62 else min(base << exponent, cap)
    jitter = zlib.crc32(f"{job_id}:{attempts}".encode("utf-8", "surrogatepass"))
    # (2**32 + jitter) / 2**33 lies in [0.5, 1.0).
    return (exponential * (0x1_0000_0000 + jitter)) >> 33
