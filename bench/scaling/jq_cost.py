"""What one command costs jq itself today, per process: CPU time, fsyncs and disk bytes per
submit, on a single node (LocalEngine, the WAL) and in a 3-node cluster (ClusterEngine, etcd),
measured from outside with wrk on loopback. The scale model (model.py) takes its per-node costs
from here.

    .venv/bin/python -m bench.scaling.jq_cost --quick    # 1 round, 3 s per wrk run (~1.5 min)
    .venv/bin/python -m bench.scaling.jq_cost --out bench/scaling/results/jq_cost.json

Starts one single-node `jq serve` and a 3-node cluster (each node with its own etcd member, as
`bench/cluster_bench.py` does), then in alternating rounds runs wrk (64 connections) against
`POST /_noop` (HTTP alone), `POST /jobs` and `POST /jobs/batch` (100 jobs) of the single node and
of cluster node n1. For every run it reads, from /proc, the CPU time of the node that took the
requests, of the other nodes (they only apply what the watch brings) and of the etcd members,
and etcd's fsync counters from its /metrics. Everything it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.cluster_bench import BATCH, BATCH_BODY, spawn, wait_ready
from bench.http_bench import free_port, run_wrk, stop_server_process
from bench.scaling.clusters import _prometheus_sum, cpu_seconds, disk_write_bytes
from jq_tool.chaos.target import free_peer_ports


def session_processes(session: int) -> dict[int, str]:
    """{pid: command name} of the live processes in a session (a jq node and its etcd)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        if int(fields[3]) == session:
            found[int(stat.parent.name)] = name
    return found


class Node:
    def __init__(self, name: str, process: subprocess.Popen[bytes], url: str, etcd_client: str):
        self.name = name
        self.process = process
        self.url = url
        self.etcd_metrics = f"http://{etcd_client}/metrics" if etcd_client else ""

    def read(self) -> dict[str, float]:
        jq_cpu = etcd_cpu = jq_disk = etcd_disk = 0.0
        for pid, comm in session_processes(self.process.pid).items():
            try:
                cpu, disk = cpu_seconds(pid), disk_write_bytes(pid)
            except OSError:
                continue
            if comm == "etcd":
                etcd_cpu, etcd_disk = etcd_cpu + cpu, etcd_disk + disk
            else:
                jq_cpu, jq_disk = jq_cpu + cpu, jq_disk + disk
        fsyncs = 0.0
        if self.etcd_metrics:
            text = httpx.get(self.etcd_metrics, timeout=5).text
            fsyncs = _prometheus_sum(
                text,
                (
                    "etcd_disk_wal_fsync_duration_seconds_count",
                    "etcd_disk_backend_commit_duration_seconds_count",
                ),
            )
        return {"jq_cpu": jq_cpu, "etcd_cpu": etcd_cpu, "jq_disk": jq_disk,
                "etcd_disk": etcd_disk, "etcd_fsyncs": fsyncs}  # fmt: skip


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after}


def run(nodes: list[Node], key: str, route: str, seconds: float) -> dict[str, float]:
    """wrk on `route` of nodes[0]; costs per job, split by process role."""
    body = BATCH_BODY if route == "/jobs/batch" else '{"payload":"bench","max_retries":3}'
    connections = 16 if route == "/jobs/batch" else 64
    before = [n.read() for n in nodes]
    result = run_wrk(nodes[0].url + route, key, seconds, connections, 2, route, body)
    after = [n.read() for n in nodes]
    spent = [delta(a, b) for a, b in zip(after, before, strict=True)]
    jobs = result.requests * (BATCH if route == "/jobs/batch" else 1)
    others = max(1, len(spent) - 1)
    row = {
        "requests_per_s": result.req_per_s,
        "jobs_per_s": jobs / result.seconds,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": result.errors,
        "entry_jq_cpu_us_per_job": 1e6 * spent[0]["jq_cpu"] / jobs,
        "other_jq_cpu_us_per_job": 1e6 * sum(s["jq_cpu"] for s in spent[1:]) / others / jobs,
        "etcd_cpu_us_per_job": 1e6 * sum(s["etcd_cpu"] for s in spent) / jobs,
        "jq_disk_bytes_per_job": sum(s["jq_disk"] for s in spent) / jobs,
        "etcd_disk_bytes_per_job": sum(s["etcd_disk"] for s in spent) / jobs,
        "etcd_fsyncs_per_job": sum(s["etcd_fsyncs"] for s in spent) / jobs,
        "entry_cores": spent[0]["jq_cpu"] / result.seconds,
    }  # fmt: skip
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round, 3 s per wrk run")
    parser.add_argument("--rounds", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if shutil.which("etcd") is None or shutil.which("wrk") is None:
        raise SystemExit("needs etcd and wrk (apt-get install etcd-server wrk)")
    seconds = 3.0 if args.quick else 5.0
    rounds = args.rounds or (1 if args.quick else 3)
    root = Path(tempfile.mkdtemp(prefix="jq-scaling-cost-", dir="/var/tmp"))
    processes: list[subprocess.Popen[bytes]] = []
    runs: dict[str, list[dict[str, float]]] = {}
    began = time.time()
    try:
        port = free_port()
        processes.append(spawn(root / "single", port, {}))
        single_url = f"http://127.0.0.1:{port}"
        single_key = wait_ready(root / "single", single_url)["client"]
        single = [Node("single", processes[-1], single_url, "")]

        peers = {f"n{i}": f"127.0.0.1:{p}" for i, p in enumerate(free_peer_ports(3), 1)}
        http = {node: free_port() for node in peers}
        common = {
            "CLUSTER_MODE": "true",
            "PEERS": ",".join(f"{n}@{a}" for n, a in peers.items()),
            "HTTP_PEERS": ",".join(f"{n}@http://127.0.0.1:{p}" for n, p in http.items()),
        }
        cluster = []
        for node, addr in peers.items():
            env = {**common, "NODE_ID": node, "RAFT_ADDR": addr, "BOOTSTRAP": "true"}
            processes.append(spawn(root / node, http[node], env))
            host, _, peer_port = addr.rpartition(":")
            url = f"http://127.0.0.1:{http[node]}"
            cluster.append(Node(node, processes[-1], url, f"{host}:{int(peer_port) + 1}"))
        cluster_key = wait_ready(root / "n1", cluster[0].url)["client"]
        for node in cluster[1:]:
            wait_ready(root / node.name, node.url)

        for r in range(rounds):
            setups = [("single", single, single_key), ("cluster", cluster, cluster_key)]
            if r % 2:
                setups.reverse()
            for mode, nodes, key in setups:
                for route in ("/_noop", "/jobs", "/jobs/batch"):
                    row = run(nodes, key, route, seconds)
                    runs.setdefault(f"{mode} {route}", []).append(row)
                    print(f"round {r + 1} {mode:<8}{route:<12}" + " ".join(
                        f"{k}={v:,.1f}" for k, v in row.items()), flush=True)  # fmt: skip
    finally:
        for process in processes:
            stop_server_process(process)
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(began)),
        "rounds": rounds,
        "seconds_per_run": seconds,
        "cpus": os.cpu_count(),
        "runs": runs,
        "median": {
            name: {k: statistics.median(r[k] for r in rows) for k in rows[0]}
            for name, rows in runs.items()
        },
    }
    print(json.dumps(result["median"], indent=1))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
