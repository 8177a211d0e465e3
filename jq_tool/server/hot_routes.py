"""The job routes, dispatched without Starlette's router: the calls a producer and a worker make
all day (submit, lease, ack, batch ack, extend, get) reach their endpoints by one dict lookup.

Starlette's router tries each route's regex in turn, then wraps the endpoint in two layers of
exception handling that each build a Request and closures per call; measured in process, that
was ~15 µs of a durable submit's ~65 µs of server work, paid on every hot request. The job
routes are served the same way the router would: the same endpoint functions, `path_params` as
Starlette sets them (`{id}` is anything without a slash), every exception through the one table
(`errors.to_response`), and every request counted (and logged) by its route template. Anything
else (other methods on these paths, every other route) goes on to Starlette's router unchanged,
so its 404s and server/routing.py's 405s stay as they were (`GET /jobs/lease` is a 405, never
the job "lease").

Where: in single-node mode the app itself (`JobsFirst`) takes them before any middleware; in
sharded mode the `HotRoutes` middleware does, inside the request-metrics middleware and behind
the forwarder, which must see every request first."""

from __future__ import annotations

import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from jq_tool.server.errors import to_response
from jq_tool.server.http_protocol import answer_at_once
from jq_tool.server.metrics import RequestCounts, count_request

_JOB_PREFIX = "/jobs/"


class JobRouteTable:
    """The given `/jobs…` routes, found by one dict lookup."""

    def __init__(self, routes: list[BaseRoute]) -> None:
        self._exact: dict[tuple[str, str], Route] = {}  # (method, path): /jobs, /jobs/lease
        self._per_job: dict[tuple[str, str], Route] = {}  # (method, suffix): /jobs/{id}[/ack]
        self._literal: set[str] = set()  # /jobs/lease is never the job "lease"
        for route in routes:
            if not isinstance(route, Route) or not route.path.startswith("/jobs"):
                continue
            for method in route.methods or ():
                if "{" not in route.path:
                    self._exact[(method, route.path)] = route
                    self._literal.add(route.path)
                elif route.path.startswith("/jobs/{id}"):
                    suffix = route.path.removeprefix("/jobs/{id}").removeprefix("/")
                    self._per_job[(method, suffix)] = route

    def route_for(self, scope: Scope) -> Route | None:
        """The job route serving this HTTP request (its `path_params` set), or None."""
        method, path = scope["method"], scope["path"]
        route = self._exact.get((method, path))
        if route is None and path.startswith(_JOB_PREFIX) and path not in self._literal:
            job_id, slash, suffix = path[len(_JOB_PREFIX) :].partition("/")
            # `{id}` is one path segment; `/jobs/x/` and `/jobs/x/ack/y` are Starlette's to refuse.
            if job_id and (suffix if slash else True) and "/" not in suffix:
                route = self._per_job.get((method, suffix))
                if route is not None:
                    scope["path_params"] = {"id": job_id}
        return route


async def serve(route: Route, scope: Scope, receive: Receive, send: Send) -> int:
    """Answer the request with `route`'s endpoint; every exception through the one table.
    Returns the answer's status."""
    scope["route"] = route  # the request metrics count by its template
    request = Request(scope, receive, send)
    try:
        response = await route.endpoint(request)
    except Exception as exc:  # noqa: BLE001 - every failure leaves through the one table
        response = to_response(exc)
    if not answer_at_once(send, scope, response):
        await response(scope, receive, send)
    return response.status_code


class HotRoutes:
    """Middleware (sharded mode, behind the forwarder): serves the job routes directly,
    inside the request-metrics middleware; passes every other request to `app`."""

    def __init__(self, app: ASGIApp, table: JobRouteTable) -> None:
        self.app = app
        self.table = table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.table.route_for(scope) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        await serve(route, scope, receive, send)


class JobsFirst(Starlette):
    """The app: Starlette, except that (single-node mode) a request for a job route skips
    all of Starlette's layers: the server-error middleware (`serve` already turns every
    exception into its answer) and the request-metrics middleware's wrapped `send` (counted
    here the same way, by `metrics.count_request`). Measured in process, those layers were
    ~3 µs of a submit's ~40 µs. In sharded mode the forwarder must see every request first,
    so `jobs_first` is not called and HotRoutes serves them inside the stack."""

    _table: JobRouteTable | None = None

    def jobs_first(self, table: JobRouteTable, counts: RequestCounts, log_access: bool) -> None:
        """Serve `table`'s routes before any middleware, counting them in `counts`."""
        self._table = table
        self._counts = counts
        self._log_access = log_access

    @property
    def jobs_table(self) -> JobRouteTable | None:
        """The job routes served before any middleware; None in sharded mode."""
        return self._table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        table = self._table
        route = table.route_for(scope) if table is not None and scope["type"] == "http" else None
        if route is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        started = time.perf_counter() if self._log_access else None
        status = 500
        try:
            status = await serve(route, scope, receive, send)
        finally:
            count_request(self._counts, scope, status, started)
