"""How the client commands talk back: rich tables for people, `--json` for scripts, the one
table from SDK exceptions to exit codes, and errors said in the CLI's words.

Exit codes (the CLI's contract): 0 ok, 1 not found / no job available, 2 usage or bad input,
3 auth refused (401/403), 4 server unavailable (or out of disk), 5 conflict (409).

An error is one line on stderr: what went wrong in the words of the command line (which flag or
variable to fix: "pass --key or set JQ_KEY", "cannot reach the server at URL: connection
refused"), never an HTTP detail or an internal class name. With `--json` it is one JSON object of
one shape, `{"error": message, "code": machine code, "status": HTTP status or null}`.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NoReturn

import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from jq_tool.sdk import (
    BadRequest,
    Conflict,
    Forbidden,
    JqError,
    NotFound,
    PayloadTooLarge,
    ServerUnavailable,
    StorageFull,
    TlsError,
    Unauthorized,
    format_time,
)
from jq_tool.terminal_text import terminal_safe

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


def fail(
    message: str,
    code: int,
    *,
    as_json: bool,
    error_code: str | None = None,
    status: int | None = None,
) -> NoReturn:
    """Report an error on stderr (JSON when --json) and exit with `code`."""
    if as_json:
        print_json_error(message, error_code or _CODE_FOR_EXIT.get(code, "error"), status)
    else:
        Console(stderr=True, soft_wrap=True, highlight=False).print(
            f"[bold red]error:[/] {escape(terminal_safe(message))}", markup=True
        )
    raise typer.Exit(code)


def print_json_error(message: str, code: str, status: int | None) -> None:
    """The one shape of an error under --json."""
    body = {"error": message, "code": code, "status": status}
    sys.stderr.write(_json.encode(body).decode("utf-8") + "\n")
    sys.stderr.flush()


# Machine codes of the failures that never reached the server.
_CODE_FOR_EXIT = {
    EXIT_NOT_FOUND: "not_found",
    EXIT_USAGE: "invalid_input",
    EXIT_AUTH: "unauthorized",
    EXIT_UNAVAILABLE: "unreachable",
    EXIT_CONFLICT: "conflict",
}
NO_KEY = "no API key: pass --key or set JQ_KEY"


def _reason(error: BaseException) -> str:
    """Why a request got no answer, in a few plain words, from the OS error beneath it."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, socket.gaierror):
            return "unknown host"
        if isinstance(cause, TimeoutError):
            return "no answer in time"
        if isinstance(cause, OSError) and cause.errno is not None:
            if cause.errno == errno.ECONNREFUSED:
                return "connection refused (is the server running there?)"
            return (cause.strerror or str(cause)).lower()
        cause = cause.__cause__ or cause.__context__
    # The SDK's own words for an answer that broke off: drop "METHOD /path: " before them.
    text = str(error)
    return text.split(": ", 1)[1] if ": " in text and text.split(" ", 1)[0].isupper() else text


def describe(error: JqError, url: str) -> str:
    """An SDK exception in the CLI's words: which server, which flag, what to do."""
    if error.status is None:  # no answer at all
        if isinstance(error, TlsError):
            return (
                f"cannot reach the server at {url}: its TLS certificate was refused "
                "(point SSL_CERT_FILE at its CA bundle)"
            )
        if not isinstance(error, ServerUnavailable):
            return error.message  # an answer the SDK could not read
        return f"cannot reach the server at {url}: {_reason(error)}; check --url or JQ_URL"
    where = f" ({error.field})" if error.field and error.field not in error.message else ""
    if isinstance(error, Unauthorized):
        return f"the server refused the API key ({error.message}): pass a valid --key or JQ_KEY"
    if isinstance(error, ServerUnavailable):
        return f"the server at {url} is unavailable: {error.message}; try again shortly"
    if isinstance(error, StorageFull):
        return "the server's disk is full, nothing was written: try again later"
    return f"{error.message}{where}"


@contextmanager
def reported_errors(as_json: bool, url: str = "") -> Iterator[None]:
    """Turn SDK exceptions and bad input into a message and the right exit code."""
    try:
        yield
    except JqError as error:
        fail(
            describe(error, url),
            exit_code_for(error),
            as_json=as_json,
            error_code=error.code or ("unreachable" if error.status is None else None),
            status=error.status,
        )
    except ValueError as error:
        fail(str(error), EXIT_USAGE, as_json=as_json, error_code="invalid_input")


def show_time(moment: datetime | int | None) -> str:
    """A time for a table: UTC, marked with Z (every time the CLI shows or reads is UTC)."""
    if moment is None:
        return "-"
    if isinstance(moment, int):
        return str(moment)
    return format_time(moment)[:19].replace("T", " ") + "Z"


def print_record(title: str, fields: Sequence[tuple[str, object]]) -> None:
    """A two-column table of one record's fields."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in fields:
        shown = show_time(value) if isinstance(value, datetime) else value
        table.add_row(name, _cell(shown))
    stdout().print(table)


def _cell(value: object) -> Text:
    """A table cell as written: a str cell is read as Rich markup, and these hold what clients
    wrote (a payload of "[/]" raised MarkupError and `jq get` died with a traceback); and with
    the characters a terminal acts on shown as escapes (jq_tool/terminal_text.py)."""
    return Text("-" if value is None else terminal_safe(str(value)))


def print_rows(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], *, empty: str = ""
) -> None:
    """A table; with no rows, the sentence `empty` says so instead (an empty table says nothing)."""
    if not rows and empty:
        stdout().print(empty, markup=False)
        return
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*[_cell(show_time(v) if isinstance(v, datetime) else v) for v in row])
    stdout().print(table)
