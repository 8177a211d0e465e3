"""The dashboard's main thread under load (not a test): a real `jq serve`, a real worker process,
Debian's chromium driven by Playwright, the page connected with a key (issue 17).

Two phases, each on a fresh page:

- **steady**: jobs submitted at `--rate` jobs/s (batches every 100 ms) and acked by one SDK
  worker process, so each job makes three live events (READY, RUNNING, ACKED). Measured over
  `--seconds`: the page's main-thread busy share, the CDP `Performance` metric `TaskDuration`
  delta over the wall time, and the job events the page received.
- **burst**: `--burst` jobs submitted as fast as batches of 1,000 go, no worker. Measured: every
  long task (PerformanceObserver `longtask`, > 50 ms) from the first submit until the page shows
  the server's runnable count, the longest of them, and how long the page took to show it.

`--ref main` serves the page, script and stylesheet of that git revision instead (intercepted
in the browser), to compare with the dashboard before issue 17. The machine is shared: read the
figures as ratios and orders of magnitude.

    .venv/bin/python bench/dashboard_bench.py
    .venv/bin/python bench/dashboard_bench.py --rate 1000 --seconds 20 --burst 50000
    .venv/bin/python bench/dashboard_bench.py --ref main --rate 200 --burst 5000 --json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from playwright.sync_api import TimeoutError as PlaywrightTimeout

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.http_bench import Server, start_server, stop_server_process  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[1]

# Installed before the page's own scripts: long tasks (buffered) and the job events received.
PROBE = """
window.__longTasks = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__longTasks.push([entry.startTime, entry.duration]);
}).observe({type: "longtask", buffered: true});
window.__jobEvents = 0;
const NativeEventSource = window.EventSource;
window.EventSource = function (url, init) {
  const source = new NativeEventSource(url, init);
  source.addEventListener("job", () => { window.__jobEvents++; });
  // batch=1 frames: an array of events each (counting them parses the frame a second time, so
  // the busy share measured is, if anything, above the page's own).
  source.addEventListener("jobs", (e) => { window.__jobEvents += JSON.parse(e.data).length; });
  return source;
};
window.EventSource.prototype = NativeEventSource.prototype;
Object.assign(window.EventSource, {CONNECTING: 0, OPEN: 1, CLOSED: 2});
"""

WORKER_CODE = """
import asyncio, sys
from jq_tool.sdk import AsyncWorker, WorkerOptions

async def noop(job):
    return None

worker = AsyncWorker(sys.argv[1], sys.argv[2], noop, WorkerOptions(concurrency=64, poll_wait=1.0))
asyncio.run(worker.run(install_signal_handlers=True))
"""


def submitter(server: Server, rate: int, stop: threading.Event) -> None:
    """`rate` jobs/s in ten batches a second, paced against the clock (late batches catch up)."""
    per_batch = max(1, rate // 10)
    headers = {"Authorization": f"Bearer {server.keys['client']}"}
    body = {"jobs": [{"payload": '{"bench": "dashboard"}'}] * per_batch}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as http:
        start = time.monotonic()
        sent = 0
        while not stop.is_set():
            due = start + sent / 10
            delay = due - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            http.post("/jobs/batch", json=body).raise_for_status()
            sent += 1


def burst(server: Server, jobs: int) -> None:
    headers = {"Authorization": f"Bearer {server.keys['client']}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as http:
        left = jobs
        while left > 0:
            n = min(1000, left)
            body = {"jobs": [{"payload": '{"bench": "burst"}'}] * n}
            http.post("/jobs/batch", json=body).raise_for_status()
            left -= n


def runnable(server: Server) -> int:
    headers = {"Authorization": f"Bearer {server.keys['client']}"}
    return int(
        httpx.get(f"{server.base_url}/stats", headers=headers, timeout=30).json()["runnable"]
    )


def page_files(ref: str) -> dict[str, bytes]:
    """The dashboard's page, script and stylesheet at a git revision, by URL path."""
    files = {
        "/": "jq_tool/server/templates/index.html",
        "/static/dashboard.js": "jq_tool/server/static/dashboard.js",
        "/static/dashboard.css": "jq_tool/server/static/dashboard.css",
    }
    return {
        path: subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{ref}:{name}"], check=True, capture_output=True
        ).stdout
        for path, name in files.items()
    }


def open_page(browser, server: Server, ref: str | None):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.add_init_script(PROBE)
    if ref:
        files = page_files(ref)

        def serve(route, request):  # type: ignore[no-untyped-def]
            path = "/" + request.url.split("/", 3)[3].split("?")[0]
            kind = (
                "text/html"
                if path == "/"
                else "text/javascript"
                if path.endswith(".js")
                else "text/css"
            )
            route.fulfill(status=200, body=files[path], content_type=kind)

        for path in files:
            page.route(server.base_url + path, serve)
    page.goto(server.base_url + "/")
    page.fill("#key-input", server.keys["client"])
    page.click("#key-form button[type=submit]")
    page.wait_for_selector('#conn[data-state="live"]', timeout=30_000)
    return context, page


