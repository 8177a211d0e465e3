"""Files are private (issue 14): a real `jq serve`, started under a permissive umask (000), creates
its data dir 0700 and every file in it 0600: WAL segments, snapshots, the LOCK file, the embedded
key store with its -wal and -shm files."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import httpx

from tests.hostile.conftest import HostileFactory

UNDER_UMASK_000 = ["sh", "-c", 'umask 000 && exec "$@"', "sh", sys.executable, "-m",
                   "jq_tool.cli.serve"]  # fmt: skip


def file_modes(data_dir: Path) -> dict[str, int]:
    """Each file's mode; a file gone between the listing and its stat (a snapshot's .tmp,
    renamed by the snapshot writer meanwhile) is left out."""
    modes = {}
    for path in data_dir.iterdir():
        try:
            modes[path.name] = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue
    return modes


def test_the_data_dir_is_0700_and_every_file_in_it_0600(hostile_server: HostileFactory) -> None:
    server = hostile_server("--snapshot-every", "5", command=UNDER_UMASK_000)
    headers = {"Authorization": f"Bearer {server.client_key}"}
    for i in range(20):
        answer = httpx.post(server.url + "/jobs", json={"payload": f"p{i}"}, headers=headers)
        assert answer.status_code == 201
    running = file_modes(server.data_dir)
    assert {"keys.sqlite3-wal", "keys.sqlite3-shm"} <= set(running)  # sqlite's, while open
    assert {n: m for n, m in running.items() if m != 0o600} == {}
    server.stop()  # graceful: a final snapshot is written as well
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
    modes = file_modes(server.data_dir)
    names = set(modes)
    assert {"LOCK", "keys.sqlite3"} <= names
    assert any(n.endswith(".wal") for n in names) and any(n.endswith(".snap") for n in names)
    assert {n: m for n, m in modes.items() if m != 0o600} == {}
    # And again after a restart that replays and appends more.
    server.start()
    httpx.post(server.url + "/jobs", json={"payload": "after"}, headers=headers)
    server.stop()
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in server.data_dir.iterdir()}
    assert {n: m for n, m in modes.items() if m != 0o600} == {}
