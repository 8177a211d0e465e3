"""Where the time of one durable submit goes (a benchmark, not a test): ONE client thread submits
one job at a time (SDK `Client.submit`, each waiting for its answer) to a `jq serve` whose
hand-offs are timestamped, and prints the median of each stage.

The server runs in its own process, as always, started by this script with probes wrapped around
the functions where a request changes hands (a wrapper records `time.perf_counter_ns()`, which is
CLOCK_MONOTONIC: one clock for both processes, so client and server stamps line up). The stages of
one submit, in order:

    client: build the request        Client.submit -> the SDK's exchange starts
    to the server                    sendall, loopback, the server's loop wakes (data_received)
    server: HTTP, auth, decode       data_received -> the engine is handed the command
    to the append                    the proposal -> its append starts: the flusher task takes
                                     the batch, or (a lone command) the request's own coroutine,
                                     after one yield, appends it
    to the WAL thread                the flusher -> the WAL thread starts the append
    write + fdatasync                the WAL's append (one write, one fdatasync)
    back to the event loop           append done -> the loop's callback runs
    server: apply, answer            apply, route, the answer's bytes handed to the transport
    to the client                    loopback, the client wakes and reads and parses the answer
    client: decode                   the exchange ends -> Client.submit returns

Each probe costs ~1 µs, so the sum is a little over an uninstrumented call. The machine is shared:
read the shares, not the absolute microseconds.

    .venv/bin/python bench/latency_bench.py --seconds 5
    .venv/bin/python bench/latency_bench.py --data-base /dev/shm   # fdatasync on tmpfs: no disk
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# (label, from probe, to probe); client probes are c_*, server probes s_*.
STAGES: list[tuple[str, str, str]] = [
    ("client: build the request", "c_call", "c_exchange"),
    ("to the server (send, loopback, the loop wakes)", "c_exchange", "s_received"),
    ("server: HTTP, routing, auth, decode", "s_received", "s_proposed"),
    ("to the append (flusher task, or one yield)", "s_proposed", "s_flush"),
    ("to the WAL thread", "s_flush", "s_wal_start"),
    ("write + fdatasync", "s_wal_start", "s_wal_end"),
    ("back to the event loop", "s_wal_end", "s_back"),
    ("server: apply, answer", "s_back", "s_answered"),
    ("to the client (loopback, the client wakes, reads)", "s_answered", "c_exchanged"),
    ("client: decode the answer", "c_exchanged", "c_done"),
]
SERVER_PROBES = ("s_received", "s_proposed", "s_flush", "s_wal_start", "s_wal_end", "s_back",
                 "s_answered")  # fmt: skip


def _stamp(record: list[int]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator factory: call the function after recording the time in `record`."""

    def wrap(function: Callable[..., Any]) -> Callable[..., Any]:
        def probe(*args: Any, **kwargs: Any) -> Any:
            record.append(time.perf_counter_ns())
            return function(*args, **kwargs)

        return probe

    return wrap


def serve_instrumented(out_path: str, argv: list[str]) -> None:
    """The child: `jq serve` with a probe at each hand-off; the stamps go to `out_path` as JSON
    when the server stops (SIGTERM)."""
    import atexit

    import jq_tool.core.wal as wal
    import jq_tool.engine.command_engine as command_engine
    import jq_tool.engine.local as local
    import jq_tool.server.connections as connections
    import jq_tool.server.http_protocol as http_protocol

    stamps: dict[str, list[int]] = {name: [] for name in SERVER_PROBES}
    # The protocol `jq serve` runs: the connection guard's, over the joined-writes one.
    protocol = connections.GuardedHttpToolsProtocol
    protocol.data_received = _stamp(stamps["s_received"])(protocol.data_received)  # type: ignore[method-assign]
    joined = http_protocol._JoinedWrites
    joined._send = _stamp(stamps["s_answered"])(joined._send)  # type: ignore[method-assign]
    engine = command_engine.CommandEngine
    engine._enqueue = _stamp(stamps["s_proposed"])(engine._enqueue)  # type: ignore[method-assign]
    local.LocalEngine._append = _async_stamp(stamps["s_flush"], local.LocalEngine._append)  # type: ignore[method-assign]
    lone = local.LocalEngine
    if hasattr(lone, "_append_in_loop"):  # a lone command, appended in its own coroutine
        lone._propose = _async_stamp(stamps["s_proposed"], lone._propose)  # type: ignore[method-assign]
        lone._append_in_loop = _stamp(stamps["s_flush"])(lone._append_in_loop)  # type: ignore[method-assign]
    if hasattr(local.LocalEngine, "_appended"):  # the loop callback that answers a batch
        local.LocalEngine._appended = _stamp(stamps["s_back"])(local.LocalEngine._appended)  # type: ignore[method-assign]
    else:  # before it (a checkout of the first round, for a before/after): the future's callback
        local._settle = _stamp(stamps["s_back"])(local._settle)  # type: ignore[attr-defined]
    real_append = wal.WAL.append

    def append(self: Any, records: Any) -> Any:
        stamps["s_wal_start"].append(time.perf_counter_ns())
        try:
            return real_append(self, records)
        finally:
            stamps["s_wal_end"].append(time.perf_counter_ns())

    wal.WAL.append = append  # type: ignore[method-assign]
    atexit.register(lambda: Path(out_path).write_text(json.dumps(stamps)))
    from jq_tool.cli.main import main

    sys.argv = ["jq", "serve", *argv]
    main()


