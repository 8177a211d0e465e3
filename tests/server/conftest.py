"""Fixtures of the server tests: one `jq serve` shared by the server tests (most only need a
running server and make their own queues and jobs), and httpx clients per seeded key."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

SHARED_ARGS = ("--lease-check-interval", "200ms", "--max-payload", "64KiB", "--ticket-ttl", "2s")


@pytest.fixture(scope="session")
def server(jq_session_server_factory: Callable[..., Any]) -> Any:
    """One server for the server tests that need no fresh state (each makes its own queues):
    64 KiB payloads, so 413s are cheap, and 2 s stream tickets, so expiry is quick to see."""
    return jq_session_server_factory(*SHARED_ARGS)


@pytest.fixture
def client(server: Any) -> Iterator[httpx.Client]:
    with server.client(server.client_key) as http:
        yield http


@pytest.fixture
def worker(server: Any) -> Iterator[httpx.Client]:
    with server.client(server.worker_key) as http:
        yield http


@pytest.fixture
def admin(server: Any) -> Iterator[httpx.Client]:
    with server.client(server.admin_key) as http:
        yield http
