"""Per-minute counts of jobs submitted, acked and failed, for the last 24 hours: globally and
for a bounded number of queues (GET /stats/history, the queue view's throughput).

Kept by the state machine, counted by the minute of the machine's clock (the largest logged
`now`, so minutes never go back), so the counts are derived from the log alone: they replay
after `kill -9`, are the same on every cluster node, and travel in the snapshot. Bounded:
MINUTES_KEPT minutes per series (a series holds only minutes with counts), QUEUES_TRACKED
queues (the first seen; a queue with no count in the last MINUTES_KEPT minutes gives its place
to the next new one). A count is one dict lookup and an increment.
"""

from __future__ import annotations

from collections import deque

import msgspec

MINUTE_MS = 60_000
MINUTES_KEPT = 1440  # 24 h
QUEUES_TRACKED = 64

SUBMITTED, ACKED, FAILED = 0, 1, 2


class HistorySeries(msgspec.Struct, array_like=True):
    """One series in a snapshot: the queue (None: every queue) and its (minute, submitted,
    acked, failed) rows, oldest first."""

    queue: str | None
    minutes: list[tuple[int, int, int, int]]


class _Series:
    __slots__ = ("rows",)

    def __init__(self) -> None:
        self.rows: deque[list[int]] = deque()  # [minute, submitted, acked, failed], oldest first

    def add(self, minute: int, kind: int, n: int) -> None:
        rows = self.rows
        if rows and rows[-1][0] == minute:
            rows[-1][kind + 1] += n
            return
        row = [minute, 0, 0, 0]
        row[kind + 1] = n
        rows.append(row)
        oldest = minute - MINUTES_KEPT + 1
        while rows[0][0] < oldest:
            rows.popleft()

    def last_minute(self) -> int:
        return self.rows[-1][0] if self.rows else -(2**62)


class History:
    """The counts; `count` is called by the state machine's handlers."""

    def __init__(self) -> None:
        self._total = _Series()
        self._queues: dict[str, _Series] = {}
        # While every slot is taken, no slot can free up before this minute: new queues are
        # not tracked until then without looking (so an untracked queue costs one comparison).
        self._full_until = -(2**62)
        # The current minute and its rows (the last row of each series), for `count`.
        self._minute = -(2**62)
        self._total_row: list[int] = [0, 0, 0, 0]
        self._rows: dict[str, list[int]] = {}

    def count(self, queue: str, now: int, kind: int, n: int = 1) -> None:
        minute = now // MINUTE_MS
        if minute == self._minute:
            # The hot path: this minute's rows are at hand (a throwaway row for a queue that
            # is not tracked), two increments.
            self._total_row[kind + 1] += n
            row = self._rows.get(queue)
            if row is not None:
                row[kind + 1] += n
                return
        else:
            self._total.add(minute, kind, n)
            self._minute = minute
            self._total_row = self._total.rows[-1]
            self._rows = {}
        series = self._queues.get(queue)
        if series is None:
            series = self._slot(queue, minute)
            if series is None:
                self._rows[queue] = [minute, 0, 0, 0]  # counted nowhere until the next minute
                return
        series.add(minute, kind, n)
        self._rows[queue] = series.rows[-1]

    def _slot(self, queue: str, minute: int) -> _Series | None:
        queues = self._queues
        if len(queues) >= QUEUES_TRACKED:
            if minute < self._full_until:
                return None
            # Give the place of a queue with no count left in the window (the one idle the
            # longest, then by name: deterministic).
            idle = min(queues, key=lambda name: (queues[name].last_minute(), name))
            last = queues[idle].last_minute()
            if last > minute - MINUTES_KEPT:
                self._full_until = last + MINUTES_KEPT
                return None
            del queues[idle]
        series = queues[queue] = _Series()
        return series

    def tracked(self, queue: str | None) -> bool:
        return queue is None or queue in self._queues

    def window(
        self, queue: str | None, minutes: int, last_minute: int
    ) -> tuple[list[int], list[int], list[int]]:
        """(submitted, acked, failed) per minute for the `minutes` minutes ending with
        `last_minute`, oldest first, zeros where nothing was counted (or the queue is not
        tracked)."""
        series = self._total if queue is None else self._queues.get(queue)
        counts = [[0] * minutes for _ in range(3)]
        if series is not None:
            first = last_minute - minutes + 1
            for minute, submitted, acked, failed in series.rows:
                if first <= minute <= last_minute:
                    i = minute - first
                    counts[0][i], counts[1][i], counts[2][i] = submitted, acked, failed
        return counts[0], counts[1], counts[2]

    def dump(self) -> list[HistorySeries]:
        """For the snapshot: the global series first, then the queues in tracking order."""
        return [
            HistorySeries(name, [(r[0], r[1], r[2], r[3]) for r in series.rows])
            for name, series in [(None, self._total), *self._queues.items()]
        ]

    @classmethod
    def load(cls, dumped: list[HistorySeries]) -> History:
        history = cls()
        for entry in dumped:
            series = _Series()
            series.rows.extend([list(row) for row in entry.minutes])
            if entry.queue is None:
                history._total = series
            else:
                history._queues[entry.queue] = series
        return history
