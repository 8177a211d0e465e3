"""The first-start panel is plain text now (rich was ~20 ms of a first start): it must stay the
same bytes rich printed, piped (as a log collector sees it) and on a terminal (bold labels). The
reference is rich itself, drawing the panel as jq_tool/server/welcome.py did before."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from jq_tool.auth import ApiKey, KeyType
from jq_tool.server.welcome import TITLE, panel_rows, print_welcome, render_panel
from jq_tool.settings import Settings


def seeded(secret_length: int = 43) -> list[tuple[ApiKey, str]]:
    keys = []
    for key_type in (KeyType.CLIENT, KeyType.WORKER, KeyType.ADMIN):
        key = ApiKey(
            key_id=f"key_{key_type.value}",
            key_prefix="jq_x",
            name=f"dev-{key_type.value}",
            owner_id=f"dev-{key_type.value}",
            type=key_type,
            scopes=(),
            created_at=0,
        )
        keys.append((key, f"jq_{key_type.value}_" + "s" * secret_length))
    return keys


def rich_panel(rows: list[tuple[str, str]], *, terminal: bool) -> str:
    """The panel as print_welcome drew it with rich (200 columns: what a pipe got)."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in rows:
        grid.add_row(label, value)
    panel = Panel(grid, title=TITLE, title_align="left", expand=False)
    out = io.StringIO()
    Console(
        file=out,
        width=200,
        highlight=False,
        force_terminal=terminal,
        color_system="standard" if terminal else None,
    ).print(panel)
    return out.getvalue()


SETTINGS = [
    Settings(data_dir=Path("/var/lib/jq"), host="0.0.0.0", port=8080),
    Settings(data_dir=Path("/tmp/d"), host="127.0.0.1", port=1),
    Settings(data_dir=Path("/srv/jq data/ünïcode"), host="::1", port=65535),
    Settings(data_dir=Path("/x"), host="10.1.2.3", port=9000, redis_url="redis://r:6379/0"),
    Settings(data_dir=Path("/x"), host="", port=9000, redis_url="redis://r", redis_prefix="jq-a:"),
]


@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("terminal", [False, True])
def test_the_panel_is_the_bytes_rich_printed(settings: Settings, terminal: bool) -> None:
    rows = panel_rows(settings, seeded())
    assert render_panel(rows, bold=terminal) == rich_panel(rows, terminal=terminal)


def test_a_title_wider_than_the_rows_widens_the_box() -> None:
    rows = [("a", "b"), ("", "")]
    assert render_panel(rows) == rich_panel(rows, terminal=False)
    assert render_panel(rows, bold=True) == rich_panel(rows, terminal=True)


def test_print_welcome_writes_the_panel_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    settings, keys = SETTINGS[0], seeded()
    print_welcome(settings, keys)
    printed = capsys.readouterr().out
    assert printed == rich_panel(panel_rows(settings, keys), terminal=False)
    assert "jobq keys recover --data-dir /var/lib/jq" in printed
    assert f"export JQ_KEY={keys[2][1]}" in printed


def test_on_a_real_terminal_the_labels_are_bold(tmp_path: Path) -> None:
    # A child process whose stdout is a pseudo-terminal, as an operator's shell would give it.
    script = (
        "from pathlib import Path\n"
        "from jq_tool.server.welcome import print_welcome\n"
        "from jq_tool.settings import Settings\n"
        "import tests.server.test_welcome as t\n"
        "print_welcome(Settings(data_dir=Path('/d'), host='0.0.0.0', port=8080), t.seeded())\n"
    )
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm"}
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=follower, env=env, cwd=Path(__file__).parents[2]
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert child.wait(30) == 0
    printed = b"".join(chunks).decode().replace("\r\n", "\n")
    rows = panel_rows(Settings(data_dir=Path("/d"), host="0.0.0.0", port=8080), seeded())
    assert printed == rich_panel(rows, terminal=True)
    assert "\x1b[1mDashboard" in printed