def task_seconds(cdp) -> float:  # type: ignore[no-untyped-def]
    metrics = cdp.send("Performance.getMetrics")["metrics"]
    return float(next(m["value"] for m in metrics if m["name"] == "TaskDuration"))


def steady(browser, jq: Path, rate: int, seconds: float, ref: str | None) -> dict[str, object]:  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(jq, Path(tmp) / "data", Path(tmp) / "serve.log")
        worker = subprocess.Popen(
            [sys.executable, "-c", WORKER_CODE, server.base_url, server.keys["worker"]],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stop = threading.Event()
        load = threading.Thread(target=submitter, args=(server, rate, stop), daemon=True)
        context = None
        try:
            context, page = open_page(browser, server, ref)
            cdp = context.new_cdp_session(page)
            cdp.send("Performance.enable")
            load.start()
            time.sleep(3)  # past the start: the worker warmed up, the stream at its pace
            busy0, events0, wall0 = (
                task_seconds(cdp),
                page.evaluate("window.__jobEvents"),
                time.monotonic(),
            )
            time.sleep(seconds)
            busy1, events1, wall1 = (
                task_seconds(cdp),
                page.evaluate("window.__jobEvents"),
                time.monotonic(),
            )
            longest = max((d for _, d in page.evaluate("window.__longTasks")), default=0.0)
        finally:
            stop.set()
            if load.is_alive():
                load.join()
            if context is not None:
                context.close()
            worker.terminate()
            worker.wait(10)
            stop_server_process(server.process)
    wall = wall1 - wall0
    return {
        "rate_jobs_per_s": rate,
        "seconds": round(wall, 1),
        "events_per_s": round((events1 - events0) / wall),
        "main_thread_busy": round((busy1 - busy0) / wall, 3),
        "longest_task_ms": round(longest),
    }


def burst_phase(
    browser, jq: Path, jobs: int, ref: str | None, timeout_s: float
) -> dict[str, object]:  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(jq, Path(tmp) / "data", Path(tmp) / "serve.log")
        context = None
        try:
            context, page = open_page(browser, server, ref)
            page.wait_for_timeout(1000)
            page.evaluate("window.__longTasks = []")
            start = time.monotonic()
            burst(server, jobs)
            submitted = time.monotonic() - start
            expected = f"{runnable(server):,}"
            try:
                page.wait_for_function(
                    "(want) => document.querySelector('#stat-runnable').textContent === want",
                    arg=expected,
                    timeout=timeout_s * 1000,
                    polling=100,
                )
                caught_up: float | None = time.monotonic() - start
            except PlaywrightTimeout:
                caught_up = None  # the page never showed it: frozen, or still behind
            page.wait_for_timeout(2000)  # whatever the table still had to do
            tasks = [d for _, d in page.evaluate("window.__longTasks")]
            # A page frozen that long may not answer evaluate at once: the call above waits.
            events = page.evaluate("window.__jobEvents")
        finally:
            if context is not None:
                context.close()
            stop_server_process(server.process)
    return {
        "jobs": jobs,
        "submit_s": round(submitted, 1),
        "page_caught_up_s": round(caught_up, 1) if caught_up is not None else f">{timeout_s:g}",
        "events_received": events,
        "long_tasks": len(tasks),
        "longest_task_ms": round(max(tasks, default=0.0)),
        "long_task_total_ms": round(sum(tasks)),
    }


def main(argv: list[str] | None = None) -> int:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=1000, help="steady jobs/s (default 1000)")
    parser.add_argument("--seconds", type=float, default=15.0, help="steady measurement window")
    parser.add_argument("--burst", type=int, default=50_000, help="jobs in the burst (0: skip)")
    parser.add_argument("--burst-timeout", type=float, default=300.0)
    parser.add_argument("--ref", default=None, help="serve the dashboard of this git revision")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    jq = Path(sys.executable).parent / "jq"
    report: dict[str, object] = {"ref": args.ref or "working tree"}

    def done(phase: str, figures: dict[str, object]) -> None:
        # Each phase as soon as it is measured: a frozen page may hang what comes after.
        report[phase] = figures
        if not args.json:
            print(phase, " ".join(f"{k}={v}" for k, v in figures.items()), flush=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            if args.rate > 0:
                done("steady", steady(browser, jq, args.rate, args.seconds, args.ref))
            if args.burst > 0:
                done("burst", burst_phase(browser, jq, args.burst, args.ref, args.burst_timeout))
        finally:
            browser.close()
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
