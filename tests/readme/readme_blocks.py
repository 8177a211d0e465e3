"""The README's shell blocks as one script that runs them in order, as written.

A fenced block tagged `bash` or `sh` runs; an HTML comment on the line right before its fence
says otherwise, so that README.md itself decides, in the open, what CI does not run:

    <!-- readme-test: skip: <why> -->           not run (a reason is required)
    <!-- readme-test: background until <url> --> started in the background (a server), then
                                                  waited for until <url> answers 200
    <!-- readme-test: stop after <N>s -->        runs until Ctrl-C (a worker, a stream): after N
                                                  seconds it gets SIGINT, as from a terminal, and
                                                  must end with 0 or 130

Blocks share one shell, like a reader's terminal, so variables carry over. The script stops at
the first command that fails (`set -euo pipefail`); each block announces its README line first,
so a failure names it. `python -m tests.readme.readme_blocks README.md` prints the script.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

_FENCE = re.compile(r"^```\s*([\w-]*)\s*$")
_MARKER = re.compile(r"^<!--\s*readme-test:\s*(.*?)\s*-->$")
_BACKGROUND = re.compile(r"^background until (\S+)$")
_STOP_AFTER = re.compile(r"^stop after (\d+(?:\.\d+)?)s$")
SHELLS = ("bash", "sh")


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    heading: str  # the nearest heading above it
    language: str
    text: str
    skip: str | None = None  # the reason
    background_url: str | None = None
    stop_after_s: float | None = None

    @property
    def runs(self) -> bool:
        return self.language in SHELLS and self.skip is None


class MarkerError(ValueError):
    """A readme-test marker that does not parse: a typo must not silently skip a block."""


def parse(markdown: str) -> list[Block]:
    blocks: list[Block] = []
    lines = markdown.splitlines()
    heading = ""
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        fence = _FENCE.match(line)
        if not fence:
            index += 1
            continue
        start = index
        index += 1
        body: list[str] = []
        while index < len(lines) and not lines[index].startswith("```"):
            body.append(lines[index])
            index += 1
        index += 1  # the closing fence
        marker = _directive(lines, start)
        blocks.append(_block(start + 1, heading, fence.group(1), "\n".join(body), marker))
    return blocks


def _directive(lines: list[str], fence_index: int) -> str | None:
    before = fence_index - 1
    if before < 0:
        return None
    found = _MARKER.match(lines[before].strip())
    if found:
        return found.group(1)
    if "readme-test" in lines[before]:
        raise MarkerError(f"line {before + 1}: not a readme-test marker: {lines[before]!r}")
    return None


def _block(line: int, heading: str, language: str, text: str, marker: str | None) -> Block:
    if marker is None:
        return Block(line, heading, language, text)
    if marker.startswith("skip:") and marker[5:].strip():
        return Block(line, heading, language, text, skip=marker[5:].strip())
    if background := _BACKGROUND.match(marker):
        return Block(line, heading, language, text, background_url=background.group(1))
    if stop := _STOP_AFTER.match(marker):
        return Block(line, heading, language, text, stop_after_s=float(stop.group(1)))
    raise MarkerError(f"line {line - 1}: unknown readme-test marker {marker!r}")


def script(blocks: list[Block]) -> str:
    """One bash script running every block that runs, in order."""
    out = [
        "set -euo pipefail",
        "set -m  # job control: a background block gets its own process group, as in a terminal",
        "background=()",
        "stop_background() {",
        '  for pid in "${background[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done',
        '  for pid in "${background[@]}"; do wait "$pid" 2>/dev/null || true; done',
        "}",
        "trap stop_background EXIT",
    ]
    for number, block in enumerate(b for b in blocks if b.runs):
        where = f"README.md line {block.line} ({block.heading})"
        out.append(f"echo {shlex.quote(f'::: block {number}: {where}')} >&2")
        if block.background_url is not None:
            log = f"readme-background-{number}.log"
            out += [
                f"( {block.text}\n) > {log} 2>&1 &",
                "background+=($!)",
                "for _ in $(seq 600); do",
                f"  curl -sf {shlex.quote(block.background_url)} > /dev/null && break",
                '  kill -0 "$!" 2>/dev/null || { cat ' + log + " >&2; exit 1; }",
                "  sleep 0.1",
                "done",
                f"curl -sf {shlex.quote(block.background_url)} > /dev/null",
            ]
        elif block.stop_after_s is not None:
            out += [
                f"( {block.text}\n) &",
                "pid=$!",
                f"sleep {block.stop_after_s:g}",
                'kill -INT -- "-$pid"',
                'status=0; wait "$pid" || status=$?',
                'if [ "$status" != 0 ] && [ "$status" != 130 ]; then',
                f'  echo "::: {where} ended with $status after Ctrl-C" >&2; exit 1',
                "fi",
            ]
        else:
            out.append(block.text)
    out.append("echo '::: every block ran' >&2")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(script(parse(Path(sys.argv[1]).read_text())))
