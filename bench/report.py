"""The comparison report: measurements of jq and its peers, the jq/peer ratio maths, and the
Markdown page and PNG chart that `python -m bench` writes to docs/.

Pure data and rendering, no measuring: the smoke test in tests/bench/ checks the ratios and the
table from hand-made measurements without starting anything. A measurement is a rate (jobs/s,
higher is better) of one system for one measure; a missing rate is never a zero, it carries the
reason it is missing, and its ratio cell says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

JQ = "jq"


@dataclass(frozen=True)
class Measure:
    """One row group of the comparison: what is being done, in jobs per second."""

    key: str
    title: str
    what: str  # one sentence: what is counted, so peers are compared like for like
    # The peers' rows come from this measure (they have no such call of their own: the same
    # work done their only way), so jq's variant is compared with the same peer figures.
    peers_from: str | None = None


MEASURES: tuple[Measure, ...] = (
    Measure(
        "submit_single",
        "Single submits",
        "one job per request/command, acknowledged by the server; concurrent clients "
        "(jq: wrk, 64 connections; the peers: 8 threads of their Python client)",
    ),
    Measure(
        "submit_one",
        "Single submits from one Python thread",
        "one client thread, one job per call, each waiting for its answer: latency-bound, so a "
        "system that fsyncs every job pays one disk flush per job here",
    ),
    Measure(
        "submit_batch",
        "Batch / pipelined submits",
        "many jobs per request (jq: POST /jobs/batch of 100) or pipelined commands",
    ),
    Measure(
        "worker",
        "One worker process, end to end",
        "jobs submitted ahead, then ONE worker process (incl. its start) leases/runs/acks "
        "no-op jobs until the queue is empty",
    ),
    Measure(
        "cycle",
        "Lease+ack cycles from a client",
        "take a job and settle it, concurrent clients, no handler",
    ),
    Measure(
        "cycle_next",
        "Lease+ack cycles, one request each (ack-and-lease-next)",
        "take a job and settle it, concurrent clients, no handler; jq settles each job and "
        "leases the next in one request (POST /jobs/ack with lease_next), the peers have no "
        "such call: their rows are the two-command cycles above",
        peers_from="cycle",
    ),
)

_PEERS_FROM = {m.key: m.peers_from for m in MEASURES if m.peers_from}


@dataclass(frozen=True)
class Measurement:
    system: str  # a key of the report's `systems`
    measure: str  # a Measure.key
    rate: float | None  # jobs/s; None: not measured, `note` says why
    setup: str = ""  # how it was driven (clients, batch size, duration)
    note: str = ""


@dataclass(frozen=True)
class System:
    name: str
    version: str
    durability: str  # when an acknowledged job is on disk: the honest one-liner


@dataclass(frozen=True)
class Figure:
    """A jq-only number (latency, restart, memory) with its target, when there is one."""

    label: str
    value: float | None
    unit: str
    target: str = ""
    meets: bool | None = None  # None: no target, or not measured
    note: str = ""


@dataclass
class Report:
    title: str
    machine: str
    mode: str  # "full" or "quick"
    started_at: str
    seconds: float = 0.0
    rounds: int = 1
    systems: dict[str, System] = field(default_factory=dict)
    measurements: list[Measurement] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    # (title, Markdown): sections written after "jq alone" (e.g. where a submit's time goes).
    sections: list[tuple[str, str]] = field(default_factory=list)

    def rate(self, system: str, measure: str) -> float | None:
        if system != JQ:
            measure = _PEERS_FROM.get(measure, measure)
        for m in self.measurements:
            if m.system == system and m.measure == measure and m.rate is not None:
                return m.rate
        return None


def merge_rounds(rounds: list[list[Measurement]]) -> list[Measurement]:
    """One measurement per (system, measure): the median rate over the rounds that measured it,
    with the spread in its setup. A noisy machine moves single readings a lot; the median of
    interleaved rounds is what the ratios are taken from. All rounds missing: the first note."""
    groups: dict[tuple[str, str], list[Measurement]] = {}
    for measurements in rounds:
        for m in measurements:
            groups.setdefault((m.system, m.measure), []).append(m)
    merged: list[Measurement] = []
    for (system, measure), ms in groups.items():
        rates = sorted(m.rate for m in ms if m.rate is not None)
        first = next((m for m in ms if m.rate is not None), ms[0])
        if not rates:
            merged.append(first)
            continue
        middle = len(rates) // 2
        median = rates[middle] if len(rates) % 2 else (rates[middle - 1] + rates[middle]) / 2
        setup = first.setup
        if len(ms) > 1:
            spread = f"median of {len(rates)}"
            if len(rates) < len(ms):
                spread += f" (of {len(ms)} rounds, {len(ms) - len(rates)} failed)"
            spread += f": {format_rate(rates[0])}–{format_rate(rates[-1])}"
            setup = f"{setup}; {spread}" if setup else spread
        merged.append(Measurement(system, measure, median, setup, first.note))
    return merged


def merge_figure_rounds(rounds: list[list[Figure]]) -> list[Figure]:
    """One figure per label, in the first round's order: the figure of the median round among
    those that measured it (of two middle ones the larger: the figures measured every round are
    latencies, judged against an upper bound), its note extended with every round's value.
    One burst in one round no longer decides a verdict; a figure only one round measured
    (restart, cluster, kill -9) is kept as it is."""
    groups: dict[str, list[Figure]] = {}
    for figures in rounds:
        for figure in figures:
            groups.setdefault(figure.label, []).append(figure)
    merged: list[Figure] = []
    for figures in groups.values():
        measured = sorted((f for f in figures if f.value is not None), key=_figure_value)
        if len(figures) == 1 or not measured:
            merged.append(figures[0])
            continue
        chosen = measured[len(measured) // 2]
        spread = f"median of {len(measured)} rounds"
        if len(measured) < len(figures):
            spread += f" (of {len(figures)}, {len(figures) - len(measured)} failed)"
        values = ", ".join(f"{_figure_value(f):.2f}" for f in measured)
        spread += f": {values} {chosen.unit}"
        note = f"{chosen.note}; {spread}" if chosen.note else spread
        merged.append(replace(chosen, note=note))
    return merged


def _figure_value(figure: Figure) -> float:
    assert figure.value is not None
    return figure.value


def ratio(jq_rate: float | None, peer_rate: float | None) -> float | None:
    """jq/peer for rates: above 1 means jq did more jobs per second. None when either side is
    missing or the peer measured zero (a ratio to nothing is not a number worth printing)."""
    if jq_rate is None or peer_rate is None:
        return None
    if not (math.isfinite(jq_rate) and math.isfinite(peer_rate)) or peer_rate <= 0:
        return None
    return jq_rate / peer_rate


def format_rate(rate: float | None) -> str:
    if rate is None:
        return "—"
    if rate >= 100:
        return f"{rate:,.0f}"
    return f"{rate:,.1f}"


def format_ratio(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 10:
        return f"{value:,.0f}×"
    return f"{value:.2f}×"


def _cell(text: str) -> str:
    # A pipe or newline in a note (an error message) would break the Markdown table.
    return text.replace("|", "\\|").replace("\n", " ").strip()


@dataclass(frozen=True)
class Target:
    text: str
    measure: str
    peer: str
    factor: float  # jq/peer must be at least this


def target_verdicts(report: Report, targets: list[Target]) -> list[tuple[Target, float | None]]:
    return [(t, ratio(report.rate(JQ, t.measure), report.rate(t.peer, t.measure))) for t in targets]


def comparison_rows(report: Report, measure: Measure) -> list[list[str]]:
    """Rows of one measure: jq first (the reference), then every peer with jq/peer."""
    jq_rate = report.rate(JQ, measure.key)
    rows: list[list[str]] = []
    order = {name: index for index, name in enumerate(report.systems)}
    peers_key = measure.peers_from or measure.key
    ordered = sorted(
        (
            m
            for m in report.measurements
            if m.measure == (measure.key if m.system == JQ else peers_key)
        ),
        key=lambda m: (m.system != JQ, order.get(m.system, len(order))),
    )
    for m in ordered:
        if m.system == JQ:
            ratio_text = "reference"
        elif m.rate is None:
            ratio_text = "n/a (not measured)"
        else:
            ratio_text = format_ratio(ratio(jq_rate, m.rate))
        rate_text = format_rate(m.rate)
        if m.rate is None and m.note:
            rate_text = f"— ({m.note})"
        elif m.note:
            rate_text = f"{rate_text} ({m.note})"
        system = report.systems.get(m.system)
        rows.append(
            [
                _cell(system.name if system else m.system),
                _cell(rate_text),
                ratio_text,
                _cell(m.setup),
            ]
        )
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(
    report: Report, targets: list[Target], chart_name: str | None, method_notes: list[str]
) -> str:
    out = [f"# {report.title}", ""]
    out.append(
        f"Measured by `python -m bench{' --quick' if report.mode == 'quick' else ''}` on "
        f"{report.machine}, started {report.started_at}, {report.seconds:.0f} s in all, "
        f"{report.rounds} round{'s' if report.rounds != 1 else ''}. Every "
        "system ran in the same run on the same machine, on loopback, one after the other; the "
        "load generator shares the CPUs with the server under test, so read the **ratios** "
        "(jq/peer: above 1 means jq did more jobs per second), not the absolute numbers."
    )
    out.append("")
    if chart_name:
        out += [f"![jq and its peers, jobs/s, log scale]({chart_name})", ""]
    out += ["## Targets", ""]
    target_rows = []
    for t, value in target_verdicts(report, targets):
        verdict = "not measured" if value is None else "met" if value >= t.factor else "**missed**"
        target_rows.append([_cell(t.text), format_ratio(value), verdict])
    out += [markdown_table(["target", "jq/peer", "verdict"], target_rows), ""]
    for f in report.figures:
        if f.target:
            verdict = "not measured" if f.meets is None else ("met" if f.meets else "**missed**")
            out.append(f"- {f.label}: {format_figure(f)} — target {f.target}: {verdict}")
    out += ["", "## Durability of each system as run here", ""]
    out += [
        markdown_table(
            ["system", "version", "when an acknowledged job is on disk"],
            [
                [_cell(s.name), _cell(s.version), _cell(s.durability)]
                for s in report.systems.values()
            ],
        ),
        "",
    ]
    out += ["## Throughput, jobs/s", ""]
    for measure in MEASURES:
        rows = comparison_rows(report, measure)
        if not rows:
            continue
        out += [f"### {measure.title}", "", f"{measure.what[0].upper()}{measure.what[1:]}.", ""]
        out += [markdown_table(["system", "jobs/s", "jq/peer", "setup"], rows), ""]
    out += ["## jq alone", ""]
    out += [
        markdown_table(
            ["measure", "value", "target", "note"],
            [
                [_cell(f.label), format_figure(f), _cell(f.target or "—"), _cell(f.note)]
                for f in report.figures
            ],
        ),
        "",
    ]
    for title, body in report.sections:
        out += [f"## {title}", "", body, ""]
    if method_notes:
        out += ["## How it was measured", ""]
        out += [f"- {note}" for note in method_notes]
        out.append("")
    return "\n".join(out)


def format_figure(f: Figure) -> str:
    if f.value is None:
        return "—"
    if f.unit == "s":
        return f"{f.value:.2f} s"
    if f.unit == "ms":
        return f"{f.value:.2f} ms"
    if f.unit == "×":
        return f"{f.value:.2f}×"
    return f"{f.value:,.0f} {f.unit}"


def render_chart(report: Report, path: Path) -> bool:
    """A grouped horizontal bar chart, one group per measure, log scale. False (and no file)
    when matplotlib is missing or nothing was measured."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on a server
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    groups: list[tuple[str, list[tuple[str, float]]]] = []
    for measure in MEASURES:
        peers_key = measure.peers_from or measure.key
        bars = [
            (report.systems[m.system].name if m.system in report.systems else m.system, m.rate)
            for m in report.measurements
            if m.measure == (measure.key if m.system == JQ else peers_key)
            and m.rate is not None
            and m.rate > 0
        ]
        if bars:
            groups.append((measure.title, bars))
    if not groups:
        return False
    names = list(dict.fromkeys(name for _, bars in groups for name, _ in bars))
    colors = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(names)}
    height = sum(len(bars) for _, bars in groups) * 0.32 + len(groups) * 0.6 + 1.2
    fig, ax = plt.subplots(figsize=(10, height))
    y = 0.0
    ticks, labels = [], []
    for title, bars in groups:
        ticks.append(y - 0.55)
        labels.append(title)
        for name, rate in bars:
            ax.barh(y, rate, color=colors[name], height=0.8)
            ax.text(rate * 1.08, y, f"{name}: {format_rate(rate)}/s", va="center", fontsize=8)
            y += 1.0
        y += 1.2
    ax.set_yticks(ticks, labels, fontweight="bold", fontsize=9)
    ax.tick_params(axis="y", length=0)
    ax.invert_yaxis()
    ax.set_xscale("log")
    rates = [rate for _, bars in groups for _, rate in bars]
    ax.set_xlim(min(rates) / 2, max(rates) * 15)  # room for the labels right of the bars
    rounds = f", median of {report.rounds} rounds" if report.rounds > 1 else ""
    ax.set_xlabel(f"jobs per second (log scale; same machine, same run{rounds})")
    ax.set_title(report.title)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
