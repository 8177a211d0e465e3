"""`jq worker` settles with batch acks by default: a real `jq worker` process (the console
entry) behind a counting proxy processes every job with POST /jobs/ack and its lease_next, and
never the one-job ack route."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sdk.counting_proxy import CountingProxy
from sdk.jq_server_process import ServerProcess, wait_until

from jq_tool.sdk import Client, JobState

HANDLER = """
def handle(job):
    return "handled " + job.payload
"""


@pytest.fixture
def proxy(jq_server: ServerProcess) -> Iterator[CountingProxy]:
    counting = CountingProxy(jq_server.port)
    yield counting
    counting.close()


def test_jq_worker_acks_in_batches_by_default(
    jq_server: ServerProcess, proxy: CountingProxy, tmp_path: Path, queue: str
) -> None:
    (tmp_path / "batch_handlers_mod.py").write_text(HANDLER)
    with Client(jq_server.url, jq_server.client_key) as client:
        ids = [r.job_id or "" for r in client.submit_many([{"payload": "p", "queue": queue}] * 60)]
        worker = subprocess.Popen(
            [sys.executable, "-m", "jq_tool.cli.main", "worker", "batch_handlers_mod:handle",
             "--url", proxy.url, "--key", jq_server.worker_key or "", "--queue", queue,
             "--concurrency", "8", "--wait", "1s"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_until(
                lambda: all(client.get(job_id).state is JobState.ACKED for job_id in ids),
                timeout=60,
            )
            worker.send_signal(signal.SIGTERM)
            output, _ = worker.communicate(timeout=30)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert worker.returncode == 0, output.decode(errors="replace")
    assert proxy.requests["POST /jobs/ack"] > 0
    assert proxy.requests["POST /jobs/{id}/ack"] == 0
