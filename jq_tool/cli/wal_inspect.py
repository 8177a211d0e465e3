"""`jq wal-inspect DIR`: a read-only look at a local WAL directory. It shows the segments, the
records per type, the snapshot recovery would use, where the valid log ends and the first problem
found, using the same `examine()` that recovery uses, so what it says is what `jq serve` would do:
for a tail that would be dropped, how many bytes and complete records, whether a complete record
failed its CRC (damage, not a crash), and where the dropped bytes would be kept; and the
`*.broken` files earlier recoveries left (the bytes they dropped). It never writes to the
directory. Exit code: 0 clean, 1 a torn tail would be truncated, 2 corruption would refuse to
start (or DIR is not a WAL directory).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from jq_tool.core.model import decode_command
from jq_tool.core.wal import WalReport, examine
from jq_tool.core.wal_format import RECORD_COMMAND, SEGMENT_HEADER_SIZE, iter_records

EXIT_CLEAN = 0
EXIT_TORN_TAIL = 1
EXIT_CORRUPT = 2

RECORD_TYPE_NAMES = {RECORD_COMMAND: "command"}


def _type_name(record_type: int) -> str:
    return RECORD_TYPE_NAMES.get(record_type, f"unknown({record_type})")


def _status(report: WalReport) -> str:
    if report.corruption is not None:
        return "corrupt"
    if report.tail is not None:
        return "torn_tail"
    return "clean"


def _last_valid(report: WalReport) -> tuple[str, int] | None:
    if not report.segments:
        return None
    last = report.segments[-1]
    return last.path.name, last.valid_end


def summary_of(report: WalReport) -> dict[str, Any]:
    """The inspection as plain data: what --json prints."""
    type_counts: dict[str, int] = {}
    for segment in report.segments:
        for record_type, count in segment.type_counts.items():
            name = _type_name(record_type)
            type_counts[name] = type_counts.get(name, 0) + count
    last_valid = _last_valid(report)
    return {
        "directory": str(report.directory),
        "status": _status(report),
        "segments": [
            {
                "name": s.path.name,
                "first_index": s.first_index,
                "records": s.records,
                "bytes": s.size,
                "valid_end": s.valid_end,
            }
            for s in report.segments
        ],
        "stale_segments": [p.name for p in report.stale_segments],
        "kept_generation": {
            "snapshot": report.kept_snapshot.name if report.kept_snapshot else None,
            "segments": [p.name for p in report.kept_segments],
        },
        "record_types": type_counts,
        "snapshot": (
            {
                "name": report.snapshot.path.name,
                "index": report.snapshot.index,
                "bytes": report.snapshot.size,
            }
            if report.snapshot is not None
            else None
        ),
        "skipped_snapshots": [{"name": p.name, "reason": r} for p, r in report.skipped_snapshots],
        "next_index": report.next_index,
        "last_valid": (
            {"file": last_valid[0], "offset": last_valid[1]} if last_valid is not None else None
        ),
        "torn_tail": (
            {
                "file": str(report.tail.path),
                "offset": report.tail.offset,
                "dropped_bytes": report.tail.dropped,
                "complete_records": report.tail.records,
                "damaged": report.tail.damaged,
                "unwritten_bytes": report.tail.unwritten,
                "reason": report.tail.reason,
                "kept_in": report.tail.broken_path.name if report.tail.dropped else None,
            }
            if report.tail is not None
            else None
        ),
        "broken_files": [{"name": p.name, "bytes": p.stat().st_size} for p in report.broken_files],
        "corruption": (
            {
                "file": str(report.corruption.path),
                "offset": report.corruption.offset,
                "reason": report.corruption.reason,
            }
            if report.corruption is not None
            else None
        ),
    }


def _print_tables(report: WalReport, console: Console) -> None:
    summary = summary_of(report)
    console.print(f"[bold]WAL[/bold] {escape(str(report.directory))}")

    segments = Table(title="Segments")
    for column in ("name", "first index", "records", "bytes", "valid end"):
        segments.add_column(column, justify="left" if column == "name" else "right")
    for s in summary["segments"]:
        segments.add_row(
            s["name"],
            str(s["first_index"]),
            str(s["records"]),
            str(s["bytes"]),
            str(s["valid_end"]),
        )
    console.print(segments)

    types = Table(title="Records per type")
    types.add_column("type")
    types.add_column("records", justify="right")
    for name, count in sorted(summary["record_types"].items()):
        types.add_row(name, str(count))
    console.print(types)

    state = Table(title="State", show_header=False)
    state.add_column("what")
    state.add_column("value")
    snapshot = summary["snapshot"]
    state.add_row(
        "snapshot in use",
        f"{snapshot['name']} (index {snapshot['index']}, {snapshot['bytes']} bytes)"
        if snapshot
        else "none",
    )
    for skipped in summary["skipped_snapshots"]:
        state.add_row("skipped snapshot", f"{skipped['name']}: {skipped['reason']}")
    if summary["stale_segments"]:
        state.add_row("stale segments", ", ".join(summary["stale_segments"]))
    kept = summary["kept_generation"]
    kept_names = [name for name in (kept["snapshot"], *kept["segments"]) if name]
    if kept_names:
        state.add_row("kept for a fallback", ", ".join(kept_names))
    state.add_row("next index", str(summary["next_index"]))
    last_valid = summary["last_valid"]
    state.add_row(
        "last valid offset",
        f"{last_valid['file']} @ {last_valid['offset']}" if last_valid else "no segments",
    )
    if report.tail is not None:
        label = "[red]damaged tail[/red]" if report.tail.damaged else "[yellow]torn tail[/yellow]"
        state.add_row(label, report.tail.describe())
        if report.tail.dropped:
            state.add_row("dropped bytes would be kept in", report.tail.broken_path.name)
    for broken in summary["broken_files"]:
        state.add_row("kept by an earlier recovery", f"{broken['name']} ({broken['bytes']} bytes)")
    if report.corruption is not None:
        state.add_row("[red]corruption[/red]", str(report.corruption))
    status_style = {"clean": "green", "torn_tail": "yellow", "corrupt": "red"}[summary["status"]]
    state.add_row("status", f"[{status_style}]{summary['status']}[/{status_style}]")
    console.print(state)


def _write_records(report: WalReport) -> None:
    out = sys.stdout
    for segment in report.segments:
        if segment.valid_end <= SEGMENT_HEADER_SIZE:
            continue
        data = segment.path.read_bytes()
        index = segment.first_index
        for record_type, body in iter_records(data, SEGMENT_HEADER_SIZE, segment.valid_end):
            line: dict[str, Any] = {"index": index, "type": _type_name(record_type)}
            if record_type == RECORD_COMMAND:
                try:
                    line["command"] = msgspec.to_builtins(decode_command(body))
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    line["command"] = None
                    line["error"] = f"undecodable command: {exc}"
            else:
                line["command"] = None
                line["bytes"] = len(body)
            out.write(msgspec.json.encode(line).decode() + "\n")
            index += 1
    out.flush()


def wal_inspect(
    directory: Path = typer.Argument(..., help="The WAL directory (WAL_DIR of `jq serve`)."),
    records: bool = typer.Option(
        False, "--records", help="Dump every record as one JSON line on stdout."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
) -> None:
    """Inspect a WAL directory without changing it. Exit 0 clean, 1 torn tail, 2 corruption."""
    if not directory.is_dir():
        Console(stderr=True, soft_wrap=True).print(
            f"[red]error:[/red] {escape(str(directory))} is not a directory"
        )
        raise typer.Exit(EXIT_CORRUPT)
    try:
        report = examine(directory)
    except OSError as exc:
        Console(stderr=True, soft_wrap=True).print(
            f"[red]error:[/red] cannot read the WAL: {escape(str(exc))}"
        )
        raise typer.Exit(EXIT_CORRUPT) from None
    # With --records, stdout carries only record lines; the summary goes to stderr.
    console = Console(stderr=records, soft_wrap=True)
    if as_json:
        console.print_json(msgspec.json.encode(summary_of(report)).decode())
    else:
        _print_tables(report, console)
    if records:
        _write_records(report)
    if report.corruption is not None:
        raise typer.Exit(EXIT_CORRUPT)
    if report.tail is not None:
        raise typer.Exit(EXIT_TORN_TAIL)


def register(app: typer.Typer) -> None:
    app.command("wal-inspect")(wal_inspect)
