"""The dashboard as an operator's console (issue 17), in a real browser against a real
`jq serve`: a burst never blocks the page, "pause live" freezes the table while the counters
move, errors are a column and an expandable traceback, a successful retry shows no stale error,
the Scheduled tab, paging and search, a read-only key sees no write control, and the screenshots
in docs (light, dark, phone) refreshed on request."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.dashboard.test_dashboard import (
    LIVE,
    RecordedPage,
    connect,
    get_job,
    submit,
)

if TYPE_CHECKING:
    from conftest import JqServer

pytestmark = pytest.mark.browser

DOCS = Path(__file__).resolve().parents[2] / "docs"

# Installed before the page's scripts: every long task (> 50 ms) the page runs, buffered.
LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__longTasks.push(entry.duration);
}).observe({type: "longtask", buffered: true});
"""

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "worker.py", line 12, in handle\n'
    "    resize(image)\n"
    '  File "images.py", line 40, in resize\n'
    '    raise ValueError("image 42 is corrupt")\n'
    "ValueError: image 42 is corrupt"
)


@pytest.fixture
def console(chromium: Browser, jq_server: JqServer) -> Iterator[RecordedPage]:
    context = chromium.new_context(viewport={"width": 1440, "height": 900}, color_scheme="light")
    context.add_init_script(LONG_TASKS)
    recorded = RecordedPage(context.new_page())
    yield recorded
    context.close()
    assert recorded.errors == [], "the page threw"


def submit_batch(server: JqServer, jobs: list[dict[str, object]]) -> list[str]:
    with server.client(server.client_key, timeout=60) as http:
        response = http.post("/jobs/batch", json={"jobs": jobs})
        assert response.status_code == 201, response.text
        return [str(result["job_id"]) for result in response.json()["results"]]


def fail_next(server: JqServer, error: str, *, wait_ms: int = 0) -> str:
    with server.client(server.worker_key, timeout=60) as http:
        leased = http.post("/jobs/lease", json={"wait_ms": wait_ms}).json()
        body = {"lease_id": leased["lease_id"], "result_error": error}
        assert http.post(f"/jobs/{leased['job_id']}/ack", json=body).status_code == 200
        return str(leased["job_id"])


def ack_next(server: JqServer, *, wait_ms: int = 0) -> str:
    with server.client(server.worker_key, timeout=60) as http:
        leased = http.post("/jobs/lease", json={"wait_ms": wait_ms}).json()
        body = {"lease_id": leased["lease_id"], "result": '"ok"'}
        assert http.post(f"/jobs/{leased['job_id']}/ack", json=body).status_code == 200
        return str(leased["job_id"])


def row(page: Page, job_id: str):  # type: ignore[no-untyped-def]
    return page.locator(f'#jobs-body tr[data-job-id="{job_id}"]')


def test_a_burst_never_blocks_the_page_for_a_second(
    console: RecordedPage, jq_server: JqServer
) -> None:
    """Issue 17: 5,000 jobs froze the old page for minutes. 10,000 here, as fast as batches go:
    the page shows them all in its counter, keeps a bounded table, and no task ran 1 s."""
    page = connect(console, jq_server)
    expect(page.locator("#stat-runnable")).to_have_text("0", timeout=LIVE)
    for _ in range(10):
        submit_batch(jq_server, [{"payload": '{"burst": true}'}] * 1000)
    expect(page.locator("#stat-runnable")).to_have_text("10,000", timeout=60_000)
    # The table catches up from the newest state, not from a backlog of events.
    expect(page.locator("#jobs-body tr")).to_have_count(50, timeout=LIVE)
    page.wait_for_timeout(1000)
    longest = max(page.evaluate("window.__longTasks"), default=0.0)
    assert longest < 1000, f"a task ran {longest:.0f} ms"
    # Still answering input at once.
    page.click("#live-toggle")
    expect(page.locator("#live-toggle")).to_have_attribute("aria-pressed", "true")


