"""The SDK's side of issue 15: a key is revoked by its key id (a full key is turned into its
id on this side, never put in a URL), the new refusals have their own exceptions, the payload
is required, and every time the server writes reads back as an aware datetime."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from jq_tool.sdk import (
    Client,
    IdempotencyKeyReused,
    JobSpec,
    KeyNotFound,
    TooManyQueues,
    Unauthorized,
)
from jq_tool.sdk.calls import key_id_of, revoke_key_call
from sdk.jq_server_process import ServerProcess


@pytest.fixture
def client(jq_server: ServerProcess) -> Iterator[Client]:
    with Client(jq_server.url, jq_server.client_key) as c:
        yield c


def test_a_full_key_is_revoked_by_its_id(jq_server: ServerProcess) -> None:
    with Client(jq_server.url, jq_server.admin_key) as admin:
        created = admin.create_key("leaked", "team-" + uuid.uuid4().hex[:6], "worker")
        assert key_id_of(created.key) == created.key_id
        assert key_id_of(created.key_id) == created.key_id
        call = revoke_key_call(created.key)
        assert created.key not in call.path and call.path == f"/keys/{created.key_id}"
        revoked = admin.revoke_key(created.key)
        assert revoked.key == created.key_id and revoked.revoked_at is not None
        with Client(jq_server.url, created.key) as gone, pytest.raises(Unauthorized):
            gone.stats()
        with pytest.raises(KeyNotFound):
            admin.revoke_key("admin_" + "0" * 16)


def test_reusing_an_idempotency_key_for_another_payload(client: Client, queue: str) -> None:
    key = "sdk-" + uuid.uuid4().hex
    first = client.submit("one", idempotency_key=key, queue=queue)
    assert client.submit("one", idempotency_key=key, queue=queue) == first
    with pytest.raises(IdempotencyKeyReused) as refused:
        client.submit("two", idempotency_key=key, queue=queue)
    assert refused.value.status == 422 and refused.value.code == "idempotency_key_reused"
    assert len(client.list(queue=queue).jobs) == 1


def test_the_payload_is_required(client: Client) -> None:
    with pytest.raises(TypeError):
        client.submit()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        JobSpec()  # type: ignore[call-arg]


def test_too_many_queues_is_its_own_error(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = ServerProcess(tmp_path_factory.mktemp("jq") / "data")
    server.args += ["--max-queues", "1"]
    server.start()
    try:
        with Client(server.url, server.client_key) as client:
            client.submit("x", queue="only")
            with pytest.raises(TooManyQueues) as refused:
                client.submit("x", queue="one-more")
            assert refused.value.status == 429
    finally:
        server.stop()


def test_times_at_the_ends_of_the_range_read_back(client: Client, queue: str) -> None:
    for run_at in (datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, tzinfo=UTC)):
        job = client.get(client.submit("edge", run_at=run_at, queue=queue))
        assert job.run_at == run_at
