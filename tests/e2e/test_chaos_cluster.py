"""CI's cluster chaos round: the real `jq chaos --cluster 3` command spawns three `jq serve` nodes
in cluster mode (each with its own etcd member), spreads 600 jobs and 6 workers over all of them,
SIGKILLs a random node 3 times (one at a time, each restarted healthy before the next kill) and
must report zero loss, with every node having answered requests; the jobs workers gave back
(a tenth, released once) still end ACKED."""

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


def test_cluster_chaos_round_with_three_node_kills_loses_nothing(tmp_path: Path) -> None:
    root = tmp_path / "cluster"
    command = [
        sys.executable,
        "-m",
        "jq_tool.cli.main",
        "chaos",
        "-cluster",
        "3",
        "-jobs",
        "600",
        "-workers",
        "6",
        "-kills",
        "3",
        "-kill-interval",
        "3s",
        "-wait",
        "60s",
        "-seed",
        "11",
        # A quarter of the submits go without a key, as a bare HTTP client's would.
        "-without-key",
        "0.25",
        # A tenth of the leased jobs are given back once and run again: replicated releases.
        "-release-share",
        "0.1",
        "-data-dir",
        str(root),
        "-json",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=200)
    assert completed.stdout.strip(), completed.stderr[-2000:]
    report = json.loads(completed.stdout)
    assert report["error"] is None, report
    assert report["submitted"] == 600, report
    assert report["lost"] == 0, report["lost_jobs"]
    assert report["duplicates"] == 0, report["duplicate_details"]
    # Retries with a key (as the SDK retries) never made a second job; keyless ones may have,
    # and are counted apart.
    assert report["duplicates_from_keyed_retries"] == 0, report["duplicate_details"]
    assert report["submits_without_key"] > 0
    assert report["duplicates_from_unkeyed_retries"] >= 0
    assert report["releases"] > 0, report
    assert report["kills"] == 3
    assert report["restarts"] == 3
    assert report["acked"] == 600
    assert report["result"] == "ZERO LOSS ✓"
    assert completed.returncode == 0, completed.stderr[-2000:]

    notes = " | ".join(report["notes"])
    killed = re.search(r"killed in turn: (n\d), (n\d), (n\d)", notes)
    assert killed is not None, notes
    answers = dict(re.findall(r"(n\d) (\d+)", notes.split("answers per node:")[1]))
    assert sorted(answers) == ["n1", "n2", "n3"], notes
    assert all(int(count) > 0 for count in answers.values()), notes

    # Each killed node really restarted on its own data dir: its log shows one start more per
    # kill, and the member's data is where the node keeps it.
    for node in ("n1", "n2", "n3"):
        log = (root / f"{node}.serve.log").read_text()
        starts = log.count("Application startup complete")
        assert starts == 1 + killed.groups().count(node), (node, starts, notes)
        assert (root / node / "etcd" / "member").is_dir()
    # Each node seeded its own keys; none reaches the harness's output.
    assert "admin_" not in completed.stdout + completed.stderr
