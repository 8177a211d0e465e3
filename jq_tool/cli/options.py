"""The options the client commands of `jq` share, declared once: where the server is (`--url`,
env JQ_URL), the API key (`--key`, JQ_KEY), `--json`, `--queue`, durations (`500ms`, `5s`, `2m`:
read by the one parser in jq_tool/units.py) and times (RFC 3339, by the SDK's parser; without a
zone, UTC, the HTTP API's rule), plus the SDK `Client` those options describe. Every command
group (jobs, keys, worker, tui) types its parameters with these, so a flag is spelled,
documented and parsed the same everywhere.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

import typer

from jq_tool.cli.output import EXIT_AUTH, EXIT_USAGE, NO_KEY, fail, reported_errors
from jq_tool.sdk import Client, parse_time
from jq_tool.units import parse_duration_ms

UrlOption = Annotated[
    str, typer.Option("--url", envvar="JQ_URL", help="The server's URL.", show_envvar=True)
]
KeyOption = Annotated[
    str | None,
    typer.Option("--key", envvar="JQ_KEY", help="API key.", show_envvar=True, show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
QueueOption = Annotated[str, typer.Option("--queue", "-q", help="Queue name.")]


def _seconds(value: str | float) -> float:
    # Click passes a default through the parser too: those are already seconds.
    if isinstance(value, int | float):
        return float(value)
    try:
        return parse_duration_ms(value) / 1000
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _time(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        return value
    try:
        return parse_time(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def payload_text(argument: str, *, as_json: bool) -> str:
    """A payload argument as the text the API takes; '-' reads stdin. A payload is UTF-8 text:
    stdin is read as bytes and decoded strictly, and an argument that is not UTF-8 (Python
    keeps such bytes of argv as lone surrogates) is refused here, saying where, rather than by
    the encoder's message when the request is sent."""
    if argument == "-":
        data = sys.stdin.buffer.read()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            where = f"byte 0x{data[exc.start]:02x} at offset {exc.start}"
            fail(
                f"stdin is not UTF-8 text ({where}): a payload is text; encode binary data "
                "first, e.g. with base64",
                EXIT_USAGE,
                as_json=as_json,
            )
    try:
        argument.encode("utf-8")
    except UnicodeEncodeError as exc:
        fail(
            f"the payload is not UTF-8 text (at character {exc.start}): a payload is text; "
            "encode binary data first, e.g. with base64",
            EXIT_USAGE,
            as_json=as_json,
        )
    return argument


def duration_option(help: str, *, default: str | None = None) -> Any:
    """A duration option, given in seconds to the command: `--wait 5s`, `--grace 500ms`.
    `default` is how the default is shown (`"10s"`); the parameter's default is seconds."""
    return typer.Option(
        parser=_seconds,
        metavar="DURATION",
        help=help,
        show_default=default if default is not None else False,
    )


def time_option(*names: str, help: str) -> Any:
    """A time option (RFC 3339 / ISO 8601; without an offset, UTC, as in the HTTP API)."""
    return typer.Option(*names, parser=_time, metavar="TIME", help=help, show_default=False)


@contextmanager
def open_client(url: str, key: str | None, as_json: bool) -> Iterator[Client]:
    """The SDK client for --url and --key; its refusals become messages and exit codes. Every
    client command needs a key: without one it stops here, before asking the server."""
    if not key:
        fail(NO_KEY, EXIT_AUTH, as_json=as_json, error_code="unauthorized")
    with reported_errors(as_json, url):
        client = Client(url, key)
    with client, reported_errors(as_json, url):
        yield client
