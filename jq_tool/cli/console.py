"""The console's commands of `jq` (issue 17): `jq workers`, `jq queues overview NAME` (added to
cli/queues.py's group, beside the flow settings' `show`), `jq history`,
and the bulk forms of `jq requeue --all-dead` and `jq cancel --all` (asked from cli/jobs.py),
which ask for confirmation (or `--yes`) before changing every matching job.

Thin like the others: one SDK call each, a rich table or `--json`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer

from jq_tool.cli.options import JsonOption, KeyOption, UrlOption, open_client
from jq_tool.cli.output import EXIT_USAGE, fail, print_json, print_record, print_rows, stdout
from jq_tool.sdk import DEFAULT_URL, BulkResult, Job

YesOption = Annotated[
    bool, typer.Option("--yes", "-y", help="Do it without asking for confirmation.")
]
_SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[int]) -> str:
    """Bars scaled from zero to the largest value (never min to max: 161 vs 196 stays close)."""
    top = max(values, default=0)
    if top <= 0:
        return _SPARK[0] * len(values)
    return "".join(_SPARK[min(7, v * 8 // (top + 1))] if v else " " for v in values)


def attempt_rows(job: Job) -> list[list[object]]:
    return [
        [a.attempt, a.outcome, a.worker, a.started_at, a.ended_at, a.error_class, a.error_message]
        for a in job.attempt_history or []
    ]


def print_attempts(job: Job) -> None:
    print_rows(
        "attempts (the last 10; times in UTC)",
        ["#", "outcome", "worker", "started", "ended", "error", "message"],
        attempt_rows(job),
    )


def workers(
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Live workers: leases held, when this server last saw them, their queues."""
    with open_client(url, key, as_json) as client:
        page = client.workers(limit=1000)
    if as_json:
        print_json(page)
        return
    print_rows(
        "workers (times in UTC)",
        ["worker", "leases", "last_seen", "queues"],
        [[w.worker_id, w.leases, w.last_seen, ", ".join(w.queues)] for w in page.workers],
        empty="no live workers",
    )


def overview(
    name: Annotated[str, typer.Argument(help="The queue.")],
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """One queue: counts by state, latency, throughput of the last hour, leases held."""
    with open_client(url, key, as_json) as client:
        detail = client.queue(name, limit=1000)
    if as_json:
        print_json(detail)
        return
    t = detail.throughput
    print_record(
        f"queue {detail.name}",
        [
            ("runnable", detail.runnable),
            ("running", detail.running),
            ("scheduled", detail.scheduled),
            ("retry", detail.retry),
            ("dead", detail.dead),
            ("acked", detail.acked),
            ("cancelled", detail.cancelled),
            ("latency", "-" if detail.latency_ms is None else f"{detail.latency_ms / 1000:.1f}s"),
            ("oldest runnable", detail.oldest_runnable_at),
            ("submitted/min (1h)", sparkline(t.submitted) + f" {sum(t.submitted)}"),
            ("acked/min (1h)", sparkline(t.acked) + f" {sum(t.acked)}"),
            ("failed/min (1h)", sparkline(t.failed) + f" {sum(t.failed)}"),
        ],
    )
    print_rows(
        "leases held",
        ["job_id", "worker", "attempt", "since", "until"],
        [[h.job_id, h.worker, h.attempt, h.since, h.until] for h in detail.leases],
        empty="no leases held",
    )


def history(
    window: Annotated[str, typer.Option(help="1h or 24h.")] = "1h",
    queue: Annotated[str | None, typer.Option(help="One queue.", show_default=False)] = None,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Per-minute submitted, acked and failed counts (kept 24 h, through restarts)."""
    with open_client(url, key, as_json) as client:
        answer = client.history(window=window, queue=queue)
    if as_json:
        print_json(answer)
        return
    print_record(
        f"history {window}{' of ' + queue if queue else ''} (from {answer.start:%H:%M}Z)",
        [
            (name, sparkline(values) + f" {sum(values)}")
            for name, values in (
                ("submitted", answer.submitted),
                ("acked", answer.acked),
                ("failed", answer.failed),
            )
        ],
    )


def _confirm(what: str, yes: bool, as_json: bool) -> None:
    if yes:
        return
    if as_json:
        fail(f"{what}: pass --yes to confirm", EXIT_USAGE, as_json=True)
    if not typer.confirm(f"{what}?"):
        fail("nothing changed", EXIT_USAGE, as_json=False)


def _print_bulk(result: BulkResult, as_json: bool) -> None:
    if as_json:
        print_json(result)
    else:
        stdout().print(
            f"{result.action}: {result.changed} of {result.matched} matching jobs changed "
            f"({result.chunks} chunks)",
            markup=False,
        )


def bulk_requeue(
    url: str, key: str | None, as_json: bool, queue: str | None, error: str | None, yes: bool
) -> None:
    scope = " ".join(f"{k} {v!r}" for k, v in (("in queue", queue), ("with error", error)) if v)
    _confirm(f"requeue every DEAD job{' ' + scope if scope else ''}", yes, as_json)
    with open_client(url, key, as_json) as client:
        _print_bulk(client.bulk_requeue(queue=queue, error=error), as_json)


def bulk_cancel(
    url: str,
    key: str | None,
    as_json: bool,
    queue: str | None,
    states: list[str] | None,
    error: str | None,
    yes: bool,
) -> None:
    which = "/".join(s.upper() for s in states) if states else "READY/RETRY/SCHEDULED"
    scope = " ".join(f"{k} {v!r}" for k, v in (("in queue", queue), ("with error", error)) if v)
    _confirm(f"cancel every {which} job{' ' + scope if scope else ''}", yes, as_json)
    with open_client(url, key, as_json) as client:
        _print_bulk(client.bulk_cancel(queue=queue, states=states, error=error), as_json)


def register(app: typer.Typer) -> None:
    """Add the console's commands to the root `jq` app."""
    from jq_tool.cli.queues import queues_app

    app.command("workers")(workers)
    queues_app.command("overview")(overview)
    app.command("history")(history)
