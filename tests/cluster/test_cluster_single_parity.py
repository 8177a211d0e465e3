"""Parity: a client sees the same from a single-node `jq serve` as from a cluster.

The same seeded random sequences of HTTP calls run in lockstep against a single-node server and
a 3-node cluster: submits (single and batched; priorities, delay_ms and run_at, idempotency keys
in the body and the header, unique keys in each scope, parents by id and by "$N", invalid
bodies), leases (max_jobs, lease_ms, wait_ms, X-Jq-Worker, 1 s leases left to expire), acks,
failed attempts (retry true and false), extends, releases, progress, cancels, requeues, batch
acks with lease_next, bulk actions and dead-letter groups; reads of jobs, listings (states,
searches, cursors), explanations, queues, overviews, stats and their history, workers; queue
flow settings (PUT, pause, resume); schedules (create, get, patch, pause, resume, delete). Each
answer's status, headers and body must be the same once the values that must differ are
normalized: job ids become their order of creation, lease ids and other ids their order of first
appearance, times a placeholder, and what a node observes for itself (role, node id, uptime,
rates, latency) is left out.

`test_a_cluster_node_answers_like_a_single_node` sends every call to one node, then another
node must answer the same reads (jobs by id, listings, queue settings, schedules, stats) once it
has caught up. `test_a_cluster_used_through_every_node_answers_like_a_single_node` sends each
call to a node picked at random; reads that do not catch up with the log (stats, listings) may
take a moment to show another node's write.

The clock is kept out of the answers: leases last an hour unless a sequence leases for 1 s and
waits for the expiry, delays are an hour, run_at is far in the past or future, cron expressions
fire once a year, and a job in a RETRY backoff (0.5-1 s) is waited out before the next call, on
both servers. Two differences found this way, now fixed, are the tests at the end."""

from __future__ import annotations

import random
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.cluster.test_cluster_serve import Cluster, ClusterNode
from tests.conftest import JqServer, ServerFactory

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server not installed"),
]

# Leases outlive a whole module (no expiry decided by the clock), and both servers take the
# same flags.
SERVE_ARGS = ("--lease-duration", "1h", "--lease-check-interval", "200ms")
SEEDS = (1, 2, 3, 4, 5)
ROAMING_SEEDS = (11, 12, 13, 14, 15)
STEPS = 60

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
LEASE_ID = re.compile(r"(?<![0-9a-f-])[0-9a-f]{32}(?![0-9a-f-])")
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
# What each node observes for itself, or what the clock decides: not part of the contract of
# parity (docs/api.md: `role`, `node_id`, rates and `latency` are the node's observations;
# an overview's `latency_ms` is the server's time now minus a job's).
NODE_FIELDS = frozenset(
    {"role", "node_id", "uptime_s", "submits_per_sec", "acks_per_sec", "latency_ms"}
)
NODE_BLOCKS = frozenset({"latency"})
# The dead-letter groups of the two errors the sequences fail attempts with.
FINGERPRINTS = {"ValueError: bad 42": "7488eb2026b2a49e", "boom": "aedab8ce698b4c5c"}
PER_MINUTE = frozenset({"submitted", "acked", "failed"})  # summed: a minute may turn mid-run


@pytest.fixture(scope="module")
def single(jq_module_server_factory: ServerFactory) -> JqServer:
    return jq_module_server_factory(*SERVE_ARGS)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("parity-cluster"))
    for node in cluster.nodes:
        node.args = SERVE_ARGS
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


