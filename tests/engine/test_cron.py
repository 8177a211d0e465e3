"""The schedule's times (engine/cron.py): 5 and 6 fields, aliases, time zones, and the DST rule
docs/api.md states, checked on real transitions of Europe/Berlin (2026-03-29 02:00 → 03:00,
2026-10-25 03:00 → 02:00) and America/New_York; bad expressions and zones refused with the
field named; any text at all gives a CronError or times, never another exception."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jq_tool.engine.cron import CronError, CronTimes

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def ms(*args: int, tz: object = UTC, fold: int = 0) -> int:
    return int(datetime(*args, tzinfo=tz, fold=fold).timestamp() * 1000)  # type: ignore[arg-type, misc]


def utc(times: list[int]) -> list[str]:
    return [datetime.fromtimestamp(t / 1000, UTC).strftime("%m-%d %H:%M:%S") for t in times]


def test_five_fields_step_by_minutes_and_six_by_seconds() -> None:
    start = ms(2026, 1, 1, 10, 0, 0)
    assert utc(CronTimes("*/15 * * * *", "UTC").upcoming(start, 3)) == [
        "01-01 10:15:00",
        "01-01 10:30:00",
        "01-01 10:45:00",
    ]
    assert utc(CronTimes("*/20 * * * * *", "UTC").upcoming(start, 3)) == [
        "01-01 10:00:20",
        "01-01 10:00:40",
        "01-01 10:01:00",
    ]


def test_due_times_are_strictly_after_and_before() -> None:
    every_second = CronTimes("* * * * * *", "UTC")
    exact = ms(2026, 1, 1, 10, 0, 0)
    assert every_second.after(exact) == exact + 1000
    assert every_second.after(exact + 500) == exact + 1000
    assert every_second.before(exact) == exact - 1000
    assert every_second.before(exact + 500) == exact
    hourly = CronTimes("@hourly", "UTC")
    assert hourly.before(exact + 1) == exact
    assert hourly.after(exact) == exact + 3_600_000


@pytest.mark.parametrize(
    ("alias", "same"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@MIDNIGHT", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
    ],
)
def test_aliases(alias: str, same: str) -> None:
    start = ms(2026, 5, 17, 13, 14, 15)
    assert CronTimes(alias, "UTC").upcoming(start, 3) == CronTimes(same, "UTC").upcoming(start, 3)


def test_a_time_zone_moves_the_wall_clock() -> None:
    nine = CronTimes("0 9 * * *", "Europe/Berlin")
    assert utc(nine.upcoming(ms(2026, 1, 1), 1)) == ["01-01 08:00:00"]  # CET, +01:00
    assert utc(nine.upcoming(ms(2026, 7, 1), 1)) == ["07-01 07:00:00"]  # CEST, +02:00


# -- DST: the rule of docs/api.md ----------------------------------------------------------------


@pytest.mark.parametrize("expression", ["30 2 * * *", "0 30 2 * * *"])
def test_a_wall_clock_time_in_the_spring_gap_runs_once_at_the_gap_end(expression: str) -> None:
    daily = CronTimes(expression, "Europe/Berlin")
    times = daily.upcoming(ms(2026, 3, 28, 12, 0, tz=BERLIN), 3)
    assert times == [
        ms(2026, 3, 29, 3, 0, tz=BERLIN),  # 02:30 does not exist that day: at 03:00 CEST
        ms(2026, 3, 30, 2, 30, tz=BERLIN),
        ms(2026, 3, 31, 2, 30, tz=BERLIN),
    ]


@pytest.mark.parametrize("expression", ["30 2 * * *", "0 30 2 * * *"])
def test_a_wall_clock_time_in_the_autumn_overlap_runs_once_at_its_first_occurrence(
    expression: str,
) -> None:
    daily = CronTimes(expression, "Europe/Berlin")
    times = daily.upcoming(ms(2026, 10, 24, 12, 0, tz=BERLIN), 3)
    assert utc(times) == [
        "10-25 00:30:00",  # 02:30 CEST, the first of the two 02:30s
        "10-26 01:30:00",  # 02:30 CET
        "10-27 01:30:00",
    ]


def test_a_start_inside_the_overlap_after_the_first_occurrence_waits_for_the_next_day() -> None:
    daily = CronTimes("30 2 * * *", "Europe/Berlin")
    second_pass = ms(2026, 10, 25, 2, 10, tz=BERLIN, fold=1)  # 02:10 CET, after 02:30 CEST
    assert utc([daily.after(second_pass) or 0]) == ["10-26 01:30:00"]


def test_several_wall_clock_times_in_one_gap_run_once() -> None:
    times = CronTimes("15,45 2 * * *", "Europe/Berlin").upcoming(ms(2026, 3, 29, tz=BERLIN), 2)
    assert times == [ms(2026, 3, 29, 3, 0, tz=BERLIN), ms(2026, 3, 30, 2, 15, tz=BERLIN)]


def test_frequent_expressions_run_on_elapsed_time_across_the_gap() -> None:
    hourly = CronTimes("0 * * * *", "Europe/Berlin")
    assert utc(hourly.upcoming(ms(2026, 3, 29, 0, 30, tz=BERLIN), 3)) == [
        "03-29 00:00:00",  # 01:00 CET
        "03-29 01:00:00",  # 03:00 CEST: 02:00 did not exist
        "03-29 02:00:00",
    ]


def test_frequent_expressions_run_on_elapsed_time_across_the_overlap() -> None:
    half_hourly = CronTimes("*/30 * * * *", "Europe/Berlin")
    assert utc(half_hourly.upcoming(ms(2026, 10, 25, 1, 50, tz=BERLIN), 5)) == [
        "10-25 00:00:00",  # 02:00 CEST
        "10-25 00:30:00",  # 02:30 CEST
        "10-25 01:00:00",  # 02:00 CET: the same wall time again, an hour later
        "10-25 01:30:00",
        "10-25 02:00:00",  # 03:00 CET
    ]


def test_every_second_keeps_ticking_through_both_transitions() -> None:
    every = CronTimes("* * * * * *", "America/New_York")
    for start in (ms(2026, 3, 8, 1, 59, 58, tz=NEW_YORK), ms(2026, 11, 1, 1, 59, 58, tz=NEW_YORK)):
        times = every.upcoming(start, 5)
        assert [b - a for a, b in zip([start, *times], times, strict=False)] == [1000] * 5


def test_reverse_steps_agree_with_forward_steps_around_transitions() -> None:
    for expression in ["30 2 * * *", "*/30 * * * *", "0 30 2 * * *", "15,45 2 * * *"]:
        times = CronTimes(expression, "Europe/Berlin")
        for start in (ms(2026, 3, 28, 12, tz=BERLIN), ms(2026, 10, 24, 12, tz=BERLIN)):
            forward = times.upcoming(start, 8)
            for earlier, later in zip(forward, forward[1:], strict=False):
                assert times.before(later) == earlier, (expression, utc([earlier, later]))


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("61 * * * *", "invalid cron expression"),
        ("* * * *", "5 fields"),
        ("* * * * * * *", "5 fields"),
        ("", "5 fields"),
        ("@reboot", "unknown alias"),
        ("0 0 30 2 *", "invalid cron expression"),
        ("*/0 * * * *", "invalid cron expression"),
        ("x" * 300, "at most 256"),
    ],
)
def test_bad_expressions_are_refused_naming_cron(expression: str, words: str) -> None:
    with pytest.raises(CronError) as refused:
        CronTimes(expression, "UTC")
    assert refused.value.field == "cron" and words in str(refused.value)


@pytest.mark.parametrize(
    "name", ["Mars/Olympus", "europe/berlin", "Europe", "../etc/passwd", "/etc/localtime", "",
             "zone.tab", "Europe/Berlin\x00", "x" * 300],
)  # fmt: skip
def test_unknown_time_zones_are_refused_naming_timezone(name: str) -> None:
    with pytest.raises(CronError) as refused:
        CronTimes("* * * * *", name)
    assert refused.value.field == "timezone"


def test_an_expression_that_never_comes_has_no_due_time() -> None:
    # The 1st or 21st of a month that is also its last Monday: never.
    assert CronTimes("* * */20 * 1L", "UTC").after(ms(2026, 1, 1)) is None


@settings(max_examples=300, deadline=None)
@given(
    expression=st.one_of(
        st.text(max_size=40),
        st.lists(
            st.sampled_from(["*", "*/5", "1-5", "L", "LW", "5L", "MON#2", "0", "59", "JAN", "?",
                             "1,2", "-", "/", "#", "W", "99", "SUN-SAT", "7", "²"]),
            min_size=4, max_size=7,
        ).map(" ".join),
    )
)  # fmt: skip
def test_any_text_is_times_or_a_cron_error(expression: str) -> None:
    try:
        times = CronTimes(expression, "Europe/Berlin")
    except CronError as refused:
        assert refused.field == "cron"
        return
    for due in times.upcoming(ms(2026, 3, 28), 3):
        assert due > ms(2026, 3, 28)
