"""The human forms of durations (`200ms`, `30s`, `5m`, `2h`, `7d`), sizes (`1MiB`, `512KiB`,
`1048576`) and booleans that flags, environment variables and CLI options accept. One parser
each, shared by the server's settings, the CLI and the chaos harness. And one written form of
an instant (`format_time`) for key records, the CLI and log lines.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_DURATION_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_duration_ms(text: str) -> int:
    """`30s` → 30000, `1.5m` → 90000. A bare number means seconds (the common reading; the
    original service's Go durations always carry a unit). Raises ValueError naming the forms."""
    match = _DURATION_RE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration (examples: 200ms, 30s, 5m, 2h, 7d)")
    number, unit = match.groups()
    return int(float(number) * _DURATION_UNITS_MS[unit or "s"])


def parse_size(text: str) -> int:
    """`1MiB` → 1048576, `512KiB` → 524288, `2000` → 2000 bytes."""
    match = _SIZE_RE.match(text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size (examples: 1048576, 512KiB, 1MiB)")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean (true/false)")


def format_time(epoch_ms: int) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-28T10:00:00.123Z."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"
