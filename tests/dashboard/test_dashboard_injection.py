"""Text a client wrote, shown by the dashboard, is text: a payload, a result, an error and its
traceback, a dead-letter group's cause, a progress note and a worker's name full of markup,
in a real browser against a real `jq serve`, never run as script nor made into elements. Any
client key can write these, and an operator's browser holds an admin key."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Page, expect

from tests.dashboard.test_dashboard import LIVE, RecordedPage, connect, submit
from tests.dashboard.test_dashboard_console import console, row  # noqa: F401 - a fixture

if TYPE_CHECKING:
    from conftest import JqServer

pytestmark = pytest.mark.browser

# Each would run `__injected(n)` or add an element marked data-injected if read as HTML.
MARKUP = [
    '<img src=x data-injected onerror="__injected(1)">',
    '"><svg data-injected onload="__injected(2)">',
    '\'><iframe data-injected srcdoc="<script>parent.__injected(3)</script>"></iframe>',
    "</textarea></pre><script data-injected>__injected(4)</script>",
    '<a data-injected href="javascript:__injected(5)">x</a>',
]
TEXT = " ".join(MARKUP)
WORKER = "<img/data-injected/src=x/onerror=__injected(6)>"  # a worker id: printable ASCII
TRAP = "window.__injections = []; window.__injected = (n) => window.__injections.push(n);"


def _injections(page: Page) -> list[int]:
    found: list[int] = page.evaluate("window.__injections")
    assert page.locator("[data-injected]").count() == 0, "markup became elements"
    return found


def test_text_from_clients_is_shown_as_text(console: RecordedPage, jq_server: JqServer) -> None:  # noqa: F811
    console.page.context.add_init_script(TRAP)
    payload_job = submit(jq_server, payload=TEXT, max_retries=0)
    with jq_server.client(jq_server.worker_key) as http:
        headers = {"X-Jq-Worker": WORKER}
        leased = http.post("/jobs/lease", json={}, headers=headers).json()
        assert leased["job_id"] == payload_job
        note = MARKUP[1][:200]
        body = {"progress": 0.5, "note": note, "lease_id": leased["lease_id"]}
        assert http.post(f"/jobs/{payload_job}/progress", json=body).status_code == 200
    page = connect(console, jq_server)
    expect(row(page, payload_job)).to_be_visible(timeout=LIVE)
    page.click("#workers-title")  # the workers card shows the worker's name
    expect(page.locator("#workers-body")).to_contain_text("<img", timeout=LIVE)
    row(page, payload_job).click()
    expect(page.locator("#d-payload")).to_contain_text(MARKUP[3], timeout=LIVE)
    expect(page.locator("#d-progress")).to_contain_text(note[:20], timeout=LIVE)
    assert _injections(page) == []

    error = f"ValueError: {TEXT}\nTraceback (most recent call last):\n  {TEXT}"
    with jq_server.client(jq_server.worker_key) as http:
        body = {"lease_id": leased["lease_id"], "result_error": error}
        assert http.post(f"/jobs/{payload_job}/ack", json=body).status_code == 200
    acked_job = submit(jq_server, payload="fine")
    with jq_server.client(jq_server.worker_key) as http:
        leased = http.post("/jobs/lease", json={}).json()
        body = {"lease_id": leased["lease_id"], "result": f'"{TEXT.replace(chr(34), "")}"'}
        assert http.post(f"/jobs/{acked_job}/ack", json=body).status_code == 200
    expect(page.locator("#groups-body tr").first).to_contain_text("ValueError", timeout=LIVE)
    expect(page.locator("#groups-body")).to_contain_text("<img", timeout=LIVE)
    page.reload()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE)
    for job_id, field in ((payload_job, "#d-error"), (acked_job, "#d-result")):
        expect(row(page, job_id)).to_be_visible(timeout=LIVE)
        row(page, job_id).click()
        expect(page.locator(field)).to_contain_text("<svg", timeout=LIVE)
        assert _injections(page) == []
    page.fill("#search-input", MARKUP[0])
    page.press("#search-input", "Enter")
    expect(row(page, payload_job)).to_be_visible(timeout=LIVE)
    assert _injections(page) == []
