"""The scale model of docs/scaling.md: throughput and p99 of jq against the number of nodes and
shards (1 to 100 nodes), built from the per-command costs measured on this machine, and a small
Monte Carlo of skewed queues (hot queues, placement imbalance, splitting a hot queue).

    .venv/bin/python -m bench.scaling.model                 # table to stdout, docs/scaling.png
    .venv/bin/python -m bench.scaling.model --markdown      # the tables as the doc prints them
    .venv/bin/python -m bench.scaling.model --png /tmp/x.png

Inputs: `bench/scaling/results/{measure,jq_cost,idle}.json` (written by measure.py, jq_cost.py
and measure.py --idle); a missing file falls back to the medians recorded in FALLBACK below
(the numbers of the run the doc quotes).

What the model is (and is not): an analytic CPU budget. Every command costs CPU on the node
that took the HTTP request, on each replica that applies it, and in the log's members; a node
is a machine like this one (2 cores) kept at 70% utilisation; throughput is the largest rate at
which no node and no shard exceeds its budget. Latency is the measured commit latency of one
shard's log at that utilisation, plus the routing hop when a request lands on a node that holds
no replica of its queue's shard. It ignores the network (loopback here: a real network adds
its RTT once per commit and once per hop) and disk bandwidth (below 2 KB per command, far from
any limit at these rates). It is a tool for finding the limits, not a promise of numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
DOCS = Path(__file__).resolve().parents[2] / "docs"

NODE_CORES = 2.0  # a node like this machine
UTILISATION = 0.7  # planned CPU load per node; beyond it p99 climbs steeply
REPLICAS = 3

# The medians of the run quoted in docs/scaling.md, used when a results file is missing.
FALLBACK: dict[str, Any] = {
    "jq_cost": {
        "single /_noop": {"entry_jq_cpu_us_per_job": 42.0},
        "single /jobs": {"entry_jq_cpu_us_per_job": 76.0, "p99_ms": 23.0},
        "cluster /jobs": {
            "entry_jq_cpu_us_per_job": 115.0,
            "other_jq_cpu_us_per_job": 12.6,
            "etcd_cpu_us_per_job": 93.0,
            "jobs_per_s": 4400.0,
            "p50_ms": 11.7,
            "p99_ms": 47.6,
        },
    },
    "measure": {
        "etcd": {
            "latency": {"p50_ms": 2.4, "p99_ms": 7.6},
            "group64": {
                "server_cpu_us_per_cmd": 48.5,
                "client_cpu_us_per_cmd": 25.6,
                "p50_ms": 3.8,
                "p99_ms": 8.4,
                "commands_per_s": 15954.0,
            },
            "batch100": {"commands_per_s": 34575.0},
        },
        "jetstream": {
            "latency": {"p50_ms": 0.42, "p99_ms": 2.3},
            "group64": {
                "server_cpu_us_per_cmd": 22.5,
                "client_cpu_us_per_cmd": 12.0,
                "p50_ms": 1.5,
                "p99_ms": 5.7,
                "commands_per_s": 38016.0,
            },
            "batch100": {"commands_per_s": 260152.0},
        },
    },  # fmt: skip
    "idle": {"etcd_member_cores": 0.01, "jetstream_stream_cores": 0.002},
}


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


@dataclass(frozen=True)
class Costs:
    """CPU microseconds per command (one job submitted, leased or acked) and latencies in ms."""

    log: str
    http_us: float  # read a request, authenticate, answer (POST /_noop)
    engine_us: float  # the entry replica's engine: ids, propose, encode, apply, answer
    log_client_us: float  # the entry replica talking to the log (httpx/etcd, nats-py)
    apply_us: float  # each other replica: tail/watch, decode, apply
    log_server_us: float  # the log's members together (3), per command
    forward_us: float  # one forwarding hop on the node that took the request
    commit_p50_ms: float  # one shard's replicated commit, group commit under load
    commit_p99_ms: float
    commit_p99_idle_ms: float  # the same with one command in flight
    hop_ms: float  # a forwarding hop's added latency (loopback HTTP round trip)
    shard_log_cap: float  # commands/s one shard's log took on this box, batched
    idle_cores_per_replica: float  # a shard member that has nothing to do still costs this

    @property
    def per_command_us(self) -> float:
        """Total CPU per command over the whole system, without the routing hop."""
        return (
            self.http_us
            + self.engine_us
            + self.log_client_us
            + (REPLICAS - 1) * self.apply_us
            + self.log_server_us
        )


def measured_costs() -> dict[str, Costs]:
    """Costs per command for a shard whose log is etcd (as jq runs it today) or JetStream.

    jq's own cost comes from jq_cost.py (real `jq serve` processes, wrk): the entry node of a
    3-node cluster spent `entry` µs per submit, of which `http` is what the no-op route costs
    and `etcd_client` the httpx/etcd part measured alone (measure.py, group64); the other
    nodes spent `apply` each. For JetStream the log client and the log servers are swapped
    for the measured JetStream ones, scaled by the ratio the two logs showed under the same
    load (group64) in the same run, because jq does not run on JetStream yet. JetStream means
    `sync_interval: always` when measure_sync.json has it (as durable as etcd), else the
    machine's 2.9.10 with its defaults."""
    jq = load("jq_cost")
    jq_median = jq["median"] if jq else FALLBACK["jq_cost"]
    measure = load("measure")
    m = measure["median"] if measure else FALLBACK["measure"]
    idle = load("idle") or FALLBACK["idle"]
    http = jq_median["single /_noop"]["entry_jq_cpu_us_per_job"]
    cluster = jq_median["cluster /jobs"]
    e, j = m["etcd"], m["jetstream"]
    etcd_client = e["group64"]["client_cpu_us_per_cmd"]
    engine = max(0.0, cluster["entry_jq_cpu_us_per_job"] - http - etcd_client)
    etcd_server = cluster["etcd_cpu_us_per_job"]
    # Forwarding: the receiving node reads the request (http) and sends it on as a client,
    # which costs about what serving it costs (the SDK's lean transport, docs/architecture.md).
    forward = 2 * http
    hop_ms = 0.3
    base = {
        "http_us": http,
        "engine_us": engine,
        "apply_us": cluster["other_jq_cpu_us_per_job"],
        "forward_us": forward,
        "hop_ms": hop_ms,
    }
    etcd = Costs(
        log="etcd",
        log_client_us=etcd_client,
        log_server_us=etcd_server,
        commit_p50_ms=e["group64"]["p50_ms"],
        commit_p99_ms=e["group64"]["p99_ms"],
        commit_p99_idle_ms=e["latency"]["p99_ms"],
        shard_log_cap=e["batch100"]["commands_per_s"],
        idle_cores_per_replica=idle["etcd_member_cores"],
        **base,
    )
    # JetStream as durable as etcd (sync_interval: always) when the focused run has it; its
    # ratios to etcd are taken within that run, as the machine is noisy between runs.
    sync = load("measure_sync")
    js, js_base = j, e
    if sync and "jetstream-sync" in sync["median"]:
        js, js_base = sync["median"]["jetstream-sync"], sync["median"]["etcd"]
    server_ratio = (
        js["group64"]["server_cpu_us_per_cmd"] / js_base["group64"]["server_cpu_us_per_cmd"]
    )
    client_ratio = (
        js["group64"]["client_cpu_us_per_cmd"] / js_base["group64"]["client_cpu_us_per_cmd"]
    )
    jetstream = Costs(
        log="jetstream",
        log_client_us=etcd_client * client_ratio,
        log_server_us=etcd_server * server_ratio,
        commit_p50_ms=js["group64"]["p50_ms"],
        commit_p99_ms=js["group64"]["p99_ms"],
        commit_p99_idle_ms=js["latency"]["p99_ms"],
        shard_log_cap=js["batch100"]["commands_per_s"],
        idle_cores_per_replica=idle["jetstream_stream_cores"],
        **base,
    )
    return {"etcd": etcd, "jetstream": jetstream}


