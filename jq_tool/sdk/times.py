"""Time on the client side: the one clock read (`utc_now`) and the one RFC 3339 formatter and
parser the SDK, the CLI and the TUI use. The API speaks RFC 3339 in UTC with milliseconds
(`2026-01-02T03:04:05.678Z`); results decode into timezone-aware `datetime`s. A naive `datetime`
given to the SDK, or a time without an offset given to `parse_time`, is UTC: one rule for a
time without a zone in the SDK, the CLI and the HTTP API (which reads `run_at` so).
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """Now, timezone-aware, in UTC."""
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds, as the API speaks it; a naive datetime is UTC."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    # Not strftime: its %Y gives year 999 as "999" (glibc), which is not RFC 3339, so a server
    # refused a time before 1970 as malformed, quoting a time nobody wrote, instead of as early.
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond // 1000:03d}Z"
    )


def parse_time(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 time (`2026-01-02T03:04:05Z`, `2026-01-02 03:04`, `2026-01-02`) as
    an aware datetime; one without an offset is UTC. Raises ValueError."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time (examples: 2026-01-02T03:04:05Z, 2026-01-02 03:04)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
