"""How the client commands talk back: rich tables for people, `--json` for scripts, and the
one table from SDK exceptions to exit codes.

Exit codes (the CLI's contract): 0 ok, 1 not found / no job available, 2 usage or bad input,
3 auth refused (401/403), 4 server unavailable (or out of disk), 5 conflict (409).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from jq_tool.sdk import (
    BadRequest,
    Conflict,
    Forbidden,
    JqError,
    NotFound,
    PayloadTooLarge,
    ServerUnavailable,
    StorageFull,
    Unauthorized,
    format_time,
)

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_UNAVAILABLE = 4
EXIT_CONFLICT = 5

_EXIT_CODES: list[tuple[type[Exception], int]] = [
    (NotFound, EXIT_NOT_FOUND),
    (BadRequest, EXIT_USAGE),
    (PayloadTooLarge, EXIT_USAGE),
    (ValueError, EXIT_USAGE),
    (Unauthorized, EXIT_AUTH),
    (Forbidden, EXIT_AUTH),
    (ServerUnavailable, EXIT_UNAVAILABLE),
    (StorageFull, EXIT_UNAVAILABLE),
    (Conflict, EXIT_CONFLICT),
]

_json = msgspec.json.Encoder()


def exit_code_for(error: Exception) -> int:
    for kind, code in _EXIT_CODES:
        if isinstance(error, kind):
            return code
    return EXIT_UNAVAILABLE if isinstance(error, JqError) else EXIT_USAGE


def stdout() -> Console:
    # Piped output is not cut to 80 columns: a job id must stay on one line for grep and cut.
    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def _api_times(value: Any) -> Any:
    """Times as the API writes them (RFC 3339 UTC, milliseconds), not msgspec's microseconds."""
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, dict):
        return {key: _api_times(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_api_times(item) for item in value]
    return value


def print_json(value: Any) -> None:
    """One JSON document on stdout (SDK Structs, dicts and lists of them)."""
    plain = _api_times(msgspec.to_builtins(value, builtin_types=(datetime,)))
    sys.stdout.write(_json.encode(plain).decode("utf-8") + "\n")
    sys.stdout.flush()


def fail(message: str, code: int, *, as_json: bool, error_code: str | None = None) -> None:
    """Report an error on stderr (JSON when --json) and exit with `code`."""
    if as_json:
        body = {"error": message, "code": error_code, "exit_code": code}
        sys.stderr.write(_json.encode(body).decode("utf-8") + "\n")
    else:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {message}", markup=True)
    raise typer.Exit(code)


@contextmanager
def reported_errors(as_json: bool) -> Iterator[None]:
    """Turn SDK exceptions and bad input into a message and the right exit code."""
    try:
        yield
    except JqError as error:
        fail(str(error), exit_code_for(error), as_json=as_json, error_code=error.code)
    except ValueError as error:
        fail(str(error), EXIT_USAGE, as_json=as_json, error_code="invalid_input")


def show_time(moment: datetime | int | None) -> str:
    if moment is None:
        return "-"
    if isinstance(moment, int):
        return str(moment)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def print_record(title: str, fields: Sequence[tuple[str, object]]) -> None:
    """A two-column table of one record's fields."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in fields:
        shown = show_time(value) if isinstance(value, datetime) else value
        table.add_row(name, "-" if shown is None else str(shown))
    stdout().print(table)


def print_rows(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            *[
                show_time(v) if isinstance(v, datetime) else ("-" if v is None else str(v))
                for v in row
            ]
        )
    stdout().print(table)
