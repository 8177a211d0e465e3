"""The dashboard in a real browser against a real `jq serve`: live counters, the enqueue form,
requeue of a DEAD job, the key kept out of every URL, a screenshot (copied to docs/dashboard.png
when JQ_UPDATE_SCREENSHOT is set), and a phone-sized layout without horizontal overflow."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, expect

if TYPE_CHECKING:
    from conftest import JqServer

pytestmark = pytest.mark.browser

DOCS = Path(__file__).resolve().parents[2] / "docs"
LIVE = 15_000  # ms to wait for something pushed over SSE (stats come at least every 2 s)


class RecordedPage:
    """A page with every request it made: URL and headers."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.requests: list[Request] = []
        page.on("request", lambda request: self.requests.append(request))
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def urls(self) -> list[str]:
        return [request.url for request in self.requests]


@pytest.fixture
def dashboard(chromium: Browser, jq_server: JqServer) -> Iterator[RecordedPage]:
    context = chromium.new_context(viewport={"width": 1440, "height": 900}, color_scheme="light")
    recorded = RecordedPage(context.new_page())
    yield recorded
    context.close()
    assert recorded.errors == [], "the page threw"


def connect(recorded: RecordedPage, server: JqServer) -> Page:
    page = recorded.page
    page.goto(server.url + "/")
    page.fill("#key-input", str(server.client_key))
    page.click("#key-form button[type=submit]")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE)
    return page


def submit(server: JqServer, **body: object) -> str:
    with server.client(server.client_key) as http:
        response = http.post("/jobs", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["job_id"])


def lease_and_settle(server: JqServer, *, error: str | None = None) -> str:
    with server.client(server.worker_key) as http:
        leased = http.post("/jobs/lease", json={}).json()
        body = {"lease_id": leased["lease_id"]}
        body.update({"result_error": error} if error else {"result": '{"ok": true}'})
        assert http.post(f"/jobs/{leased['job_id']}/ack", json=body).status_code == 200
        return str(leased["job_id"])


def make_dead(server: JqServer) -> str:
    # Top priority: leased before anything else the test has queued.
    job_id = submit(server, payload='{"task": "resize", "image": 42}', max_retries=0, priority=99)
    assert lease_and_settle(server, error="ValueError: image 42 is corrupt") == job_id
    return job_id


def get_job(server: JqServer, job_id: str) -> dict[str, object]:
    with server.client(server.client_key) as http:
        return dict(http.get(f"/jobs/{job_id}").json())


def test_counters_move_live_and_the_key_stays_out_of_urls(
    dashboard: RecordedPage, jq_server: JqServer
) -> None:
    page = connect(dashboard, jq_server)
    expect(page.locator("#stat-runnable")).to_have_text("0", timeout=LIVE)
    for n in range(3):
        submit(jq_server, payload=f"job {n}")
    expect(page.locator("#stat-runnable")).to_have_text("3", timeout=LIVE)
    make_dead(jq_server)
    expect(page.locator("#stat-dead")).to_have_text("1", timeout=LIVE)
    expect(page.locator("#jobs-body tr")).to_have_count(4, timeout=LIVE)

    # The key survives a reload (localStorage) and the page goes live without asking again.
    page.reload()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE)
    expect(page.locator("#key-set")).to_be_visible()
    expect(page.locator("#stat-runnable")).to_have_text("3", timeout=LIVE)

    key = str(jq_server.client_key)
    assert not [url for url in dashboard.urls() if key in url]
    streams = [url for url in dashboard.urls() if "/events?" in url]
    assert streams and all("ticket=" in url for url in streams)
    api_calls = [r for r in dashboard.requests if "/jobs" in r.url or "/events/ticket" in r.url]
    assert api_calls
    assert all(r.headers.get("authorization") == f"Bearer {key}" for r in api_calls)


def test_a_refused_key_is_reported_and_forgotten(
    dashboard: RecordedPage, jq_server: JqServer
) -> None:
    page = dashboard.page
    page.goto(jq_server.url + "/")
    page.fill("#key-input", "client_not-a-real-key")
    page.click("#key-form button[type=submit]")
    expect(page.locator("#key-error")).to_contain_text("refused", timeout=LIVE)
    expect(page.locator("#key-form")).to_be_visible()
    assert page.evaluate("localStorage.getItem('jq.apiKey')") is None


def test_the_form_enqueues_a_job(dashboard: RecordedPage, jq_server: JqServer) -> None:
    page = connect(dashboard, jq_server)
    page.fill("#enqueue-form textarea[name=payload]", '{"task": "email", "to": "ada@example.com"}')
    page.fill("#enqueue-form input[name=priority]", "7")
    page.fill("#enqueue-form input[name=max_retries]", "1")
    page.fill("#enqueue-form input[name=delay_ms]", "0")
    page.click("#enqueue-form button[type=submit]")
    result = page.locator("#enqueue-result")
    expect(result).to_have_attribute("data-kind", "ok", timeout=LIVE)
    job_id = str(result.get_attribute("title"))

    with jq_server.client(jq_server.client_key) as http:
        listed = http.get("/jobs").json()["jobs"]
    assert [job["job_id"] for job in listed] == [job_id]
    stored = get_job(jq_server, job_id)
    assert stored["payload"] == '{"task": "email", "to": "ada@example.com"}'
    assert stored["priority"] == 7
    assert stored["max_retries"] == 1
    expect(page.locator(f'#jobs-body tr[data-job-id="{job_id}"]')).to_be_visible(timeout=LIVE)

    # A bad value comes back as the server's message about that field, not a broken page.
    page.fill("#enqueue-form input[name=queue]", "no spaces allowed")
    page.click("#enqueue-form button[type=submit]")
    expect(result).to_have_attribute("data-kind", "error", timeout=LIVE)
    expect(result).to_contain_text("queue")


