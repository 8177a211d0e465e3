"""`jq chaos` flag handling through a real Typer app: the seed's single-dash spellings reach the
command, and bad input is a usage error (exit 2) with a message, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from subprocess import CompletedProcess

import typer
from rich.console import Console
from typer.testing import CliRunner

from jq_tool.chaos.harness import ChaosRun
from jq_tool.chaos.options import ChaosOptions
from jq_tool.chaos.target import ExternalServer
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


def _chaos_process(args: list[str], env: dict[str, str] | None = None) -> CompletedProcess[str]:
    command = [sys.executable, "-m", "jq_tool.cli.main", "chaos", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def test_server_that_cannot_start_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    completed = _chaos_process(["--jobs", "5", "--data-dir", str(not_a_dir / "data")])
    assert completed.returncode == chaos_cli.EXIT_NO_SERVER
    assert "Not a directory" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_server_that_exits_at_start_shows_its_log_in_json(tmp_path: Path) -> None:
    env = {**os.environ, "JQ_MAX_PAYLOAD": "lots"}  # the spawned server refuses this setting
    completed = _chaos_process(["--jobs", "5", "--json"], env=env)
    assert completed.returncode == chaos_cli.EXIT_NO_SERVER
    body = json.loads(completed.stdout)
    assert body["zero_loss"] is False
    assert "exited with code" in body["error"]
    assert "lots" in body["error"]  # the server's own complaint, from its log


def test_wrong_key_is_refused_before_the_run(tmp_path: Path) -> None:
    completed = _chaos_process(["--jobs", "5", "--key", "admin_wrong0000000000"])
    assert completed.returncode == chaos_cli.EXIT_NO_SERVER, completed.stdout
    assert "refused the key" in completed.stderr
    assert "HTTP 401" in completed.stderr
    assert "admin_wrong" not in completed.stderr  # a secret, even a wrong one, is not echoed


def test_progress_view_shows_submitted_acked_kills_and_restarts() -> None:
    target = ExternalServer("http://127.0.0.1:9", "k", kill_cmd="true", restart_cmd=None)
    run = ChaosRun(ChaosOptions(jobs=10, kills=3), target)
    run.ledger.submit_started(0, at=0.0)
    run.ledger.submit_acknowledged(0, "job-0", at=0.1)
    run.ledger.ack_confirmed("job-0", at=0.2)
    run.kills, run.restarts = 2, 1
    console = Console(record=True, width=100, force_terminal=False)
    console.print(chaos_cli._progress_view(run))
    text = console.export_text()
    assert "submitted" in text and "1/10" in text
    assert "acked" in text
    assert "2/3" in text and "restarts: 1" in text
