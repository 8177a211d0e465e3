"""The frozen binary's entry point: the one place that knows it runs inside PyInstaller.

It calls `multiprocessing.freeze_support()` before anything else imports, because a frozen
executable re-runs itself for every child process (uvicorn `--workers > 1` spawns them) and
without this the child would start a second CLI instead of the worker it was asked to be.
Everything after that is the same Typer app the `jq` console script runs.
"""

from __future__ import annotations

import multiprocessing
import sys


def run() -> None:
    """Start the `jq` CLI inside the frozen binary."""
    multiprocessing.freeze_support()
    from jq_tool.cli.main import main

    main()
    sys.exit(0)


if __name__ == "__main__":
    run()
