"""`jq chaos` flag handling through a real Typer app: the seed's single-dash spellings reach the
command, and bad input is a usage error (exit 2) with a message, never a traceback."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from jq_tool.cli import chaos as chaos_cli

runner = CliRunner()


def _root() -> typer.Typer:
    app = typer.Typer()

    @app.command("version")
    def version() -> None:  # a second command, so `chaos` is a subcommand as in the root CLI
        typer.echo("0")

    chaos_cli.register(app)
    return app


def test_single_dash_flags_are_parsed_through_the_root_app() -> None:
    result = runner.invoke(
        _root(), ["chaos", "-target", "localhost:8080", "-kills", "3", "-kill-interval", "2s"]
    )
    assert result.exit_code == chaos_cli.EXIT_BAD_INPUT
    # The values arrived: the complaints are about them, not about unknown options.
    assert "--target must be an http:// or https:// URL" in result.output
    assert "--kills with --target needs --kill-cmd" in result.output


def test_bad_duration_is_a_usage_error() -> None:
    result = runner.invoke(_root(), ["chaos", "-kill-interval", "soon"])
    assert result.exit_code == 2
    assert "invalid duration 'soon'" in result.output


def test_help_lists_the_seed_flags() -> None:
    result = runner.invoke(_root(), ["chaos", "--help"])
    assert result.exit_code == 0
    for flag in ("--target", "--kill-interval", "--kill-cmd", "--restart-cmd", "--submit-rate"):
        assert flag in result.output
