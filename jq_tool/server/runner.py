"""Running the server process: logging, the engine (local or cluster) on the data dir, the key
store, and the HTTP app on uvicorn (uvloop, httptools, one worker) until a shutdown signal.

Start-up checks come first (server/startup_checks.py: data dir held or not writable, port in
use, Redis unreachable): a refusal is one line and its own exit code, before anything is
written, seeded or logged as serving. The checks bind the listening sockets and uvicorn serves on
them. Once uvicorn listens, a first start (one that seeded the dev keys) prints its panel
(server/welcome.py).

uvicorn runs jq's own protocol class (server/connections.py: the connection cap, the header
timeout and size limit) with its keep-alive timeout from `--keep-alive-timeout`; its
`limit_concurrency` stays off (the cap replaces it). The process's umask is 077 and the data dir
is created 0700: every file jq writes there (WAL, snapshots, keys, etcd's log) is private.

`jq serve` (jq_tool/cli/serve.py) turns flags and environment variables into `Settings` and
calls `run`; it imports this module only then, so that other commands start without loading
the server, the engines and uvicorn. SIGTERM or SIGINT drains: uvicorn stops accepting
connections, long polls and event streams end, in-flight requests finish, then the engine
flushes and closes the WAL, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
import signal
import socket
import sys
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

# First of jq's modules, in a block of its own that import sorting keeps first: uvicorn's Config
# and Server without uvicorn's package __init__ (server/asgi_server.py). Anything imported
# before it that imports uvicorn (the app does: hot_routes.py's answer_at_once uses uvicorn's
# httptools protocol) would run that __init__, uvicorn's command line and process supervisors
# with it (~25 ms of every start; the single-node import test names them).
from jq_tool.server.asgi_server import Config, Server

# isort: split
from jq_tool.auth import KeyStoreUnavailable, open_key_store
from jq_tool.engine.factory import open_engine
from jq_tool.runtime import tune_gc, tune_gc_for_serving, tune_malloc
from jq_tool.server.app import StartupFailed, create_app
from jq_tool.server.connections import ConnectionLimits
from jq_tool.server.startup_checks import EXIT_DATA_DIR_NOT_WRITABLE, StartupRefused, run_checks
from jq_tool.settings import RESERVED_DESCRIPTORS, Settings, descriptor_limit

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from jq_tool.engine.base import Engine

log = logging.getLogger("jq.serve")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class DrainingServer(Server):
    """uvicorn's server, telling the app the moment a shutdown signal arrives."""

    def __init__(
        self,
        config: Config,
        draining: asyncio.Event,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.draining = draining
        self.on_started = on_started  # called once uvicorn listens

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.on_started is not None:
            self.on_started()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        try:
            asyncio.get_running_loop().call_soon_threadsafe(self.draining.set)
        except RuntimeError:
            self.draining.set()


def serving(
    config: Config, app: Starlette, engine: Engine, on_started: Callable[[], None]
) -> DrainingServer:
    """uvicorn's server for `app`, whose request tasks the engine watches: the first batch of
    the one request in flight is appended without a yield (engine/local.py, `_propose_lone`)."""
    server = DrainingServer(config, app.state.draining, on_started)
    engine.watch_requests(server.server_state.tasks)
    return server


def _ignore_signal(sig: int, frame: FrameType | None) -> None:
    """uvicorn re-raises the shutdown signal after draining; by then there is nothing left to
    interrupt, and dying by the signal would turn a clean shutdown into a non-zero exit."""


class _HideStartupTraceback(logging.Filter):
    """uvicorn logs a failed lifespan as a raw traceback; the app has already said why."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Traceback") and StartupFailed.__name__ in message)


# Libraries whose INFO lines are one per call: httpx logs every request it makes, and a
# cluster node makes about three a second to its etcd member (issue 21: 60 of a node's first
# 66 lines). Their warnings and errors still show; --log-level debug shows everything.
_CHATTY_LOGGERS = ("httpx", "httpcore")


def configure_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format=LOG_FORMAT, force=True)
    quiet = max(logging.WARNING, logging.getLogger().level)
    if level.lower() != "debug":
        for name in _CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(quiet)
    logging.getLogger("uvicorn.error").addFilter(_HideStartupTraceback())


def run(settings: Settings) -> int:
    """Serve until a shutdown signal; returns the process exit code."""
    configure_logging(settings.log_level)
    tune_gc()
    tune_malloc()
    os.umask(0o077)  # job payloads and key hashes are nobody else's business
    try:
        sockets = run_checks(settings)
    except StartupRefused as exc:
        log.error("jq cannot start: %s", exc)
        return exc.exit_code
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        log.error("jq cannot start: cannot create the data dir %s: %s", settings.data_dir, exc)
        return EXIT_DATA_DIR_NOT_WRITABLE
    engine = open_engine(settings)  # cluster mode (settings.cluster_mode) runs etcd's engine
    try:
        keystore = open_key_store(
            settings.redis_url, settings.data_dir, redis_prefix=settings.redis_prefix
        )
    except KeyStoreUnavailable as exc:
        log.error("jq cannot start: %s", exc)
        return 1
    app = create_app(engine, keystore, settings)
    limits = ConnectionLimits.from_settings(settings)
    _check_descriptor_budget(settings)
    config = Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # uvicorn's httptools protocol, bounded (server/connections.py), with an answer's head
        # and body in one send (server/http_protocol.py).
        http=limits.protocol_class(),
        # No websocket routes: an Upgrade offer is declined and the request answered as plain
        # HTTP under the guard (server/connections.py; handed to a websocket protocol, it
        # would leave the connection cap's count behind), and uvicorn imports no WebSocket
        # library.
        ws="none",
        timeout_keep_alive=settings.keep_alive_timeout_ms / 1000,  # type: ignore[arg-type]
        workers=1,
        lifespan="on",
        log_config=None,  # our logging.basicConfig: one format, stderr
        access_log=False,  # the app logs access itself (--access-log), by route template
        server_header=False,
        proxy_headers=False,  # client addresses are not used; one ASGI layer less per request
        timeout_graceful_shutdown=math.ceil(settings.drain_timeout_ms / 1000),
    )

    def first_start_panel() -> None:
        if app.state.seeded_keys:
            # Imported here: rich is for a first start only, a restart never loads it.
            from jq_tool.server.welcome import print_welcome

            print_welcome(settings, app.state.seeded_keys)

    server = serving(config, app, engine, first_start_panel)
    # Everything made so far (modules, classes, the app's routes) lives as long as the process:
    # out of the collector's sight. With no collection during the imports (jq serve raises the
    # thresholds first), the first one after recovery would otherwise walk them all (~10 ms).
    gc.freeze()
    tune_gc_for_serving()  # recovery, in the lifespan, pauses the collector itself
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _ignore_signal)
    try:
        server.run(sockets=sockets)
    except SystemExit:
        # uvicorn exits with its own code when the lifespan failed (the engine did not start);
        # jq's is 1 for every failure the start-up checks could not see coming.
        if server.started:
            raise
    if not server.started:
        log.error("jq did not start (see the errors above)")
        return 1
    return 0


def _check_descriptor_budget(settings: Settings) -> None:
    """Say so at start when the connection cap leaves the rest of the process too few
    descriptors: then an idle-connection flood can run it out of them (the WAL survives that,
    refusing writes until descriptors return, but the cap is what prevents it)."""
    limit = descriptor_limit()
    log.info(
        "connections: at most %d (%d event streams), request heads %d bytes within %.1fs "
        "(descriptor limit %d)",
        settings.max_connections,
        settings.max_streams,
        settings.max_header_bytes,
        settings.header_timeout_ms / 1000,
        limit,
    )
    if settings.max_connections > limit - RESERVED_DESCRIPTORS:
        log.warning(
            "--max-connections %d leaves fewer than %d of the %d descriptors this process may "
            "open (ulimit -n) for the WAL, the key store and refusing connections politely",
            settings.max_connections,
            RESERVED_DESCRIPTORS,
            limit,
        )
