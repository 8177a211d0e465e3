"""The client commands joined into a Typer app the way jq_tool/cli/main.py joins them, for the
CLI tests (in process with CliRunner, or as a real process: `python jq_app.py worker …`)."""

from __future__ import annotations

import typer

from jq_tool.cli import console, jobs, keys, queues, worker

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def root() -> None:
    """jq client commands (test app)."""


jobs.register(app)
keys.register(app)
worker.register(app)
queues.register(app)
console.register(app)

if __name__ == "__main__":
    app()
