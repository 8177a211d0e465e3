"""The root `jq` command (also installed as `jobq`): one Typer app that every command group
registers itself into. Each module under jq_tool/cli owns its commands; this one only joins them.
"""

from __future__ import annotations

import multiprocessing

import typer

from jq_tool.cli import chaos, jobs, keys, serve, tui, wal_inspect, worker

app = typer.Typer(
    name="jq",
    help="jq: a durable, crash-proof job queue. (Also installed as `jobq`.)",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (serve, jobs, keys, worker, chaos, tui, wal_inspect):
    module.register(app)


def main() -> None:
    # First thing: a frozen (PyInstaller) binary re-executes itself for child processes.
    multiprocessing.freeze_support()
    app()


if __name__ == "__main__":
    main()
