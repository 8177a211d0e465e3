"""Failover of one shard (docs/scaling.md §2.7): kill -9 the etcd leader of one shard's group
while clients submit to, lease from and ack a queue on each shard. The other shard's queue keeps
answering every request throughout; the killed shard's queue stops for the failover time only,
then resumes; no acknowledged job is lost. The gaps measured are printed (pytest -s)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest

from tests.shards.conftest import Sharded, headers, placement, submit

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server not installed"),
]


class Traffic(threading.Thread):
    """Submits to `queue` through the replica nodes in turn, and leases and acks what it can,
    recording when each acknowledged submit was answered."""

    def __init__(self, sharded: Sharded, queue: str) -> None:
        super().__init__(daemon=True)
        self.sharded = sharded
        self.queue = queue
        self.acknowledged: list[tuple[float, str]] = []
        self.failures: list[tuple[float, str]] = []
        self.acked: set[str] = set()
        self.stopping = threading.Event()

    def run(self) -> None:
        nodes = self.sharded.replicas
        i = 0
        with httpx.Client(timeout=3) as http:
            while not self.stopping.is_set():
                node = nodes[i % len(nodes)]
                i += 1
                key = uuid.uuid4().hex
                try:
                    answer = http.post(
                        node.url + "/jobs",
                        json={"queue": self.queue, "payload": str(i)},
                        headers={**headers(node), "Idempotency-Key": key},
                    )
                    if answer.status_code == 201:
                        self.acknowledged.append((time.monotonic(), answer.json()["job_id"]))
                    else:
                        self.failures.append((time.monotonic(), f"{answer.status_code}"))
                    leased = http.post(
                        node.url + "/jobs/lease",
                        json={"queue": self.queue, "max_jobs": 5},
                        headers=headers(node),
                    )
                    if leased.status_code == 200:
                        for job in leased.json():
                            done = http.post(
                                f"{node.url}/jobs/{job['job_id']}/ack",
                                json={"lease_id": job["lease_id"]},
                                headers=headers(node),
                            )
                            if done.status_code == 200:
                                self.acked.add(job["job_id"])
                    elif leased.status_code != 200:
                        self.failures.append((time.monotonic(), f"lease {leased.status_code}"))
                except httpx.HTTPError as exc:
                    self.failures.append((time.monotonic(), type(exc).__name__))
                time.sleep(0.02)

    def longest_gap(self, since: float) -> float:
        times = [since] + [at for at, _ in self.acknowledged if at >= since]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


@pytest.mark.parametrize("victim_shard", [1, 0])
def test_killing_one_shards_etcd_leader_stops_only_its_queues(
    sharded: Sharded, victim_shard: int
) -> None:
    node = sharded.replicas[0]
    # The first two new queues go to shards 0 and 1 (least loaded, ties to the lower number).
    for queue in ("on-a", "on-b"):
        assert submit(node, queue, "first").status_code == 201
    table = placement(node)
    by_shard = {table["on-a"]: "on-a", table["on-b"]: "on-b"}
    assert set(by_shard) == {0, 1}
    survivor_shard = 1 - victim_shard

    traffic = {shard: Traffic(sharded, by_shard[shard]) for shard in (0, 1)}
    for thread in traffic.values():
        thread.start()
    time.sleep(2)
    group = sharded.groups[victim_shard]
    leader = group.leader()
    killed_at = time.monotonic()
    leader.kill9()
    time.sleep(8)
    group.restart(leader)
    time.sleep(3)
    for thread in traffic.values():
        thread.stopping.set()
    for thread in traffic.values():
        thread.join(30)

    survivor, victim = traffic[survivor_shard], traffic[victim_shard]
    # The other shard's queue answered every request, before, during and after the kill.
    assert survivor.failures == [], survivor.failures[:5]
    assert len([1 for at, _ in survivor.acknowledged if at > killed_at]) > 20
    # The killed shard's queue resumed after its failover.
    assert any(at > killed_at for at, _ in victim.acknowledged), victim.failures[-5:]
    print(
        f"\nshard {victim_shard} leader killed: its longest gap between acknowledged submits "
        f"{victim.longest_gap(killed_at):.2f} s ({len(victim.failures)} refused or unknown); "
        f"shard {survivor_shard}: longest gap {survivor.longest_gap(killed_at):.2f} s, "
        f"0 failures"
    )
    # Nothing acknowledged was lost, on either shard, seen from every replica node.
    for thread in traffic.values():
        for reader in sharded.replicas:
            held = queue_job_ids(reader, thread.queue)
            missing = {job_id for _, job_id in thread.acknowledged} - held
            assert not missing, (reader.env["NODE_ID"], thread.queue, sorted(missing)[:5])


def queue_job_ids(node, queue: str) -> set[str]:  # type: ignore[no-untyped-def]
    """Every job id of the queue the node lists (GET /jobs, page after page)."""
    ids: set[str] = set()
    cursor = None
    while True:
        params = {"queue": queue, "limit": "1000", **({"cursor": cursor} if cursor else {})}
        page = httpx.get(node.url + "/jobs", params=params, headers=headers(node), timeout=10)
        assert page.status_code == 200, page.text
        body = page.json()
        ids.update(job["job_id"] for job in body["jobs"])
        cursor = body["next_cursor"]
        if cursor is None:
            return ids


def test_a_shard_without_quorum_answers_503_on_its_health(sharded: Sharded) -> None:
    """GET /health/shards/{id} (docs/scaling.md §2.7): 503 while the shard has no quorum, from
    every node (the one holding no shard forwards it), while /health and the other shard stay
    200; `jq shards` shows it DOWN; back to 200 once its members return."""
    victim, survivor = 1, 0
    everyone = [*sharded.replicas, sharded.forwarder]

    def status(node, shard: int) -> int:  # type: ignore[no-untyped-def]
        return httpx.get(f"{node.url}/health/shards/{shard}", timeout=10).status_code

    def wait_for(shard: int, expected: int) -> None:
        for node in everyone:
            deadline = time.monotonic() + 60
            while status(node, shard) != expected:
                assert time.monotonic() < deadline, (node.env["NODE_ID"], shard, expected)
                time.sleep(0.3)

    wait_for(victim, 200)
    assert status(sharded.replicas[0], 7) == 404
    group = sharded.groups[victim]
    down = group.members[:2]
    for member in down:
        member.kill9()
    wait_for(victim, 503)
    answer = httpx.get(f"{sharded.replicas[0].url}/health/shards/{victim}", timeout=10)
    assert answer.json()["status"] == "unavailable" and answer.json()["reason"]
    assert answer.headers["retry-after"] == "1"
    for node in everyone:
        assert status(node, survivor) == 200
        assert httpx.get(node.url + "/health", timeout=10).status_code == 200
    node = sharded.replicas[1]
    shown = subprocess.run(
        [sys.executable, "-m", "jq_tool.cli.main", "shards", "--url", node.url,
         "--key", node.admin_key or ""],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr

    def row(shard: int) -> str:
        return next(line for line in shown.stdout.splitlines() if f"shard {shard} " in line)

    assert "DOWN (" in row(victim) and "ok;" in row(survivor), shown.stdout
    for member in down:
        group.restart(member)
    wait_for(victim, 200)