# ---------------------------------------------------------------------------------------------
# Throughput and p99 against nodes


@dataclass(frozen=True)
class Point:
    nodes: int
    shards: int
    commands_per_s: float
    p99_ms: float
    limit: str  # what binds: "node CPU", "shard log", "leader", "hot queue"


def budgets(costs: Costs, replicas_per_node: float) -> tuple[float, float]:
    """CPU seconds per second a node can give (jq, log): jq is one Python process, so at most
    one core, of which UTILISATION is planned; the log's members get the other core(s), less
    what idle shard members cost."""
    jq = UTILISATION
    log = max(
        0.0, (NODE_CORES - 1) * UTILISATION - replicas_per_node * costs.idle_cores_per_replica
    )
    return jq, log


def jq_entry_us(costs: Costs) -> float:
    """jq CPU on the replica that takes a command in: HTTP, engine, log client."""
    return costs.http_us + costs.engine_us + costs.log_client_us


def single_node(costs: Costs, nodes: int) -> Point:
    """Below 3 nodes there is no 3-replica shard: single-node mode (LocalEngine, the WAL):
    HTTP + engine + an fsync shared by the batch, one process."""
    per_command = costs.http_us + costs.engine_us  # ~ what jq_cost measured for /jobs alone
    return Point(nodes, 0, UTILISATION * 1e6 / per_command, costs.commit_p99_idle_ms, "single")


