"""`jq tui`: the live terminal dashboard. Parses the server URL and key and runs the Textual app
in jq_tool.tui; the app itself is imported only when the command runs, so every other `jq`
command starts without loading Textual.
"""

from __future__ import annotations

from typing import Annotated

import typer

DEFAULT_URL = "http://127.0.0.1:8080"


def tui(
    url: Annotated[
        str, typer.Option("--url", envvar="JQ_URL", help="Server URL.", show_envvar=True)
    ] = DEFAULT_URL,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            envvar="JQ_KEY",
            help="API key with jobs:read (and jobs:submit for n and r).",
            show_envvar=True,
            show_default=False,
        ),
    ] = None,
) -> None:
    """Live dashboard in the terminal: totals, rates, jobs by state; n enqueues, r requeues."""
    if not url.startswith(("http://", "https://")):
        raise typer.BadParameter(
            f"must start with http:// or https://, got {url!r}", param_hint="--url"
        )
    if not key:
        raise typer.BadParameter("an API key is required (or set JQ_KEY)", param_hint="--key")
    from jq_tool.tui.app import JqDashboard

    JqDashboard(url=url, key=key).run()


def register(app: typer.Typer) -> None:
    """Add the `tui` command to the root `jq` app."""
    app.command("tui")(tui)
