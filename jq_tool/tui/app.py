"""The `jq tui` Textual app: a live terminal dashboard and a client of the HTTP API like any other.

It follows `GET /events` through the SDK's `events()` (typed events: `Stats` drives the counters
and the submits/s and acks/s sparklines, a `JobEvent` marks the jobs table stale) and reads
pages of `GET /jobs` through the same client. When the stream drops (the server restarts, the
network goes) it says "disconnected, retrying" and reconnects with a short capped backoff, then
re-reads the table, since events missed meanwhile are not replayed; a refused key (401, 403)
stops it with the reason, since retrying cannot help. `?` lists the keys: 1–9 filter by state,
`/` searches (id prefix, `queue:`, `state:`, error text), `p` pauses the table (the counters
keep moving), Enter opens a job in the detail pane (kept until Esc, read afresh as the job
changes), `r` requeues the chosen DEAD job after a confirmation, `j`/`u`/`w`/`s`/`d` switch
between the jobs, queues, workers, schedules and dead-letter group views (in the queues view
`P` pauses or resumes the chosen queue, in the dead-letter view `r` requeues the chosen group,
each after a confirmation), `n` enqueues a test job, `q` quits. The cursor stays on the
job chosen, by id, whatever the refresh does to the rows around it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from datetime import datetime
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.css.query import NoMatches
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import ContentSwitcher, DataTable, Footer, Input, Static
from textual.widgets.data_table import RowKey

from jq_tool.sdk import (
    AsyncClient,
    AsyncEventStream,
    DeadGroup,
    Job,
    JobEvent,
    JobState,
    JqError,
    QueueStats,
    Schedule,
    Stats,
    WorkerInfo,
    utc_now,
)
from jq_tool.terminal_text import terminal_safe

COUNTERS = ("runnable", "running", "scheduled", "retry", "dead", "acked")

# Keys 1–9, in the order the filter bar shows them; None is every state, "scheduled" is READY
# with a future run_at (the server filters it).
STATE_FILTERS: tuple[JobState | str | None, ...] = (
    None,
    JobState.READY,
    JobState.RUNNING,
    JobState.RETRY,
    JobState.DEAD,
    JobState.ACKED,
    JobState.CANCELLED,
    "scheduled",
    JobState.WAITING,
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
SPARK_BARS = " ▁▂▃▄▅▆▇█"
REFUSED = (401, 403)
QUEUES_SHOWN = 20
DEAD_GROUPS_SHOWN = 100
JOBS_PAGE = 100
RETRY_MAX_S = 2.0
# Stats arrive at least every 2 s; a stream silent for longer than this is dead.
STREAM_READ_TIMEOUT_S = 10.0
TEST_PAYLOAD = '{"source": "jq tui", "kind": "test"}'


class TextTable(DataTable[str | Text]):
    """A DataTable whose cells are shown as written. DataTable reads a str cell as Rich markup,
    and these cells hold what clients wrote (a worker's name, a failed job's error): a `[/]` in
    one raised MarkupError while the table drew, which ended the TUI, and `[b]` or `[link=…]`
    restyled or linked it. And the characters a terminal acts on (ESC, …) are shown as escapes
    (jq_tool/terminal_text.py): Textual passes ESC through to the terminal."""

    def add_row(self, *cells: str | Text, **kwargs: Any) -> RowKey:
        return super().add_row(*map(_safe_cell, cells), **kwargs)


def _safe_cell(cell: str | Text) -> Text:
    if isinstance(cell, str):
        return Text(terminal_safe(cell))
    safe = terminal_safe(cell.plain)
    if safe != cell.plain and not cell.spans:  # a cell of client text has one style: no spans
        cell = cell.copy()
        cell.plain = safe
    return cell


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


def spark_text(values: list[float], width: int) -> str:
    """A one-line sparkline of the last `width` values, scaled from ZERO to the largest: 161
    against 196 acks/s is two tall bars, not an empty one and a full one."""
    shown = values[-width:]
    top = max(shown, default=0.0)
    if top <= 0:
        return " " * len(shown)
    steps = len(SPARK_BARS) - 1
    return "".join(SPARK_BARS[round(max(0.0, v) / top * steps)] for v in shown)


def error_line(job: Job) -> str:
    """The current error as `Class: message` (the server clears it on a successful ack)."""
    if job.error_class or job.error_message:
        prefix = f"{job.error_class}: " if job.error_class else ""
        return prefix + (job.error_message or "")
    if not job.result_error:
        return ""
    lines = [line.strip() for line in job.result_error.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def parse_search(text: str) -> dict[str, str]:
    """`queue:emails state:dead 3f2a` → the server's filters; other words are error text."""
    found: dict[str, str] = {}
    words: list[str] = []
    for word in text.split():
        name, colon, value = word.partition(":")
        if colon and name.lower() in ("queue", "state", "id"):
            found[{"id": "id_prefix"}.get(name.lower(), name.lower())] = value
        elif (
            "id_prefix" not in found
            and len(word) >= 4
            and all(c in "0123456789abcdef-" for c in word.lower())
        ):
            found["id_prefix"] = word.lower()
        else:
            words.append(word)
    if words:
        found["error"] = " ".join(words)
    return found


