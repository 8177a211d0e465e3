"""One chaos run: submit a load, lease-execute-ack it with N workers, SIGKILL and restart the
server at random moments meanwhile, then ask the server about every job and judge the result.
Against a cluster (`--cluster N`) every request goes to a random node and fails over to the next
one when that node is down, and the kills take one random node at a time.

It speaks HTTP with httpx directly, not through the SDK, because it must know exactly which
requests the server answered. Submits carry idempotency keys and are retried through restarts
with the same key (on any node), as the SDK retries them; with `--without-key` a share of them
goes without a key and is retried all the same, as a bare HTTP client might, so the report can
show what keys are for. Acks are retried with the same lease_id (leases survive restarts, and
any node settles them). Every fact goes into the `Ledger`; `report.verify`
compares it with the server's final answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import random
import shutil
import ssl
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Generator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from jq_tool.chaos.ledger import Ledger, chaos_payload, payload_index
from jq_tool.chaos.options import ChaosOptions
from jq_tool.chaos.report import Report, verify
from jq_tool.chaos.sharded_target import SpawnedShardedCluster
from jq_tool.chaos.target import (
    Endpoint,
    ExternalServer,
    SpawnedCluster,
    SpawnedServer,
    Target,
    TargetError,
)

# Every job may be retried this often: a kill can expire a lease or two, and a job that went DEAD
# because its leases died with the server would read as lost.
CHAOS_MAX_RETRIES = 25
LEASE_WAIT_MS = 1000
FINAL_READ_CONCURRENCY = 16
# Backoff while the server is down: short, because the harness wants to be there the moment it
# is back, capped, because 30 tasks spinning on a 2-core machine starve the server.
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 0.25
# Give up on one request (and call the run broken) after this long without an answer.
REQUEST_GIVE_UP_S = 120.0


# Each worker and submitter task talks over its own clients (one connection per node, like
# separate worker processes would): a single shared httpx pool spends CPU per request in
# proportion to its connections, and on a 2-core machine the harness must not out-eat the server
# it measures. One client per endpoint, in the target's endpoint order.
_task_clients: contextvars.ContextVar[list[httpx.AsyncClient] | None] = contextvars.ContextVar(
    "chaos_task_clients", default=None
)


class RunAborted(Exception):
    """The run cannot go on: the server did not come back, or answered nonsense."""


@dataclasses.dataclass(frozen=True)
class Progress:
    jobs: int
    submitted: int
    acked: int
    executions: int
    kills: int
    restarts: int
    kills_planned: int
    phase: str  # "starting" | "load" | "draining" | "verifying" | "done"
    down: str | None = None  # the cluster node killed and not yet healthy again


class _KeyAuth(httpx.Auth):
    """Bearer auth that reads the endpoint's key per request: a restarted server may print a new
    one, and each cluster node has keys of its own."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.endpoint.key}"
        yield request


