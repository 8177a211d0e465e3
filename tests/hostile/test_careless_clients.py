"""Clients that go away, or stop listening, at awkward moments, against a real `jq serve`: a
submit closed or reset (SO_LINGER 0) as soon as it is sent, or cut off mid-body, or half-closed
(shutdown(SHUT_WR)) before its answer is read; long polls that vanish while they wait; acks and
batch acks with `lease_next` reset before their answer is read; and clients that pipeline
requests and never read an answer. Every scenario is randomized with a fixed seed and repeated
many times, with several clients at once.

After each burst a well-behaved client checks what docs/api.md promises: GET /health is 200; a
submit whose request was sent whole exists at most once (resending its Idempotency-Key answers
the same job, 201 the first time only if the first try never landed), and one cut off mid-body
does not exist at all; a long poll whose client disconnected leases nothing ("stops waiting and
leases nothing"), and never swallows the wake-up another waiter needed; a job leased for a
client that went away (its lease landed before the client left: architecture.md, "a command
whose caller went away is still applied") is RUNNING no longer than its lease; settling calls
resent with the same lease_id answer 200 or 409. Throughout: the server's sockets come back to
their count before the burst, and its log has no traceback, Exception or ERROR line.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import httpx

from tests.conftest import JqServer
from tests.hostile.conftest import Answer, HostileFactory, RawClient, raw_request, wait_for

SEED = 20261203
LEASE_MS = 1000  # the shortest lease the API takes: leases to vanished clients end soon
LEASE_CHECK = "200ms"


# -- raw requests and ways to leave -----------------------------------------------------------


def raw_post(path: str, key: str | None, body: dict[str, object], *, extra: str = "") -> bytes:
    return raw_request("POST", path, key=key, body=json.dumps(body).encode(), extra=extra)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10.0)


def vanish(sock: socket.socket, how: str) -> None:
    """Leave without reading: "close" (FIN) or "reset" (SO_LINGER 0: RST)."""
    if how == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


# -- what the server looks like from outside --------------------------------------------------


def sockets_held(server: JqServer) -> int:
    assert server.proc is not None
    fd_dir = f"/proc/{server.proc.pid}/fd"
    held = 0
    for name in os.listdir(fd_dir):
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile
            held += os.readlink(f"{fd_dir}/{name}").startswith("socket:")
    return held


def assert_sockets_back_to(server: JqServer, baseline: int) -> None:
    assert wait_for(lambda: sockets_held(server) <= baseline, timeout=5.0), (
        f"the server holds {sockets_held(server)} sockets, {baseline} before the burst"
    )


def assert_log_clean(server: JqServer) -> None:
    bad = [
        line
        for line in server.log().splitlines()
        if any(word in line for word in ("Traceback", "Exception", "ERROR", "CRITICAL"))
    ]
    assert not bad, bad[:10]


def jobs_of(client: httpx.Client, queue: str) -> list[dict[str, object]]:
    answer = client.get("/jobs", params={"queue": queue, "limit": 1000})
    assert answer.status_code == 200, answer.text
    jobs: list[dict[str, object]] = answer.json()["jobs"]
    return jobs


def parse_time(text: object) -> float:
    assert isinstance(text, str)
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def assert_no_orphan_leases(client: httpx.Client, queue: str, slack_s: float = 1.0) -> None:
    """No job of `queue` is RUNNING on a lease that ended more than `slack_s` ago."""
    now = time.time()
    for job in jobs_of(client, queue):
        if job["state"] == "RUNNING":
            assert parse_time(job["lease_until"]) > now - slack_s, job


def only_answer(data: bytes) -> tuple[int, bytes]:
    """The status and body of `data`, which must be exactly one whole answer (the server's
    job answers have a Content-Length)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, data[:200]
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert len(body) == int(headers["content-length"]), data[:400]
    return int(lines[0].split()[1]), body


# -- submits ----------------------------------------------------------------------------------

SUBMIT_ROUNDS = 12
SUBMITS_PER_ROUND = 20  # open at once, then left in a random order
MODES = (
    "close",
    "reset",
    "half-close",
    "cut-close",
    "cut-reset",
    "cut-half-close",
    "cut-after-100-continue",  # Expect: 100-continue, read the 100, then part of the body
)


