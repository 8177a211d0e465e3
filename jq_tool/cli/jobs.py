"""The job commands of `jq`: submit, lease, ack, release, get, list, stats, cancel, requeue.

Thin on purpose: parse the options, make one SDK `Client` call, print the answer (a rich table,
or JSON with `--json`), and exit with the code output.py's table gives the error.
"""

from __future__ import annotations

import sys
from datetime import datetime
from enum import StrEnum
from typing import Annotated

import typer

from jq_tool.cli import console
from jq_tool.cli.options import (
    JsonOption,
    KeyOption,
    QueueOption,
    UrlOption,
    duration_option,
    open_client,
    payload_text,
    time_option,
)
from jq_tool.cli.output import (
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    exit_code_for,
    fail,
    print_json,
    print_record,
    print_rows,
    stdout,
)
from jq_tool.sdk import DEFAULT_URL, Job, LeasedJob, OutcomeUnknown, QueueLatency, Settled


def _job_fields(job: Job) -> list[tuple[str, object]]:
    return [
        ("job_id", job.job_id),
        ("state", job.state.value),
        ("queue", job.queue),
        ("priority", job.priority),
        ("attempts", job.attempts),
        ("max_retries", job.max_retries),
        ("created_at", job.created_at),
        ("run_at", job.run_at),
        ("lease_until", job.lease_until),
        ("updated_at", job.updated_at),
        ("payload", job.payload),
        ("result", job.result),
        ("result_error", job.result_error),
        *(
            [("progress", f"{job.progress.progress:.0%} {job.progress.note}".rstrip())]
            if job.progress is not None
            else []
        ),
        ("error", job.error_class),
        ("error_message", job.error_message),
        ("worker", job.worker),
    ]


def _leased_fields(job: LeasedJob) -> list[tuple[str, object]]:
    return [
        ("job_id", job.job_id),
        ("lease_id", job.lease_id),
        ("lease_until", job.lease_until),
        ("attempt", job.attempt),
        ("queue", job.queue),
        ("priority", job.priority),
        ("max_retries", job.max_retries),
        ("payload", job.payload),
    ]


def _print_settled(settled: Settled, as_json: bool) -> None:
    if as_json:
        print_json(settled)
    else:
        stdout().print(f"{settled.job_id} {settled.state.value}")


class UniqueScopeChoice(StrEnum):
    queued = "queued"
    active = "active"
    period = "period"


def submit(
    payload: Annotated[str, typer.Argument(help="The job's payload; '-' reads stdin.")],
    priority: Annotated[int, typer.Option(help="Higher leases first.")] = 0,
    delay: Annotated[float | None, duration_option("Run after this long: 500ms, 5s, 2m.")] = None,
    run_at: Annotated[
        datetime | None,
        time_option(
            "--run-at",
            help="Run at this time: RFC 3339 / ISO 8601, e.g. 2026-01-02T03:04:05Z; "
            "without a zone, UTC (as in the HTTP API).",
        ),
    ] = None,
    queue: QueueOption = "default",
    max_retries: Annotated[int, typer.Option(min=0, help="Retries after the first try.")] = 3,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            help="The same key returns the same job id (default: a new key, reused by this "
            "command's own retries).",
            show_default=False,
        ),
    ] = None,
    unique_key: Annotated[
        str | None,
        typer.Option(
            help="While the first job of this key is in --unique-scope, a submit answers its id "
            "instead of making a job.",
            show_default=False,
        ),
    ] = None,
    unique_scope: Annotated[
        UniqueScopeChoice | None,
        typer.Option(
            help="queued (default): WAITING/READY/RETRY; active: also RUNNING; period: for "
            "--unique-period after the submit.",
            show_default=False,
        ),
    ] = None,
    unique_period: Annotated[
        float | None, duration_option("How long a 'period' unique key holds, e.g. 10m.")
    ] = None,
    depends_on: Annotated[
        list[str] | None,
        typer.Option(
            help="A parent job id (repeat for several): the job waits (WAITING) until every "
            "parent is acked.",
            show_default=False,
        ),
    ] = None,
    run_on_parent_failure: Annotated[
        bool,
        typer.Option(
            "--run-on-parent-failure",
            help="Run once every parent finished, even DEAD or CANCELLED ones (default: a "
            "failed parent cancels the job).",
        ),
    ] = False,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Submit a job; prints its id. Retried through a restarting or unreachable server with
    one idempotency key, so a retry never makes a second job."""
    if delay is not None and run_at is not None:
        fail("give --delay or --run-at, not both", EXIT_USAGE, as_json=as_json)
    text = payload_text(payload, as_json=as_json)
    with open_client(url, key, as_json) as client:
        try:
            job_id = client.submit(
                text,
                priority=priority,
                delay=delay,
                run_at=run_at,
                queue=queue,
                max_retries=max_retries,
                idempotency_key=idempotency_key,
                unique_key=unique_key,
                unique_scope=None if unique_scope is None else unique_scope.value,
                unique_period=unique_period,
                depends_on=depends_on or None,
                on_parent_failure="run" if run_on_parent_failure else None,
            )
        except OutcomeUnknown as error:
            fail(
                f"{error}. The job may or may not exist: run the same command with "
                f"--idempotency-key {error.idempotency_key} to get it (or make it, once)",
                exit_code_for(error),
                as_json=as_json,
                error_code=error.code or "outcome_unknown",
            )
    if as_json:
        print_json({"job_id": job_id})
    else:
        sys.stdout.write(job_id + "\n")


def lease(
    queue: QueueOption = "default",
    wait: Annotated[
        float, duration_option("Long-poll up to this long (≤ 30s).", default="0s")
    ] = 0.0,
    lease_ms: Annotated[
        int | None, typer.Option(min=1000, help="Lease length in ms.", show_default=False)
    ] = None,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Lease one job (exit 1 when none is available)."""
    with open_client(url, key, as_json) as client:
        jobs = client.lease(queue=queue, wait=wait, max_jobs=1, lease_ms=lease_ms)
    if not jobs:
        fail("no jobs available", EXIT_NOT_FOUND, as_json=as_json, error_code="not_found")
    if as_json:
        print_json(jobs[0])
    else:
        print_record("leased", _leased_fields(jobs[0]))


