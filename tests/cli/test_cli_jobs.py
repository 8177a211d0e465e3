"""Every client command of `jq` against a real `jq serve`: `--json` output parsed, the rich
output looked at, and the exit codes of the error cases (1 not found, 2 usage, 3 auth,
4 unavailable, 5 conflict)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sdk.dropping_proxy import DroppingProxy
from sdk.jq_server_process import ServerProcess, free_port
from typer.testing import CliRunner

from cli.jq_app import app
from jq_tool.cli import schedules
from jq_tool.sdk import format_time

runner = CliRunner()


def jq(server: ServerProcess, key: str, *args: str, code: int = 0, stdin: str | None = None) -> str:
    result = runner.invoke(app, list(args), env={"JQ_URL": server.url, "JQ_KEY": key}, input=stdin)
    assert result.exit_code == code, (result.exit_code, result.output)
    return result.stdout


def jq_json(server: ServerProcess, key: str, *args: str) -> Any:
    return json.loads(jq(server, key, *args, "--json"))


def test_a_payload_is_utf8_text_kept_as_sent_and_other_bytes_are_refused_by_name(
    jq_server: ServerProcess, queue: str
) -> None:
    client = jq_server.client_key
    env = {"JQ_URL": jq_server.url, "JQ_KEY": client}
    text = "crlf\r\nand a lone cr\r, ünïcode ✓, a BOM \ufeff, a tab\t"
    piped = json.loads(jq(jq_server, client, "submit", "-", "--queue", queue, "--json", stdin=text))
    assert jq_json(jq_server, client, "get", piped["job_id"])["payload"] == text
    # A binary file on stdin: refused before anything is sent, saying which byte.
    png = b"\x89PNG\r\n\x1a\n\x00\xff"
    refused = runner.invoke(app, ["submit", "-", "--queue", queue], env=env, input=png)
    assert refused.exit_code == 2, refused.output
    assert "stdin is not UTF-8 text (byte 0x89 at offset 0)" in refused.output
    assert "Traceback" not in refused.output and "codec" not in refused.output
    # An argument in another encoding (Python keeps its bytes as lone surrogates).
    latin1 = runner.invoke(app, ["submit", "caf\udce9", "--queue", queue], env=env)
    assert latin1.exit_code == 2 and "not UTF-8 text (at character 3)" in latin1.output
    schedule = runner.invoke(
        schedules.schedules_app, ["add", f"{queue}-bin", "* * * * *", "-", "--queue", queue],
        env=env, input=png,
    )  # fmt: skip
    assert schedule.exit_code == 2 and "stdin is not UTF-8 text" in schedule.output
    stats = jq_json(jq_server, client, "stats")
    assert stats["queues"][queue]["total"] == 1  # only the UTF-8 one


def test_submit_get_list_stats(jq_server: ServerProcess, queue: str) -> None:
    client = jq_server.client_key
    job_id = jq(jq_server, client, "submit", "plain", "--queue", queue).strip()
    assert len(job_id) == 36
    submitted = jq_json(
        jq_server, client, "submit", "{\"a\": 1}", "--queue", queue, "--priority", "5",
        "--max-retries", "1", "--delay", "10m",
    )  # fmt: skip
    job = jq_json(jq_server, client, "get", submitted["job_id"])
    assert job["payload"] == '{"a": 1}' and job["priority"] == 5 and job["max_retries"] == 1
    assert job["state"] == "READY"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", job["run_at"])  # as the API

    piped = json.loads(
        jq(jq_server, client, "submit", "-", "--queue", queue, "--json", stdin="from stdin")
    )
    assert jq_json(jq_server, client, "get", piped["job_id"])["payload"] == "from stdin"

    page = jq_json(jq_server, client, "list", "--queue", queue, "--limit", "2")
    assert len(page["jobs"]) == 2 and page["next_cursor"]
    ready = jq_json(jq_server, client, "list", "--queue", queue, "--state", "ready")
    assert {j["job_id"] for j in ready["jobs"]} == {job_id, submitted["job_id"], piped["job_id"]}

    stats = jq_json(jq_server, client, "stats")
    assert stats["queues"][queue]["scheduled"] == 1 and stats["queues"][queue]["runnable"] == 2

    table = jq(jq_server, client, "get", job_id)
    assert job_id in table and "READY" in table
    assert queue in jq(jq_server, client, "stats")
    assert job_id[:8] in jq(jq_server, client, "list", "--queue", queue)


def test_idempotency_key_option(jq_server: ServerProcess, queue: str) -> None:
    args = ("submit", "x", "--queue", queue, "--idempotency-key", "cli-" + queue)
    first = jq(jq_server, jq_server.client_key, *args).strip()
    assert jq(jq_server, jq_server.client_key, *args).strip() == first


def test_submit_sends_a_key_and_reuses_it_on_its_retries(
    jq_server: ServerProcess, queue: str
) -> None:
    # The first two answers are lost after the server made the job: the CLI retries, and its
    # retries carry the key of its first try, so three tries make one job.
    proxy = DroppingProxy(jq_server.port, drop_first=2)
    try:
        result = runner.invoke(
            app,
            ["submit", "once", "--queue", queue, "--json"],
            env={"JQ_URL": proxy.url, "JQ_KEY": jq_server.client_key},
        )
        assert result.exit_code == 0, result.output
        assert proxy.requests == 3
    finally:
        proxy.close()
    job_id = json.loads(result.stdout)["job_id"]
    page = jq_json(jq_server, jq_server.client_key, "list", "--queue", queue)
    assert [job["job_id"] for job in page["jobs"]] == [job_id]


def test_submit_whose_outcome_stays_unknown_names_the_key_to_retry_with(
    jq_server: ServerProcess, queue: str
) -> None:
    proxy = DroppingProxy(jq_server.port, drop_first=1000)  # no answer ever comes back
    try:
        result = runner.invoke(
            app,
            ["submit", "maybe", "--queue", queue],
            env={"JQ_URL": proxy.url, "JQ_KEY": jq_server.client_key},
        )
    finally:
        proxy.close()
    assert result.exit_code == 4, result.output
    assert "may or may not exist" in result.stderr
    found = re.search(r"--idempotency-key (\S+)", result.stderr)
    assert found is not None, result.stderr
    # Every try reached the server with that key: running again with it answers the one job.
    args = ("submit", "maybe", "--queue", queue, "--idempotency-key", found.group(1))
    job_id = jq(jq_server, jq_server.client_key, *args).strip()
    page = jq_json(jq_server, jq_server.client_key, "list", "--queue", queue)
    assert [job["job_id"] for job in page["jobs"]] == [job_id]


def test_release(jq_server: ServerProcess, queue: str) -> None:
    """`jq release`: the lease given back, READY again after --delay; a stale lease is a
    conflict (exit 5)."""
    client, worker = jq_server.client_key, jq_server.worker_key
    job_id = jq(jq_server, client, "submit", "work", "--queue", queue, "--max-retries", "0").strip()
    leased = jq_json(jq_server, worker, "lease", "--queue", queue)
    released = jq(jq_server, worker, "release", job_id, "--lease-id", leased["lease_id"],
                  "--delay", "1h")  # fmt: skip
    assert released.split() == [job_id, "READY"]
    assert jq_json(jq_server, client, "get", job_id)["attempts"] == 0
    jq(jq_server, worker, "release", job_id, "--lease-id", leased["lease_id"], code=5)
    jq(jq_server, worker, "lease", "--queue", queue, code=1)  # scheduled an hour ahead
    jq(jq_server, worker, "release", job_id, "--delay", "soon", code=2)


def test_lease_ack_fail_cancel_requeue(jq_server: ServerProcess, queue: str) -> None:
    client, worker = jq_server.client_key, jq_server.worker_key
    jq(jq_server, worker, "lease", "--queue", queue, code=1)  # nothing yet
    job_id = jq(jq_server, client, "submit", "work", "--queue", queue, "--max-retries", "0").strip()
    leased = jq_json(jq_server, worker, "lease", "--queue", queue, "--wait", "1s")
    assert leased["job_id"] == job_id and leased["attempt"] == 1
    lease_id = leased["lease_id"]

    jq(jq_server, worker, "ack", job_id, "--lease-id", "stale", "--result", "r", code=5)
    jq(jq_server, worker, "ack", job_id, "--lease-id", lease_id, "--result", "r", "--error", "e",
       code=2)  # fmt: skip
    failed = jq_json(jq_server, worker, "ack", job_id, "--lease-id", lease_id, "--error", "bad")
    assert failed == {"job_id": job_id, "state": "DEAD"}
    jq(jq_server, worker, "ack", job_id, "--lease-id", lease_id, "--result", "late", code=5)

    assert jq_json(jq_server, client, "requeue", job_id)["state"] == "READY"
    again = jq_json(jq_server, worker, "lease", "--queue", queue)
    done = jq_json(
        jq_server, worker, "ack", job_id, "--lease-id", again["lease_id"], "--result", "ok"
    )
    assert done["state"] == "ACKED"
    assert jq_json(jq_server, client, "get", job_id)["result"] == "ok"
    jq(jq_server, client, "cancel", job_id, code=5)  # finished jobs cannot be cancelled

    waiting = jq(jq_server, client, "submit", "later", "--queue", queue, "--delay", "1h").strip()
    assert jq_json(jq_server, client, "cancel", waiting)["state"] == "CANCELLED"
    assert "CANCELLED" in jq(jq_server, client, "get", waiting)


def test_error_exit_codes(jq_server: ServerProcess, queue: str) -> None:
    client = jq_server.client_key
    jq(jq_server, client, "get", "no-such-job", code=1)
    jq(jq_server, client, "cancel", "no-such-job", code=1)
    jq(jq_server, client, "submit", "x", "--delay", "soon", code=2)
    jq(jq_server, client, "submit", "x", "--queue", "bad queue!", code=2)
    jq(jq_server, client, "submit", "x", "--priority", "high", code=2)
    jq(jq_server, client, "list", "--state", "sleeping", code=2)
    jq(jq_server, "client_wrong", "stats", code=3)
    jq(jq_server, client, "lease", "--queue", queue, code=3)  # a client key cannot lease
    result = runner.invoke(
        app, ["stats", "--json", "--url", f"http://127.0.0.1:{free_port()}", "--key", client]
    )
    assert result.exit_code == 4
    error = json.loads(result.stderr)
    # One shape for every --json error (issue 16): the HTTP status apart, not in the text.
    assert set(error) == {"error", "code", "status"} and error["status"] is None
    jq(jq_server, client, "get", "x", "--url", "not-a-url", code=2)


def test_times_and_durations(jq_server: ServerProcess, queue: str) -> None:
    client = jq_server.client_key

    def run_at(*args: str) -> str:
        submitted = jq_json(jq_server, client, "submit", "x", "--queue", queue, *args)
        return str(jq_json(jq_server, client, "get", submitted["job_id"])["run_at"])

    assert run_at("--run-at", "2099-01-02T03:04:05.678Z") == "2099-01-02T03:04:05.678Z"
    assert run_at("--run-at", "2099-01-02T04:04:05+01:00") == "2099-01-02T03:04:05.000Z"
    # No offset: UTC, as the HTTP API reads it (issue 16; local time before).
    assert run_at("--run-at", "2099-01-02 03:04:05") == "2099-01-02T03:04:05.000Z"
    assert run_at("--delay", "1d") > format_time(datetime.now(UTC) + timedelta(hours=23))
    jq(jq_server, client, "submit", "x", "--run-at", "tomorrow", code=2)
    jq(jq_server, jq_server.worker_key, "lease", "--queue", queue, "--wait", "soon", code=2)


def test_keys_create_list_revoke(jq_server: ServerProcess) -> None:
    admin = jq_server.admin_key
    created = jq_json(
        jq_server,
        admin,
        "keys",
        "create",
        "--name",
        "ci",
        "--owner",
        "cli-team",
        "--type",
        "worker",
    )
    secret = created["key"]
    assert secret.startswith("worker_") and "jobs:lease" in created["scopes"]
    listed = jq(jq_server, admin, "keys", "list", "--all", "--json")
    assert created["key_id"] in listed and secret not in listed
    mine = jq_json(jq_server, secret, "keys", "list")
    assert [k["owner_id"] for k in mine] == ["cli-team"]
    assert "cli-team" in jq(jq_server, admin, "keys", "list", "--all")
    revoked = jq_json(jq_server, admin, "keys", "revoke", created["key_id"])
    assert revoked["revoked_at"]
    jq(jq_server, secret, "stats", code=3)
    jq(jq_server, admin, "keys", "revoke", "worker_missing", code=1)
    jq(jq_server, jq_server.client_key, "keys", "create", "--name", "n", "--owner", "o",
       "--type", "admin", code=3)  # fmt: skip
    jq(jq_server, admin, "keys", "create", "--name", "n", "--owner", "o", "--type", "root", code=2)
    table = jq(
        jq_server, admin, "keys", "create", "--name", "t", "--owner", "o", "--type", "client"
    )
    assert "client_" in table and "not shown again" in table


@pytest.mark.parametrize("command", ["submit", "lease", "ack", "get", "list", "stats", "cancel",
                                     "requeue", "worker", "keys create", "keys list",
                                     "keys revoke"])  # fmt: skip
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0 and "--url" in result.stdout
