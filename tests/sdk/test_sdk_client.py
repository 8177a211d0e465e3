"""Client and AsyncClient against a real `jq serve`: every method, the typed results, the
typed exceptions per status, idempotent submit retries and wait_for_completion."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jq_tool import sdk
from jq_tool.sdk import (
    AsyncClient,
    BadRequest,
    Client,
    Forbidden,
    InvalidState,
    JobNotFound,
    JobSpec,
    JobState,
    KeyNotFound,
    LeaseLost,
    OutcomeUnknown,
    PayloadTooLarge,
    ServerUnavailable,
    StorageFull,
    Unauthorized,
    WaitTimeout,
)
from jq_tool.sdk.errors import Conflict, error_for_response
from sdk.dropping_proxy import DroppingProxy
from sdk.jq_server_process import ServerProcess, free_port


@pytest.fixture
def client(jq_server: ServerProcess) -> Client:
    with Client(jq_server.url, jq_server.client_key) as c:
        yield c  # type: ignore[misc]


@pytest.fixture
def worker_client(jq_server: ServerProcess) -> Client:
    with Client(jq_server.url, jq_server.worker_key) as c:
        yield c  # type: ignore[misc]


def test_health_needs_no_key(jq_server: ServerProcess) -> None:
    with Client(jq_server.url) as anonymous:
        assert anonymous.health() == {"status": "ok", "role": "single"}


def test_submit_and_get_round_trip_typed(client: Client, queue: str) -> None:
    job_id = client.submit("hello", priority=7, max_retries=2, queue=queue)
    job = client.get(job_id)
    assert job.job_id == job_id
    assert job.state is JobState.READY
    assert (job.payload, job.priority, job.max_retries, job.queue) == ("hello", 7, 2, queue)
    assert job.attempts == 0
    assert job.created_at is not None and job.created_at.tzinfo is not None
    assert job.idempotency_key  # the SDK always sends one


def test_non_string_payload_is_sent_as_json(client: Client, queue: str) -> None:
    job_id = client.submit({"n": 1, "tags": ["a"]}, queue=queue)
    assert client.get(job_id).payload == '{"n":1,"tags":["a"]}'


def test_text_that_is_not_utf_8_is_refused_before_anything_is_sent(
    client: Client, queue: str
) -> None:
    """A lone surrogate (a non-UTF-8 file name decoded with surrogateescape, as os.listdir
    gives it) cannot travel as JSON: the call raises ValueError naming the character and where
    it is, for a str payload, inside a JSON payload and in any other field, and nothing
    reaches the server."""
    name = b"caf\xe9.txt".decode("utf-8", "surrogateescape")
    before = client.stats().total
    for call in (
        lambda: client.submit(name, queue=queue),
        lambda: client.submit({"files": ["ok", name]}, queue=queue),
        lambda: client.submit("fine", queue=queue, idempotency_key=name),
        lambda: client.submit_many([JobSpec("fine", queue=queue), JobSpec(name, queue=queue)]),
    ):
        with pytest.raises(ValueError, match=r"not UTF-8 text: .\\udce9. at character \d+"):
            call()
    assert client.stats().total == before


def test_delay_and_run_at_schedule_the_job(client: Client, queue: str) -> None:
    before = datetime.now(UTC)
    delayed = client.get(client.submit("d", delay=timedelta(minutes=10), queue=queue))
    assert delayed.run_at is not None and delayed.run_at > before + timedelta(minutes=9)
    at = datetime(2099, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    scheduled = client.get(client.submit("r", run_at=at, queue=queue))
    assert scheduled.run_at == at
    stats = client.stats()
    assert stats.queues[queue].scheduled == 2
    assert stats.queues[queue].runnable == 0
    with pytest.raises(ValueError):
        client.submit("x", delay=1, run_at=at, queue=queue)
    with pytest.raises(ValueError):
        client.submit("x", delay=-1, queue=queue)


def test_a_time_before_the_year_1000_is_sent_as_rfc_3339_and_refused_as_too_early(
    client: Client, queue: str
) -> None:
    # strftime's %Y wrote year 999 as "999": the server refused it as malformed, quoting a time
    # the caller never wrote. Four digits, always; the server's answer names the real problem.
    assert sdk.format_time(datetime(999, 1, 2, 3, 4, 5, 6000)) == "0999-01-02T03:04:05.006Z"
    assert sdk.format_time(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00.000Z"
    assert sdk.parse_time(sdk.format_time(datetime(999, 1, 2, tzinfo=UTC))).year == 999
    for early in (datetime(999, 1, 2, tzinfo=UTC), datetime(1969, 12, 31, tzinfo=UTC)):
        with pytest.raises(BadRequest) as refused:
            client.submit("x", run_at=early, queue=queue)
        assert "outside the years 1970 to 9999" in str(refused.value)
        assert f"{early.year:04d}-" in str(refused.value)


def test_same_idempotency_key_same_job(client: Client, queue: str) -> None:
    first = client.submit("once", idempotency_key="key-1-" + queue, queue=queue)
    second = client.submit("once", idempotency_key="key-1-" + queue, queue=queue)
    assert first == second
    assert len(client.list(queue=queue).jobs) == 1


def test_submit_retried_after_a_lost_answer_makes_one_job(
    jq_server: ServerProcess, queue: str
) -> None:
    proxy = DroppingProxy(jq_server.port, drop_first=2)
    try:
        with Client(proxy.url, jq_server.client_key, backoff=0.01) as client:
            job_id = client.submit("exactly one", queue=queue)
        assert proxy.requests == 3  # two answers lost, the third came through
    finally:
        proxy.close()
    with Client(jq_server.url, jq_server.client_key) as direct:
        jobs = direct.list(queue=queue).jobs
        assert [job.job_id for job in jobs] == [job_id]


def test_batch_retried_after_a_lost_answer_makes_each_job_once(
    jq_server: ServerProcess, queue: str
) -> None:
    proxy = DroppingProxy(jq_server.port, drop_first=1)
    try:
        with Client(proxy.url, jq_server.client_key, backoff=0.01) as client:
            results = client.submit_many([{"payload": str(i), "queue": queue} for i in range(5)])
        assert proxy.requests == 2
    finally:
        proxy.close()
    assert all(r.duplicate for r in results)  # the second try found the first try's jobs
    with Client(jq_server.url, jq_server.client_key) as direct:
        listed = {job.job_id for job in direct.iter_jobs(queue=queue)}
    assert listed == {r.job_id for r in results} and len(listed) == 5


def test_submit_retries_until_the_server_is_back(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    server.start()
    server.kill9()  # keys and WAL stay in the data dir
    outcome: dict[str, str] = {}

    def submit() -> None:
        with Client(server.url, server.client_key, retries=100, max_backoff=0.3) as c:
            outcome["job_id"] = c.submit("submitted while the server was down")

    thread = threading.Thread(target=submit)
    thread.start()
    try:
        time.sleep(0.5)  # let a few attempts fail against the closed port
        server.start()
        thread.join(30)
        with Client(server.url, server.client_key) as c:
            (job,) = c.list().jobs
            assert job.job_id == outcome["job_id"]
    finally:
        server.stop()


def test_submit_many_mixed_entries(client: Client, queue: str) -> None:
    results = client.submit_many(
        [
            {"payload": "a", "queue": queue},
            JobSpec(payload="b", queue=queue, priority=5),
            {"payload": "c", "queue": "not a valid queue!"},
            {"payload": "d", "queue": queue, "idempotency_key": "dup-" + queue},
            {"payload": "d", "queue": queue, "idempotency_key": "dup-" + queue},
        ]
    )
    assert [r.ok for r in results] == [True, True, False, True, True]
    assert results[2].field == "queue" and results[2].error
    assert results[3].job_id == results[4].job_id
    assert client.get(results[1].job_id or "").priority == 5
    with pytest.raises(ValueError):
        client.submit_many([{"payload": "x", "no_such_field": 1}])


def test_list_pages_and_iter_jobs(client: Client, queue: str) -> None:
    ids = [
        r.job_id
        for r in client.submit_many([{"payload": str(i), "queue": queue} for i in range(7)])
    ]
    page = client.list(queue=queue, limit=3)
    assert len(page.jobs) == 3 and page.next_cursor
    assert all(job.payload is None for job in page.jobs)  # lists carry no payloads
    seen = [job.job_id for job in client.iter_jobs(queue=queue, page_size=3)]
    assert sorted(seen) == sorted(ids) and len(seen) == 7
    assert seen[0] == ids[-1]  # newest first
    assert client.list(queue=queue, state="acked").jobs == []


def test_lease_ack_fail_extend(client: Client, worker_client: Client, queue: str) -> None:
    assert worker_client.lease(queue=queue) == []
    low = client.submit("low", queue=queue)
    high = client.submit("high", priority=9, queue=queue, max_retries=0)
    leased = worker_client.lease(queue=queue, max_jobs=5, lease_ms=5000)
    assert [job.job_id for job in leased] == [high, low]  # priority first
    first, second = leased
    assert first.attempt == 1 and first.lease_id and first.payload == "high"
    assert first.lease_ms == second.lease_ms == 5000
    assert client.get(low).state is JobState.RUNNING

    extended = worker_client.extend(second.job_id, lease_id=second.lease_id, lease_ms=60_000)
    assert extended.lease_until > second.lease_until

    with pytest.raises(LeaseLost):
        worker_client.ack(second.job_id, "x", lease_id="not-the-lease")
    settled = worker_client.ack(second.job_id, {"ok": True}, lease_id=second.lease_id)
    assert settled.state is JobState.ACKED
    assert client.get(low).result == '{"ok":true}'
    with pytest.raises(InvalidState):
        worker_client.ack(second.job_id, "again", lease_id=second.lease_id)

    dead = worker_client.fail(first.job_id, "it broke", lease_id=first.lease_id)
    assert dead.state is JobState.DEAD  # max_retries=0: one attempt only
    assert client.get(high).result_error == "it broke"


def test_failed_attempt_retries_then_dies(
    client: Client, worker_client: Client, queue: str
) -> None:
    job_id = client.submit("flaky", max_retries=1, queue=queue)
    (first,) = worker_client.lease(queue=queue)
    assert worker_client.fail(job_id, "try 1", lease_id=first.lease_id).state is JobState.RETRY
    waiting = client.get(job_id)
    assert waiting.state is JobState.RETRY and waiting.result_error == "try 1"
    (second,) = worker_client.lease(queue=queue, wait=25)  # back after the server's backoff
    assert second.attempt == 2 and second.lease_id != first.lease_id
    assert worker_client.fail(job_id, "try 2", lease_id=second.lease_id).state is JobState.DEAD
    dead = client.get(job_id)
    assert (dead.state, dead.attempts, dead.result_error) == (JobState.DEAD, 2, "try 2")


def test_cancel_and_requeue(client: Client, worker_client: Client, queue: str) -> None:
    waiting = client.submit("w", queue=queue, delay=3600)
    assert client.cancel(waiting).state is JobState.CANCELLED
    with pytest.raises(InvalidState):
        client.requeue(waiting)

    doomed = client.submit("d", queue=queue, max_retries=0)
    (job,) = worker_client.lease(queue=queue)
    with pytest.raises(InvalidState):
        client.cancel(doomed)  # running
    worker_client.fail(doomed, "no", lease_id=job.lease_id)
    assert client.requeue(doomed).state is JobState.READY
    assert client.get(doomed).state is JobState.READY


def test_typed_errors_per_status(jq_server: ServerProcess, client: Client, queue: str) -> None:
    with pytest.raises(JobNotFound) as not_found:
        client.get("no-such-job")
    assert not_found.value.status == 404 and not_found.value.code == "not_found"
    with pytest.raises(Unauthorized), Client(jq_server.url, "client_not-a-real-key") as bad:
        bad.stats()
    with pytest.raises(Forbidden):
        client.lease(queue=queue)  # a client key cannot lease
    with pytest.raises(BadRequest) as bad_request:
        client.submit("x", queue="bad queue name!")
    assert bad_request.value.field == "queue"
    with pytest.raises(BadRequest):
        client.submit("x", max_retries=-1, queue=queue)
    with pytest.raises(PayloadTooLarge):
        client.submit("x" * 100_000, queue=queue)  # the fixture's server allows 64 KiB
    nowhere = Client(f"http://127.0.0.1:{free_port()}", "k", retries=1, backoff=0.01)
    with nowhere, pytest.raises(ServerUnavailable):
        nowhere.stats()
    with pytest.raises(ValueError):
        Client("localhost:8080", "k")


def test_error_table_maps_every_documented_status() -> None:
    cases = [
        (400, "invalid_field", BadRequest),
        (401, "unauthorized", Unauthorized),
        (403, "forbidden", Forbidden),
        (404, "not_found", sdk.NotFound),
        (409, "lease_mismatch", LeaseLost),
        (409, "invalid_state", InvalidState),
        (409, "other", Conflict),
        (413, "payload_too_large", PayloadTooLarge),
        (503, "unavailable", ServerUnavailable),
        (504, "outcome_unknown", OutcomeUnknown),
        (504, None, OutcomeUnknown),  # a proxy's gateway timeout: maybe done, too
        (507, "storage_full", StorageFull),
        (502, None, ServerUnavailable),
    ]
    for status, code, kind in cases:
        error = error_for_response(status, {"error": "msg", "code": code, "field": "f"})
        assert type(error) is kind, (status, code)
        assert error.status == status and error.message == "msg" and error.field == "f"
    assert isinstance(error_for_response(404, None, not_found=JobNotFound), JobNotFound)
    assert error_for_response(500, "<html>oops</html>").message == "<html>oops</html>"


def test_not_done_and_maybe_done_are_distinct_exceptions(jq_server: ServerProcess) -> None:
    # Refused before anything was sent: not done.
    nowhere = Client(f"http://127.0.0.1:{free_port()}", "k", retries=0)
    with nowhere, pytest.raises(ServerUnavailable) as refused:
        nowhere.submit("never sent")
    assert not isinstance(refused.value, OutcomeUnknown)
    # Sent, and the answer lost: maybe done (it was, here), for a write only.
    proxy = DroppingProxy(jq_server.port, drop_first=2)
    try:
        with Client(proxy.url, jq_server.client_key, retries=0) as client:
            with pytest.raises(OutcomeUnknown) as unknown:
                client.submit("maybe", queue="outcome-unknown", idempotency_key="k-maybe-1")
            assert unknown.value.idempotency_key == "k-maybe-1"
            assert isinstance(unknown.value, ServerUnavailable)  # still a transient failure
            with pytest.raises(ServerUnavailable) as read:
                client.stats()
            assert proxy.requests == 2
    finally:
        proxy.close()
    assert not isinstance(read.value, OutcomeUnknown)  # a lost read answer changed nothing


def test_a_submit_that_gives_up_unknown_names_the_key_to_retry_with(
    jq_server: ServerProcess, queue: str
) -> None:
    proxy = DroppingProxy(jq_server.port, drop_first=1000)
    try:
        client = Client(proxy.url, jq_server.client_key, retries=2, backoff=0.01)
        with client, pytest.raises(OutcomeUnknown) as unknown:
            client.submit("three tries, no answer", queue=queue)
        assert proxy.requests == 3  # every try reached the server, with the same key
    finally:
        proxy.close()
    key = unknown.value.idempotency_key
    assert key
    with Client(jq_server.url, jq_server.client_key) as direct:
        job_id = direct.submit("three tries, no answer", queue=queue, idempotency_key=key)
        assert [job.job_id for job in direct.list(queue=queue).jobs] == [job_id]


def test_wait_for_completion_hears_the_ack(
    client: Client, worker_client: Client, queue: str
) -> None:
    job_id = client.submit("wait for me", queue=queue)

    def settle_later() -> None:
        time.sleep(0.5)
        (job,) = worker_client.lease(queue=queue, wait=5)
        worker_client.ack(job.job_id, "done", lease_id=job.lease_id)

    thread = threading.Thread(target=settle_later)
    thread.start()
    job = client.wait_for_completion(job_id, timeout=20)
    thread.join()
    assert job.state is JobState.ACKED and job.result == "done"
    # Already finished: answered from the first GET.
    assert client.wait_for_completion(job_id, timeout=1).result == "done"


def test_wait_for_completion_times_out(client: Client, queue: str) -> None:
    job_id = client.submit("nobody works on me", queue=queue)
    with pytest.raises(WaitTimeout):
        client.wait_for_completion(job_id, timeout=0.5)
    with pytest.raises(JobNotFound):
        client.wait_for_completion("no-such-job", timeout=1)


def test_keys_create_list_revoke(jq_server: ServerProcess, client: Client) -> None:
    with Client(jq_server.url, jq_server.admin_key) as admin:
        created = admin.create_key("ci", "team-sdk", "client")
        assert created.key.startswith("client_") and created.owner_id == "team-sdk"
        assert "jobs:submit" in created.scopes
        everyone = admin.list_keys(all=True)
        assert created.key_id in {k.key_id for k in everyone}
        with Client(jq_server.url, created.key) as fresh:
            assert fresh.stats().total >= 0
            mine = fresh.list_keys()
            assert {k.owner_id for k in mine} == {"team-sdk"}
            revoked = admin.revoke_key(created.key_id or created.key)
            assert revoked.revoked_at is not None
            with pytest.raises(Unauthorized):
                fresh.stats()
        with pytest.raises(KeyNotFound):
            admin.revoke_key("client_nope")
        with pytest.raises(BadRequest):
            admin.create_key("x", "y", "superuser")
    with pytest.raises(Forbidden):
        client.create_key("x", "y", "client")
    assert "key" not in repr(client).lower() or jq_server.client_key not in repr(client)


async def test_async_client_covers_the_same_calls(jq_server: ServerProcess, queue: str) -> None:
    async with (
        AsyncClient(jq_server.url, jq_server.client_key) as client,
        AsyncClient(jq_server.url, jq_server.worker_key) as worker,
    ):
        assert (await client.health())["status"] == "ok"
        job_id = await client.submit("async", queue=queue)
        results = await client.submit_many([{"payload": "b", "queue": queue}])
        assert results[0].ok
        assert (await client.get(job_id)).payload == "async"
        assert len((await client.list(queue=queue)).jobs) == 2
        assert [j.job_id async for j in client.iter_jobs(queue=queue, page_size=1)][-1] == job_id
        assert (await client.stats()).queues[queue].runnable == 2
        leased = await worker.lease(queue=queue, max_jobs=2)
        assert len(leased) == 2
        for job in leased:
            await worker.extend(job.job_id, lease_id=job.lease_id)
            await worker.ack(job.job_id, "ok", lease_id=job.lease_id)
        finished = await client.wait_for_completion(job_id, timeout=5)
        assert finished.state is JobState.ACKED
        with pytest.raises(JobNotFound):
            await client.cancel("nope")
        with pytest.raises(InvalidState):  # already ACKED: the state is checked first
            await worker.fail(job_id, "late", lease_id="stale")


def test_a_server_shutting_down_answers_unavailable(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    server.start()
    outcome: dict[str, BaseException] = {}

    def long_poll() -> None:
        with Client(server.url, server.worker_key, retries=0) as worker:
            try:
                worker.lease(queue="empty", wait=25)
            except BaseException as exc:  # the assertion below names what was expected
                outcome["error"] = exc

    thread = threading.Thread(target=long_poll)
    thread.start()
    try:
        time.sleep(0.5)  # the long poll is waiting on the server
        assert server.process is not None
        server.process.terminate()  # drains: the poll is answered 503 (or the socket closes)
        thread.join(20)
    finally:
        server.stop()
    assert isinstance(outcome.get("error"), ServerUnavailable), outcome
