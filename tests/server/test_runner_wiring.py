"""What `jq serve`'s runner joins together before uvicorn starts: the engine watches the
server's own set of request tasks (the one request in flight is appended without a yield,
engine/local.py), not a copy or an empty stand-in."""

from __future__ import annotations

import asyncio
from pathlib import Path

from starlette.applications import Starlette

from jq_tool.engine.factory import engine_config
from jq_tool.engine.local import LocalEngine
from jq_tool.server.asgi_server import Config
from jq_tool.server.runner import serving
from jq_tool.settings import Settings


def test_the_engine_watches_the_servers_request_tasks(tmp_path: Path) -> None:
    app = Starlette()
    app.state.draining = asyncio.Event()
    engine = LocalEngine(engine_config(Settings(data_dir=tmp_path)))
    server = serving(Config(app), app, engine, lambda: None)
    tasks = server.server_state.tasks
    assert engine._requests is tasks  # the live set uvicorn adds each request's task to
