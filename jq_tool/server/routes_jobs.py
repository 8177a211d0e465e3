"""The job routes of docs/api.md: submit (single and batch), lease, ack/fail, extend, cancel,
requeue, get and list. Jobs only: health, stats and metrics are `routes_monitoring.py`'s, the
/events stream is `events.py`'s.

Each route is: authorize (scope), read and decode the body (`requests.py` into the Structs of
`validation.py`), one engine call, answer with a Struct of `wire.py`. Errors are raised, never
rendered here: `errors.py` owns the status table. The engine answers only once a write is
durable, so a 201 from POST /jobs means the job is on disk.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable

import msgspec
from msgspec import UNSET
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from jq_tool.auth import ApiKey, KeyType, Scope
from jq_tool.core.model import ErrorCode, Job, JobState, UniqueScope
from jq_tool.engine.base import (
    SCHEDULED,
    CommandRejected,
    Engine,
    JobFilter,
    JobSpec,
    LeaseNext,
    Settlement,
    SubmitOutcome,
)
from jq_tool.server.auth_guard import Guard, require_scope
from jq_tool.server.errors import ApiError, invalid_field, not_found
from jq_tool.server.requests import (
    check_size,
    check_value,
    decode,
    decode_query,
    header,
    read_body,
)
from jq_tool.server.validation import (
    AckBatchBody,
    AckBody,
    BatchBody,
    EmptyBody,
    ExtendBody,
    IdempotencyKey,
    LeaseBody,
    ListQuery,
    ListState,
    ReleaseBody,
    SubmitBody,
    WorkerId,
)
from jq_tool.server.wire import (
    AckBatchAnswer,
    AckResult,
    BatchRefusal,
    JobPage,
    JSONResponse,
    SettledJob,
    SubmitAnswer,
    extended_body,
    job_body,
    leased_body,
    parse_rfc3339,
)
from jq_tool.server.workers import WorkerBook
from jq_tool.settings import Settings

SEARCH_SCAN_LIMIT = 20_000  # jobs one GET /jobs search examines (docs/api.md): ~10 ms
_SMALL_BODY = 64 * 1024  # lease/extend/cancel bodies carry a few ids and numbers
# A message, not a shared ApiError: an exception object raised again keeps every raise's frames
# (server/auth_guard.py says why), and an idle worker's empty polls raise this all day.
_NO_JOBS = "no jobs available"


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection. Only for a request whose body has been
    read: then the next ASGI message can only be the disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class JobRoutes(msgspec.Struct, frozen=True):
    engine: Engine
    guard: Guard
    settings: Settings
    counts: defaultdict[str, int]  # engine commands by type, for /metrics
    draining: asyncio.Event
    workers: WorkerBook  # who asked for work when (soft state for GET /workers)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/jobs", self.submit, methods=["POST"]),
            Route("/jobs", self.list_jobs, methods=["GET"]),
            Route("/jobs/batch", self.submit_batch, methods=["POST"]),
            Route("/jobs/lease", self.lease, methods=["POST"]),
            Route("/jobs/ack", self.ack_batch, methods=["POST"]),
            Route("/jobs/{id}", self.get_job, methods=["GET"]),
            Route("/jobs/{id}/ack", self.ack, methods=["POST"]),
            Route("/jobs/{id}/extend", self.extend, methods=["POST"]),
            Route("/jobs/{id}/release", self.release, methods=["POST"]),
            Route("/jobs/{id}/cancel", self.cancel, methods=["POST"]),
            Route("/jobs/{id}/requeue", self.requeue, methods=["POST"]),
        ]

    # --- submit ---------------------------------------------------------------------------------

    def _spec(
        self,
        body: SubmitBody,
        idempotency_key: str | None,
        owner: str,
        batch_index: dict[int, int] | None = None,
    ) -> JobSpec:
        """The JobSpec of a submit body. `batch_index`: for an entry of a batch, the spec
        index of each earlier accepted entry by its position, to resolve "$N" parents."""
        check_size(body.payload, self.settings.max_payload, "payload")
        period_scope = body.unique_scope is UniqueScope.PERIOD and body.unique_key is not None
        if period_scope and body.unique_period_ms is None:
            raise invalid_field("unique_period_ms", "unique_scope period needs unique_period_ms")
        parents = body.depends_on
        if parents and any(parent.startswith("$") for parent in parents):
            parents = [_batch_parent(parent, batch_index) for parent in parents]
        run_at: int | None = None
        if body.run_at is not None:
            if body.delay_ms is not None:
                raise invalid_field("run_at", "give delay_ms or run_at, not both")
            try:
                run_at = parse_rfc3339(body.run_at)
            except ValueError as exc:
                raise invalid_field("run_at", f"invalid run_at: {exc}") from None
        return JobSpec(
            payload=body.payload,
            queue=body.queue,
            priority=body.priority,
            max_retries=body.max_retries,
            run_at=run_at,
            delay_ms=body.delay_ms,
            idempotency_key=body.idempotency_key or idempotency_key,
            owner=owner,  # idempotency keys are the submitting key's owner's own
            unique_key=body.unique_key,
            unique_scope=body.unique_scope,
            unique_period_ms=body.unique_period_ms or 0,
            depends_on=parents,
            on_parent_failure=body.on_parent_failure,
        )

    async def submit(self, request: Request) -> Response:
        caller = await self.guard.require(request, Scope.JOBS_SUBMIT)
        body = decode(await read_body(request, self.settings.max_body), SubmitBody)
        header_key = header(request, b"idempotency-key")
        if header_key is not None:
            check_value(header_key, IdempotencyKey, "Idempotency-Key")
        spec = self._spec(body, header_key, caller.owner_id)
        self.counts["submit"] += 1
        outcome = await self.engine.submit(spec)
        if outcome.error is not None or outcome.job_id is None:
            raise _refused(outcome)
        if outcome.unique:
            return JSONResponse(SubmitAnswer(outcome.job_id, UNSET, True))
        if outcome.duplicate:
            return JSONResponse(SubmitAnswer(outcome.job_id, True))
        return JSONResponse(SubmitAnswer(outcome.job_id), status_code=201)

    async def submit_batch(self, request: Request) -> Response:
        caller = await self.guard.require(request, Scope.JOBS_SUBMIT)
        batch = decode(await read_body(request, self.settings.max_batch_body), BatchBody)
        results: list[SubmitAnswer | BatchRefusal | None] = []
        specs: list[JobSpec] = []
        positions: list[int] = []
        spec_of_position: dict[int, int] = {}
        for raw in batch.jobs:
            try:
                body = decode(bytes(raw), SubmitBody)
                spec = self._spec(body, None, caller.owner_id, spec_of_position)
            except ApiError as exc:
                results.append(BatchRefusal(exc.message, exc.field, exc.code))
                continue
            spec_of_position[len(results)] = len(specs)
            positions.append(len(results))
            results.append(None)
            specs.append(spec)
        if specs:
            self.counts["submit"] += 1
            outcomes = await self.engine.submit_many(specs)
            for position, outcome in zip(positions, outcomes, strict=True):
                if outcome.error is not None or outcome.job_id is None:
                    refusal = _refused(outcome)
                    results[position] = BatchRefusal(refusal.message, None, refusal.code.value)
                else:
                    results[position] = SubmitAnswer(
                        outcome.job_id, outcome.duplicate, True if outcome.unique else UNSET
                    )
        return JSONResponse({"results": results}, status_code=201)

    # --- lease and settle -------------------------------------------------------------------

    async def lease(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_LEASE)
        body = decode(await read_body(request, _SMALL_BODY), LeaseBody)
        worker = self._worker(request, body.queue)
        self.counts["lease"] += 1
        wait_ms = 0 if self.draining.is_set() else body.wait_ms or 0
        jobs = await self.engine.lease(
            body.queue,
            max_jobs=body.max_jobs or 1,
            lease_ms=body.lease_ms,
            wait_ms=wait_ms,
            give_up=lambda: self._give_up(request),
            worker=worker,
        )
        if not jobs and wait_ms and self.draining.is_set():
            raise ApiError(503, "unavailable", "server is shutting down")
        if not jobs:
            raise ApiError(404, "not_found", _NO_JOBS)
        if body.max_jobs is None:
            return JSONResponse(leased_body(jobs[0]))
        return JSONResponse([leased_body(job) for job in jobs])

    def _worker(self, request: Request, queue: str) -> str | None:
        """The worker id of `X-Jq-Worker` (optional; 400 when malformed), noted as seen."""
        worker = header(request, b"x-jq-worker")
        if worker is not None:
            check_value(worker, WorkerId, "X-Jq-Worker")
            self.workers.seen(worker, queue)
        return worker

    async def _give_up(self, request: Request) -> None:
        """When a long poll stops waiting: the server starts draining (a long poll must not hold
        up a graceful shutdown) or the client goes away (a job leased to a closed connection
        would sit RUNNING until its lease expired, and cost an attempt)."""
        drain_task = asyncio.ensure_future(self.draining.wait())
        gone_task = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({drain_task, gone_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            drain_task.cancel()
            gone_task.cancel()

    async def ack(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_ACK)
        body = decode(await read_body(request, self.settings.max_body), AckBody)
        job_id = request.path_params["id"]
        if body.result_error:
            check_size(body.result_error, self.settings.max_payload, "result_error")
            self.counts["fail"] += 1
            job = await self.engine.fail(
                job_id, lease_id=body.lease_id, error=body.result_error, retry=body.retry
            )
        else:
            if body.result is not None:
                check_size(body.result, self.settings.max_payload, "result")
            self.counts["ack"] += 1
            job = await self.engine.ack(job_id, lease_id=body.lease_id, result=body.result)
        return JSONResponse(SettledJob(job.id, job.state))

    async def ack_batch(self, request: Request) -> Response:
        """Batch ack and ack-and-lease-next: settle many leases and lease the next jobs in one
        durable write. Each entry is settled or refused on its own, like POST /jobs/batch."""
        key = await self.guard.require(request, Scope.JOBS_ACK)
        body = decode(await read_body(request, self.settings.max_batch_body), AckBatchBody)
        lease_next: LeaseNext | None = None
        if body.lease_next is not None:
            require_scope(key, Scope.JOBS_LEASE)  # the key once: a hash per request is enough
            wanted = body.lease_next
            worker = self._worker(request, wanted.queue)
            lease_next = LeaseNext(wanted.queue, wanted.max_jobs, wanted.lease_ms, worker)
            self.counts["lease"] += 1
        elif (worker := header(request, b"x-jq-worker")) is not None:
            # Nothing is leased, so the id is not used; a malformed one is still refused, as
            # the API describes the header on this route (found by schemathesis).
            check_value(worker, WorkerId, "X-Jq-Worker")
        results: list[AckResult] = []
        settlements: list[Settlement] = []
        positions: list[int] = []
        limit = self.settings.max_payload
        for entry in body.acks:
            try:
                if entry.result_error:
                    check_size(entry.result_error, limit, "result_error")
                elif entry.result is not None:
                    check_size(entry.result, limit, "result")
            except ApiError as exc:
                results.append(AckResult(entry.job_id, error=exc.message, code=exc.code))
                if exc.field is not None:
                    results[-1].field = exc.field
                continue
            self.counts["fail" if entry.result_error else "ack"] += 1
            positions.append(len(results))
            results.append(AckResult(entry.job_id))
            settlements.append(
                Settlement(
                    entry.job_id, entry.lease_id, entry.result, entry.result_error, entry.retry
                )
            )
        outcomes, leased = await self.engine.settle_many(settlements, lease_next=lease_next)
        for position, outcome in zip(positions, outcomes, strict=True):
            result = results[position]
            if isinstance(outcome, CommandRejected):
                result.error, result.code = outcome.message, outcome.code.value
            else:
                result.state = outcome.state
        return JSONResponse(AckBatchAnswer(results, [leased_body(job) for job in leased]))

    async def extend(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_ACK)
        body = decode(await read_body(request, _SMALL_BODY), ExtendBody)
        self.counts["extend"] += 1
        job = await self.engine.extend(
            request.path_params["id"], lease_id=body.lease_id, lease_ms=body.lease_ms
        )
        if body.progress is not None:  # issue 19: progress with the extension
            self.counts["progress"] += 1
            await self.engine.progress(
                job.id, lease_id=body.lease_id, percent=float(body.progress), note=body.note
            )
        return JSONResponse(extended_body(job))

    async def release(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_ACK)
        body = decode(await read_body(request, _SMALL_BODY), ReleaseBody)
        self.counts["release"] += 1
        job = await self.engine.release(
            request.path_params["id"], lease_id=body.lease_id, delay_ms=body.delay_ms
        )
        return JSONResponse(SettledJob(job.id, job.state))

    # --- an operator's moves ------------------------------------------------------------------

    async def cancel(self, request: Request) -> Response:
        return await self._move(request, "cancel", self.engine.cancel)

    async def requeue(self, request: Request) -> Response:
        return await self._move(request, "requeue", self.engine.requeue)

    async def _move(
        self, request: Request, command: str, move: Callable[[str], Awaitable[Job]]
    ) -> Response:
        """Cancel a waiting job or requeue a dead one: no body, the job's new state back."""
        await self.guard.require(request, Scope.JOBS_SUBMIT)
        decode(await read_body(request, _SMALL_BODY), EmptyBody)
        self.counts[command] += 1
        job = await move(request.path_params["id"])
        return JSONResponse(SettledJob(job.id, job.state))

    # --- reads --------------------------------------------------------------------------------

    async def get_job(self, request: Request) -> Response:
        caller = await self.guard.require(request, Scope.JOBS_READ)
        job_id = request.path_params["id"]
        job = await self.engine.get(job_id)
        if job is None:
            # No longer held in memory (issue 21): its final record from the history store,
            # to its owner's keys and admin keys only. A record of a log written before jobs
            # had owners (owner "") answers any reader, as it did while it was in memory.
            job = await self.engine.get_finished(job_id)
            if job is None or not _may_read_history(caller, job):
                raise not_found()
        return JSONResponse(job_body(job))

    async def list_jobs(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_READ)
        # The states' names in any case.
        query = decode_query(request.query_params, ListQuery, any_case=("state",))
        state = query.state
        try:
            if state is ListState.SCHEDULED or query.id_prefix or query.error:
                # A search: a bounded scan (docs/api.md), continued through the cursor.
                where = JobFilter(
                    labels=None if state is None else _labels(state),
                    queue=query.queue,
                    id_prefix=query.id_prefix,
                    error=query.error,
                )
                jobs, next_cursor = self.engine.search(
                    where, limit=query.limit, cursor=query.cursor, scan_limit=SEARCH_SCAN_LIMIT
                )
            else:
                jobs, next_cursor = await self.engine.list(
                    state=None if state is None else JobState(state.value),
                    queue=query.queue,
                    limit=query.limit,
                    cursor=query.cursor,
                )
        except ValueError:
            raise invalid_field("cursor", "cursor is not one this server gave out") from None
        return JSONResponse(
            JobPage([job_body(job, with_payload=False) for job in jobs], next_cursor)
        )


