"""The etcd member's log stays bounded: the member runs at `--log-level warn` (a healthy start
writes no INFO lines), and `bound_log` copy-truncates the file once it passes its bound while
the member keeps writing to it through its own descriptor."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from jq_tool.engine.etcd_member import bound_log
from tests.cluster.test_cluster_serve import Cluster


def test_bound_log_cuts_a_file_that_a_live_process_appends_to(tmp_path: Path) -> None:
    path = tmp_path / "etcd.log"
    with open(path, "ab") as log:  # as EtcdMember hands it to etcd
        writer = subprocess.Popen(
            ["sh", "-c", "i=0; while :; do i=$((i+1)); echo line-$i; sleep 0.002; done"],
            stdout=log,
        )
    try:
        while path.stat().st_size < 4000:
            time.sleep(0.01)
        assert not bound_log(path, max_bytes=1 << 20)  # under the bound: left alone
        assert bound_log(path, max_bytes=1000)
        kept = (tmp_path / "etcd.log.1").read_text().splitlines()
        assert kept[0] == "line-1" and len(kept) >= 400
        time.sleep(0.2)
    finally:
        writer.kill()
        writer.wait()
    # The writer went on at the start of the emptied file: no hole of zeros where the old
    # content was, and its lines carry on from where the copy ended.
    after = path.read_bytes()
    assert b"\0" not in after and 0 < len(after) < 4000, len(after)
    numbers = [int(line.split("-")[1]) for line in after.decode().splitlines()]
    assert numbers == sorted(numbers) and numbers[0] >= int(kept[-1].split("-")[1])


def test_a_healthy_member_logs_no_info_lines(cluster: Cluster) -> None:
    for node in cluster.nodes:
        text = (node.data_dir / "etcd.log").read_text()
        levels = {
            json.loads(line).get("level") for line in text.splitlines() if line.startswith("{")
        }
        assert levels <= {"warn", "error"}, (node.data_dir, levels)
