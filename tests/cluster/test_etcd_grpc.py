"""EtcdClient's gRPC path (engine/etcd_grpc.py) against a real one-member etcd: puts, the watch,
the outcome of a put when no member is there, and forks while gRPC is busy (the engine forks
snapshot children and its etcd member; grpc's own fork handlers crashed such children)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jq_tool.chaos.target import free_peer_port
from jq_tool.engine.etcd_client import EtcdClient, EtcdCompacted, EtcdUnavailable

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def etcd_url(tmp_path: Path) -> Iterator[str]:
    peer = free_peer_port()
    client = f"http://127.0.0.1:{peer + 1}"
    member = subprocess.Popen(
        [
            "etcd",
            "--name",
            "m",
            "--data-dir",
            str(tmp_path / "etcd"),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-cluster",
            f"m=http://127.0.0.1:{peer}",
            "--log-level",
            "error",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(client + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "etcd did not start"
            time.sleep(0.1)
        yield client
    finally:
        member.terminate()
        member.wait(10)


async def test_puts_come_back_through_the_watch_in_order(etcd_url: str) -> None:
    etcd = EtcdClient([etcd_url])
    try:
        start = await etcd.current_revision() + 1
        revisions = [await etcd.put(b"t/%d" % i, b"value %d" % i) for i in range(5)]
        assert revisions == list(range(start, start + 5))
        seen = []
        async for events in etcd.watch(b"t/", start):
            seen.extend(events)
            if len(seen) >= 5:
                break
        assert [(e.kind, e.kv.key, e.kv.value, e.kv.mod_revision) for e in seen] == [
            ("PUT", b"t/%d" % i, b"value %d" % i, start + i) for i in range(5)
        ]
        assert all(e.kv.create_revision == e.kv.mod_revision for e in seen)
        # The range (through the gateway) sees what the puts (over gRPC) wrote.
        kvs, _ = await etcd.range(b"t/", prefix=True)
        assert [kv.value for kv in kvs] == [b"value %d" % i for i in range(5)]
    finally:
        await etcd.close()


async def test_a_watch_from_a_compacted_revision_says_so(etcd_url: str) -> None:
    etcd = EtcdClient([etcd_url])
    try:
        first = await etcd.put(b"c/a", b"1")
        await etcd.put(b"c/a", b"2")
        last = await etcd.put(b"c/a", b"3")
        await etcd.compact(last)
        with pytest.raises(EtcdCompacted) as raised:
            async for _ in etcd.watch(b"c/", first):
                pass
        assert raised.value.compact_revision == last
    finally:
        await etcd.close()


async def test_a_put_no_member_took_did_not_happen() -> None:
    # Nothing listens there: the request never left, so the put is refused, not unknown.
    etcd = EtcdClient([f"http://127.0.0.1:{free_peer_port()}"], timeout=2)
    try:
        with pytest.raises(EtcdUnavailable):
            await etcd.put(b"k", b"v")
    finally:
        await etcd.close()


def test_forked_children_survive_busy_grpc_calls(etcd_url: str) -> None:
    # In a fresh interpreter, as `jq serve` imports the client: puts and a watch in flight
    # while the process forks children that only compute and exit, as a snapshot child does.
    script = textwrap.dedent(
        f"""
        import asyncio, os
        from jq_tool.engine.etcd_client import EtcdClient

        async def main():
            etcd = EtcdClient([{etcd_url!r}])
            start = await etcd.current_revision()
            async def put():
                for i in range(100_000):
                    await etcd.put(b"f/%d" % (i % 50), b"x" * 500)
            async def watch():
                async for _ in etcd.watch(b"f/", start):
                    pass
            tasks = [asyncio.create_task(put()) for _ in range(4)]
            tasks.append(asyncio.create_task(watch()))
            await asyncio.sleep(0.5)
            failed = 0
            for _ in range(40):
                pid = os.fork()
                if pid == 0:
                    sum(range(10_000))
                    os._exit(0)
                failed += os.waitpid(pid, 0)[1] != 0
                await asyncio.sleep(0.02)
            print("failed", failed)
            os._exit(0)

        asyncio.run(main())
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split()[-2:] == ["failed", "0"], run.stdout + run.stderr[-2000:]