class ChaosRun:
    def __init__(self, options: ChaosOptions, target: Target) -> None:
        self.options = options
        self.target = target
        # A run without --seed still has one, reported, so a failing run can be replayed.
        self.seed = options.seed if options.seed is not None else random.randrange(2**31)
        self.rng = random.Random(self.seed)
        # Which node a request tries first: its own stream, so routing does not shift the kills.
        self._route = random.Random(f"route-{self.seed}")
        self.run_id = uuid.uuid4().hex[:12]
        self.queue = options.queue or f"chaos-{self.run_id}"
        # Sharded: one queue per shard (new queues go to the least loaded shard), so the load
        # and the kills reach every shard. Submit i goes to queue i mod n, worker k leases k's.
        self.queues = (
            [f"{self.queue}-{i}" for i in range(options.shards)] if options.shards else [self.queue]
        )
        self._workers_started = 0
        self._released: set[str] = set()  # jobs a worker gave back (at most once each)
        # Which submits go without a key: their own stream, so the share moves no kill.
        keys = random.Random(f"keys-{self.seed}")
        without_key = {i for i in range(options.jobs) if keys.random() < options.without_key}
        self.ledger = Ledger(self.run_id, options.jobs, without_key=without_key)
        self.kills = 0
        self.restarts = 0
        self.downtime_s = 0.0  # kill to healthy again, summed
        self.phase = "starting"
        self._next_index = 0
        self._next_slot = 0.0
        self._abort: str | None = None
        self._clients: list[httpx.AsyncClient] = []
        # Answers (any status) per endpoint, in the target's endpoint order: the evidence that
        # a cluster run really spread its requests over every node.
        self.answers = [0 for _ in target.endpoints()]
        # One TLS context for every client: building one loads the CA bundle (~80 ms of CPU).
        self._tls = ssl.create_default_context()

    def progress(self) -> Progress:
        return Progress(
            jobs=self.options.jobs,
            submitted=sum(1 for record in self.ledger.submits if record.job_id is not None),
            acked=len(self.ledger.acked_at),
            executions=len(self.ledger.executions),
            kills=self.kills,
            restarts=self.restarts,
            kills_planned=self.options.kills,
            phase=self.phase,
            down=self.target.down
            if isinstance(self.target, SpawnedCluster | SpawnedShardedCluster)
            else None,
        )

    async def run(self) -> Report:
        """Start (or reach) the server, run the load with kills, verify. The target is started
        here and left running; the caller stops it."""
        await self.target.start()
        started = time.monotonic()  # the clock runs from a serving server, not from its boot
        async with contextlib.AsyncExitStack() as stack:
            self._clients = [
                await stack.enter_async_context(self._new_client(FINAL_READ_CONCURRENCY, endpoint))
                for endpoint in self.target.endpoints()
            ]
            await self._check_key()
            return await self._run(started)

    async def _run(self, started: float) -> Report:
        self.phase = "load"
        self._next_slot = time.monotonic()
        workers = [
            asyncio.create_task(self._guarded(self._worker())) for _ in range(self.options.workers)
        ]
        load = [
            asyncio.create_task(self._guarded(self._submitter()))
            for _ in range(self.options.submitters)
        ]
        load.append(asyncio.create_task(self._guarded(self._killer())))
        watchdog = asyncio.create_task(self._watchdog())
        error: str | None = None
        final_states: dict[str, str | None] | None = None
        try:
            await asyncio.gather(*load)
            self.phase = "draining"
            deadline = time.monotonic() + self.options.wait
            while not self.ledger.all_acks_confirmed() and time.monotonic() < deadline:
                self._check_abort()
                await asyncio.sleep(0.1)
            self.phase = "verifying"
            final_states = await self._final_states()
        except (RunAborted, TargetError) as exc:
            error = str(exc)
        finally:
            for task in [*load, *workers, watchdog]:
                task.cancel()
            await asyncio.gather(*load, *workers, watchdog, return_exceptions=True)
        self.phase = "done"
        ended = time.monotonic()
        last_ack = max(self.ledger.acked_at.values(), default=ended)
        return verify(
            self.ledger,
            final_states or {},
            kills=self.kills,
            restarts=self.restarts,
            downtime_s=self.downtime_s,
            wall_time_s=ended - started,
            load_time_s=last_ack - started,
            error=error,
            verified=final_states is not None,
            seed=self.seed,
            queue=",".join(self.queues),
        )

    # -- plumbing -----------------------------------------------------------------------------

    async def _check_key(self) -> None:
        """A wrong key would turn every submit into a refusal: say so before the run starts (for
        every node of a cluster)."""
        for client in self._clients:
            try:
                response = await client.get("/stats")
            except httpx.TransportError as exc:
                raise TargetError(f"{client.base_url} is not answering: {exc}") from None
            if response.status_code in (401, 403):
                raise TargetError(f"the server refused the key: {_describe(response)}")

    def _new_client(self, connections: int, endpoint: Endpoint) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=endpoint.base_url,
            auth=_KeyAuth(endpoint),
            limits=httpx.Limits(max_connections=connections),
            verify=self._tls,
            timeout=httpx.Timeout(10.0, read=LEASE_WAIT_MS / 1000 + 10.0),
        )

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        """Run one task of the run over its own connection; a bug in it ends the run with an
        error, never silently."""
        try:
            async with contextlib.AsyncExitStack() as stack:
                clients = [
                    await stack.enter_async_context(self._new_client(1, endpoint))
                    for endpoint in self.target.endpoints()
                ]
                _task_clients.set(clients)  # this task's context only
                await work
        except (RunAborted, TargetError, asyncio.CancelledError):
            raise
        except Exception as exc:  # noqa: BLE001 - reported as the run's error
            message = f"harness task failed: {exc!r}"
            self._fail(message)
            raise RunAborted(message) from exc

    async def _watchdog(self) -> None:
        """A server that dies without being killed is a finding, not something to retry
        through for minutes: end the run with its exit code and log."""
        while self._abort is None:
            reason = self.target.unexpected_exit()
            if reason is not None:
                self._fail(reason)
                return
            await asyncio.sleep(0.25)

    def _check_abort(self) -> None:
        if self._abort is not None:
            raise RunAborted(self._abort)

    def _fail(self, message: str) -> None:
        if self._abort is None:
            self._abort = message

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        on_retry: Callable[[], None] | None = None,
    ) -> httpx.Response:
        """One request, retried through connection failures, 5xx and 429 (a server that is down,
        starting, or refusing writes for now) until it gets another answer. `on_retry` is called
        before each resend. It goes to a random node first; each resend goes to the next node,
        so a request to a dead cluster node fails over to a live one."""
        clients = _task_clients.get() or self._clients
        assert clients
        node = self._route.randrange(len(clients))
        delay = RETRY_FIRST_S
        give_up = time.monotonic() + REQUEST_GIVE_UP_S
        while True:
            self._check_abort()
            client, answered_by = clients[node], node
            node = (node + 1) % len(clients)
            try:
                response = await client.request(method, path, json=json)
            except httpx.TransportError:
                pass
            else:
                self.answers[answered_by] += 1
                if response.status_code < 500 and response.status_code != 429:
                    return response
            if time.monotonic() > give_up:
                message = f"{method} {path} got no usable answer for {REQUEST_GIVE_UP_S:.0f}s"
                self._fail(message)
                raise RunAborted(message)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
            if on_retry is not None:
                on_retry()

    # -- load ---------------------------------------------------------------------------------

    async def _submitter(self) -> None:
        while self._next_index < self.options.jobs:
            index = self._next_index
            self._next_index += 1
            if self.options.submit_rate > 0:
                now = time.monotonic()
                slot = max(now, self._next_slot)
                self._next_slot = slot + 1.0 / self.options.submit_rate
                await asyncio.sleep(slot - now)
            await self._submit(index)

    async def _submit(self, index: int) -> None:
        record = self.ledger.submits[index]
        body: dict[str, Any] = {
            "payload": chaos_payload(self.run_id, index),
            "queue": self.queues[index % len(self.queues)],
            "max_retries": CHAOS_MAX_RETRIES,
        }
        if record.keyed:
            body["idempotency_key"] = record.idempotency_key
        self.ledger.submit_started(index, time.monotonic())
        response = await self._request(
            "POST", "/jobs", json=body, on_retry=lambda: self.ledger.submit_retried(index)
        )
        if response.status_code not in (200, 201):
            self.ledger.submit_rejected(index, _describe(response))
            return
        job_id = _field(response, "job_id")
        if not isinstance(job_id, str) or not job_id:
            self._fail(f"POST /jobs answered {response.status_code} without a job_id")
            raise RunAborted(self._abort or "")
        self.ledger.submit_acknowledged(
            index, job_id, time.monotonic(), replayed=_field(response, "duplicate") is True
        )

    async def _killer(self) -> None:
        for _ in range(self.options.kills):
            # Uniform around the interval: kills land at random moments of the load, not in step
            # with anything the server does periodically.
            await asyncio.sleep(self.rng.uniform(0.5, 1.5) * self.options.kill_interval)
            self._check_abort()
            try:
                await self.target.kill()
                self.kills += 1
                down = time.monotonic()
                await self.target.restart()
                self.restarts += 1
                self.downtime_s += time.monotonic() - down
            except TargetError as exc:
                message = f"kill/restart {self.kills + 1} failed: {exc}"
                self._fail(message)
                raise RunAborted(message) from None

    # -- workers ------------------------------------------------------------------------------

    async def _worker(self) -> None:
        queue = self.queues[self._workers_started % len(self.queues)]
        self._workers_started += 1
        body = {"queue": queue, "wait_ms": LEASE_WAIT_MS}
        while True:
            try:
                response = await self._request("POST", "/jobs/lease", json=body)
            except RunAborted:
                return
            if response.status_code == 404:
                continue
            if response.status_code != 200:
                self._fail(f"POST /jobs/lease: {_describe(response)}")
                return
            try:
                job = response.json()
                job_id, lease_id = str(job["job_id"]), str(job["lease_id"])
                attempt, payload = int(job["attempt"]), str(job["payload"])
            except (ValueError, KeyError, TypeError):
                self._fail(f"POST /jobs/lease answered an unexpected body: {response.text[:200]}")
                return
            index = payload_index(self.run_id, payload)
            self.ledger.execution_started(job_id, attempt, lease_id, index, time.monotonic())
            await asyncio.sleep(self.rng.uniform(0.0, 0.005))  # the "work"
            give_back = job_id not in self._released and self.rng.random() < (
                self.options.release_share
            )
            try:
                if give_back:
                    self._released.add(job_id)
                    await self._release(job_id, lease_id, attempt)
                else:
                    await self._ack(job_id, lease_id)
            except RunAborted:
                return

    async def _release(self, job_id: str, lease_id: str, attempt: int) -> None:
        """Give the lease back, to be leased (and run) again after a short delay."""
        retried = False

        def note_retry() -> None:
            nonlocal retried
            retried = True

        body = {"lease_id": lease_id, "delay_ms": self.rng.randrange(0, 50)}
        self.ledger.release_sent(job_id, attempt)
        response = await self._request(
            "POST", f"/jobs/{job_id}/release", json=body, on_retry=note_retry
        )
        if response.status_code == 200:
            self.ledger.release_answered(sure=True)
        elif response.status_code == 409 and retried:
            self.ledger.release_answered(sure=False)
        elif response.status_code not in (404, 409):
            # 409 on a first try: the lease ran out meanwhile (a kill); the job comes back as
            # a new attempt. 404: the verification reports the job lost if it was ours.
            self._fail(f"POST /jobs/{job_id}/release: {_describe(response)}")

    async def _ack(self, job_id: str, lease_id: str) -> None:
        retried = False

        def count_retry() -> None:
            nonlocal retried
            if not retried:
                retried = True
                self.ledger.ack_retries += 1

        response = await self._request(
            "POST",
            f"/jobs/{job_id}/ack",
            json={"lease_id": lease_id, "result": "ok"},
            on_retry=count_retry,
        )
        if response.status_code == 200:
            if _field(response, "state") == "ACKED":
                self.ledger.ack_confirmed(job_id, time.monotonic())
            return
        if response.status_code == 409:
            # Either our ack landed and its answer died with the server (the retry then finds
            # the job settled), or the lease ran out while the server was down. Only the job's
            # state tells which.
            state, _ = await self._read_job(job_id)
            if state == "ACKED":
                self.ledger.ack_confirmed(job_id, time.monotonic())
                self.ledger.acks_settled_by_read += 1
            return
        if response.status_code == 404:
            # The server forgot a job it leased: verification reports it lost if it was ours.
            self.ledger.ack_refused(job_id, _describe(response))
            return
        self._fail(f"POST /jobs/{job_id}/ack: {_describe(response)}")

    # -- verification -------------------------------------------------------------------------

    async def _read_job(self, job_id: str) -> tuple[str | None, str | None]:
        """(state, payload) of a job, or (None, None) when the server does not know it."""
        response = await self._request("GET", f"/jobs/{job_id}")
        if response.status_code == 404:
            return None, None
        if response.status_code != 200:
            self._fail(f"GET /jobs/{job_id}: {_describe(response)}")
            raise RunAborted(self._abort or "")
        state, payload = _field(response, "state"), _field(response, "payload")
        return (
            state if isinstance(state, str) else None,
            payload if isinstance(payload, str) else None,
        )

    async def _final_states(self) -> dict[str, str | None]:
        semaphore = asyncio.Semaphore(FINAL_READ_CONCURRENCY)
        states: dict[str, str | None] = {}

        async def read(job_id: str) -> None:
            async with semaphore:
                state, payload = await self._read_job(job_id)
            states[job_id] = state
            if payload is not None:
                self.ledger.job_payload_seen(job_id, payload_index(self.run_id, payload))

        await asyncio.gather(*(read(job_id) for job_id in sorted(self.ledger.known_job_ids())))
        # Jobs nobody was told about: a submit whose answer was lost and that was retried
        # without a key made one more. Only listing the queue finds those not leased yet.
        unknown = [job_id for job_id in await self._queue_job_ids() if job_id not in states]
        await asyncio.gather(*(read(job_id) for job_id in unknown))
        return states

    async def _queue_job_ids(self) -> list[str]:
        """Every job id in the run's queues."""
        ids: list[str] = []
        for queue in self.queues:
            ids.extend(await self._job_ids_of(queue))
        return ids

    async def _job_ids_of(self, queue: str) -> list[str]:
        """Every job id in one queue, from GET /jobs page by page."""
        ids: list[str] = []
        cursor: str | None = None
        while True:
            query = {"queue": queue, "limit": 1000, **({"cursor": cursor} if cursor else {})}
            response = await self._request("GET", "/jobs?" + urlencode(query))
            if response.status_code != 200:
                self._fail(f"GET /jobs: {_describe(response)}")
                raise RunAborted(self._abort or "")
            jobs = _field(response, "jobs")
            ids.extend(str(job["job_id"]) for job in jobs or [] if isinstance(job, dict))
            cursor = _field(response, "next_cursor")
            if not isinstance(cursor, str) or not cursor:
                return ids


