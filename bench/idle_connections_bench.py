"""Idle-connections benchmark (not a test; issue 14): durable submits while 1,000 idle connections
are held open, against the same server without them.

Starts one `jq serve` (header and keep-alive timeouts raised so that the idle sockets stay for
the whole run: that is the case being measured, not the timeouts), then alternates rounds of
`wrk` on `POST /jobs` (64 connections, as in http_bench.py) without and with IDLE sockets that
connected and sent nothing. Prints submits/s and p99 of each (medians of the rounds), the ratio
with/without (target >= 0.8), and how many descriptors the server held during the idle runs.

    .venv/bin/python bench/idle_connections_bench.py               # 3 rounds of 2 x 10 s
    .venv/bin/python bench/idle_connections_bench.py --quick --json
    .venv/bin/python bench/idle_connections_bench.py --jq /path/to/other/jq   # another build
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.http_bench import (
    BenchError,
    WrkResult,
    run_wrk,
    start_server,
    stop_server_process,
)

IDLE = 1000
TARGET_RATIO = 0.8


def hold_idle(port: int, count: int, server_pid: int) -> list[socket.socket]:
    """`count` connected sockets that send nothing, once the server has accepted them all."""
    before = len(os.listdir(f"/proc/{server_pid}/fd"))
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=5.0) for _ in range(count)]
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:  # connect() returns before the server's accept()
        if len(os.listdir(f"/proc/{server_pid}/fd")) >= before + count:
            break
        time.sleep(0.05)
    return sockets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per wrk run, 2 rounds")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=0, help="pairs of runs (default 3)")
    parser.add_argument("--idle", type=int, default=IDLE, help="idle connections to hold")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--jq",
        default=str(Path(sys.executable).parent / "jq"),
        help="the jq executable to serve with (default: this venv's)",
    )
    args = parser.parse_args(argv)
    seconds = 3.0 if args.quick else args.duration
    rounds = args.rounds or (2 if args.quick else 3)
    # Read by `jq serve` from its environment (start_server passes ours on).
    os.environ["JQ_HEADER_TIMEOUT"] = "1h"
    os.environ["JQ_KEEP_ALIVE_TIMEOUT"] = "1h"
    without: list[WrkResult] = []
    with_idle: list[WrkResult] = []
    held_descriptors: list[int] = []
    try:
        with tempfile.TemporaryDirectory(prefix="jq-idle-bench-") as tmp:
            server = start_server(Path(args.jq), Path(tmp) / "data", Path(tmp) / "server.log")
            port = int(server.base_url.rsplit(":", 1)[1])
            try:
                for round_number in range(rounds):
                    order = (False, True) if round_number % 2 == 0 else (True, False)
                    for idle in order:
                        pid = server.process.pid
                        held = hold_idle(port, args.idle, pid) if idle else []
                        try:
                            if idle:
                                fds = len(os.listdir(f"/proc/{server.process.pid}/fd"))
                                held_descriptors.append(fds)
                            result = run_wrk(
                                server.base_url + "/jobs",
                                server.keys["client"],
                                seconds,
                                args.connections,
                                2,
                                f"/jobs with {args.idle} idle" if idle else "/jobs",
                            )
                        finally:
                            for sock in held:
                                sock.close()
                        (with_idle if idle else without).append(result)
            finally:
                stop_server_process(server.process)
    except BenchError as exc:
        print(f"idle_connections_bench: {exc}", file=sys.stderr)
        return 1
    ratios = [w.req_per_s / n.req_per_s for n, w in zip(without, with_idle, strict=True)]
    report = {
        "idle_connections": args.idle,
        "rounds": rounds,
        "seconds_per_run": seconds,
        "submits_per_s_without": statistics.median(r.req_per_s for r in without),
        "submits_per_s_with_idle": statistics.median(r.req_per_s for r in with_idle),
        "p99_ms_without": statistics.median(r.p99_ms for r in without),
        "p99_ms_with_idle": statistics.median(r.p99_ms for r in with_idle),
        "ratio_per_round": [round(r, 3) for r in ratios],
        "ratio": round(statistics.median(ratios), 3),
        "errors": sum(r.errors for r in without + with_idle),
        "server_descriptors_with_idle": min(held_descriptors),
        "meets_target": statistics.median(ratios) >= TARGET_RATIO,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"POST /jobs, {args.connections} wrk connections, median of {rounds} rounds:\n"
            f"  without idle connections: {report['submits_per_s_without']:>9,.0f} submits/s, "
            f"p99 {report['p99_ms_without']:.2f} ms\n"
            f"  with {args.idle:,} idle:          {report['submits_per_s_with_idle']:>9,.0f} "
            f"submits/s, p99 {report['p99_ms_with_idle']:.2f} ms\n"
            f"  with/without = {report['ratio']:.2f} (rounds: "
            f"{', '.join(f'{r:.2f}' for r in ratios)}; target >= {TARGET_RATIO}); "
            f"server held >= {report['server_descriptors_with_idle']} descriptors; "
            f"errors {report['errors']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