HELP = """\
[b]jq tui — keys[/b]

  [b]1[/b]–[b]9[/b]    filter: all ready running retry dead acked cancelled scheduled waiting
  [b]/[/b]       search: id prefix, queue:NAME, state:STATE, error text (empty clears)
  [b]p[/b]       pause / resume the table (counters keep moving)
  [b]Enter[/b]   open the job under the cursor in the detail pane (kept until Esc)
  [b]Esc[/b]     close the detail pane or the search
  [b]r[/b]       requeue the chosen DEAD job (asks first)
  [b]j u w s d[/b] jobs, queues, workers, schedules, dead-letter groups views
          (in the dead-letter view, [b]r[/b] requeues the chosen group, asking first)
  [b]P[/b]       in the queues view: pause / resume the chosen queue (asks first)
  [b]n[/b]       enqueue a test job
  [b]q[/b]       quit
  [b]?[/b]       this help (any key closes it)
"""


class HelpScreen(ModalScreen[None]):
    """The keys, over the dashboard; any key closes it."""

    def compose(self) -> ComposeResult:
        yield Static(HELP, id="help")

    def on_key(self) -> None:
        self.dismiss()


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question: `y` answers yes, anything else no."""

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = terminal_safe(question)  # it may quote a dead-letter group's cause

    def compose(self) -> ComposeResult:
        yield Static(
            Text.assemble(self.question, ("\n\ny", "bold"), " yes   ", ("n", "bold"), " no"),
            id="confirm",
        )

    def on_key(self, event: object) -> None:
        key = getattr(event, "key", "")
        self.dismiss(key == "y")


class JqDashboard(App[None]):
    """Counters, rates, the jobs, queues and workers of one jq server, kept live."""

    CSS_PATH = "dashboard.tcss"
    TITLE = "jq"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("slash", "search", "Search"),
        Binding("p", "pause", "Pause"),
        Binding("n", "enqueue", "Enqueue", show=False),
        Binding("r", "requeue", "Requeue DEAD"),
        Binding("escape", "close", "Close", show=False),
        Binding("j", "view('jobs')", "Jobs", show=False),
        Binding("u", "view('queues')", "Queues"),
        Binding("w", "view('workers')", "Workers"),
        Binding("s", "view('schedules')", "Schedules"),
        Binding("d", "view('dead')", "Dead letters"),
        Binding("P", "toggle_queue", "Pause/resume queue", show=False),
        *[
            Binding(str(index + 1), f"filter({index})", "Filter 1–9", show=False)
            for index in range(len(STATE_FILTERS))
        ],
    ]

    connected: reactive[bool] = reactive(False)
    stats: reactive[Stats | None] = reactive(None)
    filter_index: reactive[int] = reactive(0)
    paused: reactive[bool] = reactive(False)

    def __init__(self, url: str, key: str) -> None:
        super().__init__()
        self.url = url.rstrip("/")
        self.key = key
        self.status_reason = "connecting"
        self.refused = False  # the key was refused: the stream stopped for good
        self.submits: deque[float] = deque(maxlen=SPARK_POINTS)
        self.acks: deque[float] = deque(maxlen=SPARK_POINTS)
        self.jobs: dict[str, Job] = {}
        self.search: dict[str, str] = {}
        # The job the operator chose (cursor moved by a key, or Enter): the cursor follows it
        # by id through refreshes, and `r` acts on it, never on whatever row sits there now.
        self.pinned: str | None = None
        self._opened: str | None = None  # the job shown in the detail pane, until Esc
        # Where the last refill put the cursor: the highlight events it causes (delivered after
        # it) are not the operator's choice.
        self._fill_cursor: str | None = None
        self._jobs_stale = False
        self.dead_groups: dict[str, DeadGroup] = {}  # the dead-letter view's groups, by fingerprint
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
            yield Static("submits/s  –", id="rate-submits", classes="rate")
            yield Static("acks/s  –", id="rate-acks", classes="rate")
        yield Static(id="filters")
        yield Input(
            placeholder="search: id prefix, queue:NAME, state:STATE, error text", id="search"
        )
        with ContentSwitcher(initial="jobs", id="views"):
            yield TextTable(id="jobs", cursor_type="row", zebra_stripes=True)
            for view in ("queues", "workers", "schedules", "dead"):
                yield TextTable(id=view, cursor_type="row")
        with VerticalScroll(id="detail-pane"):
            yield Static("", id="detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#jobs", DataTable)
        table.add_column("job", key="job_id", width=8)
        table.add_column("state", key="state", width=9)
        table.add_column("queue", key="queue", width=10)
        table.add_column("pri", key="priority", width=3)
        table.add_column("try", key="attempts", width=5)
        table.add_column("updated", key="updated", width=8)
        table.add_column("error", key="error")
        queues = self.query_one("#queues", DataTable)
        for label in (
            "queue",
            "runnable",
            "running",
            "sched",
            "retry",
            "dead",
            "latency",
            "acked/min",
            "leases",
            "flow",
        ):
            queues.add_column(label, key=label)
        schedules = self.query_one("#schedules", DataTable)
        for label in ("schedule", "when", "queue", "next run", "last run", "runs", "paused"):
            schedules.add_column(label, key=label)
        dead = self.query_one("#dead", DataTable)
        for label in ("jobs", "error", "queues", "last seen", "sample"):
            dead.add_column(label, key=label)
        workers = self.query_one("#workers", DataTable)
        for label in ("worker", "leases", "queues", "last seen"):
            workers.add_column(label, key=label)
        self.query_one("#search", Input).display = False
        self.query_one("#detail-pane").display = False
        table.focus()  # not the (hidden) search box: keys are commands until `/`
        self._render_filters()
        self.follow_events()
        self.set_interval(0.5, self._refresh_if_stale)
        self.set_interval(3.0, self._refresh_side_views)

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
                if error.status in REFUSED:
                    # Retrying cannot make a refused key good: stop and say so.
                    self.refused = True
                    self.status_reason = _refusal(error)
                    self.connected = False
                    self._set_status()
                    self._notify_error(
                        f"the key was refused ({self.status_reason}): start jq tui with a key "
                        "that has jobs:read",
                        timeout=30,
                    )
                    return
                if error.status is not None:  # 503 and the like: say why, and retry
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
                if event.job_id == self._opened:
                    self.show_job(event.job_id)

    def watch_connected(self, connected: bool) -> None:
        self._set_status()

    def watch_paused(self, paused: bool) -> None:
        self._set_status()
        self._render_filters()
        if not paused:
            self._jobs_stale = True

    def _notify_error(self, message: str, *, timeout: float | None = None) -> None:
        """A failure in the server's words, which may quote what a client or the operator
        wrote: shown as written (never read as markup; escapes as escapes), like the tables."""
        self.notify(terminal_safe(message), severity="error", timeout=timeout, markup=False)

    def _set_status(self) -> None:
        status = self.query_one("#status", Static)
        if self.refused:
            status.update(Text(f"✕ key refused: {self.status_reason}", style="bold #f87171"))
            status.set_class(True, "down")
        elif self.connected:
            label = "● live, table paused" if self.paused else "● live"
            status.update(Text(label, style="bold #4ade80"))
            status.set_class(False, "down")
        else:
            reason = f" ({self.status_reason})" if self.status_reason else ""
            status.update(Text(f"○ disconnected, retrying{reason}", style="bold #f87171"))
            status.set_class(True, "down")
        # Values on screen while the stream is down are stale: dimmed until it is back.
        self.set_class(not self.connected, "stale")

    def watch_stats(self, stats: Stats | None) -> None:
        if stats is None:
            return
        for name in COUNTERS:
            self.query_one(f"#count-{name}", Counter).value = getattr(stats, name)
        self.submits.append(max(0.0, stats.submits_per_sec))
        self.acks.append(max(0.0, stats.acks_per_sec))
        self._render_rate("submits", stats.submits_per_sec, self.submits)
        self._render_rate("acks", stats.acks_per_sec, self.acks)

    def _render_rate(self, name: str, value: float, series: deque[float]) -> None:
        widget = self.query_one(f"#rate-{name}", Static)
        label = f"{name}/s {value:>7.1f} "
        width = max(4, widget.size.width - len(label) - 1) if widget.size.width else 30
        colour = "#818cf8" if name == "submits" else "#4ade80"
        widget.update(Text.assemble((label, "bold"), (spark_text(list(series), width), colour)))

    # --- the jobs table ----------------------------------------------------------------------

    @property
    def state_filter(self) -> JobState | str | None:
        return STATE_FILTERS[self.filter_index]

    def watch_filter_index(self, index: int) -> None:
        self._unpin()  # another view: the choice made in the last one does not follow
        self._render_filters()
        self._jobs_stale = True
        self.refresh_jobs()

    def _render_filters(self) -> None:
        text = Text("", style="dim")
        for index, state in enumerate(STATE_FILTERS):
            name = state.value.lower() if isinstance(state, JobState) else (state or "all")
            style = "reverse bold" if index == self.filter_index else ""
            text.append(f"{index + 1} {name}", style=style)
            text.append(" ")
        if self.search:
            text.append("  / " + " ".join(f"{k}={v}" for k, v in self.search.items()), style="bold")
        if self.paused:
            text.append("  ⏸ paused (p)", style="bold #fb923c")
        self.query_one("#filters", Static).update(text)

    def _refresh_if_stale(self) -> None:
        if self._jobs_stale and self.connected and not self.paused:
            self.refresh_jobs()

    @work(exclusive=True, group="jobs")
    async def refresh_jobs(self) -> None:
        self._jobs_stale = False
        wanted = self.state_filter
        search = dict(self.search)
        state = wanted.value if isinstance(wanted, JobState) else wanted
        if state is None and "state" in search:
            state = search["state"].lower()
        try:
            page = await self.client.list(
                state=state,
                queue=search.get("queue"),
                id_prefix=search.get("id_prefix"),
                error=search.get("error"),
                limit=JOBS_PAGE,
            )
        except JqError as error:
            if error.status == 400:
                self._notify_error(f"search refused: {error}")
                return
            self._jobs_stale = True  # try again on the next tick
            return
        if wanted != self.state_filter or search != self.search:
            return
        with contextlib.suppress(NoMatches):  # the app closed while the page was on its way
            self._fill_table(page.jobs)

    def _unpin(self) -> None:
        """Nothing is chosen, and the row under the cursor now was not chosen either."""
        self.pinned = None
        self._fill_cursor = self.selected_job_id()

    def _fill_table(self, jobs: list[Job]) -> None:
        table: DataTable[str | Text] = self.query_one("#jobs", DataTable)
        under_cursor = self.selected_job_id()
        if under_cursor is not None and under_cursor != self._fill_cursor:
            # The operator moved the cursor and its RowHighlighted message is still queued:
            # that row is the choice, or clearing the table would take it back to row 0.
            self.pinned = under_cursor
        pinned = self.pinned
        rows = list(jobs)
        if pinned and pinned not in {job.job_id for job in rows}:
            # The chosen job left this page: nothing is chosen now (the cursor sits on row 0,
            # which the operator did not pick; `r` names its job and asks before acting).
            self.pinned = None
        table.clear()
        self.jobs = {job.job_id: job for job in rows}
        for job in rows:
            error = error_line(job)
            table.add_row(
                Text(_short(job.job_id)),
                _state_label(job),
                job.queue,
                Text(str(job.priority), justify="right"),
                Text(f"{job.attempts}/{job.max_retries + 1}", justify="right"),
                _clock(job.updated_at or job.created_at),
                Text(error, style="#f87171", overflow="ellipsis", no_wrap=True),
                key=job.job_id,
            )
        if pinned in self.jobs:
            table.move_cursor(row=table.get_row_index(pinned))
            self._fill_cursor = pinned
        else:
            self._fill_cursor = rows[0].job_id if rows else None

    def selected_job_id(self) -> str | None:
        table: DataTable[str | Text] = self.query_one("#jobs", DataTable)
        if table.row_count == 0:
            return None
        with contextlib.suppress(Exception):
            row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
            return row_key.value
        return None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value
        if event.data_table.id != "jobs" or key is None or key == self._fill_cursor:
            return  # a refill put the cursor there: nothing the operator did
        if key != self.selected_job_id():
            return  # delivered after another refill: that row is gone from under the cursor
        self.pinned = key
        self._fill_cursor = None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "jobs" and event.row_key.value:
            self.pinned = event.row_key.value
            self._opened = event.row_key.value
            self.query_one("#detail-pane").display = True
            self.show_job(event.row_key.value)

    @work(exclusive=True, group="detail")
    async def show_job(self, job_id: str) -> None:
        """The whole job in the detail pane (list pages carry no payload or attempt history)."""
        try:
            job = await self.client.get(job_id)
        except JqError as error:
            self._notify_error(f"could not load {_short(job_id)}: {error}")
            return
        why = None
        with contextlib.suppress(JqError):  # an older server has no explain: show the job
            why = (await self.client.explain(job_id)).summary
        with contextlib.suppress(NoMatches):  # the app closed while the job was on its way
            if self._opened == job_id:
                self.query_one("#detail", Static).update(_detail(job, why))

    # --- queues and workers ------------------------------------------------------------------

    def _refresh_side_views(self) -> None:
        if not self.connected:
            return
        try:
            current = self.query_one("#views", ContentSwitcher).current
        except NoMatches:  # a tick while the app closes: its widgets are already gone
            return
        if current == "queues":
            self.refresh_queues()
        elif current == "workers":
            self.refresh_workers()
        elif current == "schedules":
            self.refresh_schedules()
        elif current == "dead":
            self.refresh_dead_groups()

    @work(exclusive=True, group="side")
    async def refresh_queues(self) -> None:
        """The busiest queues of the last stats frame, each with its latency (age of the oldest
        runnable job), last minute's acks and the leases held, from GET /queues/{name}/overview."""
        stats = self.stats
        if stats is None:
            return
        names = sorted(
            stats.queues,
            key=lambda name: (-(stats.queues[name].total - stats.queues[name].acked), name),
        )[:QUEUES_SHOWN]
        details = []
        for name in names:
            try:
                details.append(await self.client.queue(name, limit=3))
            except JqError:
                continue
        with contextlib.suppress(NoMatches):
            table: DataTable[str | Text] = self.query_one("#queues", DataTable)
            table.clear()
            for detail in details:
                acked = detail.throughput.acked
                leases = ", ".join(
                    f"{_short(lease.job_id)}@{lease.worker or '?'}" for lease in detail.leases
                )
                table.add_row(
                    detail.name,
                    Text(f"{detail.runnable:,}", justify="right"),
                    Text(f"{detail.running:,}", justify="right"),
                    Text(f"{detail.scheduled:,}", justify="right"),
                    Text(f"{detail.retry:,}", justify="right"),
                    Text(
                        f"{detail.dead:,}", justify="right", style="#f87171" if detail.dead else ""
                    ),
                    _latency(detail.latency_ms),
                    Text(f"{acked[-2]:,}" if len(acked) > 1 else "–", justify="right"),
                    leases,
                    flow_text(stats.queues.get(detail.name)),
                    key=detail.name,
                )

    @work(exclusive=True, group="side")
    async def refresh_workers(self) -> None:
        try:
            page = await self.client.workers(limit=100)
        except JqError:
            return
        with contextlib.suppress(NoMatches):
            table: DataTable[str | Text] = self.query_one("#workers", DataTable)
            table.clear()
            for worker in page.workers:
                table.add_row(*_worker_row(worker), key=worker.worker_id)

    @work(exclusive=True, group="side")
    async def refresh_schedules(self) -> None:
        """The periodic jobs (issue 18): when each runs next and last, paused or not."""
        try:
            page = await self.client.list_schedules(limit=100)
        except JqError:
            return
        with contextlib.suppress(NoMatches):
            table: DataTable[str | Text] = self.query_one("#schedules", DataTable)
            table.clear()
            for schedule in page.schedules:
                table.add_row(*_schedule_row(schedule), key=schedule.name)

    @work(exclusive=True, group="side")
    async def refresh_dead_groups(self) -> None:
        """DEAD jobs grouped by cause (issue 19), the biggest group first; `r` here requeues the
        chosen group after a confirmation."""
        try:
            page = await self.client.dead_groups()
        except JqError:
            return
        self.dead_groups = {group.fingerprint: group for group in page.groups}
        with contextlib.suppress(NoMatches):
            table: DataTable[str | Text] = self.query_one("#dead", DataTable)
            table.clear()
            for group in page.groups[:DEAD_GROUPS_SHOWN]:
                table.add_row(*_dead_group_row(group), key=group.fingerprint)

    # --- actions -----------------------------------------------------------------------------

    def action_filter(self, index: int) -> None:
        self.filter_index = index

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_search(self) -> None:
        box = self.query_one("#search", Input)
        box.value = ""  # a new search; Enter on nothing clears the current one
        box.display = True
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "search":
            return
        self.search = parse_search(event.value)
        self._unpin()
        event.input.display = False
        self.query_one("#jobs", DataTable).focus()
        self._render_filters()
        self._jobs_stale = True
        self.refresh_jobs()

    def action_close(self) -> None:
        box = self.query_one("#search", Input)
        if box.display:
            box.display = False
            self.query_one("#jobs", DataTable).focus()
            return
        self._opened = None
        self.query_one("#detail-pane").display = False

    def action_pause(self) -> None:
        self.paused = not self.paused

    def action_view(self, name: str) -> None:
        self.query_one("#views", ContentSwitcher).current = name
        self.query_one(f"#{name}", DataTable).focus()
        self._refresh_side_views()

    async def action_enqueue(self) -> None:
        try:
            job_id = await self.client.submit(TEST_PAYLOAD)
        except JqError as error:
            self._notify_error(f"enqueue failed: {error}")
            return
        self.notify(f"enqueued {_short(job_id)}")
        self._jobs_stale = True

    def action_requeue(self) -> None:
        if self.query_one("#views", ContentSwitcher).current == "dead":
            self.ask_requeue_group()
            return
        job_id = self.pinned or self.selected_job_id()
        job = self.jobs.get(job_id or "")
        if job is None or job_id is None:
            self.notify("no job selected", severity="warning")
            return
        if job.state is not JobState.DEAD:
            self.notify(f"{_short(job_id)} is {job.state.value}: only DEAD jobs can be requeued")
            return
        question = f"Requeue DEAD job {job_id}?"
        if job.error_class or job.error_message:
            question += f"\n{error_line(job)}"

        def answered(yes: bool | None) -> None:
            if yes:
                self.requeue(job_id)

        self.push_screen(ConfirmScreen(question), answered)

    def action_toggle_queue(self) -> None:
        """`P` in the queues view: pause the chosen queue, or resume it, after a confirmation
        (leases skip a paused queue; submits still land)."""
        if self.query_one("#views", ContentSwitcher).current != "queues":
            self.notify("P pauses or resumes a queue: choose one in the queues view (u)")
            return
        table: DataTable[str | Text] = self.query_one("#queues", DataTable)
        if table.row_count == 0:
            self.notify("no queue selected", severity="warning")
            return
        name = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        counts = self.stats.queues.get(name) if self.stats is not None else None
        resume = counts is not None and counts.paused
        verb = "Resume" if resume else "Pause"

        def answered(yes: bool | None) -> None:
            if yes:
                self.set_queue_paused(name, not resume)

        self.push_screen(ConfirmScreen(f"{verb} queue {name}?"), answered)

    @work(group="queue")
    async def set_queue_paused(self, name: str, paused: bool) -> None:
        try:
            if paused:
                await self.client.pause_queue(name)
            else:
                await self.client.resume_queue(name)
        except JqError as error:
            self._notify_error(f"{name}: {error}")
            return
        self.notify(f"{name} {'paused' if paused else 'resumed'}")

    def ask_requeue_group(self) -> None:
        table: DataTable[str | Text] = self.query_one("#dead", DataTable)
        if table.row_count == 0:
            self.notify("no dead-letter group selected", severity="warning")
            return
        fingerprint = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        group = self.dead_groups.get(fingerprint)
        if group is None:
            return
        question = f"Requeue all {group.count:,} DEAD jobs of this group?\n{_cause(group)}"

        def answered(yes: bool | None) -> None:
            if yes:
                self.requeue_group(fingerprint)

        self.push_screen(ConfirmScreen(question), answered)

    @work(group="requeue")
    async def requeue_group(self, fingerprint: str) -> None:
        try:
            settled = await self.client.requeue_dead_group(fingerprint)
        except JqError as error:
            self._notify_error(f"requeue failed: {error}")
            return
        self.notify(f"requeued {settled.settled:,} jobs; {settled.remaining:,} left in the group")
        self.refresh_dead_groups()

    @work(group="requeue")
    async def requeue(self, job_id: str) -> None:
        try:
            settled = await self.client.requeue(job_id)
        except JqError as error:
            self._notify_error(f"requeue failed: {error}")
            return
        self.notify(f"requeued {_short(job_id)}: {settled.state.value}")
        self._jobs_stale = True