class Target:
    """One server as the sequence sees it: its own job ids (by creation order), lease ids and
    cursors, and the normalizer that turns its answers into comparable ones."""

    def __init__(self, name: str, *servers: JqServer, roam: int | None = None) -> None:
        """`roam`: the seed of a random choice of one of `servers` for each call (a cluster
        used through every node), else the first server takes every call."""
        server = servers[0]
        self.name = name
        self.clients = [httpx.Client(base_url=s.url, timeout=20) for s in servers]
        self.http = self.clients[0]
        self.roam = None if roam is None else random.Random(roam)
        self.keys = {
            "client": server.client_key,
            "worker": server.worker_key,
            "admin": server.admin_key,
        }
        self.jobs: list[str] = []  # job ids in order of creation
        self.index: dict[str, int] = {}
        self.leases: dict[str, str] = {}  # lease id -> "L<n>"
        self.others: dict[str, str] = {}  # any other id -> "U<n>"
        self.cursor: str | None = None  # the last listing's next_cursor
        self.headers: dict[str, str] = {}  # the last answer's, but for date and length

    def reset(self) -> None:
        self.jobs, self.index, self.leases, self.others, self.cursor = [], {}, {}, {}, None

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def state(self, i: int) -> str:
        """Job i's state, outside the compared calls."""
        headers = {"Authorization": f"Bearer {self.keys['client']}"}
        return str(self.http.get(f"/jobs/{self.jobs[i]}", headers=headers).json()["state"])

    def job(self, i: int | str) -> str:
        return self.jobs[i] if isinstance(i, int) else i

    def call(self, req: Request) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.keys[req.key]}", **req.headers}
        path = req.path.format(*(self.job(j) for j in req.jobs))
        json_body = _resolve(req.json, self)
        params = dict(req.params)
        if req.use_cursor and self.cursor is not None:
            params["cursor"] = self.cursor
        http = self.http if self.roam is None else self.roam.choice(self.clients)
        response = http.request(
            req.method,
            path,
            headers=headers,
            params=params or None,
            json=json_body if req.content is None else None,
            content=req.content,
        )
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        if req.method == "POST" and req.path in ("/jobs", "/jobs/batch"):
            self._learn(body)
        if isinstance(body, dict) and "next_cursor" in body:
            self.cursor = body["next_cursor"]
        self.headers = {
            k: v for k, v in response.headers.items() if k not in ("date", "content-length")
        }
        return response.status_code, body

    def _learn(self, body: Any) -> None:
        """Note the job ids an answer creates, in order (submits and batch submits)."""
        if isinstance(body, dict):
            ids = [body.get("job_id")]
            ids += [r.get("job_id") for r in body.get("results", []) if isinstance(r, dict)]
            for job_id in ids:
                if isinstance(job_id, str) and UUID.fullmatch(job_id) and job_id not in self.index:
                    self.index[job_id] = len(self.jobs)
                    self.jobs.append(job_id)

    def normalize(self, value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if k in NODE_FIELDS or k in NODE_BLOCKS:
                    continue
                if k in PER_MINUTE and isinstance(v, list):
                    out[k] = sum(v)
                    continue
                out[self.normalize(k)] = self.normalize(v, k)  # ids as keys too
            return out
        if isinstance(value, list):
            return [self.normalize(v, key) for v in value]
        if isinstance(value, str):
            value = UUID.sub(self._job_name, value)
            value = LEASE_ID.sub(self._lease_name, value)
            return TIME.sub("<time>", value)
        return value

    def _job_name(self, match: re.Match[str]) -> str:
        i = self.index.get(match.group())
        if i is not None:
            return f"J{i}"
        # Another sequence's job (a dead-letter group's sample), or an id the call made up.
        return self.others.setdefault(match.group(), f"U{len(self.others)}")

    def _lease_name(self, match: re.Match[str]) -> str:
        return self.leases.setdefault(match.group(), f"L{len(self.leases)}")


def _differences(want: Any, got: Any, path: str = "") -> list[str]:
    """Where two normalized answers differ, one line each (single node first)."""
    if isinstance(want, dict) and isinstance(got, dict):
        lines = []
        for key in [*want, *(k for k in got if k not in want)]:
            lines += _differences(want.get(key, "<absent>"), got.get(key, "<absent>"),
                                  f"{path}.{key}")  # fmt: skip
        return lines
    if isinstance(want, list | tuple) and isinstance(got, list | tuple) and len(want) == len(got):
        return [line for i, (w, g) in enumerate(zip(want, got, strict=True)) for line in
                _differences(w, g, f"{path}[{i}]")]  # fmt: skip
    return [] if want == got else [f"{path or '.'}: single {want!r} != cluster {got!r}"]


def _resolve(value: Any, target: Target) -> Any:
    """A request body with job references (Ref) turned into the target's ids."""
    if isinstance(value, Ref):
        return value.resolve(target)
    if isinstance(value, dict):
        return {k: _resolve(v, target) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, target) for v in value]
    return value


@dataclass(frozen=True)
class Ref:
    """A job (by creation order) or its current lease, in a request body."""

    job: int
    lease: bool = False
    leases: dict[str, dict[int, str]] | None = field(default=None, repr=False, compare=False)

    def resolve(self, target: Target) -> str:
        if self.lease:
            assert self.leases is not None
            return self.leases[target.name].get(self.job, "0" * 32)
        return target.jobs[self.job]


@dataclass
class Request:
    method: str
    path: str
    key: str = "client"
    json: Any = None
    content: bytes | None = None
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    jobs: tuple[int | str, ...] = ()
    use_cursor: bool = False

    def lags(self) -> bool:
        """A read that does not catch up with the cluster log first."""
        return self.method == "GET" and not (
            self.path in ("/jobs/{}", "/jobs/{}/explain") or self.path.startswith("/schedules/")
        )

    def describe(self) -> str:
        body = self.json if self.content is None else self.content
        query = f"?{self.params}" if self.params else ""
        path = self.path.format(*(f"<{j}>" for j in self.jobs))
        return f"{self.method} {path}{query} key={self.key} body={body!r}"