def test_pause_live_freezes_the_table_while_the_counters_move(
    console: RecordedPage, jq_server: JqServer
) -> None:
    first = submit(jq_server, payload="before the pause")
    page = connect(console, jq_server)
    expect(row(page, first)).to_be_visible(timeout=LIVE)
    page.click("#live-toggle")
    expect(page.locator("#live-toggle")).to_have_text("Resume live")
    second = submit(jq_server, payload="while paused")
    expect(page.locator("#stat-runnable")).to_have_text("2", timeout=LIVE)
    # The job event came (the counter moved with the stats frame after it); the table did not.
    page.wait_for_timeout(1500)
    expect(row(page, second)).to_have_count(0)
    expect(page.locator("#jobs-title")).to_have_attribute("data-paused", "true")
    page.keyboard.press("p")  # the keyboard resumes too
    expect(row(page, second)).to_be_visible(timeout=LIVE)
    expect(page.locator("#jobs-body tr").first).to_have_attribute("data-job-id", second)


def test_errors_are_a_column_and_an_expandable_traceback(
    console: RecordedPage, jq_server: JqServer
) -> None:
    dead = submit(jq_server, payload='{"image": 42}', max_retries=0)
    assert fail_next(jq_server, TRACEBACK) == dead
    page = connect(console, jq_server)
    cell = row(page, dead).locator("td.col-error")
    expect(cell.locator(".error-class")).to_have_text("ValueError", timeout=LIVE)
    expect(cell.locator(".error-message")).to_have_text("image 42 is corrupt")

    row(page, dead).locator("td").first.click()
    expect(page.locator("#d-job_id")).to_have_text(dead, timeout=LIVE)
    expect(page.locator("#d-error-class")).to_have_text("ValueError")
    expect(page.locator("#d-error-message")).to_have_text("image 42 is corrupt")
    # The whole traceback, folded until asked for.
    traceback = page.locator("#d-result_error")
    expect(traceback).to_be_hidden()
    page.click("#d-error summary")
    expect(traceback).to_be_visible()
    expect(traceback).to_contain_text('File "images.py", line 40, in resize')

    # A failure live: the row turns RETRY and gets its error without a reload.
    retried = submit(jq_server, payload="flaky", max_retries=1, priority=5)
    assert fail_next(jq_server, "TimeoutError: upstream took 30 s") == retried
    retried_cell = row(page, retried).locator("td.col-error")
    expect(retried_cell.locator(".error-class")).to_have_text("TimeoutError", timeout=LIVE)

    # Its successful retry: ACKED, no error shown as the current one, the failure in history.
    assert ack_next(jq_server, wait_ms=30_000) == retried
    expect(row(page, retried)).to_have_attribute("data-state", "ACKED", timeout=LIVE)
    expect(retried_cell).to_have_text("")
    row(page, retried).locator("td").first.click()
    expect(page.locator("#d-job_id")).to_have_text(retried, timeout=LIVE)
    expect(page.locator("#d-error-none")).to_be_visible()
    attempts = page.locator("#d-history-list > li")
    expect(attempts).to_have_count(2)
    expect(attempts.nth(0)).to_have_attribute("data-outcome", "failed")
    expect(attempts.nth(0).locator(".error-class")).to_have_text("TimeoutError")
    expect(attempts.nth(1)).to_have_attribute("data-outcome", "acked")


def test_scheduled_tab_and_cancelled_card(console: RecordedPage, jq_server: JqServer) -> None:
    later = submit(jq_server, payload="in an hour", delay_ms=3_600_000)
    soon = submit(jq_server, payload="in a minute", delay_ms=60_000)
    now = submit(jq_server, payload="now")
    with jq_server.client(jq_server.client_key) as http:
        assert http.post(f"/jobs/{now}/cancel").status_code == 200
    page = connect(console, jq_server)
    expect(page.locator("#stat-cancelled")).to_have_text("1", timeout=LIVE)
    page.click('#filters .chip[data-filter="SCHEDULED"]')
    expect(page.locator("#jobs-body tr")).to_have_count(2, timeout=LIVE)
    # Soonest first, each marked SCHEDULED.
    ids = page.locator("#jobs-body tr").evaluate_all("rows => rows.map(r => r.dataset.jobId)")
    assert ids == [soon, later]
    expect(page.locator("#jobs-body tr .pill").first).to_have_text("SCHEDULED")
    page.click('#filters .chip[data-filter="CANCELLED"]')
    expect(page.locator("#jobs-body tr")).to_have_count(1, timeout=LIVE)
    expect(row(page, now)).to_be_visible()


