"""kill -9 a process that is appending to the WAL, again and again, and check after each restart
that every record it had acknowledged (printed after append returned) is there, intact."""

from __future__ import annotations

import importlib.util
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jq_tool.core.wal import WAL

APPENDER = Path(__file__).with_name("wal_appender.py")
_spec = importlib.util.spec_from_file_location("wal_appender", APPENDER)
assert _spec is not None and _spec.loader is not None
appender = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(appender)


def run_until_killed(directory: Path, seed: int, run_for: float) -> tuple[int, list[int]]:
    """Start the appender, SIGKILL it after run_for seconds of appending; return the next_index
    it reported at start and every index it acknowledged."""
    process = subprocess.Popen(
        [sys.executable, str(APPENDER), str(directory), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    ready = process.stdout.readline()
    if not ready.startswith(b"ready "):
        process.kill()
        process.wait()
        raise AssertionError(f"appender did not start: {ready!r} {process.stderr.read()!r}")
    chunks: list[bytes] = []
    # Drain stdout while it runs so a full pipe never stalls the appender away from its writes.
    reader = threading.Thread(target=lambda: chunks.extend(iter(process.stdout.readline, b"")))
    reader.start()
    time.sleep(run_for)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    reader.join()
    assert process.returncode == -signal.SIGKILL, process.stderr.read() if process.stderr else b""
    # A line cut short by the kill was never a complete acknowledgement.
    acknowledged = [int(line) for line in chunks if line.endswith(b"\n")]
    return int(ready.split()[1]), acknowledged


@pytest.mark.slow
def test_acknowledged_records_survive_repeated_sigkill(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    directory = tmp_path / "wal"
    highest_acknowledged = -1
    truncations = 0
    for round_number in range(10):
        started_at, acknowledged = run_until_killed(
            directory, rng.randrange(1 << 30), rng.uniform(0.1, 0.8)
        )
        context = f"seed {seed}, round {round_number}"
        assert started_at > highest_acknowledged, context
        assert acknowledged, f"{context}: nothing was acknowledged before the kill"
        assert acknowledged == sorted(acknowledged), context
        highest_acknowledged = max(highest_acknowledged, acknowledged[-1])

        wal = WAL(directory, segment_bytes=appender.SEGMENT_BYTES)
        recovery = wal.open()
        try:
            truncations += recovery.truncated is not None
            assert recovery.next_index > highest_acknowledged, context
            if recovery.snapshot_index:
                assert recovery.snapshot == appender.snapshot_for(recovery.snapshot_index)
            expected_index = recovery.snapshot_index
            for index, record_type, body in wal.replay():
                assert index == expected_index, context
                assert record_type == 1 and body == appender.body_for(index), context
                expected_index += 1
            assert expected_index == recovery.next_index, context
        finally:
            wal.close()
    assert highest_acknowledged > 0