class Sequence:
    """One seeded random call sequence on a fresh queue, and the model it steers by (what the
    single node answered: the cluster node must have answered the same)."""

    def __init__(self, seed: int, targets: list[Target]) -> None:
        self.rng = random.Random(seed)
        self.queue = f"parity-{seed}-{uuid.uuid4().hex[:6]}"
        self.schedule_prefix = f"{self.queue}-s"
        self.targets = targets
        self.ref, self.other = targets
        self.leased: dict[int, dict[str, Any]] = {}  # job index -> lease answer (reference)
        self.leases: dict[str, dict[int, str]] = {t.name: {} for t in targets}
        self.ikeys = [f"ik-{self.queue}-{i}" for i in range(3)]
        self.ukeys = [f"uk-{self.queue}-{i}" for i in range(3)]
        self.schedules: list[str] = []
        self.retrying: set[int] = set()  # jobs in a RETRY backoff (0.5-1 s)
        self.expiring: set[int] = set()  # jobs leased for 1 s, left to expire
        self.log: list[str] = []

    # ------------------------------------------------------------------ running

    def run(self, steps: int) -> None:
        for target in self.targets:
            target.reset()
        for _ in range(steps):
            self.step(self.next_request())
        self.settle_retries()  # none left to come back during the next sequence

    def step(self, req: Request) -> list[tuple[int, Any]]:
        self.settle_retries()
        answers = [self.ref.call(req)]
        want = (answers[0][0], self.ref.normalize(answers[0][1]), self.ref.headers)
        # A cluster node's stats and listings need not show at once what another node did
        # (docs/architecture.md: only reads that must be current catch up with the log).
        lags = self.other.roam is not None and req.lags()
        deadline = time.monotonic() + (3 if lags else 0)
        while True:
            answer = self.other.call(req)
            got = (answer[0], self.other.normalize(answer[1]), self.other.headers)
            if got == want or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        answers.append(answer)
        self.log.append(f"{req.describe()} -> {answers[0][0]}")
        assert got == want, (
            "single node and cluster answered differently\n"
            + "\n".join(self.log[-15:])
            + "\n"
            + "\n".join(_differences(want, got))
        )
        self.observe(req, answers)
        return answers

    def observe(self, req: Request, answers: list[tuple[int, Any]]) -> None:
        """Keep the model: leases held (per target), and when a RETRY backoff is over."""
        for target, (status, body) in zip(self.targets, answers, strict=True):
            leased: list[dict[str, Any]] = []
            if req.path == "/jobs/lease" and status == 200:
                leased = body if isinstance(body, list) else [body]
            elif req.path == "/jobs/ack" and status == 200:
                leased = body.get("leased", [])
            for job in leased:
                i = target.index[job["job_id"]]
                self.leases[target.name][i] = job["lease_id"]
                if target is self.ref:
                    self.leased[i] = job
                    if isinstance(req.json, dict) and req.json.get("lease_ms") == 1000:
                        self.expiring.add(i)
        status, body = answers[0]
        states: list[tuple[str, str]] = []
        if isinstance(body, dict) and "state" in body and "job_id" in body:
            states.append((body["job_id"], body["state"]))
        if isinstance(body, dict) and isinstance(body.get("results"), list):
            states += [(r["job_id"], r["state"]) for r in body["results"] if "state" in r]
        for job_id, state in states:
            known = self.ref.index.get(job_id)
            if known is None:
                continue
            i = known
            if state != "RUNNING":
                self.leased.pop(i, None)
            if state == "RETRY":
                self.retrying.add(i)

    def settle_retries(self) -> None:
        """Wait until the ticker of each server expired the 1 s leases and made its RETRY
        jobs READY again (a first retry's backoff is 0.5-1 s, core/backoff.py): when that
        happens is the clock's business, so no compared call may fall between the two
        servers' moments."""
        deadline = time.monotonic() + 10
        for target in self.targets:
            for i in sorted(self.expiring):
                while (state := target.state(i)) == "RUNNING":
                    assert time.monotonic() < deadline, f"job {i}'s lease did not expire"
                    time.sleep(0.05)
                if target is self.ref:
                    self.leased.pop(i, None)
                    if state == "RETRY":
                        self.retrying.add(i)
        for target in self.targets:
            for i in sorted(self.retrying):
                while target.state(i) == "RETRY":
                    assert time.monotonic() < deadline, f"job {i} stayed in RETRY"
                    time.sleep(0.05)
        self.retrying.clear()
        self.expiring.clear()

    # ------------------------------------------------------------------ generating

    def next_request(self) -> Request:
        ops = [
            (self.submit, 14),
            (self.submit_invalid, 4),
            (self.submit_batch, 5),
            (self.lease, 14),
            (self.settle, 12),
            (self.extend, 4),
            (self.release, 2),
            (self.progress, 2),
            (self.cancel_or_requeue, 5),
            (self.ack_batch, 5),
            (self.get_job, 6),
            (self.list_jobs, 4),
            (self.explain, 2),
            (self.queue_settings, 4),
            (self.schedule, 5),
            (self.stats, 3),
            (self.queues, 2),
            (self.bulk, 1),
            (self.misc_reads, 2),
            (self.dead_group, 1),
            (self.workers, 1),
        ]
        if self.other.roam is not None:
            # What a node observes for itself (explain's no_worker, /workers) differs between
            # nodes by design.
            ops = [(o, w) for o, w in ops if o not in (self.explain, self.workers)]
        op = self.rng.choices([o for o, _ in ops], [w for _, w in ops])[0]
        return op()

    def some_job(self) -> int | str:
        n = len(self.ref.jobs)
        if n == 0 or self.rng.random() < 0.08:
            return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))  # no such job
        return self.rng.randrange(n)

    def job_body(self, *, batch_size: int = 0, position: int = 0) -> dict[str, Any]:
        rng = self.rng
        body: dict[str, Any] = {"payload": f"p{rng.randrange(1000)}", "queue": self.queue}
        if rng.random() < 0.5:
            body["priority"] = rng.choice([-5, 0, 1, 3, 10, 2**31 - 1, -(2**31)])
        if rng.random() < 0.5:
            body["max_retries"] = rng.choice([0, 1, 2, 3])
        when = rng.random()
        if when < 0.1:
            body["delay_ms"] = rng.choice([0, 3_600_000])
        elif when < 0.2:
            body["run_at"] = rng.choice(
                ["2020-01-01T00:00:00Z", "2099-06-01T12:00:00.5+02:00", "1970-01-01T00:00:00Z"]
            )
        if rng.random() < 0.15:
            body["idempotency_key"] = rng.choice(self.ikeys)
        if rng.random() < 0.15:
            body["unique_key"] = rng.choice(self.ukeys)
            scope = rng.choice(["queued", "active", "period", None])
            if scope is not None:
                body["unique_scope"] = scope
            if scope == "period":
                body["unique_period_ms"] = 3_600_000
        if rng.random() < 0.2 and (self.ref.jobs or position):
            parents: list[Any] = []
            for _ in range(rng.randint(1, 2)):
                if position and rng.random() < 0.5:
                    parents.append(f"${rng.randrange(position)}")
                elif self.ref.jobs:
                    parents.append(Ref(rng.randrange(len(self.ref.jobs))))
            if parents:
                body["depends_on"] = parents
            if rng.random() < 0.4:
                body["on_parent_failure"] = rng.choice(["cancel", "run"])
        return body

    def submit(self) -> Request:
        headers = {}
        if self.rng.random() < 0.1:
            headers["Idempotency-Key"] = self.rng.choice(self.ikeys)
        return Request("POST", "/jobs", json=self.job_body(), headers=headers)

    def submit_invalid(self) -> Request:
        q = self.queue
        bodies: list[Any] = [
            {},
            {"payload": "", "queue": q},
            {"payload": 5, "queue": q},
            {"payload": "x", "queue": q, "priority": 2**31},
            {"payload": "x", "queue": q, "max_retries": 1001},
            {"payload": "x", "queue": q, "max_retries": 2.5},
            {"payload": "x", "queue": q, "max_retries": 2.0},  # a whole number: accepted
            {"payload": "x", "queue": q, "delay_ms": -1},
            {"payload": "x", "queue": q, "delay_ms": 1, "run_at": "2030-01-01T00:00:00Z"},
            {"payload": "x", "queue": q, "run_at": "2030-01-01"},
            {"payload": "x", "queue": "bad queue"},
            {"payload": "x", "queue": q + "\n"},
            {"payload": "x", "queue": q, "unique_key": "u", "unique_scope": "period"},
            {"payload": "x", "queue": q, "unique_key": ""},
            {"payload": "x", "queue": q, "depends_on": ["$0"]},
            {"payload": "x", "queue": q, "depends_on": [str(uuid.UUID(int=7, version=4))]},
            {"payload": "x", "queue": q, "on_parent_failure": "maybe"},
            {"payload": "x", "queue": q, "idempotency_key": "k" * 257},
            [1, 2],
        ]
        choice = self.rng.randrange(len(bodies) + 2)
        if choice == len(bodies):
            return Request("POST", "/jobs", content=b"{not json")
        if choice == len(bodies) + 1:
            return Request("POST", "/jobs", key="worker", json={"payload": "x", "queue": q})
        return Request("POST", "/jobs", json=bodies[choice])

    def submit_batch(self) -> Request:
        rng = self.rng
        if rng.random() < 0.05:
            return Request("POST", "/jobs/batch", json={"jobs": []})
        entries: list[Any] = []
        for position in range(rng.randint(1, 5)):
            if rng.random() < 0.15:
                entries.append(rng.choice([{"queue": self.queue}, {"payload": ""}, "x"]))
            elif rng.random() < 0.1:
                entries.append({"payload": "x", "queue": self.queue, "depends_on": ["$9"]})
            else:
                entries.append(self.job_body(position=position))
        return Request("POST", "/jobs/batch", json={"jobs": entries})

    def lease(self) -> Request:
        rng = self.rng
        body: dict[str, Any] = {"queue": self.queue}
        if rng.random() < 0.4:
            body["max_jobs"] = rng.randint(1, 4)
        if rng.random() < 0.3:
            body["lease_ms"] = rng.choice([3_600_000, 7_200_000, 999, 1000, 3_600_000])
            if body["lease_ms"] == 1000:
                body.pop("max_jobs", None)  # one job at a time back from expiry: see failure()
        if rng.random() < 0.1:
            body["wait_ms"] = 50
        headers = {"X-Jq-Worker": f"w-{rng.randrange(3)}"} if rng.random() < 0.5 else {}
        key = "client" if rng.random() < 0.03 else "worker"
        return Request("POST", "/jobs/lease", key=key, json=body, headers=headers)

    def lease_ref(self, i: int, choice: float) -> Any:
        """The job's lease id, a stale one, or none."""
        if choice < 0.8:
            return Ref(i, lease=True, leases=self.leases)
        if choice < 0.9:
            return "f" * 32
        return None

    def failure(self, i: int | None, *, final: bool = False) -> dict[str, Any]:
        """A result or a failed attempt; a failure that would wait a backoff of more than 1 s
        (a second or later attempt with retries left) is made final, and so is any but the
        first of a batch: a backoff's jitter comes from the job id (core/backoff.py), so two
        jobs back from RETRY together need not come back in the same order on both servers."""
        rng = self.rng
        if rng.random() < 0.55:
            return {"result": rng.choice(["ok", "", "done"])}
        body: dict[str, Any] = {"result_error": rng.choice(list(FINGERPRINTS))}
        job = self.leased.get(i) if i is not None else None
        retry = rng.random() < 0.6 and not final
        if job is not None and job["attempt"] >= 2 and job["attempt"] <= job["max_retries"]:
            retry = False
        if not retry or rng.random() < 0.5:
            body["retry"] = retry
        return body

    def settle(self) -> Request:
        rng = self.rng
        if self.leased and rng.random() < 0.85:
            i: int | str = rng.choice(sorted(self.leased))
        else:
            i = self.some_job()
        body = self.failure(i if isinstance(i, int) else None)
        if isinstance(i, int):
            lease = self.lease_ref(i, rng.random())
            if lease is not None:
                body["lease_id"] = lease
        key = "client" if rng.random() < 0.03 else "worker"
        return Request("POST", "/jobs/{}/ack", key=key, json=body, jobs=(i,))

    def extend(self) -> Request:
        i = self.rng.choice(sorted(self.leased)) if self.leased else self.some_job()
        body: dict[str, Any] = {}
        if isinstance(i, int):
            lease = self.lease_ref(i, self.rng.random())
            if lease is not None:
                body["lease_id"] = lease
        if self.rng.random() < 0.5:
            body["lease_ms"] = self.rng.choice([3_600_000, 7_200_000, 500])
        if self.rng.random() < 0.3:
            body["progress"] = 0.5
            body["note"] = "half"
        return Request("POST", "/jobs/{}/extend", key="worker", json=body, jobs=(i,))

    def release(self) -> Request:
        """A lease given back: back in an hour (so the clock never decides an order), or a
        delay out of range."""
        i = self.rng.choice(sorted(self.leased)) if self.leased else self.some_job()
        body: dict[str, Any] = {"delay_ms": self.rng.choice([3_600_000, 3_600_000, -1])}
        if isinstance(i, int):
            lease = self.lease_ref(i, self.rng.random())
            if lease is not None:
                body["lease_id"] = lease
        return Request("POST", "/jobs/{}/release", key="worker", json=body, jobs=(i,))

    def progress(self) -> Request:
        i = self.rng.choice(sorted(self.leased)) if self.leased else self.some_job()
        body: dict[str, Any] = {"progress": self.rng.choice([0.25, 1.0, 1.5]), "note": "n"}
        if isinstance(i, int):
            lease = self.lease_ref(i, self.rng.random())
            if lease is not None:
                body["lease_id"] = lease
        return Request("POST", "/jobs/{}/progress", key="worker", json=body, jobs=(i,))

    def cancel_or_requeue(self) -> Request:
        action = self.rng.choice(["cancel", "requeue"])
        return Request("POST", "/jobs/{}/" + action, jobs=(self.some_job(),))

    def ack_batch(self) -> Request:
        rng = self.rng
        acks: list[dict[str, Any]] = []
        held = sorted(self.leased)
        rng.shuffle(held)
        for i in held[: rng.randint(0, 3)]:
            retried = any(entry.get("retry", True) for entry in acks if "result_error" in entry)
            entry = {"job_id": Ref(i), **self.failure(i, final=retried)}
            lease = self.lease_ref(i, rng.random())
            if lease is not None:
                entry["lease_id"] = lease
            acks.append(entry)
        if not acks or rng.random() < 0.3:
            j = self.some_job()
            acks.append({"job_id": Ref(j) if isinstance(j, int) else j, "result": "r"})
        body: dict[str, Any] = {"acks": acks}
        if rng.random() < 0.05:
            body = {"acks": []}
        if rng.random() < 0.5:
            body["lease_next"] = {"queue": self.queue, "max_jobs": rng.randint(1, 3)}
            if rng.random() < 0.3:
                body["lease_next"]["lease_ms"] = rng.choice([3_600_000, 10])
        return Request("POST", "/jobs/ack", key="worker", json=body)

    def get_job(self) -> Request:
        return Request("GET", "/jobs/{}", jobs=(self.some_job(),))

    def explain(self) -> Request:
        return Request("GET", "/jobs/{}/explain", jobs=(self.some_job(),))

    def list_jobs(self) -> Request:
        rng = self.rng
        params = {"queue": self.queue, "limit": str(rng.choice([1, 3, 50]))}
        state = rng.choice([None, "ready", "RUNNING", "dead", "WAITING", "scheduled", "bogus"])
        if state is not None:
            params["state"] = state
        if rng.random() < 0.15:
            params["error"] = self.rng.choice(["value", "oom"])  # never in hex ids
        return Request("GET", "/jobs", params=params, use_cursor=rng.random() < 0.4)

    def queue_settings(self) -> Request:
        rng = self.rng
        path = f"/queues/{self.queue}"
        choice = rng.random()
        if choice < 0.2:
            return Request("POST", path + rng.choice(["/pause", "/resume"]), key="admin")
        if choice < 0.35:
            return Request("GET", path)
        if choice < 0.4:
            return Request("PUT", path, key="client", json={"paused": True})
        body: dict[str, Any] = {}
        if rng.random() < 0.4:
            body["paused"] = rng.random() < 0.3
        if rng.random() < 0.5:
            body["concurrency"] = rng.choice([0, 1, 2, 5, -1])
        if rng.random() < 0.3:
            body["rate_limit"] = rng.choice([0, 3, 100])
            if rng.random() < 0.7:
                body["rate_period_ms"] = rng.choice([0, 3_600_000])
        if rng.random() < 0.2:
            body["max_latency_ms"] = rng.choice([0, 60_000])
        return Request("PUT", path, key="admin", json=body)

    def schedule(self) -> Request:
        rng = self.rng
        if not self.schedules or rng.random() < 0.3:
            name = f"{self.schedule_prefix}{rng.randrange(3)}"
            if name not in self.schedules:
                self.schedules.append(name)
            body: dict[str, Any] = {
                "name": name,
                "cron": rng.choice(["0 0 1 1 *", "@yearly", "0 0 0 1 1 *", "61 * * * *"]),
                "payload": "scheduled",
                "queue": self.queue,
            }
            if rng.random() < 0.3:
                body["timezone"] = rng.choice(["Europe/Berlin", "Mars/Olympus"])
            if rng.random() < 0.3:
                body["paused"] = True
            if rng.random() < 0.2:
                body["overlap"] = "skip"
            return Request("POST", "/schedules", json=body)
        name = rng.choice(self.schedules + [f"{self.schedule_prefix}-none"])
        action = rng.choice(["get", "get", "delete", "pause", "resume", "patch"])
        if action == "get":
            return Request("GET", f"/schedules/{name}")
        if action == "delete":
            return Request("DELETE", f"/schedules/{name}")
        if action == "patch":
            body = rng.choice([{"priority": 4}, {"cron": "@monthly"}, {"grace_ms": -1}])
            return Request("PATCH", f"/schedules/{name}", json=body)
        return Request("POST", f"/schedules/{name}/{action}")

    def stats(self) -> Request:
        return Request("GET", "/stats")

    def queues(self) -> Request:
        return Request("GET", "/queues", params={"limit": "1000"})

    def bulk(self) -> Request:
        rng = self.rng
        body: dict[str, Any] = {"action": rng.choice(["cancel", "requeue"]), "queue": self.queue}
        if body["action"] == "cancel" and rng.random() < 0.5:
            body["states"] = rng.choice([["READY"], ["SCHEDULED", "RETRY"]])
        return Request("POST", "/jobs/bulk", json=body)

    def misc_reads(self) -> Request:
        rng = self.rng
        return rng.choice(
            [
                Request("GET", f"/queues/{self.queue}/overview"),
                Request("GET", "/stats/history", params={"queue": self.queue}),
                Request("GET", "/dead/groups"),
                Request("GET", "/schedules"),
            ]
        )

    def dead_group(self) -> Request:
        """Settle a dead-letter group: every queue's DEAD jobs that failed with that error."""
        fingerprint = self.rng.choice(list(FINGERPRINTS.values()) + ["0123456789abcdef"])
        action = self.rng.choice(["requeue", "cancel"])
        return Request("POST", f"/dead/groups/{fingerprint}/{action}", json={"chunk": 2})

    def workers(self) -> Request:
        return Request("GET", "/workers")