def test_a_delayed_job_is_scheduled_at_once_live(
    console: RecordedPage, jq_server: JqServer
) -> None:
    """Live events carry run_at: no reload needed to see SCHEDULED (issue 17, finding 4)."""
    page = connect(console, jq_server)
    later = submit(jq_server, payload="in ten minutes", delay_ms=600_000)
    expect(row(page, later).locator(".pill")).to_have_text("SCHEDULED", timeout=LIVE)
    page.click('#filters .chip[data-filter="SCHEDULED"]')
    expect(row(page, later)).to_be_visible(timeout=LIVE)
    soon = submit(jq_server, payload="in a minute", delay_ms=60_000)
    # It joins the Scheduled tab live, ahead of the later one.
    expect(page.locator("#jobs-body tr").first).to_have_attribute("data-job-id", soon, timeout=LIVE)


def test_paging_through_every_job_and_search(console: RecordedPage, jq_server: JqServer) -> None:
    ids = submit_batch(jq_server, [{"payload": f"job {n}"} for n in range(120)])
    mail = submit(jq_server, payload="to ada", queue="emails")
    page = connect(console, jq_server)
    expect(page.locator("#jobs-body tr")).to_have_count(50, timeout=LIVE)
    seen: set[str] = set()
    pages = 0
    while True:
        pages += 1
        rows = page.locator("#jobs-body tr").evaluate_all("rows => rows.map(r => r.dataset.jobId)")
        assert not seen & set(rows), "a job shown on two pages"
        seen |= set(rows)
        if page.locator("#page-older").is_disabled():
            break
        page.click("#page-older")
        expect(page.locator("#page-info")).to_have_text(f"page {pages + 1}", timeout=LIVE)
    assert seen == {*ids, mail}
    assert pages == 3
    page.click("#page-newest")
    expect(page.locator("#page-info")).to_have_text("live", timeout=LIVE)

    page.fill("#search-input", "queue:emails")
    page.press("#search-input", "Enter")
    expect(page.locator("#jobs-body tr")).to_have_count(1, timeout=LIVE)
    expect(row(page, mail)).to_be_visible()
    page.fill("#search-input", ids[7][:12])
    page.press("#search-input", "Enter")
    expect(page.locator("#jobs-body tr")).to_have_count(1, timeout=LIVE)
    expect(row(page, ids[7])).to_be_visible()
    page.keyboard.press("Escape")
    page.fill("#search-input", "")
    page.press("#search-input", "Enter")
    expect(page.locator("#jobs-body tr")).to_have_count(50, timeout=LIVE)


def test_a_read_only_key_sees_no_write_control(console: RecordedPage, jq_server: JqServer) -> None:
    dead = submit(jq_server, payload="doomed", max_retries=0)
    fail_next(jq_server, "RuntimeError: no")
    page = console.page
    page.goto(jq_server.url + "/")
    page.fill("#key-input", str(jq_server.worker_key))  # jobs:read, but not jobs:submit
    page.click("#key-form button[type=submit]")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE)
    expect(row(page, dead)).to_be_visible(timeout=LIVE)
    expect(page.locator("body")).to_have_attribute("data-write", "false")
    expect(page.locator("#enqueue-form")).to_be_hidden()
    expect(row(page, dead).locator("button")).to_have_count(0)
    row(page, dead).locator("td").first.click()
    expect(page.locator("#d-job_id")).to_have_text(dead, timeout=LIVE)
    expect(page.locator("#d-actions button")).to_have_count(0)

    # A client key may write: the controls are there.
    page.click("#key-forget")
    page.fill("#key-input", str(jq_server.client_key))
    page.click("#key-form button[type=submit]")
    expect(page.locator("body")).to_have_attribute("data-write", "true", timeout=LIVE)
    expect(page.locator("#enqueue-form")).to_be_visible()
    expect(row(page, dead).locator("button[data-requeue]")).to_be_visible(timeout=LIVE)
    assert get_job(jq_server, dead)["state"] == "DEAD"


@pytest.mark.slow  # stops and restarts the server
def test_stale_values_are_dimmed_while_disconnected(
    console: RecordedPage, jq_server: JqServer
) -> None:
    page = connect(console, jq_server)
    expect(page.locator("body")).to_have_attribute("data-stale", "false")
    jq_server.stop()
    expect(page.locator("body")).to_have_attribute("data-stale", "true", timeout=LIVE)
    opacity = page.locator("#stat-runnable").evaluate(
        "el => getComputedStyle(el.closest('.totals')).opacity"
    )
    assert float(opacity) < 1
    jq_server.start()
    expect(page.locator("body")).to_have_attribute("data-stale", "false", timeout=60_000)


