"""README.md's shell blocks run as written against a live server: the first start
(`./scripts/serve.sh`, in the background), key recovery, the curl walkthrough, the crash demo,
the CLI section and the chaos rounds, in order, in one shell, so the README cannot drift from
what the code does. README.md marks what must not run here (Docker, the benchmarks, the test
suite itself, the full-screen TUI), each with its reason; see readme_blocks.py.

It runs in a private network and PID namespace (`unshare`), so the README's own port 8080 is
free whatever else this machine runs, and nothing it starts outlives it; in a scratch directory
that holds the repository's `scripts/`, `examples/` and `.venv` (symlinks), so `./data` is a new
data dir. The environment is a fresh shell's: PATH without the venv (the README puts it there),
no JQ_* variables; Debian's `jq` at /usr/bin/jq beside ours. A failing `jobq` command stops the
run; what the curl commands answered is checked in their output afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from readme.readme_blocks import Block, parse, script

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root for a private network namespace (unshare --net)"
    for tool in ("unshare", "ip", "curl"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not Path("/usr/bin/jq").exists():
        return "needs Debian's jq, the JSON tool (apt-get install jq; scripts/test.sh does)"
    return None


def test_every_block_is_run_or_skipped_for_a_reason() -> None:
    blocks = parse(README.read_text())
    shells = [b for b in blocks if b.language in ("bash", "sh")]
    assert all(b.runs or b.skip for b in shells)
    by_heading: dict[str, list[Block]] = {}
    for block in shells:
        by_heading.setdefault(block.heading, []).append(block)
    # What the issue names must run, not be marked away.
    named = ("Walkthrough with curl", "Crash demo", "CLI", "Two commands on a fresh machine")
    for heading in named:
        assert any(b.runs for b in by_heading[heading]), heading
    assert all(b.runs for b in by_heading["Walkthrough with curl"] + by_heading["Crash demo"])
    assert [b.background_url for b in shells if b.background_url] == [
        "http://127.0.0.1:8080/health"
    ]


def _ctrl_c_as_in_a_terminal() -> None:
    """Blocks marked "stop after Ns" end with Ctrl-C (SIGINT), as a reader would. A suite
    started in the background by a shell without job control (`bash .ci/run &`) inherits
    SIGINT ignored, and an ignored signal stays ignored through every exec: the stream the
    README shows (`curl -sN .../events`) then never stopped, and the test hung."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_readme_shell_blocks_run_as_written(tmp_path: Path) -> None:
    missing = _missing()
    if missing:
        pytest.skip(missing)
    # serve.sh installs nothing when the venv is current; make sure it is, here, so the run
    # below never reinstalls the venv it shares (a no-op when CI's test.sh just did it).
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "bootstrap.sh")],
        env={**os.environ, "JQ_EXTRAS": ""},
        check=True,
        timeout=600,
    )
    work = tmp_path / "repo"
    work.mkdir()
    for name in ("scripts", "examples", ".venv"):
        (work / name).symlink_to(ROOT / name)
    (tmp_path / "home").mkdir()
    (work / "readme.sh").write_text(script(parse(README.read_text())))
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": str(tmp_path / "home"),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
    }
    completed = subprocess.run(
        [
            "unshare",
            "--net",
            "--pid",
            "--fork",
            "--kill-child",
            "--",
            "bash",
            "-c",
            'ip link set lo up && exec bash "$0"',
            "readme.sh",
        ],  # fmt: skip
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=1100,
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-6000:]
    assert "::: every block ran" in completed.stderr
    # What the walkthrough (the ack's answer, then the job), the 405 and the chaos rounds showed.
    assert completed.stdout.count('"state":"ACKED"') == 2
    assert '"result":"processed successfully"' in completed.stdout
    assert '"code":"method_not_allowed"' in completed.stdout
    assert completed.stdout.count("result: ZERO LOSS ✓") == 2
    server_log = (work / "readme-background-0.log").read_text()
    assert "jq is up" in server_log and "Created admin key" in server_log
    assert "jq stopped: engine flushed and closed" in server_log  # SIGTERM at the end: drained