def _async_stamp(record: list[int], function: Callable[..., Any]) -> Callable[..., Any]:
    async def probe(*args: Any, **kwargs: Any) -> Any:
        record.append(time.perf_counter_ns())
        return await function(*args, **kwargs)

    return probe


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(seconds: float, data_base: str | None) -> dict[str, Any]:
    import httpx

    import jq_tool.sdk.client as sdk_client
    import jq_tool.sdk.wire as sdk_wire
    from jq_tool.sdk import Client

    client_stamps: dict[str, list[int]] = {"c_call": [], "c_exchange": [], "c_exchanged": [],
                                           "c_done": []}  # fmt: skip

    def stamped(real_exchange: Callable[..., Any]) -> Callable[..., Any]:
        def exchange(*args: Any, **kwargs: Any) -> Any:
            client_stamps["c_exchange"].append(time.perf_counter_ns())
            try:
                return real_exchange(*args, **kwargs)
            finally:
                client_stamps["c_exchanged"].append(time.perf_counter_ns())

        return exchange

    # The blocking pool's exchange: on a plain TCP connection, and over TLS.
    sdk_wire._exchange_armed = stamped(sdk_wire._exchange_armed)  # type: ignore[assignment]
    sdk_wire._exchange_blocking = stamped(sdk_wire._exchange_blocking)  # type: ignore[assignment]
    with tempfile.TemporaryDirectory(prefix="jq-latency-", dir=data_base) as tmp:
        port = free_port()
        out = Path(tmp) / "stamps.json"
        log = Path(tmp) / "serve.log"
        env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "PORT", "WAL_DIR"}}
        with log.open("wb") as log_file:
            server = subprocess.Popen(
                [sys.executable, __file__, "--serve-instrumented", str(out), "--port", str(port),
                 "--data-dir", str(Path(tmp) / "data")],
                stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=REPO,
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.05)
            keys = dict(re.findall(r"Created (\w+) key: (\S+)", log.read_text()))
            with Client(url, keys["client"], timeout=30) as client:
                for _ in range(300):  # warm up: connection, caches, first snapshot schedule
                    client.submit("warm-up")
                for values in client_stamps.values():
                    values.clear()
                started = time.perf_counter()
                calls = 0
                while time.perf_counter() - started < seconds:
                    client_stamps["c_call"].append(time.perf_counter_ns())
                    client.submit("bench")
                    client_stamps["c_done"].append(time.perf_counter_ns())
                    calls += 1
                elapsed = time.perf_counter() - started
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
        stamps = json.loads(out.read_text())
    del sdk_client
    return summarize({**stamps, **client_stamps}, calls, elapsed)


def summarize(stamps: dict[str, list[int]], calls: int, elapsed: float) -> dict[str, Any]:
    """Each call's stages: the server stamps taken are the first ones after the previous stage's
    stamp (a single client: one request at a time, but the ticker may append now and then)."""
    per_stage: dict[str, list[float]] = {label: [] for label, _, _ in STAGES}
    totals: list[float] = []
    for i in range(calls):
        at = stamps["c_call"][i]
        times = {"c_call": at}
        ok = True
        for _label, _, to in STAGES:
            if to.startswith("c_"):
                value = stamps[to][i]
            else:
                series = stamps[to]
                j = bisect.bisect_left(series, at)
                if j == len(series):
                    ok = False
                    break
                value = series[j]
            times[to] = value
            at = value
        if not ok or times["c_done"] < at:
            continue
        for label, start, end in STAGES:
            per_stage[label].append((times[end] - times[start]) / 1000)
        totals.append((times["c_done"] - times["c_call"]) / 1000)
    medians = {label: statistics.median(values) for label, values in per_stage.items() if values}
    means = {label: statistics.fmean(values) for label, values in per_stage.items() if values}
    return {
        "calls": calls,
        "calls_per_s": calls / elapsed,
        "matched": len(totals),
        "total_us": statistics.median(totals) if totals else None,
        "mean_total_us": statistics.fmean(totals) if totals else None,
        "stages_us": medians,
        "stages_mean_us": means,
    }


