"""The bench's servers do not outlive a bench that is stopped with SIGTERM: they lead their own
sessions (a Ctrl-C must not reach them mid-run), so only the bench's `finally` blocks stop them,
and `stop_servers_on_sigterm` makes a SIGTERM run those blocks, as a Ctrl-C does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A bench in miniature: a "server" in its own session, stopped by the finally block.
BENCH = r"""
import subprocess, sys, time
from bench import http_bench
if sys.argv[1] == "handled":
    http_bench.stop_servers_on_sigterm()
server = subprocess.Popen(["sleep", "120"], start_new_session=True)
try:
    print(server.pid, flush=True)  # inside: a SIGTERM from now on finds the finally block
    time.sleep(120)
finally:
    http_bench.stop_server_process(server)
"""


def server_left_after_sigterm(mode: str) -> bool:
    bench = subprocess.Popen(
        [sys.executable, "-c", BENCH, mode], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert bench.stdout is not None
    server_pid = int(bench.stdout.readline())
    bench.send_signal(signal.SIGTERM)
    returncode = bench.wait(timeout=30)
    assert returncode in (-signal.SIGTERM, 128 + signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(server_pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.05)
    os.killpg(server_pid, signal.SIGKILL)  # the probe's own server: not left behind either
    return True


def test_a_sigtermed_bench_stops_the_servers_it_started() -> None:
    assert not server_left_after_sigterm("handled")


def test_without_it_the_server_would_outlive_the_bench() -> None:
    assert server_left_after_sigterm("default")
