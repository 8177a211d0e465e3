"""`Client` and `AsyncClient`: the jq HTTP API (docs/api.md) as typed Python calls.

Shaped like httpx's own `_client.py`: `BaseClient` holds every decision — which answers are
retried and how long to back off, how long a call may take, how an answer becomes a typed
result or a typed exception — and the two clients only differ in how they send bytes and sleep.
Requests are described in sdk/calls.py; `wait_for_completion` is written once in
sdk/waiting.py; every call, the `/events` stream included, travels through the client's one
connection pool (sdk/wire.py), so there is one timeout and one error path.

`timeout` (seconds) is the client's default for each request and may be given per call: it
bounds one attempt of a request (a long-poll lease adds its `wait`); for `events()`, opening the
stream and each quiet spell in it. Retried calls (reads, submits) make up to `retries` more
attempts on `ServerUnavailable`, with capped exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import builtins
import random
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

import msgspec

from jq_tool.sdk.calls import (  # insight (issue 19)
    MAX_BATCH,
    Call,
    ack_call,
    ack_entry,
    ack_many_call,
    batch_call,
    batches,
    create_key_call,
    create_schedule_call,
    dead_groups_call,
    delete_schedule_call,
    events_call,
    explain_call,
    extend_call,
    fail_call,
    get_call,
    get_queue_call,
    get_schedule_call,
    health_call,
    keyed_specs,
    lease_call,
    list_call,
    list_keys_call,
    list_schedules_call,
    pause_queue_call,
    pause_schedule_call,
    progress_call,
    progress_problem,
    release_call,
    revoke_key_call,
    set_queue_call,
    settle_call,
    settle_group_call,
    stats_call,
    submit_call,
    submit_spec,
    update_schedule_call,
)
from jq_tool.sdk.console import (
    BulkResult,
    ForgottenWorker,
    History,
    QueueDetail,
    WorkerPage,
    bulk_call,
    forget_worker_call,
    history_call,
    queue_call,
    workers_call,
)
from jq_tool.sdk.errors import (
    JqError,
    OutcomeUnknown,
    ServerUnavailable,
    error_for_failure,
    error_for_response,
)
from jq_tool.sdk.routing import Routes
from jq_tool.sdk.sse import AsyncEventStream, EventStream
from jq_tool.sdk.tls import Verify
from jq_tool.sdk.types import (  # issue 19
    AckResult,
    BatchAck,
    CreatedKey,
    DeadGroups,
    DeadGroupSettled,
    Explanation,
    Extended,
    Job,
    JobSpec,
    Key,
    LeasedJob,
    Page,
    Progress,
    QueueSettings,
    RevokedKey,
    Schedule,
    SchedulePage,
    Settled,
    Settlement,
    Stats,
    SubmitResult,
)
from jq_tool.sdk.waiting import Get, Listen, Plan, Sleep, Step, wait_plan
from jq_tool.sdk.wire import (
    AnswerLost,
    AsyncHttp11Pool,
    AsyncStreamedAnswer,
    SyncHttp11Pool,
    SyncStreamedAnswer,
    TransportFailure,
)

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8080"


class BaseClient:
    """Everything but I/O: retry policy, timeouts, answer decoding."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        worker_id: str | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        # Sent as X-Jq-Worker (the server keeps it on the jobs this client leases).
        self.worker_id = worker_id
        # Sharded mode: the node holding each queue's shard, from the answers (sdk/routing.py).
        self.routes = Routes(self.url)

    def __repr__(self) -> str:
        # Never the key: reprs end up in logs.
        return f"{type(self).__name__}(url={self.url!r})"

    @property
    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "jq-tool-sdk"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        if self.worker_id:
            headers["X-Jq-Worker"] = self.worker_id
        return headers

    def backoff_delay(self, attempt: int) -> float:
        """Capped exponential backoff with full jitter, so many clients do not retry in step."""
        cap = min(self.max_backoff, self.backoff * (2**attempt))
        return random.uniform(cap / 2, cap)

    def call_timeout(self, call: Call[Any], timeout: float | None) -> float:
        """Seconds one attempt of `call` may take: the given timeout or the client's, plus the
        time the server may hold a long poll."""
        return (self.timeout if timeout is None else timeout) + call.long_poll

    def read_answer(self, call: Call[T], status: int, content: bytes) -> T:
        if 200 <= status < 300:
            try:
                return call.decode(status, content)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise JqError(
                    f"unexpected answer from {call.method} {call.path}: {exc}", status=status
                ) from exc
        if status == 404 and call.on_404 is not None:
            return call.on_404()
        raise self.refusal(call, status, content)

    @staticmethod
    def refusal(call: Call[Any], status: int, content: bytes) -> JqError:
        """The typed exception for an error answer."""
        body: Any
        try:
            body = msgspec.json.decode(content) if content else None
        except msgspec.DecodeError:
            body = content.decode("utf-8", "replace")
        return error_for_response(status, body, not_found=call.not_found)

    @staticmethod
    def schedule_definition(
        name: str,
        cron: str,
        payload: object,
        timezone: str,
        queue: str,
        priority: int,
        max_retries: int,
        overlap: str,
        missed: str,
        grace: float | timedelta,
        paused: bool,
    ) -> dict[str, Any]:
        return {
            "name": name,
            "cron": cron,
            "payload": payload,
            "timezone": timezone,
            "queue": queue,
            "priority": priority,
            "max_retries": max_retries,
            "overlap": overlap,
            "missed": missed,
            "grace": grace,
            "paused": paused,
        }

    def learn_route(self, call: Call[Any], placement: bytes | None) -> None:
        """A forwarded answer named the nodes holding the call's queue: go there next time."""
        if placement is not None and call.queue is not None:
            self.routes.learn(call.queue, placement)

    def unroute(self, call: Call[Any], routed: str | None, failure: TransportFailure) -> bool:
        """A node the routes chose failed: forget it. True when the request never left (no
        connection), so it may go to the client's own URL at once, retryable or not."""
        if routed is None:
            return False
        self.routes.forget(call.queue)
        return not isinstance(failure, AnswerLost)

    def should_retry(self, call: Call[Any], error: JqError, attempt: int) -> bool:
        return call.retry and isinstance(error, ServerUnavailable) and attempt < self.retries

    @staticmethod
    def unreachable(call: Call[Any], failure: TransportFailure) -> JqError:
        what = f"{call.method} {call.path}"
        return error_for_failure(what, failure, write=call.method != "GET")

    @staticmethod
    def ack_many_calls(
        settlements: Iterable[Settlement], lease_next: int, queue: str, lease_ms: int | None
    ) -> builtins.list[Call[BatchAck]]:
        """The requests of one `ack_many`: MAX_BATCH entries each, `lease_next` on the last;
        none for no settlements."""
        entries = [ack_entry(settlement) for settlement in settlements]
        starts = range(0, len(entries), MAX_BATCH)
        return [
            ack_many_call(
                entries[start : start + MAX_BATCH],
                lease_next if start + MAX_BATCH >= len(entries) else 0,
                queue,
                lease_ms,
            )
            for start in starts
        ]


