"""jq itself, measured the way its peers are: a real `jq serve` on loopback driven from outside.

In one server run: wrk on the no-op route and on POST /jobs (64 connections), wrk on
POST /jobs/batch with 100 jobs per request, submit latency at about half of the peak rate (wrk
paced by a per-connection delay, see jq_paced.lua), submits from one SDK client thread, and
lease+ack cycles from 8 SDK client threads. Then, each in its own processes: one SDK worker
process end to end (bench/worker_bench.py), the engine's restart time and RSS per queued job
(bench/core_bench.py), the disk's own fdatasync rate (bench/wal_bench.py), and a kill -9 in
the middle of a submit load, after which every acknowledged submit must be found on restart.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import http_bench
from bench.peers import PeerRun, Settings, child_env, free_port, threaded_rate, wait_until
from bench.report import Figure, Measurement, System

REPO = Path(__file__).resolve().parents[2]
POST_SCRIPT = REPO / "bench" / "http_post.lua"
PACED_SCRIPT = Path(__file__).resolve().parent / "jq_paced.lua"
BATCH = 100
SUBMIT_CONNECTIONS = 64
BATCH_CONNECTIONS = 16
NOOP = "noop"  # the measurement key of POST /_noop
CYCLE_THREADS = 8  # as many as the peers' client threads
CYCLE_QUEUE = "bench-cycle"
PACED_DELAY_MS = 10  # wrk's delay() has millisecond steps: pace with few, long gaps
DURABILITY = (
    "WAL group commit: a submit is answered only after its record is fdatasynced "
    "(concurrent submits share one fdatasync)"
)
_RESULT = re.compile(r"^JQ_BENCH_RESULT (\{.*\})$", re.MULTILINE)
_WORKER_RATE = re.compile(r"= ([\d,]+) jobs/s \(incl\. process start\)")


@dataclass
class JqRun:
    run: PeerRun
    figures: list[Figure]
    sections: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Wrk:
    requests: int
    ok: int  # answered 2xx/3xx
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0


def jq_executable() -> Path:
    return Path(sys.executable).parent / "jq"


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return f"jq-tool {dist_version('jq-tool')}"
    except PackageNotFoundError:
        return "jq-tool (source tree)"


def wrk(
    url: str,
    key: str,
    body: str,
    seconds: float,
    connections: int,
    script: Path = POST_SCRIPT,
    extra_env: dict[str, str] | None = None,
) -> Wrk:
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    # The key goes through the environment, never argv, so it does not show in `ps`.
    env = dict(os.environ, JQ_BENCH_KEY=key, JQ_BENCH_BODY=body, **(extra_env or {}))
    command = [
        binary,
        f"--threads={min(2, connections)}",
        f"--connections={connections}",
        f"--duration={max(1, round(seconds))}s",
        "--timeout=5s",
        f"--script={script}",
        url,
    ]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds + 60)
    match = _RESULT.search(run.stdout)
    if run.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({run.returncode}): {run.stderr.strip()[-200:]}")
    raw = json.loads(match.group(1))
    socket_errors = sum(
        raw[name] for name in ("connect_errors", "read_errors", "write_errors", "timeouts")
    )
    return Wrk(
        requests=raw["requests"],
        ok=raw["requests"] - raw["status_errors"],
        seconds=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        errors=socket_errors + raw["status_errors"],
    )


def batch_body() -> str:
    return json.dumps({"jobs": [{"payload": f"bench-{i}", "max_retries": 3} for i in range(BATCH)]})


def paced_connections(target_rate: float) -> int:
    """Connections that, each waiting PACED_DELAY_MS between requests, offer ~target_rate."""
    return max(1, round(target_rate * PACED_DELAY_MS / 1000))


def measure(settings: Settings, extras: bool = True) -> JqRun:
    """The comparison rows, and with `extras` the jq-only figures (restart, RSS, disk, kill -9)
    that need not be repeated in every round."""
    system = System("jq", version(), DURABILITY)
    measurements: list[Measurement] = []
    figures: list[Figure] = []
    sections: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="jq-bench-", dir="/var/tmp") as tmp:
        root = Path(tmp)
        try:
            server_measures(settings, root, measurements, figures)
        except Exception as exc:  # the rows say what broke; the other parts still run
            for key in ("submit_single", "submit_one", "submit_batch", "cycle", "cycle_next"):
                if not any(m.measure == key for m in measurements):
                    note = f"{type(exc).__name__}: {exc}"[:160]
                    measurements.append(Measurement("jq", key, None, note=note))
        measurements.append(worker_measure(settings))
        if extras:
            figures += core_figures(settings)
            figures += restart_figures(settings)
            figures += cluster_figures(settings)
            figures.append(disk_figure(root, settings))
            figures.append(kill_figure(settings, root / "kill"))
            sections.append(latency_section(settings))
    return JqRun(PeerRun(system, measurements), figures, sections)


def server_measures(
    settings: Settings, root: Path, measurements: list[Measurement], figures: list[Figure]
) -> None:
    server = http_bench.start_server(jq_executable(), root / "data", root / "server.log")
    seconds = settings.seconds
    try:
        key = server.keys["client"]
        noop = wrk(f"{server.base_url}/_noop", key, http_bench.SUBMIT_BODY, seconds, 64)
        single = wrk(f"{server.base_url}/jobs", key, http_bench.SUBMIT_BODY, seconds, 64)
        measurements.append(
            Measurement(
                "jq",
                "submit_single",
                single.rate,
                f"wrk, {SUBMIT_CONNECTIONS} connections, POST /jobs",
                note=f"{single.errors} errors" if single.errors else "",
            )
        )
        # Not a comparison row: the baseline of jq's own HTTP stack, for durable/no-op.
        noop_rate = noop.rate if not noop.errors else None
        note = f"{noop.errors} errors" if noop.errors else ""
        measurements.append(Measurement("jq", NOOP, noop_rate, "wrk, 64 connections", note))
        figures.append(
            Figure(
                "submit latency at peak (wrk, 64 connections), p99",
                single.p99_ms,
                "ms",
                "< 10 ms",
                single.p99_ms < 10,
                note=f"p50 {single.p50_ms:.2f} ms; wrk corrects for coordinated omission",
            )
        )
        batch = wrk(f"{server.base_url}/jobs/batch", key, batch_body(), seconds, BATCH_CONNECTIONS)
        batch_rate = batch.rate * BATCH
        measurements.append(
            Measurement(
                "jq",
                "submit_batch",
                batch_rate,
                f"wrk, {BATCH_CONNECTIONS} connections, POST /jobs/batch of {BATCH}",
                note=f"{batch.errors} errors" if batch.errors else "",
            )
        )
        figures.append(paced_figure(server.base_url, key, single.rate, seconds))
        measurements.append(one_client_measure(server.base_url, key, seconds))
        jobs = 3000 if settings.quick else 30_000
        rate = cycle_rate(server.base_url, server.keys, jobs, seconds)
        measurements.append(
            Measurement(
                "jq",
                "cycle",
                rate,
                f"{CYCLE_THREADS} threads, SDK Client.lease() (1 job) + Client.ack()",
            )
        )
        rate = cycle_rate(server.base_url, server.keys, jobs, seconds, lease_next=True)
        measurements.append(
            Measurement(
                "jq",
                "cycle_next",
                rate,
                f"{CYCLE_THREADS} threads, SDK Client.ack_many([one job], lease_next=1): "
                "one request per cycle",
            )
        )
    finally:
        http_bench.stop_server_process(server.process)


def one_client_measure(base_url: str, key: str, seconds: float) -> Measurement:
    from jq_tool.sdk import Client

    def open_client() -> tuple[Callable[[], int], Callable[[], None]]:
        client = Client(base_url, key, timeout=30)

        def submit() -> int:
            client.submit("bench")
            return 1

        return submit, client.close

    rate = threaded_rate(open_client, 1, seconds)
    return Measurement("jq", "submit_one", rate, "1 client thread, SDK Client.submit()")


def cycle_rate(
    base_url: str, keys: dict[str, str], jobs: int, seconds: float, *, lease_next: bool = False
) -> float:
    """Lease+ack cycles/s of CYCLE_THREADS threads, each with its own SDK client (like the
    peers' 8 greenstalk threads), for up to `seconds` or `jobs` cycles. Two requests per cycle
    (lease, ack), or with `lease_next` one: the ack of each job leases the next."""
    from jq_tool.sdk import Client, LeasedJob, Settlement

    queue = f"{CYCLE_QUEUE}-next" if lease_next else CYCLE_QUEUE
    with Client(base_url, keys["client"], timeout=60) as client:
        for start in range(0, jobs, 1000):
            count = min(1000, jobs - start)
            client.submit_many([{"payload": "cycle", "queue": queue}] * count)

    def open_client() -> tuple[Callable[[], int], Callable[[], None]]:
        worker = Client(base_url, keys["worker"], timeout=30)
        held: list[LeasedJob] = []

        def cycle() -> int:
            leased = worker.lease(queue=queue)
            if not leased:
                return 0  # drained
            worker.ack(leased[0].job_id, "ok", lease_id=leased[0].lease_id)
            return 1

        def cycle_next() -> int:
            if not held:
                held.extend(worker.lease(queue=queue))  # the first job of this thread
                if not held:
                    return 0
            job = held.pop()
            answer = worker.ack_many(
                [Settlement(job.job_id, job.lease_id, "ok")], lease_next=1, queue=queue
            )
            held.extend(answer.leased)
            return 1

        return (cycle_next if lease_next else cycle), worker.close

    return threaded_rate(open_client, CYCLE_THREADS, seconds, jobs)


def paced_figure(base_url: str, key: str, peak: float, seconds: float) -> Figure:
    """Latency at about half the peak rate. wrk's offered rate is connections / (delay +
    latency), and the latency is what is being measured: two short probe runs calibrate the
    connection count before the measured run."""
    target = peak / 2
    label = "submit latency at ~50% of peak (paced wrk), p99"
    env = {"JQ_BENCH_DELAY_MS": str(PACED_DELAY_MS)}
    url = f"{base_url}/jobs"
    try:
        connections = paced_connections(target)
        for _ in range(2):  # latency grows with the load, so one correction falls short
            probe = wrk(url, key, http_bench.SUBMIT_BODY, 1.0, connections, PACED_SCRIPT, env)
            if probe.rate > 0:
                connections = min(256, max(1, round(connections * target / probe.rate)))
        paced = wrk(url, key, http_bench.SUBMIT_BODY, seconds, connections, PACED_SCRIPT, env)
    except Exception as exc:
        return Figure(label, None, "ms", note=f"{type(exc).__name__}: {exc}"[:160])
    return Figure(
        label,
        paced.p99_ms,
        "ms",
        "< 10 ms",
        paced.p99_ms < 10,
        note=(
            f"p50 {paced.p50_ms:.2f} ms at {paced.rate:,.0f} submits/s "
            f"({paced.rate / peak:.0%} of the {peak:,.0f}/s peak), {connections} connections "
            f"each waiting {PACED_DELAY_MS} ms between requests; service time per request, "
            "not corrected for coordinated omission"
        ),
    )


def _run_group(command: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run a bench script in its own process group so that, on timeout, the servers and
    workers it started go down with it."""
    process = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=child_env(),
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise RuntimeError(f"{Path(command[1]).name} took over {timeout_s:.0f} s") from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def worker_measure(settings: Settings) -> Measurement:
    jobs = settings.jq_worker_jobs
    try:
        run = _run_group(
            [sys.executable, "bench/worker_bench.py", "--jobs", str(jobs), "--kind", "async",
             "--concurrency", "64"],
            timeout_s=120 if settings.quick else 300,
        )  # fmt: skip
    except RuntimeError as exc:
        return Measurement("jq", "worker", None, note=str(exc))
    match = _WORKER_RATE.search(run.stdout)
    if run.returncode != 0 or match is None:
        note = f"worker_bench exit {run.returncode}: {(run.stderr or run.stdout)[-160:]}"
        return Measurement("jq", "worker", None, note=note)
    return Measurement(
        "jq",
        "worker",
        float(match.group(1).replace(",", "")),
        f"{jobs:,} jobs, one SDK AsyncWorker process (concurrency 64), no-op handler",
    )


