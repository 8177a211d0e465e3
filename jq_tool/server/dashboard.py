"""The browser dashboard's routes: the page at `/` and its assets under `/static/`.

The page holds no data and needs no auth: it is a client of the HTTP API like any other, and
asks the user for an API key that stays in the browser (localStorage) and travels only in
`Authorization` headers, never in a URL. Assets are read through importlib.resources by the
first request for the page or an asset, so they are served the same from a source tree, a
wheel, a zip or a PyInstaller binary, whatever the current directory is. The set of servable
files is fixed at that moment, which also rules out path traversal: a path is served only if it
was found then. Not when the routes are built: reading and hashing them, with importlib.resources
and zipfile imported for it, was ~5 ms of every restart of a server whose dashboard may never be
opened (issue 20: restart to a healthy /health).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

_PACKAGE = "jq_tool.server"

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
}
_LICENSE_TYPE = "text/plain; charset=utf-8"

# The page runs only our own scripts: no inline script or style, no eval, no third-party origin.
# htmx's injected indicator <style> is turned off by the page's htmx-config meta tag.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class StaticAsset:
    """One packaged file, held in memory with its validator (assets are a few hundred KB)."""

    def __init__(self, body: bytes, content_type: str) -> None:
        self.body = body
        self.content_type = content_type
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'

    def response(self, request: Request) -> Response:
        headers = {
            "ETag": self.etag,
            # The page references assets without a version in the name, so revalidate each
            # load; the ETag makes that a 304 with no body.
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
        }
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        return Response(self.body, media_type=self.content_type, headers=headers)


def _content_type(name: str) -> str | None:
    if name.endswith("LICENSE"):
        return _LICENSE_TYPE
    dot = name.rfind(".")
    return _CONTENT_TYPES.get(name[dot:]) if dot >= 0 else None


def _collect(root: Traversable, prefix: str, into: dict[str, StaticAsset]) -> None:
    for entry in root.iterdir():
        name = prefix + entry.name
        if entry.is_dir():
            _collect(entry, name + "/", into)
            continue
        content_type = _content_type(entry.name)
        if content_type is not None:
            into[name] = StaticAsset(entry.read_bytes(), content_type)


def load_static_assets() -> dict[str, StaticAsset]:
    """Every servable file under the package's `static/`, keyed by its path below it."""
    from importlib import resources

    assets: dict[str, StaticAsset] = {}
    _collect(resources.files(_PACKAGE).joinpath("static"), "", assets)
    return assets


def load_page() -> bytes:
    from importlib import resources

    return resources.files(_PACKAGE).joinpath("templates", "index.html").read_bytes()


class _Packaged:
    """The page and the assets, read by the first request that needs them (on the event loop,
    so once), then held."""

    def __init__(self) -> None:
        self._page: bytes | None = None
        self._assets: dict[str, StaticAsset] | None = None

    def page(self) -> bytes:
        if self._page is None:
            self._page = load_page()
        return self._page

    def assets(self) -> dict[str, StaticAsset]:
        if self._assets is None:
            self._assets = load_static_assets()
        return self._assets


def dashboard_routes() -> list[BaseRoute]:
    """`GET /` (the page) and `GET /static/{path}` (its scripts, styles and vendored htmx)."""
    packaged = _Packaged()

    async def index(request: Request) -> Response:
        return HTMLResponse(packaged.page(), headers=_PAGE_HEADERS)

    async def static(request: Request) -> Response:
        asset = packaged.assets().get(request.path_params["path"])
        if asset is None:
            return Response(
                b'{"error": "no such file", "code": "not_found"}',
                status_code=404,
                media_type="application/json",
            )
        return asset.response(request)

    return [
        Route("/", index, methods=["GET", "HEAD"], name="dashboard"),
        Route("/static/{path:path}", static, methods=["GET", "HEAD"], name="static"),
    ]
