"""The benchmark page's maths and table, from hand-made measurements: nothing is started."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.compare import TARGETS
from bench.peers import bounded_rate, threaded_rate
from bench.report import (
    JQ,
    MEASURES,
    Figure,
    Measurement,
    Report,
    System,
    Target,
    comparison_rows,
    format_ratio,
    merge_figure_rounds,
    merge_rounds,
    ratio,
    render_markdown,
    target_verdicts,
)

BEANSTALKD_FSYNC = "beanstalkd (fsync every put)"
REPO = Path(__file__).resolve().parents[2]


def sample_report() -> Report:
    report = Report("t", "test machine", "quick", "2026-11-28 18:00 UTC", seconds=42.0)
    report.systems = {
        JQ: System("jq", "jq-tool 0", "WAL group commit"),
        BEANSTALKD_FSYNC: System(BEANSTALKD_FSYNC, "beanstalkd 1.12", "fsync | every put"),
        "RQ": System("RQ", "rq 3", "none"),
        "Celery": System("Celery", "celery 5", "none"),
    }
    report.measurements = [
        Measurement("RQ", "worker", 250.0, "1 SimpleWorker"),
        Measurement(JQ, "submit_single", 9000.0, "wrk 64"),
        Measurement(BEANSTALKD_FSYNC, "submit_single", 3000.0, "8 threads"),
        Measurement("RQ", "submit_single", 1800.0, "1 thread"),
        Measurement(JQ, "worker", 2000.0, "1 AsyncWorker"),
        Measurement("Celery", "worker", None, note="worker exit 1: boom\nsecond | line"),
        Measurement("Celery", "submit_batch", None, note="no batch publish API in Celery"),
    ]
    report.figures = [
        Figure("restart with 1M jobs", 2.5, "s", "< 10 s", True),
        Figure("RSS per queued job", 1500.0, "bytes", "< 1,000 bytes", False),
        Figure("kill -9 lost", None, "jobs", "0", None, note="server did not start"),
    ]
    return report


def test_ratio_is_jq_over_peer_and_refuses_missing_or_zero() -> None:
    assert ratio(9000.0, 3000.0) == pytest.approx(3.0)
    assert ratio(100.0, 400.0) == pytest.approx(0.25)
    assert ratio(None, 3000.0) is None
    assert ratio(9000.0, None) is None
    assert ratio(9000.0, 0.0) is None
    assert ratio(float("nan"), 1.0) is None


def test_format_ratio() -> None:
    assert format_ratio(3.0) == "3.00×"
    assert format_ratio(0.254) == "0.25×"
    assert format_ratio(12.4) == "12×"
    assert format_ratio(None) == "n/a"


def test_rows_put_jq_first_and_give_every_peer_a_ratio() -> None:
    report = sample_report()
    single = next(m for m in MEASURES if m.key == "submit_single")
    rows = comparison_rows(report, single)
    assert [row[0] for row in rows] == ["jq", BEANSTALKD_FSYNC, "RQ"]
    assert rows[0][1:3] == ["9,000", "reference"]
    assert rows[1][1:3] == ["3,000", "3.00×"]
    assert rows[2][1:3] == ["1,800", "5.00×"]


def test_a_missing_peer_number_says_why_and_has_no_ratio() -> None:
    report = sample_report()
    worker = next(m for m in MEASURES if m.key == "worker")
    rows = comparison_rows(report, worker)
    assert rows[1][:3] == ["RQ", "250", "8.00×"]
    celery = rows[2]
    assert celery[0] == "Celery"
    assert celery[2] == "n/a (not measured)"
    # The error text is kept, but cannot break the Markdown table.
    assert "worker exit 1: boom" in celery[1]
    assert "\n" not in celery[1] and "\\|" in celery[1]


def test_targets_use_the_same_run_ratios() -> None:
    report = sample_report()
    targets = [
        Target("ahead of beanstalkd fsync", "submit_single", BEANSTALKD_FSYNC, 1.0),
        Target("10x RQ", "worker", "RQ", 10.0),
        Target("ahead of Celery", "worker", "Celery", 1.0),
    ]
    verdicts = [(t.text, v) for t, v in target_verdicts(report, targets)]
    assert verdicts[0] == ("ahead of beanstalkd fsync", pytest.approx(3.0))
    assert verdicts[1] == ("10x RQ", pytest.approx(8.0))
    assert verdicts[2] == ("ahead of Celery", None)
    page = render_markdown(report, targets, "chart.png", ["a note"])
    assert "| ahead of beanstalkd fsync | 3.00× | met |" in page
    assert "| 10x RQ | 8.00× | **missed** |" in page
    assert "| ahead of Celery | n/a | not measured |" in page


def test_page_states_durability_figures_and_chart(tmp_path: Path) -> None:
    report = sample_report()
    page = render_markdown(report, TARGETS, "benchmarks.png", ["how"])
    assert "![jq and its peers" in page and "(benchmarks.png)" in page
    assert "| beanstalkd (fsync every put) | beanstalkd 1.12 | fsync \\| every put |" in page
    assert "- restart with 1M jobs: 2.50 s — target < 10 s: met" in page
    assert "- RSS per queued job: 1,500 bytes — target < 1,000 bytes: **missed**" in page
    assert "- kill -9 lost: — — target 0: not measured" in page
    assert "### Batch / pipelined submits" in page  # Celery's "no batch API" row
    assert "### Lease+ack cycles" not in page  # nothing measured: no empty section
    assert "- how" in page


def test_write_makes_the_page_and_a_png(tmp_path: Path) -> None:
    from bench.compare import write

    doc, chart = tmp_path / "b.md", tmp_path / "b.png"
    write(sample_report(), doc, chart)
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert "(b.png)" in doc.read_text()


def test_bounded_rate_stops_at_the_count() -> None:
    calls = []

    def step() -> int:
        calls.append(1)
        return 10

    rate = bounded_rate(step, 100, 60.0)
    assert len(calls) == 10
    assert rate > 0


def test_threaded_rate_bounds_the_count_and_raises_a_thread_error() -> None:
    lock = threading.Lock()
    closed = []
    done = []

    def open_step() -> tuple[Callable[[], int], Callable[[], None]]:
        def step() -> int:
            with lock:
                done.append(1)
            return 1

        return step, lambda: closed.append(1)

    assert threaded_rate(open_step, 4, 60.0, max_jobs=400) > 0
    assert len(done) == 400  # 100 per thread, then each stops
    assert len(closed) == 4  # every client closed

    def broken() -> tuple[Callable[[], int], Callable[[], None]]:
        def step() -> int:
            raise ConnectionError("peer went away")

        return step, lambda: None

    with pytest.raises(ConnectionError, match="peer went away"):
        threaded_rate(broken, 2, 60.0)


def test_merge_rounds_takes_the_median_and_shows_the_spread() -> None:
    rounds = [
        [Measurement(JQ, "worker", 2000.0, "1 worker"), Measurement("RQ", "worker", 200.0, "w")],
        [
            Measurement(JQ, "worker", 3000.0, "1 worker"),
            Measurement("RQ", "worker", None, note="x"),
        ],
        [Measurement(JQ, "worker", 1000.0, "1 worker"), Measurement("RQ", "worker", 300.0, "w")],
    ]
    merged = {(m.system, m.measure): m for m in merge_rounds(rounds)}
    assert merged[(JQ, "worker")].rate == 2000.0
    assert merged[(JQ, "worker")].setup == "1 worker; median of 3: 1,000–3,000"
    rq = merged[("RQ", "worker")]
    assert rq.rate == 250.0  # even count: the mean of the middle two
    assert rq.setup == "w; median of 2 (of 3 rounds, 1 failed): 200–300"


def test_merge_rounds_keeps_a_single_round_and_a_never_measured_row_as_they_are() -> None:
    only = [Measurement("Celery", "submit_batch", None, note="no batch publish API")]
    assert merge_rounds([only]) == only
    one = [Measurement(JQ, "cycle", 400.0, "8 threads")]
    assert merge_rounds([one]) == one


def test_figures_measured_every_round_are_their_median_round() -> None:
    """The latencies at peak and at half of it are measured in every round; only the first
    round's were kept, so one burst (a paced p99 of 12.4 ms in a run whose other rounds gave
    ~4.5) decided the verdict. The median round's figure is kept now, with every round's
    value; a figure of one round only (restart, cluster) is kept as it is."""

    def paced(p99: float) -> Figure:
        return Figure("paced, p99", p99, "ms", "< 10 ms", p99 < 10, note=f"at {p99 * 1000:.0f}/s")

    restart = Figure("restart", 0.12, "s", "< 0.15 s", True)
    rounds = [[paced(12.39), restart], [paced(4.27)], [paced(4.59)]]
    merged = merge_figure_rounds(rounds)
    assert [f.label for f in merged] == ["paced, p99", "restart"]
    assert merged[0].value == 4.59 and merged[0].meets is True
    assert merged[0].note == "at 4590/s; median of 3 rounds: 4.27, 4.59, 12.39 ms"
    assert merged[1] == restart
    # Two rounds: the larger of the middle two (a latency judged against an upper bound), and
    # a round that failed to measure counts as no value.
    failed = Figure("paced, p99", None, "ms", note="ConnectionError")
    two = merge_figure_rounds([[paced(3.0)], [paced(11.0)], [failed]])
    assert two[0].value == 11.0 and two[0].meets is False
    assert two[0].note.endswith("median of 2 rounds (of 3, 1 failed): 3.00, 11.00 ms")
    assert merge_figure_rounds([[failed], [failed]]) == [failed]


def test_a_variant_measure_compares_jq_with_the_peers_rows_of_its_base_measure() -> None:
    report = sample_report()
    report.measurements += [
        Measurement(JQ, "cycle", 3000.0, "8 threads, lease + ack"),
        Measurement(JQ, "cycle_next", 9000.0, "8 threads, ack with lease_next"),
        Measurement(BEANSTALKD_FSYNC, "cycle", 6000.0, "8 threads, reserve+delete"),
    ]
    variant = next(m for m in MEASURES if m.key == "cycle_next")
    assert variant.peers_from == "cycle"
    rows = comparison_rows(report, variant)
    assert [row[:3] for row in rows] == [
        ["jq", "9,000", "reference"],
        [BEANSTALKD_FSYNC, "6,000", "1.50×"],
    ]
    assert report.rate(BEANSTALKD_FSYNC, "cycle_next") == 6000.0
    [(_, value)] = target_verdicts(
        report, [Target("cycles, one request", "cycle_next", BEANSTALKD_FSYNC, 1.0)]
    )
    assert value == pytest.approx(1.5)
    assert "### Lease+ack cycles, one request each" in render_markdown(report, [], None, [])


def test_sections_are_written_after_jq_alone() -> None:
    report = sample_report()
    report.sections = [("Where one submit's time goes", "| stage | µs |\n|---|---|\n| x | 1 |")]
    page = render_markdown(report, [], None, ["a note"])
    assert page.index("## jq alone") < page.index("## Where one submit's time goes")
    assert page.index("| x | 1 |") < page.index("## How it was measured")