def one_group(costs: Costs, nodes: int) -> Point:
    """Today's cluster mode: one etcd group with a member on every node; every node applies
    every command, and the Raft leader sends every entry to every follower. Throughput is
    bounded by the busiest node: every node's jq applies everything, and the leader's member
    does work per follower."""
    if nodes < REPLICAS:
        return single_node(costs, nodes)
    jq_budget, log_budget = budgets(costs, 1)
    per_member = costs.log_server_us / REPLICAS  # at N = 3
    # At N = 3 the leader does ~1.5x a follower's work; the surplus is sending entries to and
    # reading acks from each follower, so it grows with every member added.
    follower = per_member * 3 / 3.5
    per_peer = (1.5 * follower - follower) / (REPLICAS - 1)
    leader = follower + per_peer * (nodes - 1)
    jq_per_node = costs.apply_us + (jq_entry_us(costs) - costs.apply_us) / nodes
    rate = min(jq_budget * 1e6 / jq_per_node, log_budget * 1e6 / leader, costs.shard_log_cap)
    limit = "jq applies everything" if jq_budget / jq_per_node < log_budget / leader else "leader"
    # A commit waits for a majority; the leader's work per entry grows with N.
    p99 = p99_at(costs, UTILISATION) * (leader / (1.5 * follower)) ** 0.5
    return Point(nodes, 1, rate, p99, limit)


def sharded(
    costs: Costs,
    nodes: int,
    *,
    routing: str,
    shards_per_node: float = 1.0,
    hot_share: float = 0.0,
    split: int = 1,
) -> Point:
    """S = nodes × shards_per_node shards of 3 replicas, placed evenly (each node holds
    3 × S / N replicas, leaders spread). `routing` is "forward" (clients send anywhere; a node
    without a replica of the owning shard forwards) or "sdk" (the SDK sends to a replica node
    it learned from an answer header; 1% stale guesses are forwarded). `hot_share`: the share
    of all commands that goes to the single hottest queue (split over `split` sub-queues on
    different shards)."""
    if nodes < REPLICAS:
        return single_node(costs, nodes)
    shards = max(1, round(nodes * shards_per_node))
    replicas_per_node = REPLICAS * shards / nodes
    forwarded = (1 - REPLICAS / nodes) if routing == "forward" else 0.01
    jq_budget, log_budget = budgets(costs, replicas_per_node)
    jq_us = jq_entry_us(costs) + (REPLICAS - 1) * costs.apply_us + forwarded * costs.forward_us
    by_jq = nodes * jq_budget * 1e6 / jq_us
    by_log = nodes * log_budget * 1e6 / costs.log_server_us
    rate, limit = (by_jq, "jq CPU") if by_jq <= by_log else (by_log, "log CPU")
    # One shard: its 3 replica nodes take its commands in and apply them (for a hot shard,
    # all of those nodes' jq budget; their other shards must be moved away).
    shard_cap = one_queue_cap(costs)
    if hot_share > 0:
        hot_cap = min(shards, split) * shard_cap / hot_share
        if hot_cap < rate:
            rate, limit = hot_cap, "hot queue"
    p99 = p99_at(costs, UTILISATION) + forwarded * costs.hop_ms
    if split > 1:  # a lease over k sub-queues asks more than one shard when the first is empty
        p99 += costs.hop_ms * math.log2(split)
    return Point(nodes, shards, rate, p99, limit)


