"""A real `jq serve` killed with SIGKILL after snapshots that landed in the middle of a WAL
segment (an engine snapshots while appending, so every one of them does): the restart restores
the newest snapshot, steps over the records it covers and replays only what followed, and ends
exactly where the killed process had answered."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import JqServer, ServerFactory

pytestmark = pytest.mark.slow


def state(client: httpx.Client) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    stats = client.get("/stats").json()
    return stats["totals"], stats["queues"]


def submit_and_work(client: httpx.Client, round_: int) -> list[str]:
    """Five jobs in three queues with priorities, then a lease and an ack that leave RUNNING,
    ACKED and DEAD jobs behind (no RETRY: its backoff would run out while the server is down,
    and the state compared after the restart would have moved on)."""
    jobs = [{"payload": f"{round_}-{i}", "queue": f"q{i % 3}", "priority": i % 4,
             "max_retries": 0}
            for i in range(5)]  # fmt: skip
    response = client.post("/jobs/batch", json={"jobs": jobs})
    assert response.status_code == 201, response.text
    # Two leased, one of them answered (acked, or failed for good), the other left RUNNING.
    job, _running = client.post("/jobs/lease", json={"queue": "q1", "max_jobs": 2}).json()
    ack = {"job_id": job["job_id"], "lease_id": job["lease_id"]}
    if round_ % 2:
        ack["result_error"] = "boom"
    assert client.post("/jobs/ack", json={"acks": [ack]}).status_code == 200
    return [entry["job_id"] for entry in response.json()["results"]]


def work_until_snapshots(server: JqServer, client: httpx.Client, count: int, ids: list[str]) -> int:
    """Rounds of submit_and_work (their job ids added to `ids`) until the data dir holds
    `count` snapshot files; the next round's number."""
    round_ = 0
    deadline = time.monotonic() + 30
    while len(list(server.data_dir.glob("*.snap"))) < count:
        assert time.monotonic() < deadline, f"fewer than {count} snapshots were written"
        ids += submit_and_work(client, round_)
        round_ += 1
    return round_


def test_a_killed_server_restarts_from_a_mid_segment_snapshot_to_what_it_answered(
    jq_server_factory: ServerFactory,
) -> None:
    server: JqServer = jq_server_factory("--snapshot-every", "20")
    ids: list[str] = []
    with server.client(server.admin_key, timeout=30) as client:
        round_ = work_until_snapshots(server, client, 1, ids)
        for more in range(3):  # a tail after the newest snapshot, for the restart to replay
            ids += submit_and_work(client, round_ + more)
        snapshot = max(server.data_dir.glob("*.snap"))
        segments = sorted(server.data_dir.glob("*.wal"))
        # The newest snapshot landed inside a segment that holds records before it.
        assert int(segments[0].name.split(".")[0]) < int(snapshot.name.split(".")[0])
        before = state(client)
        jobs_before = {job_id: client.get(f"/jobs/{job_id}").json() for job_id in ids}
    server.kill9()

    server.start()
    with server.client(server.admin_key, timeout=30) as client:
        assert state(client) == before
        for job_id, job in jobs_before.items():
            assert client.get(f"/jobs/{job_id}").json() == job
        # And it goes on from there: the queued jobs are leased in their queues.
        assert client.post("/jobs/lease", json={"queue": "q0", "max_jobs": 5}).status_code == 200


def test_a_flipped_bit_in_the_newest_snapshot_restarts_from_the_one_kept_before_it(
    jq_server_factory: ServerFactory,
) -> None:
    # A crash never leaves a bad snapshot (it is written, fsynced, then renamed in), but a disk
    # can: the WAL keeps the snapshot before the newest and the records since it.
    server: JqServer = jq_server_factory("--snapshot-every", "20")
    ids: list[str] = []
    with server.client(server.admin_key, timeout=30) as client:
        round_ = work_until_snapshots(server, client, 2, ids)
        ids += submit_and_work(client, round_)
        before = state(client)
        jobs_before = {job_id: client.get(f"/jobs/{job_id}").json() for job_id in ids}
    assert server.stop() == 0  # a graceful stop writes a final snapshot: the newest
    newest = max(server.data_dir.glob("*.snap"))
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x10
    newest.write_bytes(bytes(data))

    server.start()
    log = server.log()
    assert f"snapshot {newest.name}: snapshot crc mismatch: not used" in log, log[-2000:]
    with server.client(server.admin_key, timeout=30) as client:
        assert state(client) == before
        for job_id, job in jobs_before.items():
            assert client.get(f"/jobs/{job_id}").json() == job
