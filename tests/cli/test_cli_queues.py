"""`jq queues show|pause|resume|limit` and `jq submit --unique-key/--depends-on` against a
real `jq serve`: `--json` output parsed, the table looked at, a client key refused (exit 3)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import typer
from sdk.jq_server_process import ServerProcess
from typer.testing import CliRunner

from jq_tool.cli import jobs, queues

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def root() -> None:
    """jq queue commands (test app)."""


queues.register(app)
jobs.register(app)
runner = CliRunner()


def jq(server: ServerProcess, *args: str, code: int = 0, key: str | None = None) -> str:
    env = {"JQ_URL": server.url, "JQ_KEY": server.admin_key if key is None else key}
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == code, (result.exit_code, result.output)
    return result.stdout


def jq_json(server: ServerProcess, *args: str) -> Any:
    return json.loads(jq(server, *args, "--json"))


def test_pause_limit_show_resume(jq_server: ServerProcess) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    jq(jq_server, "submit", "x", "--queue", queue)
    assert jq_json(jq_server, "queues", "pause", queue)["paused"] is True
    limited = jq_json(jq_server, "queues", "limit", queue, "--concurrency", "3", "--rate",
                      "10", "--per", "1s")  # fmt: skip
    assert (limited["concurrency"], limited["rate_limit"], limited["rate_period_ms"]) == (
        3,
        10,
        1000,
    )
    table = jq(jq_server, "queues", "show", queue)
    assert "paused" in table and "10 per 1000 ms" in table and "runnable" in table
    assert jq_json(jq_server, "queues", "resume", queue)["paused"] is False
    jq(jq_server, "queues", "pause", queue, code=3, key=jq_server.client_key)


def test_submit_unique_and_depends_on(jq_server: ServerProcess) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    key = uuid.uuid4().hex
    first = jq_json(jq_server, "submit", "x", "--queue", queue, "--unique-key", key)["job_id"]
    again = jq_json(jq_server, "submit", "x", "--queue", queue, "--unique-key", key)["job_id"]
    assert again == first
    child = jq_json(jq_server, "submit", "y", "--queue", queue, "--depends-on", first,
                    "--run-on-parent-failure")["job_id"]  # fmt: skip
    shown = jq_json(jq_server, "get", child)
    assert shown["state"] == "WAITING" and shown["depends_on"] == [first]
    waiting = jq_json(jq_server, "list", "--state", "WAITING", "--queue", queue)
    assert [j["job_id"] for j in waiting["jobs"]] == [child]
