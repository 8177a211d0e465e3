"""Cluster benchmark (not a test): replicated durable submits with three etcd members on this
machine, side by side with single-node mode in the same run.

Starts one single-node `jq serve` and a three-node cluster (`CLUSTER_MODE=true`, each node with
its own etcd member, all on loopback), then runs wrk against `POST /jobs` (single submits) and
`POST /jobs/batch` (100 jobs a request) of each. In cluster mode a submit is acknowledged once
etcd committed it on a majority (each member fsyncs); in single-node mode once the local WAL
fsynced it. Targets: at least 2,000 replicated single submits/s, far more batched.

    .venv/bin/python bench/cluster_bench.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from jq_tool.chaos.target import free_peer_ports

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_bench import (  # noqa: E402
    BenchError,
    WrkResult,
    free_port,
    parse_seeded_keys,
    run_wrk,
    stop_server_process,
)

BATCH = 100
BATCH_BODY = json.dumps({"jobs": [{"payload": "bench", "max_retries": 3}] * BATCH})


def spawn(data_dir: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    data_dir.mkdir(parents=True, exist_ok=True)
    log = (data_dir.parent / f"{data_dir.name}.log").open("wb")
    command = [sys.executable, "-m", "jq_tool.cli.main", "serve", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--data-dir", str(data_dir)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "JQ_ACCESS_LOG": "false", **env},
        start_new_session=True,
    )
    log.close()
    return process


def wait_ready(data_dir: Path, url: str, timeout_s: float = 60) -> dict[str, str]:
    log_path = data_dir.parent / f"{data_dir.name}.log"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        keys = parse_seeded_keys(log_path.read_text(errors="replace"))
        try:
            if len(keys) == 3 and httpx.get(url + "/health", timeout=1).status_code == 200:
                return keys
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise BenchError(f"{url} not ready:\n{log_path.read_text(errors='replace')[-2000:]}")


def measure(url: str, key: str, seconds: float) -> tuple[WrkResult, WrkResult]:
    single = run_wrk(url + "/jobs", key, seconds, 64, 2, "POST /jobs")
    batch = run_wrk(url + "/jobs/batch", key, seconds, 16, 2, "POST /jobs/batch", BATCH_BODY)
    return single, batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per wrk run instead of 10")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if shutil.which("etcd") is None:
        raise SystemExit("etcd is not installed (apt-get install etcd-server)")
    seconds = 3.0 if args.quick else 10.0
    root = Path(tempfile.mkdtemp(prefix="jq-cluster-bench-"))
    processes: list[subprocess.Popen[bytes]] = []
    report: dict[str, dict[str, float]] = {}
    try:
        port = free_port()
        processes.append(spawn(root / "single", port, {}))
        url = f"http://127.0.0.1:{port}"
        keys = wait_ready(root / "single", url)
        single, batch = measure(url, keys["client"], seconds)
        report["single-node"] = {
            "submits_per_s": single.req_per_s,
            "submit_p99_ms": single.p99_ms,
            "batch_jobs_per_s": batch.req_per_s * BATCH,
        }
        stop_server_process(processes.pop())

        peers = {f"n{i}": f"127.0.0.1:{port}" for i, port in enumerate(free_peer_ports(3), 1)}
        http = {node: free_port() for node in peers}
        common = {
            "CLUSTER_MODE": "true",
            "PEERS": ",".join(f"{n}@{a}" for n, a in peers.items()),
            "HTTP_PEERS": ",".join(f"{n}@http://127.0.0.1:{p}" for n, p in http.items()),
        }
        for node, addr in peers.items():
            env = {**common, "NODE_ID": node, "RAFT_ADDR": addr, "BOOTSTRAP": "true"}
            processes.append(spawn(root / node, http[node], env))
        keys = wait_ready(root / "n1", f"http://127.0.0.1:{http['n1']}")
        for node in ("n2", "n3"):
            wait_ready(root / node, f"http://127.0.0.1:{http[node]}")
        single, batch = measure(f"http://127.0.0.1:{http['n1']}", keys["client"], seconds)
        report["cluster (3 etcd members)"] = {
            "submits_per_s": single.req_per_s,
            "submit_p99_ms": single.p99_ms,
            "batch_jobs_per_s": batch.req_per_s * BATCH,
        }
    finally:
        for process in processes:
            stop_server_process(process)
        shutil.rmtree(root, ignore_errors=True)

    local, cluster = report["single-node"], report["cluster (3 etcd members)"]
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{'mode':<26}{'submits/s':>12}{'p99 ms':>10}{'batch jobs/s':>15}")
    for mode, row in report.items():
        print(
            f"{mode:<26}{row['submits_per_s']:>12,.0f}{row['submit_p99_ms']:>10.1f}"
            f"{row['batch_jobs_per_s']:>15,.0f}"
        )
    print(
        f"cluster/single: submits {cluster['submits_per_s'] / local['submits_per_s']:.2f}, "
        f"batch {cluster['batch_jobs_per_s'] / local['batch_jobs_per_s']:.2f}; "
        f"target >= 2,000 replicated submits/s: "
        f"{'met' if cluster['submits_per_s'] >= 2000 else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