def _reads(sequence: Sequence) -> list[Request]:
    """What another node must answer as the node that took the writes, once caught up."""
    q = sequence.queue
    reads = [Request("GET", "/jobs/{}", jobs=(i,)) for i in range(len(sequence.ref.jobs))]
    reads += [Request("GET", "/jobs", params={"queue": q, "limit": "1000"})]
    reads += [Request("GET", f"/queues/{q}"), Request("GET", "/stats")]
    reads += [Request("GET", "/queues", params={"limit": "1000"})]
    reads += [Request("GET", f"/schedules/{name}") for name in sequence.schedules]
    return reads


def _follower_agrees(writer: Target, reader: Target, reads: list[Request]) -> None:
    """Each read answers the same on both cluster nodes within a few seconds (stats and
    listings do not wait for the log to catch up; a job by id does)."""
    reader.jobs, reader.index = writer.jobs, writer.index  # the same ids: one cluster
    for req in reads:
        deadline = time.monotonic() + 5
        while True:
            status_w, body_w = writer.call(req)
            status_r, body_r = reader.call(req)
            want = (status_w, writer.normalize(body_w))
            got = (status_r, reader.normalize(body_r))
            if want == got:
                break
            assert time.monotonic() < deadline, (
                f"the other cluster node answers {req.describe()} differently\n"
                f"writer: {want}\nreader: {got}"
            )
            time.sleep(0.1)


