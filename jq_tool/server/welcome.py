"""The panel `jq serve` prints on a first start, once the server is up: where the dashboard is,
the three dev keys it just seeded, and how to get a key back when they are lost.

It is printed only after uvicorn listens (so a start that fails never shows keys), on stdout,
beside the `Created … key` log lines of the original contract, which stay. Nothing else ever
shows a secret: the next start seeds nothing and prints no panel.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from jq_tool.auth import ApiKey
from jq_tool.settings import Settings

_ANY_ADDRESS = {"0.0.0.0", "::", ""}


def server_url(settings: Settings) -> str:
    """The URL to open on this machine (a wildcard listen address is reached via loopback)."""
    host = "127.0.0.1" if settings.host in _ANY_ADDRESS else settings.host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def recover_command(settings: Settings) -> str:
    """The offline command that mints a new admin key in this server's key store."""
    if settings.redis_url:
        prefix = f" --redis-prefix {settings.redis_prefix}" if settings.redis_prefix else ""
        return f'jobq keys recover --redis-url "$REDIS_URL"{prefix}'
    return f"jobq keys recover --data-dir {settings.data_dir}"


def print_welcome(settings: Settings, seeded: Sequence[tuple[ApiKey, str]]) -> None:
    """The first-start panel, on stdout."""
    url = server_url(settings)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("Dashboard", f"{url}/  (paste the client key)")
    grid.add_row("API", f"{url}  (OpenAPI: /openapi.json)")
    grid.add_row("", "")
    for key, secret in seeded:
        grid.add_row(f"{key.type.value} key", secret)
    admin = next((secret for key, secret in seeded if key.type.value == "admin"), "")
    grid.add_row("", "")
    grid.add_row("CLI", f"export JQ_URL={url}")
    grid.add_row("", f"export JQ_KEY={admin}")
    grid.add_row("Keys lost?", recover_command(settings))
    panel = Panel(
        grid,
        title="jq is up: keys shown once, store them now",
        title_align="left",
        expand=False,
    )
    # A key must never wrap: piped output gets a wide console, a terminal its own width.
    width = None if sys.stdout.isatty() else 200
    Console(file=sys.stdout, width=width, highlight=False).print(panel)
