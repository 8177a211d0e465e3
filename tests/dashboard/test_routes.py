"""The dashboard's routes served from package data by a real Starlette app (in process)."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette

from jq_tool.server.dashboard import dashboard_routes


def _client() -> httpx.AsyncClient:
    app = Starlette(routes=dashboard_routes())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://jq.test")


async def test_page_needs_no_auth_and_locks_down_scripts() -> None:
    response = await _client().get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    page = response.text
    for asset in (
        "/static/vendor/htmx.min.js",
        "/static/vendor/sse.min.js",
        "/static/dashboard.js",
    ):
        assert asset in page


async def test_assets_are_served_with_their_types() -> None:
    client = _client()
    for path, content_type in [
        ("/static/dashboard.js", "text/javascript"),
        ("/static/dashboard.css", "text/css"),
        ("/static/vendor/htmx.min.js", "text/javascript"),
        ("/static/vendor/sse.min.js", "text/javascript"),
        ("/static/favicon.svg", "image/svg+xml"),
    ]:
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(content_type), path
        assert len(response.content) > 100, path


async def test_etag_revalidation_answers_304() -> None:
    client = _client()
    first = await client.get("/static/dashboard.css")
    again = await client.get(
        "/static/dashboard.css", headers={"If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304
    assert again.content == b""


async def test_unknown_and_traversal_paths_are_404_json() -> None:
    client = _client()
    assert (await client.get("/static/nope.js")).json()["code"] == "not_found"
    for path in ("/static/nope.js", "/static/../dashboard.py", "/static/%2e%2e/dashboard.py"):
        assert (await client.get(path)).status_code == 404, path
