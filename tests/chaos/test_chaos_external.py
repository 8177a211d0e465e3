"""`jq chaos --target` against a server the harness does not own: it is killed and restarted
only through the user's `--kill-cmd` / `--restart-cmd` shell commands, as with the seed's
`docker compose kill queue` / `docker compose up -d queue`."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from jq_tool.chaos.target import ADMIN_KEY_LINE, free_port


def _wait_for_key(log: Path, base_url: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = ADMIN_KEY_LINE.search(log.read_text() if log.exists() else "")
        if match is not None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                    return match.group(1)
        time.sleep(0.1)
    raise AssertionError(f"server did not come up:\n{log.read_text()[-2000:]}")


@pytest.mark.slow
def test_external_target_killed_by_shell_commands(tmp_path: Path) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log, pid_file = tmp_path / "serve.log", tmp_path / "serve.pid"
    serve = shlex.join(
        [
            sys.executable,
            "-m",
            "jq_tool.cli.main",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
            "--lease-duration",
            "5s",
            "--lease-check-interval",
            "500ms",
        ]
    )
    start = tmp_path / "start.sh"
    start.write_text(f"{serve} >> {shlex.quote(str(log))} 2>&1 &\necho $! > {pid_file}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "WAL_DIR", "PORT")}
    subprocess.run(["sh", str(start)], check=True, env=env)
    try:
        key = _wait_for_key(log, base_url)
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "jq_tool.cli.main",
                "chaos",
                "-target",
                base_url,
                "-key",
                key,
                "-jobs",
                "400",
                "-workers",
                "4",
                "-kills",
                "2",
                "-kill-interval",
                "1s",
                "-kill-cmd",
                f"kill -9 $(cat {pid_file})",
                "-restart-cmd",
                f"sh {start}",
                "-json",
            ],
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
        )
        report = json.loads(completed.stdout)
        assert report["error"] is None, report
        assert (report["lost"], report["duplicates"], report["kills"]) == (0, 0, 2), report
        assert report["submitted"] == report["acked"] == 400
        assert completed.returncode == 0
        assert key not in completed.stdout + completed.stderr
        # Two restarts happened: three server processes logged their start.
        assert log.read_text().count("Application startup complete") == 3
    finally:
        with contextlib.suppress(ProcessLookupError, ValueError, FileNotFoundError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
