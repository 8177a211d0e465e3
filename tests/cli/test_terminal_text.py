"""What clients wrote is printed on an operator's terminal without the escape sequences in it
acting there (jq_tool/terminal_text.py): unit cases, `jq get` / `jq list` against a real server,
and `jq worker`'s log line of a handler's error that quotes its payload."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sdk.jq_server_process import ServerProcess, wait_until

from jq_tool.sdk import Client, JobState
from jq_tool.terminal_text import terminal_safe
from tests.cli.test_cli_console import jq

# Clears the screen, retitles the window, writes the clipboard (OSC 52, BEL- and ST-ended),
# rewrites the line with a carriage return, shows text right to left, a C1 CSI.
HOSTILE = "a\x1b[2Jb\x1b]0;owned\x07c\x1b]52;c;aGk=\x1b\\d\rfake\x08\u202eevil\u202c\x9b31m"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain ascii", "plain ascii"),
        ("lines\nand\ttabs stay", "lines\nand\ttabs stay"),
        ("ünïcödé 日本", "ünïcödé 日本"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("nul\x00 del\x7f c1\x85", "nul\\x00 del\\x7f c1\\x85"),
        ("\u202eabc\u2066", "\\u202eabc\\u2066"),
    ],
)
def test_terminal_safe(text: str, shown: str) -> None:
    assert terminal_safe(text) == shown


def test_jq_get_and_list_show_escape_sequences_as_text(
    jq_server: ServerProcess, queue: str
) -> None:
    with Client(jq_server.url, jq_server.client_key) as client:
        job_id = client.submit(HOSTILE, queue=queue, max_retries=0)
    with Client(jq_server.url, jq_server.worker_key) as worker:
        (leased,) = worker.lease(queue=queue)
        worker.fail(job_id, f"ValueError: {HOSTILE}", lease_id=leased.lease_id)
    for args in (("get", job_id), ("list", "--queue", queue)):
        shown = jq(jq_server, jq_server.client_key, *args)
        assert not any(c in shown for c in "\x1b\x07\r\x08\u202e\x9b"), repr(shown)
        assert "\\x1b]52;c;aGk=" in shown, shown


def test_jq_worker_logs_a_handlers_error_without_its_escape_sequences(
    jq_server: ServerProcess, queue: str, tmp_path: Path
) -> None:
    (tmp_path / "hostile_handlers.py").write_text(
        "def handle(job):\n    raise ValueError('bad payload: ' + job.payload)\n"
    )
    with Client(jq_server.url, jq_server.client_key) as client:
        job_id = client.submit(HOSTILE, queue=queue, max_retries=0)
        app = Path(__file__).parent / "jq_app.py"
        worker = subprocess.Popen(
            [sys.executable, str(app), "worker", "hostile_handlers:handle", "--url",
             jq_server.url, "--key", jq_server.worker_key, "--queue", queue],
            cwd=tmp_path, env={"PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_until(lambda: client.get(job_id).state is JobState.DEAD)
        finally:
            worker.terminate()
            output = worker.communicate(timeout=30)[0].decode()
    (line,) = [line for line in output.splitlines() if job_id in line]
    assert "(DEAD): ValueError: bad payload: a\\x1b[2Jb\\x1b]0;owned\\x07c" in line, line
    assert "\x1b" not in output and "\u202e" not in output, repr(output)
