"""The panel `jq serve` prints on a first start, once the server is up: where the dashboard is,
the three dev keys it just seeded, and how to get a key back when they are lost.

It is printed only after uvicorn listens (so a start that fails never shows keys), on stdout,
beside the `Created … key` log lines of the original contract, which stay. Nothing else ever
shows a secret: the next start seeds nothing and prints no panel.

The panel is drawn here as plain text, byte for byte as rich drew it (a rounded box, the title
on its top edge, two columns two spaces apart, the labels bold on a terminal): rich's console,
table and emoji tables were ~20 ms of a first start, for one box (tests/server/test_welcome.py
renders both and compares). Unlike rich, a line longer than the terminal is not wrapped, and
a terminal that calls itself dumb (TERM) still gets the bold: nothing past jq_tool.settings
reads the environment.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

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


TITLE = "jq is up: keys shown once, store them now"
_BOLD, _PLAIN = "\x1b[1m", "\x1b[0m"


def panel_rows(settings: Settings, seeded: Sequence[tuple[ApiKey, str]]) -> list[tuple[str, str]]:
    """The panel's (label, value) rows."""
    url = server_url(settings)
    rows = [
        ("Dashboard", f"{url}/  (paste the client key)"),
        ("API", f"{url}  (OpenAPI: /openapi.json)"),
        ("", ""),
    ]
    rows += [(f"{key.type.value} key", secret) for key, secret in seeded]
    admin = next((secret for key, secret in seeded if key.type.value == "admin"), "")
    rows += [
        ("", ""),
        ("CLI", f"export JQ_URL={url}"),
        ("", f"export JQ_KEY={admin}"),
        ("Keys lost?", recover_command(settings)),
    ]
    return rows


def render_panel(rows: Sequence[tuple[str, str]], *, bold: bool = False) -> str:
    """The rows in a rounded box titled TITLE, as rich's `Panel(Table.grid(padding=(0, 2)),
    expand=False)` with a bold first column draws them (`bold`: with the terminal's escapes)."""
    label_width = max(len(label) for label, _ in rows)
    value_width = max(len(value) for _, value in rows)
    # The box fits its widest row, or its title with a rule on each side.
    inner = max(label_width + 2 + value_width, len(TITLE) + 2)
    lines = [f"╭─ {TITLE} {'─' * (inner - len(TITLE) - 1)}╮"]
    for label, value in rows:
        label, gap, value = label.ljust(label_width), "  ", value.ljust(inner - label_width - 2)
        if bold:  # rich styles a column's padding with the column
            label, gap = f"{_BOLD}{label}{_PLAIN}", f"{_BOLD}{gap}{_PLAIN}"
        lines.append(f"│ {label}{gap}{value} │")
    lines.append(f"╰{'─' * (inner + 2)}╯")
    return "\n".join(lines) + "\n"


def print_welcome(settings: Settings, seeded: Sequence[tuple[ApiKey, str]]) -> None:
    """The first-start panel, on stdout."""
    sys.stdout.write(render_panel(panel_rows(settings, seeded), bold=sys.stdout.isatty()))
    sys.stdout.flush()