def test_screenshots_light_dark_phone(
    chromium: Browser, jq_server: JqServer, tmp_path: Path
) -> None:
    """docs/dashboard-*.png, copied there only when JQ_UPDATE_SCREENSHOT is set."""
    dead = submit(jq_server, payload='{"image": 42}', max_retries=0, priority=9)
    fail_next(jq_server, TRACEBACK)
    submit_batch(jq_server, [{"payload": f'{{"n": {n}}}', "priority": n % 3} for n in range(40)])
    for n in range(12):
        ack_next(jq_server) if n % 3 else fail_next(jq_server, "TimeoutError: upstream slow")
    submit(jq_server, payload="later", delay_ms=600_000)
    shots = {
        "dashboard-light.png": ({"width": 1440, "height": 900}, "light"),
        "dashboard-dark.png": ({"width": 1440, "height": 900}, "dark"),
        "dashboard-phone.png": ({"width": 390, "height": 844}, "light"),
    }
    for name, (viewport, scheme) in shots.items():
        context = chromium.new_context(viewport=viewport, color_scheme=scheme)  # type: ignore[arg-type]
        try:
            page = connect(RecordedPage(context.new_page()), jq_server)
            expect(row(page, dead)).to_be_visible(timeout=LIVE)
            expect(page.locator("#spark-acks .line")).to_have_count(1, timeout=LIVE)
            if viewport["width"] > 1000:
                row(page, dead).locator("td").first.click()
                expect(page.locator("#d-error-class")).to_have_text("ValueError", timeout=LIVE)
            shot = tmp_path / name
            page.screenshot(path=str(shot), full_page=viewport["width"] > 1000)
        finally:
            context.close()
        assert shot.stat().st_size > 20_000
        if os.environ.get("JQ_UPDATE_SCREENSHOT"):
            shutil.copyfile(shot, DOCS / name)


def test_queues_workers_history_and_bulk_requeue(
    console: RecordedPage, jq_server: JqServer
) -> None:
    submit_batch(jq_server, [{"payload": "waiting", "queue": "emails"}] * 3)
    dead = [submit(jq_server, payload=f"doomed {n}", max_retries=0, priority=9) for n in range(3)]
    with jq_server.client(jq_server.worker_key) as http:
        for _ in dead:
            leased = http.post(
                "/jobs/lease", json={}, headers={"X-Jq-Worker": "build-7:4121:9f2c"}
            ).json()
            body = {"lease_id": leased["lease_id"], "result_error": "KeyError: 'user'"}
            assert http.post(f"/jobs/{leased['job_id']}/ack", json=body).status_code == 200
        # One lease held by a named worker: the queue view names it.
        submit(jq_server, payload="running")
        http.post("/jobs/lease", json={}, headers={"X-Jq-Worker": "build-7:4121:9f2c"})
    with jq_server.client(jq_server.admin_key) as http:
        limits = {"concurrency": 2, "rate_limit": 10, "rate_period_ms": 60_000}
        assert http.put("/queues/emails", json=limits).status_code == 200
    page = connect(console, jq_server)

    emails = page.locator('#queues-body tr[data-queue="emails"]')
    expect(emails).to_be_visible(timeout=LIVE)
    expect(emails.locator("td").nth(1)).to_have_text("3")
    # Its limits beside its name (issue 18).
    expect(emails.locator('[data-limit="concurrency"]')).to_have_text("≤ 2 running")
    expect(emails.locator('[data-limit="rate"]')).to_contain_text("10 leases / ")
    expect(emails.locator('td[data-field="latency"]')).not_to_have_text("—")
    default = page.locator('#queues-body tr[data-queue="default"]')
    expect(default).to_contain_text("build-7:4121:9f2c")
    worker = page.locator('#workers-body tr[data-worker="build-7:4121:9f2c"]')
    expect(worker).to_be_visible(timeout=LIVE)
    expect(worker.locator("td").nth(1)).to_have_text("1")
    expect(page.locator("#hist-submitted-total")).to_have_text("7 in 1h", timeout=LIVE)
    page.click('#history-window .chip[data-window="24h"]')
    expect(page.locator("#hist-failed-total")).to_have_text("3 in 24h", timeout=LIVE)

    # A client key may not pause a queue (it takes jobs:submit and jobs:lease): no button.
    expect(emails.locator("button[data-pause-queue]")).to_have_count(0)

    # Bulk requeue of the dead jobs matching the search, after a confirmation that says so.
    page.fill("#search-input", "KeyError")
    page.press("#search-input", "Enter")
    expect(page.locator("#jobs-body tr")).to_have_count(3, timeout=LIVE)
    asked: list[str] = []

    def answer(dialog) -> None:  # type: ignore[no-untyped-def]
        asked.append(dialog.message)
        dialog.accept()

    page.once("dialog", answer)
    page.click("#bulk-requeue")
    expect(page.locator("#stat-dead")).to_have_text("0", timeout=LIVE)
    assert asked and "KeyError" in asked[0]
    assert {get_job(jq_server, job_id)["state"] for job_id in dead} == {"READY"}

    # An admin key may: pause a queue, with a confirmation first.
    page.click("#key-forget")
    page.fill("#key-input", str(jq_server.admin_key))
    page.click("#key-form button[type=submit]")
    expect(emails.locator("button[data-pause-queue]")).to_be_visible(timeout=LIVE)
    page.once("dialog", lambda dialog: dialog.accept())
    emails.locator("button[data-pause-queue]").click()
    expect(emails).to_have_attribute("data-paused", "true", timeout=LIVE)
    with jq_server.client(jq_server.client_key) as http:
        assert http.get("/queues/emails").json()["paused"] is True