def test_a_cluster_node_answers_like_a_single_node(single: JqServer, cluster: Cluster) -> None:
    """Every call to one cluster node; then another node must answer the reads alike."""
    writer_node, reader_node = cluster.nodes[0], cluster.nodes[1]
    targets = [Target("single", single), Target("cluster", writer_node)]
    reader = Target("reader", reader_node)
    try:
        for seed in SEEDS:
            sequence = Sequence(seed, targets)
            sequence.run(STEPS)
            reader.leases = targets[1].leases
            _follower_agrees(targets[1], reader, _reads(sequence))
    finally:
        for target in (*targets, reader):
            target.close()


def test_a_cluster_used_through_every_node_answers_like_a_single_node(
    single: JqServer, cluster: Cluster
) -> None:
    """Each call to a node picked at random: a write on one node, the next call on another."""
    targets = [Target("single", single), Target("cluster", *cluster.nodes, roam=0)]
    try:
        for seed in ROAMING_SEEDS:
            sequence = Sequence(seed, targets)
            sequence.run(STEPS)
    finally:
        for target in targets:
            target.close()


def test_the_documents_and_health_agree(single: JqServer, cluster: Cluster) -> None:
    """The OpenAPI document is the same (only sharded nodes add routes), and /health differs
    in its role."""
    documents = [httpx.get(s.url + "/openapi.json", timeout=10) for s in (single, *cluster.nodes)]
    assert all(d.status_code == 200 for d in documents)
    assert all(d.json() == documents[0].json() for d in documents)
    health = [httpx.get(s.url + "/health", timeout=10).json() for s in (single, *cluster.nodes)]
    assert all(h["status"] == "ok" for h in health)
    roles = [h["role"] for h in health]
    assert roles[0] == "single" and sorted(roles[1:]) == ["follower", "follower", "leader"]


