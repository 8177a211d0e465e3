"""Cluster benchmark (not a test): replicated durable submits with three etcd members on this
machine, side by side with single-node mode in the same run, and how fast /health notices a
lost majority.

Starts one single-node `jq serve` and a three-node cluster (`CLUSTER_MODE=true`, each node with
its own etcd member, all on loopback), then runs wrk against `POST /jobs` (single submits) and
`POST /jobs/batch` (100 jobs a request) of each, alternating single node and cluster round by
round (both stay up throughout, so each round's pair shares the machine's mood); each ratio is
the median of the rounds' ratios. In cluster mode a submit is acknowledged once etcd committed
it on a majority (each member fsyncs) and this node applied it; in single-node mode once the
local WAL fsynced it. Last, two of the three nodes are SIGKILLed (their etcd members die with
them) and the survivor's /health is polled until it answers 503: the time that took.

Each row also gives the CPU the mode's servers (etcd members included, wrk not) spent per single
submit: on a machine shared with other work, throughput follows the CPU share each mode gets,
while CPU per submit does not, so single/cluster CPU per submit is the steadier ratio. The
cluster's is also split by process: the node wrk talks to, the two other nodes, the three etcd
members (each a child of its node).

Targets: replicated single submits at least 0.6x the same round's single node (issue 20), and
/health reporting the lost majority within 1 s (issue 22).

    .venv/bin/python bench/cluster_bench.py [--quick] [--rounds N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
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
    free_port,
    parse_seeded_keys,
    run_wrk,
    stop_server_process,
    stop_servers_on_sigterm,
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


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of one live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """The process and its descendants (a node's etcd member is its child)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found.extend(_tree(int(child)))
    return found


# The processes of a mode, as `cpu_by_process` names them.
SERVING_NODE, OTHER_NODES, ETCD_MEMBERS = "serving node", "other nodes", "etcd members"


def cpu_by_process(servers: list[subprocess.Popen[bytes]]) -> dict[str, float]:
    """CPU seconds so far of the node wrk talks to (the first), the other nodes, and every
    node's children (its etcd member)."""
    spent = {SERVING_NODE: 0.0, OTHER_NODES: 0.0, ETCD_MEMBERS: 0.0}
    for index, root in enumerate(servers):
        own, *children = _tree(root.pid)
        spent[OTHER_NODES if index else SERVING_NODE] += _cpu_s(own)
        spent[ETCD_MEMBERS] += sum(_cpu_s(pid) for pid in children)
    return spent


def measure(
    url: str, key: str, seconds: float, servers: list[subprocess.Popen[bytes]]
) -> dict[str, float]:
    """One round on one mode: wrk on single submits, then on batches. `cpu_us_per_submit` is
    the CPU the servers (and their etcd members) spent per single submit: on a shared machine
    a steadier comparison than throughput, which follows the CPU share the mode gets; the
    `cpu_us_per_submit <process>` entries split it."""
    before = cpu_by_process(servers)
    single = run_wrk(url + "/jobs", key, seconds, 64, 2, "POST /jobs")
    after = cpu_by_process(servers)
    batch = run_wrk(url + "/jobs/batch", key, seconds, 16, 2, "POST /jobs/batch", BATCH_BODY)
    submits = max(single.requests, 1)
    split = {
        f"cpu_us_per_submit {name}": (after[name] - before[name]) / submits * 1e6 for name in after
    }
    return {
        "submits_per_s": single.req_per_s,
        "submit_p99_ms": single.p99_ms,
        "batch_jobs_per_s": batch.req_per_s * BATCH,
        "cpu_us_per_submit": sum(split.values()),
        **split,
    }


def health_detection_s(
    survivor: str, victims: list[subprocess.Popen[bytes]], timeout_s: float = 30
) -> float:
    """SIGKILL `victims` (two of three nodes: the majority goes with their members) and time
    until the survivor's /health stops answering 200. Nothing is written meanwhile, so only
    the health probe can notice."""
    with httpx.Client(timeout=2) as http:
        if http.get(survivor + "/health").status_code != 200:
            raise BenchError("the survivor was not healthy before the kill")
        for victim in victims:
            os.killpg(victim.pid, signal.SIGKILL)
        killed = time.monotonic()
        while time.monotonic() - killed < timeout_s:
            if http.get(survivor + "/health").status_code != 200:
                return time.monotonic() - killed
            time.sleep(0.01)
    raise BenchError(f"/health still 200 {timeout_s:.0f}s after the majority was killed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per wrk run instead of 10")
    parser.add_argument("--rounds", type=int, default=0, help="alternating rounds (3; quick 2)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    stop_servers_on_sigterm()
    if shutil.which("etcd") is None:
        raise SystemExit("etcd is not installed (apt-get install etcd-server)")
    seconds = 3.0 if args.quick else 10.0
    rounds = args.rounds or (2 if args.quick else 3)
    root = Path(tempfile.mkdtemp(prefix="jq-cluster-bench-"))
    processes: list[subprocess.Popen[bytes]] = []
    singles: list[dict[str, float]] = []
    clusters: list[dict[str, float]] = []
    try:
        port = free_port()
        processes.append(spawn(root / "single", port, {}))
        single_url = f"http://127.0.0.1:{port}"
        single_key = wait_ready(root / "single", single_url)["client"]

        peers = {f"n{i}": f"127.0.0.1:{port}" for i, port in enumerate(free_peer_ports(3), 1)}
        http = {node: free_port() for node in peers}
        common = {
            "CLUSTER_MODE": "true",
            "PEERS": ",".join(f"{n}@{a}" for n, a in peers.items()),
            "HTTP_PEERS": ",".join(f"{n}@http://127.0.0.1:{p}" for n, p in http.items()),
        }
        nodes: dict[str, subprocess.Popen[bytes]] = {}
        for node, addr in peers.items():
            env = {**common, "NODE_ID": node, "RAFT_ADDR": addr, "BOOTSTRAP": "true"}
            nodes[node] = spawn(root / node, http[node], env)
            processes.append(nodes[node])
        cluster_url = f"http://127.0.0.1:{http['n1']}"
        cluster_key = wait_ready(root / "n1", cluster_url)["client"]
        for node in ("n2", "n3"):
            wait_ready(root / node, f"http://127.0.0.1:{http[node]}")

        single_servers = processes[:1]
        cluster_servers = list(nodes.values())
        for _ in range(rounds):
            singles.append(measure(single_url, single_key, seconds, single_servers))
            clusters.append(measure(cluster_url, cluster_key, seconds, cluster_servers))
        detection = health_detection_s(cluster_url, [nodes["n2"], nodes["n3"]])
    finally:
        for process in processes:
            stop_server_process(process)
        shutil.rmtree(root, ignore_errors=True)

    def median(rows: list[dict[str, float]], name: str) -> float:
        return statistics.median(r[name] for r in rows)

    pairs = list(zip(singles, clusters, strict=True))
    submits = [c["submits_per_s"] / s["submits_per_s"] for s, c in pairs]
    batches = [c["batch_jobs_per_s"] / s["batch_jobs_per_s"] for s, c in pairs]
    cpu = [s["cpu_us_per_submit"] / c["cpu_us_per_submit"] for s, c in pairs]
    report: dict[str, object] = {
        "single-node": {name: median(singles, name) for name in singles[0]},
        "cluster (3 etcd members)": {name: median(clusters, name) for name in clusters[0]},
        "rounds": [{"single": s, "cluster": c} for s, c in pairs],
        "cluster_over_single_submits": statistics.median(submits),
        "cluster_over_single_submits_by_round": submits,
        "cluster_over_single_batch": statistics.median(batches),
        "single_cpu_over_cluster_cpu_per_submit": statistics.median(cpu),
        "health_detects_lost_majority_s": detection,
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(
        f"{'mode (median of rounds)':<26}{'submits/s':>12}{'p99 ms':>10}{'batch jobs/s':>15}"
        f"{'CPU us/submit':>15}"
    )
    for mode in ("single-node", "cluster (3 etcd members)"):
        values = report[mode]
        assert isinstance(values, dict)
        print(
            f"{mode:<26}{values['submits_per_s']:>12,.0f}{values['submit_p99_ms']:>10.1f}"
            f"{values['batch_jobs_per_s']:>15,.0f}{values['cpu_us_per_submit']:>15,.0f}"
        )
    cluster_cpu = report["cluster (3 etcd members)"]
    assert isinstance(cluster_cpu, dict)
    print(
        "cluster CPU us/submit by process (medians): "
        + ", ".join(
            f"{name} {cluster_cpu[f'cpu_us_per_submit {name}']:,.0f}"
            for name in (SERVING_NODE, OTHER_NODES, ETCD_MEMBERS)
        )
    )
    ratio = statistics.median(submits)
    print(
        f"cluster/single: submits {ratio:.2f} (rounds: "
        f"{', '.join(f'{r:.2f}' for r in submits)}; target >= 0.6: "
        f"{'met' if ratio >= 0.6 else 'NOT met'}), batch {statistics.median(batches):.2f}; "
        f"CPU per submit, single/cluster: {statistics.median(cpu):.2f}"
    )
    print(
        f"/health noticed the lost majority after {detection:.2f}s "
        f"(target <= 1 s: {'met' if detection <= 1.0 else 'NOT met'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
