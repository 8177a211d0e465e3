"""Clients that send faster than they read, against a real `jq serve` (docs/api.md, Limits):
pipelined requests are read no further ahead of their answers than the server's pipeline depth,
so a client that pipelines thousands of requests and never reads costs the server a bounded
amount of memory, returned when it leaves; a client that pipelines far ahead and does read gets
every answer, in order; a client that reads none of its answers is cut off after the header
timeout, so that its connection slot comes back, while one that reads slowly keeps its
connection.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
import time

import httpx

from tests.conftest import JqServer
from tests.hostile.conftest import HostileFactory, RawClient, raw_request, wait_for

SEED = 20261203


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def small_window_socket(port: int) -> socket.socket:
    """A connection whose receive buffer is small, so that answers it does not read pile up in
    the server rather than in this process's kernel buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


def send_for(sock: socket.socket, data: bytes, seconds: float) -> int:
    """Send what the server takes of `data` within `seconds`, never reading; bytes sent."""
    sock.setblocking(False)
    sent, end = 0, time.monotonic() + seconds
    while sent < len(data) and time.monotonic() < end:
        try:
            sent += sock.send(data[sent : sent + 65536])
        except BlockingIOError:
            time.sleep(0.01)
    time.sleep(max(0.0, end - time.monotonic()))
    return sent


HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


