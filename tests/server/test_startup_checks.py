"""`jq serve` that cannot start says so in one line, with its own exit code, before it writes,
seeds or logs anything as serving: port in use (10), data dir not writable (11), data dir held by
another process (12), Redis unreachable (13). A start that works prints, once uvicorn listens,
the first-start panel with the dashboard URL and the three keys (beside the original "Created …
key" log lines); a restart prints neither."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jq_tool.chaos.target import free_port
from jq_tool.server.startup_checks import (
    EXIT_DATA_DIR_IN_USE,
    EXIT_DATA_DIR_NOT_WRITABLE,
    EXIT_PORT_UNAVAILABLE,
    EXIT_REDIS_UNREACHABLE,
)

SERVE = [sys.executable, "-m", "jq_tool.cli.serve"]


def serve(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run `jq serve` to its end (a refused start ends at once); stdout and stderr together."""
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "WAL_DIR", "REDIS_URL")}
    return subprocess.run(
        [*prefix, *SERVE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        env=env,
    )


def assert_one_line_refusal(result: subprocess.CompletedProcess[str], code: int) -> str:
    output = result.stdout.strip()
    assert result.returncode == code, output
    assert len(output.splitlines()) == 1, output
    assert "jq cannot start:" in output
    assert "Traceback" not in output and "Created" not in output and "serving" not in output
    return output


def test_port_in_use(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve("--port", str(port), "--data-dir", str(data_dir))
    line = assert_one_line_refusal(result, EXIT_PORT_UNAVAILABLE)
    assert f"port {port}" in line and "in use" in line and "--port" in line and "PORT" in line
    assert not data_dir.exists()  # nothing written: no data dir, no key store, no keys


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    for data_dir in (not_a_dir, not_a_dir / "below"):
        result = serve("--port", str(free_port()), "--data-dir", str(data_dir))
        line = assert_one_line_refusal(result, EXIT_DATA_DIR_NOT_WRITABLE)
        assert str(data_dir) in line and "--data-dir" in line
    assert not_a_dir.read_text() == "x"


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[tuple[Path, tuple[str, ...]]]:
    """A directory mounted read-only in a private mount namespace (as root, chmod would not
    stop the server: a read-only mount stops root too), and the command prefix that enters it."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private read-only mount")
    directory = tmp_path / "ro"
    directory.mkdir()
    (directory / "keys.sqlite3").write_bytes(b"")
    mount = (
        f'mount --bind {directory} {directory} && mount -o remount,ro,bind {directory} && exec "$@"'
    )
    yield directory, ("unshare", "--mount", "--propagation", "private", "sh", "-c", mount, "sh")


def test_data_dir_not_writable(read_only_dir: tuple[Path, tuple[str, ...]]) -> None:
    directory, prefix = read_only_dir
    result = serve("--port", str(free_port()), "--data-dir", str(directory), prefix=prefix)
    line = assert_one_line_refusal(result, EXIT_DATA_DIR_NOT_WRITABLE)
    assert f"the data dir {directory} is not writable" in line and "WAL_DIR" in line
    assert sorted(p.name for p in directory.iterdir()) == ["keys.sqlite3"]


def test_new_data_dir_in_a_read_only_place(read_only_dir: tuple[Path, tuple[str, ...]]) -> None:
    directory, prefix = read_only_dir
    data_dir = directory / "new" / "data"
    result = serve("--port", str(free_port()), "--data-dir", str(data_dir), prefix=prefix)
    line = assert_one_line_refusal(result, EXIT_DATA_DIR_NOT_WRITABLE)
    assert f"cannot create the data dir {data_dir}" in line and f"{directory} is not" in line


def test_data_dir_held_by_another_process(tmp_path: Path) -> None:
    data_dir = tmp_path / "held"
    data_dir.mkdir()
    fd = os.open(data_dir / "LOCK", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running engine holds it
        result = serve("--port", str(free_port()), "--data-dir", str(data_dir))
    finally:
        os.close(fd)
    line = assert_one_line_refusal(result, EXIT_DATA_DIR_IN_USE)
    assert f"{data_dir} is in use by process {os.getpid()}" in line and "--data-dir" in line
    assert sorted(p.name for p in data_dir.iterdir()) == ["LOCK"]


def test_a_running_server_holds_its_data_dir(jq_server: Any) -> None:
    result = serve("--port", str(free_port()), "--data-dir", str(jq_server.data_dir))
    line = assert_one_line_refusal(result, EXIT_DATA_DIR_IN_USE)
    assert f"in use by process {jq_server.proc.pid}" in line


def test_redis_unreachable(tmp_path: Path) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    data_dir = tmp_path / "fresh"
    result = serve("--port", str(free_port()), "--data-dir", str(data_dir), "--redis-url", url)
    line = assert_one_line_refusal(result, EXIT_REDIS_UNREACHABLE)
    assert "Redis" in line and "--redis-url" in line and "REDIS_URL" in line
    assert "hunter2" not in line and "redis://:***@127.0.0.1" in line
    assert not data_dir.exists()


KEY = re.compile(r"\b(client|worker|admin)_[A-Za-z0-9_-]{43}\b")


def test_first_start_panel_then_none(jq_server_factory: Any) -> None:
    server = jq_server_factory()
    log = server.log()
    # The original contract's log lines stay...
    assert server.client_key and server.worker_key and server.admin_key
    # ...and one panel follows once the server listens, with the URL and the same three keys.
    panel = log[log.index("jq is up") :]
    assert log.index("jq serving on") < log.index("jq is up")
    assert f"{server.url}/" in panel and f"export JQ_URL={server.url}" in panel
    for secret in (server.client_key, server.worker_key, server.admin_key):
        assert secret in panel
    assert f"export JQ_KEY={server.admin_key}" in panel
    assert f"jobq keys recover --data-dir {server.data_dir}" in panel
    before = len(log)
    server.restart()
    again = server.log()[before:]
    assert "jq is up" not in again and not KEY.search(again)


def test_exit_codes_are_in_the_help() -> None:
    helped = subprocess.run(
        [*SERVE, "--help"], capture_output=True, text=True, timeout=60, env={"COLUMNS": "300"}
    )
    assert helped.returncode == 0
    for code, words in ((10, "port"), (11, "not writable"), (12, "in use"), (13, "Redis")):
        assert f"{code} " in helped.stdout and words in helped.stdout
