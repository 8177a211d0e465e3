"""Worker and AsyncWorker against a real `jq serve`: concurrency, results, failures with
tracebacks through RETRY to DEAD, lease extension of a slow job, and a server kill -9 in the
middle of work after which every job is ACKED exactly once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest

from jq_tool.sdk import (
    AsyncWorker,
    Client,
    Failure,
    JobState,
    LeasedJob,
    Success,
    Worker,
    WorkerOptions,
)
from jq_tool.sdk.times import utc_now
from jq_tool.sdk.worker import handler_outcome
from sdk.jq_server_process import ServerProcess, wait_until


def run_in_thread(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return thread


def run_until(worker: Worker, done: Callable[[], bool], timeout: float = 20.0) -> threading.Thread:
    """Run `worker` in a thread until `done()`, then stop it and wait for its thread."""
    thread = run_in_thread(worker)
    try:
        wait_until(done, timeout=timeout)
    finally:
        worker.stop()
        thread.join(10)
    return thread


def all_finished(client: Client, queue: str, count: int) -> bool:
    jobs = list(client.iter_jobs(queue=queue))
    return len(jobs) == count and all(job.finished for job in jobs)


def test_handler_outcomes() -> None:
    assert handler_outcome("text") == ("text", None)
    assert handler_outcome({"a": [1]}) == ('{"a":[1]}', None)
    assert handler_outcome(None) == (None, None)
    assert handler_outcome(Success("fine")) == ("fine", None)
    assert handler_outcome(Success(3)) == ("3", None)
    assert handler_outcome(Failure("nope")) == (None, "nope")
    assert handler_outcome(object())[0] is not None  # str() of the unencodable


def test_the_lease_length_comes_from_the_server_not_this_clock() -> None:
    """The lease keeper extends every third of the lease. Read from lease_until against this
    machine's clock, a clock 10 minutes behind the server's made a 30 s lease look like 10.5
    minutes: the first extension came long after the lease had expired."""
    worker = Worker("http://127.0.0.1:1", "k", print)
    skewed = utc_now() + timedelta(minutes=10, seconds=30)
    job = LeasedJob(job_id="j", payload="", lease_until=skewed, attempt=1, lease_ms=30_000)
    assert worker._lease_seconds(job) == 30.0
    older = msgspec.structs.replace(job, lease_ms=None)  # a server before lease_ms
    assert 600 < worker._lease_seconds(older) <= 630


def test_worker_arguments_are_checked() -> None:
    async def coroutine_handler(job: LeasedJob) -> None:
        return None

    with pytest.raises(ValueError, match="AsyncWorker"):
        Worker("http://127.0.0.1:1", "k", coroutine_handler)
    with pytest.raises(ValueError):
        Worker("http://127.0.0.1:1", "k", print, WorkerOptions(concurrency=0))
    with pytest.raises(ValueError):
        Worker("http://127.0.0.1:1", "k", print, WorkerOptions(lease_ms=10))


def test_worker_processes_jobs_concurrently(jq_server: ServerProcess, queue: str) -> None:
    executions: Counter[str] = Counter()
    lock = threading.Lock()
    running = 0
    most_at_once = 0

    def handler(job: LeasedJob) -> str:
        nonlocal running, most_at_once
        with lock:
            executions[job.job_id] += 1
            running += 1
            most_at_once = max(most_at_once, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return job.payload.upper()

    with Client(jq_server.url, jq_server.client_key) as client:
        ids = [
            r.job_id
            for r in client.submit_many([{"payload": f"p{i}", "queue": queue} for i in range(40)])
        ]
        worker = Worker(
            jq_server.url,
            jq_server.worker_key,
            handler,
            WorkerOptions(queue=queue, concurrency=4, poll_wait=1.0),
        )
        thread = run_until(worker, lambda: all_finished(client, queue, 40))
        assert not thread.is_alive()
        for index, job_id in enumerate(ids):
            job = client.get(job_id or "")
            assert job.state is JobState.ACKED and job.result == f"P{index}"
    assert set(executions.values()) == {1}
    assert 1 < most_at_once <= 4
    assert worker.counts.acked == 40 and worker.counts.lost == 0


def test_failures_retry_then_die_with_the_traceback(jq_server: ServerProcess, queue: str) -> None:
    attempts: Counter[str] = Counter()

    def handler(job: LeasedJob) -> object:
        attempts[job.payload] += 1
        if job.payload == "explicit":
            return Failure("declined")
        raise RuntimeError(f"broken attempt {job.attempt}")

    with Client(jq_server.url, jq_server.client_key) as client:
        raising = client.submit("raise", max_retries=1, queue=queue)
        explicit = client.submit("explicit", max_retries=0, queue=queue)
        worker = Worker(
            jq_server.url,
            jq_server.worker_key,
            handler,
            WorkerOptions(queue=queue, concurrency=2, poll_wait=1.0),
        )
        run_until(worker, lambda: all_finished(client, queue, 2))
        dead = client.get(raising)
        assert dead.state is JobState.DEAD and dead.attempts == 2
        assert dead.result_error is not None
        assert "Traceback (most recent call last)" in dead.result_error
        assert "RuntimeError: broken attempt 2" in dead.result_error
        declined = client.get(explicit)
        assert declined.state is JobState.DEAD and declined.result_error == "declined"
    assert attempts == {"raise": 2, "explicit": 1}
    assert worker.counts.failed == 3


def _raise_from_a_helper(job: LeasedJob) -> None:
    raise RuntimeError(f"broken {job.payload}")


@pytest.mark.parametrize("kind", ["threads", "async"])
def test_a_traceback_begins_at_the_handler(jq_server: ServerProcess, queue: str, kind: str) -> None:
    """The job's error is the handler's traceback: the worker's own frames above it (its task,
    the thread pool's hand-off) are noise on every job, and bytes of its bounded error text."""

    def handler(job: LeasedJob) -> None:
        _raise_from_a_helper(job)

    async def async_handler(job: LeasedJob) -> None:
        await asyncio.sleep(0)
        _raise_from_a_helper(job)

    options = WorkerOptions(queue=queue, concurrency=1, poll_wait=1.0)
    with Client(jq_server.url, jq_server.client_key) as client:
        job_id = client.submit(kind, max_retries=0, queue=queue)
        if kind == "threads":
            worker = Worker(jq_server.url, jq_server.worker_key, handler, options)
            run_until(worker, lambda: client.get(job_id).finished)
        else:
            aworker = AsyncWorker(jq_server.url, jq_server.worker_key, async_handler, options)

            async def run_until_dead() -> None:
                task = asyncio.create_task(aworker.run())
                while not client.get(job_id).finished:
                    await asyncio.sleep(0.05)
                aworker.stop()
                await task

            asyncio.run(run_until_dead())
        error = client.get(job_id).result_error
    assert error is not None
    lines = error.splitlines()
    assert lines[0] == "Traceback (most recent call last):", error
    assert lines[1].startswith(f'  File "{__file__}"') and "handler" in lines[1], error
    assert lines[-1] == f"RuntimeError: broken {kind}", error
    assert "_raise_from_a_helper" in error
    assert "jq_tool" not in error and "concurrent" not in error, error