def test_a_dead_job_can_be_inspected_and_requeued(
    dashboard: RecordedPage, jq_server: JqServer
) -> None:
    dead = make_dead(jq_server)
    page = connect(dashboard, jq_server)
    expect(page.locator("#stat-dead")).to_have_text("1", timeout=LIVE)
    page.click('#filters .chip[data-filter="DEAD"]')
    row = page.locator(f'#jobs-body tr[data-job-id="{dead}"]')
    expect(row).to_be_visible(timeout=LIVE)

    row.locator("td").first.click()
    expect(page.locator("#d-job_id")).to_have_text(dead, timeout=LIVE)
    expect(page.locator("#d-result_error")).to_have_text("ValueError: image 42 is corrupt")
    expect(page.locator("#d-payload")).to_contain_text('"image": 42')
    expect(page.locator("#d-attempts")).to_have_text("1 of 1")
    expect(page.locator("#d-why")).to_contain_text("DEAD after 1 attempt", timeout=LIVE)

    row.locator("button[data-requeue]").click()
    expect(page.locator("#stat-dead")).to_have_text("0", timeout=LIVE)
    assert get_job(jq_server, dead)["state"] == "READY"
    expect(row).to_have_count(0, timeout=LIVE)  # it left the DEAD filter
    expect(page.locator("#detail-state .pill")).to_have_text("READY", timeout=LIVE)


def _traffic(server: JqServer, stop: threading.Event) -> None:
    """A little steady, mixed load so the sparklines and the table have something to show:
    most jobs are acked, some fail into RETRY, some stay RUNNING."""
    with (
        httpx.Client(base_url=server.url, headers=server.headers(server.client_key)) as client,
        httpx.Client(base_url=server.url, headers=server.headers(server.worker_key)) as worker,
    ):
        n = 0
        while not stop.wait(0.05):
            n += 1
            client.post("/jobs", json={"payload": f'{{"n": {n}}}', "priority": n % 3})
            if n % 4 == 0:
                continue  # stays READY for a while
            leased = worker.post("/jobs/lease", json={})
            if leased.status_code != 200:
                continue
            job = leased.json()
            if n % 7 == 0:
                continue  # stays RUNNING until its lease runs out
            outcome = {"result_error": "TimeoutError"} if n % 5 == 0 else {"result": "ok"}
            worker.post(f"/jobs/{job['job_id']}/ack", json={"lease_id": job["lease_id"], **outcome})


def test_screenshot_and_phone_layout(
    dashboard: RecordedPage, jq_server: JqServer, tmp_path: Path
) -> None:
    make_dead(jq_server)
    page = connect(dashboard, jq_server)
    stop = threading.Event()
    traffic = threading.Thread(target=_traffic, args=(jq_server, stop), daemon=True)
    traffic.start()
    try:
        # Enough stats events for a sparkline worth looking at.
        page.wait_for_function(
            "() => (document.querySelector('#spark-submits .line')?.getAttribute('d') || '')"
            ".split('L').length >= 12",
            timeout=60_000,
        )
        page.click('#filters .chip[data-filter="DEAD"]')
        page.locator("#jobs-body tr").first.locator("td").first.click()
        expect(page.locator("#d-result_error")).not_to_be_empty(timeout=LIVE)
        page.click('#filters .chip[data-filter=""]')
        expect(page.locator("#jobs-body tr").nth(5)).to_be_visible(timeout=LIVE)
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
    finally:
        stop.set()
        traffic.join()
    assert shot.stat().st_size > 20_000
    if os.environ.get("JQ_UPDATE_SCREENSHOT"):
        # Only on request: a test run must not leave the working tree changed.
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(shot, DOCS / "dashboard.png")

    page.set_viewport_size({"width": 390, "height": 844})
    widths = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], f"horizontal overflow on a phone: {widths}"
    for selector in ("#stat-dead", "#spark-acks", "#enqueue-form", "#jobs-body tr"):
        box = page.locator(selector).first.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, selector


@pytest.mark.slow  # restarts a server / runs a whole process
def test_the_page_reconnects_with_a_fresh_ticket_after_a_restart(
    dashboard: RecordedPage, jq_server: JqServer
) -> None:
    # Tickets are signed, not remembered: one outlives a restart. With 2 s tickets the page's
    # expires while the server is down, so the restarted server refuses it.
    jq_server.stop()
    jq_server.args = (*jq_server.args, "--ticket-ttl", "2s")
    jq_server.start()
    page = connect(dashboard, jq_server)
    jq_server.stop()
    expect(page.locator("#conn")).to_have_attribute("data-state", "retrying", timeout=LIVE)
    expect(page.locator("#conn-text")).to_have_text("disconnected, retrying")
    time.sleep(2.5)
    jq_server.start()
    # The old ticket is refused: the page must ask for a new one by itself.
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=60_000)
    job_id = submit(jq_server, payload="after the restart")
    expect(page.locator("#stat-runnable")).to_have_text("1", timeout=LIVE)
    expect(page.locator(f'#jobs-body tr[data-job-id="{job_id}"]')).to_be_visible(timeout=LIVE)
    tickets = {url for url in dashboard.urls() if "/events?" in url and "ticket=" in url}
    assert len(tickets) >= 2