class Client(BaseClient):
    """The blocking client, safe to share between threads. Use as a context manager, or call
    `close()`. `verify` governs TLS for https URLs (see sdk/tls.py): True checks the server
    against the system CA store, a path names a CA bundle, False turns checking off (tests
    only), or give an `ssl.SSLContext`."""

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
        verify: Verify = True,
        worker_id: str | None = None,
    ) -> None:
        super().__init__(
            url,
            key,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            worker_id=worker_id,
        )
        self._pool = SyncHttp11Pool(
            self.url, self.headers, max_connections=max_connections, verify=verify
        )
        self._node_pools: dict[str, SyncHttp11Pool] = {}  # sharded mode: other nodes
        self._node_pools_lock = threading.Lock()
        self._pool_options = (max_connections, verify)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.close()
        with self._node_pools_lock:
            pools, self._node_pools = self._node_pools, {}
        for pool in pools.values():
            pool.close()

    def _pool_at(self, url: str | None) -> SyncHttp11Pool:
        if url is None:
            return self._pool
        pool = self._node_pools.get(url)
        if pool is None:
            with self._node_pools_lock:
                pool = self._node_pools.get(url)
                if pool is None:
                    connections, verify = self._pool_options
                    pool = SyncHttp11Pool(
                        url, self.headers, max_connections=connections, verify=verify
                    )
                    self._node_pools[url] = pool
        return pool

    def send(self, call: Call[T], timeout: float | None = None) -> T:
        """Send one call (retried as it allows); its typed answer."""
        attempt = 0
        while True:
            try:
                routed = self.routes.url_for(call.queue)
                try:
                    status, content, placement = self._pool_at(routed).exchange(
                        call.method,
                        call.path,
                        body=call.encoded_body(),
                        params=call.params or None,
                        timeout=self.call_timeout(call, timeout),
                    )
                except TransportFailure as exc:
                    if self.unroute(call, routed, exc):
                        continue  # nothing was sent: the client's own URL takes it
                    raise self.unreachable(call, exc) from exc
                self.learn_route(call, placement)
                return self.read_answer(call, status, content)
            except JqError as error:
                if not self.should_retry(call, error, attempt):
                    raise
                time.sleep(self.backoff_delay(attempt))
                attempt += 1

    def _open_events(self, timeout: float) -> SyncStreamedAnswer:
        call = events_call()
        try:
            answer = self._pool.stream(call.method, call.path, timeout=timeout)
            if 200 <= answer.status < 300:
                return answer
            content = answer.read_all(timeout)
        except TransportFailure as exc:
            raise self.unreachable(call, exc) from exc
        raise self.refusal(call, answer.status, content)

    # --- the API ------------------------------------------------------------------------

    def submit(
        self,
        payload: object,
        *,
        max_retries: int = 3,
        priority: int = 0,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        queue: str = "default",
        idempotency_key: str | None = None,
        timeout: float | None = None,
        unique_key: str | None = None,
        unique_scope: str | None = None,
        unique_period: float | timedelta | None = None,
        depends_on: Iterable[str] | None = None,
        on_parent_failure: str | None = None,
    ) -> str:
        """Submit one job and return its id. It carries an idempotency key (`idempotency_key`,
        or a fresh uuid4) that every retry reuses, so a retried submit makes one job. Raises
        `OutcomeUnknown` (with the key in `.idempotency_key`) when the last try's outcome is
        unknown: submit again with that key to get the job, or make it."""
        spec = submit_spec(
            payload, max_retries, priority, delay, run_at, queue, idempotency_key,
            unique_key=unique_key, unique_scope=unique_scope, unique_period=unique_period,
            depends_on=None if depends_on is None else list(depends_on),
            on_parent_failure=on_parent_failure,
        )  # fmt: skip
        try:
            return self.send(submit_call(spec), timeout)
        except OutcomeUnknown as exc:
            exc.idempotency_key = spec.idempotency_key
            raise

    def submit_many(
        self, jobs: Iterable[JobSpec | Mapping[str, Any]], *, timeout: float | None = None
    ) -> builtins.list[SubmitResult]:
        """Submit many jobs, 1000 per request; per-entry results in input order."""
        results: builtins.list[SubmitResult] = []
        for batch in batches(keyed_specs(jobs)):
            answers = self.send(batch_call(batch), timeout)
            results.extend(answers)
        return results

    def get(self, job_id: str, *, timeout: float | None = None) -> Job:
        return self.send(get_call(job_id), timeout)

    def list(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        id_prefix: str | None = None,
        error: str | None = None,
        timeout: float | None = None,
    ) -> Page:
        return self.send(list_call(state, queue, limit, cursor, id_prefix, error), timeout)

    def iter_jobs(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        page_size: int = 200,
        id_prefix: str | None = None,
        error: str | None = None,
        timeout: float | None = None,
    ) -> Iterator[Job]:
        """Every matching job, newest first, following cursors page by page."""
        cursor: str | None = None
        while True:
            page = self.send(list_call(state, queue, page_size, cursor, id_prefix, error), timeout)
            yield from page.jobs
            if not page.next_cursor:  # a search's page may be empty with a cursor
                return
            cursor = page.next_cursor

    def stats(self, *, timeout: float | None = None) -> Stats:
        return self.send(stats_call(), timeout)

    def health(self, *, timeout: float | None = None) -> dict[str, Any]:
        return self.send(health_call(), timeout)

    def cancel(self, job_id: str, *, timeout: float | None = None) -> Settled:
        return self.send(settle_call(job_id, "cancel"), timeout)

    def requeue(self, job_id: str, *, timeout: float | None = None) -> Settled:
        return self.send(settle_call(job_id, "requeue"), timeout)

    def lease(
        self,
        *,
        queue: str = "default",
        wait: float | timedelta = 0.0,
        max_jobs: int = 1,
        lease_ms: int | None = None,
        timeout: float | None = None,
    ) -> builtins.list[LeasedJob]:
        """Lease up to max_jobs jobs, long-polling up to `wait` (≤ 30 s); [] when none came."""
        return self.send(lease_call(queue, wait, max_jobs, lease_ms), timeout)

    def ack(
        self,
        job_id: str,
        result: object = None,
        *,
        lease_id: str | None,
        timeout: float | None = None,
    ) -> Settled:
        return self.send(ack_call(job_id, result, lease_id), timeout)

    def fail(
        self,
        job_id: str,
        error: str,
        *,
        lease_id: str | None,
        retry: bool = True,
        timeout: float | None = None,
    ) -> Settled:
        """A failed attempt: RETRY with backoff, or DEAD when retries are spent;
        `retry=False` makes it final (DEAD at once)."""
        return self.send(fail_call(job_id, error, lease_id, retry), timeout)

    def ack_many(
        self,
        settlements: Iterable[Settlement],
        *,
        lease_next: int = 0,
        queue: str = "default",
        lease_ms: int | None = None,
        timeout: float | None = None,
    ) -> BatchAck:
        """Settle many leases in one request and one durable write (1000 per request), and
        with `lease_next` lease up to that many (at most 100) jobs of `queue` in the same
        write, without waiting: ack-and-lease-next. A refused entry is a result that says
        why, not an exception; the request as a whole raises as `ack` does. No settlements:
        nothing is sent (lease with `lease`)."""
        results: builtins.list[AckResult] = []
        leased: builtins.list[LeasedJob] = []
        for call in self.ack_many_calls(settlements, lease_next, queue, lease_ms):
            answer = self.send(call, timeout)
            results.extend(answer.results)
            leased.extend(answer.leased)
        return BatchAck(results, leased)

    def release(
        self,
        job_id: str,
        *,
        lease_id: str | None,
        delay: float | timedelta = 0,
        timeout: float | None = None,
    ) -> Settled:
        """Give a lease back unfinished: the job is READY again after `delay` (seconds or a
        timedelta; scheduled until then), and the attempt this lease began is not counted
        (it never brings the job closer to DEAD). 409 (`LeaseLost` or `InvalidState`)
        when the lease is no longer the job's."""
        return self.send(release_call(job_id, lease_id, delay), timeout)

    def extend(
        self,
        job_id: str,
        *,
        lease_id: str | None,
        lease_ms: int | None = None,
        progress: float | None = None,
        note: str = "",
        timeout: float | None = None,
    ) -> Extended:
        return self.send(extend_call(job_id, lease_id, lease_ms, progress, note), timeout)

    def create_key(
        self, name: str, owner_id: str, type: str, *, timeout: float | None = None
    ) -> CreatedKey:
        return self.send(create_key_call(name, owner_id, type), timeout)

    def list_keys(self, all: bool = False, *, timeout: float | None = None) -> builtins.list[Key]:
        return self.send(list_keys_call(all), timeout)

    def revoke_key(self, key: str, *, timeout: float | None = None) -> RevokedKey:
        """Revoke a key by its key_id; a full key is turned into its key_id here, never sent."""
        return self.send(revoke_key_call(key), timeout)

    # --- schedules (periodic jobs) ----------------------------------------------------------

    def create_schedule(
        self,
        name: str,
        cron: str,
        payload: object,
        *,
        timezone: str = "UTC",
        queue: str = "default",
        priority: int = 0,
        max_retries: int = 3,
        overlap: str = "allow",
        missed: str = "skip",
        grace: float | timedelta = 60.0,
        paused: bool = False,
        timeout: float | None = None,
    ) -> Schedule:
        """Create a schedule: `cron` (5 fields, 6 with seconds first, or `@hourly`-style)
        read in `timezone` (IANA) submits a job of `payload` to `queue` at each due time.
        `overlap="skip"` passes over a run while the previous one is unfinished; a run
        reached more than `grace` seconds late (a downtime) is missed: `missed="skip"` makes
        none, `"run_once"` one for them all. Retried safely: the same definition again answers
        the schedule (a different one raises ScheduleExists)."""
        fields = self.schedule_definition(
            name, cron, payload, timezone, queue, priority, max_retries, overlap, missed,
            grace, paused,
        )  # fmt: skip
        return self.send(create_schedule_call(fields), timeout)

    def list_schedules(
        self, *, cursor: str | None = None, limit: int | None = None, timeout: float | None = None
    ) -> SchedulePage:
        return self.send(list_schedules_call(cursor, limit), timeout)

    def iter_schedules(
        self, *, page_size: int = 200, timeout: float | None = None
    ) -> Iterator[Schedule]:
        """Every schedule, by name, following cursors page by page."""
        cursor: str | None = None
        while True:
            page = self.send(list_schedules_call(cursor, page_size), timeout)
            yield from page.schedules
            if not page.next_cursor or not page.schedules:
                return
            cursor = page.next_cursor

    def get_schedule(self, name: str, *, timeout: float | None = None) -> Schedule:
        """One schedule, with its next due times in `upcoming`."""
        return self.send(get_schedule_call(name), timeout)

    def update_schedule(
        self, name: str, *, timeout: float | None = None, **changes: Any
    ) -> Schedule:
        """Change a schedule's fields (those of create_schedule but `name`; `grace` in
        seconds). A new cron or timezone starts from the next due time after now."""
        return self.send(update_schedule_call(name, changes), timeout)

    def pause_schedule(self, name: str, *, timeout: float | None = None) -> Schedule:
        return self.send(pause_schedule_call(name, True), timeout)

    def resume_schedule(self, name: str, *, timeout: float | None = None) -> Schedule:
        """Resume from the next due time after now: what passed while paused is not run."""
        return self.send(pause_schedule_call(name, False), timeout)

    def delete_schedule(self, name: str, *, timeout: float | None = None) -> Schedule:
        """Delete a schedule (the jobs it made stay); returns it as it was."""
        return self.send(delete_schedule_call(name), timeout)

    # --- queue flow (pause, limits): changing one needs an admin key --------------------------

    def get_queue(self, name: str, *, timeout: float | None = None) -> QueueSettings:
        """A queue's flow settings, with its counts when it holds jobs."""
        return self.send(get_queue_call(name), timeout)

    def set_queue(
        self,
        name: str,
        *,
        paused: bool | None = None,
        concurrency: int | None = None,
        rate_limit: int | None = None,
        rate_period: float | timedelta | None = None,
        max_latency: float | timedelta | None = None,
        timeout: float | None = None,
    ) -> QueueSettings:
        """Change a queue's flow: None keeps a setting, 0 removes a limit. `rate_limit`
        leases at most per `rate_period` (seconds or a timedelta), a sliding window."""
        fields = {"paused": paused, "concurrency": concurrency, "rate_limit": rate_limit,
                  "rate_period": rate_period, "max_latency": max_latency}  # fmt: skip
        return self.send(set_queue_call(fields, name), timeout)

    def pause_queue(self, name: str, *, timeout: float | None = None) -> QueueSettings:
        """Leases skip the queue until it is resumed; submits still land."""
        return self.send(pause_queue_call(name, True), timeout)

    def resume_queue(self, name: str, *, timeout: float | None = None) -> QueueSettings:
        return self.send(pause_queue_call(name, False), timeout)

    # -- the console (docs/api.md "The operator's console") -----------------------------------

    def workers(
        self, *, cursor: str | None = None, limit: int | None = None, timeout: float | None = None
    ) -> WorkerPage:
        """Live workers by id (GET /workers): leases held, last seen, queues asked for."""
        return self.send(workers_call(cursor, limit), timeout)

    def forget_worker(self, worker_id: str, *, timeout: float | None = None) -> ForgottenWorker:
        """A worker that stopped: GET /workers of this node drops it at once, instead of 5
        minutes after its last poll (leases it still holds keep it listed). Worker and
        AsyncWorker do this when they stop."""
        return self.send(forget_worker_call(worker_id), timeout)

    def queue(
        self,
        name: str,
        *,
        cursor: str | None = None,
        limit: int | None = None,
        timeout: float | None = None,
    ) -> QueueDetail:
        """One queue: counts, latency, throughput, leases held (QueueNotFound when empty)."""
        return self.send(queue_call(name, cursor, limit), timeout)

    def history(
        self, *, window: str = "1h", queue: str | None = None, timeout: float | None = None
    ) -> History:
        """Per-minute submitted/acked/failed counts over `window` ("1h" or "24h")."""
        return self.send(history_call(window, queue), timeout)

    def bulk_requeue(
        self,
        *,
        queue: str | None = None,
        error: str | None = None,
        id_prefix: str | None = None,
        limit: int | None = None,
        timeout: float | None = None,
    ) -> BulkResult:
        """Requeue every DEAD job matching the filter (in logged chunks of 500)."""
        call = bulk_call("requeue", queue=queue, error=error, id_prefix=id_prefix, limit=limit)
        return self.send(call, timeout)

    def bulk_cancel(
        self,
        *,
        queue: str | None = None,
        states: Iterable[str] | None = None,
        error: str | None = None,
        id_prefix: str | None = None,
        limit: int | None = None,
        timeout: float | None = None,
    ) -> BulkResult:
        """Cancel every READY/RETRY/SCHEDULED job (or those of `states`) matching the filter."""
        call = bulk_call(
            "cancel",
            queue=queue,
            states=None if states is None else list(states),
            error=error,
            id_prefix=id_prefix,
            limit=limit,
        )
        return self.send(call, timeout)

    def events(self, *, timeout: float | None = None) -> EventStream:
        """`GET /events` as typed events (`JobEvent`, `Stats`): `for event in
        client.events()`. Not retried; see sdk/sse.py."""
        return EventStream(self._open_events, self.timeout if timeout is None else timeout)

    def wait_for_completion(self, job_id: str, timeout: float = 60.0) -> Job:
        """Block until the job is ACKED, DEAD or CANCELLED, listening on /events rather than
        polling; raises WaitTimeout after `timeout` seconds (the whole wait; each request
        takes the client's timeout)."""
        plan = Plan(wait_plan(job_id, timeout, self.backoff_delay))
        while (step := plan.next_step()) is not None:
            try:
                plan.done(self._do(step))
            except Exception as error:
                plan.failed(error)
        return plan.result

    # -- insight (issue 19): explain, progress, dead-letter groups ----------------------------

    def explain(self, job_id: str, *, timeout: float | None = None) -> Explanation:
        """Why the job is where it is: a reason, one sentence, and its fields."""
        return self.send(explain_call(job_id), timeout)

    def progress(
        self,
        job_id: str,
        progress: float,
        note: str = "",
        *,
        lease_id: str | None = None,
        timeout: float | None = None,
    ) -> Progress | None:
        """Report a running attempt's progress (0..1) and a short note. Inside a worker's
        handler, `job.progress(...)` does this in the background."""
        problem = progress_problem(progress, note)
        if problem:
            raise ValueError(problem)
        return self.send(progress_call(job_id, progress, note, lease_id), timeout)

    def dead_groups(self, *, timeout: float | None = None) -> DeadGroups:
        """The DEAD jobs grouped by their last error's fingerprint, biggest group first."""
        return self.send(dead_groups_call(), timeout)

    def requeue_dead_group(
        self, fingerprint: str, *, chunk: int | None = None, timeout: float | None = None
    ) -> DeadGroupSettled:
        """Requeue every job of the group that died before the request (`chunk` jobs per
        logged command on the server)."""
        return self.send(settle_group_call(fingerprint, "requeue", chunk), timeout)

    def cancel_dead_group(
        self, fingerprint: str, *, chunk: int | None = None, timeout: float | None = None
    ) -> DeadGroupSettled:
        """Cancel every job of the group that died before the request: CANCELLED for good."""
        return self.send(settle_group_call(fingerprint, "cancel", chunk), timeout)

    def _do(self, step: Step) -> Any:
        if isinstance(step, Get):
            return self.get(step.job_id)
        if isinstance(step, Sleep):
            return time.sleep(step.seconds)
        if isinstance(step, Listen):
            return self.events().open()
        return step.stream.next_event(step.wait)


