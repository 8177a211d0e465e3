"""Pipelined HTTP/1.1 on one keep-alive connection, against a real `jq serve`: a random sequence of
up to 16 requests, or of 24 to 48 (past the 16 the server reads ahead of its answers, so that it
keeps part of a read back and takes it up later): the job routes of the fast lane, which write a
whole answer in one buffer, and ordinary routes, which go the ASGI way through the joined writes
of server/http_protocol.py; some with a chunked body (chunk extensions and a trailer too), some
with `Expect: 100-continue`, the last one maybe with `Connection: close`. It is written as one
byte stream cut at random places, with pauses of up to 5 ms between the pieces. The answers are
read with a strict parser of this module (and checked again by h11): exactly one final answer
per request, in order, each framed by its Content-Length with no byte between two answers and
none after a `connection: close` one, a `100 Continue` only ahead of the answer to a request
that asked for it, a JSON body on every answer but a HEAD's, which has none; and each answer has
the status (and error code, and the shape of the body) that the same request gets when it is
sent alone on a fresh connection.

That reference is taken on a twin of the example's queue: both are set up alike (four jobs, the
first two leased), then the pipelined requests run on one and the same requests, one fresh
connection each and in the same order, on the other. A server answers one request of a
connection at a time, so both see the same states in the same order; the requests leave no
room for timing (no failed acks, whose retry backoff could end between two requests).

Some requests also offer an Upgrade to h2c (as `curl --http2` does), which connections.py
declines by handing the body to the parser again behind a made-up head, the connection's last
request too (the test at the end: that one once hung).

Seeds: hypothesis runs derandomized (the same examples every run); set JQ_PIPELINING_SEED to an
integer for other ones, and JQ_PIPELINING_EXAMPLES for more or fewer examples (60).
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import h11
from hypothesis import HealthCheck, given, note, seed, settings
from hypothesis import strategies as st

from tests.conftest import JqServer
from tests.hostile.conftest import HostileFactory, RawClient

MAX_PAYLOAD = 1024  # the server's --max-payload: a body over 2 × this + 64 KiB is refused
BODY_LIMIT = 2 * MAX_PAYLOAD + 64 * 1024
MISSING_JOB = "00000000-0000-4000-8000-000000000000"
EXAMPLES = int(os.environ.get("JQ_PIPELINING_EXAMPLES", "60"))
READ_TIMEOUT_S = 5.0
_SEED = os.environ.get("JQ_PIPELINING_SEED")


# -- requests -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request, as a template: `<Q>` (the queue), `<J0>`…`<J3>` (its jobs), `<L0>`, `<L1>`
    (the leases of the first two) are filled in per queue, so that twins get alike requests."""

    method: str
    target: str
    key: str | None = "admin"  # which seeded key is the Bearer, if any
    body: str | None = None  # None: no body and no framing header (0-length for a POST)
    chunks: tuple[int, ...] | None = None  # chunked: the sizes of the chunks (the rest last)
    expect: bool = False  # Expect: 100-continue
    close: bool = False  # Connection: close (only ever the last request)
    extra: tuple[str, ...] = ()  # further header lines
    upgrade: bool = False  # offers h2c, as `curl --http2` does (declined: connections.py)
    chunk_extras: bool = False  # chunk extensions and a trailer field (chunked only)

    def render(self, fill: dict[str, str], keys: dict[str, str]) -> bytes:
        def filled(text: str) -> str:
            for name, value in fill.items():
                text = text.replace(name, value)
            return text

        lines = [f"{self.method} {filled(self.target)} HTTP/1.1", "Host: 127.0.0.1"]
        if self.key is not None:
            lines.append(f"Authorization: Bearer {keys[self.key]}")
        lines += [filled(line) for line in self.extra]
        if self.upgrade:
            lines += H2C_OFFER
        if self.expect:
            lines.append("Expect: 100-continue")
        if self.close:
            lines.append("Connection: close")
        body = filled(self.body).encode() if self.body is not None else b""
        if self.chunks is not None:
            lines.append("Transfer-Encoding: chunked")
            payload = _chunked(body, self.chunks, self.chunk_extras)
        elif self.body is not None or self.method == "POST":
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
            payload = body
        else:
            payload = b""
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def _chunked(body: bytes, sizes: tuple[int, ...], extras: bool = False) -> bytes:
    out, at = b"", 0
    extension = b";note=x" if extras else b""
    for size in (*sizes, len(body)):
        piece = body[at : at + size]
        if piece:
            out += b"%x%s\r\n" % (len(piece), extension) + piece + b"\r\n"
        at += len(piece)
    return out + b"0\r\n" + (b"X-Trailer: y\r\n" if extras else b"") + b"\r\n"