def one_queue_cap(costs: Costs) -> float:
    """The most one unsplit queue can do: one shard, its 3 replica nodes' jq processes."""
    jq_budget, _ = budgets(costs, REPLICAS)
    jq_us = jq_entry_us(costs) + (REPLICAS - 1) * costs.apply_us
    return min(costs.shard_log_cap, REPLICAS * jq_budget * 1e6 / jq_us)


def p99_at(costs: Costs, utilisation: float) -> float:
    """Commit p99 between the two measured points: one command in flight (idle) and the
    saturated group commit (the box at 100%), rising with the square of utilisation: group
    commit grows its batches under load instead of queueing, so the rise is gentle until the
    CPU is gone."""
    return (
        costs.commit_p99_idle_ms + (costs.commit_p99_ms - costs.commit_p99_idle_ms) * utilisation**2
    )


# ---------------------------------------------------------------------------------------------
# Skew: many queues of Zipf-distributed load on shards


def zipf_shares(queues: int, exponent: float) -> list[float]:
    weights = [1 / (rank**exponent) for rank in range(1, queues + 1)]
    total = sum(weights)
    return [w / total for w in weights]


def imbalance(
    shares: list[float], shards: int, *, balanced: bool, split_above: float = 1.0, seed: int = 7
) -> float:
    """max shard load / mean shard load. Hash placement, or greedy placement (the heaviest
    queue onto the lightest shard: what a balancer that moves queues converges to). A queue
    above `split_above` of a shard's fair share is split into sub-queues small enough to fit."""
    fair = 1 / shards
    pieces: list[float] = []
    for share in shares:
        parts = max(1, math.ceil(share / (split_above * fair))) if split_above < 1.0 else 1
        pieces += [share / parts] * parts
    load = [0.0] * shards
    if balanced:
        for piece in sorted(pieces, reverse=True):
            load[load.index(min(load))] += piece
    else:
        rng = random.Random(seed)
        for piece in pieces:
            load[rng.randrange(shards)] += piece
    return max(load) / (sum(load) / shards)


# ---------------------------------------------------------------------------------------------
# Output

NODE_COUNTS = [1, 3, 6, 10, 20, 30, 50, 75, 100]


def curves(costs: dict[str, Costs]) -> dict[str, list[Point]]:
    e, j = costs["etcd"], costs["jetstream"]
    counts = [n for n in range(1, 101)]
    return {
        "today: one etcd group, a member per node": [one_group(e, n) for n in counts],
        "shards on etcd, forwarding": [sharded(e, n, routing="forward") for n in counts],
        "shards on etcd, SDK routes itself": [sharded(e, n, routing="sdk") for n in counts],
        "shards on JetStream (fsync always), SDK routes itself": [
            sharded(j, n, routing="sdk") for n in counts
        ],
        "etcd shards, one queue with 20% of load": [
            sharded(e, n, routing="sdk", hot_share=0.2) for n in counts
        ],
        "etcd shards, that queue split in 8": [
            sharded(e, n, routing="sdk", hot_share=0.2, split=8) for n in counts
        ],
    }


