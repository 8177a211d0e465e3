"""`jq tui` as a real process in a pseudo-terminal against a real `jq serve`: it draws the
dashboard, goes live, and `q` quits with exit code 0."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import sys
import termios
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import JqServer


def _read_until(fd: int, done: bytes, output: bytearray, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                return done in output
            if not chunk:
                return done in output
            output.extend(chunk)
        if done and done in output:
            return True
    return False


@pytest.mark.slow  # restarts a server / runs a whole process
def test_jq_tui_runs_in_a_terminal_and_quits_on_q(jq_server: JqServer) -> None:
    jq = str(Path(sys.executable).parent / "jq")
    env = {**os.environ, "TERM": "xterm-256color", "JQ_KEY": str(jq_server.client_key)}
    pid, fd = pty.fork()
    if pid == 0:  # the child: become `jq tui` on the pseudo-terminal
        os.execve(jq, [jq, "tui", "--url", jq_server.url], env)
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        output = bytearray()
        assert _read_until(fd, b"RUNNABLE", output, 60), "the dashboard was never drawn"
        assert _read_until(fd, b"live", output, 30), "the stream never went live"
        assert jq_server.client_key is not None
        assert jq_server.client_key.encode() not in output, "the key was printed"
        os.write(fd, b"q")
        _read_until(fd, b"", output, 10)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)
