"""The soak benchmark of issue 21 (a benchmark, not a test): a steady paced load on one real
`jq serve` for a long time, a `kill -9` and restart every few minutes, and what the server holds
over time: RSS, snapshot size, WAL bytes on disk, history store size, restart time and p99
submit latency. At the end it checks that no acknowledged job was lost (every job whose ack was
answered ACKED answers GET /jobs/{id} as ACKED, from memory or the history store) and that the
jobs of the first minute are still answered.

    python -m bench.soak                          # 30 minutes, kill -9 every 5
    python -m bench.soak --minutes 10 --kill-every 2 --out docs/soak
    python -m bench.soak --rss-per-job            # RSS per finished job, unbounded vs bounded

The load: `--rate` submits a second (each with an idempotency key, retried after a failure),
`--workers` workers leasing up to 20 jobs and settling them in one POST /jobs/ack: 5% fail (a
retry with backoff; some end DEAD), 2% are held for a while first. Writes `<out>.md` (the table)
, `<out>.png` (the chart) and `<out>.json` (every sample).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
KEY_LINE = re.compile(r"Created (client|worker|admin) key: (\S+) \(owner:")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def jq_command() -> list[str]:
    binary = Path(sys.executable).parent / "jq"
    return [str(binary)] if binary.exists() else [sys.executable, "-m", "jq_tool.cli.main"]


class Server:
    """One `jq serve` process on a data dir, killed with SIGKILL and started again."""

    def __init__(self, data_dir: Path, args: list[str]) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.log_path = data_dir.parent / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.keys: dict[str, str] = {}

    def start(self) -> float:
        """Start and wait for /health; returns the seconds it took."""
        # As installed: bytecode cached (a shell or CI may say PYTHONDONTWRITEBYTECODE, and
        # every restart would compile jq's modules again: restart times measured that).
        unwanted = {"REDIS_URL", "PORT", "WAL_DIR", "PYTHONDONTWRITEBYTECODE"}
        env = {k: v for k, v in os.environ.items() if k not in unwanted}
        started = time.perf_counter()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*jq_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--data-dir", str(self.data_dir), *self.args],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jq serve exited; see {self.log_path}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
        took = time.perf_counter() - started
        if not self.keys:
            self.keys = dict(KEY_LINE.findall(self.log_path.read_text(errors="replace")))
        return took

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def rss_bytes(self) -> int:
        assert self.proc is not None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def disk(self) -> dict[str, int]:
        sizes = {"snapshot_bytes": 0, "wal_bytes": 0, "history_bytes": 0}
        for entry in self.data_dir.iterdir():
            try:
                size = entry.stat().st_size
            except OSError:
                continue
            if entry.suffix == ".snap":
                sizes["snapshot_bytes"] += size
            elif entry.suffix == ".wal":
                sizes["wal_bytes"] += size
            elif entry.name.startswith("history.sqlite3"):
                sizes["history_bytes"] += size
        return sizes


@dataclass
class Sample:
    t_s: float
    rss_bytes: int
    snapshot_bytes: int
    wal_bytes: int
    history_bytes: int
    submit_p99_ms: float
    submits: int  # acknowledged submits so far
    acked: int  # acknowledged acks so far
    jobs_held: int
    finished_in_memory: int
    finished_on_disk: int


@dataclass
class Load:
    """What the load generator saw; shared by its tasks (one event loop)."""

    acked: dict[str, float] = field(default_factory=dict)  # job id -> when its ack answered
    first_minute: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # submit seconds since the last sample
    submits: int = 0
    errors: int = 0
    running: bool = True


async def submitter(
    url: str, key: str, rate: float, load: Load, started: float, lanes: int = 8
) -> None:
    """`lanes` coroutines, each paced at rate/lanes submits a second: a submit that is late
    (the server was down) makes the next ones of its lane late too, as a real client's would,
    rather than piling up tasks in this process."""
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=lanes, max_keepalive_connections=lanes)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10, limits=limits) as http:

        async def lane(number: int) -> None:
            interval = lanes / rate
            next_at = time.monotonic() + number * interval / lanes
            serial = 0
            while load.running:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at = max(next_at + interval, time.monotonic() - 1.0)
                serial += 1
                idem = f"soak-{number}-{serial}"
                payload = f"{idem:>20}-" + "x" * 80  # ~100 bytes
                while load.running:  # retried with the same key until the server answers
                    begun = time.perf_counter()
                    try:
                        answer = await http.post(
                            "/jobs", json={"payload": payload, "max_retries": 2},
                            headers={"Idempotency-Key": idem},
                        )  # fmt: skip
                    except httpx.HTTPError:
                        answer = None
                    if answer is not None and answer.status_code in (200, 201):
                        load.latencies.append(time.perf_counter() - begun)
                        load.submits += 1
                        if time.monotonic() - started < 60:
                            load.first_minute.append(answer.json()["job_id"])
                        break
                    load.errors += 1
                    await asyncio.sleep(0.2)

        await asyncio.gather(*(lane(i) for i in range(lanes)))


async def worker(url: str, key: str, load: Load, seed: int) -> None:
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http:
        while load.running:
            try:
                answer = await http.post("/jobs/lease", json={"max_jobs": 20, "wait_ms": 1000})
            except httpx.HTTPError:
                await asyncio.sleep(0.2)
                continue
            if answer.status_code != 200:
                await asyncio.sleep(0.05 if answer.status_code == 404 else 0.2)
                continue
            jobs = answer.json()
            acks = []
            for job in jobs:
                roll = rng.random()
                entry = {"job_id": job["job_id"], "lease_id": job["lease_id"]}
                if roll < 0.05:
                    entry["result_error"] = "soak: a failed attempt"
                else:
                    entry["result"] = f"done {job['job_id'][:8]} " + "r" * 40  # ~50 bytes
                acks.append(entry)
            if rng.random() < 0.02:
                await asyncio.sleep(0.5)  # a slow job
            try:
                settled = await http.post("/jobs/ack", json={"acks": acks})
            except httpx.HTTPError:
                continue  # the leases run out and the jobs come back
            if settled.status_code != 200:
                continue
            now = time.monotonic()
            for result in settled.json()["results"]:
                if result.get("state") == "ACKED":
                    load.acked[result["job_id"]] = now


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def soak(args: argparse.Namespace, root: Path) -> dict[str, object]:
    server_args = ["--lease-duration", "10s", "--lease-check-interval", "1s", *args.server_arg]
    server = Server(root / "data", server_args)
    restarts = [server.start()]
    load = Load()
    started = time.monotonic()
    url, keys = server.url, server.keys
    tasks = [asyncio.create_task(submitter(url, keys["client"], args.rate, load, started))]
    tasks += [
        asyncio.create_task(worker(url, keys["worker"], load, i)) for i in range(args.workers)
    ]
    samples: list[Sample] = []
    admin = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {keys['admin']}"})
    end = started + args.minutes * 60
    next_kill = started + args.kill_every * 60
    try:
        while time.monotonic() < end:
            await asyncio.sleep(args.sample_every)
            now = time.monotonic()
            if now >= next_kill and now < end - 30:
                server.kill9()
                restarts.append(await asyncio.to_thread(server.start))
                next_kill += args.kill_every * 60
                print(f"  {now - started:7.0f}s kill -9, restarted in {restarts[-1]:.2f}s",
                      flush=True)  # fmt: skip
            try:
                stats = (await admin.get("/stats", timeout=5)).json()
            except httpx.HTTPError:
                continue
            latencies, load.latencies = load.latencies, []
            sample = Sample(
                t_s=round(now - started, 1),
                rss_bytes=server.rss_bytes(),
                **server.disk(),
                submit_p99_ms=round(percentile(latencies, 0.99) * 1000, 2),
                submits=load.submits,
                acked=len(load.acked),
                jobs_held=stats["total"],
                finished_in_memory=stats["held"]["finished_in_memory"],
                finished_on_disk=stats["held"]["finished_on_disk"],
            )
            samples.append(sample)
            # Every sample on disk as it comes: a run cut short still shows what it saw.
            Path(args.out).with_suffix(".partial.json").write_text(
                json.dumps([asdict(s) for s in samples] + [{"restart_s": restarts}])
            )
            print(f"  {sample.t_s:7.0f}s rss {sample.rss_bytes >> 20} MiB, held {sample.jobs_held}"
                  f", on disk {sample.finished_on_disk}, acked {sample.acked}, "
                  f"p99 {sample.submit_p99_ms} ms", flush=True)  # fmt: skip
    finally:
        load.running = False
        await asyncio.gather(*tasks, return_exceptions=True)

    # Every acknowledged job must answer ACKED, from memory or the history store.
    lost: list[str] = []
    missing_first: list[str] = []
    semaphore = asyncio.Semaphore(32)
    answered: dict[str, object] = {}  # what a lost job answered instead

    async def check(job_id: str, wanted: set[str], into: list[str]) -> None:
        async with semaphore:
            for _ in range(5):
                try:
                    answer = await admin.get(f"/jobs/{job_id}", timeout=10)
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.5)
            else:
                into.append(job_id)
                return
            if answer.status_code != 200 or answer.json()["state"] not in wanted:
                into.append(job_id)
                answered[job_id] = (
                    answer.json()["state"] if answer.status_code == 200 else answer.status_code
                )

    await asyncio.gather(*(check(j, {"ACKED"}, lost) for j in load.acked))
    if lost:  # when each was acked, to see what they have in common
        Path(args.out).with_suffix(".lost.json").write_text(
            json.dumps({j: [round(load.acked[j] - started, 1), answered.get(j)] for j in lost})
        )
    finished = {"ACKED", "DEAD", "RETRY", "READY", "RUNNING"}  # answered at all
    await asyncio.gather(*(check(j, finished, missing_first) for j in load.first_minute))
    await admin.aclose()
    server.stop()
    return {
        "minutes": args.minutes,
        "kill_every_min": args.kill_every,
        "rate": args.rate,
        "server_args": server_args,
        "samples": [asdict(s) for s in samples],
        "restart_s": restarts,
        "acked": len(load.acked),
        "acked_lost": len(lost),
        "first_minute_jobs": len(load.first_minute),
        "first_minute_unanswered": len(missing_first),
        "submit_errors_retried": load.errors,
    }


def report(result: dict[str, object], out: Path) -> None:
    samples = [Sample(**s) for s in result["samples"]]  # type: ignore[attr-defined]
    restarts: list[float] = result["restart_s"]  # type: ignore[assignment]
    lines = [
        f"Soak: {result['minutes']} minutes at {result['rate']} submits/s, kill -9 every "
        f"{result['kill_every_min']} min (server args: {' '.join(result['server_args'])})",  # type: ignore[arg-type]
        "",
        "| minute | RSS MiB | snapshot MiB | WAL MiB | history MiB | jobs held | finished "
        "on disk | acked so far | p99 submit ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_minute: dict[int, Sample] = {}
    for s in samples:
        by_minute[int(s.t_s // 60)] = s  # the last sample of each minute
    mib = 1 << 20
    for minute, s in sorted(by_minute.items()):
        lines.append(
            f"| {minute + 1} | {s.rss_bytes / mib:.0f} | {s.snapshot_bytes / mib:.1f} | "
            f"{s.wal_bytes / mib:.1f} | {s.history_bytes / mib:.1f} | {s.jobs_held:,} | "
            f"{s.finished_on_disk:,} | {s.acked:,} | {s.submit_p99_ms:.1f} |"
        )
    lines += [
        "",
        f"Restart times (s): first start {restarts[0]:.2f}; after each kill -9: "
        + ", ".join(f"{t:.2f}" for t in restarts[1:]),
        f"Acknowledged jobs: {result['acked']:,}; lost: {result['acked_lost']}. Jobs submitted "
        f"in the first minute: {result['first_minute_jobs']:,}; not answered at the end: "
        f"{result['first_minute_unanswered']}.",
    ]
    after_five = [s.rss_bytes for s in samples if s.t_s >= 300]
    if after_five:
        lines.append(
            f"RSS after the fifth minute: {min(after_five) / mib:.0f}-{max(after_five) / mib:.0f}"
            f" MiB (max/min {max(after_five) / max(1, min(after_five)):.2f})."
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t_s / 60 for s in samples]
    fig, axes = plt.subplots(3, 2, figsize=(11, 9), sharex=True)
    series = [
        ("RSS (MiB)", [s.rss_bytes / mib for s in samples]),
        ("snapshot (MiB)", [s.snapshot_bytes / mib for s in samples]),
        ("WAL on disk (MiB)", [s.wal_bytes / mib for s in samples]),
        ("history store (MiB)", [s.history_bytes / mib for s in samples]),
        ("p99 submit latency (ms)", [s.submit_p99_ms for s in samples]),
        ("jobs held in memory", [s.jobs_held for s in samples]),
    ]
    for ax, (title, values) in zip(axes.flat, series, strict=True):
        ax.plot(t, values)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    kills = [result["kill_every_min"] * (i + 1) for i in range(len(restarts) - 1)]  # type: ignore[operator]
    for ax in axes.flat:
        for k in kills:
            ax.axvline(k, color="red", alpha=0.3, linestyle="--")
    for ax in axes[-1]:
        ax.set_xlabel("minutes (red: kill -9)")
    fig.suptitle(
        f"jq soak: {result['minutes']} min at {result['rate']} submits/s; restarts "
        + ", ".join(f"{r:.2f}s" for r in restarts[1:])
    )
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=80)


async def rss_per_job(jobs: int, root: Path, bounded_args: list[str]) -> dict[str, float]:
    """RSS growth per job processed (submitted, leased, acked with a result), with the
    finished bounds off (as before issue 21) and on."""
    unbounded = ["--max-finished", str(10**9), "--max-finished-bytes", "1024GiB",
                 "--max-idempotency-keys", str(10**9)]  # fmt: skip
    out: dict[str, float] = {}
    for name, extra in (("unbounded", unbounded), ("bounded", bounded_args)):
        server = Server(root / name, ["--lease-check-interval", "200ms", *extra])
        server.start()
        headers = {"Authorization": f"Bearer {server.keys['client']}"}
        worker_headers = {"Authorization": f"Bearer {server.keys['worker']}"}
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:

            async def cycle(
                count: int, headers: dict[str, str] = headers,
                worker_headers: dict[str, str] = worker_headers, http: httpx.AsyncClient = http,
            ) -> None:  # fmt: skip
                body = {"jobs": [{"payload": "x" * 100} for _ in range(count)]}
                await http.post("/jobs/batch", json=body, headers=headers)
                leased = await http.post("/jobs/lease", json={"max_jobs": 100},
                                         headers=worker_headers)  # fmt: skip
                acks = [{"job_id": j["job_id"], "lease_id": j["lease_id"], "result": "r" * 50}
                        for j in leased.json()]  # fmt: skip
                await http.post("/jobs/ack", json={"acks": acks}, headers=worker_headers)

            for _ in range(20):
                await cycle(100)  # warm up
            await asyncio.sleep(1.5)
            before = server.rss_bytes()
            for _ in range(jobs // 100):
                await cycle(100)
            await asyncio.sleep(1.5)  # a ticker round or more: the bounds are applied
            after = server.rss_bytes()
        server.stop()
        out[f"{name}_bytes_per_job"] = round((after - before) / jobs, 1)
    out["jobs"] = jobs
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--kill-every", type=float, default=5, help="minutes between kill -9s")
    parser.add_argument("--rate", type=float, default=100, help="submits a second")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sample-every", type=float, default=5, help="seconds")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="to jq serve (repeatable): --server-arg=--max-dead=9")  # fmt: skip
    parser.add_argument("--out", default="soak", help="<out>.md, <out>.png, <out>.json")
    parser.add_argument("--dir", default=None, help="where the data dir goes (a temp dir)")
    parser.add_argument("--rss-per-job", type=int, nargs="?", const=200_000, default=0,
                        help="RSS per job processed, bounds off and on, then exit")  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jq-soak-", dir=args.dir) as tmp:
        if args.rss_per_job:
            bounded = ["--max-finished", "20000"]
            print(json.dumps(asyncio.run(rss_per_job(args.rss_per_job, Path(tmp), bounded))))
            return 0
        try:
            result = asyncio.run(soak(args, Path(tmp)))
        finally:  # the server's log outlives the temp dir, for a look at what went wrong
            log = Path(tmp) / "server.log"
            if log.exists():
                Path(args.out).with_suffix(".server.log").write_bytes(log.read_bytes())
    report(result, Path(args.out))
    ok = result["acked_lost"] == 0 and result["first_minute_unanswered"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