class AsyncClient(BaseClient):
    """The asyncio client: the same API as `Client`, every method awaited (`events()` and
    `iter_jobs()` are iterated with `async for`)."""

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
        verify: Verify = True,
        worker_id: str | None = None,
    ) -> None:
        super().__init__(
            url,
            key,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            worker_id=worker_id,
        )
        self._pool = AsyncHttp11Pool(
            self.url, self.headers, max_connections=max_connections, verify=verify
        )
        self._node_pools: dict[str, AsyncHttp11Pool] = {}  # sharded mode: other nodes
        self._pool_options = (max_connections, verify)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._pool.aclose()
        pools, self._node_pools = self._node_pools, {}
        for pool in pools.values():
            await pool.aclose()

    def _pool_at(self, url: str | None) -> AsyncHttp11Pool:
        if url is None:
            return self._pool
        pool = self._node_pools.get(url)
        if pool is None:
            connections, verify = self._pool_options
            pool = AsyncHttp11Pool(url, self.headers, max_connections=connections, verify=verify)
            self._node_pools[url] = pool
        return pool

    async def send(self, call: Call[T], timeout: float | None = None) -> T:
        """Send one call (retried as it allows); its typed answer."""
        attempt = 0
        while True:
            try:
                routed = self.routes.url_for(call.queue)
                try:
                    status, content, placement = await self._pool_at(routed).exchange(
                        call.method,
                        call.path,
                        body=call.encoded_body(),
                        params=call.params or None,
                        timeout=self.call_timeout(call, timeout),
                    )
                except TransportFailure as exc:
                    if self.unroute(call, routed, exc):
                        continue  # nothing was sent: the client's own URL takes it
                    raise self.unreachable(call, exc) from exc
                self.learn_route(call, placement)
                return self.read_answer(call, status, content)
            except JqError as error:
                if not self.should_retry(call, error, attempt):
                    raise
                await asyncio.sleep(self.backoff_delay(attempt))
                attempt += 1

    async def _open_events(self, timeout: float) -> AsyncStreamedAnswer:
        call = events_call()
        try:
            answer = await self._pool.stream(call.method, call.path, timeout=timeout)
            if 200 <= answer.status < 300:
                return answer
            content = await answer.read_all(timeout)
        except TransportFailure as exc:
            raise self.unreachable(call, exc) from exc
        raise self.refusal(call, answer.status, content)

    # --- the API ------------------------------------------------------------------------

    async def submit(
        self,
        payload: object,
        *,
        max_retries: int = 3,
        priority: int = 0,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        queue: str = "default",
        idempotency_key: str | None = None,
        timeout: float | None = None,
        unique_key: str | None = None,
        unique_scope: str | None = None,
        unique_period: float | timedelta | None = None,
        depends_on: Iterable[str] | None = None,
        on_parent_failure: str | None = None,
    ) -> str:
        spec = submit_spec(
            payload, max_retries, priority, delay, run_at, queue, idempotency_key,
            unique_key=unique_key, unique_scope=unique_scope, unique_period=unique_period,
            depends_on=None if depends_on is None else list(depends_on),
            on_parent_failure=on_parent_failure,
        )  # fmt: skip
        try:
            return await self.send(submit_call(spec), timeout)
        except OutcomeUnknown as exc:
            exc.idempotency_key = spec.idempotency_key
            raise

    async def submit_many(
        self, jobs: Iterable[JobSpec | Mapping[str, Any]], *, timeout: float | None = None
    ) -> builtins.list[SubmitResult]:
        results: builtins.list[SubmitResult] = []
        for batch in batches(keyed_specs(jobs)):
            answers = await self.send(batch_call(batch), timeout)
            results.extend(answers)
        return results

    async def get(self, job_id: str, *, timeout: float | None = None) -> Job:
        return await self.send(get_call(job_id), timeout)

    async def list(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        id_prefix: str | None = None,
        error: str | None = None,
        timeout: float | None = None,
    ) -> Page:
        return await self.send(list_call(state, queue, limit, cursor, id_prefix, error), timeout)

    async def iter_jobs(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        page_size: int = 200,
        id_prefix: str | None = None,
        error: str | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Job]:
        cursor: str | None = None
        while True:
            page = await self.send(
                list_call(state, queue, page_size, cursor, id_prefix, error), timeout
            )
            for job in page.jobs:
                yield job
            if not page.next_cursor:  # a search's page may be empty with a cursor
                return
            cursor = page.next_cursor

    async def stats(self, *, timeout: float | None = None) -> Stats:
        return await self.send(stats_call(), timeout)

    async def health(self, *, timeout: float | None = None) -> dict[str, Any]:
        return await self.send(health_call(), timeout)

    async def cancel(self, job_id: str, *, timeout: float | None = None) -> Settled:
        return await self.send(settle_call(job_id, "cancel"), timeout)

    async def requeue(self, job_id: str, *, timeout: float | None = None) -> Settled:
        return await self.send(settle_call(job_id, "requeue"), timeout)

    async def lease(
        self,
        *,
        queue: str = "default",
        wait: float | timedelta = 0.0,
        max_jobs: int = 1,
        lease_ms: int | None = None,
        timeout: float | None = None,
    ) -> builtins.list[LeasedJob]:
        return await self.send(lease_call(queue, wait, max_jobs, lease_ms), timeout)

    async def ack(
        self,
        job_id: str,
        result: object = None,
        *,
        lease_id: str | None,
        timeout: float | None = None,
    ) -> Settled:
        return await self.send(ack_call(job_id, result, lease_id), timeout)

    async def fail(
        self,
        job_id: str,
        error: str,
        *,
        lease_id: str | None,
        retry: bool = True,
        timeout: float | None = None,
    ) -> Settled:
        """A failed attempt: RETRY with backoff, or DEAD when retries are spent;
        `retry=False` makes it final (DEAD at once)."""
        return await self.send(fail_call(job_id, error, lease_id, retry), timeout)

    async def ack_many(
        self,
        settlements: Iterable[Settlement],
        *,
        lease_next: int = 0,
        queue: str = "default",
        lease_ms: int | None = None,
        timeout: float | None = None,
    ) -> BatchAck:
        results: builtins.list[AckResult] = []
        leased: builtins.list[LeasedJob] = []
        for call in self.ack_many_calls(settlements, lease_next, queue, lease_ms):
            answer = await self.send(call, timeout)
            results.extend(answer.results)
            leased.extend(answer.leased)
        return BatchAck(results, leased)

    async def release(
        self,
        job_id: str,
        *,
        lease_id: str | None,
        delay: float | timedelta = 0,
        timeout: float | None = None,
    ) -> Settled:
        """Give a lease back unfinished: the job is READY again after `delay` (seconds or a
        timedelta; scheduled until then), and the attempt this lease began is not counted
        (it never brings the job closer to DEAD). 409 (`LeaseLost` or `InvalidState`)
        when the lease is no longer the job's."""
        return await self.send(release_call(job_id, lease_id, delay), timeout)

    async def extend(
        self,
        job_id: str,
        *,
        lease_id: str | None,
        lease_ms: int | None = None,
        progress: float | None = None,
        note: str = "",
        timeout: float | None = None,
    ) -> Extended:
        return await self.send(extend_call(job_id, lease_id, lease_ms, progress, note), timeout)

    async def create_key(
        self, name: str, owner_id: str, type: str, *, timeout: float | None = None
    ) -> CreatedKey:
        return await self.send(create_key_call(name, owner_id, type), timeout)

    async def list_keys(
        self, all: bool = False, *, timeout: float | None = None
    ) -> builtins.list[Key]:
        return await self.send(list_keys_call(all), timeout)

    async def revoke_key(self, key: str, *, timeout: float | None = None) -> RevokedKey:
        return await self.send(revoke_key_call(key), timeout)

    # --- schedules (periodic jobs) ----------------------------------------------------------

    async def create_schedule(
        self,
        name: str,
        cron: str,
        payload: object,
        *,
        timezone: str = "UTC",
        queue: str = "default",
        priority: int = 0,
        max_retries: int = 3,
        overlap: str = "allow",
        missed: str = "skip",
        grace: float | timedelta = 60.0,
        paused: bool = False,
        timeout: float | None = None,
    ) -> Schedule:
        fields = self.schedule_definition(
            name, cron, payload, timezone, queue, priority, max_retries, overlap, missed,
            grace, paused,
        )  # fmt: skip
        return await self.send(create_schedule_call(fields), timeout)

    async def list_schedules(
        self, *, cursor: str | None = None, limit: int | None = None, timeout: float | None = None
    ) -> SchedulePage:
        return await self.send(list_schedules_call(cursor, limit), timeout)

    async def iter_schedules(
        self, *, page_size: int = 200, timeout: float | None = None
    ) -> AsyncIterator[Schedule]:
        cursor: str | None = None
        while True:
            page = await self.send(list_schedules_call(cursor, page_size), timeout)
            for schedule in page.schedules:
                yield schedule
            if not page.next_cursor or not page.schedules:
                return
            cursor = page.next_cursor

    async def get_schedule(self, name: str, *, timeout: float | None = None) -> Schedule:
        return await self.send(get_schedule_call(name), timeout)

    async def update_schedule(
        self, name: str, *, timeout: float | None = None, **changes: Any
    ) -> Schedule:
        return await self.send(update_schedule_call(name, changes), timeout)

    async def pause_schedule(self, name: str, *, timeout: float | None = None) -> Schedule:
        return await self.send(pause_schedule_call(name, True), timeout)

    async def resume_schedule(self, name: str, *, timeout: float | None = None) -> Schedule:
        return await self.send(pause_schedule_call(name, False), timeout)

    async def get_queue(self, name: str, *, timeout: float | None = None) -> QueueSettings:
        return await self.send(get_queue_call(name), timeout)

    async def set_queue(
        self,
        name: str,
        *,
        paused: bool | None = None,
        concurrency: int | None = None,
        rate_limit: int | None = None,
        rate_period: float | timedelta | None = None,
        max_latency: float | timedelta | None = None,
        timeout: float | None = None,
    ) -> QueueSettings:
        fields = {"paused": paused, "concurrency": concurrency, "rate_limit": rate_limit,
                  "rate_period": rate_period, "max_latency": max_latency}  # fmt: skip
        return await self.send(set_queue_call(fields, name), timeout)

    async def pause_queue(self, name: str, *, timeout: float | None = None) -> QueueSettings:
        return await self.send(pause_queue_call(name, True), timeout)

    async def resume_queue(self, name: str, *, timeout: float | None = None) -> QueueSettings:
        return await self.send(pause_queue_call(name, False), timeout)

    async def delete_schedule(self, name: str, *, timeout: float | None = None) -> Schedule:
        return await self.send(delete_schedule_call(name), timeout)

    # -- the console (docs/api.md "The operator's console") -----------------------------------

    async def workers(
        self, *, cursor: str | None = None, limit: int | None = None, timeout: float | None = None
    ) -> WorkerPage:
        return await self.send(workers_call(cursor, limit), timeout)

    async def forget_worker(
        self, worker_id: str, *, timeout: float | None = None
    ) -> ForgottenWorker:
        return await self.send(forget_worker_call(worker_id), timeout)

    async def queue(
        self,
        name: str,
        *,
        cursor: str | None = None,
        limit: int | None = None,
        timeout: float | None = None,
    ) -> QueueDetail:
        return await self.send(queue_call(name, cursor, limit), timeout)

    async def history(
        self, *, window: str = "1h", queue: str | None = None, timeout: float | None = None
    ) -> History:
        return await self.send(history_call(window, queue), timeout)

    async def bulk_requeue(
        self,
        *,
        queue: str | None = None,
        error: str | None = None,
        id_prefix: str | None = None,
        limit: int | None = None,
        timeout: float | None = None,
    ) -> BulkResult:
        call = bulk_call("requeue", queue=queue, error=error, id_prefix=id_prefix, limit=limit)
        return await self.send(call, timeout)

    async def bulk_cancel(
        self,
        *,
        queue: str | None = None,
        states: Iterable[str] | None = None,
        error: str | None = None,
        id_prefix: str | None = None,
        limit: int | None = None,
        timeout: float | None = None,
    ) -> BulkResult:
        call = bulk_call(
            "cancel",
            queue=queue,
            states=None if states is None else list(states),
            error=error,
            id_prefix=id_prefix,
            limit=limit,
        )
        return await self.send(call, timeout)

    def events(self, *, timeout: float | None = None) -> AsyncEventStream:
        """`GET /events` as typed events: `async for event in client.events()`."""
        return AsyncEventStream(self._open_events, self.timeout if timeout is None else timeout)

    async def wait_for_completion(self, job_id: str, timeout: float = 60.0) -> Job:
        plan = Plan(wait_plan(job_id, timeout, self.backoff_delay))
        while (step := plan.next_step()) is not None:
            try:
                plan.done(await self._do(step))
            except Exception as error:
                plan.failed(error)
        return plan.result

    # -- insight (issue 19): explain, progress, dead-letter groups ----------------------------

    async def explain(self, job_id: str, *, timeout: float | None = None) -> Explanation:
        """Why the job is where it is: a reason, one sentence, and its fields."""
        return await self.send(explain_call(job_id), timeout)

    async def progress(
        self,
        job_id: str,
        progress: float,
        note: str = "",
        *,
        lease_id: str | None = None,
        timeout: float | None = None,
    ) -> Progress | None:
        """Report a running attempt's progress (0..1) and a short note. Inside a worker's
        handler, `job.progress(...)` does this in the background."""
        problem = progress_problem(progress, note)
        if problem:
            raise ValueError(problem)
        return await self.send(progress_call(job_id, progress, note, lease_id), timeout)

    async def dead_groups(self, *, timeout: float | None = None) -> DeadGroups:
        """The DEAD jobs grouped by their last error's fingerprint, biggest group first."""
        return await self.send(dead_groups_call(), timeout)

    async def requeue_dead_group(
        self, fingerprint: str, *, chunk: int | None = None, timeout: float | None = None
    ) -> DeadGroupSettled:
        """Requeue every job of the group that died before the request (`chunk` jobs per
        logged command on the server)."""
        return await self.send(settle_group_call(fingerprint, "requeue", chunk), timeout)

    async def cancel_dead_group(
        self, fingerprint: str, *, chunk: int | None = None, timeout: float | None = None
    ) -> DeadGroupSettled:
        """Cancel every job of the group that died before the request: CANCELLED for good."""
        return await self.send(settle_group_call(fingerprint, "cancel", chunk), timeout)

    async def _do(self, step: Step) -> Any:
        if isinstance(step, Get):
            return await self.get(step.job_id)
        if isinstance(step, Sleep):
            return await asyncio.sleep(step.seconds)
        if isinstance(step, Listen):
            return await self.events().open()
        return await step.stream.next_event(step.wait)
