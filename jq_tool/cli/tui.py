"""`jq tui`: the live terminal dashboard. Parses the server URL and key and runs the Textual app
in jq_tool.tui; the app itself is imported only when the command runs, so every other `jq`
command starts without loading Textual.
"""

from __future__ import annotations

import typer

from jq_tool.cli.options import KeyOption, UrlOption
from jq_tool.cli.output import EXIT_AUTH, NO_KEY, fail
from jq_tool.sdk import DEFAULT_URL


def tui(url: UrlOption = DEFAULT_URL, key: KeyOption = None) -> None:
    """Live dashboard in the terminal: totals, rates, jobs by state; n enqueues, r requeues.
    The key needs jobs:read (and jobs:submit for n and r)."""
    if not url.startswith(("http://", "https://")):
        raise typer.BadParameter(
            f"must start with http:// or https://, got {url!r}", param_hint="--url"
        )
    if not key:
        fail(NO_KEY, EXIT_AUTH, as_json=False)
    from jq_tool.tui.app import JqDashboard

    JqDashboard(url=url, key=key).run()


def register(app: typer.Typer) -> None:
    """Add the `tui` command to the root `jq` app."""
    app.command("tui")(tui)