# What `curl --http2 http://…` adds to every request (as in test_http_framing.py).
H2C_OFFER = [
    "Connection: Upgrade, HTTP2-Settings",
    "Upgrade: h2c",
    "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA",
]


JOB = st.sampled_from(["<J0>", "<J1>", "<J2>", "<J3>"])
LEASED = st.sampled_from([("<J0>", "<L0>"), ("<J1>", "<L1>")])


def _json(value: Any) -> str:
    return json.dumps(value)


@st.composite
def submits(draw: st.DrawFn) -> Call:
    kind = draw(
        st.sampled_from(
            [
                "ok",
                "ok",
                "ok",
                "idempotent",
                "no payload",
                "not json",
                "bad queue",
                "payload too large",
                "body too large",
                "no key",
                "worker key",
                "gzip body",
                "gzip transfer",
            ]
        )
    )
    payload = draw(st.text('abcdé"\\ \n', min_size=1, max_size=40))
    body: dict[str, Any] = {"payload": payload, "queue": "<Q>"}
    key: str | None = "admin"
    extra: tuple[str, ...] = ()
    if kind == "idempotent":
        body["idempotency_key"] = draw(st.sampled_from(["<Q>-a", "<Q>-b"]))
        body["payload"] = draw(st.sampled_from(["same", "other"]))
    elif kind == "no payload":
        body.pop("payload")
    elif kind == "bad queue":
        body["queue"] = "no spaces allowed"
    elif kind == "payload too large":
        body["payload"] = "p" * (MAX_PAYLOAD + 1)
    elif kind == "no key":
        key = None
    elif kind == "worker key":
        key = "worker"  # no jobs:submit: 403
    elif kind == "gzip body":
        extra = ("Content-Encoding: gzip",)  # 415, the body unread
    text = _json(body)
    if kind == "not json":
        text = '{"payload": "x", "queue": "<Q>"'
    elif kind == "body too large":
        text = _json({"payload": "x", "queue": "<Q>", "pad": "z" * BODY_LIMIT})  # 413, unread
    chunks = draw(_chunking(len(text)))
    if kind == "gzip transfer":
        chunks = chunks or (len(text),)
        extra = ("Transfer-Encoding: gzip",)  # + chunked last: 501, the body unread
    return Call("POST", "/jobs", key, text, chunks, draw(st.booleans()), extra=extra)


def _chunking(length: int) -> st.SearchStrategy[tuple[int, ...] | None]:
    sizes = st.lists(st.integers(1, max(1, length)), min_size=1, max_size=4).map(tuple)
    return st.one_of(st.none(), st.none(), sizes)


@st.composite
def job_calls(draw: st.DrawFn) -> Call:
    """The other routes of the fast lane (server/hot_routes.py)."""
    kind = draw(
        st.sampled_from(
            ["get", "get missing", "head", "head missing", "lease", "ack", "ack", "batch ack"]
            + ["extend", "ack no lease", "ack missing", "lease no scope", "batch ack invalid"]
        )
    )
    job = draw(JOB)
    leased_job, lease = draw(LEASED)
    expect = draw(st.booleans())
    if kind in ("get", "get missing", "head", "head missing"):
        target = f"/jobs/{MISSING_JOB if 'missing' in kind else job}"
        method = "HEAD" if kind.startswith("head") else "GET"
        return Call(method, target, draw(st.sampled_from(["admin", "client", "worker"])))
    if kind in ("lease", "lease no scope"):
        body: dict[str, Any] = {"queue": "<Q>"}
        if draw(st.booleans()):
            body["max_jobs"] = draw(st.integers(1, 3))
        if draw(st.booleans()):
            body["wait_ms"] = draw(st.sampled_from([0, 20]))  # a short long poll: nothing comes
        key = "client" if kind == "lease no scope" else "worker"
        text = _json(body)
        return Call("POST", "/jobs/lease", key, text, draw(_chunking(len(text))), expect)
    if kind == "batch ack":
        acks = [
            {"job_id": j, "lease_id": lease_id, "result": "done"}
            for j, lease_id in draw(st.lists(LEASED, min_size=1, max_size=2))
        ]
        body = {"acks": acks}
        if draw(st.booleans()):
            body["lease_next"] = {"queue": "<Q>", "max_jobs": draw(st.integers(1, 2))}
        text = _json(body)
        return Call("POST", "/jobs/ack", "admin", text, draw(_chunking(len(text))), expect)
    if kind == "batch ack invalid":
        return Call("POST", "/jobs/ack", "admin", '{"acks": []}', None, expect)
    if kind == "extend":
        text = _json({"lease_id": lease, "lease_ms": 3_600_000})
        target = f"/jobs/{leased_job}/extend"
        return Call("POST", target, "worker", text, draw(_chunking(len(text))), expect)
    if kind == "ack":
        text = _json({"lease_id": lease, "result": "ok"})
    elif kind == "ack no lease":  # settles whatever lease the job has now: 200 or 409
        text, leased_job = _json({"result": "ok"}), job
    else:  # "ack missing"
        text, leased_job = _json({"lease_id": "nope", "result": "ok"}), MISSING_JOB
    target = f"/jobs/{leased_job}/ack"
    return Call("POST", target, "worker", text, draw(_chunking(len(text))), expect)