def test_abandoned_submits_exist_once_and_cut_ones_not_at_all(
    hostile_server: HostileFactory,
) -> None:
    server = hostile_server("--lease-check-interval", LEASE_CHECK)
    rng = random.Random(SEED)
    queue = "careless-submits"
    baseline = sockets_held(server)
    sent: dict[str, tuple[str, bytes]] = {}  # idempotency key -> (mode, body)
    half_close_answers: dict[str, int] = {}  # key -> the status read after a half-close
    for _ in range(SUBMIT_ROUNDS):
        clients = []
        for _ in range(SUBMITS_PER_ROUND):
            key = uuid.uuid4().hex
            body = json.dumps({"payload": f"p-{key}", "queue": queue}).encode()
            mode = rng.choice(MODES)
            extra = f"Idempotency-Key: {key}\r\n"
            if mode == "cut-after-100-continue":
                extra += "Expect: 100-continue\r\n"
            request = raw_post(
                "/jobs", server.client_key, {"payload": f"p-{key}", "queue": queue}, extra=extra
            )
            sock = connect(server.port)
            if mode == "cut-after-100-continue":
                head, _, _ = request.partition(b"\r\n\r\n")
                sock.sendall(head + b"\r\n\r\n")
                interim = b""
                while not interim.endswith(b"\r\n\r\n"):
                    chunk = sock.recv(1)
                    assert chunk, "closed before the 100 Continue"
                    interim += chunk
                assert interim == b"HTTP/1.1 100 Continue\r\n\r\n", interim
                request = body[: rng.randrange(len(body))]
            elif mode.startswith("cut"):
                # The whole head and part of the body (none of it, at times), never all.
                request = request[: len(request) - rng.randint(1, len(body))]
            sock.sendall(request)
            sent[key] = (mode, body)
            clients.append((key, mode, sock))
        rng.shuffle(clients)
        for key, mode, sock in clients:
            if rng.random() < 0.3:
                time.sleep(rng.random() * 0.003)
            if mode.endswith("half-close"):
                sock.shutdown(socket.SHUT_WR)
                answer = read_to_eof(sock)
                sock.close()
                if answer:  # nothing at all, or one whole answer: never part of one
                    status, _ = only_answer(answer)
                    half_close_answers[key] = status
            else:
                how = mode.removeprefix("cut-")
                if how not in ("close", "reset"):
                    how = rng.choice(("close", "reset"))
                vanish(sock, how)
    assert_sockets_back_to(server, baseline)

    outcomes: Counter[tuple[str, int]] = Counter()
    job_ids: set[str] = set()
    with server.client(server.client_key, timeout=10.0) as client:
        assert client.get("/health").status_code == 200
        for key, (mode, body) in sent.items():
            headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
            first = client.post("/jobs", content=body, headers=headers)
            assert first.status_code in (200, 201), first.text
            outcomes[(mode, first.status_code)] += 1
            if mode.startswith("cut"):
                # Cut off mid-body: nothing was made, so the resend makes the job.
                assert first.status_code == 201, (mode, first.text)
            if half_close_answers.get(key) == 201:
                assert first.status_code == 200, "answered 201, yet the key is unknown"
            again = client.post("/jobs", content=body, headers=headers)
            assert again.status_code == 200 and again.json()["duplicate"] is True, again.text
            assert again.json()["job_id"] == first.json()["job_id"]
            job_ids.add(first.json()["job_id"])
        # Exactly one job per key, whatever happened to the first try.
        assert len(job_ids) == len(sent)
        stats = client.get("/stats").json()
        assert stats["queues"][queue]["total"] == len(sent), stats["queues"][queue]
    # Some abandoned submits did land (this exercised the "exists once" side, not only the
    # resend's 201).
    assert sum(n for (mode, status), n in outcomes.items() if status == 200) > 0, outcomes
    answered = Counter(half_close_answers.values())
    print(f"first resends: {sorted(outcomes.items())}; half-close answers {dict(answered)}")
    assert_sockets_back_to(server, baseline)
    assert_log_clean(server)


# -- long polls -------------------------------------------------------------------------------

LONG_POLL_QUEUES = 24


