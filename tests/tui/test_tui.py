"""`jq tui` against a real `jq serve` process, driven through Textual's Pilot."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from textual.pilot import Pilot

from jq_tool.tui.app import Counter, JqDashboard

if TYPE_CHECKING:
    from conftest import JqServer

SIZE = (120, 40)


async def until(pilot: Pilot[None], predicate: Callable[[], bool], what: str) -> None:
    """Let the app run until `predicate` holds; fail naming `what` if it never does."""
    for _ in range(200):
        if predicate():
            return
        await pilot.pause(0.1)
    raise AssertionError(f"never happened: {what}")


def submit(server: JqServer, **body: object) -> str:
    with server.client(server.client_key) as http:
        response = http.post("/jobs", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["job_id"])


def make_dead(server: JqServer) -> str:
    """A job whose only attempt failed: DEAD."""
    job_id = submit(server, payload="doomed", max_retries=0)
    with server.client(server.worker_key) as http:
        leased = http.post("/jobs/lease", json={}).json()
        assert leased["job_id"] == job_id
        answer = http.post(
            f"/jobs/{job_id}/ack", json={"result_error": "boom", "lease_id": leased["lease_id"]}
        )
        assert answer.json()["state"] == "DEAD"
    return job_id


def job(server: JqServer, job_id: str) -> dict[str, object]:
    with server.client(server.client_key) as http:
        return dict(http.get(f"/jobs/{job_id}").json())


def counter(app: JqDashboard, name: str) -> int | None:
    return app.query_one(f"#count-{name}", Counter).value


def row_keys(app: JqDashboard) -> list[str]:
    table = app.query_one("#jobs")
    return [str(row.key.value) for row in table.ordered_rows]  # type: ignore[attr-defined]


def status(app: JqDashboard) -> str:
    return str(app.query_one("#status").render())


async def test_counters_and_table_show_submitted_jobs(jq_server: JqServer) -> None:
    ids = [submit(jq_server, payload=f"job {n}") for n in range(3)]
    app = JqDashboard(jq_server.url, str(jq_server.client_key))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: status(app).endswith("live"), "the stream connects")
        await until(pilot, lambda: counter(app, "runnable") == 3, "runnable shows 3")
        assert "3" in str(app.query_one("#count-runnable").render())
        await until(pilot, lambda: sorted(row_keys(app)) == sorted(ids), "3 rows")
        # A submit made elsewhere shows up live.
        fourth = submit(jq_server, payload="job 4")
        await until(pilot, lambda: counter(app, "runnable") == 4, "runnable moves to 4")
        await until(pilot, lambda: fourth in row_keys(app), "the new job's row")


async def test_number_keys_filter_by_state(jq_server: JqServer) -> None:
    dead = make_dead(jq_server)
    ready = [submit(jq_server, payload="a"), submit(jq_server, payload="b")]
    app = JqDashboard(jq_server.url, str(jq_server.client_key))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(row_keys(app)) == 3, "all 3 jobs")
        await pilot.press("5")
        await until(pilot, lambda: row_keys(app) == [dead], "only the DEAD job")
        await pilot.press("2")
        await until(pilot, lambda: sorted(row_keys(app)) == sorted(ready), "only READY jobs")
        await pilot.press("6")
        await until(pilot, lambda: row_keys(app) == [], "no ACKED jobs")
        await pilot.press("1")
        await until(pilot, lambda: len(row_keys(app)) == 3, "all again")
        assert "5 dead" in str(app.query_one("#filters").render())


async def test_n_enqueues_a_test_job(jq_server: JqServer) -> None:
    app = JqDashboard(jq_server.url, str(jq_server.client_key))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: status(app).endswith("live"), "the stream connects")
        await pilot.press("n")
        await until(pilot, lambda: len(row_keys(app)) == 1, "the enqueued job's row")
        (job_id,) = row_keys(app)
    stored = job(jq_server, job_id)
    assert stored["state"] == "READY"
    assert "jq tui" in str(stored["payload"])


async def test_r_requeues_the_selected_dead_job(jq_server: JqServer) -> None:
    dead = make_dead(jq_server)
    app = JqDashboard(jq_server.url, str(jq_server.client_key))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        await until(pilot, lambda: row_keys(app) == [dead], "the DEAD job")
        await until(pilot, lambda: counter(app, "dead") == 1, "dead shows 1")
        await pilot.press("enter")
        detail = app.query_one("#detail")
        await until(pilot, lambda: "payload: doomed" in str(detail.render()), "the payload")
        assert "error: boom" in str(detail.render())
        await until(pilot, lambda: "why: DEAD after 1 attempt" in str(detail.render()), "why")
        await pilot.press("r")
        await pilot.press("y")  # the confirmation
        await until(pilot, lambda: job(jq_server, dead)["state"] == "READY", "requeued")
        await until(pilot, lambda: row_keys(app) == [], "it left the DEAD filter")
        await until(pilot, lambda: counter(app, "dead") == 0, "dead back to 0")


async def test_r_refuses_a_job_that_is_not_dead(jq_server: JqServer) -> None:
    ready = submit(jq_server, payload="fine")
    app = JqDashboard(jq_server.url, str(jq_server.client_key))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: row_keys(app) == [ready], "the READY job")
        await pilot.press("r")
        await pilot.pause(0.3)
    assert job(jq_server, ready)["state"] == "READY"


@pytest.mark.slow  # restarts a server / runs a whole process
async def test_reconnects_after_a_server_restart(jq_server: JqServer) -> None:
    app = JqDashboard(jq_server.url, str(jq_server.client_key))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: status(app).endswith("live"), "the stream connects")
        await asyncio.to_thread(jq_server.stop)
        await until(pilot, lambda: "disconnected, retrying" in status(app), "shows disconnected")
        await asyncio.to_thread(jq_server.start)
        await until(pilot, lambda: status(app).endswith("live"), "live again")
        job_id = await asyncio.to_thread(submit, jq_server, payload="after restart")
        await until(pilot, lambda: counter(app, "runnable") == 1, "counters move again")
        await until(pilot, lambda: job_id in row_keys(app), "the table follows again")


async def test_a_side_view_tick_while_the_app_closes_is_not_a_crash(jq_server: JqServer) -> None:
    """The side views refresh on a timer; a tick that lands while the app is closing finds its
    widgets gone (seen once in CI, in the restart test above): it does nothing."""
    app = JqDashboard(jq_server.url, str(jq_server.client_key))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: status(app).endswith("live"), "the stream connects")
        await app.query_one("#views").remove()  # as the app's shutdown removes its widgets
        app._refresh_side_views()


def test_cli_refuses_a_bad_url_with_a_usage_error() -> None:
    jq = Path(sys.executable).parent / "jq"
    result = subprocess.run(
        [str(jq), "tui", "--url", "localhost:8080", "--key", "client_x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "http://" in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_refused_key_is_shown_not_crashed(jq_server: JqServer) -> None:
    app = JqDashboard(jq_server.url, "client_not-a-real-key")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "401" in status(app), "the refusal is shown")
        # Retrying cannot make a refused key good: it stops and says so.
        assert "key refused" in status(app)
        assert "retrying" not in status(app)
        await pilot.press("n")  # fails with a notification, not an exception
        await pilot.pause(0.3)
    with jq_server.client(jq_server.client_key) as http:
        assert http.get("/jobs").json()["jobs"] == []
