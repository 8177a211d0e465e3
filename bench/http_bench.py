"""HTTP benchmark (not a test): a real `jq serve` on loopback, measured from outside.

Starts `jq serve` on a fresh temp data dir and a free port, takes the seeded keys from its log,
then in one run against the same server:

1. `wrk` (64 connections, 2 threads) on the no-op route `POST /_noop`: what this server and its
   HTTP stack cost with no auth and no queue work at all;
2. `wrk` on `POST /jobs` with a client key and a small JSON body: durable submits, each answered
   only after its WAL record is fsynced (group commit);
   1 and 2 run as pairs, several rounds, the order alternating; the ratio durable/no-op is the
   median of the pairs' ratios (the machine is shared and noisy);
3. the lease+ack cycle: jobs pre-submitted with `POST /jobs/batch`, then N concurrent workers,
   each an SDK `AsyncClient`, looping `POST /jobs/lease` → `POST /jobs/{id}/ack` until all are
   acked.

It prints req/s and p50/p99 latency of each (the median run), the ratio durable/no-op (target
>= 0.5, p99 of durable submit < 10 ms) and the cycle rate; `--json` prints the same as one JSON
document. The numbers are ratios for one machine: the client shares its CPUs with the server.

    .venv/bin/python bench/http_bench.py            # ~10 s per wrk run
    .venv/bin/python bench/http_bench.py --quick    # ~3 s per wrk run, fewer cycle jobs
    .venv/bin/python bench/http_bench.py --jq dist/jq --json   # the PyInstaller binary
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from jq_tool.sdk import AsyncClient

BENCH_DIR = Path(__file__).resolve().parent
LUA_SCRIPT = BENCH_DIR / "http_post.lua"
SUBMIT_BODY = '{"payload":"bench","max_retries":3}'
CYCLE_QUEUE = "bench-cycle"  # kept apart from the jobs wrk submits to "default"
TARGET_RATIO = 0.5
TARGET_P99_MS = 10.0

_CREATED_KEY = re.compile(r"Created (client|worker|admin) key: ((?:client|worker|admin)_\S+)")
_WRK_RESULT = re.compile(r"^JQ_BENCH_RESULT (\{.*\})$", re.MULTILINE)


class BenchError(RuntimeError):
    """The benchmark could not run (server did not start, wrk missing or failed)."""


@dataclass
class WrkResult:
    route: str
    requests: int
    seconds: float
    req_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # non-2xx answers, socket errors and timeouts together
    server_cpu_pct: float = 0.0  # of one core, over the run: near 100 means server-bound


@dataclass
class CycleResult:
    jobs: int
    workers: int
    seconds: float
    cycles_per_s: float
    p50_ms: float  # one lease + one ack
    p99_ms: float
    submit_jobs_per_s: float  # the pre-submit through POST /jobs/batch
    driver_cpu_pct: float = 0.0  # this Python driver, of one core: near 100 means driver-bound
    server_cpu_pct: float = 0.0


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    keys: dict[str, str]
    log_path: Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def parse_seeded_keys(log: str) -> dict[str, str]:
    """The first client, worker and admin key the server printed when it seeded its store."""
    keys: dict[str, str] = {}
    for kind, key in _CREATED_KEY.findall(log):
        keys.setdefault(kind, key)
    return keys


def stop_servers_on_sigterm() -> None:
    """Make a SIGTERM (`timeout`, `kill`) end the bench through its `finally` blocks, as a
    Ctrl-C does. The servers a bench starts lead their own sessions, so that a Ctrl-C cannot
    reach them mid-run; only those blocks stop them, and Python's default SIGTERM skips them,
    leaving the servers (and a cluster's etcd members) running after the bench is gone."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def start_server(jq: Path, data_dir: Path, log_path: Path, timeout_s: float = 30.0) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "PORT", "WAL_DIR"}}
    env["JQ_ACCESS_LOG"] = "false"  # an access log line per request would bench the logger
    log = log_path.open("wb")
    process = subprocess.Popen(
        [str(jq), "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # a Ctrl-C on the bench must not reach the server mid-run
    )
    log.close()
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"jq serve exited with {process.returncode}:\n{log_path.read_text()}")
        keys = parse_seeded_keys(log_path.read_text(errors="replace"))
        if len(keys) == 3:
            try:
                if httpx.get(f"{base_url}/health", timeout=1.0).status_code == 200:
                    return Server(process, base_url, keys, log_path)
            except httpx.TransportError:
                pass
        time.sleep(0.1)
    stop_server_process(process)
    raise BenchError(
        f"jq serve not healthy with seeded keys in {timeout_s}s:\n{log_path.read_text()}"
    )


def stop_server_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a one-file binary's bootloader forwards it to its Python child), then SIGKILL
    to the whole session so neither the bootloader nor its child outlives the benchmark."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def run_wrk(
    url: str,
    key: str,
    seconds: float,
    connections: int,
    threads: int,
    route: str,
    body: str = SUBMIT_BODY,
) -> WrkResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError("wrk is not installed (apt-get install wrk)")
    env = dict(os.environ, JQ_BENCH_KEY=key, JQ_BENCH_BODY=body)
    command = [
        wrk,
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={max(1, round(seconds))}s",
        "--timeout=5s",
        f"--script={LUA_SCRIPT}",
        url,
    ]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds + 60)
    match = _WRK_RESULT.search(run.stdout)
    if run.returncode != 0 or match is None:
        raise BenchError(f"wrk failed ({run.returncode}):\n{run.stdout}\n{run.stderr}")
    raw = json.loads(match.group(1))
    elapsed = raw["duration_us"] / 1e6
    errors = sum(
        raw[name]
        for name in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return WrkResult(
        route=route,
        requests=raw["requests"],
        seconds=round(elapsed, 2),
        req_per_s=round(raw["requests"] / elapsed, 1),
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        errors=errors,
    )


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index]


