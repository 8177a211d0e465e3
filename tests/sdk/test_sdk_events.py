"""`events()` on both clients against a real `jq serve`: typed events as the server writes them,
through the client's one connection pool (a stream holds a connection of it), refusals as typed
errors, the stream's end when the server drains; and timeouts given per call (a long-poll lease
adds its wait)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from jq_tool.sdk import (
    AsyncClient,
    Client,
    JobEvent,
    JobState,
    ServerUnavailable,
    Stats,
    Unauthorized,
)
from sdk.jq_server_process import ServerProcess

# A client default no test should ever wait out: if a per-call timeout were ignored, the test
# would hang until pytest's own timeout fails it.
NEVER = 3600.0


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def test_events_are_typed_and_follow_the_queue(jq_server: ServerProcess, queue: str) -> None:
    with Client(jq_server.url, jq_server.client_key) as client:
        events = client.events()
        first = next(events)
        assert isinstance(first, Stats)  # the server starts every stream with the totals
        job_id = client.submit("watched", queue=queue)
        for event in events:
            if isinstance(event, JobEvent) and event.job_id == job_id:
                assert (event.state, event.queue, event.finished) == (JobState.READY, queue, False)
                break
        events.close()


def test_a_stream_holds_one_connection_of_the_clients_pool(
    jq_server: ServerProcess, queue: str
) -> None:
    with Client(jq_server.url, jq_server.client_key, max_connections=1, retries=0) as client:
        with client.events() as events:
            assert isinstance(next(events), Stats)
            # The only connection is the stream's: a request waits for it, then gives up.
            with pytest.raises(ServerUnavailable, match="no free connection"):
                client.stats(timeout=0.3)
        assert client.stats().total >= 0  # closed: the slot is free again


def test_a_stream_left_by_break_gives_its_connection_back(jq_server: ServerProcess) -> None:
    with Client(jq_server.url, jq_server.client_key, max_connections=1, retries=0) as client:
        for _ in range(3):
            for event in client.events():
                assert isinstance(event, Stats)
                break
        assert client.stats(timeout=5).total >= 0


async def test_an_async_stream_left_by_break_gives_its_connection_back(
    jq_server: ServerProcess,
) -> None:
    async with AsyncClient(jq_server.url, jq_server.client_key, max_connections=1) as client:
        for _ in range(3):
            async for event in client.events():
                assert isinstance(event, Stats)
                break
        assert (await asyncio.wait_for(client.stats(), 5)).total >= 0


def test_a_refused_stream_is_a_typed_error(jq_server: ServerProcess) -> None:
    with Client(jq_server.url, "client_not-a-real-key") as client:
        with pytest.raises(Unauthorized):
            next(client.events())
        with pytest.raises(Unauthorized):
            client.events().open()


def test_the_stream_ends_when_the_server_drains(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    server.start()
    received: list[object] = []
    try:
        with Client(server.url, server.client_key) as client:
            events = client.events().open()
            assert server.process is not None
            stopper = threading.Timer(0.5, server.process.terminate)
            stopper.start()
            try:
                # Ends without an error: the server finishes the stream when it drains.
                received.extend(events)
            finally:
                stopper.cancel()
    finally:
        server.stop()
    assert received and all(isinstance(event, Stats) for event in received)


async def test_async_events(jq_server: ServerProcess, queue: str) -> None:
    async with (
        AsyncClient(jq_server.url, jq_server.client_key) as client,
        client.events() as events,
    ):
        job_id = await client.submit("watched async", queue=queue)
        async for event in events:
            if isinstance(event, JobEvent) and event.job_id == job_id:
                assert event.state is JobState.READY
                break
    async with AsyncClient(jq_server.url, "client_not-a-real-key") as refused:
        with pytest.raises(Unauthorized):
            async for _ in refused.events():
                pass


def test_a_timeout_per_call(silent_url: str) -> None:
    with Client(silent_url, "k", timeout=NEVER, retries=0) as client:
        with pytest.raises(ServerUnavailable, match="TimeoutError"):
            client.stats(timeout=0.2)
        with pytest.raises(ServerUnavailable, match="TimeoutError"):
            client.events(timeout=0.2).open()


async def test_an_async_timeout_per_call(silent_url: str) -> None:
    async with AsyncClient(silent_url, "k", timeout=NEVER, retries=0) as client:
        with pytest.raises(ServerUnavailable, match="TimeoutError"):
            await client.get("some-job", timeout=0.2)
        with pytest.raises(ServerUnavailable, match="TimeoutError"):
            await client.events(timeout=0.2).open()


def test_a_long_poll_adds_its_wait_to_the_timeout(jq_server: ServerProcess, queue: str) -> None:
    with Client(jq_server.url, jq_server.worker_key, retries=0) as worker:
        # The server holds the poll 2 s; the call may take 1.5 s plus that wait.
        assert worker.lease(queue=queue, wait=2, timeout=1.5) == []


async def test_an_async_long_poll_adds_its_wait_to_the_timeout(
    jq_server: ServerProcess, queue: str
) -> None:
    async with AsyncClient(jq_server.url, jq_server.worker_key, retries=0) as worker:
        assert await worker.lease(queue=queue, wait=2, timeout=1.5) == []