def _field(response: httpx.Response, name: str) -> Any:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get(name) if isinstance(body, dict) else None


def _describe(response: httpx.Response) -> str:
    code = _field(response, "code")
    error = _field(response, "error")
    return (
        f"HTTP {response.status_code}"
        + (f" {code}" if code else "")
        + (f": {error}" if error else "")
    )


async def run_chaos(options: ChaosOptions, *, run: list[ChaosRun] | None = None) -> Report:
    """Run `options` against its target, or against a private `jq serve` (or, with
    `options.cluster`, a private cluster of that many nodes) on a temporary data dir (kept, and
    named in the report's error, when the run fails). `run`, when given, receives the ChaosRun as
    soon as it exists, for a progress display."""
    if options.seed is None:
        # Chosen here, not in ChaosRun, because a cluster's choice of victims follows it too.
        options = dataclasses.replace(options, seed=random.randrange(2**31))
    assert options.seed is not None
    workdir: Path | None = None
    target: Target
    cluster: SpawnedCluster | None = None
    sharded: SpawnedShardedCluster | None = None
    if options.target is not None:
        target = ExternalServer(
            options.target,
            options.key or "",
            kill_cmd=options.kill_cmd,
            restart_cmd=options.restart_cmd,
        )
    elif options.shards:
        if options.data_dir is not None:
            root = Path(options.data_dir)
        else:
            workdir = root = Path(tempfile.mkdtemp(prefix="jq-chaos-shards-"))
        target = sharded = SpawnedShardedCluster(root, options.shards, seed=options.seed)
    elif options.cluster:
        if options.data_dir is not None:
            root = Path(options.data_dir)
        else:
            workdir = root = Path(tempfile.mkdtemp(prefix="jq-chaos-cluster-"))
        target = cluster = SpawnedCluster(root, options.cluster, seed=options.seed)
    else:
        if options.data_dir is not None:
            data_dir = Path(options.data_dir)
            log_path = data_dir.parent / f"{data_dir.name}.serve.log"
        else:
            workdir = Path(tempfile.mkdtemp(prefix="jq-chaos-"))
            data_dir, log_path = workdir / "data", workdir / "serve.log"
        target = SpawnedServer(data_dir, log_path=log_path, key=options.key)
    chaos = ChaosRun(options, target)
    if sharded is not None:
        sharded.queues = chaos.queues
    if run is not None:
        run.append(chaos)
    report: Report | None = None
    try:
        report = await chaos.run()
        if cluster is not None:
            killed = ", ".join(cluster.killed) or "none"
            answers = ", ".join(
                f"{name} {count}" for name, count in zip(cluster.nodes, chaos.answers, strict=True)
            )
            report.notes.append(f"cluster of {options.cluster} nodes; killed in turn: {killed}")
            report.notes.append(f"answers per node: {answers}")
        if sharded is not None:
            killed = ", ".join(sharded.killed) or "none"
            report.notes.append(
                f"{options.shards} shards (queues {', '.join(chaos.queues)}), 3 nodes; "
                f"killed in turn: {killed}"
            )
        return report
    finally:
        with contextlib.suppress(TargetError):
            await target.stop()
        if workdir is not None:
            # A failed run keeps its evidence; a failed start already showed the log's tail.
            if report is not None and not report.zero_loss:
                report.notes.append(f"server data dir and log kept in {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
