"""`jq serve`: run the queue server (jq_tool/server/runner.py does the running).

Its options are not written here: each comes from a setting's declaration in jq_tool.settings
(flag, help, environment variable, default), so a new setting appears in `jq serve --help`
without touching this module. Flags and their environment variables become one `Settings`; a
bad value is a usage error (exit code 2) with a message, never a traceback.
"""

from __future__ import annotations

import inspect

import typer

from jq_tool.settings import OPTIONS, Option, SettingsError, build_settings


def _parameter(name: str, option: Option) -> inspect.Parameter:
    """The Typer option of one setting. Its value is None when the flag is not given, so that
    build_settings falls back to the environment variable and then to the default."""
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
    def serve(**raw: str | bool | None) -> None:
        """Run the queue server."""
        try:
            settings = build_settings(raw)
        except SettingsError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(2) from None
        # Imported here: the server, the engines and uvicorn load only for `jq serve`.
        from jq_tool.server.runner import run

        raise typer.Exit(run(settings))

    # Typer reads a command's options from its signature: one keyword parameter per setting.
    serve.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [_parameter(name, option) for name, option in OPTIONS.items()]
    )
    app.command("serve", epilog=EXIT_CODES)(serve)


if __name__ == "__main__":
    _app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(_app)  # one command: `python -m jq_tool.cli.serve --port 8080 ...`
    _app()
