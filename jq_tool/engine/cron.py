"""When a schedule is due: a cron expression read in an IANA time zone, as due times in epoch
milliseconds. The engine computes every due time here and puts it in a command; the state
machine never reads a cron expression.

Expressions are parsed and stepped by cronsim (Debian cron's semantics: see docs/api.md,
"Periodic jobs", for why cronsim and not croniter): 5 fields (minute hour day-of-month month
day-of-week), or 6 with the seconds field first (`*/10 * * * * *`), plus the aliases of
`ALIASES` (`@hourly` …). Names of months and days, `L`, `LW`, `#n` are cronsim's.

Daylight saving time, one rule for 5 and 6 fields (Debian cron's, which cronsim follows for
5 fields only; we apply it to both):
- A **wall-clock** expression (its minute and hour fields do not start with `*`: `30 2 * * *`,
  `0 9-17/2 * * 1-5`, `0 0 3 * * *`) runs once per matching wall-clock time. A time that a
  spring-forward gap skips runs at the first moment after the gap (02:30 → 03:00, once however
  many of its times fell in the gap); a time that a fall-back overlap repeats runs once, at its
  first occurrence (the earlier offset).
- Any other expression (`*/15 * * * *`, `0 * * * *`, `* * * * * *`) runs on elapsed time: every
  instant whose local time matches. Times in a gap do not exist, so they do not run (an hourly
  job runs at 01:00 and 03:00); times repeated by an overlap run each time (02:00 CEST and
  02:00 CET), so the job still runs every hour.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo

from cronsim import CronSim, CronSimError

from jq_tool.engine.base import InvalidSchedule

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MAX_EXPRESSION = 256  # characters of a cron expression
MAX_TIMEZONE = 64  # characters of a time zone name
_MINUTE = timedelta(minutes=1)
# Wall-clock steps looked at before giving up on one answer: a day of minutes covers the
# longest gap there ever was (Samoa skipped 2011-12-30 whole).
_MAX_STEPS = 2000
_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Etc/Universal", "Universal", "Zulu", "Etc/Zulu"})


class CronError(InvalidSchedule):
    """A cron expression or time zone that cannot be used; `field` is the request field at
    fault (`cron` or `timezone`) and the message says why, for the client."""


@functools.cache
def _zone_names() -> frozenset[str]:
    # Read once (a walk of the tz database, ~0.1 s): a name outside it is never opened, so a
    # client cannot make us read arbitrary files of the tz path (directories, zone.tab).
    return frozenset(zoneinfo.available_timezones())


def zone(name: str) -> tzinfo:
    """The time zone of an IANA name (`Europe/Berlin`, `UTC`). Raises CronError."""
    if name in _UTC_NAMES:
        return UTC
    if len(name) > MAX_TIMEZONE or name not in _zone_names():
        raise CronError(
            "timezone", f"unknown time zone {name[:MAX_TIMEZONE]!r}: use an IANA name such as "
            "'UTC', 'Europe/Berlin' or 'America/New_York'",
        )  # fmt: skip
    try:
        return zoneinfo.ZoneInfo(name)
    except (OSError, ValueError, KeyError) as exc:  # removed from the tz database since
        raise CronError("timezone", f"time zone {name!r} cannot be read: {exc}") from None


class CronTimes:
    """A cron expression in a time zone, and its due times. Raises CronError when either
    cannot be used."""

    def __init__(self, expression: str, timezone: str) -> None:
        if len(expression) > MAX_EXPRESSION:
            raise CronError("cron", f"a cron expression has at most {MAX_EXPRESSION} characters")
        text = " ".join(expression.split())
        if text.startswith("@"):
            alias = ALIASES.get(text.lower())
            if alias is None:
                raise CronError("cron", f"unknown alias {text!r}: use one of {', '.join(ALIASES)}")
            text = alias
        fields = text.split(" ")
        if len(fields) not in (5, 6):
            raise CronError(
                "cron",
                f"a cron expression has 5 fields (minute hour day month weekday) or 6 (seconds "
                f"first), not {len(fields) if text else 0}",
            )
        self.expression = text
        self.zone = zone(timezone)
        minute, hour = fields[-5], fields[-4]
        self.wall_clock = not minute.startswith("*") and not hour.startswith("*")
        try:
            CronSim(text, datetime(2000, 1, 1))
        except CronSimError as exc:
            raise CronError("cron", f"invalid cron expression {text!r}: {exc}") from None

    def after(self, ms: int) -> int | None:
        """The first due time strictly after `ms`, or None when there is none within 50
        years of it."""
        for due in self.walk(ms, reverse=False):
            return due
        return None

    def before(self, ms: int) -> int | None:
        """The last due time strictly before `ms`, or None within 50 years."""
        for due in self.walk(ms, reverse=True):
            return due
        return None

    def upcoming(self, ms: int, count: int) -> list[int]:
        """The next `count` due times after `ms` (fewer when the expression stops)."""
        times: list[int] = []
        for due in self.walk(ms, reverse=False):
            times.append(due)
            if len(times) >= count:
                break
        return times

    def walk(self, ms: int, *, reverse: bool = False) -> Iterator[int]:
        """Due times one after another from `ms` (excluded), forward or backward."""
        return _Steps(self, ms, reverse)


class _Steps:
    """Due times after (or before) `ms`, each strictly beyond the last, as epoch ms."""

    def __init__(self, times: CronTimes, ms: int, reverse: bool) -> None:
        self.times = times
        self.ms = ms
        self.reverse = reverse
        start = datetime.fromtimestamp(ms // 1000, times.zone)
        start = start.replace(microsecond=ms % 1000 * 1000)  # keeps the fold
        if times.wall_clock:
            # Step through wall-clock times, then place each in the zone (below).
            start = start.replace(tzinfo=None)
        self.cron = CronSim(times.expression, start, reverse=reverse)
        self.last = ms

    def __iter__(self) -> _Steps:
        return self

    def __next__(self) -> int:
        for _ in range(_MAX_STEPS):
            match = next(self.cron)  # StopIteration: nothing within 50 years
            due = self._instant(match) if self.times.wall_clock else _ms(match)
            # A wall-clock time can land before the start (its first occurrence precedes a
            # start inside an overlap) or on the one before (two times in one gap).
            if (due < self.last) if self.reverse else (due > self.last):
                self.last = due
                return due
        raise StopIteration

    def _instant(self, wall: datetime) -> int:
        """A wall-clock time placed in the zone: its first occurrence (fold 0) when an overlap
        repeats it, the first minute after the gap when a gap skips it."""
        local = wall.replace(tzinfo=self.times.zone, fold=0)
        if _exists(local):
            return _ms(local)
        moved = wall.replace(second=0)
        for _ in range(_MAX_STEPS):
            moved += _MINUTE
            local = moved.replace(tzinfo=self.times.zone, fold=0)
            if _exists(local):
                return _ms(local)
        raise StopIteration  # no zone has a gap that long


def _exists(local: datetime) -> bool:
    return local == local.astimezone(UTC).astimezone(local.tzinfo)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp()) * 1000 + moment.microsecond // 1000
