"""`jq worker MODULE:FUNCTION`: run an SDK Worker around a handler function from the command
line. A plain function runs in a thread pool; an `async def` runs on an AsyncWorker. SIGTERM or
SIGINT stops leasing and lets in-flight jobs finish within the grace period.

It logs under its own logger, `jq.worker`: one line when it starts and stops, and one line per
job when its handler returns (id, queue, attempt, outcome, duration), e.g.
`job 3f2a… queue=default attempt=1/4 ok in 12ms`, `… failed in 3ms, will retry: ValueError: …`
or `… snoozed in 2ms, back in 30s (attempt not counted)`.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer

from jq_tool.cli.options import KeyOption, QueueOption, UrlOption, duration_option
from jq_tool.cli.output import EXIT_AUTH, EXIT_USAGE, NO_KEY, describe, exit_code_for, fail
from jq_tool.sdk import (
    DEFAULT_URL,
    AsyncWorker,
    Failure,
    JqError,
    LeasedJob,
    Snooze,
    Worker,
    WorkerOptions,
)
from jq_tool.terminal_text import terminal_safe

log = logging.getLogger("jq.worker")


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


def _outcome(job: LeasedJob, value: object, error: BaseException | None) -> tuple[str, str]:
    """What became of the attempt, as the worker will report it to the server: what happened,
    and what comes of it (empty for an ack)."""
    if error is None and isinstance(value, Snooze):
        delay = value.delay if isinstance(value.delay, int | float) else value.delay.total_seconds()
        return "snoozed", f"back in {delay:g}s (attempt not counted)"
    if error is None and not isinstance(value, Failure):
        return "ok", ""
    if error is not None:
        why = f"{type(error).__name__}: {error}"
    else:
        assert isinstance(value, Failure)
        why = value.error
    # The handler's words may quote a payload: anyone's text, printed on the worker's terminal.
    why = terminal_safe(why.strip().splitlines()[0][:200]) if why.strip() else "no reason given"
    if isinstance(value, Failure) and not value.retry:
        return "failed", f"final (DEAD): {why}"
    if job.attempt > job.max_retries:
        return "failed", f"retries spent (DEAD): {why}"
    return "failed", f"will retry: {why}"


def _log_job(job: LeasedJob, started: float, value: object, error: BaseException | None) -> None:
    # The duration right after what happened: "failed, will retry in 3ms" read as the retry's
    # delay, which the worker does not know (the server's backoff decides it).
    took_ms = (time.monotonic() - started) * 1000
    happened, consequence = _outcome(job, value, error)
    log.info(
        "job %s queue=%s attempt=%d/%d %s in %.0fms%s",
        job.job_id,
        job.queue,
        job.attempt,
        job.max_retries + 1,
        happened,
        took_ms,
        f", {consequence}" if consequence else "",
    )


def logged(handler: Callable[..., Any]) -> Callable[..., Any]:
    """`handler`, logging one line per job it handles (async stays async)."""
    if inspect.iscoroutinefunction(handler):

        @functools.wraps(handler)
        async def run_async(job: LeasedJob) -> Any:
            started = time.monotonic()
            try:
                value = await handler(job)
            except Exception as exc:
                _log_job(job, started, None, exc)
                raise
            _log_job(job, started, value, None)
            return value

        return run_async

    @functools.wraps(handler)
    def run(job: LeasedJob) -> Any:
        started = time.monotonic()
        try:
            value = handler(job)
        except Exception as exc:
            _log_job(job, started, None, exc)
            raise
        _log_job(job, started, value, None)
        return value

    return run


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
    worker_id: Annotated[
        str | None,
        typer.Option(
            help="The id sent with lease requests (jq workers); default hostname:pid:random.",
            show_default=False,
        ),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
) -> None:
    """Process jobs with MODULE:FUNCTION until SIGTERM/SIGINT; one log line per job."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not key:
        fail(NO_KEY, EXIT_AUTH, as_json=False)
    try:
        handler = load_handler(target)
        options = WorkerOptions(
            queue=queue,
            concurrency=concurrency,
            lease_ms=lease_ms,
            poll_wait=wait,
            grace=grace,
            worker_id=worker_id,
        )
        if inspect.iscoroutinefunction(handler):
            async_worker = AsyncWorker(url, key, logged(handler), options)
            log.info(
                "worker %s on %s queue %r (async, %d at once)",
                async_worker.worker_id,
                url,
                queue,
                concurrency,
            )
            asyncio.run(async_worker.run(install_signal_handlers=True))
        else:
            sync_worker = Worker(url, key, logged(handler), options)
            log.info(
                "worker %s on %s queue %r (%d threads)",
                sync_worker.worker_id,
                url,
                queue,
                concurrency,
            )
            sync_worker.run(install_signal_handlers=True)
            if sync_worker.handlers_running:
                # Threads cannot be stopped, and the interpreter would wait for them at exit.
                log.warning("handlers still running after the grace period: exiting anyway")
                logging.shutdown()
                os._exit(0)
    except JqError as exc:
        fail(describe(exc, url), exit_code_for(exc), as_json=False)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE, as_json=False)
    log.info("worker stopped")


def register(app: typer.Typer) -> None:
    """Add `jq worker` to the root app."""
    app.command("worker")(worker)
