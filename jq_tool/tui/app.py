"""The `jq tui` Textual app: a live terminal dashboard and a client of the HTTP API like any other.

It follows `GET /events` through the SDK's `events()` (typed events: `Stats` drives the counters
and the submits/s and acks/s sparklines, a `JobEvent` marks the jobs table stale) and reads
pages of `GET /jobs` through the same client. When the stream drops (the server restarts, the
network goes) it says "disconnected, retrying" and reconnects with a short capped backoff, then
re-reads the table, since events missed meanwhile are not replayed. Keys: 1–7 filter by state,
n enqueues a test job, r requeues the highlighted DEAD job, Enter shows a job's payload and
result, q quits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Sparkline, Static

from jq_tool.sdk import (
    AsyncClient,
    AsyncEventStream,
    Job,
    JobEvent,
    JobState,
    JqError,
    Stats,
    utc_now,
)

COUNTERS = ("runnable", "running", "scheduled", "retry", "dead", "acked")

# Keys 1–7, in the order the filter bar shows them; None is every state.
STATE_FILTERS: tuple[JobState | None, ...] = (
    None,
    JobState.READY,
    JobState.RUNNING,
    JobState.RETRY,
    JobState.DEAD,
    JobState.ACKED,
    JobState.CANCELLED,
)

STATE_STYLES = {
    JobState.READY: "bold #60a5fa",
    JobState.RUNNING: "bold #a78bfa",
    JobState.RETRY: "bold #fb923c",
    JobState.DEAD: "bold #f87171",
    JobState.ACKED: "bold #4ade80",
    JobState.CANCELLED: "bold #a1a1aa",
    JobState.WAITING: "bold #94a3b8",  # waiting for its parents (depends_on)
}

SPARK_POINTS = 60
JOBS_PAGE = 100
RETRY_MAX_S = 2.0
# Stats arrive at least every 2 s; a stream silent for longer than this is dead.
STREAM_READ_TIMEOUT_S = 10.0
TEST_PAYLOAD = '{"source": "jq tui", "kind": "test"}'


class Counter(Widget):
    """One queue total: a label and its live value."""

    value: reactive[int | None] = reactive(None)

    def __init__(self, label: str, *, id: str) -> None:
        super().__init__(id=id)
        self.label = label

    def render(self) -> Text:
        text = Text(self.label.upper() + "\n", style="dim")
        text.append("–" if self.value is None else f"{self.value:,}", style="bold")
        return text


def _short(job_id: str) -> str:
    return job_id[:8]


def _clock(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%H:%M:%S") if moment else ""


def _state_label(job: Job) -> Text:
    label = job.state.value
    if job.state is JobState.READY and job.run_at and job.run_at > utc_now():
        label = "SCHEDULED"
    return Text(label, style=STATE_STYLES.get(job.state, "bold"))


class JqDashboard(App[None]):
    """Counters, rates and the jobs table of one jq server, kept live."""

    CSS_PATH = "dashboard.tcss"
    TITLE = "jq"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("n", "enqueue", "Enqueue test job"),
        Binding("r", "requeue", "Requeue DEAD"),
        *[
            Binding(str(index + 1), f"filter({index})", "Filter 1–7", show=index == 0)
            for index in range(len(STATE_FILTERS))
        ],
    ]

    connected: reactive[bool] = reactive(False)
    stats: reactive[Stats | None] = reactive(None)
    filter_index: reactive[int] = reactive(0)

    def __init__(self, url: str, key: str) -> None:
        super().__init__()
        self.url = url.rstrip("/")
        self.key = key
        self.status_reason = "connecting"
        self.submits: deque[float] = deque(maxlen=SPARK_POINTS)
        self.acks: deque[float] = deque(maxlen=SPARK_POINTS)
        self.jobs: dict[str, Job] = {}
        self._opened: str | None = None  # the job whose whole record Enter asked for
        self._jobs_stale = False
        # No retries inside the SDK: the event loop below owns reconnecting, and a keypress
        # should fail fast with a message rather than hang while the server is down.
        self.client = AsyncClient(self.url, key, timeout=5.0, retries=0)

    # --- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="topbar"):
            yield Static(Text.assemble(("jq", "bold"), "  ", (self.url, "dim")), id="title")
            yield Static("connecting", id="status")
        with Horizontal(id="counters"):
            for name in COUNTERS:
                yield Counter(name, id=f"count-{name}")
        with Horizontal(id="rates"):
            with Vertical(classes="rate"):
                yield Static("submits/s  –", id="rate-submits")
                yield Sparkline([], id="spark-submits")
            with Vertical(classes="rate"):
                yield Static("acks/s  –", id="rate-acks")
                yield Sparkline([], id="spark-acks")
        yield Static(id="filters")
        table: DataTable[str | Text] = DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("", id="detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#jobs", DataTable)
        table.add_column("job", key="job_id", width=10)
        table.add_column("state", key="state", width=10)
        table.add_column("queue", key="queue", width=14)
        table.add_column("priority", key="priority", width=8)
        table.add_column("attempts", key="attempts", width=8)
        table.add_column("updated", key="updated", width=9)
        table.add_column("error", key="error")
        self._render_filters()
        self.follow_events()
        self.set_interval(0.5, self._refresh_if_stale)

    async def on_unmount(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.aclose()

    # --- the live stream ---------------------------------------------------------------------

    @work(exclusive=True, group="events")
    async def follow_events(self) -> None:
        delay = 0.25
        while True:
            try:
                async with self.client.events(timeout=STREAM_READ_TIMEOUT_S) as stream:
                    self.status_reason = ""
                    self.connected = True
                    delay = 0.25
                    self._jobs_stale = True
                    await self._read_stream(stream)
            except JqError as error:
                if error.status is not None:  # refused (401, 403, 503): say why
                    self.status_reason = _refusal(error)
            except Exception:  # any other failure of the stream means: reconnect
                pass
            self.connected = False
            self._set_status()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def _read_stream(self, stream: AsyncEventStream) -> None:
        async for event in stream:
            if isinstance(event, Stats):
                self.stats = event
            elif isinstance(event, JobEvent):
                self._jobs_stale = True

    def watch_connected(self, connected: bool) -> None:
        self._set_status()

    def _set_status(self) -> None:
        status = self.query_one("#status", Static)
        if self.connected:
            status.update(Text("● live", style="bold #4ade80"))
            status.set_class(False, "down")
        else:
            reason = f" ({self.status_reason})" if self.status_reason else ""
            status.update(Text(f"○ disconnected, retrying{reason}", style="bold #f87171"))
            status.set_class(True, "down")

    def watch_stats(self, stats: Stats | None) -> None:
        if stats is None:
            return
        for name in COUNTERS:
            self.query_one(f"#count-{name}", Counter).value = getattr(stats, name)
        self.submits.append(max(0.0, stats.submits_per_sec))
        self.acks.append(max(0.0, stats.acks_per_sec))
        self.query_one("#spark-submits", Sparkline).data = list(self.submits)
        self.query_one("#spark-acks", Sparkline).data = list(self.acks)
        self.query_one("#rate-submits", Static).update(f"submits/s  {stats.submits_per_sec:.1f}")
        self.query_one("#rate-acks", Static).update(f"acks/s  {stats.acks_per_sec:.1f}")

    # --- the jobs table ----------------------------------------------------------------------

    @property
    def state_filter(self) -> JobState | None:
        return STATE_FILTERS[self.filter_index]

    def watch_filter_index(self, index: int) -> None:
        self._render_filters()
        self._jobs_stale = True
        self.refresh_jobs()

    def _render_filters(self) -> None:
        text = Text("filter  ", style="dim")
        for index, state in enumerate(STATE_FILTERS):
            name = state.value.lower() if state else "all"
            style = "reverse bold" if index == self.filter_index else ""
            text.append(f" {index + 1} {name} ", style=style)
            text.append(" ")
        self.query_one("#filters", Static).update(text)

    def _refresh_if_stale(self) -> None:
        if self._jobs_stale and self.connected:
            self.refresh_jobs()

    @work(exclusive=True, group="jobs")
    async def refresh_jobs(self) -> None:
        self._jobs_stale = False
        wanted = self.state_filter
        try:
            page = await self.client.list(state=wanted, limit=JOBS_PAGE)
        except JqError:
            self._jobs_stale = True  # try again on the next tick
            return
        if wanted is not self.state_filter:
            return
        with contextlib.suppress(NoMatches):  # the app closed while the page was on its way
            self._fill_table(page.jobs)

    def _fill_table(self, jobs: list[Job]) -> None:
        table: DataTable[str | Text] = self.query_one("#jobs", DataTable)
        selected = self.selected_job_id()
        table.clear()
        self.jobs = {job.job_id: job for job in jobs}
        for job in jobs:
            table.add_row(
                Text(_short(job.job_id)),
                _state_label(job),
                job.queue,
                Text(str(job.priority), justify="right"),
                Text(f"{job.attempts}/{job.max_retries + 1}", justify="right"),
                _clock(job.updated_at or job.created_at),
                Text(job.result_error or "", style="#f87171", overflow="ellipsis", no_wrap=True),
                key=job.job_id,
            )
        if selected in self.jobs:
            table.move_cursor(row=table.get_row_index(selected))

    def selected_job_id(self) -> str | None:
        table: DataTable[str | Text] = self.query_one("#jobs", DataTable)
        if table.row_count == 0:
            return None
        with contextlib.suppress(Exception):
            row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
            return row_key.value
        return None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        job_id = event.row_key.value or ""
        if job_id and job_id == self._opened:
            # A refresh of the table highlights the opened row again: keep showing the whole
            # job (list pages carry no payload or result), read afresh.
            self.show_job(job_id)
            return
        self._opened = None
        job = self.jobs.get(job_id)
        self.query_one("#detail", Static).update(_detail(job) if job else "")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self._opened = event.row_key.value
            self.show_job(event.row_key.value)

    @work(exclusive=True, group="detail")
    async def show_job(self, job_id: str) -> None:
        """Enter on a row: the whole job (list pages carry no payload or result)."""
        try:
            job = await self.client.get(job_id)
        except JqError as error:
            self.notify(f"could not load {_short(job_id)}: {error}", severity="error")
            return
        why = None
        with contextlib.suppress(JqError):  # an older server has no explain: show the job
            why = (await self.client.explain(job_id)).summary
        with contextlib.suppress(NoMatches):  # the app closed while the job was on its way
            if self.selected_job_id() == job_id:
                self.query_one("#detail", Static).update(_detail(job, why))

    # --- actions -----------------------------------------------------------------------------

    def action_filter(self, index: int) -> None:
        self.filter_index = index

    async def action_enqueue(self) -> None:
        try:
            job_id = await self.client.submit(TEST_PAYLOAD)
        except JqError as error:
            self.notify(f"enqueue failed: {error}", severity="error")
            return
        self.notify(f"enqueued {_short(job_id)}")
        self._jobs_stale = True

    async def action_requeue(self) -> None:
        job_id = self.selected_job_id()
        job = self.jobs.get(job_id or "")
        if job is None or job_id is None:
            self.notify("no job selected", severity="warning")
            return
        if job.state is not JobState.DEAD:
            self.notify(f"{_short(job_id)} is {job.state.value}: only DEAD jobs can be requeued")
            return
        try:
            settled = await self.client.requeue(job_id)
        except JqError as error:
            self.notify(f"requeue failed: {error}", severity="error")
            return
        self.notify(f"requeued {_short(job_id)}: {settled.state.value}")
        self._jobs_stale = True


def _refusal(error: JqError) -> str:
    status = f"HTTP {error.status}"
    return status if error.message == status else f"{status}: {error.message}"


def _detail(job: Job, why: str | None = None) -> Text:
    text = Text.assemble(
        (job.job_id, "bold"),
        "  ",
        _state_label(job),
        f"  queue {job.queue}  priority {job.priority}  attempts {job.attempts}",
        f"/{job.max_retries + 1}",
    )
    if job.payload is not None:
        text.append(f"\npayload: {_one_line(job.payload)}", style="dim")
    if job.result is not None:
        text.append(f"\nresult: {_one_line(job.result)}", style="#4ade80")
    if job.result_error:
        text.append(f"\nerror: {_one_line(job.result_error)}", style="#f87171")
    if job.progress is not None:
        text.append(f"\nprogress: {job.progress.progress:.0%} {job.progress.note}".rstrip())
    if why:
        text.append(f"\nwhy: {why}", style="italic")
    return text


def _one_line(value: str, limit: int = 200) -> str:
    flat = " ".join(value.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