OTHER_CALLS = st.sampled_from(
    [
        Call("GET", "/health", None),
        Call("HEAD", "/health", None),
        Call("GET", "/stats", "client"),
        Call("GET", "/queues?limit=3", "client"),
        Call("GET", "/jobs?queue=<Q>&limit=2", "client"),
        Call("GET", "/no/such/path", "admin"),
        Call("GET", "/jobs/lease", "admin"),  # 405: never the job "lease"
        Call("PUT", "/jobs/<J0>", "admin", '{"payload": "x"}'),  # 405
        Call("GET", "/jobs/<J0>/ack/extra", "admin"),  # 404: not a job route
        Call("POST", "/_noop", None, "{}"),
        Call("GET", "/stats", None),  # 401 on an ordinary route
        Call("GET", "/health", None, "a body nobody reads"),
        Call("GET", "/health", None, "chunked, unread", chunks=(3, 2)),
    ]
)


@st.composite
def calls(draw: st.DrawFn) -> Call:
    call = draw(st.one_of(submits(), job_calls(), OTHER_CALLS))
    upgrade = draw(st.sampled_from([False, False, False, True]))
    extras = call.chunks is not None and draw(st.booleans())
    expect = call.expect or (call.body is not None and draw(st.booleans()))
    changes = {"upgrade": upgrade, "chunk_extras": extras, "expect": expect}
    return Call(**{**call.__dict__, **changes})


@st.composite
def sequences(draw: st.DrawFn) -> list[Call]:
    # Long ones too: more than the 16 requests the server reads ahead of its answers
    # (server/connections.py PIPELINE_DEPTH), so that the rest of a read waits unparsed.
    short, long = (
        st.lists(calls(), min_size=1, max_size=16),
        st.lists(calls(), min_size=24, max_size=48),
    )
    sequence = draw(st.one_of(short, long))
    if draw(st.booleans()):
        sequence[-1] = Call(**{**sequence[-1].__dict__, "close": True})
    return sequence


# -- reading answers --------------------------------------------------------------------------

STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) [\x20-\x7e]*")
HEADER_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+): ?([\x20-\x7e\x80-\xff]*?) ?")


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes  # the answer's bytes, head and body
    at: int  # where it starts in the stream
    interim: list[int] = field(default_factory=list)  # 1xx statuses before it

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    @property
    def closing(self) -> bool:
        return any("close" in v.lower() for v in self.header("connection"))


