"""Whole-process behaviour of `jq serve`: crash and restart, graceful SIGTERM, bad flags."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from jq_tool.cli.serve import register


@pytest.mark.slow
def test_lease_survives_kill9_and_the_ack_still_works(jq_server: Any) -> None:
    with jq_server.client(jq_server.client_key) as client:
        job_id = client.post("/jobs", json={"payload": "survive", "queue": "crash"}).json()[
            "job_id"
        ]
    with jq_server.client(jq_server.worker_key) as worker:
        leased = worker.post("/jobs/lease", json={"queue": "crash", "lease_ms": 600_000}).json()
    jq_server.kill9()
    assert jq_server.proc.returncode == -signal.SIGKILL
    jq_server.start()
    with jq_server.client(jq_server.worker_key) as worker:
        job = worker.get(f"/jobs/{job_id}").json()
        assert job["state"] == "RUNNING" and job["payload"] == "survive"
        acked = worker.post(
            f"/jobs/{job_id}/ack", json={"result": "ok", "lease_id": leased["lease_id"]}
        )
        assert acked.status_code == 200, acked.text
        assert acked.json()["state"] == "ACKED"
    # The keys were seeded once, on the first start only.
    assert jq_server.log().count("Created admin key") == 1


@pytest.mark.slow
def test_sigterm_drains_exits_0_and_keeps_data(jq_server: Any) -> None:
    with jq_server.client(jq_server.client_key) as client:
        ids = [client.post("/jobs", json={"payload": str(i)}).json()["job_id"] for i in range(20)]
    answers: dict[str, Any] = {}

    def long_poll() -> None:
        with jq_server.client(jq_server.worker_key, timeout=60) as worker:
            answers["lease"] = worker.post(
                "/jobs/lease", json={"queue": "nothing-here", "wait_ms": 30_000}
            )

    def watch_events() -> None:
        headers = jq_server.headers(jq_server.client_key)
        with httpx.stream("GET", jq_server.url + "/events", headers=headers, timeout=60) as r:
            answers["events"] = sum(1 for _ in r.iter_lines())

    threads = [threading.Thread(target=long_poll), threading.Thread(target=watch_events)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # both requests are in flight (the test asserts nothing about time)
    assert jq_server.stop(signal.SIGTERM, timeout=60) == 0
    for thread in threads:
        thread.join(60)
    # The long poll was answered (not cut off), and the event stream ended cleanly.
    assert answers["lease"].status_code in (404, 503)
    assert answers["events"] >= 1
    log = jq_server.log()
    assert "jq stopped: engine flushed and closed" in log
    assert "Traceback" not in log

    jq_server.start()
    with jq_server.client(jq_server.client_key) as client:
        for job_id in ids:
            assert client.get(f"/jobs/{job_id}").json()["state"] == "READY"


@pytest.mark.slow
def test_expired_lease_goes_back_to_retry(jq_server_factory: Any) -> None:
    server = jq_server_factory("--lease-check-interval", "100ms")
    with server.client(server.client_key) as client, server.client(server.worker_key) as worker:
        body = {"queue": "exp", "max_retries": 1, "payload": "x"}
        job_id = client.post("/jobs", json=body).json()["job_id"]
        leased = worker.post("/jobs/lease", json={"queue": "exp", "lease_ms": 1000}).json()
        deadline = time.monotonic() + 20
        while client.get(f"/jobs/{job_id}").json()["state"] == "RUNNING":
            assert time.monotonic() < deadline, "the lease never expired"
            time.sleep(0.2)
        late = worker.post(
            f"/jobs/{job_id}/ack", json={"result": "late", "lease_id": leased["lease_id"]}
        )
        assert late.status_code == 409


def serve_command(*args: str, env: dict[str, str] | None = None) -> Any:
    """Run `jq serve` in process (flags are checked before anything starts)."""
    app = typer.Typer()
    register(app)
    return CliRunner().invoke(app, list(args), env=env)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--lease-duration", "soon"), ("--lease-duration", "LEASE_DURATION")),
        (("--lease-check-interval", "0s"), ("--lease-check-interval",)),
        (("--max-payload", "lots"), ("--max-payload", "JQ_MAX_PAYLOAD")),
        (("--port", "99999"), ("--port",)),
        (("--retention", "-1d"), ("--retention",)),
        (("--redis-url", "http://x"), ("--redis-url",)),
        (("--log-level", "loud"), ("--log-level",)),
        (("--snapshot-every", "0"), ("--snapshot-every",)),
    ],
)
def test_bad_flag_is_a_usage_error(args: tuple[str, ...], words: tuple[str, ...]) -> None:
    result = serve_command(*args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    for word in words:
        assert word in result.output


def test_bad_env_var_is_a_usage_error() -> None:
    result = serve_command(env={"LEASE_DURATION": "forever"})
    assert result.exit_code == 2
    assert "LEASE_DURATION" in result.output


def test_bad_flag_from_the_real_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jq_tool.cli.serve",
            "--data-dir",
            str(tmp_path / "d"),
            "--lease-duration",
            "soon",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "--lease-duration" in result.stderr and "Traceback" not in result.stderr


def test_env_vars_configure_the_server(jq_server_factory: Any) -> None:
    server = jq_server_factory(env={"JQ_MAX_PAYLOAD": "1KiB", "LEASE_DURATION": "45s"})
    with server.client(server.client_key) as client, server.client(server.worker_key) as worker:
        assert client.post("/jobs", json={"payload": "x" * 1025}).status_code == 413
        client.post("/jobs", json={"payload": "x" * 1024, "queue": "env"})
        leased = worker.post("/jobs/lease", json={"queue": "env"}).json()
        job = worker.get(f"/jobs/{leased['job_id']}").json()
        assert job["state"] == "RUNNING"


def test_no_seed_keys(jq_server_factory: Any) -> None:
    server = jq_server_factory("--no-seed-keys")
    assert server.admin_key is None
    assert "Created" not in server.log()


@pytest.mark.slow
def test_wal_tuning_from_env(jq_server_factory: Any) -> None:
    server = jq_server_factory(env={"JQ_SNAPSHOT_EVERY": "10", "JQ_SEGMENT_BYTES": "2KiB"})
    with server.client(server.client_key) as client:
        for i in range(60):
            assert (
                client.post("/jobs", json={"payload": f"job {i:03d} " + "x" * 64}).status_code
                == 201
            )
    deadline = time.monotonic() + 20
    while not list(server.data_dir.glob("*.snap")):
        assert time.monotonic() < deadline, "no snapshot was written"
        time.sleep(0.1)
    server.restart()
    with server.client(server.client_key) as client:
        assert client.get("/stats").json()["totals"]["submitted"] == 60


def test_access_log_shows_route_templates_not_secrets(jq_server_factory: Any) -> None:
    server = jq_server_factory("--access-log")
    with server.client(server.admin_key) as admin:
        created = admin.post(
            "/admin/keys", json={"name": "n", "owner_id": "o", "type": "client"}
        ).json()
        secret = created["key"]
        assert admin.delete(f"/keys/{created['key_id']}").status_code == 200
        # The job routes are served before any middleware (hot_routes.py), and logged too.
        job_id = admin.post("/jobs", json={"payload": "p"}).json()["job_id"]
        assert admin.get(f"/jobs/{job_id}").status_code == 200
    # The access line is written after the answer is sent: give the server a moment.
    deadline = time.monotonic() + 5
    while "GET /jobs/{id} 200" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = server.log()
    assert "DELETE /keys/{key} 200" in log
    assert "POST /admin/keys 201" in log
    assert "POST /jobs 201" in log
    assert "GET /jobs/{id} 200" in log
    assert secret not in log


def test_a_data_dir_in_use_is_a_clear_error(jq_server: Any) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jq_tool.cli.serve",
            "--data-dir",
            str(jq_server.data_dir),
            "--port",
            "0",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "jq cannot start" in result.stderr and "in use" in result.stderr
    assert "Traceback" not in result.stderr
