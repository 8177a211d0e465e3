"""An idle-socket flood and a slowloris against a real `jq serve` under `ulimit -n 256`, while
legitimate clients keep submitting (issue 14).

What must hold: every legitimate submit either succeeds or gets 503 with Retry-After (none
hangs, none is reset); the server never gives up its writes (no "refusing all writes"); once the
attackers leave, GET /health is 200 within a second, with no restart; and every acknowledged job
is there after a final kill -9 and restart.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

import httpx

from tests.hostile.conftest import HostileFactory, assert_job_survives, open_descriptors

FLOOD_SECONDS = 5.0
IDLE_SOCKETS = 400  # more than the server may hold (256 descriptors)
SLOWLORIS_SOCKETS = 40
RECONNECTS_PER_SECOND = 1000  # the attackers reconnect what the server closes, this fast


@dataclass
class Attack:
    """Idle sockets and slowloris heads, kept up (reconnecting) until stopped."""

    port: int
    opened: int = 0
    closed_by_server: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        selector = selectors.DefaultSelector()
        slow: set[socket.socket] = set()
        pending: list[bool] = []  # reconnections waiting for their turn

        started = time.monotonic()

        def connect(slowloris: bool) -> None:
            allowed = IDLE_SOCKETS + SLOWLORIS_SOCKETS
            allowed += RECONNECTS_PER_SECOND * (time.monotonic() - started)
            if self.opened >= allowed:
                pending.append(slowloris)
                return
            self.opened += 1
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=2.0)
            except OSError:
                return
            sock.setblocking(False)
            if slowloris:
                try:
                    sock.send(b"POST /jobs HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                except OSError:
                    sock.close()
                    return
                slow.add(sock)
            selector.register(sock, selectors.EVENT_READ, slowloris)

        for i in range(IDLE_SOCKETS + SLOWLORIS_SOCKETS):
            connect(slowloris=i >= IDLE_SOCKETS)
        next_drip = time.monotonic()
        while not self.stop.is_set():
            for key, _ in selector.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:  # closed by the server (or answered and closed): come back
                    self.closed_by_server += 1
                    selector.unregister(sock)
                    slow.discard(sock)
                    sock.close()
                    connect(slowloris=bool(key.data))
            for slowloris in [pending.pop() for _ in range(len(pending))]:
                connect(slowloris)
            if time.monotonic() >= next_drip:  # one more header byte, never a whole head
                next_drip += 0.2
                for sock in list(slow):
                    with contextlib.suppress(OSError):
                        sock.send(b"a")
        for key in list(selector.get_map().values()):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            sock.close()
        selector.close()


@dataclass
class Outcomes:
    acknowledged: list[str] = field(default_factory=list)
    refused_with_retry_after: int = 0
    failures: list[str] = field(default_factory=list)  # anything else: a hang, a reset, a 5xx


def legitimate_submits(url: str, key: str, outcomes: Outcomes, stop: threading.Event) -> None:
    """A careful client: a new connection per submit (the hardest case under a cap), honouring
    Retry-After (capped so the test keeps moving)."""
    headers = {"Authorization": f"Bearer {key}"}
    for i in range(2000):  # bounded; stops when told
        if stop.is_set():
            return
        try:
            with httpx.Client(timeout=5.0) as client:
                answer = client.post(url + "/jobs", json={"payload": f"legit-{i}"}, headers=headers)
        except httpx.HTTPError as exc:
            outcomes.failures.append(f"submit {i}: {exc!r}")
            continue
        if answer.status_code == 201:
            outcomes.acknowledged.append(answer.json()["job_id"])
        elif answer.status_code == 503 and answer.headers.get("retry-after") == "1":
            outcomes.refused_with_retry_after += 1
            time.sleep(0.1)
        else:
            outcomes.failures.append(f"submit {i}: {answer.status_code} {answer.text[:200]}")


def test_idle_flood_and_slowloris_while_submitting(hostile_server: HostileFactory) -> None:
    server = hostile_server("--header-timeout", "2s", nofile=256)
    assert server.proc is not None and server.client_key is not None
    pid = server.proc.pid
    attack = Attack(server.port)
    outcomes = Outcomes()
    stop_submits = threading.Event()
    attacker = threading.Thread(target=attack.run, name="attacker")
    submitter = threading.Thread(
        target=legitimate_submits,
        args=(server.url, server.client_key, outcomes, stop_submits),
        name="submitter",
    )
    attacker.start()
    time.sleep(0.5)  # the flood is up before the first legitimate submit
    submitter.start()
    peak = 0
    deadline = time.monotonic() + FLOOD_SECONDS
    while time.monotonic() < deadline:
        peak = max(peak, open_descriptors(pid))
        time.sleep(0.1)
    attack.stop.set()
    attacker.join(timeout=30)
    assert not attacker.is_alive()
    left = time.monotonic()

    # The attackers are gone: /health is 200 within a second, from the same process.
    healthy_after = None
    while time.monotonic() - left < 1.0:
        try:
            if httpx.get(server.url + "/health", timeout=1.0).status_code == 200:
                healthy_after = time.monotonic() - left
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    assert healthy_after is not None, "GET /health was not 200 within 1 s of the flood ending"
    assert server.proc.poll() is None and server.proc.pid == pid
    time.sleep(0.5)  # a few submits after the flood as well
    stop_submits.set()
    submitter.join(timeout=30)
    assert not submitter.is_alive()

    print(
        f"acknowledged {len(outcomes.acknowledged)}, refused with Retry-After "
        f"{outcomes.refused_with_retry_after}, attack opened {attack.opened} and saw "
        f"{attack.closed_by_server} closed, peak descriptors {peak}, healthy {healthy_after:.3f}s"
    )
    assert not outcomes.failures, outcomes.failures[:5]
    assert outcomes.acknowledged, "no legitimate submit succeeded"
    # The flood really filled the server: it held far more than a handful of sockets, and the
    # attackers saw it close what it could not keep.
    assert attack.closed_by_server > 0 and peak > 150, (attack.closed_by_server, peak)
    log = server.log()
    assert "refusing all writes" not in log and "CRITICAL" not in log
    assert_job_survives(server, outcomes.acknowledged)
