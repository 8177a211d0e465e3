"""CI's chaos round against two shards: the real `jq chaos --shards 2` spawns two etcd groups
of three members and three `jq serve` nodes holding both shards, submits 600 jobs to one queue
per shard, and in turn SIGKILLs a shard's etcd leader, SIGKILLs a jq node and moves one of the
queues to the other shard under the load (four disruptions, each victim back before the next).
Zero loss, zero duplicates."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server not installed"),
]


def test_chaos_round_against_two_shards_loses_and_doubles_nothing(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "jq_tool.cli.main", "chaos",
        "--shards", "2",
        "--jobs", "600",
        "--workers", "6",
        "--kills", "4",
        "--kill-interval", "3s",
        "--wait", "60s",
        "--seed", "11",
        "--data-dir", str(tmp_path / "sharded"),
        "--json",
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=200)
    assert completed.stdout.strip(), completed.stderr[-2000:]
    report = json.loads(completed.stdout)
    assert report["error"] is None, report
    assert report["submitted"] == 600 and report["acked"] == 600, report
    assert report["lost"] == 0, report["lost_jobs"]
    assert report["duplicates"] == 0, report["duplicate_details"]
    assert report["kills"] == 4 and report["restarts"] == 4
    assert completed.returncode == 0, completed.stderr[-2000:]
    notes = " | ".join(report["notes"])
    assert re.search(
        r"killed in turn: shard \d etcd leader g\dm\d, node n\d, move chaos-\w+-\d \d->\d, "
        r"shard \d etcd leader",
        notes,
    ), notes
    assert len(report["queue"].split(",")) == 2
