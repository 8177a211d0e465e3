"""The root `jq` command (also installed as `jobq`): one Typer app that every command group
registers itself into. Each module under jq_tool/cli owns its commands; this one only joins them,
after jq_tool/cli/json_tool.py has had its say: run as `jq` with arguments that are not ours, the
call goes to jq the JSON tool, before any of the CLI is imported.

`jq serve` does not load them at all: the client commands' modules bring the SDK, rich and
httpx, and Typer itself is not needed for well-formed flags (jq_tool/cli/serve.py), none of
which a server uses or a restart should wait for.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from jq_tool.cli.json_tool import hand_over_if_not_ours

if TYPE_CHECKING:
    import typer

HELP = (
    "jq: a durable, crash-proof job queue. Also installed as `jobq`; run as `jq` with "
    "arguments that are not these commands (`jq .a`, `jq -r …`), it hands the call to "
    "jq the JSON tool. Times without a zone are UTC, as in the HTTP API."
)


def build_app(*, serve_only: bool = False) -> typer.Typer:
    """The `jq` app with every command, or with `serve_only` just `jq serve` (its options and
    help are the same either way)."""
    import typer

    app = typer.Typer(
        name="jq",
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    if serve_only:
        from jq_tool.cli import serve

        serve.register(app)

        @app.callback()
        def root() -> None:
            """A callback keeps `serve` a named subcommand of a one-command app."""

        return app
    from jq_tool.cli import (
        chaos,
        console,
        insight,
        jobs,
        keys,
        queues,
        schedules,
        serve,
        shards,
        tui,
        wal_inspect,
        worker,
    )

    for module in (
        serve,
        jobs,
        keys,
        schedules,
        queues,
        worker,
        chaos,
        tui,
        wal_inspect,
        insight,
        console,
        shards,
    ):
        module.register(app)
    _one_line_summaries(app)
    return app


def _one_line_summaries(app: typer.Typer) -> None:
    """Give every command a summary for the lists of commands: its docstring's first paragraph
    on one line. Typer's rich mode keeps a docstring's line breaks there (not in a command's
    own help), so a summary wrapped in the source showed a stray break on any terminal."""
    import inspect

    for info in app.registered_commands:
        doc = info.help or (info.callback.__doc__ if info.callback else None)
        if info.short_help is None and doc:
            info.short_help = " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())
    for group in app.registered_groups:
        if group.typer_instance is not None:
            _one_line_summaries(group.typer_instance)


def __getattr__(name: str) -> Any:
    if name == "app":  # the whole app, for whoever imports it by name
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    # First thing: a frozen (PyInstaller) binary re-executes itself for child processes. Only
    # there: multiprocessing is ~9 ms of imports that nothing else in `jq serve` needs.
    if getattr(sys, "frozen", False):
        import multiprocessing

        multiprocessing.freeze_support()
    hand_over_if_not_ours(sys.argv)
    if sys.argv[1:2] == ["serve"]:
        # The server's collector thresholds before the server's imports, not after: at
        # CPython's defaults the ~400 modules of a start set off ~60 collections, the later
        # ones walking every class and function loaded so far (~15-25 ms of a restart).
        from jq_tool.deferred_imports import defer_unused_imports
        from jq_tool.runtime import tune_gc

        tune_gc()
        # Before the server's imports too: the standard-library modules they import but a
        # server does not use (~15 ms of a restart) run only if something uses them.
        defer_unused_imports()
        from jq_tool.cli import serve

        raw = serve.read_flags(sys.argv[2:])
        if raw is not None:
            raise SystemExit(serve.serve(raw))
        build_app(serve_only=True)()  # --help, or flags Typer must report
        return
    app = build_app()
    if "--json" not in sys.argv[1:]:
        app()
        return
    # Under --json even a bad option value, which Click refuses before the command runs, is
    # reported in the one JSON shape of an error.
    import typer

    from jq_tool.cli.output import print_json_error

    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        sys.exit(1)
    except typer.TyperException as exc:  # Click's usage errors (typer vendors Click)
        print_json_error(exc.format_message(), "invalid_input", None)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