def print_table(result: dict[str, Any]) -> None:
    """The stages as a Markdown table: the median of each, and its mean (the means add up to
    the mean call; medians of a skewed stage do not) with its share of the mean call."""
    total = result["mean_total_us"] or 0.0
    print(
        f"{result['calls']:,} submits from one thread, {result['calls_per_s']:,.0f}/s; "
        f"median call {result['total_us'] or 0:.0f} µs, mean {total:.0f} µs "
        f"({result['matched']:,} calls matched)"
    )
    print("| stage | median µs | mean µs | share of the mean |")
    print("|---|---|---|---|")
    for label, value in result["stages_us"].items():
        mean = result["stages_mean_us"][label]
        share = mean / total if total else 0.0
        print(f"| {label} | {value:.0f} | {mean:.0f} | {share:.0%} |")


def section(disk: dict[str, Any], tmpfs: dict[str, Any] | None) -> str:
    """The Markdown of docs/benchmarks.md's "where one submit's time goes": the stages on this
    disk, and with the data dir on tmpfs (fdatasync costs nothing there: what is left is CPU
    and hand-offs)."""
    lines = [
        "One client thread submits one job at a time (SDK `Client.submit`, each waiting for its "
        "answer) to a `jq serve` whose hand-offs are timestamped (bench/latency_bench.py; client "
        "and server read the same monotonic clock). Means add up to the mean call; medians of "
        "skewed stages do not.",
        "",
    ]
    header = "| stage | this disk: median µs | mean µs | share |"
    rule = "|---|---|---|---|"
    if tmpfs is not None:
        header += " tmpfs (no disk): median µs | mean µs | share |"
        rule += "---|---|---|"
    lines += [header, rule]
    for label in disk["stages_us"]:
        row = f"| {label} |"
        for result in (disk, tmpfs):
            if result is None:
                continue
            mean = result["stages_mean_us"][label]
            share = mean / result["mean_total_us"] if result["mean_total_us"] else 0.0
            row += f" {result['stages_us'][label]:.0f} | {mean:.0f} | {share:.0%} |"
        lines.append(row)
    total = "| **the call** |"
    for result in (disk, tmpfs):
        if result is None:
            continue
        total += (
            f" {result['total_us']:.0f} | {result['mean_total_us']:.0f} | "
            f"{result['calls_per_s']:,.0f} calls/s |"
        )
    lines.append(total)
    lines += ["", summary(disk, "On this disk")]
    if tmpfs is not None:
        lines += [
            "",
            summary(tmpfs, "With the data dir on tmpfs (an fdatasync that costs nothing)"),
        ]
    return "\n".join(lines)


# The stages in four groups, for the sentence under the table.
GROUPS = {
    "the client (building the request, decoding the answer)": (0, 9),
    "loopback and waking the other side": (1, 8),
    "the server's Python (HTTP, routing, auth, decode; applying, answering)": (2, 7),
    "hand-offs between the event loop, the flusher task and the WAL thread": (3, 4, 6),
    "write + fdatasync": (5,),
}


def summary(result: dict[str, Any], where: str) -> str:
    """One sentence: the share of the mean call each group of stages takes."""
    means = list(result["stages_mean_us"].values())
    total = result["mean_total_us"] or 1.0
    parts = [
        f"{name} {sum(means[i] for i in indexes):.0f} µs "
        f"({sum(means[i] for i in indexes) / total:.0%})"
        for name, indexes in GROUPS.items()
    ]
    return f"{where}, of a mean call of {total:.0f} µs: " + "; ".join(parts) + "."


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve-instrumented":
        serve_instrumented(sys.argv[2], sys.argv[3:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--data-base", default="/var/tmp", help="where the data dir is made")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--markdown", action="store_true", help="this disk and tmpfs, as docs/benchmarks.md shows"
    )
    args = parser.parse_args()
    if args.markdown:
        disk = run(args.seconds, args.data_base)
        tmpfs = run(args.seconds, "/dev/shm") if Path("/dev/shm").is_dir() else None
        print(section(disk, tmpfs))
        return 0
    result = run(args.seconds, args.data_base)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
