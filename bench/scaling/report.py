"""The measurement tables of docs/scaling.md, printed as Markdown from the results files.

    .venv/bin/python -m bench.scaling.report

Reads `bench/scaling/results/{measure,measure_sync,jq_cost,idle}.json` (whichever exist).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

LOAD_LABELS = {
    "latency": "1 writer, 1 command per append",
    "writers8": "8 writers, 1 command per append",
    "writers64": "64 writers, 1 command per append",
    "batch100": "16 writers, 100 commands per append",
    "group64": "jq's group commit, 64 callers",
    "group": "jq's group commit, 256 callers",
    "shards1": "group commit, 1 shard",
    "shards2": "group commit, 2 shards at once",
    "shards4": "group commit, 4 shards at once",
}


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def spread(row: dict[str, Any]) -> str:
    low, high = row["spread_commands_per_s"]
    return f"{low:,.0f}–{high:,.0f}"


def log_table(result: dict[str, Any]) -> str:
    med = result["median"]
    kinds = list(med)
    head = "| load | " + " | ".join(f"{k} cmd/s" for k in kinds)
    head += " | " + " | ".join(f"{k} / etcd" for k in kinds if k != "etcd")
    head += " | p50 / p99 ms (" + ", ".join(kinds) + ") | log CPU µs/cmd | client CPU µs/cmd |"
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for name in med[kinds[0]]:
        rows = [med[k][name] for k in kinds]
        base = med["etcd"][name]["commands_per_s"]
        cells = [f"{r['commands_per_s']:,.0f}" for r in rows]
        ratios = [f"{med[k][name]['commands_per_s'] / base:.1f}×" for k in kinds if k != "etcd"]
        lat = ", ".join(f"{r['p50_ms']:.2f} / {r['p99_ms']:.1f}" for r in rows)
        srv = " / ".join(f"{r['server_cpu_us_per_cmd']:.0f}" for r in rows)
        cli = " / ".join(f"{r['client_cpu_us_per_cmd']:.0f}" for r in rows)
        label = LOAD_LABELS.get(name, name)
        out.append(f"| {label} | " + " | ".join(cells + ratios) + f" | {lat} | {srv} | {cli} |")
    disk = " / ".join(f"{med[k]['group64']['disk_bytes_per_cmd']:,.0f}" for k in kinds
                      if "group64" in med[k])  # fmt: skip
    out.append("")
    out.append(f"Disk bytes written per command under group64 ({', '.join(kinds)}): {disk}.")
    census = result.get("census") or {}
    if census:
        parts = []
        for kind, c in census.items():
            calls = {k: v for k, v in c.items() if k.endswith("_calls")}
            parts.append(
                f"{kind}: {c['sync_calls_per_append']:.2f} per append "
                f"({', '.join(f'{k[:-6]} {v}' for k, v in calls.items()) or 'none'})"
            )
        out.append("Sync system calls of all members during group commit (strace): "
                   + "; ".join(parts) + ".")  # fmt: skip
    gaps = result.get("failover_median_gap_s") or {}
    if gaps:
        rows = result.get("failover", {})
        out.append(
            "Leader killed (SIGKILL), longest gap between two acknowledged appends, median: "
            + "; ".join(
                f"{kind} {gap:.2f} s (runs: "
                + ", ".join(f"{r['gap_s']:.2f}" for r in rows.get(kind, []))
                + ")"
                for kind, gap in gaps.items()
            )
            + "."
        )
    return "\n".join(out)


def jq_cost_table(result: dict[str, Any]) -> str:
    med = result["median"]
    out = [
        "| mode, route | jobs/s | p50 / p99 ms | entry node jq µs/job | each other node µs/job "
        "| etcd (3 members) µs/job | whole system µs/job | etcd fsyncs/job |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in med.items():
        total = (
            r["entry_jq_cpu_us_per_job"]
            + 2 * r["other_jq_cpu_us_per_job"] * (name.startswith("cluster"))
            + r["etcd_cpu_us_per_job"]
        )
        out.append(
            f"| {name} | {r['jobs_per_s']:,.0f} | {r['p50_ms']:.1f} / {r['p99_ms']:.1f} | "
            f"{r['entry_jq_cpu_us_per_job']:.0f} | {r['other_jq_cpu_us_per_job']:.0f} | "
            f"{r['etcd_cpu_us_per_job']:.0f} | {total:.0f} | {r['etcd_fsyncs_per_job']:.3f} |"
        )
    s, c = med.get("single /jobs"), med.get("cluster /jobs")
    sb, cb = med.get("single /jobs/batch"), med.get("cluster /jobs/batch")
    if s and c and sb and cb:
        out.append("")
        out.append(
            f"Cluster / single: single submits {c['jobs_per_s'] / s['jobs_per_s']:.2f}×, "
            f"batch submits {cb['jobs_per_s'] / sb['jobs_per_s']:.2f}×."
        )
    return "\n".join(out)


def main() -> int:
    for name in ("measure", "measure_sync"):
        result = load(name)
        if result:
            print(f"## {name}.json ({result['started']}, {result['rounds']} rounds)\n")
            print(log_table(result) + "\n")
    cost = load("jq_cost")
    if cost:
        print(f"## jq_cost.json ({cost['started']}, {cost['rounds']} rounds)\n")
        print(jq_cost_table(cost) + "\n")
    idle = load("idle")
    if idle:
        print("## idle.json\n\n" + json.dumps(idle, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
