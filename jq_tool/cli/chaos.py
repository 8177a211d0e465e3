"""The `jq chaos` command: parse its flags (the seed's single-dash spellings included), run the
chaos harness with a live progress display, print the report and exit non-zero unless the run
proved zero loss.

Exit codes: 0 zero loss; 1 lost jobs, duplicates, unacknowledged submits or a run that broke
off; 2 bad flags; 3 the server could not be started or reached.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from jq_tool.chaos.options import ChaosOptions, normalise_argv, parse_duration
from jq_tool.chaos.report import Report
from jq_tool.chaos.target import TargetError

if TYPE_CHECKING:
    from jq_tool.chaos.harness import ChaosRun

EXIT_LOSS = 1
EXIT_BAD_INPUT = 2
EXIT_NO_SERVER = 3

HELP = (
    "Load the queue while SIGKILLing and restarting the server; verify that no acknowledged job "
    "was lost or duplicated. Without --target it runs its own `jq serve` on a temporary data dir; "
    "with --cluster 3 it runs a private three-node cluster (needs etcd on PATH), spreads requests "
    "over all nodes with failover, and SIGKILLs one random node at a time."
)

_chaos_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def _duration(flag: str, text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=flag) from None


@_chaos_app.command(help=HELP)
def chaos(
    target: Annotated[
        str | None, typer.Option(help="URL of a running server; default: spawn a private one")
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(help="API key with submit, lease, ack and read scopes (an admin key)"),
    ] = None,
    jobs: Annotated[int, typer.Option(help="jobs to submit")] = 1000,
    workers: Annotated[int, typer.Option(help="concurrent workers (lease, execute, ack)")] = 8,
    kills: Annotated[
        int, typer.Option(help="how many times to SIGKILL and restart the server")
    ] = 0,
    kill_interval: Annotated[
        str, typer.Option(help="mean time between kills, e.g. 2s or 500ms (each one is random)")
    ] = "2s",
    kill_cmd: Annotated[
        str | None, typer.Option(help="shell command that kills the --target server")
    ] = None,
    restart_cmd: Annotated[
        str | None, typer.Option(help="shell command that starts the --target server again")
    ] = None,
    submit_rate: Annotated[float, typer.Option(help="submits per second; 0 = unlimited")] = 0.0,
    wait: Annotated[
        str, typer.Option(help="after the load, how long to wait for every job to be ACKED")
    ] = "60s",
    json_output: Annotated[
        bool, typer.Option("--json", help="print one JSON object, no progress display")
    ] = False,
    seed: Annotated[
        int | None, typer.Option(help="random seed for kill moments and work times")
    ] = None,
    submitters: Annotated[int, typer.Option(help="concurrent submit requests")] = 16,
    queue: Annotated[
        str | None, typer.Option(help="queue to use; default: a fresh chaos-<run id> queue")
    ] = None,
    data_dir: Annotated[
        str | None,
        typer.Option(
            help="data dir of the spawned server (with --cluster: the parent of the nodes' data "
            "dirs); default: a temporary one"
        ),
    ] = None,
    cluster: Annotated[
        int,
        typer.Option(
            help="spawn a cluster of this many nodes (3 to 7; needs etcd on PATH) and kill "
            "one random node at a time; 0 = one single-node server"
        ),
    ] = 0,
    shards: Annotated[
        int,
        typer.Option(
            help="spawn a sharded cluster (issue 23 prototype: this many shards of 3 etcd "
            "members, 3 nodes; needs etcd on PATH), one queue per shard, and kill shard "
            "leaders and nodes in turn; 0 = not sharded"
        ),
    ] = 0,
    without_key: Annotated[
        float,
        typer.Option(
            help="share of submits (0 to 1) sent without an idempotency key and retried all "
            "the same, as a bare HTTP client might; the duplicates they make are counted "
            "apart from those of keyed retries, which must be 0"
        ),
    ] = 0.0,
    release_share: Annotated[
        float,
        typer.Option(
            help="share of leased jobs (0 to 1) a worker gives back unfinished (POST "
            "/jobs/{id}/release) instead of acking, once per job: each must still end ACKED"
        ),
    ] = 0.0,
) -> None:
    options = ChaosOptions(
        target=target,
        key=key,
        jobs=jobs,
        workers=workers,
        kills=kills,
        kill_interval=_duration("--kill-interval", kill_interval),
        kill_cmd=kill_cmd,
        restart_cmd=restart_cmd,
        submit_rate=submit_rate,
        wait=_duration("--wait", wait),
        seed=seed,
        submitters=submitters,
        queue=queue,
        data_dir=data_dir,
        cluster=cluster,
        shards=shards,
        without_key=without_key,
        release_share=release_share,
    )
    problems = options.problems()
    if problems:
        for problem in problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT)

    show_progress = not json_output and sys.stdout.isatty()
    try:
        report = asyncio.run(_run(options, show_progress))
    except KeyboardInterrupt:
        # run_chaos's cleanup has stopped a spawned server by now.
        typer.echo("interrupted: no verdict", err=True)
        raise typer.Exit(130) from None
    except TargetError as exc:
        if json_output:
            typer.echo(json.dumps({"result": "ERROR", "zero_loss": False, "error": str(exc)}))
        else:
            typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_NO_SERVER) from None
    typer.echo(report.to_json() if json_output else report.to_text())
    raise typer.Exit(0 if report.zero_loss else EXIT_LOSS)


async def _run(options: ChaosOptions, show_progress: bool) -> Report:
    # Imported here: the harness loads only for `jq chaos`, not for every jq command.
    from jq_tool.chaos.harness import run_chaos

    if not show_progress:
        return await run_chaos(options)
    runs: list[ChaosRun] = []
    starting = Text(
        "starting the cluster…" if options.cluster or options.shards else "starting the server…"
    )
    with Live(starting, console=Console(), refresh_per_second=4) as live:
        task = asyncio.create_task(run_chaos(options, run=runs))
        while not task.done():
            if runs:
                live.update(_progress_view(runs[0]))
            await asyncio.wait({task}, timeout=0.25)
        if runs:
            live.update(_progress_view(runs[0]))
        return task.result()


def _progress_view(run: ChaosRun) -> Group:
    progress = run.progress()
    table = Table.grid(padding=(0, 2))
    table.add_column(justify="right", style="bold")
    table.add_column(width=32)
    table.add_column()
    table.add_row(
        "submitted",
        ProgressBar(total=progress.jobs, completed=progress.submitted, width=30),
        f"{progress.submitted}/{progress.jobs}",
    )
    table.add_row(
        "acked",
        ProgressBar(total=progress.jobs, completed=progress.acked, width=30),
        f"{progress.acked}/{progress.jobs}  ({progress.executions} executions)",
    )
    table.add_row(
        "kills",
        ProgressBar(total=max(progress.kills_planned, 1), completed=progress.kills, width=30),
        f"{progress.kills}/{progress.kills_planned}  (restarts: {progress.restarts})"
        + (f"  node {progress.down} down" if progress.down else ""),
    )
    return Group(Text(f"jq chaos: {progress.phase}", style="bold cyan"), table)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: normalise the seed's single-dash flags, then let Typer parse."""
    args = list(sys.argv[1:] if argv is None else argv)
    _chaos_app(args=normalise_argv(args), prog_name="jq chaos")


def register(app: typer.Typer) -> None:
    """Add `chaos` to the root CLI. The command takes its arguments raw and hands them to
    `main`, because the seed's `-target` spellings must be rewritten before anything parses."""

    @app.command(
        "chaos",
        help=HELP,
        add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def chaos_command(ctx: typer.Context) -> None:
        main(ctx.args)


if __name__ == "__main__":
    main()