def flow_text(counts: QueueStats | None) -> Text:
    """A queue's flow settings in a few characters: paused, its concurrency and rate limits."""
    if counts is None:
        return Text("")
    parts = []
    if counts.paused:
        parts.append(("paused", "bold #fbbf24"))
    if counts.concurrency:
        parts.append((f"≤{counts.concurrency} run", ""))
    if counts.rate_limit:
        parts.append((f"{counts.rate_limit}/{counts.rate_period_ms / 1000:g}s", ""))
    text = Text()
    for index, (part, style) in enumerate(parts):
        text.append((" " if index else "") + part, style=style)
    return text


def _refusal(error: JqError) -> str:
    status = f"HTTP {error.status}"
    return status if error.message == status else f"{status}: {error.message}"


def _latency(ms: int | None) -> Text:
    if ms is None:
        return Text("–", justify="right")
    seconds = ms / 1000
    text = (
        f"{ms} ms"
        if ms < 1000
        else f"{seconds:.0f} s"
        if seconds < 120
        else f"{seconds / 60:.0f} min"
    )
    return Text(text, justify="right", style="#fb923c" if seconds >= 60 else "")


def _worker_row(worker: WorkerInfo) -> tuple[str | Text, ...]:
    return (
        worker.worker_id,
        Text(f"{worker.leases:,}", justify="right"),
        ", ".join(worker.queues),
        _clock(worker.last_seen),
    )