def core_figures(settings: Settings) -> list[Figure]:
    jobs = settings.core_jobs
    label_jobs = f"{jobs // 1000:,}k" if jobs < 1_000_000 else f"{jobs / 1e6:g}M"
    restart_label = f"restart with {label_jobs} jobs queued (engine + WAL + snapshot)"
    rss_label = "RSS per queued job beyond its payload"
    command = [sys.executable, "bench/core_bench.py", "--json", "--jobs", str(jobs)]
    if settings.quick:
        command.append("--quick")
    try:
        run = _run_group(command, timeout_s=240 if settings.quick else 900)
        result = json.loads(run.stdout.strip().splitlines()[-1])
    except Exception as exc:
        note = f"core_bench: {type(exc).__name__}: {exc}"[:160]
        return [Figure(restart_label, None, "s", note=note), Figure(rss_label, None, "bytes")]
    restart = float(result["restart_s"])
    rss = float(result["rss_bytes_per_job"])
    figures = [
        Figure(restart_label, restart, "s", "< 10 s", restart < 10),
        Figure(rss_label, rss, "bytes", "< 1,000 bytes", rss < 1000),
    ]
    if "submits_per_s_c256" in result:
        figures.append(
            Figure(
                "engine alone: durable submits/s, 256 submitters (no HTTP)",
                float(result["submits_per_s_c256"]),
                "jobs/s",
            )
        )
    if "lease_ack_per_s_big" in result:
        small = result.get("lease_ack_per_s_1k")
        figures.append(
            Figure(
                f"engine alone: lease+ack/s with {label_jobs} queued (no HTTP)",
                float(result["lease_ack_per_s_big"]),
                "cycles/s",
                note=f"{float(small):,.0f}/s with ~1k queued" if small is not None else "",
            )
        )
    return figures


