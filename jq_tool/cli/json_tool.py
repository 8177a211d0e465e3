"""The name clash with jq, the JSON tool: when this program runs as `jq` with arguments that are
not ours, it hands the call to the JSON tool.

The design named the command `jq`; most machines already have the JSON tool by that name, and an
activated virtualenv puts ours first on PATH, so `curl … | jq .a` would reach us. So when we are
run as `jq` and the first argument is not one of our commands (a filter such as `.a`, an option
such as `-r`, a file), we look for another `jq` along PATH that is not this program and
`execv` it with the arguments unchanged: stdin, stdout, stderr and the exit code are its own. With
no argument at all the JSON tool is meant when stdin is not a terminal (`… | jq`). Where there is
no other `jq`, one line says so. Run as `jobq`, nothing is handed over.

Runs before the CLI is imported (no Typer, no SDK): handing over costs an interpreter start and
a PATH walk.
"""

from __future__ import annotations

import os
import sys

# Our top-level commands and options, as jq_tool/cli/main.py registers them (a test checks it).
OUR_COMMANDS = frozenset(
    {
        "serve",
        "submit",
        "lease",
        "ack",
        "release",
        "get",
        "list",
        "stats",
        "cancel",
        "requeue",
        "keys",
        "schedules",
        "queues",
        "worker",
        "chaos",
        "tui",
        "wal-inspect",
        "why",
        "dead",
        "workers",
        "history",
        "shards",
        "--help",
    }
)
EXIT_NO_JSON_TOOL = 2
# How our own `jq` looks from its first bytes (a pip console script) or last ones (a PyInstaller
# executable ends with its archive's cookie).
_SCRIPT_MARK = b"jq_tool"
_FROZEN_MARK = b"MEI\x0c\x0b\x0a\x0b\x0e"


def is_ours(args: list[str], *, stdin_is_terminal: bool) -> bool:
    """Whether a call of `jq` with `args` (argv without the program) is meant for us."""
    if not args:
        return stdin_is_terminal  # `… | jq` is the JSON tool's; `jq` alone shows our help
    return args[0] in OUR_COMMANDS


def _same_program(path: str, me: str) -> bool:
    if os.path.realpath(path) == me:
        return True
    try:
        with open(path, "rb") as program:
            head = program.read(4096)
            program.seek(0, os.SEEK_END)
            program.seek(max(0, program.tell() - 4096))
            tail = program.read()
    except OSError:
        return True  # unreadable: not something to hand a call to
    return _SCRIPT_MARK in head or _FROZEN_MARK in tail


def find_json_tool(directories: list[str], me: str) -> str | None:
    """The first `jq` in `directories` (PATH's) that is not this program (`me`, a real path)."""
    for directory in directories:
        candidate = os.path.join(directory or ".", "jq")
        if (
            os.path.isfile(candidate)
            and os.access(candidate, os.X_OK)
            and not _same_program(candidate, me)
        ):
            return candidate
    return None


def hand_over_if_not_ours(argv: list[str]) -> None:
    """Returns when the call is ours; otherwise execs the JSON tool or exits with a hint."""
    if os.path.basename(argv[0]) != "jq":
        return
    args = argv[1:]
    if is_ours(args, stdin_is_terminal=sys.stdin.isatty()):
        return
    me = os.path.realpath(sys.executable if getattr(sys, "frozen", False) else argv[0])
    json_tool = find_json_tool(os.get_exec_path(), me)
    if json_tool is not None:
        sys.stdout.flush()
        os.execv(json_tool, ["jq", *args])
    shown = args[0] if args else "(stdin)"
    sys.stderr.write(
        f"jq: {shown!r} is not a job queue command, and there is no other jq (the JSON tool) "
        "on PATH to hand it to: install it (apt-get install jq), or see `jobq --help`\n"
    )
    sys.exit(EXIT_NO_JSON_TOOL)
