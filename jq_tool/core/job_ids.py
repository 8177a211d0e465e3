"""Job and lease ids, chosen by the proposer (never by the state machine).

A job id is a version-4 UUID string. In sharded mode (issue 23, docs/scaling.md §2.3) its first
4 hex digits name the shard that created the job (0..65535) and the rest stays random (118
random bits: unique without coordination), so a request naming only a job id can be routed to
the shard that holds the job, or that holds its stub if the job's queue moved. A single-node or
one-group id is an ordinary random UUID: its first digits mean nothing, which is why only a
sharded deployment may ask `shard_of_job_id`.
"""

from __future__ import annotations

import os

__all__ = ["MAX_SHARD", "new_job_id", "new_lease_id", "shard_of_job_id"]

MAX_SHARD = 0xFFFF  # four hex digits


class _RandomHex:
    """Random hex digits fetched from the OS 4 KiB at a time: one getrandom() system call per
    128 ids instead of one per id, on the hot submit path. Only the event loop thread uses it."""

    def __init__(self) -> None:
        self._buffer = ""
        self._offset = 0

    def take(self, digits: int) -> str:
        if self._offset + digits > len(self._buffer):
            self._buffer, self._offset = os.urandom(2048).hex(), 0
        start = self._offset
        self._offset += digits
        return self._buffer[start : self._offset]


_random_hex = _RandomHex()


# The RFC 4122 variant digit (10xx) a random hex digit stands for: its low two bits kept.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def new_job_id(shard: int | None = None) -> str:
    """A random (version 4) UUID string, without uuid.UUID's costly constructor; with a shard,
    its first 4 hex digits are the shard's number."""
    h = _random_hex.take(32)
    head = h[:8] if shard is None else f"{_checked_shard(shard):04x}{h[4:8]}"
    return f"{head}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def new_lease_id() -> str:
    return _random_hex.take(32)


def shard_of_job_id(job_id: str) -> int | None:
    """The shard a sharded job id names, or None when the text is not a UUID string (an id
    made by hand, a typo): such a request cannot be routed by its id."""
    if type(job_id) is not str or len(job_id) != 36 or not job_id.isascii():
        return None
    if job_id[8] != "-" or job_id[13] != "-" or job_id[18] != "-" or job_id[23] != "-":
        return None
    try:
        int(job_id.replace("-", ""), 16)
    except ValueError:
        return None
    return int(job_id[:4], 16)


def _checked_shard(shard: int) -> int:
    if type(shard) is not int or not 0 <= shard <= MAX_SHARD:
        raise ValueError(f"a shard number is an integer between 0 and {MAX_SHARD}")
    return shard
