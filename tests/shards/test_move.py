"""A queue moved between shards under load (docs/scaling.md §2.6): producers keep submitting
(with idempotency keys, retried until answered, as the SDK does) and workers keep leasing and
acking through every node while `POST /admin/queues/{q}/move` runs; some leases are taken before
the move and acked after it, on the new shard, with their lease ids. Afterwards every
acknowledged job is on the new shard exactly once, every one was acked exactly once, and no job
was ever handed to two workers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest

from tests.shards.conftest import Sharded, headers, placement, submit
from tests.shards.test_failover import queue_job_ids

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server not installed"),
]

QUEUE = "moving"
JQ = [sys.executable, "-m", "jq_tool.cli.main"]


class Producer(threading.Thread):
    def __init__(self, sharded: Sharded, offset: int) -> None:
        super().__init__(daemon=True)
        self.nodes = sharded.replicas
        self.offset = offset
        self.job_ids: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        i = self.offset
        with httpx.Client(timeout=5) as http:
            while not self.stopping.is_set():
                key = uuid.uuid4().hex
                while True:  # the same key until answered: one job per submit
                    node = self.nodes[i % len(self.nodes)]
                    i += 1
                    try:
                        answer = http.post(
                            node.url + "/jobs",
                            json={"queue": QUEUE, "payload": key},
                            headers={**headers(node), "Idempotency-Key": key},
                        )
                    except httpx.HTTPError:
                        continue
                    if answer.status_code == 201:
                        self.job_ids.append(answer.json()["job_id"])
                        break
                    assert answer.status_code in (503, 504), answer.text
                    time.sleep(0.05)
                time.sleep(0.01)


class Worker(threading.Thread):
    def __init__(self, sharded: Sharded, offset: int) -> None:
        super().__init__(daemon=True)
        self.nodes = sharded.replicas
        self.offset = offset
        self.leased: list[str] = []
        self.acked: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        i = self.offset
        with httpx.Client(timeout=10) as http:
            while not self.stopping.is_set():
                node = self.nodes[i % len(self.nodes)]
                i += 1
                try:
                    answer = http.post(
                        node.url + "/jobs/lease",
                        json={
                            "queue": QUEUE,
                            "max_jobs": 5,
                            "wait_ms": 500,
                            "lease_ms": 60_000,
                        },  # fmt: skip
                        headers=headers(node),
                    )
                except httpx.HTTPError:
                    continue
                if answer.status_code == 404:  # nothing to lease now
                    continue
                if answer.status_code != 200:
                    assert answer.status_code in (503, 504), answer.text
                    continue
                for job in answer.json():
                    self.leased.append(job["job_id"])
                    ack(http, self.nodes[i % len(self.nodes)], job)
                    self.acked.append(job["job_id"])


def ack(http: httpx.Client, node, job: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Ack until answered 200 (503 while the queue is fenced; the node holds it up to 2 s)."""
    for _ in range(100):
        try:
            answer = http.post(
                f"{node.url}/jobs/{job['job_id']}/ack",
                json={"lease_id": job["lease_id"]},
                headers=headers(node),
            )
        except httpx.HTTPError:
            continue
        if answer.status_code == 200:
            assert answer.json()["state"] == "ACKED"
            return
        assert answer.status_code in (503, 504), answer.text
        time.sleep(0.05)
    raise AssertionError(f"ack of {job['job_id']} never answered")


def test_a_queue_moves_between_shards_under_load(sharded: Sharded) -> None:
    a, b, c = sharded.replicas
    assert submit(a, QUEUE, "first").status_code == 201
    source = placement(a)[QUEUE]
    target = 1 - source
    # Leases held across the move: taken now, acked after it, on the new shard.
    held = httpx.post(
        b.url + "/jobs/lease",
        json={"queue": QUEUE, "max_jobs": 1, "lease_ms": 120_000},
        headers=headers(b),
        timeout=5,
    ).json()
    assert len(held) == 1
    producers = [Producer(sharded, i) for i in range(2)]
    workers = [Worker(sharded, i) for i in range(3)]
    for thread in [*producers, *workers]:
        thread.start()
    time.sleep(3)

    started = time.monotonic()
    moved = subprocess.run(
        [
            *JQ,
            "queues",
            "move",
            QUEUE,
            "--to",
            str(target),
            "--url",
            c.url,
            "--key",
            c.admin_key or "",
            "--json",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - started
    assert moved.returncode == 0, moved.stderr
    outcome = json.loads(moved.stdout)
    assert outcome["moved"] is True and outcome["shard"] == target and outcome["epoch"] == 2
    for node in sharded.nodes:
        deadline = time.monotonic() + 10
        while placement(node)[QUEUE] != target and time.monotonic() < deadline:
            time.sleep(0.1)
        assert placement(node)[QUEUE] == target
    time.sleep(3)  # load on the new shard
    for thread in producers:
        thread.stopping.set()
        thread.join(30)
    with httpx.Client(timeout=10) as http:
        ack(http, a, held[0])  # the lease taken before the move, settled after it
    # Drain: the workers take what is left.
    submitted = {job_id for p in producers for job_id in p.job_ids} | {held[0]["job_id"]}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done = {job_id for w in workers for job_id in w.acked} | {held[0]["job_id"]}
        if done >= submitted:
            break
        time.sleep(0.2)
    for thread in workers:
        thread.stopping.set()
        thread.join(30)

    leased = [job_id for w in workers for job_id in w.leased] + [held[0]["job_id"]]
    acked = [job_id for w in workers for job_id in w.acked] + [held[0]["job_id"]]
    assert len(leased) == len(set(leased)), "a job was handed to two workers"
    assert len(acked) == len(set(acked))
    missing = submitted - set(acked)
    seen = {
        job_id: httpx.get(f"{a.url}/jobs/{job_id}", headers=headers(a), timeout=5).text
        for job_id in sorted(missing)[:3]
    }
    assert not missing and set(acked) == submitted, (len(missing), seen)
    for node in sharded.replicas:  # on every replica: exactly these jobs, all ACKED
        assert queue_job_ids(node, QUEUE) == submitted
    assert all(w.is_alive() is False for w in workers)
    # `jq shards` shows the queue on its new shard, both shards held and healthy.
    shown = subprocess.run(
        [*JQ, "shards", "--url", a.url, "--key", a.admin_key or "", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    view = json.loads(shown.stdout)
    assert view["queues"][QUEUE]["shard"] == target and "move" not in view["queues"][QUEUE]
    assert all(s["held"] and s["health"]["ok"] for s in view["shards"].values())
    print(
        f"\nmoved {QUEUE!r} shard {source} -> {target} under load in {took:.2f} s "
        f"({outcome['jobs']} jobs adopted); {len(submitted)} jobs, 0 lost, 0 doubled"
    )
