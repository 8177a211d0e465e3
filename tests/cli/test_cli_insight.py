"""`jq why ID`, `jq dead groups|requeue|cancel` and the progress line of `jq get`, against a
real `jq serve`: the sentence and the fields printed, `--json` parsed, a whole group requeued
and cancelled, exit code 1 for an unknown job or group."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import typer
from sdk.jq_server_process import ServerProcess, wait_until
from typer.testing import CliRunner

from jq_tool.cli import insight, jobs
from jq_tool.sdk import Client

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def root() -> None:
    """jq insight commands (test app)."""


insight.register(app)
jobs.register(app)
runner = CliRunner()


def jq(server: ServerProcess, *args: str, code: int = 0) -> str:
    env = {"JQ_URL": server.url, "JQ_KEY": server.admin_key, "COLUMNS": "200"}
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == code, (result.exit_code, result.output)
    return result.stdout


def jq_json(server: ServerProcess, *args: str) -> Any:
    return json.loads(jq(server, *args, "--json"))


def test_why_prints_the_sentence_and_the_fields(jq_server: ServerProcess, queue: str) -> None:
    with Client(jq_server.url, jq_server.admin_key) as client:
        job_id = client.submit("x", queue=queue, max_retries=2)
        leased = client.lease(queue=queue)[0]
        client.progress(job_id, 0.25, "a quarter", lease_id=leased.lease_id)
    out = jq(jq_server, "why", job_id)
    assert out.startswith("Leased since ") and "attempt 1 of 3" in out
    assert "running" in out and "25% a quarter" in out
    body = jq_json(jq_server, "why", job_id)
    assert body["reason"] == "running" and body["progress"]["note"] == "a quarter"
    assert "25% a quarter" in jq(jq_server, "get", job_id)
    jq(jq_server, "why", "no-such-job", code=1)


def test_dead_groups_requeue_and_cancel(jq_server: ServerProcess, queue: str) -> None:
    tag = uuid.uuid4().hex[:6]
    with Client(jq_server.url, jq_server.admin_key) as client:
        for i in range(4):
            client.submit(str(i), queue=queue, max_retries=0)
            job = client.lease(queue=queue)[0]
            kind = "A" if i % 2 else "B"
            client.fail(job.job_id, f"Err{tag}{kind}: row {i} bad", lease_id=job.lease_id)
    listed = jq_json(jq_server, "dead", "groups")
    ours = {g["error_type"]: g for g in listed["groups"] if tag in g["error_type"]}
    assert {g["count"] for g in ours.values()} == {2}
    table = jq(jq_server, "dead", "groups")
    assert f"Err{tag}A: row <n> bad" in table and "dead letters:" in table
    a, b = ours[f"Err{tag}A"]["fingerprint"], ours[f"Err{tag}B"]["fingerprint"]
    out = jq(jq_server, "dead", "requeue", a, "--chunk", "1")
    assert out.startswith("2 jobs requeued in 3 logged commands")
    assert jq_json(jq_server, "dead", "cancel", b)["settled"] == 2
    jq(jq_server, "dead", "requeue", a, code=1)  # the group is gone


def test_stats_show_each_queues_latency(jq_server: ServerProcess, queue: str) -> None:
    with Client(jq_server.url, jq_server.admin_key) as client:
        for _ in range(3):
            client.submit("x", queue=queue)
        client.lease(queue=queue)
        # Per-queue latency is computed at most once a second: a new queue shows after that.
        wait_until(lambda: queue in client.stats().latency)
        latency = client.stats().latency[queue]
    assert latency.leased == 1 and latency.oldest_runnable_age_s is not None
    assert latency.wait_p95_s is not None and latency.max_latency_s is None
    table = jq(jq_server, "stats")
    assert "oldest" in table and "wait p95" in table
    (row,) = [line for line in table.splitlines() if queue in line]
    assert re.search(r"\d+\.\ds", row) and "≤" in row
