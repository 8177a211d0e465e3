// jq dashboard: keeps the API key (localStorage, sent only in Authorization headers), opens the
// htmx SSE connection through a short-lived ticket so the key never appears in a URL, and
// renders what the HTTP API says: totals, sparklines, the recent-jobs table and job detail.
// htmx carries the live stream (hx-ext="sse", hx-trigger="sse:stats" / "sse:job") and the two
// writes (enqueue form, requeue buttons); everything that reads JSON is plain fetch + DOM.
// Job data is only ever written with textContent: a payload is user data, never markup.
(function () {
  "use strict";

  const KEY_STORAGE = "jq.apiKey";
  const MAX_ROWS = 30;
  const SPARK_POINTS = 40;
  const SPARK_W = 300;
  const SPARK_H = 48;
  const STAT_FIELDS = ["runnable", "running", "scheduled", "retry", "dead", "acked"];
  const INT_FIELDS = new Set(["priority", "delay_ms", "max_retries"]);
  const RETRY_MAX_MS = 10000;

  const state = {
    key: null,
    filter: "",
    rows: new Map(), // job_id -> {job, tr}, newest first in the DOM
    selected: null,
    submits: [],
    acks: [],
    retryMs: 1000,
    reconnectTimer: null,
    generation: 0, // bumps on every (re)connect so late answers of an old attempt are ignored
    pendingEvents: new Map(),
    flushTimer: null,
    detailTimer: null,
  };

  const $ = (id) => document.getElementById(id);
  const numberFormat = new Intl.NumberFormat();

  // ------------------------------------------------------------------ htmx: JSON bodies, auth

  htmx.defineExtension("jq-json", {
    onEvent: function (name, evt) {
      if (name === "htmx:configRequest") {
        evt.detail.headers["Content-Type"] = "application/json";
      }
    },
    encodeParameters: function (xhr, parameters) {
      xhr.overrideMimeType("text/json");
      const body = {};
      parameters.forEach(function (value, key) {
        if (typeof value !== "string") return;
        if (INT_FIELDS.has(key)) {
          const text = value.trim();
          if (text === "") return;
          const n = Number(text);
          // Anything that is not a whole number goes as typed: the server names the field.
          body[key] = Number.isInteger(n) ? n : text;
        } else if (key === "queue") {
          if (value.trim() !== "") body.queue = value.trim();
        } else {
          body[key] = value;
        }
      });
      return JSON.stringify(body);
    },
  });

  document.addEventListener("htmx:configRequest", function (e) {
    if (state.key) e.detail.headers["Authorization"] = "Bearer " + state.key;
  });

  document.addEventListener("htmx:beforeRequest", function (e) {
    if (!state.key) {
      e.preventDefault();
      toast("Paste an API key first", "error");
      return;
    }
    if (e.detail.elt.id === "enqueue-form") {
      const out = $("enqueue-result");
      out.dataset.kind = "pending";
      out.textContent = "Sending…";
      out.title = "";
    }
  });

  document.addEventListener("htmx:afterRequest", function (e) {
    const elt = e.detail.elt;
    const xhr = e.detail.xhr;
    let data = null;
    try {
      data = JSON.parse(xhr.responseText);
    } catch (_) {
      data = null;
    }
    const failure = xhr.status === 0 ? "server unreachable" : errorText(xhr.status, data);
    if (elt.id === "enqueue-form") {
      const out = $("enqueue-result");
      if (e.detail.successful && data && data.job_id) {
        out.dataset.kind = "ok";
        out.textContent = (data.duplicate ? "Duplicate of " : "Enqueued ") + shortId(data.job_id);
        out.title = data.job_id;
      } else {
        out.dataset.kind = "error";
        out.textContent = failure;
        out.title = failure;
      }
    } else if (elt.dataset.requeue) {
      if (e.detail.successful) {
        toast("Requeued " + shortId(elt.dataset.requeue));
        if (state.selected === elt.dataset.requeue) scheduleDetail();
      } else {
        toast("Requeue failed: " + failure, "error");
      }
    }
  });

  // ------------------------------------------------------------------ HTTP API (JSON reads)

  async function api(method, path, body) {
    const headers = { Accept: "application/json", Authorization: "Bearer " + state.key };
    const init = { method: method, headers: headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    let data = null;
    try {
      data = await resp.json();
    } catch (_) {
      data = null;
    }
    if (!resp.ok) {
      const err = new Error(errorText(resp.status, data));
      err.status = resp.status;
      throw err;
    }
    return data;
  }

  function errorText(status, data) {
    const message = data && data.error ? data.error : "HTTP " + status;
    return data && data.field ? message + " (" + data.field + ")" : message;
  }

  // ------------------------------------------------------------------ key handling

  function loadKey() {
    try {
      return localStorage.getItem(KEY_STORAGE);
    } catch (_) {
      return null;
    }
  }

  function saveKey(key) {
    try {
      if (key) localStorage.setItem(KEY_STORAGE, key);
      else localStorage.removeItem(KEY_STORAGE);
    } catch (_) {
      /* private mode: the key lives for this page only */
    }
  }

  function keyHint(key) {
    const underscore = key.indexOf("_");
    const prefix = underscore > 0 && underscore < 10 ? key.slice(0, underscore + 1) : "";
    return prefix + "…" + key.slice(-4);
  }

  function showKeyState() {
    const has = Boolean(state.key);
    $("key-form").hidden = has;
    $("key-set").hidden = !has;
    $("key-hint").textContent = has ? keyHint(state.key) : "";
  }

  function setKey(key) {
    state.key = key || null;
    saveKey(state.key);
    $("key-error").hidden = true;
    showKeyState();
    connect();
  }

  function keyRejected(message) {
    state.key = null;
    saveKey(null);
    showKeyState();
    teardownLive();
    setConn("off", "no key");
    const banner = $("key-error");
    banner.textContent = "The key was refused: " + message + ". Paste a key with jobs:read.";
    banner.hidden = false;
  }

  // ------------------------------------------------------------------ live connection

  function setConn(kind, text) {
    $("conn").dataset.state = kind;
    $("conn-text").textContent = text;
  }

  function teardownLive() {
    const live = $("live");
    if (!live) return;
    // Without sse-connect the extension's own retry timer finds nothing to reopen; detached,
    // its error handler closes the old EventSource.
    live.removeAttribute("sse-connect");
    live.remove();
  }

  function scheduleReconnect() {
    clearTimeout(state.reconnectTimer);
    setConn("retrying", "disconnected, retrying");
    const delay = state.retryMs;
    state.retryMs = Math.min(state.retryMs * 2, RETRY_MAX_MS);
    state.reconnectTimer = setTimeout(connect, delay);
  }

  async function connect() {
    clearTimeout(state.reconnectTimer);
    teardownLive();
    const generation = ++state.generation;
    if (!state.key) {
      setConn("off", "no key");
      return;
    }
    setConn("connecting", "connecting…");
    let ticket;
    try {
      ticket = await api("POST", "/events/ticket");
    } catch (err) {
      if (generation !== state.generation) return;
      if (err.status === 401 || err.status === 403) keyRejected(err.message);
      else scheduleReconnect();
      return;
    }
    if (generation !== state.generation) return;
    const live = document.createElement("div");
    live.id = "live";
    live.setAttribute("hx-ext", "sse");
    live.setAttribute("sse-connect", "/events?ticket=" + encodeURIComponent(ticket.ticket));
    const stats = document.createElement("span");
    stats.setAttribute("hx-trigger", "sse:stats");
    const job = document.createElement("span");
    job.setAttribute("hx-trigger", "sse:job");
    live.append(stats, job);
    $("live-host").append(live);
    htmx.process(live);
  }

  document.addEventListener("htmx:sseOpen", function () {
    state.retryMs = 1000;
    setConn("live", "live");
    // Events missed while disconnected are not replayed: resync the table.
    loadJobs();
    if (state.selected) scheduleDetail();
  });

  document.addEventListener("htmx:sseError", function (e) {
    const source = e.detail && e.detail.source;
    if (source && source.readyState === EventSource.CLOSED) {
      // Refused (expired ticket, server restarted and forgot it) or gone: get a new ticket.
      source.close();
      teardownLive();
      scheduleReconnect();
    } else {
      setConn("retrying", "disconnected, retrying");
    }
  });

  // An SSE frame's JSON, or null: a frame we cannot read is skipped, not fatal.
  function frameData(e) {
    try {
      return JSON.parse(e.detail.data);
    } catch (_) {
      return null;
    }
  }

  document.addEventListener("sse:stats", function (e) {
    const stats = frameData(e);
    if (stats) renderStats(stats);
  });

  document.addEventListener("sse:job", function (e) {
    const event = frameData(e);
    if (!event || !event.job_id) return;
    // Under load events arrive by the thousand: keep the latest per job, paint a few times a second.
    state.pendingEvents.delete(event.job_id);
    state.pendingEvents.set(event.job_id, event);
    if (!state.flushTimer) state.flushTimer = setTimeout(flushEvents, 250);
  });

  // ------------------------------------------------------------------ stats + sparklines

  function renderStats(stats) {
    for (const field of STAT_FIELDS) {
      const el = $("stat-" + field);
      const text = numberFormat.format(stats[field] || 0);
      if (el.textContent !== text) {
        el.textContent = text;
        el.classList.remove("bump");
        void el.offsetWidth; // restart the animation
        el.classList.add("bump");
      }
    }
    pushSample(state.submits, stats.submits_per_sec);
    pushSample(state.acks, stats.acks_per_sec);
    $("rate-submits").textContent = formatRate(stats.submits_per_sec);
    $("rate-acks").textContent = formatRate(stats.acks_per_sec);
    drawSpark($("spark-submits"), state.submits);
    drawSpark($("spark-acks"), state.acks);

    const node = [];
    if (stats.node_id) node.push("node " + stats.node_id);
    if (stats.role) node.push(stats.role);
    if (typeof stats.uptime_s === "number") node.push("up " + formatDuration(stats.uptime_s));
    $("foot-node").textContent = node.join(" · ");
    const t = stats.totals || {};
    $("foot-totals").textContent =
      "submitted " + numberFormat.format(t.submitted || 0) +
      " · acked " + numberFormat.format(t.acked || 0) +
      " · failed " + numberFormat.format(t.failed || 0) +
      " · dead " + numberFormat.format(t.dead || 0);
  }

  function pushSample(series, value) {
    series.push(typeof value === "number" && isFinite(value) ? Math.max(0, value) : 0);
    if (series.length > SPARK_POINTS) series.shift();
  }

  function formatRate(value) {
    if (typeof value !== "number" || !isFinite(value)) return "–";
    return value >= 100 ? numberFormat.format(Math.round(value)) : value.toFixed(1);
  }

  function formatDuration(seconds) {
    const s = Math.floor(seconds);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  }

  function svgChild(svg, cls, tag) {
    let el = svg.querySelector("." + cls);
    if (!el) {
      el = document.createElementNS("http://www.w3.org/2000/svg", tag);
      el.setAttribute("class", cls);
      svg.append(el);
    }
    return el;
  }

  function drawSpark(svg, values) {
    const base = svgChild(svg, "base", "line");
    const area = svgChild(svg, "area", "path");
    const line = svgChild(svg, "line", "path");
    base.setAttribute("x1", "0");
    base.setAttribute("x2", String(SPARK_W));
    base.setAttribute("y1", String(SPARK_H));
    base.setAttribute("y2", String(SPARK_H));
    if (values.length === 0) return;
    const top = Math.max(1, Math.max.apply(null, values)) * 1.15;
    const step = SPARK_W / (SPARK_POINTS - 1);
    const offset = SPARK_POINTS - values.length; // the newest sample sits at the right edge
    const points = values.map(function (v, i) {
      const x = (offset + i) * step;
      const y = SPARK_H - (v / top) * SPARK_H;
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    if (points.length === 1) points.unshift((SPARK_W - step).toFixed(1) + "," + points[0].split(",")[1]);
    const firstX = points[0].split(",")[0];
    line.setAttribute("d", "M" + points.join(" L"));
    area.setAttribute("d", "M" + firstX + "," + SPARK_H + " L" + points.join(" L") + " L" + SPARK_W + "," + SPARK_H + " Z");
  }

  // ------------------------------------------------------------------ jobs table

  async function loadJobs() {
    if (!state.key) return;
    const generation = state.generation;
    const filter = state.filter;
    let data;
    try {
      const query = "?limit=" + MAX_ROWS + (filter ? "&state=" + encodeURIComponent(filter) : "");
      data = await api("GET", "/jobs" + query);
    } catch (err) {
      if (err.status === 401) keyRejected(err.message);
      else if (err.status) toast("Could not list jobs: " + err.message, "error");
      return;
    }
    if (generation !== state.generation || filter !== state.filter) return;
    const body = $("jobs-body");
    body.replaceChildren();
    state.rows.clear();
    for (const job of data.jobs || []) {
      const entry = { job: job, tr: buildRow(job) };
      state.rows.set(job.job_id, entry);
      body.append(entry.tr);
    }
    updateEmpty();
  }

  function flushEvents() {
    state.flushTimer = null;
    const events = Array.from(state.pendingEvents.values());
    state.pendingEvents.clear();
    const body = $("jobs-body");
    for (const event of events) {
      const entry = state.rows.get(event.job_id);
      const job = Object.assign({}, entry ? entry.job : {}, {
        job_id: event.job_id,
        queue: event.queue,
        state: event.state,
        attempts: event.attempts,
        priority: event.priority,
        updated_at: event.at,
      });
      const matches = !state.filter || state.filter === job.state;
      if (entry) {
        if (!matches) {
          entry.tr.remove();
          state.rows.delete(event.job_id);
          continue;
        }
        entry.job = job;
        fillRow(entry.tr, job);
        flash(entry.tr);
      } else if (matches) {
        const tr = buildRow(job);
        state.rows.set(job.job_id, { job: job, tr: tr });
        body.prepend(tr);
        flash(tr);
      }
      if (state.selected === event.job_id) scheduleDetail();
    }
    while (state.rows.size > MAX_ROWS) {
      const last = body.lastElementChild;
      if (!last) break;
      state.rows.delete(last.dataset.jobId);
      last.remove();
    }
    updateEmpty();
  }

  function flash(tr) {
    tr.classList.remove("flash");
    void tr.offsetWidth;
    tr.classList.add("flash");
  }

  function updateEmpty() {
    const empty = $("jobs-empty");
    empty.hidden = state.rows.size > 0;
    if (!state.key) empty.textContent = "Connect with a key to see jobs.";
    else if (state.filter) empty.textContent = "No " + state.filter.toLowerCase() + " jobs.";
    else empty.textContent = "No jobs yet. Enqueue one to see it here.";
  }

  function buildRow(job) {
    const tr = document.createElement("tr");
    tr.tabIndex = 0;
    for (const cls of ["", "", "col-queue", "col-num col-priority", "col-num", "col-time", "col-action"]) {
      const td = document.createElement("td");
      if (cls) td.className = cls;
      tr.append(td);
    }
    fillRow(tr, job);
    return tr;
  }

  function fillRow(tr, job) {
    tr.dataset.jobId = job.job_id;
    tr.dataset.state = job.state;
    tr.setAttribute("aria-selected", String(state.selected === job.job_id));
    const cells = tr.children;
    const id = document.createElement("span");
    id.className = "job-id";
    id.textContent = shortId(job.job_id);
    id.title = job.job_id;
    cells[0].replaceChildren(id);
    cells[1].replaceChildren(pill(displayState(job)));
    cells[2].textContent = job.queue || "";
    cells[3].textContent = job.priority === undefined || job.priority === null ? "" : String(job.priority);
    cells[4].textContent = job.attempts === undefined || job.attempts === null ? "" : String(job.attempts);
    cells[5].textContent = formatTime(job.updated_at || job.created_at, false);
    cells[5].title = formatTime(job.updated_at || job.created_at, true);
    if (job.state === "DEAD") {
      if (!cells[6].querySelector("button")) cells[6].replaceChildren(requeueButton(job.job_id, true));
    } else {
      cells[6].replaceChildren();
    }
  }

  function displayState(job) {
    if (job.state === "READY" && job.run_at) {
      const at = Date.parse(job.run_at);
      if (!isNaN(at) && at > Date.now()) return "SCHEDULED";
    }
    return job.state;
  }

  function pill(text) {
    const span = document.createElement("span");
    span.className = "pill";
    span.dataset.state = text;
    span.textContent = text;
    return span;
  }

  function requeueButton(jobId, small) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "btn btn-danger" + (small ? " btn-small" : "");
    button.textContent = "Requeue";
    button.dataset.requeue = jobId;
    button.setAttribute("hx-post", "/jobs/" + encodeURIComponent(jobId) + "/requeue");
    button.setAttribute("hx-swap", "none");
    htmx.process(button);
    return button;
  }

  function shortId(id) {
    return String(id).slice(0, 8);
  }

  function formatTime(value, full) {
    if (value === undefined || value === null || value === "") return "";
    const date = typeof value === "number" ? new Date(value) : new Date(String(value));
    if (isNaN(date.getTime())) return String(value);
    if (full) return date.toISOString().replace("T", " ").replace("Z", " UTC");
    const pad = (n, w) => String(n).padStart(w || 2, "0");
    return pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds());
  }

  // ------------------------------------------------------------------ job detail

  function selectJob(jobId) {
    state.selected = jobId;
    for (const [id, entry] of state.rows) {
      entry.tr.setAttribute("aria-selected", String(id === jobId));
    }
    loadDetail();
  }

  function scheduleDetail() {
    clearTimeout(state.detailTimer);
    state.detailTimer = setTimeout(loadDetail, 150);
  }

  async function loadDetail() {
    const jobId = state.selected;
    if (!jobId || !state.key) return;
    let job;
    try {
      job = await api("GET", "/jobs/" + encodeURIComponent(jobId));
    } catch (err) {
      if (jobId === state.selected) toast("Could not load job: " + err.message, "error");
      return;
    }
    if (jobId !== state.selected) return;
    $("detail-empty").hidden = true;
    $("detail-body").hidden = false;
    $("detail-state").replaceChildren(pill(displayState(job)));
    $("d-job_id").textContent = job.job_id;
    $("d-queue").textContent = job.queue || "";
    $("d-priority").textContent = String(job.priority);
    $("d-attempts").textContent =
      typeof job.max_retries === "number"
        ? job.attempts + " of " + (job.max_retries + 1)
        : String(job.attempts);
    for (const field of ["created_at", "run_at", "lease_until", "updated_at"]) {
      $("d-" + field).textContent = formatTime(job[field], true) || "—";
    }
    $("d-payload").textContent = pretty(job.payload);
    $("d-result").textContent = pretty(job.result);
    $("d-result_error").textContent = job.result_error || "";
    const actions = $("d-actions");
    actions.replaceChildren();
    if (job.state === "DEAD") actions.append(requeueButton(job.job_id, false));
    // Issue 19: the job's progress, and why it is where it is (one sentence from the server).
    const progress = job.progress;
    $("d-progress").textContent = progress
      ? Math.round(progress.progress * 100) + "% " + (progress.note || "")
      : "—";
    $("d-why").textContent = "";
    try {
      const why = await api("GET", "/jobs/" + encodeURIComponent(jobId) + "/explain");
      if (jobId === state.selected) $("d-why").textContent = why.summary;
    } catch (_) {
      /* an older server has no explain: the detail stands without it */
    }
  }

  function pretty(text) {
    if (text === null || text === undefined) return "";
    try {
      const parsed = JSON.parse(text);
      if (parsed !== null && typeof parsed === "object") return JSON.stringify(parsed, null, 2);
    } catch (_) {
      /* not JSON: show it as it is */
    }
    return String(text);
  }

  // ------------------------------------------------------------------ toast

  let toastTimer = null;
  function toast(text, kind) {
    const el = $("toast");
    el.textContent = text;
    el.dataset.kind = kind || "info";
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () {
      el.hidden = true;
    }, 3500);
  }

  // ------------------------------------------------------------------ wiring

  document.addEventListener("DOMContentLoaded", function () {
    $("key-form").addEventListener("submit", function (e) {
      e.preventDefault();
      const input = $("key-input");
      const key = input.value.trim();
      input.value = "";
      if (key) setKey(key);
    });
    $("key-forget").addEventListener("click", function () {
      state.selected = null;
      setKey(null);
      state.rows.clear();
      $("jobs-body").replaceChildren();
      updateEmpty();
    });
    $("filters").addEventListener("click", function (e) {
      const chip = e.target.closest(".chip");
      if (!chip) return;
      state.filter = chip.dataset.filter || "";
      for (const other of $("filters").querySelectorAll(".chip")) {
        other.setAttribute("aria-pressed", String(other === chip));
      }
      loadJobs();
    });
    const body = $("jobs-body");
    body.addEventListener("click", function (e) {
      if (e.target.closest("button")) return;
      const tr = e.target.closest("tr");
      if (!tr || !tr.dataset.jobId) return;
      selectJob(tr.dataset.jobId);
      // Stacked layout (tablet, phone): the detail card is below the table, bring it into view.
      if (window.matchMedia("(max-width: 1100px)").matches) {
        $("detail").scrollIntoView({ behavior: "smooth", block: "start" });
      }
    });
    body.addEventListener("keydown", function (e) {
      if (e.key !== "Enter" || e.target.tagName !== "TR") return;
      selectJob(e.target.dataset.jobId);
    });
    drawSpark($("spark-submits"), []);
    drawSpark($("spark-acks"), []);
    state.key = loadKey();
    showKeyState();
    updateEmpty();
    connect();
  });
})();
