"""The comparison run: measures jq and each peer one after the other in one process run on this
machine, then writes docs/benchmarks.md and docs/benchmarks.png.

Which systems run, in what order, with what settings (full or quick) and which targets the page
reports against live here; how each system is driven lives in its module under bench/peers/,
and the ratio maths and rendering in bench/report.py.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import http_bench
from bench.peers import PeerRun, Settings
from bench.report import (
    JQ,
    Figure,
    Measurement,
    Report,
    Target,
    merge_figure_rounds,
    merge_rounds,
    render_chart,
    render_markdown,
)

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
CHART = REPO / "docs" / "benchmarks.png"

PEERS = ("beanstalkd", "rq", "celery", "procrastinate")

TARGETS = [
    Target(
        "durable single submits over HTTP ahead of beanstalkd with fsync on every write",
        "submit_single",
        "beanstalkd (fsync every put)",
        1.0,
    ),
    Target(
        "batch submits ahead of beanstalkd without any fsync (pipelined puts)",
        "submit_batch",
        "beanstalkd (no fsync)",
        1.0,
    ),
    Target("one worker process end to end: 10× RQ's SimpleWorker", "worker", "RQ", 10.0),
    Target("one worker process end to end: ahead of Celery's", "worker", "Celery", 1.0),
    Target(
        "one worker process end to end: ahead of Procrastinate's", "worker", "Procrastinate", 1.0
    ),
    Target(
        "one worker process end to end: 2× beanstalkd with fsync on every write",
        "worker",
        "beanstalkd (fsync every put)",
        2.0,
    ),
    Target(
        "lease+ack cycles, 8 client threads, ack-and-lease-next: at least beanstalkd with fsync "
        "on every write",
        "cycle_next",
        "beanstalkd (fsync every put)",
        1.0,
    ),
    Target(
        "lease+ack cycles, 8 client threads, two requests each: at least 0.6× beanstalkd with "
        "fsync on every write",
        "cycle",
        "beanstalkd (fsync every put)",
        0.6,
    ),
    Target("submits from one client thread, each waiting: ahead of RQ", "submit_one", "RQ", 1.0),
    Target(
        "submits from one client thread, each waiting: ahead of Celery", "submit_one", "Celery", 1.0
    ),
    Target(
        "submits from one client thread, each waiting: at least 0.6× beanstalkd with fsync on "
        "every write",
        "submit_one",
        "beanstalkd (fsync every put)",
        0.6,
    ),
]

METHOD_NOTES = [
    "Every server ran on 127.0.0.1 and was started by the bench with a fresh data directory "
    "(beanstalkd binlog, jq WAL in /var/tmp); RQ and Celery used DB 13 and 14 of the machine's "
    "Redis (flushed before and after), Procrastinate a database of its own on the machine's "
    "PostgreSQL (dropped after).",
    "jq's single and batch submits are driven by wrk (C, 2 threads); the peers by their own "
    "Python clients (greenstalk, rq, celery, procrastinate), which cost more client CPU per "
    "job on the same 2 cores. That is how each is used from Python; it is part of the ratio.",
    "Each round runs every system once, in the same order; with several rounds a row is the "
    "median of its rounds (the spread is in its setup); of the jq-only figures, the no-op, "
    "durable/no-op and batch ones come from those medians, the latencies (at peak and at ~50% of "
    "peak) are the median round's (every round's value in the note), the others come from the "
    "first round.",
    "Worker rows include the worker process's start-up, for every system. A worker still busy "
    "after the time bound was stopped and only its finished jobs counted (the setup says so).",
    "Latency at ~50% of peak uses wrk with a fixed per-connection delay (bench/peers/"
    "jq_paced.lua), not an open-loop generator: wrk2 is not in Debian. It reports service time "
    "per request and is not corrected for coordinated omission.",
    "The kill -9 check counts the 201 answers wrk received before the server was killed, "
    "restarts the server on the same data directory and reads /stats: none may be missing.",
]


def settings_for(quick: bool) -> Settings:
    if quick:
        return Settings(
            quick=True,
            seconds=1.5,
            worker_jobs=300,
            worker_seconds=6.0,
            jq_worker_jobs=3000,
            core_jobs=100_000,
        )
    return Settings(
        quick=False,
        seconds=5.0,
        worker_jobs=3000,
        worker_seconds=30.0,
        jq_worker_jobs=20_000,
        core_jobs=1_000_000,
    )


def machine() -> str:
    cores = os.cpu_count() or 0
    python = platform.python_version()
    return f"{platform.system()} {platform.release()}, {cores} cores, Python {python}"


def peer_runs(name: str, settings: Settings) -> list[PeerRun]:
    if name == "beanstalkd":
        from bench.peers import beanstalkd

        return [beanstalkd.measure(settings, mode) for mode in beanstalkd.MODES]
    if name == "rq":
        from bench.peers import rq_redis

        return [rq_redis.measure(settings), rq_redis.measure(settings, durable=True)]
    if name == "celery":
        from bench.peers import celery_redis

        return [celery_redis.measure(settings)]
    if name == "procrastinate":
        from bench.peers import procrastinate_pg

        return [procrastinate_pg.measure(settings)]
    raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")


def run(
    quick: bool,
    peers: tuple[str, ...] = PEERS,
    with_jq: bool = True,
    progress: Callable[[str], None] = print,
    rounds: int = 1,
) -> Report:
    """Every system once per round, in the same order each round; the rows are the medians
    (bench.report.merge_rounds), and so are the jq-only figures measured in every round (the
    latencies: bench.report.merge_figure_rounds); the others come from the first round."""
    settings = settings_for(quick)
    started = time.monotonic()
    report = Report(
        title="jq and the queues people use today",
        machine=machine(),
        mode="quick" if quick else "full",
        started_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        rounds=rounds,
    )
    per_round: list[list[Measurement]] = []
    figure_rounds: list[list[Figure]] = []
    for number in range(1, rounds + 1):
        measured: list[Measurement] = []
        if with_jq:
            from bench.peers import jq

            progress(f"round {number}/{rounds}: jq …")
            jq_run = jq.measure(settings, extras=number == 1)
            report.systems[JQ] = jq_run.run.system
            measured += jq_run.run.measurements
            figure_rounds.append(jq_run.figures)
            if number == 1:
                report.sections += jq_run.sections
        for name in peers:
            progress(f"round {number}/{rounds}: {name} …")
            for peer in peer_runs(name, settings):
                report.systems[peer.system.name] = peer.system
                measured += peer.measurements
        per_round.append(measured)
    report.measurements = merge_rounds(per_round)
    if with_jq:
        report.figures = median_figures(report) + merge_figure_rounds(figure_rounds)
    report.seconds = time.monotonic() - started
    return report


def median_figures(report: Report) -> list[Figure]:
    """The jq-only figures taken from the rows' medians, so they agree with the tables."""
    noop = report.rate(JQ, "noop")
    single = report.rate(JQ, "submit_single")
    durable_ratio = single / noop if single is not None and noop else None
    batch = report.rate(JQ, "submit_batch")
    return [
        Figure("no-op route POST /_noop (wrk, 64 connections)", noop, "req/s"),
        Figure(
            "durable submits (POST /jobs) / no-op requests, same connections",
            durable_ratio,
            "×",
            ">= 0.5",
            None if durable_ratio is None else durable_ratio >= 0.5,
        ),
        Figure(
            "batch submits (POST /jobs/batch of 100)",
            batch,
            "jobs/s",
            "> 100,000 jobs/s",
            None if batch is None else batch > 100_000,
        ),
    ]


