"""`jq chaos --shards N`: a private sharded cluster (docs/scaling.md §7) to hurt. N etcd groups
of three members (one per shard, chaos/etcd_groups.py) behind three `jq serve` nodes that each
hold a replica of every shard, each node with its own embedded key store (nothing is forwarded
when every node holds every shard, so no request crosses key stores).

A "kill" takes turns between three disruptions: SIGKILL of the Raft leader of one shard's etcd
group (chosen by `seed`; that shard's queues stop for the failover, the others do not), SIGKILL
of one jq node (its engines for every shard), and moving one of the run's queues to another
shard under the load (`POST /admin/queues/{q}/move`, docs/scaling.md §2.6). `restart` brings a
killed victim back before returning: at most one member or node is ever down, and no kill
lands during a move (the move is done when `kill` returns).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from pathlib import Path

import httpx

from jq_tool.chaos.etcd_groups import EtcdGroup, EtcdMemberProcess
from jq_tool.chaos.target import (
    CLUSTER_START_TIMEOUT_S,
    Endpoint,
    SpawnedServer,
    TargetError,
    free_port,
)

NODES = 3
MOVE_TIMEOUT_S = 60.0


class SpawnedShardedCluster:
    def __init__(self, root: Path, shards: int, *, seed: int) -> None:
        if shards < 2:
            raise TargetError(f"a sharded cluster needs at least 2 shards, not {shards}")
        self.root = root
        self._victims = random.Random(seed)
        taken: set[int] = set()
        self.groups = [
            EtcdGroup(root / "etcd", f"g{shard}", taken=taken) for shard in range(shards)
        ]
        names = [f"n{i}" for i in range(1, NODES + 1)]
        http_ports = {name: free_port(taken) for name in names}  # not a member's port
        common = {
            "CLUSTER_MODE": "true",
            "SHARDS": ";".join(
                f"{shard}={','.join(group.client_urls)}" for shard, group in enumerate(self.groups)
            ),
            "HTTP_PEERS": ",".join(
                f"{name}@http://127.0.0.1:{port}" for name, port in http_ports.items()
            ),
        }
        self.nodes: dict[str, SpawnedServer] = {
            name: SpawnedServer(
                root / name,
                log_path=root / f"{name}.serve.log",
                port=http_ports[name],
                start_timeout=CLUSTER_START_TIMEOUT_S,
                node_env={**common, "NODE_ID": name},
            )
            for name in names
        }
        self.killed: list[str] = []  # what was killed (or moved), in order, for the report
        self.queues: list[str] = []  # the run's queues (the harness sets them): what may move
        self._down: str | None = None
        self._down_member: EtcdMemberProcess | None = None
        self._down_node: SpawnedServer | None = None

    @property
    def base_url(self) -> str:
        return self._first().base_url

    @property
    def key(self) -> str:
        return self._first().key

    @property
    def down(self) -> str | None:
        return self._down

    def _first(self) -> SpawnedServer:
        return next(iter(self.nodes.values()))

    def endpoints(self) -> Sequence[Endpoint]:
        return tuple(self.nodes.values())

    async def start(self) -> None:
        try:
            for group in self.groups:
                await asyncio.to_thread(group.start)
        except TargetError:
            await self.stop()
            raise
        offsets = {name: node.spawn() for name, node in self.nodes.items()}
        results = await asyncio.gather(
            *(node.wait_ready(offsets[name]) for name, node in self.nodes.items()),
            return_exceptions=True,
        )
        failures = [str(result) for result in results if isinstance(result, BaseException)]
        if failures:
            await self.stop()
            raise TargetError("the sharded cluster did not start; " + "\n".join(failures))
        await self._place_queues()

    async def _place_queues(self) -> None:
        """Place the run's queues one after the other before the load (a queue is placed by
        its first write, on the least loaded shard): one on each shard, not wherever
        concurrent first submits happen to put them."""
        node = self._first()
        async with httpx.AsyncClient(timeout=10) as http:
            for queue in self.queues:
                answer = await http.put(
                    f"{node.base_url}/queues/{queue}",
                    json={},
                    headers={"Authorization": f"Bearer {node.key}"},
                )
                if answer.status_code != 200:
                    await self.stop()
                    raise TargetError(f"could not place {queue}: {answer.text[:200]}")

    async def kill(self) -> None:
        if self._down is not None:
            raise TargetError(f"{self._down} is still down: one kill at a time")
        turn = len(self.killed) % 3
        if turn == 2 and self.queues:
            await self._move()
            return
        if turn == 0:
            shard = self._victims.randrange(len(self.groups))
            member = await asyncio.to_thread(self.groups[shard].leader)
            self._down = f"shard {shard} etcd leader {member.name}"
            self._down_member = member
            await asyncio.to_thread(member.kill9)
        else:
            name = self._victims.choice(list(self.nodes))
            self._down = f"node {name}"
            self._down_node = self.nodes[name]
            await self._down_node.kill()
        self.killed.append(self._down)

    async def _move(self) -> None:
        """Move one of the run's queues to the next shard, through a random node."""
        queue = self._victims.choice(self.queues)
        node = self.nodes[self._victims.choice(list(self.nodes))]
        async with httpx.AsyncClient(timeout=MOVE_TIMEOUT_S) as http:
            headers = {"Authorization": f"Bearer {node.key}"}
            view = await http.get(node.base_url + "/admin/shards", headers=headers)
            placed = view.json()["queues"].get(queue) if view.status_code == 200 else None
            if placed is None:
                raise TargetError(f"cannot move {queue}: no placement ({view.text[:200]})")
            to = (placed["shard"] + 1) % len(self.groups)
            moved = await http.post(
                f"{node.base_url}/admin/queues/{queue}/move", json={"to": to}, headers=headers
            )
        if moved.status_code != 200:
            raise TargetError(f"moving {queue} failed: {moved.status_code} {moved.text[:300]}")
        self.killed.append(f"move {queue} {placed['shard']}->{to}")
        self._down = None

    async def restart(self) -> None:
        if self._down is None and self.killed and self.killed[-1].startswith("move "):
            return  # a move has nothing to bring back
        if self._down is None:
            raise TargetError("nothing is down")
        try:
            if self._down_member is not None:
                group = next(g for g in self.groups if self._down_member in g.members)
                await asyncio.to_thread(group.restart, self._down_member)
            elif self._down_node is not None:
                await self._down_node.start()
        except TargetError as exc:
            raise TargetError(f"{self._down} did not come back: {exc}") from None
        self._down = None
        self._down_member = self._down_node = None

    async def stop(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.nodes.values()))
        for group in self.groups:
            await asyncio.to_thread(group.stop)

    def unexpected_exit(self) -> str | None:
        for name, node in self.nodes.items():
            reason = node.unexpected_exit()
            if reason is not None:
                return f"sharded cluster node {name}: {reason}"
        return None
