"""`Client` and `AsyncClient`: the jq HTTP API (docs/api.md) as typed Python calls.

Shaped like httpx's own `_client.py`: `BaseClient` holds every decision — how a request is built,
which answers are retried, how a response becomes a typed result or a typed exception — and the
two clients only differ in how they send bytes and sleep. A submit always carries an
idempotency key (a uuid4 unless the caller names one) and is retried with that same key on
connection errors and 503s, so a retried submit never makes two jobs.
"""

from __future__ import annotations

import asyncio
import builtins
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from jq_tool.sdk.errors import (
    BadRequest,
    JobNotFound,
    JqError,
    KeyNotFound,
    NotFound,
    ServerUnavailable,
    WaitTimeout,
    error_for_response,
)
from jq_tool.sdk.types import (
    FINISHED_STATES,
    CreatedKey,
    Extended,
    Job,
    JobEvent,
    JobSpec,
    Key,
    LeasedJob,
    Page,
    RevokedKey,
    Settled,
    Stats,
    SubmitResult,
)
from jq_tool.sdk.wire import Http11Pool, SyncHttp11Pool, TransportFailure

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8080"
MAX_BATCH = 1000  # the server's limit per POST /jobs/batch
MAX_WAIT_MS = 30_000  # the server's limit for a long-poll lease
# While waiting on /events, look at the job itself this often anyway: a missed event (a
# reconnect, a slow consumer dropped by the server) must not leave a waiter hanging.
FALLBACK_POLL_S = 5.0

_json = msgspec.json.Encoder()


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds, as the API speaks it; a naive datetime is local time."""
    if moment.tzinfo is None:
        moment = moment.astimezone()
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def encode_payload(payload: object) -> str:
    """The API's payload is a string: a str goes as is, anything else as its JSON text."""
    if isinstance(payload, str):
        return payload
    if isinstance(payload, bytes | bytearray):
        try:
            return bytes(payload).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError("payload bytes must be UTF-8 text") from exc
    try:
        return _json.encode(payload).decode("utf-8")
    except (TypeError, msgspec.EncodeError) as exc:
        raise ValueError(f"payload is neither a str nor JSON-encodable: {exc}") from exc


def job_body(spec: JobSpec) -> dict[str, Any]:
    """The POST /jobs body for one job (also one entry of a batch)."""
    if spec.delay is not None and spec.run_at is not None:
        raise ValueError("give delay or run_at, not both")
    body: dict[str, Any] = {
        "payload": encode_payload(spec.payload),
        "max_retries": spec.max_retries,
        "priority": spec.priority,
        "queue": spec.queue,
        "idempotency_key": spec.idempotency_key or str(uuid.uuid4()),
    }
    if spec.delay is not None:
        seconds = (
            spec.delay.total_seconds() if isinstance(spec.delay, timedelta) else float(spec.delay)
        )
        if seconds < 0:
            raise ValueError("delay must not be negative")
        body["delay_ms"] = int(round(seconds * 1000))
    if spec.run_at is not None:
        body["run_at"] = format_time(spec.run_at)
    return body


def as_job_spec(item: JobSpec | Mapping[str, Any]) -> JobSpec:
    if isinstance(item, JobSpec):
        return item
    try:
        return JobSpec(**dict(item))
    except TypeError as exc:
        raise ValueError(f"not a job spec: {exc}") from exc


@dataclass
class Call(Generic[T]):
    """One request, fully described, plus how to read its answer. Built by BaseClient, sent by
    Client or AsyncClient."""

    method: str
    path: str
    decode: Callable[[int, bytes], T]
    body: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    not_found: type[NotFound] = NotFound
    # Retried on ServerUnavailable: reads, and writes made idempotent by a key.
    retry: bool = False
    timeout: float | None = None
    # A 404 that is an ordinary answer (lease: no job available), not an error.
    on_404: Callable[[], T] | None = None


def _decoder(kind: Any) -> Callable[[int, bytes], Any]:
    decoder = msgspec.json.Decoder(kind)

    def decode(status: int, content: bytes) -> Any:
        return decoder.decode(content)

    return decode


