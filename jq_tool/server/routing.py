"""A wrong method on a known path: 405 with `Allow`, never a 404 from another route.

Starlette's router answers 405 only when no later route matches the path in full, so
`GET /jobs/lease` used to reach `GET /jobs/{id}` with the id "lease" and answer "job not found".
`answer_wrong_methods` adds routes that take a request for a path of the table whose method none
of that path's routes takes, and refuse it with a 405 (as JSON, through server/errors.py's
table) whose `Allow` header lists the methods the path does take. The message and `/metrics`
name the route template, never the raw path, which may hold a key (`/keys/{key}`).

Where they go matters for the hot paths: the router tries routes in order, so each route placed
before a serving route costs that route's requests one more try. So there are two: one, right
before the first route that would shadow a literal path (`/jobs/{id}` shadows `/jobs/lease`),
for those literal paths only (a dict lookup); one at the end of the table for every other path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match, Route, compile_path
from starlette.types import Receive, Scope, Send

_NOTHING: dict[str, Any] = {}  # the child scope of no match; never written to


class Refusal(msgspec.Struct, frozen=True):
    """One path of the table: its template and the methods its routes take."""

    path: str  # the route template, as /metrics labels it
    methods: frozenset[str]

    @property
    def allow(self) -> str:
        return ", ".join(sorted(self.methods))


class WrongMethods(BaseRoute):
    """Takes a request to one of `refusals`' paths whose method that path does not take."""

    def __init__(self, refusals: Sequence[Refusal]) -> None:
        self.refusals = tuple(refusals)
        self._literal = {r.path: r for r in refusals if "{" not in r.path}
        self._templates = [(compile_path(r.path)[0], r) for r in refusals if "{" in r.path]

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, _NOTHING
        path = scope["path"]
        refusal = self._literal.get(path)
        if refusal is None:
            for regex, candidate in self._templates:
                if regex.match(path):
                    refusal = candidate
                    break
        if refusal is None or scope["method"] in refusal.methods:
            return Match.NONE, _NOTHING
        return Match.FULL, {"route": refusal}  # the router's scope["route"]: the template

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal: Refusal = scope["route"]
        raise HTTPException(
            405,
            f"{scope['method']} is not allowed on {refusal.path}; use {refusal.allow}",
            headers={"Allow": refusal.allow},
        )


def answer_wrong_methods(routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    """`routes` in their order, with the two WrongMethods routes put in (see the module)."""
    methods: dict[str, set[str]] = {}
    for route in routes:
        if isinstance(route, Route) and route.methods:
            methods.setdefault(route.path, set()).update(route.methods)
    first_shadow: int | None = None
    shadowed: list[Refusal] = []
    others: list[Refusal] = []
    for path, allowed in methods.items():
        refusal = Refusal(path, frozenset(allowed))
        last = max(i for i, r in enumerate(routes) if isinstance(r, Route) and r.path == path)
        shadow = next(
            (
                i
                for i, later in enumerate(routes)
                if i > last and isinstance(later, Route) and later.path_regex.match(path)
            ),
            None,
        )
        if "{" in path or shadow is None:
            others.append(refusal)
        else:
            shadowed.append(refusal)
            first_shadow = shadow if first_shadow is None else min(first_shadow, shadow)
    table = list(routes)
    if first_shadow is not None:
        table.insert(first_shadow, WrongMethods(shadowed))
    table.append(WrongMethods(others))
    return table
