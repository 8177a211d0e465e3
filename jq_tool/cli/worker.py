"""`jq worker MODULE:FUNCTION`: run an SDK Worker around a handler function from the command
line. A plain function runs in a thread pool; an `async def` runs on an AsyncWorker. SIGTERM or
SIGINT stops leasing and lets in-flight jobs finish within the grace period.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from jq_tool.cli.options import KeyOption, QueueOption, UrlOption, duration_option
from jq_tool.cli.output import EXIT_AUTH, EXIT_USAGE, exit_code_for, fail
from jq_tool.sdk import (
    DEFAULT_URL,
    AsyncWorker,
    Forbidden,
    JqError,
    Unauthorized,
    Worker,
    WorkerOptions,
)


def load_handler(target: str) -> Callable[..., Any]:
    """The function named by MODULE:FUNCTION, importable from the current directory."""
    module_name, _, function_name = target.partition(":")
    if not module_name or not function_name:
        raise ValueError(f"expected MODULE:FUNCTION, got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from exc
    handler: Any = module
    for part in function_name.split("."):
        handler = getattr(handler, part, None)
        if handler is None:
            raise ValueError(f"{module_name!r} has no {function_name!r}")
    if not callable(handler):
        raise ValueError(f"{target!r} is not callable")
    return handler


def worker(
    target: Annotated[str, typer.Argument(metavar="MODULE:FUNCTION", help="The job handler.")],
    queue: QueueOption = "default",
    concurrency: Annotated[int, typer.Option(min=1, max=1000, help="Jobs at once.")] = 4,
    lease_ms: Annotated[
        int | None, typer.Option(min=1000, help="Lease length in ms.", show_default=False)
    ] = None,
    wait: Annotated[
        float, duration_option("Long-poll length per lease request.", default="10s")
    ] = 10.0,
    grace: Annotated[
        float, duration_option("At shutdown, wait this long for jobs.", default="30s")
    ] = 30.0,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING.")] = "INFO",
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
) -> None:
    """Process jobs with MODULE:FUNCTION until SIGTERM/SIGINT."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        handler = load_handler(target)
        options = WorkerOptions(
            queue=queue, concurrency=concurrency, lease_ms=lease_ms, poll_wait=wait, grace=grace
        )
        if inspect.iscoroutinefunction(handler):
            async_worker = AsyncWorker(url, key, handler, options)
            logging.info("worker on %s queue %r (async, %d at once)", url, queue, concurrency)
            asyncio.run(async_worker.run(install_signal_handlers=True))
        else:
            sync_worker = Worker(url, key, handler, options)
            logging.info("worker on %s queue %r (%d threads)", url, queue, concurrency)
            sync_worker.run(install_signal_handlers=True)
            if sync_worker.handlers_running:
                # Threads cannot be stopped, and the interpreter would wait for them at exit.
                logging.warning("handlers still running after the grace period: exiting anyway")
                logging.shutdown()
                os._exit(0)
    except (Unauthorized, Forbidden) as exc:
        fail(str(exc), EXIT_AUTH, as_json=False)
    except JqError as exc:
        fail(str(exc), exit_code_for(exc), as_json=False)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE, as_json=False)
    logging.info("worker stopped")


def register(app: typer.Typer) -> None:
    """Add `jq worker` to the root app."""
    app.command("worker")(worker)
