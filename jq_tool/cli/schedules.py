"""`jq schedules add|list|show|edit|rm|pause|resume`: periodic jobs over the HTTP API.

Thin like the other command groups: parse the options, one SDK call, print the schedule (a
rich table, or JSON with `--json`). Times are shown in UTC like everywhere in the CLI; a
schedule's own `--timezone` only says how its cron expression is read.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from jq_tool.cli.options import (
    JsonOption,
    KeyOption,
    UrlOption,
    duration_option,
    open_client,
    payload_text,
)
from jq_tool.cli.output import print_json, print_record, print_rows, show_time, stdout
from jq_tool.sdk import DEFAULT_URL, Schedule

schedules_app = typer.Typer(
    help="Periodic jobs: a cron expression in a time zone submits a job at each due time.",
    no_args_is_help=True,
)


class Overlap(StrEnum):
    allow = "allow"
    skip = "skip"


class Missed(StrEnum):
    skip = "skip"
    run_once = "run-once"  # the API's run_once, spelled as an option value


_CRON_HELP = (
    "5 fields (minute hour day month weekday), 6 with seconds first ('*/10 * * * * *'), or "
    "@hourly, @daily, @weekly, @monthly, @yearly. Quote it."
)
TimezoneOption = Annotated[
    str | None,
    typer.Option(
        "--timezone",
        "--tz",
        help="IANA time zone the expression is read in (default UTC), e.g. Europe/Berlin. "
        "A wall-clock time a DST gap skips runs at the gap's end; one an overlap repeats "
        "runs once.",
        show_default=False,
    ),
]
OverlapOption = Annotated[
    Overlap | None,
    typer.Option(help="allow: a run at each due time; skip: none while the last is unfinished."),
]
MissedOption = Annotated[
    Missed | None,
    typer.Option(help="Due times reached later than --grace (a downtime): skip, or run-once."),
]


def _fields(schedule: Schedule) -> list[tuple[str, object]]:
    return [
        ("name", schedule.name),
        ("cron", schedule.cron),
        ("timezone", schedule.timezone),
        ("queue", schedule.queue),
        ("priority", schedule.priority),
        ("max_retries", schedule.max_retries),
        ("overlap", schedule.overlap),
        ("missed", schedule.missed),
        ("grace_ms", schedule.grace_ms),
        ("paused", schedule.paused),
        ("next_fire_at", schedule.next_fire_at),
        ("last_due_at", schedule.last_due_at),
        ("last_job_id", schedule.last_job_id),
        ("runs", schedule.runs),
        ("skipped_runs", schedule.skipped_runs),
        ("missed_runs", schedule.missed_runs),
        ("payload", schedule.payload),
    ]


def _show(schedule: Schedule, as_json: bool, title: str) -> None:
    if as_json:
        print_json(schedule)
        return
    fields = _fields(schedule)
    if schedule.upcoming:
        fields.append(("upcoming", ", ".join(show_time(t) for t in schedule.upcoming)))
    print_record(title, fields)


def _changes(
    cron: str | None,
    timezone: str | None,
    payload: str | None,
    queue: str | None,
    priority: int | None,
    max_retries: int | None,
    overlap: Overlap | None,
    missed: Missed | None,
    grace: float | None,
    *,
    as_json: bool,
) -> dict[str, Any]:
    return {
        "cron": cron,
        "timezone": timezone,
        "payload": None if payload is None else payload_text(payload, as_json=as_json),
        "queue": queue,
        "priority": priority,
        "max_retries": max_retries,
        "overlap": None if overlap is None else overlap.value,
        "missed": None if missed is None else missed.value.replace("-", "_"),
        "grace": grace,
    }


@schedules_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The schedule's name: 1-128 of A-Z a-z 0-9 _ . : -")],
    cron: Annotated[str, typer.Argument(help=_CRON_HELP)],
    payload: Annotated[str, typer.Argument(help="Each run's payload; '-' reads stdin.")],
    timezone: TimezoneOption = None,
    queue: Annotated[str, typer.Option("--queue", "-q", help="Queue of the runs.")] = "default",
    priority: Annotated[int, typer.Option(help="Higher leases first.")] = 0,
    max_retries: Annotated[int, typer.Option(min=0, help="Retries after a run's first try.")] = 3,
    overlap: OverlapOption = None,
    missed: MissedOption = None,
    grace: Annotated[
        float | None,
        duration_option(
            "How late a run may be and still run (a restart); later is missed.", default="60s"
        ),
    ] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a schedule (the same definition again is not an error)."""
    fields = _changes(
        cron, timezone, payload, queue, priority, max_retries, overlap, missed, grace,
        as_json=as_json,
    )  # fmt: skip
    defined = {name: value for name, value in fields.items() if value is not None}
    with open_client(url, key, as_json) as client:
        schedule = client.create_schedule(name, paused=paused, **defined)
    _show(schedule, as_json, "schedule")


