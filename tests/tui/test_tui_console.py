"""`jq tui` as an operator's console (issue 17), driven through Pilot against a real `jq serve`:
help and search keys, a detail pane that refreshes do not overwrite, a cursor pinned to the job
chosen, a confirmation before a requeue, a pause key, sparklines from zero, a refused key that
stops, queue and worker views, and 80×24. The screenshot (docs/tui.svg) is refreshed when
JQ_UPDATE_SCREENSHOT is set."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

from textual.widgets import DataTable

from jq_tool.tui.app import JqDashboard, parse_search, spark_text
from tests.tui.test_tui import counter, job, make_dead, row_keys, status, submit, until

if TYPE_CHECKING:
    from conftest import JqServer

DOCS = Path(__file__).resolve().parents[2] / "docs"
SMALL = (80, 24)


def detail(app: JqDashboard) -> str:
    return str(app.query_one("#detail").render())


def test_sparklines_start_from_zero() -> None:
    # 161 against 196 acks/s are two tall bars, not nothing and everything.
    assert spark_text([161.0, 196.0], 10) == "▇█"
    assert spark_text([0.0, 0.0], 10) == "  "
    assert spark_text([0.0, 4.0, 8.0], 10) == " ▄█"


def test_search_words() -> None:
    assert parse_search("queue:emails state:dead 3f2a9c") == {
        "queue": "emails",
        "state": "dead",
        "id_prefix": "3f2a9c",
    }
    assert parse_search("KeyError user") == {"error": "KeyError user"}


async def test_usable_at_80x24_with_help_and_search(jq_server: JqServer) -> None:
    for n in range(30):
        submit(jq_server, payload=f"job {n}")
    mail = submit(jq_server, payload="to ada", queue="emails")
    app = JqDashboard(jq_server.url, str(jq_server.client_key))
    async with app.run_test(size=SMALL) as pilot:
        await until(pilot, lambda: len(row_keys(app)) == 31, "all jobs listed")
        table = app.query_one("#jobs", DataTable)
        # The counters, rates and filters leave the table most of the screen.
        assert table.size.height >= 12, table.size
        assert (
            counter(app, "runnable") == 31
            or await until(pilot, lambda: counter(app, "runnable") == 31, "counters") is None
        )

        await pilot.press("question_mark")
        await until(pilot, lambda: app.screen.__class__.__name__ == "HelpScreen", "help")
        assert "requeue" in str(app.screen.query_one("#help").render())
        await pilot.press("x")
        await until(pilot, lambda: app.screen.__class__.__name__ != "HelpScreen", "help closed")

        await pilot.press("slash")
        for key in "queue:emails":
            await pilot.press(key if key != ":" else "colon")
        await pilot.press("enter")
        await until(pilot, lambda: row_keys(app) == [mail], "only the emails job")
        await pilot.press("slash")
        await pilot.press("enter")  # an empty search clears it
        await until(pilot, lambda: len(row_keys(app)) == 31, "everything again")
        if os.environ.get("JQ_UPDATE_SCREENSHOT"):
            app.save_screenshot(filename="tui.svg", path=str(DOCS))


async def test_detail_and_cursor_stay_on_the_chosen_job(jq_server: JqServer) -> None:
    dead = make_dead(jq_server)
    others = [submit(jq_server, payload=f"other {n}") for n in range(3)]
    app = JqDashboard(jq_server.url, str(jq_server.client_key))
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: len(row_keys(app)) == 4, "4 rows")
        table = app.query_one("#jobs", DataTable)
        table.move_cursor(row=row_keys(app).index(dead))
        # A refresh that lands before the cursor's RowHighlighted message (CI saw it once) keeps
        # the row the operator moved to; it used to take the cursor back to row 0.
        app._fill_table(list(app.jobs.values()))
        assert app.selected_job_id() == dead, "a refresh took the cursor back"
        await pilot.press("enter")
        await until(pilot, lambda: dead in detail(app) and "boom" in detail(app), "the detail")
        # New jobs arrive above it and the table refreshes several times.
        newer = [submit(jq_server, payload=f"newer {n}") for n in range(3)]
        await until(pilot, lambda: set(newer) <= set(row_keys(app)), "the new rows")
        await pilot.pause(1.2)
        assert dead in detail(app), "a refresh overwrote the detail pane"
        assert app.selected_job_id() == dead, "the cursor left the chosen job"
        assert row_keys(app).index(dead) > 0  # it moved down, the cursor with it

        # r asks first; n keeps the job DEAD.
        await pilot.press("r")
        await until(pilot, lambda: app.screen.__class__.__name__ == "ConfirmScreen", "asked")
        assert dead in str(app.screen.query_one("#confirm").render())
        await pilot.press("n")
        await pilot.pause(0.3)
        assert job(jq_server, dead)["state"] == "DEAD"
        await pilot.press("r")
        await until(pilot, lambda: app.screen.__class__.__name__ == "ConfirmScreen", "asked")
        await pilot.press("y")
        await until(pilot, lambda: job(jq_server, dead)["state"] == "READY", "requeued")
        await pilot.press("escape")
        await until(pilot, lambda: not app.query_one("#detail-pane").display, "detail closed")
    assert {job(jq_server, other)["state"] for other in others} == {"READY"}


async def test_pause_freezes_the_table_not_the_counters(jq_server: JqServer) -> None:
    first = submit(jq_server, payload="first")
    app = JqDashboard(jq_server.url, str(jq_server.client_key))
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: row_keys(app) == [first], "the first job")
        await pilot.press("p")
        await until(pilot, lambda: "paused" in status(app), "shows paused")
        second = submit(jq_server, payload="second")
        await until(pilot, lambda: counter(app, "runnable") == 2, "the counter moves")
        await pilot.pause(1.2)
        assert row_keys(app) == [first]
        await pilot.press("p")
        await until(pilot, lambda: second in row_keys(app), "the table follows again")


async def test_a_refused_key_stops_without_retrying(jq_server: JqServer) -> None:
    app = JqDashboard(jq_server.url, "client_not-a-real-key")
    async with app.run_test(size=SMALL) as pilot:
        await until(pilot, lambda: "key refused" in status(app), "the refusal")
        assert "401" in status(app)
        await pilot.pause(1.5)  # more than the first retry delays: nothing tried again
        assert app.refused and not app.connected
        assert "key refused" in status(app)


async def test_queue_and_worker_views(jq_server: JqServer) -> None:
    submit(jq_server, payload="waits", queue="emails")
    submit(jq_server, payload="runs")
    with jq_server.client(jq_server.worker_key) as http:
        leased = http.post("/jobs/lease", json={}, headers={"X-Jq-Worker": "tui-test:1:ab"})
        assert leased.status_code == 200
    app = JqDashboard(jq_server.url, str(jq_server.client_key))
    async with app.run_test(size=SMALL) as pilot:
        await until(pilot, lambda: counter(app, "running") == 1, "stats came")
        await pilot.press("u")
        queues = app.query_one("#queues", DataTable)

        def queue_rows() -> dict[str, list[str]]:
            return {
                str(row.key.value): [str(cell) for cell in queues.get_row(row.key)]
                for row in queues.ordered_rows
            }

        await until(pilot, lambda: {"default", "emails"} <= set(queue_rows()), "both queues")
        assert "tui-test:1:ab" in queue_rows()["default"][-2]
        assert queue_rows()["emails"][6] != "–"  # a runnable job: its latency
        await pilot.press("w")
        workers = app.query_one("#workers", DataTable)
        await until(
            pilot,
            lambda: [str(row.key.value) for row in workers.ordered_rows] == ["tui-test:1:ab"],
            "the worker",
        )
        await pilot.press("j")
        await until(pilot, lambda: len(row_keys(app)) == 2, "back to the jobs")
    await asyncio.sleep(0)


async def test_a_queue_paused_and_resumed_from_the_queues_view(jq_server: JqServer) -> None:
    """`P` in the queues view asks, then pauses the chosen queue (the flow column says so and
    the server has it paused); `P` again resumes it. Limits show in the same column."""
    submit(jq_server, payload="waits", queue="tui-pause")
    with jq_server.client(jq_server.admin_key) as http:
        limits = {"concurrency": 3, "rate_limit": 5, "rate_period_ms": 2000}
        assert http.put("/queues/tui-pause", json=limits).status_code == 200

    def paused() -> bool:
        with jq_server.client(jq_server.admin_key) as http:
            return bool(http.get("/queues/tui-pause").json()["paused"])

    app = JqDashboard(jq_server.url, str(jq_server.admin_key))
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: app.stats is not None, "stats came")
        await pilot.press("u")
        queues = app.query_one("#queues", DataTable)

        def flow() -> str:
            if "tui-pause" not in {str(row.key.value) for row in queues.ordered_rows}:
                return ""
            return str(queues.get_row("tui-pause")[-1])

        await until(pilot, lambda: "≤3 run" in flow() and "5/2s" in flow(), "the limits")
        queues.move_cursor(row=queues.get_row_index("tui-pause"))
        await pilot.press("P")
        await until(pilot, lambda: app.screen.__class__.__name__ == "ConfirmScreen", "asked")
        assert "Pause queue tui-pause?" in str(app.screen.query_one("#confirm").render())
        await pilot.press("y")
        await until(pilot, paused, "paused on the server")
        await until(pilot, lambda: "paused" in flow(), "the flow column says paused")
        await pilot.press("P")
        await until(pilot, lambda: app.screen.__class__.__name__ == "ConfirmScreen", "asked")
        await pilot.press("y")
        await until(pilot, lambda: not paused(), "resumed on the server")
    await asyncio.sleep(0)


async def test_the_schedules_view(jq_server: JqServer) -> None:
    """`s` shows the periodic jobs (issue 18): when, queue, the next run, paused or not."""
    body = {"name": "tui-nightly", "cron": "0 3 * * *", "payload": "report",
            "timezone": "Europe/Berlin", "queue": "reports"}  # fmt: skip
    with jq_server.client(jq_server.client_key) as http:
        assert http.post("/schedules", json=body).status_code == 201
        assert http.post("/schedules/tui-nightly/pause").status_code == 200
    app = JqDashboard(jq_server.url, str(jq_server.client_key))
    async with app.run_test(size=SMALL) as pilot:
        await until(pilot, lambda: app.stats is not None, "stats came")
        await pilot.press("s")
        schedules = app.query_one("#schedules", DataTable)

        def row() -> list[str]:
            if "tui-nightly" not in {str(r.key.value) for r in schedules.ordered_rows}:
                return []
            return [str(cell) for cell in schedules.get_row("tui-nightly")]

        await until(pilot, lambda: bool(row()), "the schedule")
        assert row()[1] == "0 3 * * * (Europe/Berlin)" and row()[2] == "reports"
        assert row()[-1] == "paused"
    await asyncio.sleep(0)


async def test_dead_letter_groups_view_requeues_a_group(jq_server: JqServer) -> None:
    """`d` shows DEAD jobs grouped by cause (issue 19); `r` there asks, then requeues the whole
    chosen group."""
    dead = []
    with jq_server.client(jq_server.worker_key) as http:
        for user in (4711, 815, 42):
            job_id = submit(jq_server, payload=f"user {user}", max_retries=0, queue="tui-dead")
            leased = http.post("/jobs/lease", json={"queue": "tui-dead"}).json()
            error = f"LookupError: user {user} not found"
            body = {"result_error": error, "lease_id": leased["lease_id"]}
            assert http.post(f"/jobs/{job_id}/ack", json=body).json()["state"] == "DEAD"
            dead.append(job_id)
    app = JqDashboard(jq_server.url, str(jq_server.client_key))
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: app.stats is not None, "stats came")
        await pilot.press("d")
        table = app.query_one("#dead", DataTable)

        def rows() -> dict[str, list[str]]:
            return {
                str(row.key.value): [str(cell) for cell in table.get_row(row.key)]
                for row in table.ordered_rows
            }

        def ours() -> str | None:
            return next((fp for fp, row in rows().items() if "LookupError" in row[1]), None)

        await until(pilot, lambda: ours() is not None, "the group")
        fingerprint = ours()
        assert fingerprint is not None and rows()[fingerprint][0] == "3"
        table.move_cursor(row=table.get_row_index(fingerprint))
        await pilot.press("r")
        await until(pilot, lambda: app.screen.__class__.__name__ == "ConfirmScreen", "asked")
        assert "3 DEAD jobs" in str(app.screen.query_one("#confirm").render())
        await pilot.press("y")
        await until(
            pilot, lambda: {job(jq_server, j)["state"] for j in dead} == {"READY"}, "requeued"
        )
    await asyncio.sleep(0)


async def test_text_from_clients_is_shown_as_written_not_read_as_markup(
    jq_server: JqServer,
) -> None:
    """A DataTable reads a plain string cell as Rich markup: a worker named `[/x]` or an error
    with `[/]` in it raised MarkupError while the table drew, and the TUI died; `[b]` and
    `[link=…]` restyled or linked what a client wrote. Any worker key can name a worker, any
    failed job writes its error: each is now text, shown as written."""
    worker_name = "[/x][b]w[@click=app.quit]"
    error = "ValueError: [/] [bold red]user[/bold red] [link=https://example.com]x[/link]"
    with jq_server.client(jq_server.worker_key) as http:
        job_id = submit(jq_server, payload="[/]", max_retries=0, queue="tui-markup")
        leased = http.post(
            "/jobs/lease", json={"queue": "tui-markup"}, headers={"X-Jq-Worker": worker_name}
        ).json()
        body = {"result_error": error, "lease_id": leased["lease_id"]}
        assert http.post(f"/jobs/{job_id}/ack", json=body).json()["state"] == "DEAD"
        submit(jq_server, payload="x", queue="tui-markup")
        assert http.post(
            "/jobs/lease", json={"queue": "tui-markup"}, headers={"X-Jq-Worker": worker_name}
        ).status_code == 200  # fmt: skip
    app = JqDashboard(jq_server.url, str(jq_server.client_key))
    async with app.run_test(size=(160, 30)) as pilot:
        await until(pilot, lambda: app.stats is not None, "stats came")

        def shown(table_id: str) -> list[str]:
            table = app.query_one(table_id, DataTable)
            cells = []
            for row in table.ordered_rows:
                for column in range(len(table.columns)):
                    # What the table draws: the cell as its renderable, then as plain text.
                    rendered = table._get_row_renderables(row_index(table, row.key)).cells[column]
                    cells.append(getattr(rendered, "plain", str(rendered)))
            return cells

        def row_index(table: DataTable, key: object) -> int:  # type: ignore[type-arg]
            return table.get_row_index(key)  # type: ignore[arg-type]

        await pilot.press("w")
        await until(pilot, lambda: worker_name in shown("#workers"), "the worker, as written")
        await pilot.press("d")
        await until(
            pilot, lambda: any("[bold red]user" in cell for cell in shown("#dead")), "cause"
        )
        await pilot.press("j")
        await pilot.press("slash")
        for key in "state:[/]":  # refused by the server, which quotes it
            await pilot.press({":": "colon", "[": "left_square_bracket", "/": "slash",
                               "]": "right_square_bracket"}.get(key, key))  # fmt: skip
        await pilot.press("enter")
        await until(
            pilot,
            lambda: any("search refused" in str(n.message) for n in app._notifications),
            "the refusal",
        )
        await pilot.pause(0.5)  # a few more draws: the app is still up
        assert app.is_running
    await asyncio.sleep(0)


async def test_escape_sequences_clients_wrote_do_not_reach_the_terminal(
    jq_server: JqServer,
) -> None:
    """Textual passes ESC through to the terminal: a payload or error holding `\\x1b[2J` or an
    OSC 52 clipboard write acted on the operator's terminal. The table cells and the detail
    pane show them as escapes (jq_tool/terminal_text.py)."""
    hostile = "a\x1b[2Jb\x1b]52;c;aGk=\x1b\\c\u202eevil"
    with jq_server.client(jq_server.worker_key) as http:
        job_id = submit(jq_server, payload=hostile, max_retries=0, queue="tui-escapes")
        leased = http.post("/jobs/lease", json={"queue": "tui-escapes"}).json()
        body = {"result_error": f"ValueError: {hostile}", "lease_id": leased["lease_id"]}
        assert http.post(f"/jobs/{job_id}/ack", json=body).json()["state"] == "DEAD"
    app = JqDashboard(jq_server.url, str(jq_server.client_key))
    async with app.run_test(size=(160, 30)) as pilot:
        await until(pilot, lambda: job_id in row_keys(app), "the job")
        table = app.query_one("#jobs", DataTable)
        index = table.get_row_index(job_id)
        cells = [getattr(c, "plain", str(c)) for c in table._get_row_renderables(index).cells]
        assert any("\\x1b[2Jb" in cell for cell in cells), cells
        assert not any("\x1b" in cell or "\u202e" in cell for cell in cells), cells
        table.move_cursor(row=index)
        await pilot.press("enter")
        await until(pilot, lambda: "payload: a\\x1b[2Jb" in detail(app), "the detail")
        assert "\x1b" not in detail(app) and "\u202e" not in detail(app)
        await pilot.press("d")
        dead = app.query_one("#dead", DataTable)
        await until(pilot, lambda: dead.row_count > 0, "the dead-letter group")
        shown = [getattr(c, "plain", str(c)) for c in dead._get_row_renderables(0).cells]
        assert not any("\x1b" in cell for cell in shown), shown
    await asyncio.sleep(0)