def _decode_submit(status: int, content: bytes) -> str:
    return msgspec.json.decode(content, type=SubmitResult).job_id or ""


class _BatchAnswer(msgspec.Struct):
    results: list[SubmitResult]


def _decode_batch(status: int, content: bytes) -> list[SubmitResult]:
    return msgspec.json.decode(content, type=_BatchAnswer).results


def _decode_lease(status: int, content: bytes) -> list[LeasedJob]:
    data = msgspec.json.decode(content, type=list[LeasedJob] | LeasedJob)
    return data if isinstance(data, list) else [data]


def _no_jobs() -> list[LeasedJob]:
    return []


@dataclass
class SseEvent:
    event: str
    data: str


class SseParser:
    """Feeds `text/event-stream` lines, yields an event at each blank line."""

    def __init__(self) -> None:
        self._event = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> SseEvent | None:
        line = line.rstrip("\r\n")
        if not line:
            if not self._data:
                self._event = "message"
                return None
            event = SseEvent(self._event, "\n".join(self._data))
            self._event, self._data = "message", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


def finished_event_for(event: SseEvent, job_id: str) -> bool:
    """Whether this SSE event says `job_id` reached a finished state."""
    if event.event != "job":
        return False
    try:
        job_event = msgspec.json.decode(event.data, type=JobEvent)
    except msgspec.DecodeError:
        return False
    return job_event.job_id == job_id and job_event.state in FINISHED_STATES


