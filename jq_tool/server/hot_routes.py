"""The job routes, dispatched without Starlette's router: the calls a producer and a worker make
all day (submit, lease, ack, batch ack, extend, get) reach their endpoints by one dict lookup.

Starlette's router tries each route's regex in turn, then wraps the endpoint in two layers of
exception handling that each build a Request and closures per call; measured in process, that
was ~15 µs of a durable submit's ~65 µs of server work, paid on every hot request. This pure
ASGI middleware sits inside the request-metrics middleware (which still counts and logs every
request by its route template) and serves the job routes the same way the router would:
the same endpoint functions, `path_params` as Starlette sets them (`{id}` is anything without a
slash), and every exception through the one table (`errors.to_response`). Anything else (other
methods on these paths, every other route) goes on to Starlette's router unchanged, so its 404s
and server/routing.py's 405s stay as they were (`GET /jobs/lease` is a 405, never the job
"lease").
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from jq_tool.server.errors import to_response

_JOB_PREFIX = "/jobs/"


class HotRoutes:
    """Serves the given `/jobs…` routes directly; passes every other request to `app`."""

    def __init__(self, app: ASGIApp, routes: list[BaseRoute]) -> None:
        self.app = app
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        route = self._exact.get((method, path))
        if route is None and path.startswith(_JOB_PREFIX) and path not in self._literal:
            job_id, slash, suffix = path[len(_JOB_PREFIX) :].partition("/")
            # `{id}` is one path segment; `/jobs/x/` and `/jobs/x/ack/y` are Starlette's to refuse.
            if job_id and (suffix if slash else True) and "/" not in suffix:
                route = self._per_job.get((method, suffix))
                if route is not None:
                    scope["path_params"] = {"id": job_id}
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # the request-metrics middleware counts by its template
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except Exception as exc:  # noqa: BLE001 - every failure leaves through the one table
            response = to_response(exc)
        await response(scope, receive, send)