def test_pipelined_requests_that_are_never_read_cost_bounded_memory(
    hostile_server: HostileFactory,
) -> None:
    """Ten connections at a time each pipeline 20,000 `GET /health` (~600 KB), never read,
    and close after a second; three rounds. Before the pipeline depth, each connection queued
    thousands of requests (~2 KB each) and freed none of it when closed: +270 MB a round."""
    server = hostile_server()
    assert server.proc is not None
    pid = server.proc.pid
    flood = HEALTH * 20_000
    before = rss_mib(pid)

    def one() -> None:
        sock = small_window_socket(server.port)
        try:
            send_for(sock, flood, 1.0)
        finally:
            sock.close()

    for _ in range(3):
        threads = [threading.Thread(target=one) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert httpx.get(server.url + "/health", timeout=10.0).status_code == 200
    grown = rss_mib(pid) - before
    assert grown < 48, f"server memory grew by {grown:.0f} MiB"
    assert "Traceback" not in server.log()


def test_a_client_that_pipelines_far_ahead_gets_every_answer_in_order(
    hostile_server: HostileFactory,
) -> None:
    """2,000 pipelined requests in one write (reads of 256 KiB hold hundreds), read only after
    a pause: gets, listings, submits with bodies over the parser's piece size whose JSON holds
    raw CRLF CRLF (a head's end, inside a body), chunked submits. Each answer is the one its
    request asked for, in order; every submit landed once."""
    server = hostile_server()
    key = server.client_key
    rng = random.Random(SEED)
    with server.client(key, timeout=10.0) as client:
        known = [
            client.post("/jobs", json={"payload": f"k{i}"}).json()["job_id"] for i in range(20)
        ]
    requests: list[bytes] = []
    expected: list[tuple[str, str]] = []  # (what, detail) for each answer, in order
    for n in range(2000):
        kind = rng.choice(["get", "get", "list", "submit", "chunked"])
        if kind == "get":
            job_id = rng.choice(known)
            requests.append(raw_request("GET", f"/jobs/{job_id}", key=key))
            expected.append(("get", job_id))
        elif kind == "list":
            requests.append(raw_request("GET", "/jobs?limit=3", key=key))
            expected.append(("list", ""))
        else:
            marker = f"m{n}-" + "x" * rng.randrange(2000, 5000)
            body = b'{"payload":\r\n\r\n' + json.dumps(marker).encode() + b"\r\n\r\n}"
            if kind == "chunked":
                head = f"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}"
                head += "\r\nContent-Type: application/json\r\n"
                half = len(body) // 2
                framed = b"".join(
                    b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:])
                )
                requests.append(
                    (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + framed + b"0\r\n\r\n"
                )
            else:
                requests.append(raw_request("POST", "/jobs", key=key, body=body))
            expected.append(("submit", marker))
    raw = RawClient(server.port, timeout=30.0)
    sender = threading.Thread(target=raw.send, args=(b"".join(requests),))
    sender.start()
    time.sleep(1.0)  # the server must hold what it has read until answers can leave
    submitted: dict[str, str] = {}
    for n, (what, detail) in enumerate(expected):
        answer = raw.read_answer()
        if what == "get":
            assert answer.status == 200, (n, answer)
            assert answer.json()["job_id"] == detail, n
        elif what == "list":
            assert answer.status == 200, (n, answer)
            assert len(answer.json()["jobs"]) == 3, n  # type: ignore[arg-type]
        else:
            assert answer.status == 201, (n, answer)
            submitted[str(answer.json()["job_id"])] = detail
    sender.join()
    raw.close()
    assert len(submitted) == sum(1 for what, _ in expected if what == "submit")
    with server.client(key, timeout=10.0) as client:
        for job_id, marker in rng.sample(sorted(submitted.items()), 40):
            assert client.get(f"/jobs/{job_id}").json()["payload"] == marker


def test_bytes_kept_back_inside_a_long_piece_stay_in_order(hostile_server: HostileFactory) -> None:
    """One write: 20 `GET /health`, a submit whose 10 KB body holds no CRLF CRLF, 5 more GETs,
    with 4 KiB request heads allowed. The first piece the server parses runs to the first head
    end past the body, more than the head limit, so it goes to the parser in two parts; the
    second part (the body's rest) is kept back, because 16 requests wait already. The first
    version of the pipeline depth then kept back the rest of the read in its place, losing
    the body's end: the submit and everything after it hung (found by test_http_pipelining's
    long sequences)."""
    server = hostile_server("--max-header-size", "4096")
    submit = raw_request(
        "POST", "/jobs", key=server.client_key, body=json.dumps({"payload": "x" * 10_000}).encode()
    )
    raw = RawClient(server.port, timeout=10.0)
    raw.send(HEALTH * 20 + submit + HEALTH * 5)
    statuses = [raw.read_answer().status for _ in range(26)]
    raw.close()
    assert statuses == [200] * 20 + [201] + [200] * 5


def test_requests_kept_back_behind_a_long_poll_are_not_timed_out(
    hostile_server: HostileFactory,
) -> None:
    """One write: a 2.5 s long poll on an empty queue, 51 `GET /health`, then a submit whose
    head ends the first piece the server parses (its body and a last GET are kept back: 52
    requests wait), with a 1 s header timeout. The poll's app watches for its client leaving
    (which resumes reading); the connection must still count as waiting for the app, not for
    a body the client has long sent, and must not be closed at the timeout."""
    server = hostile_server("--header-timeout", "1s")
    poll_body = json.dumps({"queue": "nothing-here", "wait_ms": 2500}).encode()
    poll = raw_request("POST", "/jobs/lease", key=server.worker_key, body=poll_body)
    body = json.dumps({"payload": "x" * 10_000}).encode()
    submit = raw_request("POST", "/jobs", key=server.client_key, body=body)
    count = 51
    before = len(poll) + len(HEALTH) * count
    assert before < 2048 - 4 < before + len(submit) - len(body)  # the submit's head ends it
    raw = RawClient(server.port, timeout=10.0)
    raw.send(poll + HEALTH * count + submit + HEALTH)
    statuses = [raw.read_answer().status for _ in range(count + 3)]
    raw.close()
    assert statuses == [404] + [200] * count + [201, 200]
    assert "timed out" not in server.log()


def fill_jobs(server: JqServer, count: int) -> None:
    with server.client(server.client_key, timeout=30.0) as client:
        for start in range(0, count, 1000):
            jobs = [{"payload": "p" * 200} for _ in range(min(1000, count - start))]
            assert client.post("/jobs/batch", json={"jobs": jobs}).status_code == 201


def test_clients_that_never_read_their_answers_give_their_connections_back(
    hostile_server: HostileFactory,
) -> None:
    """Four connections, the server's cap, pipeline large listings and never read. Their answers
    fill the server's write buffers; after the header timeout without a byte read each is cut
    off (reset), and a new client is served again. Before, they held the cap forever: every
    new client got 503 `too_many_connections`."""
    server = hostile_server("--max-connections", "4", "--header-timeout", "2s")
    fill_jobs(server, 1000)
    listing = (
        raw_request("GET", "/jobs?limit=1000", key=server.client_key) * 60
    )  # ~20 MB of answers each
    hogs = [small_window_socket(server.port) for _ in range(4)]
    senders = [threading.Thread(target=send_for, args=(hog, listing, 0.3)) for hog in hogs]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()

    def served() -> bool:
        try:
            return (
                httpx.get(
                    server.url + "/jobs?limit=1",
                    timeout=5.0,
                    headers=server.headers(server.client_key),
                ).status_code
                == 200
            )
        except httpx.TransportError:
            return False

    # Refused while the four hold their connections (they are within their timeout) ...
    assert httpx.get(server.url + "/jobs?limit=1", timeout=5.0).status_code == 503
    # ... and served once the timeout (2 s, checked every 0.25 s) has cut them off.
    assert wait_for(served, timeout=15.0, every=0.25)
    for hog in hogs:
        hog.settimeout(10.0)
        with contextlib.suppress(ConnectionResetError):
            while hog.recv(1 << 20):
                pass  # what the kernel held before the reset, then the reset or the end
        hog.close()
    assert "an answer not read within 2.0s" in server.log()
    assert "Traceback" not in server.log()


def test_a_client_that_reads_slowly_keeps_its_connection(hostile_server: HostileFactory) -> None:
    """A client that pipelines ten reads of a 1 MB job, lets the answers fill the kernel's
    buffers and the server's, then reads at ~250 KB/s for five seconds: each answer waits in
    the server's write buffer (writes paused) for about four seconds, longer than the 2 s
    timeout, and the connection is kept, because the client takes some of it all the time;
    then it reads the rest at full speed and has every answer whole. The timeout counts time
    without a byte read, not the time an answer takes to leave."""
    server = hostile_server("--header-timeout", "2s")
    with server.client(server.client_key, timeout=30.0) as client:
        answer = client.post("/jobs", json={"payload": "x" * 1_000_000})
        job_id = answer.json()["job_id"]
        whole = len(client.get(f"/jobs/{job_id}").content)
    count = 10
    sock = small_window_socket(server.port)
    sock.settimeout(10.0)
    sock.sendall(raw_request("GET", f"/jobs/{job_id}", key=server.client_key) * count)
    time.sleep(0.5)  # the answers fill the kernel's buffers, then the server's
    received = b""
    slow_until = time.monotonic() + 5.0
    while time.monotonic() < slow_until:
        chunk = sock.recv(16384)
        assert chunk, "the server closed a connection that was reading"
        received += chunk
        time.sleep(0.064)  # 16 KiB per 64 ms: ~250 KB/s
    answers = read_answers(sock, received, count)
    sock.close()
    assert answers == [(200, whole)] * count
    assert "not read within" not in server.log()


def read_answers(sock: socket.socket, received: bytes, count: int) -> list[tuple[int, int]]:
    """(status, body length) of the next `count` Content-Length answers: those in `received`,
    then read from `sock` at full speed."""
    buffer, answers = bytearray(received), []

    def more() -> None:
        chunk = sock.recv(1 << 20)
        assert chunk, "the server closed a connection that was reading"
        buffer.extend(chunk)

    while len(answers) < count:
        while (head_end := buffer.find(b"\r\n\r\n")) < 0:
            more()
        head = bytes(buffer[:head_end])
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(buffer) < head_end + 4 + length:
            more()
        answers.append((int(head.split(b" ", 2)[1]), length))
        del buffer[: head_end + 4 + length]
    return answers