class BaseClient:
    """Everything but I/O: request building, retry policy, answer decoding."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff

    def __repr__(self) -> str:
        # Never the key: reprs end up in logs.
        return f"{type(self).__name__}(url={self.url!r})"

    @property
    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "jq-tool-sdk"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        return headers

    def backoff_delay(self, attempt: int) -> float:
        """Capped exponential backoff with full jitter, so many clients do not retry in step."""
        cap = min(self.max_backoff, self.backoff * (2**attempt))
        return random.uniform(cap / 2, cap)

    def read_answer(self, call: Call[T], status: int, content: bytes) -> T:
        if 200 <= status < 300:
            try:
                return call.decode(status, content)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise JqError(
                    f"unexpected answer from {call.method} {call.path}: {exc}", status=status
                ) from exc
        body: Any
        try:
            body = msgspec.json.decode(content) if content else None
        except msgspec.DecodeError:
            body = content.decode("utf-8", "replace")
        if status == 404 and call.on_404 is not None:
            return call.on_404()
        raise error_for_response(status, body, not_found=call.not_found)

    def should_retry(self, call: Call[Any], error: JqError, attempt: int) -> bool:
        return call.retry and isinstance(error, ServerUnavailable) and attempt < self.retries

    @staticmethod
    def unreachable(call: Call[Any], exc: Exception) -> ServerUnavailable:
        return ServerUnavailable(
            f"{call.method} {call.path}: {type(exc).__name__}: {exc or 'no answer'}"
        )

    # --- request builders, one per API route ---------------------------------------------

    def _submit_call(self, spec: JobSpec) -> Call[str]:
        return Call("POST", "/jobs", _decode_submit, body=job_body(spec), retry=True)

    def _batch_call(self, specs: list[JobSpec]) -> Call[list[SubmitResult]]:
        body = {"jobs": [job_body(spec) for spec in specs]}
        return Call("POST", "/jobs/batch", _decode_batch, body=body, retry=True)

    def _get_call(self, job_id: str) -> Call[Job]:
        path = f"/jobs/{quote(job_id, safe='')}"
        return Call("GET", path, _decoder(Job), not_found=JobNotFound, retry=True)

    def _list_call(
        self, state: str | None, queue: str | None, limit: int | None, cursor: str | None
    ) -> Call[Page]:
        params = {"state": state, "queue": queue, "limit": limit, "cursor": cursor}
        params = {name: value for name, value in params.items() if value is not None}
        if isinstance(params.get("state"), str):
            params["state"] = str(params["state"]).upper()
        return Call("GET", "/jobs", _decoder(Page), params=params, retry=True)

    def _stats_call(self) -> Call[Stats]:
        return Call("GET", "/stats", _decoder(Stats), retry=True)

    def _health_call(self) -> Call[dict[str, Any]]:
        return Call("GET", "/health", _decoder(dict[str, Any]), retry=False)

    def _settle_call(self, job_id: str, action: str, body: Any = None) -> Call[Settled]:
        path = f"/jobs/{quote(job_id, safe='')}/{action}"
        return Call("POST", path, _decoder(Settled), body=body or {}, not_found=JobNotFound)

    def _ack_call(self, job_id: str, result: object, lease_id: str | None) -> Call[Settled]:
        body: dict[str, Any] = {"result": None if result is None else encode_payload(result)}
        if lease_id is not None:
            body["lease_id"] = lease_id
        return self._settle_call(job_id, "ack", body)

    def _fail_call(self, job_id: str, error: str, lease_id: str | None) -> Call[Settled]:
        body: dict[str, Any] = {"result_error": str(error)}
        if lease_id is not None:
            body["lease_id"] = lease_id
        return self._settle_call(job_id, "ack", body)

    def _extend_call(self, job_id: str, lease_id: str | None, lease_ms: int | None) -> Call[Any]:
        body: dict[str, Any] = {}
        if lease_id is not None:
            body["lease_id"] = lease_id
        if lease_ms is not None:
            body["lease_ms"] = int(lease_ms)
        path = f"/jobs/{quote(job_id, safe='')}/extend"
        return Call("POST", path, _decoder(Extended), body=body, not_found=JobNotFound)

    def _lease_call(
        self, queue: str, wait: float | timedelta, max_jobs: int, lease_ms: int | None
    ) -> Call[list[LeasedJob]]:
        seconds = wait.total_seconds() if isinstance(wait, timedelta) else float(wait)
        wait_ms = max(0, min(MAX_WAIT_MS, int(seconds * 1000)))
        body: dict[str, Any] = {"queue": queue, "wait_ms": wait_ms, "max_jobs": int(max_jobs)}
        if lease_ms is not None:
            body["lease_ms"] = int(lease_ms)
        return Call(
            "POST",
            "/jobs/lease",
            _decode_lease,
            body=body,
            timeout=self.timeout + wait_ms / 1000,
            on_404=_no_jobs,
        )

    def _create_key_call(self, name: str, owner_id: str, type: str) -> Call[CreatedKey]:
        body = {"name": name, "owner_id": owner_id, "type": type}
        return Call("POST", "/admin/keys", _decoder(CreatedKey), body=body)

    def _list_keys_call(self, all: bool) -> Call[list[Key]]:
        path = "/admin/keys" if all else "/keys"
        return Call("GET", path, _decoder(list[Key]), retry=True)

    def _revoke_key_call(self, key: str) -> Call[RevokedKey]:
        path = f"/keys/{quote(key, safe='')}"
        return Call("DELETE", path, _decoder(RevokedKey), not_found=KeyNotFound)

    def _specs(self, jobs: Iterable[JobSpec | Mapping[str, Any]]) -> list[JobSpec]:
        # Fix the keys now: every retry of a chunk must send the same ones. Copies: the
        # caller's JobSpecs are left as they were.
        return [
            msgspec.structs.replace(spec, idempotency_key=spec.idempotency_key or str(uuid.uuid4()))
            for spec in map(as_job_spec, jobs)
        ]


def _submit_spec(
    payload: object,
    max_retries: int,
    priority: int,
    delay: float | timedelta | None,
    run_at: datetime | None,
    queue: str,
    idempotency_key: str | None,
) -> JobSpec:
    return JobSpec(
        payload=payload,
        max_retries=max_retries,
        priority=priority,
        delay=delay,
        run_at=run_at,
        queue=queue,
        idempotency_key=idempotency_key or str(uuid.uuid4()),
    )


class Client(BaseClient):
    """The blocking client. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        max_connections: int = 20,
    ) -> None:
        super().__init__(
            url, key, timeout=timeout, retries=retries, backoff=backoff, max_backoff=max_backoff
        )
        # Plain request/response calls go through the lean pool (see wire.py for why);
        # httpx serves the /events stream.
        self._pool = SyncHttp11Pool(self.url, self.headers, max_connections=max_connections)
        self._http = httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.close()
        self._http.close()

    def send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                try:
                    status, content = self._pool.request(
                        call.method,
                        call.path,
                        body=None if call.body is None else _json.encode(call.body),
                        params=call.params or None,
                        timeout=call.timeout if call.timeout is not None else self.timeout,
                    )
                except TransportFailure as exc:
                    raise self.unreachable(call, exc) from exc
                return self.read_answer(call, status, content)
            except JqError as error:
                if not self.should_retry(call, error, attempt):
                    raise
                time.sleep(self.backoff_delay(attempt))
                attempt += 1

    # --- the API ------------------------------------------------------------------------

    def submit(
        self,
        payload: object = "",
        *,
        max_retries: int = 3,
        priority: int = 0,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        queue: str = "default",
        idempotency_key: str | None = None,
    ) -> str:
        """Submit one job and return its id; safe to retry (see the module docstring)."""
        spec = _submit_spec(payload, max_retries, priority, delay, run_at, queue, idempotency_key)
        return self.send(self._submit_call(spec))

    def submit_many(
        self, jobs: Iterable[JobSpec | Mapping[str, Any]]
    ) -> builtins.list[SubmitResult]:
        """Submit many jobs, 1000 per request; per-entry results in input order."""
        specs = self._specs(jobs)
        results: builtins.list[SubmitResult] = []
        for start in range(0, len(specs), MAX_BATCH):
            batch = self.send(self._batch_call(specs[start : start + MAX_BATCH]))
            results.extend(batch)
        return results

    def get(self, job_id: str) -> Job:
        return self.send(self._get_call(job_id))

    def list(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page:
        return self.send(self._list_call(state, queue, limit, cursor))

    def iter_jobs(
        self, *, state: str | None = None, queue: str | None = None, page_size: int = 200
    ) -> Iterator[Job]:
        """Every matching job, newest first, following cursors page by page."""
        cursor: str | None = None
        while True:
            page = self.list(state=state, queue=queue, limit=page_size, cursor=cursor)
            yield from page.jobs
            if not page.next_cursor or not page.jobs:
                return
            cursor = page.next_cursor

    def stats(self) -> Stats:
        return self.send(self._stats_call())

    def health(self) -> dict[str, Any]:
        return self.send(self._health_call())

    def cancel(self, job_id: str) -> Settled:
        return self.send(self._settle_call(job_id, "cancel"))

    def requeue(self, job_id: str) -> Settled:
        return self.send(self._settle_call(job_id, "requeue"))

    def lease(
        self,
        *,
        queue: str = "default",
        wait: float | timedelta = 0.0,
        max_jobs: int = 1,
        lease_ms: int | None = None,
    ) -> builtins.list[LeasedJob]:
        """Lease up to max_jobs jobs, long-polling up to `wait` (≤ 30 s); [] when none came."""
        return self.send(self._lease_call(queue, wait, max_jobs, lease_ms))

    def ack(self, job_id: str, result: object = None, *, lease_id: str | None) -> Settled:
        return self.send(self._ack_call(job_id, result, lease_id))

    def fail(self, job_id: str, error: str, *, lease_id: str | None) -> Settled:
        return self.send(self._fail_call(job_id, error, lease_id))

    def extend(self, job_id: str, *, lease_id: str | None, lease_ms: int | None = None) -> Extended:
        return self.send(self._extend_call(job_id, lease_id, lease_ms))

    def create_key(self, name: str, owner_id: str, type: str) -> CreatedKey:
        return self.send(self._create_key_call(name, owner_id, type))

    def list_keys(self, all: bool = False) -> builtins.list[Key]:
        return self.send(self._list_keys_call(all))

    def revoke_key(self, key: str) -> RevokedKey:
        return self.send(self._revoke_key_call(key))

    def wait_for_completion(self, job_id: str, timeout: float = 60.0) -> Job:
        """Block until the job is ACKED, DEAD or CANCELLED, listening on /events rather than
        polling; raises WaitTimeout after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        job = self.get(job_id)
        if job.finished:
            return job
        failures = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(f"job {job_id} still {job.state.value} after {timeout}s")
            read_for = min(remaining, FALLBACK_POLL_S)
            try:
                job = self._wait_on_events(job_id, deadline, read_for)
                if job.finished:
                    return job
                failures = 0
            except (ServerUnavailable, NotFound, BadRequest):
                # No /events (or the server is restarting): fall back to a slow poll.
                time.sleep(min(self.backoff_delay(failures) + 0.5, max(0.0, remaining)))
                failures += 1
                job = self.get(job_id)
                if job.finished:
                    return job

    def _wait_on_events(self, job_id: str, deadline: float, read_for: float) -> Job:
        timeout = httpx.Timeout(self.timeout, read=read_for)
        try:
            with self._http.stream("GET", "/events", timeout=timeout) as response:
                if response.status_code != 200:
                    response.read()
                    call: Call[Job] = Call("GET", "/events", _decoder(Job))
                    self.read_answer(call, response.status_code, response.content)
                # Subscribed: a GET now closes the race with a job that finished just before.
                job = self.get(job_id)
                if job.finished:
                    return job
                parser = SseParser()
                last_poll = time.monotonic()
                for line in response.iter_lines():
                    event = parser.feed(line)
                    now = time.monotonic()
                    if event is not None and finished_event_for(event, job_id):
                        return self.get(job_id)
                    if now - last_poll >= FALLBACK_POLL_S or now >= deadline:
                        job = self.get(job_id)
                        last_poll = now
                        if job.finished or now >= deadline:
                            return job
        except httpx.ReadTimeout:
            pass  # a quiet stream: look at the job and listen again
        except httpx.TransportError as exc:
            raise ServerUnavailable(f"GET /events: {type(exc).__name__}: {exc}") from exc
        return self.get(job_id)


class AsyncClient(BaseClient):
    """The asyncio client: the same API as `Client`, every method awaited."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        max_connections: int = 100,
    ) -> None:
        super().__init__(
            url, key, timeout=timeout, retries=retries, backoff=backoff, max_backoff=max_backoff
        )
        # Plain request/response calls go through the lean pool (see wire.py for why);
        # httpx serves the /events stream.
        self._pool = Http11Pool(self.url, self.headers, max_connections=max_connections)
        self._http = httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._pool.aclose()
        await self._http.aclose()

    async def send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                try:
                    status, content = await self._pool.request(
                        call.method,
                        call.path,
                        body=None if call.body is None else _json.encode(call.body),
                        params=call.params or None,
                        timeout=call.timeout if call.timeout is not None else self.timeout,
                    )
                except TransportFailure as exc:
                    raise self.unreachable(call, exc) from exc
                return self.read_answer(call, status, content)
            except JqError as error:
                if not self.should_retry(call, error, attempt):
                    raise
                await asyncio.sleep(self.backoff_delay(attempt))
                attempt += 1

    async def submit(
        self,
        payload: object = "",
        *,
        max_retries: int = 3,
        priority: int = 0,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        queue: str = "default",
        idempotency_key: str | None = None,
    ) -> str:
        spec = _submit_spec(payload, max_retries, priority, delay, run_at, queue, idempotency_key)
        return await self.send(self._submit_call(spec))

    async def submit_many(
        self, jobs: Iterable[JobSpec | Mapping[str, Any]]
    ) -> builtins.list[SubmitResult]:
        specs = self._specs(jobs)
        results: builtins.list[SubmitResult] = []
        for start in range(0, len(specs), MAX_BATCH):
            batch = await self.send(self._batch_call(specs[start : start + MAX_BATCH]))
            results.extend(batch)
        return results

    async def get(self, job_id: str) -> Job:
        return await self.send(self._get_call(job_id))

    async def list(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page:
        return await self.send(self._list_call(state, queue, limit, cursor))

    async def iter_jobs(
        self, *, state: str | None = None, queue: str | None = None, page_size: int = 200
    ) -> AsyncIterator[Job]:
        cursor: str | None = None
        while True:
            page = await self.list(state=state, queue=queue, limit=page_size, cursor=cursor)
            for job in page.jobs:
                yield job
            if not page.next_cursor or not page.jobs:
                return
            cursor = page.next_cursor

    async def stats(self) -> Stats:
        return await self.send(self._stats_call())

    async def health(self) -> dict[str, Any]:
        return await self.send(self._health_call())

    async def cancel(self, job_id: str) -> Settled:
        return await self.send(self._settle_call(job_id, "cancel"))

    async def requeue(self, job_id: str) -> Settled:
        return await self.send(self._settle_call(job_id, "requeue"))

    async def lease(
        self,
        *,
        queue: str = "default",
        wait: float | timedelta = 0.0,
        max_jobs: int = 1,
        lease_ms: int | None = None,
    ) -> builtins.list[LeasedJob]:
        return await self.send(self._lease_call(queue, wait, max_jobs, lease_ms))

    async def ack(self, job_id: str, result: object = None, *, lease_id: str | None) -> Settled:
        return await self.send(self._ack_call(job_id, result, lease_id))

    async def fail(self, job_id: str, error: str, *, lease_id: str | None) -> Settled:
        return await self.send(self._fail_call(job_id, error, lease_id))

    async def extend(
        self, job_id: str, *, lease_id: str | None, lease_ms: int | None = None
    ) -> Extended:
        return await self.send(self._extend_call(job_id, lease_id, lease_ms))

    async def create_key(self, name: str, owner_id: str, type: str) -> CreatedKey:
        return await self.send(self._create_key_call(name, owner_id, type))

    async def list_keys(self, all: bool = False) -> builtins.list[Key]:
        return await self.send(self._list_keys_call(all))

    async def revoke_key(self, key: str) -> RevokedKey:
        return await self.send(self._revoke_key_call(key))

    async def wait_for_completion(self, job_id: str, timeout: float = 60.0) -> Job:
        deadline = time.monotonic() + timeout
        job = await self.get(job_id)
        if job.finished:
            return job
        failures = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(f"job {job_id} still {job.state.value} after {timeout}s")
            read_for = min(remaining, FALLBACK_POLL_S)
            try:
                job = await self._wait_on_events(job_id, deadline, read_for)
                if job.finished:
                    return job
                failures = 0
            except (ServerUnavailable, NotFound, BadRequest):
                await asyncio.sleep(min(self.backoff_delay(failures) + 0.5, max(0.0, remaining)))
                failures += 1
                job = await self.get(job_id)
                if job.finished:
                    return job

    async def _wait_on_events(self, job_id: str, deadline: float, read_for: float) -> Job:
        timeout = httpx.Timeout(self.timeout, read=read_for)
        try:
            async with self._http.stream("GET", "/events", timeout=timeout) as response:
                if response.status_code != 200:
                    await response.aread()
                    call: Call[Job] = Call("GET", "/events", _decoder(Job))
                    self.read_answer(call, response.status_code, response.content)
                job = await self.get(job_id)
                if job.finished:
                    return job
                parser = SseParser()
                last_poll = time.monotonic()
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    now = time.monotonic()
                    if event is not None and finished_event_for(event, job_id):
                        return await self.get(job_id)
                    if now - last_poll >= FALLBACK_POLL_S or now >= deadline:
                        job = await self.get(job_id)
                        last_poll = now
                        if job.finished or now >= deadline:
                            return job
        except httpx.ReadTimeout:
            pass
        except httpx.TransportError as exc:
            raise ServerUnavailable(f"GET /events: {type(exc).__name__}: {exc}") from exc
        return await self.get(job_id)