def test_dead_letters_by_cause_requeued_as_a_group(
    console: RecordedPage, jq_server: JqServer
) -> None:
    for user in (4711, 815, 42):
        submit(jq_server, payload=f"user {user}", max_retries=0)
        fail_next(jq_server, f"ValueError: user {user} not found")
    page = connect(console, jq_server)
    group = page.locator("#groups-body tr").first
    expect(group).to_contain_text("ValueError", timeout=LIVE)
    expect(group.locator("td").nth(1)).to_have_text("3")
    asked: list[str] = []

    def answer(dialog) -> None:  # type: ignore[no-untyped-def]
        asked.append(dialog.message)
        dialog.accept()

    page.once("dialog", answer)
    group.locator('button[data-group-action="requeue"]').click()
    expect(page.locator("#stat-dead")).to_have_text("0", timeout=LIVE)
    expect(page.locator("#groups-body tr")).to_have_count(0, timeout=LIVE)
    assert asked and "3 dead jobs" in asked[0]


def test_schedules_card_pauses_and_resumes_a_schedule(
    console: RecordedPage, jq_server: JqServer
) -> None:
    """The Schedules card (issue 18) lists each periodic job with its next run; a key that may
    submit pauses it after a confirmation, and resumes it; the server has it so each time."""
    body = {"name": "nightly-report", "cron": "0 3 * * *", "payload": "report",
            "timezone": "Europe/Berlin", "queue": "reports"}  # fmt: skip
    with jq_server.client(jq_server.client_key) as http:
        assert http.post("/schedules", json=body).status_code == 201

        def paused() -> bool:
            return bool(http.get("/schedules/nightly-report").json()["paused"])

        page = connect(console, jq_server)
        row = page.locator('#schedules-body tr[data-schedule="nightly-report"]')
        expect(row).to_be_visible(timeout=LIVE)
        expect(row).to_contain_text("0 3 * * * (Europe/Berlin)")
        expect(row.locator('td[data-field="next"]')).not_to_have_text("—")
        page.once("dialog", lambda dialog: dialog.accept())
        row.locator("button[data-pause-schedule]").click()
        expect(row).to_have_attribute("data-paused", "true", timeout=LIVE)
        assert paused()
        row.locator("button[data-pause-schedule]").click()  # resuming asks nothing
        expect(row).to_have_attribute("data-paused", "false", timeout=LIVE)
        assert not paused()


def test_a_queue_past_its_max_latency_is_a_warning(
    console: RecordedPage, jq_server: JqServer
) -> None:
    """A queue whose oldest runnable job waited past its max_latency_ms shows in a warning
    banner (issue 19), from the stats frames; none while it is within it."""
    page = connect(console, jq_server)
    expect(page.locator("#latency-warning")).to_be_hidden()
    with jq_server.client(jq_server.admin_key) as http:
        assert http.put("/queues/slow-lane", json={"max_latency_ms": 1000}).status_code == 200
    submit(jq_server, payload="nobody leases this", queue="slow-lane")
    warning = page.locator("#latency-warning")
    expect(warning).to_be_visible(timeout=LIVE)
    expect(warning).to_contain_text("slow-lane")
