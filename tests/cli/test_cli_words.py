"""The CLI talks to a person on the command line, not an HTTP client: errors name the flag or
variable to fix and never an internal class or a status line; `--json` errors have one shape
`{"error", "code", "status"}` (usage errors too); empty lists say so; a time without a zone is
UTC whatever the machine's zone; `ack --no-retry` is a final failure; `jq worker` logs one line
per job under `jq.worker`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sdk.jq_server_process import ServerProcess, free_port, wait_until
from typer.testing import CliRunner

from cli.jq_app import app
from jq_tool.sdk import Client

runner = CliRunner()
JQ = [sys.executable, "-m", "jq_tool.cli.main"]


def jq(server: ServerProcess | None, key: str | None, *args: str, code: int = 0) -> tuple[str, str]:
    env = {"JQ_URL": server.url if server else "http://127.0.0.1:1", "JQ_KEY": key or ""}
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == code, (result.exit_code, result.output)
    return result.stdout, result.stderr


def json_error(stderr: str) -> dict[str, Any]:
    error = json.loads(stderr)
    assert set(error) == {"error", "code", "status"}, error
    return dict(error)


INTERNALS = ("TransportFailure", "Errno", "ServerUnavailable", "Traceback", "Authorization")


def test_errors_in_cli_words(jq_server: ServerProcess, queue: str) -> None:
    _, err = jq(jq_server, None, "stats", code=3)
    assert "pass --key or set JQ_KEY" in err and "Bearer" not in err
    _, err = jq(jq_server, "client_unknown", "stats", code=3)
    assert "--key" in err and "JQ_KEY" in err and "401" not in err
    dead_url = f"http://127.0.0.1:{free_port()}"
    _, err = jq(jq_server, jq_server.client_key, "stats", "--url", dead_url, code=4)
    assert f"cannot reach the server at {dead_url}: connection refused" in err
    _, err = jq(jq_server, jq_server.client_key, "get", "no-such-job", code=1)
    assert "job not found" in err and "404" not in err and "not_found" not in err
    _, err = jq(jq_server, jq_server.client_key, "lease", "--queue", queue, code=3)
    assert "jobs:lease" in err and "403" not in err
    for text in (err,):
        assert not any(word in text for word in INTERNALS), text


def test_json_errors_have_one_shape(jq_server: ServerProcess, queue: str) -> None:
    client = jq_server.client_key
    missing = json_error(jq(jq_server, client, "get", "nope", "--json", code=1)[1])
    assert missing == {"error": "job not found", "code": "not_found", "status": 404}
    no_key = json_error(jq(jq_server, None, "stats", "--json", code=3)[1])
    assert no_key["code"] == "unauthorized" and no_key["status"] is None
    refused = json_error(jq(jq_server, "client_unknown", "stats", "--json", code=3)[1])
    assert refused["code"] == "unauthorized" and refused["status"] == 401
    unreachable = json_error(
        jq(jq_server, client, "stats", "--json", "--url", f"http://127.0.0.1:{free_port()}",
           code=4)[1]
    )  # fmt: skip
    assert unreachable["code"] == "unreachable" and unreachable["status"] is None
    worker = jq_server.worker_key
    none = json_error(jq(jq_server, worker, "lease", "-q", queue, "--json", code=1)[1])
    assert none["error"] == "no jobs available" and none["code"] == "not_found"
    bad = json_error(jq(jq_server, client, "submit", "x", "-q", "bad queue!", "--json", code=2)[1])
    assert bad["status"] == 400 and "queue" in bad["error"]
    assert not any(word in json.dumps([missing, refused, unreachable]) for word in INTERNALS)


def test_usage_errors_under_json_too() -> None:
    """Click refuses a bad option value before the command runs; the real program still answers
    in the one shape (the in-process test app has no such wrapper, so a real process)."""
    result = subprocess.run(
        [*JQ, "submit", "x", "--delay", "soon", "--json", "--key", "client_x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    error = json_error(result.stderr)
    assert error["code"] == "invalid_input" and "--delay" in error["error"]
    assert error["status"] is None


def test_empty_lists_say_so(jq_server: ServerProcess, queue: str) -> None:
    out, _ = jq(jq_server, jq_server.client_key, "list", "--queue", queue, "--state", "DEAD")
    assert out.strip() == f"no jobs with state DEAD and queue {queue}"
    out, _ = jq(jq_server, jq_server.client_key, "list", "--queue", queue)
    assert out.strip() == f"no jobs with queue {queue}"
    # A job list with jobs is still a table, its times marked as UTC.
    jq(jq_server, jq_server.client_key, "submit", "x", "--queue", queue)
    out, _ = jq(jq_server, jq_server.client_key, "list", "--queue", queue)
    assert "times in UTC" in out and "Z" in out


def test_a_time_without_zone_is_utc_in_any_zone(jq_server: ServerProcess, queue: str) -> None:
    env = {**os.environ, "TZ": "Pacific/Auckland", "JQ_URL": jq_server.url}
    env["JQ_KEY"] = jq_server.client_key or ""
    submitted = subprocess.run(
        [*JQ, "submit", "x", "-q", queue, "--run-at", "2099-01-02 03:04:05", "--json"],
        capture_output=True, text=True, timeout=60, env=env, check=True,
    )  # fmt: skip
    job_id = json.loads(submitted.stdout)["job_id"]
    shown = subprocess.run(
        [*JQ, "get", job_id], capture_output=True, text=True, timeout=60, env=env, check=True
    )
    assert "2099-01-02 03:04:05Z" in shown.stdout  # shown in UTC too, not in Auckland time
    with Client(jq_server.url, jq_server.client_key) as client:
        run_at = client.get(job_id).run_at
    assert run_at is not None and run_at.isoformat() == "2099-01-02T03:04:05+00:00"
    helped = runner.invoke(app, ["submit", "--help"], env={"COLUMNS": "200"})
    assert "without a zone, UTC" in helped.stdout


def test_ack_no_retry_is_final(jq_server: ServerProcess, queue: str) -> None:
    client, worker = jq_server.client_key, jq_server.worker_key
    out, _ = jq(jq_server, client, "submit", "x", "--queue", queue, "--max-retries", "5")
    job_id = out.strip()
    leased = json.loads(jq(jq_server, worker, "lease", "--queue", queue, "--json")[0])
    jq(jq_server, worker, "ack", job_id, "--lease-id", leased["lease_id"], "--no-retry", code=2)
    out, _ = jq(
        jq_server, worker, "ack", job_id, "--lease-id", leased["lease_id"],
        "--error", "bad input", "--no-retry", "--json",
    )  # fmt: skip
    assert json.loads(out) == {"job_id": job_id, "state": "DEAD"}


HANDLERS = """
from jq_tool.sdk import Failure