def test_a_scheduled_run_looks_alike(single: JqServer, cluster: Cluster) -> None:
    """A schedule due once, in three seconds, fired by the single node's ticker and by the
    cluster's elected one: the same schedule and the same job, seen alike from every node."""
    queue = f"parity-fire-{uuid.uuid4().hex[:6]}"
    at = datetime.now(UTC) + timedelta(seconds=3)
    cron = f"{at.second} {at.minute} {at.hour} {at.day} {at.month} *"  # then next year
    body = {"name": queue, "cron": cron, "payload": "tick", "queue": queue, "priority": 2}
    targets = [Target("single", single), Target("cluster", cluster.nodes[0])]
    readers = [Target("reader", node) for node in cluster.nodes[1:]]
    schedule = Request("GET", f"/schedules/{queue}")
    jobs = Request("GET", "/jobs", params={"queue": queue})
    try:
        answers = [t.call(Request("POST", "/schedules", json=body)) for t in targets]
        assert [status for status, _ in answers] == [201, 201]
        assert targets[0].normalize(answers[0][1]) == targets[1].normalize(answers[1][1])
        for target in targets:
            deadline = time.monotonic() + 15
            while not (listed := target.call(jobs)[1]["jobs"]):
                assert time.monotonic() < deadline, f"{target.name}: the schedule never fired"
                time.sleep(0.1)
            target.index[listed[0]["job_id"]] = len(target.jobs)
            target.jobs.append(listed[0]["job_id"])
        for reader in readers:
            reader.jobs, reader.index = targets[1].jobs, targets[1].index
        job = Request("GET", "/jobs/{}", jobs=(0,))
        views = [(t.call(job), t.call(schedule)) for t in (*targets, *readers)]
        normalized = [[t.normalize(v) for _, v in view] for t, view in zip(
            (*targets, *readers), views, strict=True)]  # fmt: skip
        assert all(n == normalized[0] for n in normalized[1:]), normalized
        fired, made = normalized[0]
        assert fired["schedule"] == queue and fired["payload"] == "tick"
        assert made["runs"] == 1 and made["last_job_id"] == "J0"
    finally:
        for target in (*targets, *readers):
            target.http.delete(
                f"/schedules/{queue}", headers={"Authorization": f"Bearer {target.keys['client']}"}
            )
            target.close()