def restart_figures(settings: Settings) -> list[Figure]:
    """`jq serve` from its start to a healthy /health, on a data dir holding 10k jobs and one
    holding `core_jobs` (1M in a full run), each the median of several starts."""
    figures = []
    for jobs, starts, target in ((10_000, 5, 0.15), (settings.core_jobs, 3, 1.0)):
        label_jobs = f"{jobs // 1000:,}k" if jobs < 1_000_000 else f"{jobs / 1e6:g}M"
        label = f"restart of jq serve to a healthy /health, {label_jobs} jobs queued"
        command = [sys.executable, "bench/restart_bench.py", "--json", "--jobs", str(jobs),
                   "--starts", str(starts)]  # fmt: skip
        try:
            run = _run_group(command, timeout_s=600 if jobs > 100_000 else 180)
            result = json.loads(run.stdout.strip().splitlines()[-1])
        except Exception as exc:
            note = f"restart_bench: {type(exc).__name__}: {exc}"[:160]
            figures.append(Figure(label, None, "s", note=note))
            continue
        value = float(result["median_s"])
        # The targets are for a quiet machine: 10k jobs, and a million (a full run).
        has_target = jobs == 10_000 or jobs == 1_000_000
        figures.append(
            Figure(
                label,
                value,
                "s",
                f"< {target:g} s" if has_target else "",
                value < target if has_target else None,
                note=f"median of {starts} starts (best {float(result['min_s']):.2f} s); "
                "process start, imports, snapshot, key store, listening socket",
            )
        )
    return figures