@pytest.mark.parametrize("batch_ack", [True, False])
def test_text_json_cannot_carry_is_settled_not_lost(
    jq_server: ServerProcess, queue: str, batch_ack: bool
) -> None:
    """A non-UTF-8 file name, decoded with surrogateescape (os.listdir, sys.argv), in an
    exception's message or a handler's result: the settle request could not be encoded, so the
    job waited for its lease to expire ("lease expired" instead of its traceback) and, with
    batched acks, every job settled in the same request was lost with it."""
    name = b"caf\xe9.txt".decode("utf-8", "surrogateescape")

    def handler(job: LeasedJob) -> object:
        if job.payload == "raise":
            raise FileNotFoundError(f"no such file: {name}")
        return name if job.payload == "odd result" else "fine"

    with Client(jq_server.url, jq_server.client_key) as client:
        ids = {p: client.submit(p, max_retries=0, queue=queue)
               for p in ("raise", "odd result", "ok 1", "ok 2")}  # fmt: skip
        worker = Worker(
            jq_server.url,
            jq_server.worker_key,
            handler,
            WorkerOptions(queue=queue, concurrency=4, poll_wait=1.0, lease_ms=60_000,
                          batch_ack=batch_ack),
        )  # fmt: skip
        run_until(worker, lambda: all_finished(client, queue, 4), timeout=20)
        jobs = {p: client.get(job_id) for p, job_id in ids.items()}
    assert jobs["ok 1"].state is JobState.ACKED and jobs["ok 1"].result == "fine"
    assert jobs["ok 2"].state is JobState.ACKED
    raised = jobs["raise"]
    assert raised.state is JobState.DEAD and raised.result_error is not None
    assert "FileNotFoundError: no such file: caf\\udce9.txt" in raised.result_error
    odd = jobs["odd result"]
    assert odd.state is JobState.DEAD and odd.result is None
    assert odd.result_error == "the handler's result is not UTF-8 text (\\udce9 at character 3)"


