"""The job routes of docs/api.md: submit (single and batch), lease, ack, extend, cancel,
requeue, get, list, stats, the /events stream and its tickets, metrics and health.

Each route is: authorize (scope), read and decode the body, one engine call, shape the answer.
Errors are raised, never rendered here: `errors.py` owns the status table. The engine answers
only once a write is durable, so a 201 from POST /jobs means the job is on disk.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from jq_tool.auth import Scope
from jq_tool.core.model import JobState
from jq_tool.engine.base import Engine, JobSpec
from jq_tool.server.auth_guard import Guard
from jq_tool.server.errors import ApiError, invalid_field, not_found
from jq_tool.server.events import TicketBook, event_stream
from jq_tool.server.metrics import PROMETHEUS_CONTENT_TYPE, RequestCounts, render
from jq_tool.server.stats import StatsView
from jq_tool.server.validation import (
    AckBody,
    BatchBody,
    EmptyBody,
    ExtendBody,
    LeaseBody,
    SubmitBody,
    check_payload_size,
    decode,
    header,
    read_body,
)
from jq_tool.server.wire import JSONResponse, job_body, leased_body, parse_rfc3339, rfc3339
from jq_tool.settings import Settings

_SMALL_BODY = 64 * 1024  # lease/extend/cancel bodies carry a few ids and numbers
_NO_JOBS = ApiError(404, "not_found", "no jobs available")
_STATES = {state.value: state for state in JobState}


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection. Only for a request whose body has been
    read: then the next ASGI message can only be the disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class JobRoutes:
    def __init__(
        self,
        engine: Engine,
        guard: Guard,
        settings: Settings,
        counts: RequestCounts,
        stats: StatsView,
        tickets: TicketBook,
        metrics_registry: Any,
        draining: asyncio.Event,
    ) -> None:
        self.engine = engine
        self.guard = guard
        self.settings = settings
        self.counts = counts.commands
        self.stats = stats
        self.tickets = tickets
        self.metrics_registry = metrics_registry
        self.draining = draining

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/health", self.health, methods=["GET"]),
            Route("/_noop", self.noop, methods=["POST"]),
            Route("/jobs", self.submit, methods=["POST"]),
            Route("/jobs", self.list_jobs, methods=["GET"]),
            Route("/jobs/batch", self.submit_batch, methods=["POST"]),
            Route("/jobs/lease", self.lease, methods=["POST"]),
            Route("/jobs/{id}", self.get_job, methods=["GET"]),
            Route("/jobs/{id}/ack", self.ack, methods=["POST"]),
            Route("/jobs/{id}/extend", self.extend, methods=["POST"]),
            Route("/jobs/{id}/cancel", self.cancel, methods=["POST"]),
            Route("/jobs/{id}/requeue", self.requeue, methods=["POST"]),
            Route("/stats", self.get_stats, methods=["GET"]),
            Route("/events", self.events, methods=["GET"]),
            Route("/events/ticket", self.issue_ticket, methods=["POST"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]

    # --- health and benchmarks ----------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        health = self.engine.health()
        if health.ok:
            return JSONResponse({"status": "ok", "role": health.role})
        body = {"status": "unavailable", "role": health.role, "reason": health.reason}
        return JSONResponse(body, status_code=503)

    async def noop(self, request: Request) -> Response:
        """The benchmark's baseline: read the body, answer. No auth, no engine."""
        await read_body(request, self.settings.max_body)
        return JSONResponse({"ok": True})

    # --- submit ---------------------------------------------------------------------------------

    def _spec(self, body: SubmitBody, idempotency_key: str | None) -> JobSpec:
        check_payload_size(body.payload, self.settings.max_payload, "payload")
        run_at: int | None = None
        if body.run_at is not None:
            if body.delay_ms is not None:
                raise invalid_field("run_at", "give delay_ms or run_at, not both")
            try:
                run_at = parse_rfc3339(body.run_at)
            except (ValueError, OverflowError, OSError):
                raise invalid_field(
                    "run_at", f"run_at {body.run_at!r} is not an RFC 3339 time"
                ) from None
        return JobSpec(
            payload=body.payload,
            queue=body.queue,
            priority=body.priority,
            max_retries=body.max_retries,
            run_at=run_at,
            delay_ms=body.delay_ms,
            idempotency_key=body.idempotency_key or idempotency_key,
        )

    async def submit(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_SUBMIT)
        body = decode(await read_body(request, self.settings.max_body), SubmitBody)
        header_key = header(request, b"idempotency-key")
        if header_key is not None and not 0 < len(header_key) <= 256:
            raise invalid_field("Idempotency-Key", "Idempotency-Key must be 1-256 characters")
        spec = self._spec(body, header_key)
        self.counts["submit"] += 1
        outcome = await self.engine.submit(spec)
        if outcome.error is not None or outcome.job_id is None:
            raise ApiError(400, "invalid_field", outcome.error or "job refused")
        if outcome.duplicate:
            return JSONResponse({"job_id": outcome.job_id, "duplicate": True})
        return JSONResponse({"job_id": outcome.job_id}, status_code=201)

    async def submit_batch(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_SUBMIT)
        batch = decode(await read_body(request, self.settings.max_batch_body), BatchBody)
        results: list[dict[str, Any] | None] = []
        specs: list[JobSpec] = []
        positions: list[int] = []
        for raw in batch.jobs:
            try:
                spec = self._spec(decode(bytes(raw), SubmitBody), None)
            except ApiError as exc:
                results.append({"error": exc.message, "field": exc.field})
                continue
            positions.append(len(results))
            results.append(None)
            specs.append(spec)
        if specs:
            self.counts["submit"] += 1
            outcomes = await self.engine.submit_many(specs)
            for position, outcome in zip(positions, outcomes, strict=True):
                if outcome.error is not None or outcome.job_id is None:
                    results[position] = {"error": outcome.error or "job refused", "field": None}
                else:
                    results[position] = {"job_id": outcome.job_id, "duplicate": outcome.duplicate}
        return JSONResponse({"results": results}, status_code=201)

    # --- lease and settle -------------------------------------------------------------------

    async def lease(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_LEASE)
        body = decode(await read_body(request, _SMALL_BODY), LeaseBody)
        self.counts["lease"] += 1
        wait_ms = 0 if self.draining.is_set() else body.wait_ms or 0
        jobs = await self.engine.lease(
            body.queue,
            max_jobs=body.max_jobs or 1,
            lease_ms=body.lease_ms,
            wait_ms=wait_ms,
            give_up=lambda: self._give_up(request),
        )
        if not jobs and wait_ms and self.draining.is_set():
            raise ApiError(503, "unavailable", "server is shutting down")
        if not jobs:
            raise _NO_JOBS
        if body.max_jobs is None:
            return JSONResponse(leased_body(jobs[0]))
        return JSONResponse([leased_body(job) for job in jobs])

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
            check_payload_size(body.result_error, self.settings.max_payload, "result_error")
            self.counts["fail"] += 1
            job = await self.engine.fail(job_id, lease_id=body.lease_id, error=body.result_error)
        else:
            if body.result is not None:
                check_payload_size(body.result, self.settings.max_payload, "result")
            self.counts["ack"] += 1
            job = await self.engine.ack(job_id, lease_id=body.lease_id, result=body.result)
        return JSONResponse({"job_id": job.id, "state": job.state.value})

    async def extend(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_ACK)
        body = decode(await read_body(request, _SMALL_BODY), ExtendBody)
        self.counts["extend"] += 1
        job = await self.engine.extend(
            request.path_params["id"], lease_id=body.lease_id, lease_ms=body.lease_ms
        )
        return JSONResponse({"job_id": job.id, "lease_until": rfc3339(job.lease_until)})

    async def cancel(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_SUBMIT)
        decode(await read_body(request, _SMALL_BODY), EmptyBody)
        self.counts["cancel"] += 1
        job = await self.engine.cancel(request.path_params["id"])
        return JSONResponse({"job_id": job.id, "state": job.state.value})

    async def requeue(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_SUBMIT)
        decode(await read_body(request, _SMALL_BODY), EmptyBody)
        self.counts["requeue"] += 1
        job = await self.engine.requeue(request.path_params["id"])
        return JSONResponse({"job_id": job.id, "state": job.state.value})

    # --- reads --------------------------------------------------------------------------------

    async def get_job(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_READ)
        job = await self.engine.get(request.path_params["id"])
        if job is None:
            raise not_found()
        return JSONResponse(job_body(job))

    async def list_jobs(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_READ)
        params = request.query_params
        state: JobState | None = None
        if params.get("state"):
            state = _STATES.get(params["state"].upper())
            if state is None:
                raise invalid_field("state", f"state must be one of {sorted(_STATES)}")
        limit = 50
        if params.get("limit"):
            text = params["limit"]
            if not text.isdigit() or not 1 <= int(text) <= 1000:
                raise invalid_field("limit", "limit must be an integer from 1 to 1000")
            limit = int(text)
        try:
            jobs, next_cursor = await self.engine.list(
                state=state,
                queue=params.get("queue") or None,
                limit=limit,
                cursor=params.get("cursor") or None,
            )
        except ValueError:
            raise invalid_field("cursor", "cursor is not one this server gave out") from None
        return JSONResponse(
            {
                "jobs": [job_body(job, with_payload=False) for job in jobs],
                "next_cursor": next_cursor,
            }
        )

    async def get_stats(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_READ)
        return JSONResponse(self.stats.body())

    async def metrics(self, request: Request) -> Response:
        await self.guard.require(request, Scope.JOBS_READ)
        return Response(render(self.metrics_registry), media_type=PROMETHEUS_CONTENT_TYPE)

    # --- live updates -------------------------------------------------------------------------

    async def issue_ticket(self, request: Request) -> Response:
        key = await self.guard.require(request, Scope.JOBS_READ)
        ticket, expires_at = self.tickets.issue(key)
        return JSONResponse({"ticket": ticket, "expires_at": expires_at})

    async def events(self, request: Request) -> Response:
        ticket = request.query_params.get("ticket")
        if ticket:
            key = self.tickets.redeem(ticket)
            if key is None:
                raise ApiError(401, "unauthorized", "unknown or expired ticket")
            # The key behind a ticket may have been revoked since: ask the store again.
            current = await self.guard.keystore.get(key.key_id)
            if current is None or current.revoked_at is not None:
                raise ApiError(401, "unauthorized", "the key behind this ticket was revoked")
        else:
            await self.guard.require(request, Scope.JOBS_READ)
        return StreamingResponse(
            event_stream(self.engine, self.stats, self.draining),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