def cluster_figures(settings: Settings) -> list[Figure]:
    """bench/cluster_bench.py: a 3-node cluster (an etcd member each, all on this machine) and a
    single node, alternating round by round in the same run: replicated single submits against
    the single node's (issue 20), and how soon /health reports a lost majority (issue 22)."""
    ratio_label = "replicated single submits, 3 nodes with 3 etcd members / single node"
    health_label = "cluster /health reports a lost majority (2 of 3 nodes SIGKILLed) after"
    if shutil.which("etcd") is None:
        note = "not measured: etcd is not installed (apt-get install etcd-server)"
        return [Figure(ratio_label, None, "×", note=note), Figure(health_label, None, "s")]
    command = [sys.executable, "bench/cluster_bench.py", "--json"]
    if settings.quick:
        command.append("--quick")
    try:
        run = _run_group(command, timeout_s=900)
        result = json.loads(run.stdout.strip().splitlines()[-1])
    except Exception as exc:
        note = f"cluster_bench: {type(exc).__name__}: {exc}"[:160]
        return [Figure(ratio_label, None, "×", note=note), Figure(health_label, None, "s")]
    ratio = float(result["cluster_over_single_submits"])
    single, cluster = result["single-node"], result["cluster (3 etcd members)"]
    rounds = ", ".join(f"{r:.2f}" for r in result["cluster_over_single_submits_by_round"])
    detected = float(result["health_detects_lost_majority_s"])
    return [
        Figure(
            ratio_label,
            ratio,
            "×",
            ">= 0.6×",
            ratio >= 0.6,
            note=f"median of the rounds' ratios ({rounds}); wrk, 64 connections: "
            f"{cluster['submits_per_s']:,.0f} against {single['submits_per_s']:,.0f} submits/s; "
            f"CPU per submit, every process (nodes, etcd members): "
            f"{cluster['cpu_us_per_submit']:,.0f} against {single['cpu_us_per_submit']:,.0f} µs",
        ),
        Figure(
            health_label,
            detected,
            "s",
            "<= 1 s",
            detected <= 1.0,
            note="nothing written meanwhile: only the health probe can notice",
        ),
    ]


