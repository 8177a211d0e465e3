"""A segment rotation that runs into EMFILE, on a real `jq serve` (issue 14).

The original failure: idle sockets used up the descriptors, the next WAL rotation failed with
EMFILE, the engine treated it like a failed fsync and refused every write until a restart. Here
the connection cap is deliberately set above the descriptor limit (`--max-connections 1000`
under `ulimit -n 128`) so that a flood of idle sockets really exhausts the table; the segments
are small so that rotations come often. Writes must be refused with 503 + Retry-After
(`resource_exhausted`) while descriptors are gone, /health must say why, and both must recover
by themselves when the sockets close; every acknowledged job survives kill -9.
"""

from __future__ import annotations

import socket
import time

import httpx

from tests.hostile.conftest import HostileFactory, assert_job_survives, open_descriptors

NOFILE = 128
PAYLOAD = "p" * 2000  # ~30 records fill a 64 KiB segment


def test_emfile_at_rotation_refuses_writes_then_they_resume(
    hostile_server: HostileFactory,
) -> None:
    server = hostile_server(
        "--max-connections", "1000",
        "--header-timeout", "60s",  # the flood stays until this test closes it
        "--keep-alive-timeout", "60s",
        "--segment-bytes", "64KiB",
        nofile=NOFILE,
    )  # fmt: skip
    assert server.proc is not None
    pid = server.proc.pid
    headers = {"Authorization": f"Bearer {server.client_key}"}
    acknowledged: list[str] = []
    # One keep-alive connection, opened before the flood: it keeps its descriptor.
    client = httpx.Client(base_url=server.url, headers=headers, timeout=10.0)
    for _ in range(3):
        answer = client.post("/jobs", json={"payload": PAYLOAD})
        assert answer.status_code == 201
        acknowledged.append(answer.json()["job_id"])

    flood: list[socket.socket] = []
    refused = None
    try:
        for _ in range(2 * NOFILE):  # bounded: twice the limit is more than enough
            if open_descriptors(pid) >= NOFILE:
                break
            try:
                flood.append(socket.create_connection(("127.0.0.1", server.port), timeout=2.0))
            except OSError:
                break
            time.sleep(0.002)
        time.sleep(0.3)
        assert open_descriptors(pid) == NOFILE, open_descriptors(pid)

        for _ in range(300):  # bounded: ~10 segments' worth
            answer = client.post("/jobs", json={"payload": PAYLOAD})
            if answer.status_code == 201:
                acknowledged.append(answer.json()["job_id"])
                continue
            refused = answer
            break
        assert refused is not None, "no write was refused with every descriptor in use"
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["code"] == "resource_exhausted", refused.text
        assert "Too many open files" in refused.json()["error"]
        health = client.get("/health")
        assert health.status_code == 503 and "Too many open files" in health.json()["reason"]
        again = client.post("/jobs", json={"payload": PAYLOAD})  # still refused, still 503
        assert again.status_code == 503 and again.json()["code"] == "resource_exhausted"
    finally:
        for sock in flood:
            sock.close()

    # Descriptors are back: /health turns ok by itself, writes go through, no restart.
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and client.get("/health").status_code != 200:
        time.sleep(0.1)
    assert client.get("/health").status_code == 200
    for _ in range(40):  # across at least one more rotation
        answer = client.post("/jobs", json={"payload": PAYLOAD})
        assert answer.status_code == 201, answer.text
        acknowledged.append(answer.json()["job_id"])
    client.close()
    assert server.proc.poll() is None and server.proc.pid == pid
    log = server.log()
    assert "refusing all writes" not in log and "CRITICAL" not in log
    assert "WAL writes accepted again" in log
    assert_job_survives(server, acknowledged)
