"""`jq worker MODULE:FUNCTION` as a real process: it processes jobs, and on SIGTERM it stops
leasing, lets the running handlers finish and exits 0. Bad targets and keys exit 2 and 3."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sdk.jq_server_process import ServerProcess, wait_until

from jq_tool.sdk import Client, JobState

JQ_APP = Path(__file__).parent / "jq_app.py"

HANDLERS = """
import asyncio, os, pathlib, time

LOG = pathlib.Path(os.environ["JQ_TEST_LOG"])

def note(line):
    with LOG.open("a") as f:
        f.write(line + "\\n")

def handle(job):
    note("start " + job.payload)
    time.sleep(1.5)
    note("done " + job.payload)
    return "handled " + job.payload

def stuck(job):
    note("stuck " + job.payload)
    time.sleep(120)

async def handle_async(job):
    await asyncio.sleep(0.01)
    return {"async": job.payload}

from jq_tool.sdk import Snooze

def snooze_once(job):
    note("try " + job.payload)
    if len(LOG.read_text().splitlines()) == 1:
        return Snooze(0.2)
    return "after a snooze"
"""


@pytest.fixture
def handler_dir(tmp_path: Path) -> Path:
    (tmp_path / "test_handlers_mod.py").write_text(HANDLERS)
    return tmp_path


def start_worker(
    server: ServerProcess, cwd: Path, target: str, key: str, *args: str
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(JQ_APP), "worker", target, "--url", server.url, "--key", key, *args],
        cwd=cwd,
        env={"JQ_TEST_LOG": str(cwd / "handled.log"), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def stop_when(
    worker: subprocess.Popen[bytes], done: Callable[[], bool], signum: int = signal.SIGTERM
) -> bytes:
    """Wait until `done`, then send the worker `signum` and wait for it to exit; its output.
    A worker still running after that (the test failed) is killed."""
    try:
        wait_until(done)
        worker.send_signal(signum)
        output, _ = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    return output


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_sigterm_finishes_running_jobs_then_exits_0(
    jq_server: ServerProcess, handler_dir: Path, queue: str
) -> None:
    log = handler_dir / "handled.log"
    with Client(jq_server.url, jq_server.client_key) as client:
        ids = [client.submit(name, queue=queue) for name in ("one", "two")]
        worker = start_worker(
            jq_server, handler_dir, "test_handlers_mod:handle", jq_server.worker_key,
            "--queue", queue, "--concurrency", "2", "--wait", "1s",
        )  # fmt: skip

        def both_started() -> bool:
            return len([x for x in lines(log) if x.startswith("start")]) == 2

        output = stop_when(worker, both_started)
        assert worker.returncode == 0, output.decode()
        assert sorted(lines(log)) == ["done one", "done two", "start one", "start two"]
        assert [client.get(i).result for i in ids] == ["handled one", "handled two"]
        later = client.submit("after the worker left", queue=queue)
        assert client.get(later).state is JobState.READY
        assert jq_server.worker_key not in output.decode()  # secrets never in logs


def test_async_handler_runs_on_an_async_worker(
    jq_server: ServerProcess, handler_dir: Path, queue: str
) -> None:
    with Client(jq_server.url, jq_server.client_key) as client:
        job_id = client.submit("a", queue=queue)
        worker = start_worker(
            jq_server, handler_dir, "test_handlers_mod:handle_async", jq_server.worker_key,
            "--queue", queue, "--wait", "1s",
        )  # fmt: skip
        stop_when(worker, lambda: client.get(job_id).finished, signal.SIGINT)
        assert worker.returncode == 0
        assert client.get(job_id).result == '{"async":"a"}'


def test_a_snoozing_handler_logs_it_and_its_job_runs_again(
    jq_server: ServerProcess, handler_dir: Path, queue: str
) -> None:
    with Client(jq_server.url, jq_server.client_key) as client:
        job_id = client.submit("s", queue=queue, max_retries=0)
        worker = start_worker(
            jq_server, handler_dir, "test_handlers_mod:snooze_once", jq_server.worker_key,
            "--queue", queue, "--wait", "1s",
        )  # fmt: skip
        output = stop_when(worker, lambda: client.get(job_id).finished)
        job = client.get(job_id)
        assert (job.state, job.result, job.attempts) == (JobState.ACKED, "after a snooze", 1)
        assert lines(handler_dir / "handled.log") == ["try s", "try s"]
        text = output.decode()
        snoozed = r"attempt=1/1 snoozed in \d+ms, back in 0.2s \(attempt not counted\)"
        assert re.search(snoozed, text), text
        assert "attempt=1/1 ok" in text, text


def test_bad_target_and_bad_key(jq_server: ServerProcess, handler_dir: Path) -> None:
    for target in ("no_such_module:handle", "test_handlers_mod:missing", "no-colon"):
        worker = start_worker(jq_server, handler_dir, target, jq_server.worker_key)
        output, _ = worker.communicate(timeout=30)
        assert worker.returncode == 2, output.decode()
    # A client key may not lease: the worker says so and exits 3 instead of retrying forever.
    worker = start_worker(
        jq_server, handler_dir, "test_handlers_mod:handle", jq_server.client_key, "--wait", "1s"
    )
    output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 3, output.decode()
    assert "jobs:lease" in output.decode()


def test_grace_period_over_exits_anyway(
    jq_server: ServerProcess, handler_dir: Path, queue: str
) -> None:
    log = handler_dir / "handled.log"
    with Client(jq_server.url, jq_server.client_key) as client:
        job_id = client.submit("forever", queue=queue)
        worker = start_worker(
            jq_server, handler_dir, "test_handlers_mod:stuck", jq_server.worker_key,
            "--queue", queue, "--wait", "1s", "--grace", "1s",
        )  # fmt: skip
        output = stop_when(worker, lambda: lines(log) == ["stuck forever"])
        assert worker.returncode == 0
        assert "grace period" in output.decode()
        # Not settled: its lease runs out on the server and the job is retried.
        assert client.get(job_id).state is JobState.RUNNING