def _may_read_history(caller: ApiKey, job: Job) -> bool:
    return not job.owner or caller.owner_id == job.owner or caller.type is KeyType.ADMIN


def _batch_parent(parent: str, batch_index: dict[int, int] | None) -> str:
    """A depends_on entry: a job id as it is, or "$N" (entry N of this batch, before this
    one, itself accepted) as "$K" with K its index among the submitted specs."""
    if not parent.startswith("$"):
        return parent
    digits = parent[1:]
    if batch_index is None:
        raise invalid_field("depends_on", f"{parent!r}: a $N parent names a batch entry")
    if not (digits.isascii() and digits.isdigit()) or int(digits) not in batch_index:
        raise invalid_field(
            "depends_on",
            f"{parent!r} must name an earlier, accepted entry of this batch ($0, $1, ...)",
        )
    return f"${batch_index[int(digits)]}"


def _labels(state: ListState) -> frozenset[str]:
    """The search labels of a listed state: READY lists due and scheduled READY jobs alike,
    as GET /jobs always did; SCHEDULED only the latter."""
    if state is ListState.READY:
        return frozenset({"READY", SCHEDULED})
    return frozenset({state.value})


def _refused(outcome: SubmitOutcome) -> CommandRejected:
    """A submit the state machine refused, as errors.py's table knows it: a reused idempotency
    key (422), the queue cap (429), or a malformed job (400)."""
    return CommandRejected(outcome.code or ErrorCode.INVALID, outcome.error or "job refused")
