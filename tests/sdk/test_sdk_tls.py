"""TLS for real: both clients against a real `jq serve` behind a TLS-terminating proxy whose
certificate a throwaway CA signed. Verification is on by default (the system CA store does not
know that CA: refused, and not retried), off with `verify=False`, and passes with the CA bundle
(`verify="/path/ca.pem"`) or an `ssl.SSLContext` that trusts it; the host name is checked too.
Every call, the /events stream included, goes over the same TLS connections."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator

import pytest

from jq_tool.sdk import (
    AsyncClient,
    AsyncWorker,
    Client,
    JobState,
    LeasedJob,
    Stats,
    TlsError,
    WorkerOptions,
)
from sdk.jq_server_process import ServerProcess
from sdk.tls_proxy import Certificates, TlsProxy, make_certificates


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def proxy(jq_server: ServerProcess, certificates: Certificates) -> Iterator[TlsProxy]:
    proxy = TlsProxy(jq_server.port, certificates).start()
    yield proxy
    proxy.stop()


def test_verification_is_on_by_default(jq_server: ServerProcess, proxy: TlsProxy) -> None:
    with Client(proxy.url, jq_server.client_key) as client:
        with pytest.raises(TlsError, match="CERTIFICATE_VERIFY_FAILED") as refused:
            client.stats()  # a read, retried on ServerUnavailable: a refused certificate is not
        assert refused.value.status is None
        with pytest.raises(TlsError):
            client.events().open()


def test_verify_false_accepts_any_certificate(
    jq_server: ServerProcess, proxy: TlsProxy, queue: str
) -> None:
    with Client(proxy.url, jq_server.client_key, verify=False) as client:
        job_id = client.submit("over tls", queue=queue)
        assert client.get(job_id).payload == "over tls"
        with client.events() as events:
            assert isinstance(next(events), Stats)


def test_a_ca_bundle_or_a_context_verifies_the_server(
    jq_server: ServerProcess, proxy: TlsProxy, certificates: Certificates, queue: str
) -> None:
    context = ssl.create_default_context(cafile=certificates.ca)
    for verify in (str(certificates.ca), certificates.ca, context):
        with Client(proxy.url, jq_server.client_key, verify=verify) as client:
            job_id = client.submit("verified", queue=queue)
            assert client.get(job_id).state is JobState.READY
            with client.events() as events:
                assert isinstance(next(events), Stats)
    # The certificate names 127.0.0.1 only: the same server under another name is refused.
    with (
        Client(
            f"https://localhost:{proxy.port}", jq_server.client_key, verify=certificates.ca
        ) as by_name,
        pytest.raises(TlsError, match="match|mismatch"),
    ):
        by_name.stats()
    with pytest.raises(ValueError, match="no CA bundle"):
        Client(proxy.url, verify="/no/such/ca.pem")


async def test_async_client_and_worker_over_tls(
    jq_server: ServerProcess, proxy: TlsProxy, certificates: Certificates, queue: str
) -> None:
    async with AsyncClient(proxy.url, jq_server.client_key) as unverified:
        with pytest.raises(TlsError):
            await unverified.stats()
    async with AsyncClient(proxy.url, jq_server.client_key, verify=certificates.ca) as client:
        job_id = await client.submit("async over tls", queue=queue)
        async with client.events() as events:
            assert isinstance(await events.__anext__(), Stats)

        async def handle(job: LeasedJob) -> str:
            return job.payload.upper()

        worker = AsyncWorker(
            proxy.url,
            jq_server.worker_key,
            handle,
            WorkerOptions(queue=queue, poll_wait=1.0, verify=certificates.ca),
        )
        running = asyncio.ensure_future(worker.run())
        try:
            finished = await client.wait_for_completion(job_id, timeout=30)
        finally:
            worker.stop()
            await asyncio.wait_for(running, 10)
        assert finished.result == "ASYNC OVER TLS"