def test_lease_extension_keeps_a_slow_job(jq_server: ServerProcess, queue: str) -> None:
    executions: Counter[str] = Counter()

    def slow(job: LeasedJob) -> str:
        executions[job.job_id] += 1
        time.sleep(3.5)  # 3.5x the lease: only extensions keep it ours
        return "slow but done"

    with Client(jq_server.url, jq_server.client_key) as client:
        job_id = client.submit("slow", queue=queue)
        worker = Worker(
            jq_server.url,
            jq_server.worker_key,
            slow,
            WorkerOptions(queue=queue, concurrency=2, lease_ms=1000, poll_wait=1.0),
        )
        run_until(worker, lambda: client.get(job_id).finished)
        job = client.get(job_id)
    assert job.state is JobState.ACKED and job.attempts == 1 and job.result == "slow but done"
    assert executions[job_id] == 1 and worker.counts.lost == 0


def test_async_worker(jq_server: ServerProcess, queue: str) -> None:
    async def handler(job: LeasedJob) -> Success:
        await asyncio.sleep(0.01)
        return Success(f"async {job.payload}")

    async def main() -> None:
        worker = AsyncWorker(
            jq_server.url,
            jq_server.worker_key,
            handler,
            WorkerOptions(queue=queue, concurrency=150, poll_wait=1.0),
        )
        task = asyncio.ensure_future(worker.run())
        with Client(jq_server.url, jq_server.client_key) as client:
            client.submit_many([{"payload": str(i), "queue": queue} for i in range(20)])
            for _ in range(400):
                if all_finished(client, queue, 20):
                    break
                await asyncio.sleep(0.05)
            worker.stop()
            await asyncio.wait_for(task, 10)
            results = sorted(job.result or "" for job in client.iter_jobs(queue=queue))
        assert results == sorted(f"async {i}" for i in range(20))
        assert worker.counts.acked == 20

    asyncio.run(main())


def test_stop_lets_running_handlers_finish(jq_server: ServerProcess, queue: str) -> None:
    started = threading.Event()

    def handler(job: LeasedJob) -> str:
        started.set()
        time.sleep(1.0)
        return "finished during shutdown"

    with Client(jq_server.url, jq_server.client_key) as client:
        job_id = client.submit("x", queue=queue)
        worker = Worker(
            jq_server.url,
            jq_server.worker_key,
            handler,
            WorkerOptions(queue=queue, grace=20, poll_wait=1.0),
        )
        thread = run_in_thread(worker)
        assert started.wait(10)
        worker.stop()
        thread.join(20)
        assert not thread.is_alive()
        later = client.submit("after stop", queue=queue)
        assert client.get(job_id).result == "finished during shutdown"
        assert client.get(later).state is JobState.READY  # nothing leased after stop


def test_every_job_acked_once_across_a_server_kill9(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    server.start()
    executions: Counter[str] = Counter()
    lock = threading.Lock()
    total = 150

    def handler(job: LeasedJob) -> str:
        with lock:
            executions[job.job_id] += 1
        time.sleep(0.02)
        return "ok"

    try:
        with Client(server.url, server.client_key) as client:
            ids = [
                r.job_id or ""
                for r in client.submit_many([{"payload": str(i)} for i in range(total)])
            ]
        worker = Worker(
            server.url,
            server.worker_key,
            handler,
            WorkerOptions(concurrency=8, lease_ms=10_000, max_backoff=0.5, poll_wait=1.0),
        )
        thread = run_in_thread(worker)
        wait_until(lambda: worker.counts.acked >= 30)
        server.kill9()  # acks in flight now fail; the worker retries them after the restart
        time.sleep(0.5)
        server.start()
        with Client(server.url, server.client_key) as client:
            wait_until(lambda: all_finished(client, "default", total), timeout=60)
            jobs = {job_id: client.get(job_id) for job_id in ids}
            server_acks = client.stats().totals.acked  # acks the server applied, restarts included
        worker.stop()
        thread.join(15)
    finally:
        server.stop()
    states = Counter(job.state.value for job in jobs.values())
    assert states == {"ACKED": total}, states
    assert set(executions) == set(ids)
    assert server_acks == total
    # An attempt whose lease answer died with the server shows up as a later attempt, never
    # as a second ack: each execution is one attempt, and the worker acked each job once.
    over = {i: (executions[i], j.attempts) for i, j in jobs.items() if executions[i] > j.attempts}
    assert not over, over
    assert (worker.counts.acked, worker.counts.failed) == (total, 0), (
        worker.counts,
        server.log_path,
    )


def test_worker_options_defaults() -> None:
    assert WorkerOptions() == WorkerOptions(
        queue="default", concurrency=None, lease_ms=None, poll_wait=10.0, grace=30.0
    )
    assert Worker("http://127.0.0.1:1", "k", print).concurrency == 4
    assert AsyncWorker("http://127.0.0.1:1", "k", print).concurrency == 16
    options = WorkerOptions(queue="q", concurrency=3, poll_wait=99.0)
    worker = AsyncWorker("http://127.0.0.1:1", "k", print, options)
    assert (worker.queue, worker.concurrency, worker.poll_wait) == ("q", 3, 30.0)
    assert worker.options is options
