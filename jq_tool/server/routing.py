"""A wrong method on a known path: 405 with `Allow`, never a 404 from another route.

Starlette's router answers 405 only when no later route matches the path in full, so
`GET /jobs/lease` used to reach `GET /jobs/{id}` with the id "lease" and answer "job not found".
`answer_wrong_methods` puts, right after the last route of each path, a route that takes every
method of that path and refuses it with a 405 (as JSON, through server/errors.py's table) whose
`Allow` header lists the methods the path does take. The message names the route template, never
the raw path, which may hold a key (`/keys/{key}`).
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match, Route, compile_path
from starlette.types import Receive, Scope, Send


class WrongMethod(BaseRoute):
    """Every request to `path` that reached it (no route took its method): 405."""

    def __init__(self, path: str, allowed: Sequence[str]) -> None:
        self.path = path
        self.allowed = ", ".join(allowed)
        self._regex, _, _ = compile_path(path)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and self._regex.match(scope["path"]):
            return Match.FULL, {}
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise HTTPException(
            405,
            f"{scope['method']} is not allowed on {self.path}; use {self.allowed}",
            headers={"Allow": self.allowed},
        )


def answer_wrong_methods(routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    """`routes` in their order, each path's last route followed by its WrongMethod route."""
    methods: dict[str, list[str]] = {}
    last: dict[str, int] = {}
    for index, route in enumerate(routes):
        if isinstance(route, Route) and route.methods:
            allowed = methods.setdefault(route.path, [])
            allowed.extend(sorted(m for m in route.methods if m not in allowed))
            last[route.path] = index
    table: list[BaseRoute] = []
    for index, route in enumerate(routes):
        table.append(route)
        if isinstance(route, Route) and last.get(route.path) == index:
            table.append(WrongMethod(route.path, methods[route.path]))
    return table
