"""`jq schedules add|list|show|edit|pause|resume|rm` against a real `jq serve`: `--json` output
parsed, the tables looked at, and the exit codes of the errors (2 bad cron / time zone,
1 unknown schedule, 5 another definition under the same name, 3 no key)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import typer
from sdk.jq_server_process import ServerProcess
from typer.testing import CliRunner

from jq_tool.cli import schedules

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def root() -> None:
    """jq schedule commands (test app)."""


schedules.register(app)
runner = CliRunner()


def jq(server: ServerProcess, *args: str, code: int = 0, key: str | None = None) -> str:
    env = {"JQ_URL": server.url, "JQ_KEY": server.client_key if key is None else key}
    result = runner.invoke(app, ["schedules", *args], env=env)
    assert result.exit_code == code, (result.exit_code, result.output)
    return result.stdout


def jq_json(server: ServerProcess, *args: str) -> Any:
    return json.loads(jq(server, *args, "--json"))


def name() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


def test_add_show_edit_pause_resume_rm(jq_server: ServerProcess) -> None:
    n = name()
    created = jq_json(
        jq_server, "add", n, "0 3 * * *", '{"report": "daily"}', "--tz", "Europe/Berlin",
        "--queue", "reports", "--priority", "4", "--overlap", "skip", "--missed", "run-once",
        "--grace", "5m",
    )  # fmt: skip
    assert (created["name"], created["timezone"], created["queue"], created["priority"]) == (
        n,
        "Europe/Berlin",
        "reports",
        4,
    )
    assert (created["overlap"], created["missed"], created["grace_ms"]) == (
        "skip",
        "run_once",
        300_000,
    )
    assert created["payload"] == '{"report": "daily"}'

    shown = jq_json(jq_server, "show", n)
    assert len(shown["upcoming"]) == 5
    table = jq(jq_server, "show", n)
    assert n in table and "Europe/Berlin" in table and "upcoming" in table

    listed = jq_json(jq_server, "list")
    assert n in [s["name"] for s in listed]
    assert n in jq(jq_server, "list")

    edited = jq_json(jq_server, "edit", n, "--cron", "@hourly", "--payload", "hourly")
    assert edited["cron"] == "@hourly" and edited["payload"] == "hourly"
    assert edited["queue"] == "reports"  # untouched

    assert jq(jq_server, "pause", n).strip() == f"paused {n}"
    assert jq_json(jq_server, "show", n)["paused"] is True
    assert jq(jq_server, "resume", n).startswith(f"resumed {n}, next run ")
    assert jq(jq_server, "rm", n).strip() == f"deleted {n} (0 runs made)"
    jq(jq_server, "show", n, code=1)


def test_the_same_add_twice_is_fine_another_definition_is_a_conflict(
    jq_server: ServerProcess,
) -> None:
    n = name()
    jq(jq_server, "add", n, "@daily", "p")
    jq(jq_server, "add", n, "@daily", "p")
    out = runner.invoke(
        app,
        ["schedules", "add", n, "@hourly", "p", "--json"],
        env={"JQ_URL": jq_server.url, "JQ_KEY": jq_server.client_key},
    )
    assert out.exit_code == 5
    assert json.loads(out.stderr)["code"] == "schedule_exists"


def test_bad_definitions_are_usage_errors_naming_the_field(jq_server: ServerProcess) -> None:
    for args, field in [
        (("61 * * * *", "p"), "cron"),
        (("* * * * *", "p", "--tz", "Mars/Olympus"), "timezone"),
    ]:
        out = runner.invoke(
            app,
            ["schedules", "add", name(), *args],
            env={"JQ_URL": jq_server.url, "JQ_KEY": jq_server.client_key},
        )
        assert out.exit_code == 2, out.output
        assert f"({field})" in out.stderr or field in out.stderr
    jq(jq_server, "add", name(), "@daily", "p", "--overlap", "sometimes", code=2)
    jq(jq_server, "pause", name(), code=1)
    jq(jq_server, "list", code=3, key="")
