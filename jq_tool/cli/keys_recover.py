"""`jq keys recover`: a new admin key written straight into a server's key store, offline.

The dev keys are shown once, at the first start; when that output is lost, nobody holds an
admin key and no key can be created over HTTP. This command needs no server and no key: it
opens the key store itself (the embedded store in a data dir, or Redis with `--redis-url`),
creates an admin key there and prints its secret once. Whoever may write the data dir (or the
Redis) may do everything anyway, so that is the authority it relies on. It works with the server
running (sqlite and Redis both take concurrent writers) or stopped.

Like `jq wal-inspect`, it is an offline tool of the server's own storage, so it is the one
command of `jq keys` that imports `jq_tool.auth` (inside the command: the client commands start
without it).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from jq_tool.cli.options import JsonOption
from jq_tool.cli.output import EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_USAGE, fail, print_json


def recover(
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            envvar="WAL_DIR",
            show_envvar=True,
            help="The server's data dir, whose embedded key store gets the key.",
        ),
    ] = Path("./data"),
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            envvar="REDIS_URL",
            show_envvar=True,
            show_default=False,
            help="Keys in Redis (a server run with --redis-url): the key goes there.",
        ),
    ] = None,
    redis_prefix: Annotated[
        str,
        typer.Option(
            "--redis-prefix",
            envvar="JQ_REDIS_PREFIX",
            show_envvar=True,
            help="The server's --redis-prefix.",
        ),
    ] = "",
    name: Annotated[str, typer.Option(help="What the key is for.")] = "recovered admin key",
    owner: Annotated[str, typer.Option(help="The owner id the key belongs to.")] = "recovery",
    as_json: JsonOption = False,
) -> None:
    """Create an admin key directly in the key store, without a server: for lost keys.

    Prints the secret alone on stdout (so `export JQ_KEY=$(jobq keys recover)` works); --json
    prints the whole record. The secret is shown only now."""
    if not redis_url and not data_dir.is_dir():
        fail(
            f"no data dir at {data_dir}: pass the --data-dir the server uses (env WAL_DIR), "
            "or --redis-url when its keys are in Redis",
            EXIT_NOT_FOUND,
            as_json=as_json,
            error_code="not_found",
        )
    # Imported here: only this command needs the key stores (and redis, sqlite).
    from jq_tool.auth import KeyFieldError, KeyStoreUnavailable, KeyType, format_time
    from jq_tool.auth import open_key_store as open_store

    os.umask(0o077)  # a key store this command creates is as private as the server's

    async def create() -> tuple[Any, str]:
        store = open_store(redis_url, data_dir, redis_prefix=redis_prefix)
        try:
            return await store.create(name=name, owner_id=owner, type=KeyType.ADMIN)
        finally:
            await store.close()

    where = "Redis (--redis-url)" if redis_url else f"the key store in {data_dir}"
    try:
        key, secret = asyncio.run(create())
    except KeyStoreUnavailable as exc:
        problem = "cannot reach" if redis_url else "cannot write"
        fail(f"{problem} {where}: {exc}", EXIT_UNAVAILABLE, as_json=as_json)
    except KeyFieldError as exc:
        fail(str(exc), EXIT_USAGE, as_json=as_json, error_code="invalid_input")
    if as_json:
        print_json(
            {
                "key": secret,
                "key_id": key.key_id,
                "name": key.name,
                "owner_id": key.owner_id,
                "type": key.type.value,
                "scopes": [scope.value for scope in key.scopes],
                "created_at": format_time(key.created_at),
            }
        )
        return
    sys.stdout.write(secret + "\n")
    sys.stdout.flush()
    sys.stderr.write(
        f"created admin key {key.key_id} (owner {key.owner_id}) in {where}; "
        "store it now: it is not shown again\n"
    )
