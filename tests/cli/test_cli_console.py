"""The console's commands of `jq` against a real `jq serve` (issue 17): `jq get` shows the
attempts and the current error split, `jq list --error/--id-prefix/--state scheduled`,
`jq workers`, `jq queues overview`, `jq history`, and `jq requeue --all-dead` /
`jq cancel --all`, which ask for confirmation (no, by default: nothing changes) unless given
--yes."""

from __future__ import annotations

import json
from typing import Any

from sdk.jq_server_process import ServerProcess
from typer.testing import CliRunner

from cli.jq_app import app
from jq_tool.sdk import Client

runner = CliRunner()


def jq(server: ServerProcess, key: str, *args: str, code: int = 0, stdin: str | None = None) -> str:
    result = runner.invoke(app, list(args), env={"JQ_URL": server.url, "JQ_KEY": key}, input=stdin)
    assert result.exit_code == code, (result.exit_code, result.output)
    return result.stdout


def jq_json(server: ServerProcess, key: str, *args: str) -> Any:
    return json.loads(jq(server, key, *args, "--json"))


def _dead(server: ServerProcess, queue: str, n: int) -> list[str]:
    with Client(server.url, server.client_key) as client:
        ids = [client.submit("p", queue=queue, max_retries=0) for _ in range(n)]
    with Client(server.url, server.worker_key, worker_id="cli-box:9:zz") as worker:
        for leased in worker.lease(queue=queue, max_jobs=n):
            worker.fail(leased.job_id, "Traceback (most recent call last):\nTimeoutError: slow",
                        lease_id=leased.lease_id)  # fmt: skip
    return ids


def test_get_list_and_the_views(jq_server: ServerProcess, queue: str) -> None:
    client = jq_server.client_key
    ids = _dead(jq_server, queue, 2)
    shown = jq(jq_server, client, "get", ids[0])
    assert "TimeoutError" in shown and "cli-box:9:zz" in shown and "failed" in shown
    listed = jq_json(jq_server, client, "list", "--queue", queue, "--error", "slow")
    assert sorted(j["job_id"] for j in listed["jobs"]) == sorted(ids)
    assert "TimeoutError: slow" in jq(jq_server, client, "list", "--queue", queue)
    prefix = jq_json(jq_server, client, "list", "--id-prefix", ids[1][:20])
    assert [j["job_id"] for j in prefix["jobs"]] == [ids[1]]
    assert jq_json(jq_server, client, "queues", "overview", queue)["dead"] == 2
    assert "dead" in jq(jq_server, client, "queues", "overview", queue)
    assert len(jq_json(jq_server, client, "history", "--queue", queue)["failed"]) == 60
    assert "submitted" in jq(jq_server, client, "history")
    assert "worker" in jq(jq_server, client, "workers") or "no live workers" in jq(
        jq_server, client, "workers"
    )
    jq(jq_server, client, "queues", "overview", "no-such-queue-here", code=1)


def test_bulk_requeue_and_cancel_ask_first(jq_server: ServerProcess, queue: str) -> None:
    client = jq_server.client_key
    _dead(jq_server, queue, 3)
    out = jq(jq_server, client, "requeue", "--all-dead", "--queue", queue, stdin="n\n", code=2)
    assert "requeue every DEAD job" in out
    assert jq_json(jq_server, client, "queues", "overview", queue)["dead"] == 3
    jq(jq_server, client, "requeue", "--all-dead", "--queue", queue, "--json", code=2)
    done = jq(jq_server, client, "requeue", "--all-dead", "--queue", queue, stdin="y\n")
    assert "3 of 3" in done
    cancelled = jq_json(jq_server, client, "cancel", "--all", "--queue", queue, "--yes")
    assert cancelled["changed"] == 3
    jq(jq_server, client, "cancel", code=2)
    refused = jq(jq_server, jq_server.worker_key, "requeue", "--all-dead", "--yes", code=3)
    assert refused == ""


def test_jq_worker_names_itself(jq_server: ServerProcess, queue: str, tmp_path: Any) -> None:
    """A real `jq worker` process sends its --worker-id: the job's attempt names it."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from sdk.jq_server_process import wait_until

    (tmp_path / "console_handlers.py").write_text("def handle(job):\n    return 'ok'\n")
    with Client(jq_server.url, jq_server.client_key) as client:
        job_id = client.submit("x", queue=queue)
        worker = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "jq_app.py"), "worker",
             "console_handlers:handle", "--url", jq_server.url, "--key", jq_server.worker_key,
             "--queue", queue, "--wait", "1s", "--worker-id", "cli-proc:1:ab"],
            cwd=tmp_path, env={"PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_until(lambda: client.get(job_id).finished)
            worker.send_signal(signal.SIGTERM)
            output, _ = worker.communicate(timeout=30)
        finally:
            if worker.poll() is None:
                worker.kill()
        history = client.get(job_id).attempt_history or []
        assert [(a.outcome, a.worker) for a in history] == [("acked", "cli-proc:1:ab")]
        assert b"worker cli-proc:1:ab on" in output


def test_text_from_clients_is_printed_as_written(jq_server: ServerProcess, queue: str) -> None:
    """Rich reads a str table cell as markup, and these cells hold what clients wrote: a
    payload of `[/]` made `jq get` die with MarkupError's traceback, a worker named `[/x]` did
    the same to `jq workers`, and `[bold red]` restyled an error instead of showing it."""
    payload = "[/] [bold red]payload[/bold red]"
    error = "ValueError: [/] [bold red]boom[/bold red]"
    worker_id = "[/x][b]w"
    with Client(jq_server.url, jq_server.client_key) as client:
        job_id = client.submit(payload, queue=queue, max_retries=0)
        busy = client.submit("x", queue=queue)
    with Client(jq_server.url, jq_server.worker_key, worker_id=worker_id) as worker:
        (leased,) = worker.lease(queue=queue)
        assert leased.job_id == job_id
        worker.fail(job_id, error, lease_id=leased.lease_id)
        (held,) = worker.lease(queue=queue)  # a live lease: the worker is listed
        assert held.job_id == busy
    key = jq_server.client_key
    shown = jq(jq_server, key, "get", job_id)
    assert payload in shown and "[bold red]boom" in shown and worker_id in shown
    assert "[bold red]boom" in jq(jq_server, key, "list", "--queue", queue)
    assert worker_id in jq(jq_server, key, "workers")
