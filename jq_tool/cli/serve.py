"""`jq serve`: run the queue server (jq_tool/server/runner.py does the running).

Its options are not written here: each comes from a setting's declaration in jq_tool.settings
(flag, help, environment variable, default), so a new setting appears in `jq serve --help`
without touching this module. Flags and their environment variables become one `Settings`; a
bad value is a usage error (exit code 2) with a message, never a traceback.

Well-formed flags are read without Typer (`read_flags`): Typer 0.29 builds a pydantic adapter
for every option of a command it runs, and importing pydantic and Typer was the largest part of
a server's start (restart time is a measured target). Anything else (`--help`, an unknown flag,
a missing value) goes to the Typer command, which answers it as it always did.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from jq_tool.settings import OPTIONS, Option, SettingsError, build_settings

if TYPE_CHECKING:
    import inspect

    import typer

RawFlags = dict[str, str | bool | None]


def read_flags(argv: list[str]) -> RawFlags | None:
    """`jq serve`'s arguments as build_settings takes them (setting name -> text, True/False for
    a switch, None when not given), read as Click would read them (`--flag value`,
    `--flag=value`, `--switch`/`--no-switch`, the last one given wins); None for anything
    else, which the Typer command then reports."""
    flags: dict[str, tuple[str, bool | None]] = {}
    for name, option in OPTIONS.items():
        if option.switch:
            flags[option.flag] = (name, True)
            flags[f"--no-{option.flag[2:]}"] = (name, False)
        else:
            flags[option.flag] = (name, None)
    raw: RawFlags = dict.fromkeys(OPTIONS)
    args = iter(argv)
    for arg in args:
        flag, equals, value = arg.partition("=")
        known = flags.get(flag)
        if known is None or arg == "--help":
            return None
        name, switch = known
        if switch is not None:
            if equals:
                return None
            raw[name] = switch
            continue
        if not equals:
            following = next(args, None)
            if following is None:
                return None
            value = following
        raw[name] = value
    return raw


def serve(raw: RawFlags) -> int:
    """Run the server with these flags; the process's exit code (2: a bad flag or variable)."""
    try:
        settings = build_settings(raw)
    except SettingsError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    # Imported here: the server, the engines and uvicorn load only for `jq serve`.
    from jq_tool.server.runner import run

    return run(settings)


def _parameter(name: str, option: Option) -> inspect.Parameter:
    """The Typer option of one setting. Its value is None when the flag is not given, so that
    build_settings falls back to the environment variable and then to the default."""
    import inspect

    import typer

    declaration = f"{option.flag}/--no-{option.flag[2:]}" if option.switch else option.flag
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(
            None,
            declaration,
            help=option.help_text,
            show_default=False,
            rich_help_panel=option.panel,
        ),
        annotation=bool | None if option.switch else str | None,
    )


# What `jq serve` exits with (server/startup_checks.py has the refusals; README lists them).
EXIT_CODES = (
    "Exit codes: 0 stopped cleanly (SIGTERM/SIGINT); 2 a bad flag or variable; 10 the port is in"
    " use; 11 the data dir is not writable; 12 the data dir is in use by another process; 13"
    " Redis is unreachable; 1 any other failure at start. A refused start has written nothing."
)


def register(app: typer.Typer) -> None:
    import inspect

    import typer

    def serve_command(**raw: str | bool | None) -> None:
        """Run the queue server."""
        raise typer.Exit(serve(raw))

    # Typer reads a command's options from its signature: one keyword parameter per setting.
    serve_command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [_parameter(name, option) for name, option in OPTIONS.items()]
    )
    app.command("serve", epilog=EXIT_CODES)(serve_command)


def main(argv: list[str]) -> None:
    """`jq serve ARGS` (argv without the command's name): the quick reading, else Typer's."""
    raw = read_flags(argv)
    if raw is not None:
        raise SystemExit(serve(raw))
    import typer

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(app)  # one command: `python -m jq_tool.cli.serve --port 8080 ...`
    app(argv, prog_name="jq serve")


if __name__ == "__main__":
    main(sys.argv[1:])