def handle(job):
    if job.payload == "ok":
        return "fine"
    if job.payload == "final":
        return Failure("bad input", retry=False)
    raise ValueError("flaky " + job.payload)
"""


@pytest.mark.slow
def test_worker_logs_one_line_per_job(jq_server: ServerProcess, queue: str, tmp_path: Path) -> None:
    (tmp_path / "words_handlers.py").write_text(HANDLERS)
    with Client(jq_server.url, jq_server.client_key) as client:
        ids = {name: client.submit(name, queue=queue) for name in ("ok", "final", "boom")}
    worker = subprocess.Popen(
        [*JQ, "worker", "words_handlers:handle", "--queue", queue, "--wait", "1s"],
        cwd=tmp_path,
        env={**os.environ, "JQ_URL": jq_server.url, "JQ_KEY": jq_server.worker_key or ""},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with Client(jq_server.url, jq_server.client_key) as client:
            wait_until(lambda: client.get(ids["final"]).state.value == "DEAD")
            wait_until(lambda: client.get(ids["ok"]).state.value == "ACKED")
            wait_until(lambda: client.get(ids["boom"]).attempts >= 1)
            error = client.get(ids["boom"]).result_error or ""
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, output
    per_job = [line for line in output.splitlines() if " jq.worker: job " in line]
    by_id = {job_id: [line for line in per_job if job_id in line] for job_id in ids.values()}
    assert f"job {ids['ok']} queue={queue} attempt=1/4 ok in " in by_id[ids["ok"]][0]
    # The duration follows what happened, and what comes of it follows the duration: "failed,
    # will retry in 0ms" read as when the retry was due.
    assert re.search(r" failed in \d+ms, final \(DEAD\): bad input$", by_id[ids["final"]][0])
    boom = by_id[ids["boom"]][0]
    assert re.search(r"attempt=1/4 failed in \d+ms, will retry: ValueError: flaky boom$", boom)
    assert all(len(lines) >= 1 for lines in by_id.values())
    # The job's traceback begins at the handler, not in the worker or `jq worker`'s wrapper.
    assert error.splitlines()[1].startswith(f'  File "{tmp_path / "words_handlers.py"}"'), error
    assert "jq_tool" not in error, error
    assert " root: " not in output  # everything the worker says is under a named logger


def _command_rows(help_text: str) -> list[str]:
    """The lines of a help screen's Commands panel, between its borders."""
    lines = help_text.splitlines()
    start = next(i for i, line in enumerate(lines) if "─ Commands ─" in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("╰"))
    return [line.strip("│ ") for line in lines[start + 1 : end]]


def test_every_command_is_summed_up_on_one_line() -> None:
    """A command's summary in a list of commands is its docstring's first paragraph on one line:
    Typer's rich mode kept the docstring's line breaks there, so a wide terminal showed
    'the attempt is not' and 'counted.' on two rows."""
    from jq_tool.cli.main import build_app

    app = build_app()
    screens = [[]] + [[group.name] for group in app.registered_groups if group.name]
    assert len(screens) > 3
    for args in screens:
        helped = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "400"})
        assert helped.exit_code == 0, helped.output
        rows = _command_rows(helped.stdout)
        assert rows, args
        for row in rows:
            name, _, summary = row.partition(" ")
            assert name and summary.strip(), (args, row)  # no row of a summary's second line
            assert "  " not in summary.strip(), (args, row)
