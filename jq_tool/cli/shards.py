"""`jq shards` and `jq queues move`: sharded mode's placement table and health, and moving a
queue to another shard (docs/scaling.md §7), over the admin routes `GET /admin/shards` and
`POST /admin/queues/{name}/move`. An admin key; a node not in sharded mode answers 404."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import typer

from jq_tool.cli.options import JsonOption, KeyOption, UrlOption, open_client
from jq_tool.cli.output import print_json, print_record
from jq_tool.sdk import DEFAULT_URL
from jq_tool.sdk.calls import Call, segment

_read = msgspec.json.Decoder(dict[str, Any])
# A move copies the queue's jobs through two logs: seconds for a big queue.
MOVE_TIMEOUT_S = 120.0


def _decode(status: int, content: bytes) -> dict[str, Any]:
    return _read.decode(content)


def shards(
    url: UrlOption = DEFAULT_URL, key: KeyOption = None, as_json: JsonOption = False
) -> None:
    """The shards (held here or not, health, replica nodes, queue counts) and which shard
    each queue is on, as the node at --url sees them."""
    with open_client(url, key, as_json) as client:
        view = client.send(Call("GET", "/admin/shards", _decode, retry=True), None)
    if as_json:
        print_json(view)
        return
    fields: list[tuple[str, object]] = []
    for shard, info in view["shards"].items():
        health = info.get("health") or {}
        if not info["held"]:
            state = "not held"
        elif health.get("ok"):
            state = "ok"
        else:  # no quorum: its queues refuse writes (GET /health/shards/{id} answers 503)
            state = f"DOWN ({health.get('reason') or 'writes refused'})"
        fields.append(
            (f"shard {shard}", f"{state}; {info['queues']} queues; {', '.join(info['replicas'])}")
        )
    for queue, placement in sorted(view["queues"].items()):
        move = placement.get("move")
        moving = f" (moving to {move['to']})" if move and not move.get("committed") else ""
        fields.append((queue, f"shard {placement['shard']}, epoch {placement['epoch']}{moving}"))
    print_record(f"placement at node {view['node']}", fields)


def move(
    name: Annotated[str, typer.Argument(help="The queue's name.")],
    to: Annotated[int, typer.Option("--to", min=0, help="The shard to move it to.")],
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move a queue to another shard (fence, copy, flip, release), or finish a move of it that
    stopped. Its jobs, leases and idempotency keys go with it; requests for it wait meanwhile."""
    call = Call("POST", f"/admin/queues/{segment(name)}/move", _decode, body={"to": to})
    with open_client(url, key, as_json) as client:
        outcome = client.send(call, MOVE_TIMEOUT_S)
    if as_json:
        print_json(outcome)
        return
    print_record(
        "queue moved" if outcome["moved"] else "queue not moved",
        [(field, outcome[field]) for field in ("queue", "shard", "epoch", "jobs", "move_id")],
    )


def register(app: typer.Typer) -> None:
    app.command("shards")(shards)
