"""A submit cut off by kill -9 between its WAL record and its answer, with real processes.

The test watches the server's newest WAL segment and freezes the server (SIGSTOP) the moment
the record lands in the file, checks that no answer got out, then SIGKILLs it and starts it
again: the record is in the file (the page cache outlives the process), so the job exists after
the restart, while the client only saw its connection die. The SDK retries the submit with the
idempotency key it sent the first time, and gets that job: exactly one. The same cut-off with a
client that retries without a key (as the HTTP clients of issue 22 did) makes two jobs, which is
what the key is for, and shows the check can fail."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from jq_tool.sdk import Client
from tests.conftest import JqServer

ROUNDS = 20  # tries to catch the window between the WAL write and the answer


def _segment_fingerprint(data_dir: Path) -> tuple[str, int, int]:
    newest = max(data_dir.glob("*.wal"))
    stat = newest.stat()
    return newest.name, stat.st_size, stat.st_mtime_ns


def _recovered_jobs(server: JqServer) -> int:
    found = re.findall(r"recovered (\d+) jobs", server.log())
    assert found, server.log()[-2000:]
    return int(found[-1])


def _cut_off(server: JqServer, send: Callable[[], None]) -> bool:
    """Run `send` in a thread; kill -9 the server once the WAL grew and before any answer got
    out, then restart it. False (server left running) when the answer beat the freeze."""
    assert server.proc is not None
    before = _segment_fingerprint(server.data_dir)
    thread = threading.Thread(target=send)
    thread.start()
    deadline = time.monotonic() + 10
    while _segment_fingerprint(server.data_dir) == before:
        assert time.monotonic() < deadline, "the submit never reached the WAL"
    os.kill(server.proc.pid, signal.SIGSTOP)
    thread.join(0.2)
    if not thread.is_alive():
        os.kill(server.proc.pid, signal.SIGCONT)
        return False
    server.kill9()
    server.start()
    thread.join(60)
    assert not thread.is_alive()
    return True


def _queue_job_ids(server: JqServer, queue: str) -> list[str]:
    with Client(server.url, server.client_key) as client:
        return [job.job_id for job in client.list(queue=queue).jobs]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[JqServer]:
    server = JqServer(tmp_path / "data").start()
    yield server
    server.close()


def test_sdk_retry_of_a_cut_off_submit_makes_exactly_one_job(server: JqServer) -> None:
    jobs_before = 0
    for attempt in range(ROUNDS):
        queue = f"sdk-{attempt}"
        answer: dict[str, object] = {}

        def send(answer: dict[str, object] = answer, queue: str = queue) -> None:
            with Client(
                server.url, server.client_key, retries=60, backoff=0.05, max_backoff=0.5
            ) as client:
                answer["job_id"] = client.submit("cut off", queue=queue)

        if _cut_off(server, send):
            break
        jobs_before += 1  # the answer got out: one ordinary job, try again
    else:
        pytest.fail(f"no answer was ever caught between the WAL write and the reply in {ROUNDS}")
    # The record was in the file before the kill: recovery found the job ...
    assert _recovered_jobs(server) == jobs_before + 1
    # ... and the SDK's retry, with the key of its first try, got that job instead of a second.
    assert _queue_job_ids(server, queue) == [answer["job_id"]]


def test_a_keyless_retry_of_a_cut_off_submit_makes_two_jobs(server: JqServer) -> None:
    for attempt in range(ROUNDS):
        queue = f"bare-{attempt}"

        def send(queue: str = queue) -> None:
            # A bare HTTP client: retries on a broken connection, sends no key.
            for _ in range(600):
                try:
                    response = httpx.post(
                        server.url + "/jobs",
                        json={"payload": "cut off", "queue": queue},
                        headers={"Authorization": f"Bearer {server.client_key}"},
                        timeout=10,
                    )
                except httpx.HTTPError:
                    time.sleep(0.05)
                    continue
                if response.status_code == 201:
                    return

        if _cut_off(server, send):
            break
    else:
        pytest.fail(f"no answer was ever caught between the WAL write and the reply in {ROUNDS}")
    assert len(_queue_job_ids(server, queue)) == 2