def latency_section(settings: Settings) -> tuple[str, str]:
    title = "Where one submit's time goes"
    command = [sys.executable, "bench/latency_bench.py", "--markdown", "--seconds",
               str(min(5.0, settings.seconds))]  # fmt: skip
    try:
        run = _run_group(command, timeout_s=180)
        if run.returncode != 0 or "| stage |" not in run.stdout:
            raise RuntimeError((run.stderr or run.stdout)[-160:])
        return title, run.stdout.strip()
    except Exception as exc:
        return title, f"Not measured: {type(exc).__name__}: {exc}"[:300]


def disk_figure(root: Path, settings: Settings) -> Figure:
    from bench import wal_bench

    rate = wal_bench.raw_fdatasync_per_second(root / "disk", min(2.0, settings.seconds))
    return Figure(
        "this disk, this run: appending pwrite + fdatasync, one at a time",
        rate,
        "per s",
        note="context for the fsync-bound rows; a preallocated file (beanstalkd's binlog) "
        "syncs faster than an appended one",
    )


def kill_figure(settings: Settings, root: Path) -> Figure:
    """kill -9 the server while wrk submits; on restart every acknowledged job must be there."""
    label = "kill -9 during submit load: acknowledged jobs lost after restart"
    root.mkdir(parents=True, exist_ok=True)
    try:
        server = http_bench.start_server(jq_executable(), root / "data", root / "server.log")
    except Exception as exc:
        return Figure(label, None, "jobs", note=f"{type(exc).__name__}: {exc}"[:160])
    key = server.keys["client"]
    seconds = max(3.0, settings.seconds)
    result: list[Wrk] = []
    errors: list[str] = []

    def load() -> None:
        try:
            url = f"{server.base_url}/jobs"
            result.append(wrk(url, key, http_bench.SUBMIT_BODY, seconds, SUBMIT_CONNECTIONS))
        except Exception as exc:
            errors.append(str(exc))

    import threading

    loader = threading.Thread(target=load)
    loader.start()
    time.sleep(seconds / 2)
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    loader.join(seconds + 90)
    if not result:
        return Figure(label, None, "jobs", note=f"wrk: {errors[:1]}")
    acknowledged = result[0].ok
    port = free_port()
    log = (root / "restart.log").open("wb")
    process = subprocess.Popen(
        [str(jq_executable()), "serve", "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(root / "data")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "PORT", "WAL_DIR"}},
    )  # fmt: skip
    log.close()
    base = f"http://127.0.0.1:{port}"
    try:
        if not wait_until(lambda: _healthy(base), 60, 0.1):
            return Figure(label, None, "jobs", note="the server did not come back after kill -9")
        stats = httpx.get(
            f"{base}/stats", headers={"Authorization": f"Bearer {key}"}, timeout=10
        ).json()
        recovered = int(stats["total"])
    finally:
        http_bench.stop_server_process(process)
    lost = max(0, acknowledged - recovered)
    return Figure(
        label,
        lost,
        "jobs",
        "0",
        lost == 0,
        note=f"{acknowledged:,} submits answered 201 before the kill, {recovered:,} jobs "
        "found after restart (jobs whose answer the kill cut off may be there too)",
    )


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