def _cause(group: DeadGroup) -> str:
    return f"{group.error_type}: {group.pattern}" if group.error_type else group.pattern


def _dead_group_row(group: DeadGroup) -> tuple[str | Text, ...]:
    return (
        Text(f"{group.count:,}", justify="right", style="#f87171"),
        _cause(group),
        ", ".join(group.queues),
        _day_clock(group.last_seen),
        _short(group.sample_job_id) if group.sample_job_id else "",
    )


def _day_clock(moment: datetime | None) -> str:
    """A schedule's times may be days away: the date too."""
    return moment.astimezone().strftime("%b %d %H:%M") if moment else "–"


def _schedule_row(schedule: Schedule) -> tuple[str | Text, ...]:
    when = schedule.cron if schedule.timezone == "UTC" else f"{schedule.cron} ({schedule.timezone})"
    return (
        schedule.name,
        when,
        schedule.queue,
        _day_clock(schedule.next_fire_at),
        _day_clock(schedule.last_fired_at),
        Text(f"{schedule.runs:,}", justify="right"),
        Text("paused", style="bold #fbbf24") if schedule.paused else "",
    )


def _detail(job: Job, why: str | None = None) -> Text:
    """The whole job: nothing cut, the current error and every kept attempt with its traceback
    (the pane scrolls). What clients wrote goes through terminal_safe, piece by piece (the
    pieces' styles are spans of the whole)."""
    text = Text.assemble(
        (job.job_id, "bold"),
        "  ",
        _state_label(job),
        f"  queue {job.queue}  priority {job.priority}  attempts {job.attempts}",
        f"/{job.max_retries + 1}",
    )
    if job.worker:
        text.append(terminal_safe(f"  worker {job.worker}"), style="dim")
    if job.payload is not None:
        text.append(terminal_safe(f"\npayload: {job.payload}"), style="dim")
    if job.result is not None:
        text.append(terminal_safe(f"\nresult: {job.result}"), style="#4ade80")
    if job.result_error:
        text.append(terminal_safe(f"\nerror: {error_line(job)}"), style="bold #f87171")
        if "\n" in job.result_error.strip():
            text.append(terminal_safe("\n" + job.result_error.rstrip()), style="#f87171")
    elif job.attempt_history and any(a.outcome != "acked" for a in job.attempt_history):
        text.append("\nno current error (earlier attempts below)", style="dim")
    for attempt in job.attempt_history or []:
        line = f"\n  attempt {attempt.attempt}  {attempt.outcome}"
        if attempt.worker:
            line += f"  {attempt.worker}"
        if attempt.started_at:
            line += f"  {_clock(attempt.started_at)}"
        if attempt.ended_at:
            line += f"→{_clock(attempt.ended_at)}"
        style = "#f87171" if attempt.outcome in ("failed", "expired") else "dim"
        text.append(terminal_safe(line), style=style)
        if attempt.error_class or attempt.error_message:
            error = f"  {attempt.error_class or ''}: {attempt.error_message or ''}"
            text.append(terminal_safe(error), style=style)
    if job.progress is not None:
        text.append(
            terminal_safe(f"\nprogress: {job.progress.progress:.0%} {job.progress.note}".rstrip())
        )
    if why:
        text.append(terminal_safe(f"\nwhy: {why}"), style="italic")
    return text
