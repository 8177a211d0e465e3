"""GET /openapi.json, built on its first request and encoded once (the document does not change
while the server runs).

Building it (`openapi.py`: importing it generates every body schema from the Structs) took
~35 ms, a sixth of `jq serve`'s start to a healthy /health with 10k jobs: so the module is
imported by the first request for the document, never on the way to serving jobs.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route


def openapi_routes(sharded: bool = False) -> list[BaseRoute]:
    """The route serving this server's document (`sharded`: with sharded mode's routes)."""
    body: list[bytes] = []  # the encoded document, once built

    async def openapi(request: Request) -> Response:
        if not body:
            from jq_tool.server.openapi import openapi_document
            from jq_tool.server.wire import encode_json

            body.append(encode_json(openapi_document(sharded)))
        return Response(body[0], media_type="application/json")

    return [Route("/openapi.json", openapi, methods=["GET"])]
