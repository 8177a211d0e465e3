"""Process jobs with the jq SDK: a handler returns a result, returns Failure(...) or raises.

    JQ_URL=http://127.0.0.1:8080 JQ_KEY=worker_… python examples/worker.py
The same handler from the command line:
    jq worker examples.worker:handle --key worker_… --concurrency 8
Stop with Ctrl-C or SIGTERM: running jobs finish first.
"""

from __future__ import annotations

import json
import logging
import os

from jq_tool.sdk import Failure, LeasedJob, Success, Worker, WorkerOptions


def handle(job: LeasedJob) -> object:
    """Runs in one of the worker's threads; its lease is extended while it runs."""
    try:
        task = json.loads(job.payload)
    except ValueError:
        return f"echo: {job.payload}"  # a str result is stored as is
    if not isinstance(task, dict):
        return Failure("expected a JSON object")  # a failed attempt: retried, then DEAD
    if task.get("task") == "resize":
        return Success({"image": task.get("image"), "size": [64, 64]})  # stored as JSON
    raise ValueError(f"unknown task {task.get('task')!r}")  # the traceback becomes result_error


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    url = os.environ.get("JQ_URL", "http://127.0.0.1:8080")
    # For an https server with a private CA, add verify="/path/to/ca.pem".
    options = WorkerOptions(queue="default", concurrency=8, grace=30.0)
    worker = Worker(url, os.environ["JQ_KEY"], handle, options)
    worker.run()  # until SIGTERM / Ctrl-C
    print(f"done: {worker.counts}")


if __name__ == "__main__":
    main()