def test_long_polls_that_vanish_lease_nothing_and_keep_no_wake_up(
    hostile_server: HostileFactory,
) -> None:
    """Per queue: a long poll that will vanish (first in the queue's FIFO of waiters), then a
    well-behaved one; then a job is submitted. Half the queues lose the vanishing poll well
    before the job comes: the good poll must get the job at once (the gone one leases nothing
    and does not swallow the wake-up). The other half submit first and vanish a moment later:
    the gone poll may have had the job (its lease landed while it was connected); then the
    good poll gets it when that lease ends, never later, and never a 404."""
    server = hostile_server("--lease-check-interval", LEASE_CHECK)
    rng = random.Random(SEED + 1)
    baseline = sockets_held(server)
    wait_ms = 8000
    rounds = []
    for index in range(LONG_POLL_QUEUES):
        queue = f"careless-poll-{index}"
        ghost = connect(server.port)
        ghost.sendall(
            raw_post(
                "/jobs/lease",
                server.worker_key,
                {"queue": queue, "wait_ms": 20000, "lease_ms": LEASE_MS},
            )
        )
        rounds.append((queue, ghost, index % 2 == 0, rng.choice(("close", "reset"))))
    time.sleep(0.1)  # every ghost waits first in its queue's FIFO
    good = {}
    for queue, _, _, _ in rounds:
        poll = RawClient(server.port, timeout=15.0)
        poll.send(
            raw_post(
                "/jobs/lease",
                server.worker_key,
                {"queue": queue, "wait_ms": wait_ms, "lease_ms": 30000},
            )
        )
        good[queue] = poll
    time.sleep(0.1)
    answers: dict[str, tuple[Answer, float]] = {}

    def await_answer(queue: str) -> None:
        answers[queue] = (good[queue].read_answer(), time.monotonic())

    readers = [threading.Thread(target=await_answer, args=(queue,)) for queue in good]
    for reader in readers:
        reader.start()
    submitter = RawClient(server.port)
    # The ghosts that leave first, all of them, well before their jobs come.
    for _, ghost, early, how in rounds:
        if early:
            vanish(ghost, how)
    time.sleep(0.1)
    submitted_at = {}
    rng.shuffle(rounds)
    for queue, ghost, early, how in rounds:
        submitter.send(raw_post("/jobs", server.client_key, {"payload": "x", "queue": queue}))
        submitted_at[queue] = time.monotonic()
        if not early:
            time.sleep(rng.random() * 0.003)
            vanish(ghost, how)
        assert submitter.read_answer().status == 201
    submitter.close()
    for reader in readers:
        reader.join(timeout=15.0)

    late = 0
    with server.client(server.client_key, timeout=10.0) as client:
        for queue, _, early, _ in rounds:
            good[queue].close()
            assert queue in answers, f"no answer to the good poll of {queue}"
            answer, answered_at = answers[queue]
            took = answered_at - submitted_at[queue]
            assert answer.status == 200, (queue, early, answer.status, jobs_of(client, queue))
            leased = answer.json()
            # Woken, not answered at the end of its 8 s wait: at once (nothing took the
            # wake-up), or when the lease of a ghost that got the job first ended (1 s). A
            # bound, not a timing measure: a loaded machine may take a few seconds.
            assert took < wait_ms / 2000, (queue, took)
            if early:
                assert leased["attempt"] == 1, leased
            elif leased["attempt"] == 2:
                late += 1  # the ghost's lease landed; the job came back when it ended
            else:
                assert leased["attempt"] == 1, leased
            assert_no_orphan_leases(client, queue)
        assert client.get("/health").status_code == 200
    print(f"{late} of {len(rounds) // 2} jobs went first to a poll that then vanished")
    assert_sockets_back_to(server, baseline)
    assert_log_clean(server)


# -- settling ---------------------------------------------------------------------------------

SETTLED_JOBS = 40