def ack(
    job_id: Annotated[str, typer.Argument(help="The leased job.")],
    lease_id: Annotated[
        str | None, typer.Option(help="The lease being settled.", show_default=False)
    ] = None,
    result: Annotated[
        str | None, typer.Option(help="Success, with this result.", show_default=False)
    ] = None,
    error: Annotated[
        str | None,
        typer.Option(
            help="A failed attempt, with this error (retries or DEAD).", show_default=False
        ),
    ] = None,
    retry: Annotated[
        bool,
        typer.Option(
            "--retry/--no-retry",
            help="With --error: --no-retry makes the failure final (DEAD at once).",
        ),
    ] = True,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Settle a leased job: success (--result) or a failed attempt (--error)."""
    if result is not None and error is not None:
        fail("give --result or --error, not both", EXIT_USAGE, as_json=as_json)
    if not retry and error is None:
        fail("--no-retry needs --error", EXIT_USAGE, as_json=as_json)
    with open_client(url, key, as_json) as client:
        if error is not None:
            settled = client.fail(job_id, error, lease_id=lease_id, retry=retry)
        else:
            settled = client.ack(job_id, result, lease_id=lease_id)
    _print_settled(settled, as_json)


def release(
    job_id: Annotated[str, typer.Argument(help="The leased job.")],
    lease_id: Annotated[
        str | None, typer.Option(help="The lease being given back.", show_default=False)
    ] = None,
    delay: Annotated[
        float, duration_option("Runnable again after this long: 500ms, 30s, 5m.", default="0s")
    ] = 0.0,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Give a leased job back unfinished: READY again after --delay; the attempt is not
    counted."""
    with open_client(url, key, as_json) as client:
        settled = client.release(job_id, lease_id=lease_id, delay=delay)
    _print_settled(settled, as_json)


def get(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one job."""
    with open_client(url, key, as_json) as client:
        job = client.get(job_id)
    if as_json:
        print_json(job)
    else:
        print_record(f"job {job.job_id}", _job_fields(job))
        if job.attempt_history:
            console.print_attempts(job)


def list_jobs(
    state: Annotated[
        str | None,
        typer.Option(
            help="READY, SCHEDULED, RUNNING, ACKED, RETRY, DEAD, CANCELLED or WAITING.",
            show_default=False,
        ),
    ] = None,
    queue: Annotated[str | None, typer.Option(help="Only this queue.", show_default=False)] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Jobs per page.")] = 50,
    cursor: Annotated[
        str | None, typer.Option(help="next_cursor of the previous page.", show_default=False)
    ] = None,
    id_prefix: Annotated[
        str | None, typer.Option(help="Ids starting with this.", show_default=False)
    ] = None,
    error: Annotated[
        str | None, typer.Option(help="Current error containing this text.", show_default=False)
    ] = None,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """List jobs, newest first (--id-prefix and --error search: a bounded scan, so a page
    may be short; follow next page)."""
    with open_client(url, key, as_json) as client:
        page = client.list(
            state=state, queue=queue, limit=limit, cursor=cursor, id_prefix=id_prefix, error=error
        )
    if as_json:
        print_json(page)
        return
    filters = [f"{name} {value}" for name, value in (("state", state), ("queue", queue)) if value]
    print_rows(
        "jobs (times in UTC)",
        ["job_id", "state", "queue", "attempts", "run_at", "updated_at", "error"],
        [
            [
                j.job_id,
                j.state.value,
                j.queue,
                j.attempts,
                j.run_at,
                j.updated_at,
                ": ".join(p for p in (j.error_class, j.error_message) if p) or None,
            ]
            for j in page.jobs
        ],  # fmt: skip
        empty=f"no jobs{' with ' + ' and '.join(filters) if filters else ''}"
        + (" on this page" if cursor else ""),
    )
    if page.next_cursor:
        stdout().print(f"next page: --cursor {page.next_cursor}", markup=False)


def stats(
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Queue totals, per queue."""
    with open_client(url, key, as_json) as client:
        answer = client.stats()
    if as_json:
        print_json(answer)
        return
    columns = ["queue", "runnable", "running", "scheduled", "retry", "dead", "acked", "total",
               "oldest", "wait p95"]  # fmt: skip
    rows: list[list[object]] = [
        [name, q.runnable, q.running, q.scheduled, q.retry, q.dead, q.acked, q.total,
         *_latency_cells(answer.latency.get(name))]
        for name, q in sorted(answer.queues.items())
    ]  # fmt: skip
    a = answer
    rows.append(["(all)", a.runnable, a.running, a.scheduled, a.retry, a.dead, a.acked, a.total,
                 "", ""])  # fmt: skip
    print_rows("stats", columns, rows)
    stdout().print(
        f"submits/s {a.submits_per_sec:.1f}  acks/s {a.acks_per_sec:.1f}  "
        f"role {a.role}  uptime {a.uptime_s:.0f}s",
        markup=False,
    )


def _latency_cells(latency: QueueLatency | None) -> list[object]:
    """The oldest runnable job's age (with a ! past the queue's max latency) and the time in
    queue at the 95th percentile over the last 5 minutes (issue 19)."""
    if latency is None:
        return ["", ""]
    age = latency.oldest_runnable_age_s
    oldest = "-" if age is None else f"{age:.1f}s"
    if age is not None and latency.max_latency_s is not None and age > latency.max_latency_s:
        oldest += " !"
    p95 = latency.wait_p95_s
    return [oldest, "-" if p95 is None else f"≤{p95:g}s"]


def cancel(
    job_id: Annotated[
        str | None, typer.Argument(help="A READY or RETRY job.", show_default=False)
    ] = None,
    all_waiting: Annotated[
        bool, typer.Option("--all", help="Every waiting job matching the filters.")
    ] = False,
    queue: Annotated[str | None, typer.Option(help="With --all: this queue.")] = None,
    state: Annotated[
        list[str] | None, typer.Option(help="With --all: READY, RETRY or SCHEDULED (repeat).")
    ] = None,
    error: Annotated[str | None, typer.Option(help="With --all: error containing this.")] = None,
    yes: console.YesOption = False,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a job that has not started, or with --all every waiting job matching."""
    if all_waiting or job_id is None:
        if job_id is not None or not all_waiting:
            fail("give a job id, or --all (not both)", EXIT_USAGE, as_json=as_json)
        console.bulk_cancel(url, key, as_json, queue, state, error, yes)
        return
    with open_client(url, key, as_json) as client:
        settled = client.cancel(job_id)
    _print_settled(settled, as_json)


def requeue(
    job_id: Annotated[str | None, typer.Argument(help="A DEAD job.", show_default=False)] = None,
    all_dead: Annotated[
        bool, typer.Option("--all-dead", help="Every DEAD job matching the filters.")
    ] = False,
    queue: Annotated[str | None, typer.Option(help="With --all-dead: this queue.")] = None,
    error: Annotated[
        str | None, typer.Option(help="With --all-dead: error containing this.")
    ] = None,
    yes: console.YesOption = False,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Give a DEAD job a fresh attempt budget, or with --all-dead every DEAD job matching."""
    if all_dead or job_id is None:
        if job_id is not None or not all_dead:
            fail("give a job id, or --all-dead (not both)", EXIT_USAGE, as_json=as_json)
        console.bulk_requeue(url, key, as_json, queue, error, yes)
        return
    with open_client(url, key, as_json) as client:
        settled = client.requeue(job_id)
    _print_settled(settled, as_json)


def register(app: typer.Typer) -> None:
    """Add the job commands to the root `jq` app."""
    app.command("submit")(submit)
    app.command("lease")(lease)
    app.command("ack")(ack)
    app.command("release")(release)
    app.command("get")(get)
    app.command("list")(list_jobs)
    app.command("stats")(stats)
    app.command("cancel")(cancel)
    app.command("requeue")(requeue)
