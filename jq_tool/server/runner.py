"""Running the server process: logging, the engine (local or cluster) on the data dir, the key
store, and the HTTP app on uvicorn (uvloop, httptools, one worker) until a shutdown signal.

`jq serve` (jq_tool/cli/serve.py) turns flags and environment variables into `Settings` and
calls `run`; it imports this module only then, so that other commands start without loading
the server, the engines and uvicorn. SIGTERM or SIGINT drains: uvicorn stops accepting
connections, long polls and event streams end, in-flight requests finish, then the engine
flushes and closes the WAL, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import sys
from types import FrameType

import uvicorn

from jq_tool.auth import open_key_store
from jq_tool.engine.factory import open_engine
from jq_tool.runtime import tune_gc
from jq_tool.server.app import StartupFailed, create_app
from jq_tool.server.http_protocol import JoinedWritesProtocol
from jq_tool.settings import Settings

log = logging.getLogger("jq.serve")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class DrainingServer(uvicorn.Server):
    """uvicorn's server, telling the app the moment a shutdown signal arrives."""

    def __init__(self, config: uvicorn.Config, draining: asyncio.Event) -> None:
        super().__init__(config)
        self.draining = draining

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        try:
            asyncio.get_running_loop().call_soon_threadsafe(self.draining.set)
        except RuntimeError:
            self.draining.set()


def _ignore_signal(sig: int, frame: FrameType | None) -> None:
    """uvicorn re-raises the shutdown signal after draining; by then there is nothing left to
    interrupt, and dying by the signal would turn a clean shutdown into a non-zero exit."""


class _HideStartupTraceback(logging.Filter):
    """uvicorn logs a failed lifespan as a raw traceback; the app has already said why."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Traceback") and StartupFailed.__name__ in message)


def configure_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format=LOG_FORMAT, force=True)
    logging.getLogger("uvicorn.error").addFilter(_HideStartupTraceback())


def run(settings: Settings) -> int:
    """Serve until a shutdown signal; returns the process exit code."""
    configure_logging(settings.log_level)
    tune_gc()
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.error("cannot create the data dir %s: %s", settings.data_dir, exc)
        return 1
    engine = open_engine(settings)  # cluster mode (settings.cluster_mode) runs etcd's engine
    keystore = open_key_store(
        settings.redis_url, settings.data_dir, redis_prefix=settings.redis_prefix
    )
    app = create_app(engine, keystore, settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=JoinedWritesProtocol,  # httptools, an answer's head and body in one send
        ws="none",  # no WebSocket routes: uvicorn then does not import a WebSocket library
        workers=1,
        lifespan="on",
        log_config=None,  # our logging.basicConfig: one format, stderr
        access_log=False,  # the app logs access itself (--access-log), by route template
        server_header=False,
        proxy_headers=False,  # client addresses are not used; one ASGI layer less per request
        timeout_graceful_shutdown=math.ceil(settings.drain_timeout_ms / 1000),
    )
    server = DrainingServer(config, app.state.draining)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _ignore_signal)
    server.run()
    if not server.started:
        log.error("jq did not start (see the errors above)")
        return 1
    return 0