def test_acks_reset_before_reading_settle_once_and_lease_next_waits_out_its_lease(
    hostile_server: HostileFactory,
) -> None:
    server = hostile_server("--lease-check-interval", LEASE_CHECK)
    rng = random.Random(SEED + 2)
    baseline = sockets_held(server)
    queue = "careless-acks"
    with server.client(server.client_key, timeout=10.0) as client:
        for index in range(2 * SETTLED_JOBS + 20):
            answer = client.post("/jobs", json={"payload": f"j{index}", "queue": queue})
            assert answer.status_code == 201
    with server.client(server.worker_key, timeout=10.0) as worker:
        held = worker.post(
            "/jobs/lease", json={"queue": queue, "max_jobs": SETTLED_JOBS, "lease_ms": 600_000}
        ).json()
    assert len(held) == SETTLED_JOBS

    started = time.time()
    pending = []
    for job in held:
        entry: dict[str, object] = {"job_id": job["job_id"], "lease_id": job["lease_id"]}
        if rng.random() < 0.25:  # a final failure: DEAD, never runnable again
            entry.update(result_error="boom", retry=False)
        else:
            entry["result"] = "ok"
        if rng.random() < 0.5:
            lease_next = {"queue": queue, "max_jobs": rng.randint(1, 2), "lease_ms": LEASE_MS}
            request = raw_post(
                "/jobs/ack", server.worker_key, {"acks": [entry], "lease_next": lease_next}
            )
        else:
            body = {key: value for key, value in entry.items() if key != "job_id"}
            request = raw_post(f"/jobs/{job['job_id']}/ack", server.worker_key, body)
        sock = connect(server.port)
        sock.sendall(request)
        pending.append((sock, rng.choice(("close", "reset"))))
        if len(pending) >= 8 or rng.random() < 0.2:  # several at once, left in any order
            rng.shuffle(pending)
            for sock, how in pending:
                vanish(sock, how)
            pending = []
    for sock, how in pending:
        vanish(sock, how)
    assert_sockets_back_to(server, baseline)

    held_ids = {job["job_id"] for job in held}
    with server.client(server.worker_key, timeout=10.0) as worker:
        # Jobs leased by a lease_next whose client went away: RUNNING, on a lease that ends
        # LEASE_MS after it was asked for, never longer.
        for job in jobs_of(worker, queue):
            if job["job_id"] not in held_ids and job["state"] == "RUNNING":
                ends = parse_time(job["lease_until"])
                assert ends <= time.time() + LEASE_MS / 1000 + 0.5, job
                assert ends >= started, job
        # Each settlement resent with its lease: 200 if the first never landed, else 409, and
        # the job is settled either way.
        statuses: Counter[int] = Counter()
        for job in held:
            answer = worker.post(
                f"/jobs/{job['job_id']}/ack", json={"lease_id": job["lease_id"], "result": "ok"}
            )
            statuses[answer.status_code] += 1
            assert answer.status_code in (200, 409), answer.text
        assert statuses[409] > 0, statuses  # most did land before their clients left
        for job in jobs_of(worker, queue):
            if job["job_id"] in held_ids:
                assert job["state"] in ("ACKED", "DEAD"), job
        # Once the ghosts' leases are over, nothing is RUNNING.
        assert wait_for(
            lambda: all(j["state"] != "RUNNING" for j in jobs_of(worker, queue)),
            timeout=LEASE_MS / 1000 + 3.0,
            every=0.1,
        ), [j for j in jobs_of(worker, queue) if j["state"] == "RUNNING"]
        stats = worker.get("/stats").json()
        assert stats["queues"][queue]["total"] == 2 * SETTLED_JOBS + 20
        assert worker.get("/health").status_code == 200
    print(f"resent settlements: {dict(statuses)}; expired {stats['totals']['expired']}")
    assert_sockets_back_to(server, baseline)
    assert_log_clean(server)


# -- clients that never read ------------------------------------------------------------------

NON_READERS = 6
PIPELINED = 300  # requests each; bounded: a pipelining client costs the server memory


def test_clients_that_never_read_do_not_stop_the_others(hostile_server: HostileFactory) -> None:
    """Non-readers pipeline requests with big answers (a page of GET /jobs) and never read:
    the server's writes to them back up. Meanwhile a well-behaved client submits, leases and
    acks with prompt answers, /health stays 200, and once the non-readers go, their sockets
    are given back. Not checked: that the server ever drops a non-reader by itself. It does
    not (its answer waits on the client, and the deadline sweep counts that as the app's turn),
    and none of the documented bounds covers a client that stops reading."""
    server = hostile_server("--lease-check-interval", LEASE_CHECK)
    baseline = sockets_held(server)
    queue = "careless-readers"
    with server.client(server.client_key, timeout=10.0) as client:
        batch = [{"payload": "x" * 300, "queue": queue} for _ in range(500)]
        assert client.post("/jobs/batch", json={"jobs": batch}).status_code == 201
    page = (
        f"GET /jobs?queue={queue}&limit=1000 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {server.client_key}\r\n\r\n"
    ).encode()
    non_readers = []
    for _ in range(NON_READERS):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.settimeout(10.0)
        sock.sendall(page * PIPELINED)
        non_readers.append(sock)
    time.sleep(0.5)
    with (
        server.client(server.client_key, timeout=5.0) as client,
        server.client(server.worker_key, timeout=5.0) as worker,
    ):
        # Each call within the clients' 5 s timeout: the non-readers hold no one up.
        for index in range(30):
            assert client.get("/health").status_code == 200
            submitted = client.post("/jobs", json={"payload": f"{index}", "queue": "other"})
            assert submitted.status_code == 201
            leased = worker.post("/jobs/lease", json={"queue": "other"})
            assert leased.status_code == 200
            job = leased.json()
            acked = worker.post(f"/jobs/{job['job_id']}/ack", json={"lease_id": job["lease_id"]})
            assert acked.status_code == 200
    for index, sock in enumerate(non_readers):
        vanish(sock, "reset" if index % 2 else "close")
    assert_sockets_back_to(server, baseline)
    assert httpx.get(server.url + "/health", timeout=5.0).status_code == 200
    assert_log_clean(server)