def write(report: Report, doc: Path = DOC, chart: Path = CHART) -> None:
    chart_name = chart.name if render_chart(report, chart) else None
    doc.write_text(render_markdown(report, TARGETS, chart_name, METHOD_NOTES))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure jq and its peers in one run; write docs/benchmarks.md and .png.",
    )
    parser.add_argument("--quick", action="store_true", help="short runs, 100k jobs (< 2 min)")
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"comma-separated subset of {','.join(PEERS)} (default: all; '' for none)",
    )
    parser.add_argument("--no-jq", action="store_true", help="measure only the peers")
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="run every system this many times, interleaved; rows are medians "
        "(default: 3 full, 1 quick)",
    )
    parser.add_argument("--out", type=Path, default=DOC, help="the Markdown page to write")
    args = parser.parse_args(argv)
    peers = tuple(p.strip() for p in args.peers.split(",") if p.strip())
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        parser.error(f"unknown peer(s) {', '.join(unknown)}; known: {', '.join(PEERS)}")
    if not (REPO / "bench" / "http_bench.py").is_file():
        parser.error(f"run from a jq source tree (no bench/http_bench.py under {REPO})")

    def progress(message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    if not 1 <= rounds <= 10:
        parser.error("--rounds must be between 1 and 10")
    http_bench.stop_servers_on_sigterm()
    report = run(args.quick, peers, with_jq=not args.no_jq, progress=progress, rounds=rounds)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    write(report, out, out.with_suffix(".png"))
    progress(f"wrote {out} and {out.with_suffix('.png').name} in {report.seconds:.0f} s")
    return 0
