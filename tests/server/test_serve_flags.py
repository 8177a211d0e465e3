"""`jq serve` reads well-formed flags without Typer (cli/serve.py `read_flags`, for a fast start):
what it reads is what the Typer command would have received, and whatever it does not read
(help, unknown flags, a missing value, a value given to a switch) is left to Typer, which
reports it as before."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import jq_tool.cli.serve as serve_module
from jq_tool.cli.serve import read_flags

WELL_FORMED = [
    [],
    ["--port", "9000", "--data-dir", "/tmp/x"],
    ["--port=9000", "--host=0.0.0.0"],
    ["--no-seed-keys", "--access-log", "--lease-duration", "45s"],
    ["--seed-keys", "--no-seed-keys"],  # the last one wins
    ["--port", "1", "--port", "2"],
    ["--redis-prefix", "", "--node-id", "n1"],
    ["--log-level", "--port"],  # Click takes the next word as the value, whatever it looks like
    ["--cluster-mode", "--peers", "a@127.0.0.1:1,b@127.0.0.1:3", "--raft-addr=127.0.0.1:1"],
]
LEFT_TO_TYPER = [
    ["--help"],
    ["--port", "1", "--help"],
    ["--nope"],
    ["--port"],
    ["extra"],
    ["--seed-keys=false"],
    ["-p", "1"],
]


def typer_reads(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    received: dict[str, Any] = {}

    def capture(raw: dict[str, Any]) -> int:
        received.update(raw)
        return 0

    monkeypatch.setattr(serve_module, "serve", capture)
    app = typer.Typer(add_completion=False)
    serve_module.register(app)
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    return received


@pytest.mark.parametrize("argv", WELL_FORMED)
def test_read_as_typer_reads_them(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert read_flags(argv) == typer_reads(argv, monkeypatch)


@pytest.mark.parametrize("argv", LEFT_TO_TYPER)
def test_anything_else_is_left_to_typer(argv: list[str]) -> None:
    assert read_flags(argv) is None


def test_a_bad_value_is_a_usage_error_without_typer(capsys: pytest.CaptureFixture[str]) -> None:
    raw = read_flags(["--lease-duration", "soon"])
    assert raw is not None
    assert serve_module.serve(raw) == 2
    assert "--lease-duration" in capsys.readouterr().err