def _leads_etcd(node: ClusterNode) -> bool:
    status: Any = node.etcd_status()  # its "header" is an object
    return bool(status["leader"] == status["header"]["member_id"])


def test_a_bulk_action_on_another_node_sees_a_job_acknowledged_elsewhere(
    cluster: Cluster,
) -> None:
    """Submit on the node beside the etcd leader, bulk-cancel its queue on another node at
    once: the other node catches up with the log before it selects (server/routes_bulk.py).
    Before it did, about one try in twenty it had not applied the submit yet, matched nothing
    and answered 200 `changed: 0`, and the job stayed READY."""
    a = next(n for n in cluster.nodes if _leads_etcd(n))
    b = next(n for n in cluster.nodes if n is not a)
    headers = {"Authorization": f"Bearer {a.client_key}"}
    with httpx.Client(headers=headers, timeout=10) as http:
        for _ in range(150):
            queue = f"parity-bulk-{uuid.uuid4().hex[:6]}"
            submitted = http.post(a.url + "/jobs", json={"payload": "x", "queue": queue})
            assert submitted.status_code == 201
            bulk = http.post(b.url + "/jobs/bulk", json={"action": "cancel", "queue": queue})
            assert bulk.json()["changed"] == 1, f"the bulk cancel on another node: {bulk.json()}"


def test_a_stream_ticket_works_on_another_node(cluster: Cluster) -> None:
    """Behind a round-robin balancer the dashboard's ticket and its stream reach different
    nodes: a ticket is signed with the shared key store's secret, so any node takes it (it was
    kept in the issuing node's memory, and the others answered 401)."""
    a, b = cluster.nodes[0], cluster.nodes[1]
    headers = {"Authorization": f"Bearer {a.client_key}"}
    ticket = httpx.post(a.url + "/events/ticket", headers=headers, timeout=10).json()["ticket"]
    with httpx.stream("GET", b.url + "/events", params={"ticket": ticket}, timeout=10) as r:
        assert r.status_code == 200