def session_cpu_seconds(session_id: int) -> float:
    """CPU time (user + system) of every live process in a session: the server, and for the
    one-file binary its bootloader and Python child together."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        if int(fields[3]) == session_id:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


async def presubmit(client: httpx.AsyncClient, client_key: str, jobs: int) -> float:
    """Submit `jobs` jobs to the cycle queue in batches of 1000; returns jobs/s."""
    headers = {"Authorization": f"Bearer {client_key}"}
    started = time.perf_counter()
    for start in range(0, jobs, 1000):
        batch = [
            {"payload": f"cycle-{i}", "queue": CYCLE_QUEUE}
            for i in range(start, min(jobs, start + 1000))
        ]
        response = await client.post("/jobs/batch", json={"jobs": batch}, headers=headers)
        if response.status_code != 201:
            raise BenchError(f"POST /jobs/batch: {response.status_code} {response.text}")
        failed = [r for r in response.json()["results"] if "error" in r]
        if failed:
            raise BenchError(f"POST /jobs/batch rejected entries: {failed[:3]}")
    return jobs / (time.perf_counter() - started)


async def cycle_rate(base_url: str, keys: dict[str, str], jobs: int, workers: int) -> CycleResult:
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as submitter:
        submit_rate = await presubmit(submitter, keys["client"], jobs)
    latencies: list[float] = []
    acked = 0

    async def worker() -> None:
        nonlocal acked
        # One SDK client (its own keep-alive connection) per worker, like separate worker
        # processes; the SDK's lean transport keeps this driver from being the bottleneck
        # sooner than it must (it shares the machine's two CPUs with the server).
        async with AsyncClient(base_url, keys["worker"], timeout=30.0, retries=0) as client:
            while acked < jobs:
                started = time.perf_counter()
                leased = await client.lease(queue=CYCLE_QUEUE)
                if not leased:
                    return  # the queue is drained: every job is leased by someone
                job = leased[0]
                await client.ack(job.job_id, "ok", lease_id=job.lease_id)
                latencies.append(time.perf_counter() - started)
                acked += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    elapsed = time.perf_counter() - started
    if acked != jobs:
        raise BenchError(f"only {acked} of {jobs} pre-submitted jobs were leased and acked")
    latencies.sort()
    return CycleResult(
        jobs=jobs,
        workers=workers,
        seconds=round(elapsed, 2),
        cycles_per_s=round(acked / elapsed, 1),
        p50_ms=round(percentile(latencies, 0.50) * 1000, 2),
        p99_ms=round(percentile(latencies, 0.99) * 1000, 2),
        submit_jobs_per_s=round(submit_rate, 1),
    )


def print_table(report: dict[str, object]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"jq HTTP benchmark ({report['binary']})")
    for column in ("measure", "req/s", "p50 ms", "p99 ms", "errors", "requests", "server CPU"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for run in report["wrk"]:  # type: ignore[attr-defined]
        table.add_row(
            f"POST {run['route']}",
            f"{run['req_per_s']:,.0f}",
            f"{run['p50_ms']:.2f}",
            f"{run['p99_ms']:.2f}",
            str(run["errors"]),
            f"{run['requests']:,}",
            f"{run['server_cpu_pct']:.0f}%",
        )
    cycle = report.get("cycle")
    if isinstance(cycle, dict):
        table.add_row(
            f"lease+ack cycle ({cycle['workers']} workers)",
            f"{cycle['cycles_per_s']:,.0f}",
            f"{cycle['p50_ms']:.2f}",
            f"{cycle['p99_ms']:.2f}",
            "0",
            f"{cycle['jobs']:,}",
            f"{cycle['server_cpu_pct']:.0f}%",
        )
    console = Console()
    console.print(table)
    ratio = report.get("ratio_durable_to_noop")
    if isinstance(ratio, float):
        verdict = "meets" if report["meets_targets"] else "MISSES"
        per_round = ", ".join(f"{r:.2f}" for r in report["ratios_per_round"])  # type: ignore[attr-defined]
        console.print(
            f"durable/no-op = {ratio:.2f}, the median of {report['rounds']} rounds ({per_round}); "
            f"target >= {TARGET_RATIO}. Durable p99 {report['p99_durable_ms_median']:.2f} ms "
            f"(median; worst {report['p99_durable_ms_worst']:.2f} ms), target < "
            f"{TARGET_P99_MS} ms: {verdict} the targets"
        )
    if isinstance(cycle, dict):
        console.print(
            f"pre-submit via /jobs/batch: {cycle['submit_jobs_per_s']:,.0f} jobs/s; "
            f"cycle driver CPU {cycle['driver_cpu_pct']:.0f}% of a core"
        )
    console.print(
        f"load average at start: {report['load_avg_1m_at_start']} on {os.cpu_count()} CPUs"
    )


def median_run(runs: list[WrkResult]) -> WrkResult:
    """The run with the median rate (the lower middle one of an even count)."""
    return sorted(runs, key=lambda run: run.req_per_s)[(len(runs) - 1) // 2]


def run_bench(args: argparse.Namespace) -> dict[str, object]:
    seconds = 3.0 if args.quick else args.duration
    rounds = args.rounds or (2 if args.quick else 3)
    cycle_jobs = args.cycle_jobs or (2000 if args.quick else 10000)
    load_at_start = round(os.getloadavg()[0], 2)  # the machine may be shared: say how busy it was
    with tempfile.TemporaryDirectory(prefix="jq-http-bench-") as tmp:
        server = start_server(Path(args.jq), Path(tmp) / "data", Path(tmp) / "server.log")
        try:
            client_key = server.keys["client"]
            sid = server.process.pid  # start_new_session: the server leads its own session

            def wrk(route: str) -> WrkResult:
                cpu = session_cpu_seconds(sid)
                result = run_wrk(
                    server.base_url + route,
                    client_key,
                    seconds,
                    args.connections,
                    args.threads,
                    route,
                )
                used = session_cpu_seconds(sid) - cpu
                result.server_cpu_pct = round(100 * used / result.seconds, 1)
                return result

            # Rounds of one no-op run and one submit run, back to back, the order alternating:
            # the ratio of each pair is taken under the same machine load, and the median of
            # the pairs is what a noisy neighbour during one run cannot move much.
            noops: list[WrkResult] = []
            submits: list[WrkResult] = []
            for round_number in range(rounds):
                noop_first = round_number % 2 == 0
                for route in ("/_noop", "/jobs") if noop_first else ("/jobs", "/_noop"):
                    (noops if route == "/_noop" else submits).append(wrk(route))
            cpu, driver_cpu = session_cpu_seconds(sid), time.process_time()
            cycle = asyncio.run(cycle_rate(server.base_url, server.keys, cycle_jobs, args.workers))
            # The pre-submit is inside these CPU totals; it is a few percent of the cycle run.
            cycle.server_cpu_pct = round(100 * (session_cpu_seconds(sid) - cpu) / cycle.seconds, 1)
            cycle.driver_cpu_pct = round(
                100 * (time.process_time() - driver_cpu) / cycle.seconds, 1
            )
        finally:
            stop_server_process(server.process)
    # A no-op route that is missing (404) or refused would make the ratio meaningless.
    valid = all(run.errors == 0 for run in noops + submits) and all(n.req_per_s for n in noops)
    pairs = zip(noops, submits, strict=True)
    ratios = (
        [round(submit.req_per_s / noop.req_per_s, 3) for noop, submit in pairs] if valid else []
    )
    ratio = statistics.median(ratios) if ratios else None
    p99_ms = statistics.median(run.p99_ms for run in submits)
    return {
        "binary": str(args.jq),
        "load_avg_1m_at_start": load_at_start,
        "connections": args.connections,
        "threads": args.threads,
        "seconds_per_wrk_run": seconds,
        "rounds": rounds,
        "wrk": [asdict(median_run(noops)), asdict(median_run(submits))],
        "wrk_runs": [asdict(run) for run in noops + submits],
        "ratios_per_round": ratios,
        "cycle": asdict(cycle),
        "ratio_durable_to_noop": ratio,
        "p99_durable_ms_median": p99_ms,
        "p99_durable_ms_worst": max(run.p99_ms for run in submits),
        "meets_targets": ratio is not None and ratio >= TARGET_RATIO and p99_ms < TARGET_P99_MS,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per wrk run, 2000 cycle jobs")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument(
        "--rounds", type=int, default=0, help="no-op + submit pairs (default 3, --quick 2)"
    )
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=16, help="concurrent lease+ack workers")
    parser.add_argument("--cycle-jobs", type=int, default=0, help="jobs for the cycle run")
    parser.add_argument(
        "--jq",
        default=str(Path(sys.executable).parent / "jq"),
        help="the jq executable to serve with (default: this venv's; or dist/jq)",
    )
    args = parser.parse_args(argv)
    stop_servers_on_sigterm()
    if not Path(args.jq).is_file():
        parser.error(f"--jq {args.jq}: no such executable")
    if args.rounds < 0:
        parser.error("--rounds must be positive")
    if args.connections < 1 or args.threads < 1 or args.workers < 1 or args.duration <= 0:
        parser.error("--connections, --threads, --workers and --duration must be positive")
    try:
        report = run_bench(args)
    except BenchError as exc:
        print(f"http_bench: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
