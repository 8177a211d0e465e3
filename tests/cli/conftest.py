"""Fixtures of the CLI tests: one real `jq serve` per module, a fresh queue name per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sdk.jq_server_process import ServerProcess


@pytest.fixture(scope="module")
def jq_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("jq") / "data")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def queue() -> str:
    return f"q-{uuid.uuid4().hex[:10]}"