class Reader:
    """Reads the stream of answers, keeping the bytes of each read for where they fell."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.stream = b""
        self.at = 0  # parsed up to here
        self.reads: list[int] = []  # end offset of each read
        self.eof = False
        self.reset = False

    def _fill(self) -> None:
        assert not self.eof, "the server closed the connection before all answers came"
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            self.eof = True
            return
        self.stream += chunk
        self.reads.append(len(self.stream))

    def _head(self) -> tuple[int, list[tuple[str, str]], int]:
        while (end := self.stream.find(b"\r\n\r\n", self.at)) < 0:
            self._fill()
            if self.eof:
                raise AssertionError(f"a cut head at EOF: {self.stream[self.at :]!r}")
        status_line, *lines = self.stream[self.at : end].split(b"\r\n")
        match = STATUS_LINE.fullmatch(status_line)
        assert match, f"not a status line at {self.at}: {self.stream[self.at : end + 4]!r}"
        headers = []
        for line in lines:
            header = HEADER_LINE.fullmatch(line)
            assert header, f"not a header line: {line!r}"
            headers.append((header[1].decode().lower(), header[2].decode("latin-1")))
        return int(match[1]), headers, end + 4

    def answer(self, method: str) -> Answer:
        """The next final answer (with the 1xx before it), framed strictly by Content-Length."""
        interim = []
        start = self.at
        while True:
            status, headers, body_at = self._head()
            if status >= 200:
                break
            assert status == 100 and not headers, self.stream[self.at : body_at]
            interim.append(status)
            self.at = body_at
        lengths = [v for k, v in headers if k == "content-length"]
        assert not [v for k, v in headers if k == "transfer-encoding"], headers
        assert len(lengths) == 1 and lengths[0].isdigit(), f"framing: {headers}"
        length = 0 if method == "HEAD" or status in (204, 304) else int(lengths[0])
        while len(self.stream) < body_at + length:
            self._fill()
        self.at = body_at + length
        raw = self.stream[start : self.at]
        return Answer(status, headers, self.stream[body_at : self.at], raw, start, interim)

    def rest(self, *, until_eof: bool, quiet_s: float = 0.05) -> bytes:
        """What comes after the last answer: until the server closes, or one quiet spell."""
        if not until_eof:
            self.sock.settimeout(quiet_s)
        try:
            while not self.eof:
                self._fill()
        except TimeoutError:
            assert not until_eof, "the server did not close the connection"
        except ConnectionResetError:
            # The server closed with bytes of ours unread (a body it answered without reading):
            # the kernel answers them with RST. The answer before it was read.
            self.eof = self.reset = True
        finally:
            self.sock.settimeout(READ_TIMEOUT_S)
        return self.stream[self.at :]


def check_with_h11(answer: Answer, call: Call) -> None:
    """h11's reading of the same bytes: one answer, all of it, nothing left over."""
    conn = h11.Connection(h11.CLIENT)
    headers = [("Host", "x"), ("Content-Length", "0")]
    if call.expect:
        headers.append(("Expect", "100-continue"))
    conn.send(h11.Request(method=call.method, target="/", headers=headers))
    conn.send(h11.EndOfMessage())
    conn.receive_data(answer.raw)
    kinds = []
    while (event := conn.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
        kinds.append(type(event).__name__)
        if isinstance(event, h11.EndOfMessage):
            break
    body_events = ["Data"] if answer.body else []
    assert kinds == ["InformationalResponse"] * len(answer.interim) + [
        "Response",
        *body_events,
        "EndOfMessage",
    ], kinds
    assert conn.trailing_data == (b"", False)


@dataclass(frozen=True)
class Outcome:
    """What an answer is compared by: status, error code, body shape, whether it closes."""

    status: int
    code: str | None
    shape: tuple[str, ...] | int | None
    closing: bool


def outcome(answer: Answer, call: Call) -> Outcome:
    if call.method == "HEAD":
        assert answer.body == b"", answer.raw
        return Outcome(answer.status, None, None, answer.closing)
    assert answer.header("content-type") == ["application/json"], answer.raw
    document = json.loads(answer.body)
    code = document.get("code") if isinstance(document, dict) else None
    if isinstance(document, dict):
        shape: tuple[str, ...] | int = tuple(sorted(document))
    else:
        shape = len(document)
    if answer.status >= 400 or call.target.startswith(("/stats", "/queues", "/jobs?")):
        shape = ()  # counts and listings differ between twins; an error's code is enough
    return Outcome(answer.status, code, shape, answer.closing)


# -- the server side --------------------------------------------------------------------------


@dataclass
class Twin:
    """One queue set up for a sequence: its four jobs, the first two leased."""

    fill: dict[str, str]


def set_up(server: JqServer, keys: dict[str, str], queue: str) -> Twin:
    client = RawClient(server.port, timeout=READ_TIMEOUT_S)
    try:
        jobs = []
        for n in range(4):
            body = _json({"payload": f"setup {n}", "queue": queue}).encode()
            answer = client.request("POST", "/jobs", key=keys["admin"], body=body)
            assert answer.status == 201, answer.body
            jobs.append(str(answer.json()["job_id"]))
        leases = []
        for n in range(2):
            body = _json({"queue": queue, "lease_ms": 3_600_000}).encode()
            answer = client.request("POST", "/jobs/lease", key=keys["worker"], body=body)
            assert answer.status == 200 and answer.json()["job_id"] == jobs[n], answer.body
            leases.append(str(answer.json()["lease_id"]))
    finally:
        client.close()
    fill = {"<Q>": queue, "<L0>": leases[0], "<L1>": leases[1]}
    fill.update({f"<J{n}>": job for n, job in enumerate(jobs)})
    return Twin(fill)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def alone(server: JqServer, keys: dict[str, str], twin: Twin, calls: list[Call]) -> list[Outcome]:
    """Each request on a fresh connection of its own, in order."""
    outcomes = []
    for call in calls:
        with connect(server.port) as sock:
            sock.sendall(call.render(twin.fill, keys))
            reader = Reader(sock)
            answer = reader.answer(call.method)
            check_with_h11(answer, call)
            assert answer.closing == call.close, answer.raw  # nothing here closes on its own
            outcomes.append(outcome(answer, call))
            if answer.closing:
                assert reader.rest(until_eof=True) == b""
                assert not reader.reset or call.body is not None
    return outcomes


def pieces(stream: bytes, cuts: list[int], pauses: list[float]) -> Iterator[tuple[bytes, float]]:
    at = 0
    for cut, pause in zip(sorted(set(cuts)), pauses, strict=False):
        if at < cut < len(stream):
            yield stream[at:cut], pause
            at = cut
    yield stream[at:], 0.0


@st.composite
def cutting(draw: st.DrawFn, stream_length: int, edges: list[int]) -> tuple[list[int], list[float]]:
    """Where to cut the stream and how long to pause after each piece: nowhere (one write),
    anywhere, or a few bytes around the requests' edges (and inside their heads)."""
    how = draw(st.sampled_from(["at once", "anywhere", "edges", "many"]))
    if how == "at once":
        return [], []
    if how == "edges":
        near = st.sampled_from(edges).flatmap(lambda e: st.integers(max(1, e - 3), e + 3))
        cuts = draw(st.lists(near, min_size=1, max_size=12))
    else:
        size = 40 if how == "many" else 12
        cuts = draw(st.lists(st.integers(1, stream_length), min_size=1, max_size=size))
    pauses = draw(
        st.lists(
            st.sampled_from([0.0, 0.0, 0.0005, 0.001, 0.003, 0.005]),
            min_size=len(cuts),
            max_size=len(cuts),
        )
    )
    return cuts, pauses


# -- the test ---------------------------------------------------------------------------------


def _with_seed(test: Any) -> Any:
    return seed(int(_SEED))(test) if _SEED is not None else test


def test_pipelined_requests_cut_anywhere_get_their_answers_in_order(
    hostile_server: HostileFactory,
) -> None:
    server = hostile_server("--max-payload", str(MAX_PAYLOAD))
    assert server.admin_key and server.client_key and server.worker_key
    keys = {"admin": server.admin_key, "client": server.client_key, "worker": server.worker_key}
    run = uuid.uuid4().hex[:8]
    examples = iter(range(10_000))

    @_with_seed
    @settings(
        max_examples=EXAMPLES,
        derandomize=_SEED is None,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(calls=sequences(), data=st.data())
    def pipelined(calls: list[Call], data: st.DataObject) -> None:
        n = next(examples)
        note("\n".join(map(short, calls)))
        pipelined_twin = set_up(server, keys, f"pipe-{run}-{n}")
        reference_twin = set_up(server, keys, f"ref-{run}-{n}")
        wanted = alone(server, keys, reference_twin, calls)

        requests = [call.render(pipelined_twin.fill, keys) for call in calls]
        stream = b"".join(requests)
        edges, at = [], 0
        for request in requests:
            head_end = request.index(b"\r\n\r\n")
            edges += [at + 16, at + head_end, at + head_end + 4, at + len(request)]
            at += len(request)
        cuts, pauses = data.draw(cutting(len(stream), edges), label="cuts")
        late = data.draw(st.sampled_from([0.0, 0.0, 0.0, 0.1]), label="read after")

        with connect(server.port) as sock:
            writer_error: list[BaseException] = []

            def write() -> None:
                try:
                    for piece, pause in pieces(stream, cuts, pauses):
                        sock.sendall(piece)
                        if pause:
                            time.sleep(pause)
                except OSError as exc:  # the server closed early: the reader says more
                    writer_error.append(exc)

            writer = threading.Thread(target=write, daemon=True)
            writer.start()
            time.sleep(late)  # a client slow to read: answers pile up in the server's buffers
            reader = Reader(sock)
            got = []
            for index, call in enumerate(calls):
                answer = reader.answer(call.method)
                check_with_h11(answer, call)
                assert answer.interim == ([100] if call.expect and answer.interim else []), (
                    index,
                    answer.interim,
                )
                assert answer.closing == call.close, (index, answer.raw)
                got.append(outcome(answer, call))
                if got[-1].closing:
                    break
            writer.join(READ_TIMEOUT_S)
            assert not writer.is_alive(), "the server stopped reading the requests"
            assert got == wanted, describe(calls, got, wanted)
            last = calls[-1]
            rest = reader.rest(until_eof=last.close)
            assert rest == b"", f"bytes after the last answer: {rest!r}"
            assert not reader.reset or last.body is not None
            assert not writer_error or last.close, writer_error

    pipelined()
    ran = next(examples)
    assert ran >= min(EXAMPLES, 10), f"only {ran} examples ran"


def short(call: Call) -> str:
    """A call in a line (a long body cut short)."""
    body = call.body if call.body is None or len(call.body) < 80 else call.body[:60] + "…"
    flags = [n for n in ("expect", "close", "upgrade", "chunk_extras") if getattr(call, n)]
    return f"{call.method} {call.target} key={call.key} body={body!r} chunks={call.chunks} " + (
        f"extra={call.extra} {' '.join(flags)}"
    )


def describe(calls: list[Call], got: list[Outcome], wanted: list[Outcome]) -> str:
    lines = []
    for index, call in enumerate(calls):
        mine = got[index] if index < len(got) else None
        theirs = wanted[index]
        mark = "  " if mine == theirs else "!!"
        lines.append(f"{mark} {call.method} {call.target}: pipelined {mine}, alone {theirs}")
    return "\n".join(lines)


# A request that offers an Upgrade, has a body and is the connection's last (`Connection:
# close`, or HTTP/1.0 without keep-alive) was never answered, and the connection never closed:
# connections.py's `_decline_upgrade` hands the body to the parser again behind a made-up head,
# but llhttp, at the end of a message that does not keep the connection alive, is in its closed
# state, where uvicorn's `set_dangerous_leniencies(lenient_data_after_close=True)` makes it drop
# every further byte without a callback. The cycle was set back to `more_body = True`, so the
# app waited in `receive()` for a body that never came; the deadline sweep counts that as the
# app's turn (`deadline_passed`: head budget an int, answer not complete) and never closed it.
# A graceful shutdown then waited its whole drain timeout and logged the cancelled task's 500.
# Now a new parser reads that body.
LAST_REQUESTS_OFFERING_AN_UPGRADE = {
    "Connection: close": (
        b"POST /_noop HTTP/1.1\r\nHost: x\r\nConnection: close, Upgrade\r\nUpgrade: h2c\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    ),
    "HTTP/1.0": (
        b"POST /_noop HTTP/1.0\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    ),
    "chunked": (
        b"POST /_noop HTTP/1.1\r\nHost: x\r\nConnection: close, Upgrade\r\nUpgrade: h2c\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    ),
}


def test_a_closing_request_that_offers_an_upgrade_with_a_body_is_answered(
    hostile_server: HostileFactory,
) -> None:
    server = hostile_server()
    unanswered = []
    for name, request in LAST_REQUESTS_OFFERING_AN_UPGRADE.items():
        with connect(server.port) as sock:
            sock.sendall(request)
            sock.settimeout(1.0)  # the answer is due at once (the header timeout is 10 s)
            reader = Reader(sock)
            try:
                answer = reader.answer("POST")
            except TimeoutError:
                unanswered.append(name)
                continue
            assert answer.status == 200 and answer.closing, (name, answer.raw)
            assert reader.rest(until_eof=True) == b"", name
    assert not unanswered, f"no answer within 1 s: {unanswered}"
