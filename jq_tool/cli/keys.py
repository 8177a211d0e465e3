"""`jq keys create|list|revoke`: API key administration over the HTTP API.

A created key's secret is printed once (the server never shows it again); listings never
contain secrets.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from jq_tool.cli import keys_recover
from jq_tool.cli.options import JsonOption, KeyOption, UrlOption, open_client
from jq_tool.cli.output import print_json, print_record, print_rows, stdout
from jq_tool.sdk import DEFAULT_URL

keys_app = typer.Typer(
    help="Create, list and revoke API keys; recover an admin key offline.", no_args_is_help=True
)


class KeyType(StrEnum):
    client = "client"
    worker = "worker"
    admin = "admin"


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="What the key is for.")],
    owner: Annotated[str, typer.Option(help="The owner id the key belongs to.")],
    type: Annotated[KeyType, typer.Option("--type", help="client, worker or admin.")],
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a key (needs an admin key); its secret is shown only now."""
    with open_client(url, key, as_json) as client:
        created = client.create_key(name, owner, type.value)
    if as_json:
        print_json(created)
        return
    print_record(
        "key created",
        [
            ("key", created.key),
            ("key_id", created.key_id),
            ("name", created.name),
            ("owner_id", created.owner_id),
            ("type", created.type),
            ("scopes", ", ".join(created.scopes)),
            ("created_at", created.created_at),
        ],
    )
    stdout().print("Store the key now: it is not shown again.", markup=False)


@keys_app.command("list")
def list_keys(
    all: Annotated[bool, typer.Option("--all", help="Every key (needs an admin key).")] = False,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """List keys of your owner id, or every key with --all."""
    with open_client(url, key, as_json) as client:
        keys = client.list_keys(all=all)
    if as_json:
        print_json(keys)
        return
    print_rows(
        "keys",
        ["key_id", "prefix", "name", "owner_id", "type", "created_at", "revoked_at"],
        [
            [k.key_id, k.key_prefix, k.name, k.owner_id, k.type, k.created_at, k.revoked_at]
            for k in keys
        ],
        empty="no keys" if all else "no keys of this key's owner",
    )


@keys_app.command("revoke")
def revoke(
    target: Annotated[
        str,
        typer.Argument(
            metavar="KEY_ID",
            help="The key's key_id (jq keys list shows it). A full key is turned into its "
            "key_id here: a secret never goes into a URL.",
        ),
    ],
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke a key at once."""
    with open_client(url, key, as_json) as client:
        revoked = client.revoke_key(target)
    if as_json:
        print_json(revoked)
    else:
        stdout().print(f"revoked {revoked.key}", markup=False)


# The offline one: no server, no key (jq_tool/cli/keys_recover.py).
keys_app.command("recover")(keys_recover.recover)


def register(app: typer.Typer) -> None:
    """Add `keys` as a command group of the root `jq` app."""
    app.add_typer(keys_app, name="keys")
