"""`jq serve`: run the queue server (jq_tool/server/runner.py does the running).

Flags and their environment variables become one `Settings` (see jq_tool.settings); a bad
value is a usage error (exit code 2) with a message, never a traceback.
"""

from __future__ import annotations

from typing import Annotated

import typer

from jq_tool.settings import SettingsError, build_settings


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
        # Imported here: the server, the engines and uvicorn load only for `jq serve`.
        from jq_tool.server.runner import run

        raise typer.Exit(run(settings))


if __name__ == "__main__":
    _app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(_app)  # one command: `python -m jq_tool.cli.serve --port 8080 ...`
    _app()
