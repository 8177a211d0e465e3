"""`jq serve`: run the queue server — the engine on the data dir, the key store, and the HTTP
app on uvicorn (uvloop, httptools, one worker).

Flags and their environment variables become one `Settings` (see jq_tool.settings); a bad
value is a usage error (exit code 2) with a message, never a traceback. SIGTERM or SIGINT
drains: uvicorn stops accepting connections, long polls and event streams end, in-flight
requests finish, then the engine flushes and closes the WAL, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from types import FrameType
from typing import Annotated

import typer
import uvicorn

from jq_tool.auth import open_key_store
from jq_tool.engine.etcd_member import ClusterConfigError
from jq_tool.engine.factory import open_engine
from jq_tool.engine.local import EngineConfig
from jq_tool.runtime import tune_gc
from jq_tool.server.app import StartupFailed, create_app
from jq_tool.settings import Settings, SettingsError, build_settings

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
    try:
        # CLUSTER_MODE and the seed's cluster env vars choose the replicated engine.
        engine = open_engine(
            EngineConfig(
                data_dir=settings.data_dir,
                lease_ms=settings.lease_ms,
                tick_ms=settings.lease_check_interval_ms,
                retention_ms=settings.retention_ms,
                snapshot_every=settings.snapshot_every,
                segment_bytes=settings.segment_bytes,
            ),
            os.environ,
        )
    except ClusterConfigError as exc:
        log.error("invalid cluster configuration: %s", exc)
        return 2
    keystore = open_key_store(
        settings.redis_url, settings.data_dir, redis_prefix=settings.redis_prefix
    )
    app = create_app(engine, keystore, settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        workers=1,
        lifespan="on",
        log_config=None,  # our logging.basicConfig: one format, stderr
        access_log=False,  # the app logs access itself (--access-log), by route template
        server_header=False,
        proxy_headers=False,  # client addresses are not used; one ASGI layer less per request
        timeout_graceful_shutdown=int(settings.drain_timeout_s),
    )
    server = DrainingServer(config, app.state.draining)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _ignore_signal)
    server.run()
    if not server.started:
        log.error("jq did not start (see the errors above)")
        return 1
    return 0


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        host: Annotated[
            str | None, typer.Option(help="Address to listen on (env HOST, default 127.0.0.1)")
        ] = None,
        port: Annotated[str | None, typer.Option(help="HTTP port (env PORT, default 8080)")] = None,
        data_dir: Annotated[
            str | None,
            typer.Option(
                "--data-dir", help="WAL, snapshots and embedded keys (env WAL_DIR, ./data)"
            ),
        ] = None,
        lease_duration: Annotated[
            str | None, typer.Option(help="Default lease, e.g. 30s (env LEASE_DURATION)")
        ] = None,
        lease_check_interval: Annotated[
            str | None,
            typer.Option(
                help="Longest pause between lease-expiry checks, e.g. 5s (env LEASE_CHECK_INTERVAL)"
            ),  # fmt: skip
        ] = None,
        redis_url: Annotated[
            str | None,
            typer.Option(
                help="Key store in Redis; unset: embedded in the data dir (env REDIS_URL)"
            ),
        ] = None,
        redis_prefix: Annotated[
            str | None, typer.Option(help="Prefix for every Redis key name (env JQ_REDIS_PREFIX)")
        ] = None,
        max_payload: Annotated[
            str | None,
            typer.Option(help="Largest job payload: bytes, 512KiB, 1MiB (env JQ_MAX_PAYLOAD)"),
        ] = None,
        seed_keys: Annotated[
            bool | None,
            typer.Option(
                "--seed-keys/--no-seed-keys",
                help="On first start, create and log one client, worker and admin key "
                "(env JQ_SEED_KEYS, default on)",
            ),
        ] = None,
        retention: Annotated[
            str | None,
            typer.Option(help="Keep finished jobs this long, e.g. 7d (env JQ_RETENTION)"),
        ] = None,
        ticket_ttl: Annotated[
            str | None, typer.Option(help="Lifetime of /events tickets (env JQ_TICKET_TTL, 5m)")
        ] = None,
        log_level: Annotated[
            str | None, typer.Option(help="critical|error|warning|info|debug (env JQ_LOG_LEVEL)")
        ] = None,
        snapshot_every: Annotated[
            str | None,
            typer.Option(
                help="Least WAL records between snapshots; a quarter of the jobs held when that"
                " is more (env JQ_SNAPSHOT_EVERY, 100000)"
            ),
        ] = None,
        segment_bytes: Annotated[
            str | None,
            typer.Option(help="WAL segment size, e.g. 64MiB (env JQ_SEGMENT_BYTES)"),
        ] = None,
        access_log: Annotated[
            bool | None,
            typer.Option(
                "--access-log/--no-access-log", help="Log each request (env JQ_ACCESS_LOG)"
            ),
        ] = None,
    ) -> None:
        """Run the queue server."""
        raw = {
            "host": host,
            "port": port,
            "data_dir": data_dir,
            "lease_duration": lease_duration,
            "lease_check_interval": lease_check_interval,
            "redis_url": redis_url,
            "redis_prefix": redis_prefix,
            "max_payload": max_payload,
            "seed_keys": seed_keys,
            "retention": retention,
            "ticket_ttl": ticket_ttl,
            "log_level": log_level,
            "access_log": access_log,
            "snapshot_every": snapshot_every,
            "segment_bytes": segment_bytes,
        }
        try:
            settings = build_settings(raw)
        except SettingsError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(2) from None
        raise typer.Exit(run(settings))


if __name__ == "__main__":
    _app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(_app)  # one command: `python -m jq_tool.cli.serve --port 8080 ...`
    _app()
