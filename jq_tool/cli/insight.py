"""`jq why ID` and `jq dead groups|requeue|cancel`: why a job is where it is, and dead letters
grouped by cause (issue 19).

Thin like the other command groups: parse, one SDK call, print (a rich table, or JSON with
`--json`). `jq why` prints the server's one-sentence answer first, then the fields it was made
of; `jq dead groups` lists the groups biggest first with the fingerprint to requeue or cancel.
"""

from __future__ import annotations

from typing import Annotated

import typer

from jq_tool.cli.options import JsonOption, KeyOption, UrlOption, open_client
from jq_tool.cli.output import print_json, print_record, print_rows, stdout
from jq_tool.sdk import DEFAULT_URL, DeadGroupSettled, Explanation

dead_app = typer.Typer(
    help="Dead letters grouped by cause: list the groups, requeue or cancel a whole group.",
    no_args_is_help=True,
)

ChunkOption = Annotated[
    int | None,
    typer.Option(
        min=1, max=1000, show_default=False,
        help="Jobs per logged command on the server (default 500); each is one durable write.",
    ),
]  # fmt: skip


# The fields `jq why` lists after the reason, state and queue, when the answer has them.
_FIELDS = (
    "worker", "run_at", "ahead", "drain_per_s", "expected_at", "last_asked_at", "lease_id",
    "leased_at", "lease_until", "attempt", "max_attempts", "error", "fingerprint", "finished_at",
    "running", "concurrency", "rate_limit", "rate_period_ms", "blocked_until",
)  # fmt: skip


def _explanation_fields(why: Explanation) -> list[tuple[str, object]]:
    fields: list[tuple[str, object]] = [
        ("reason", why.reason),
        ("state", why.state.value),
        ("queue", why.queue),
    ]
    progress = why.progress
    for name in _FIELDS:
        value = getattr(why, name)
        if value is not None:
            fields.append((name, value))
    if why.parent_states:
        fields.append(("parents", ", ".join(f"{p} ({s})" for p, s in why.parent_states.items())))
    if why.asked_queues:
        fields.append(("asked_queues", ", ".join(why.asked_queues)))
    if progress is not None:
        fields.append(("progress", f"{progress.progress:.0%} {progress.note}".rstrip()))
    return fields


def why(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Why a job is where it is: not due, no worker, N jobs ahead, leased, retrying, DEAD..."""
    with open_client(url, key, as_json) as client:
        explanation = client.explain(job_id)
    if as_json:
        print_json(explanation)
        return
    stdout().print(explanation.summary, markup=False)
    print_record(f"job {explanation.job_id}", _explanation_fields(explanation))


@dead_app.command("groups")
def groups(
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """DEAD jobs grouped by their last error's fingerprint, biggest group first."""
    with open_client(url, key, as_json) as client:
        listed = client.dead_groups()
    if as_json:
        print_json(listed)
        return
    rows = [
        (g.fingerprint, g.count, f"{g.error_type}: {g.pattern}" if g.error_type else g.pattern,
         ", ".join(f"{q} ({n})" for q, n in g.queues.items()), g.first_seen, g.last_seen,
         g.sample_job_id)
        for g in listed.groups
    ]  # fmt: skip
    columns = ("fingerprint", "count", "error", "queues", "first seen", "last seen", "sample")
    print_rows(f"dead letters: {listed.dead} jobs in {listed.group_count} groups", columns, rows,
               empty="No dead jobs.")  # fmt: skip


def _print_settled(settled: DeadGroupSettled, as_json: bool) -> None:
    if as_json:
        print_json(settled)
        return
    done = "requeued" if settled.action == "requeue" else "cancelled"
    stdout().print(
        f"{settled.settled} jobs {done} in {settled.commands} logged commands; "
        f"{settled.remaining} left in the group",
        markup=False,
    )


@dead_app.command("requeue")
def requeue_group(
    fingerprint: Annotated[str, typer.Argument(help="The group's fingerprint (jq dead groups).")],
    chunk: ChunkOption = None,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Requeue every job of a group that died before now (fresh attempt budget)."""
    with open_client(url, key, as_json) as client:
        settled = client.requeue_dead_group(fingerprint, chunk=chunk)
    _print_settled(settled, as_json)


@dead_app.command("cancel")
def cancel_group(
    fingerprint: Annotated[str, typer.Argument(help="The group's fingerprint (jq dead groups).")],
    chunk: ChunkOption = None,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel every job of a group that died before now: CANCELLED, out of the dead letters."""
    with open_client(url, key, as_json) as client:
        settled = client.cancel_dead_group(fingerprint, chunk=chunk)
    _print_settled(settled, as_json)


def register(app: typer.Typer) -> None:
    """Add `jq why` and `jq dead ...` to the root `jq` app."""
    app.command("why")(why)
    app.add_typer(dead_app, name="dead")
