"""Run as `jq` with arguments that are not ours, the program hands the call to jq the JSON tool
(Debian's /usr/bin/jq here) further along PATH, unchanged: same stdout, stderr and exit code as
calling it directly. Our commands stay ours; `jobq` never hands anything over; with no other
`jq` on PATH, one line says what to do."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jq_tool.cli.json_tool import OUR_COMMANDS
from jq_tool.cli.main import build_app

VENV_BIN = Path(sys.executable).parent
OURS = VENV_BIN / "jq"
JSON_TOOL = Path("/usr/bin/jq")

needs_json_tool = pytest.mark.skipif(
    not JSON_TOOL.exists(), reason="needs Debian's jq (apt-get install jq; scripts/test.sh does)"
)


def run(
    program: Path, *args: str, stdin: str = "", path: str = f"{VENV_BIN}:/usr/bin:/bin"
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(program), *args],
        input=stdin.encode(),
        capture_output=True,
        timeout=60,
        env={"PATH": path, "HOME": "/nonexistent"},
    )


CASES = [
    ((".a",), '{"a": [1, 2]}'),
    (("-r", ".name"), '{"name": "raw text"}'),
    (("-c", "."), '{"b": 1, "a": {"c": null}}'),
    (("-e", ".missing"), "{}"),  # exit 1: -e with a null result
    ((".",), "not json"),  # a parse error and its exit code
    ((), '{"piped": true}'),  # no filter, stdin not a terminal: the JSON tool's `.`
    (("--arg", "x", "1", "$x"), "null"),
    (("-n", "1 + 1"), ""),
]


@needs_json_tool
@pytest.mark.parametrize(("args", "stdin"), CASES)
def test_calls_that_are_not_ours_reach_the_json_tool_unchanged(
    args: tuple[str, ...], stdin: str
) -> None:
    direct = run(JSON_TOOL, *args, stdin=stdin)
    handed = run(OURS, *args, stdin=stdin)
    assert (handed.returncode, handed.stdout, handed.stderr) == (
        direct.returncode,
        direct.stdout,
        direct.stderr,
    )


@needs_json_tool
def test_a_file_argument(tmp_path: Path) -> None:
    document = tmp_path / "doc.json"
    document.write_text('{"a": {"b": 42}}')
    assert run(OURS, ".a.b", str(document)).stdout == b"42\n"


@needs_json_tool
def test_other_copies_of_ours_on_path_are_skipped(tmp_path: Path) -> None:
    copy_dir, link_dir = tmp_path / "copy", tmp_path / "link"
    copy_dir.mkdir()
    link_dir.mkdir()
    shutil.copy(OURS, copy_dir / "jq")  # another venv's console script
    (link_dir / "jq").symlink_to(OURS)
    path = f"{VENV_BIN}:{copy_dir}:{link_dir}:/usr/bin:/bin"
    handed = run(OURS, ".a", stdin='{"a": 7}', path=path)
    assert handed.returncode == 0 and handed.stdout.strip() == b"7", handed.stderr


def test_our_commands_stay_ours() -> None:
    helped = run(OURS, "--help")
    assert helped.returncode == 0 and b"job queue" in helped.stdout and b"submit" in helped.stdout
    refused = run(OURS, "stats", "--url", "http://127.0.0.1:1", "--key", "client_x")
    assert refused.returncode == 4  # our stats, not the JSON tool's error


def test_without_a_json_tool_one_line_says_so(tmp_path: Path) -> None:
    alone = run(OURS, ".a", stdin="{}", path=str(VENV_BIN))
    assert alone.returncode == 2 and alone.stdout == b""
    lines = alone.stderr.decode().splitlines()
    assert len(lines) == 1 and "'.a'" in lines[0] and "apt-get install jq" in lines[0]


@needs_json_tool
def test_jobq_never_hands_over() -> None:
    result = run(VENV_BIN / "jobq", ".a", stdin='{"a": 1}')
    assert result.returncode == 2 and result.stdout == b""
    assert b"No such command" in result.stderr


def test_our_command_list_matches_the_app() -> None:
    app = build_app()
    names = {command.name for command in app.registered_commands}
    names |= {group.name for group in app.registered_groups}
    assert names | {"--help"} == OUR_COMMANDS