def chart(costs: dict[str, Costs], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = curves(costs)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    styles = ["k-", "C0--", "C0-", "C2-", "C3:", "C3-."]
    for (label, points), style in zip(lines.items(), styles, strict=True):
        xs = [p.nodes for p in points if p.commands_per_s > 0]
        left.plot(xs, [p.commands_per_s / 1000 for p in points if p.commands_per_s > 0],
                  style, label=label)  # fmt: skip
        right.plot(xs, [p.p99_ms for p in points if p.commands_per_s > 0], style, label=label)
    left.set_xlabel("nodes (2 cores each, 70% busy)")
    left.set_ylabel("thousand commands/s (a job = submit + lease + ack)")
    left.set_title("Modelled throughput")
    left.set_yscale("log")
    left.grid(True, which="both", alpha=0.3)
    right.set_xlabel("nodes")
    right.set_ylabel("p99 of a write, ms (loopback; add network RTT)")
    right.set_title("Modelled p99 at that load")
    right.grid(True, alpha=0.3)
    left.legend(fontsize=7.5, loc="upper left")
    fig.suptitle("jq with queues spread over shards: model from per-command costs measured "
                 "on one 2-core machine", fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(costs: dict[str, Costs]) -> str:
    out = ["| cost per command | etcd shard | JetStream shard |", "|---|---|---|"]
    e, j = costs["etcd"], costs["jetstream"]
    for label, attr in [
        ("HTTP (entry node)", "http_us"),
        ("engine: propose, encode, apply (entry replica)", "engine_us"),
        ("log client on the entry replica", "log_client_us"),
        ("apply on each other replica", "apply_us"),
        ("the log's 3 members together", "log_server_us"),
        ("**total, 3 replicas**", "per_command_us"),
        ("forwarding hop, when taken", "forward_us"),
    ]:
        out.append(f"| {label} | {getattr(e, attr):.0f} µs | {getattr(j, attr):.0f} µs |")
    out += ["", "| nodes | today (one group) | etcd shards, forward | etcd shards, SDK routes | "
            "JetStream shards, SDK | p99 ms (etcd shards, SDK / forward) |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    lines = curves(costs)
    keys = list(lines)
    for n in NODE_COUNTS:
        row = [lines[k][n - 1] for k in keys[:4]]

        def fmt(p: Point) -> str:
            return f"{p.commands_per_s / 1000:,.0f}k" if p.commands_per_s else "—"

        fwd = lines[keys[1]][n - 1]
        out.append(
            f"| {n} | {fmt(row[0])} | {fmt(row[1])} | {fmt(row[2])} | {fmt(row[3])} | "
            + (f"{row[2].p99_ms:.1f} / {fwd.p99_ms:.1f} |" if row[2].commands_per_s else "— |")
        )
    out += ["", "| skew: 1,000 queues, Zipf load, 100 shards | max shard / mean shard | "
            "usable share of the cluster |", "|---|---|---|"]  # fmt: skip
    for exponent in (0.8, 1.1):
        shares = zipf_shares(1000, exponent)
        for label, kwargs in [
            ("hash placement", {"balanced": False}),
            ("balanced by moves", {"balanced": True}),
            ("balanced, hot queues split to ≤ ½ shard", {"balanced": True, "split_above": 0.5}),
        ]:
            ratio = imbalance(shares, 100, **kwargs)  # type: ignore[arg-type]
            out.append(
                f"| Zipf s={exponent} (top queue {shares[0]:.0%}), {label} | {ratio:.1f} | "
                f"{1 / ratio:.0%} |"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print the doc's tables")
    parser.add_argument("--png", type=Path, default=DOCS / "scaling.png")
    args = parser.parse_args(argv)
    costs = measured_costs()
    if args.markdown:
        print(markdown(costs))
    else:
        for name, c in costs.items():
            rounded = {k: round(v, 2) if isinstance(v, float) else v for k, v in vars(c).items()}
            print(name, rounded, f"total {c.per_command_us:.0f} us")
        for label, points in curves(costs).items():
            print(f"{label:<44}" + " ".join(
                f"{p.nodes}:{p.commands_per_s / 1000:,.0f}k/{p.p99_ms:.0f}ms"
                for p in points if p.nodes in NODE_COUNTS))  # fmt: skip
    chart(costs, args.png)
    print(f"wrote {args.png}")
    return 0


_ = replace  # dataclasses.replace: handy for what-if runs in a REPL (costs with a cheaper log)

if __name__ == "__main__":
    raise SystemExit(main())
