"""The packaged `jq` executable, tested by running it.

`packaging/smoke_test.sh` drives a `jq` executable through serve, submit, lease, ack, get, the
dashboard, wal-inspect and `tui --help`. It runs here against the venv's own `jq` console script
(fast: it proves the script and the CLI agree) and, marked slow, against the one-file binary
that `packaging/build_binary.sh` builds with PyInstaller.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "packaging" / "build_binary.sh"
SMOKE = ROOT / "packaging" / "smoke_test.sh"
VENV_JQ = Path(sys.executable).parent / "jq"


def smoke(binary: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SMOKE), str(binary)], capture_output=True, text=True, timeout=180
    )


def test_scripts_are_valid_bash() -> None:
    for script in (BUILD, SMOKE):
        check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, f"{script.name}: {check.stderr}"
        assert os.access(script, os.X_OK), f"{script.name} is not executable"


def test_smoke_test_rejects_a_missing_binary(tmp_path: Path) -> None:
    run = smoke(tmp_path / "no-such-jq")
    assert run.returncode == 2
    assert "not an executable file" in run.stderr


def test_smoke_test_passes_on_the_venv_console_script() -> None:
    run = smoke(VENV_JQ)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().endswith("smoke test passed")
    # The smoke test never echoes a secret, not even on the way to success.
    assert "client_" not in run.stdout.replace("client_key", "")


@pytest.mark.slow
def test_one_file_binary_builds_and_passes_the_smoke_test(tmp_path: Path) -> None:
    env = dict(os.environ, VENV=str(Path(sys.executable).parent.parent))
    env.update(DIST=str(tmp_path / "dist"), WORK=str(tmp_path / "work"))
    build = subprocess.run(
        ["bash", str(BUILD)], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT
    )
    assert build.returncode == 0, build.stderr[-4000:]
    binary = Path(build.stdout.strip().splitlines()[-1])
    assert binary == tmp_path / "dist" / "jq"
    assert binary.is_file() and os.access(binary, os.X_OK)

    version = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0, version.stderr
    assert "serve" in version.stdout

    run = smoke(binary)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().endswith("smoke test passed")