@schedules_app.command("list")
def list_schedules(
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every schedule, by name."""
    with open_client(url, key, as_json) as client:
        schedules = list(client.iter_schedules())
    if as_json:
        print_json(schedules)
        return
    print_rows(
        "schedules",
        ["name", "cron", "timezone", "queue", "paused", "next_fire_at", "runs", "missed"],
        [
            [s.name, s.cron, s.timezone, s.queue, s.paused, s.next_fire_at, s.runs, s.missed_runs]
            for s in schedules
        ],
        empty="no schedules",
    )


@schedules_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="The schedule's name.")],
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """One schedule, with its next due times."""
    with open_client(url, key, as_json) as client:
        schedule = client.get_schedule(name)
    _show(schedule, as_json, "schedule")


@schedules_app.command("edit")
def edit(
    name: Annotated[str, typer.Argument(help="The schedule's name.")],
    cron: Annotated[str | None, typer.Option(help=_CRON_HELP, show_default=False)] = None,
    timezone: TimezoneOption = None,
    payload: Annotated[
        str | None, typer.Option(help="Each run's payload; '-' reads stdin.", show_default=False)
    ] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-q", show_default=False)] = None,
    priority: Annotated[int | None, typer.Option(show_default=False)] = None,
    max_retries: Annotated[int | None, typer.Option(min=0, show_default=False)] = None,
    overlap: OverlapOption = None,
    missed: MissedOption = None,
    grace: Annotated[float | None, duration_option("How late a run may be.")] = None,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change a schedule's fields; a new cron or time zone starts from now."""
    changes = _changes(
        cron, timezone, payload, queue, priority, max_retries, overlap, missed, grace,
        as_json=as_json,
    )  # fmt: skip
    with open_client(url, key, as_json) as client:
        schedule = client.update_schedule(name, **changes)
    _show(schedule, as_json, "schedule changed")


@schedules_app.command("pause")
def pause(
    name: Annotated[str, typer.Argument(help="The schedule's name.")],
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Pause a schedule: no runs until it is resumed."""
    with open_client(url, key, as_json) as client:
        schedule = client.pause_schedule(name)
    _done(schedule, as_json, f"paused {schedule.name}")


@schedules_app.command("resume")
def resume(
    name: Annotated[str, typer.Argument(help="The schedule's name.")],
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Resume a schedule from its next due time after now (what passed is not run)."""
    with open_client(url, key, as_json) as client:
        schedule = client.resume_schedule(name)
    _done(
        schedule, as_json, f"resumed {schedule.name}, next run {show_time(schedule.next_fire_at)}"
    )


@schedules_app.command("rm")
def remove(
    name: Annotated[str, typer.Argument(help="The schedule's name.")],
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete a schedule; the jobs it made stay."""
    with open_client(url, key, as_json) as client:
        schedule = client.delete_schedule(name)
    _done(schedule, as_json, f"deleted {schedule.name} ({schedule.runs} runs made)")


def _done(schedule: Schedule, as_json: bool, sentence: str) -> None:
    if as_json:
        print_json(schedule)
    else:
        stdout().print(sentence, markup=False)


def register(app: typer.Typer) -> None:
    """Add `schedules` as a command group of the root `jq` app."""
    app.add_typer(schedules_app, name="schedules")
