"""`jq queues show|pause|resume|limit`: a queue's flow settings over the HTTP API (issue 18).

Thin like the other command groups: parse the options, one SDK call, print the queue's
settings (a rich table, or JSON with `--json`). Changing a queue needs a key that may submit
and lease (an admin key); `show` any key that reads jobs.
"""

from __future__ import annotations

from typing import Annotated

import typer

from jq_tool.cli.options import JsonOption, KeyOption, UrlOption, duration_option, open_client
from jq_tool.cli.output import print_json, print_record
from jq_tool.cli.shards import move
from jq_tool.sdk import DEFAULT_URL, QueueSettings

queues_app = typer.Typer(
    help="Queue flow control: pause and resume a queue, limit its concurrency and lease rate.",
    no_args_is_help=True,
)

QueueArgument = Annotated[str, typer.Argument(help="The queue's name.")]


def _show(settings: QueueSettings, as_json: bool) -> None:
    if as_json:
        print_json(settings)
        return
    fields: list[tuple[str, object]] = [
        ("name", settings.name),
        ("paused", settings.paused),
        ("concurrency", settings.concurrency or "no limit"),
        (
            "rate_limit",
            f"{settings.rate_limit} per {settings.rate_period_ms} ms"
            if settings.rate_limit
            else "no limit",
        ),
        ("rate_window_leases", settings.rate_window_leases),
    ]
    counts = settings.counts
    if counts is not None:
        fields += [
            ("runnable", counts.runnable),
            ("running", counts.running),
            ("scheduled", counts.scheduled),
            ("waiting", counts.waiting),
            ("retry", counts.retry),
            ("total", counts.total),
        ]
    print_record("queue", fields)


@queues_app.command("show")
def show(
    name: QueueArgument,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """A queue's flow settings and counts."""
    with open_client(url, key, as_json) as client:
        settings = client.get_queue(name)
    _show(settings, as_json)


@queues_app.command("pause")
def pause(
    name: QueueArgument,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Pause a queue: leases skip it (running jobs finish), submits still land."""
    with open_client(url, key, as_json) as client:
        settings = client.pause_queue(name)
    _show(settings, as_json)


@queues_app.command("resume")
def resume(
    name: QueueArgument,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Resume a paused queue."""
    with open_client(url, key, as_json) as client:
        settings = client.resume_queue(name)
    _show(settings, as_json)


@queues_app.command("limit")
def limit(
    name: QueueArgument,
    concurrency: Annotated[
        int | None,
        typer.Option(min=0, help="At most this many jobs RUNNING at once; 0: no limit."),
    ] = None,
    rate: Annotated[
        int | None,
        typer.Option(min=0, help="At most this many leases per --per; 0: no limit."),
    ] = None,
    per: Annotated[
        float | None, duration_option("The rate limit's window (sliding), e.g. 1s, 1m.")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Set a queue's concurrency and rate limits (an option left out stays as it is)."""
    with open_client(url, key, as_json) as client:
        settings = client.set_queue(name, concurrency=concurrency, rate_limit=rate, rate_period=per)
    _show(settings, as_json)


queues_app.command("move")(move)


def register(app: typer.Typer) -> None:
    app.add_typer(queues_app, name="queues")
