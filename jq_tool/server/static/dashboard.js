// jq dashboard: keeps the API key (localStorage, sent only in Authorization headers), opens the
// htmx SSE connection through a short-lived ticket so the key never appears in a URL, and
// renders what the HTTP API says: totals, sparklines, the recent-jobs table and job detail.
// htmx carries the live stream (hx-ext="sse": the connection, its retries, hx-trigger="sse:stats")
// while job events, thousands a second under load, are read by one listener on htmx's own
// EventSource (an htmx trigger per event cost ~100 µs of the page's main thread); and the two
// writes (enqueue form, requeue buttons); everything that reads JSON is plain fetch + DOM.
// Job data is only ever written with textContent: a payload is user data, never markup.
//
// The render loop cannot fall behind (issue 17): an event only updates the in-memory model
// (O(1): a Map kept in recency order and trimmed from its oldest end); painting happens in one
// requestAnimationFrame per frame at most, counters every frame that has news, the table at most
// every TABLE_INTERVAL_MS from the newest model, never from a backlog. Nothing reads layout
// (no `offsetWidth` to restart an animation): a changed row or counter swaps between two classes
// whose animations are the same keyframes under two names, which restarts it for free.
(function () {
  "use strict";

  const KEY_STORAGE = "jq.apiKey";
  const MAX_ROWS = 50;
  const MODEL_LIMIT = 400; // jobs kept from the live stream for the current view
  const TABLE_INTERVAL_MS = 500; // the table is rebuilt at most twice a second
  const QUIET_MS = 3000; // a counter or table quiet this long flashes when it changes
  const FLASH_MAX = 3; // a rebuild that changes more rows than this flashes none
  const CONSOLE_REFRESH_MS = 5000; // queues, workers and history are read this often
  const OVERVIEW_MAX = 10; // queues shown with their latency and leases
  const SEARCH_ROUNDS = 5; // pages of a bounded search read for one screen of matches
  const SPARK_POINTS = 120;
  const SPARK_W = 300;
  const SPARK_H = 48;
  const STAT_FIELDS = ["runnable", "running", "scheduled", "retry", "dead", "acked", "cancelled"];
  const INT_FIELDS = new Set(["priority", "delay_ms", "max_retries"]);
  const RETRY_MAX_MS = 10000;

  const state = {
    key: null,
    canWrite: false, // the key has jobs:submit (else no write control is shown)
    canPause: false, // and jobs:lease too: it may pause a queue
    filter: "", // a job state, "SCHEDULED", or "" for all
    search: { text: "", queue: "", state: "", idPrefix: "" },
    model: new Map(), // job_id -> job; iteration order = least recently changed first
    rows: new Map(), // job_id -> {job, tr} as painted
    selected: null,
    paused: false, // "pause live": the table is frozen, counters keep moving
    pages: [], // cursors of the pages before the one shown; empty = the live first page
    cursor: null, // the cursor of the page shown (null = newest)
    nextCursor: null,
    everLive: false,
    submits: [],
    acks: [],
    retryMs: 1000,
    reconnectTimer: null,
    generation: 0, // bumps on every (re)connect so late answers of an old attempt are ignored
    frame: 0, // the pending requestAnimationFrame, 0 if none
    tableDirty: false,
    tableTimer: null,
    lastTable: 0,
    latestStats: null,
    statsDirty: false,
    detailTimer: null,
    historyWindow: "1h",
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
        if (xhr.status === 403) setCanWrite(false);
        out.dataset.kind = "error";
        out.textContent = failure;
        out.title = failure;
      }
    } else if (elt.dataset.cancel) {
      if (e.detail.successful) toast("Cancelled " + shortId(elt.dataset.cancel));
      else toast("Cancel failed: " + failure, "error");
      if (state.selected === elt.dataset.cancel) scheduleDetail();
    } else if (elt.dataset.requeue) {
      if (e.detail.successful) {
        toast("Requeued " + shortId(elt.dataset.requeue));
        if (state.selected === elt.dataset.requeue) scheduleDetail();
      } else {
        if (xhr.status === 403) setCanWrite(false);
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
    if (kind === "live") state.everLive = true;
    // Values shown while the stream is down are stale: the page dims them until it is back.
    document.body.dataset.stale = String(state.everLive && kind !== "live");
  }

  // Write controls only for a key that may write (jobs:submit). The key's own record names its
  // scopes (GET /keys lists the owner's keys; the key's first 12 characters are its key_prefix);
  // a key that may not read its record is judged by its type, and a 403 on a write settles it.
  async function learnScopes(generation) {
    const key = state.key;
    let scopes = null;
    try {
      const listed = await api("GET", "/keys");
      const mine = (Array.isArray(listed) ? listed : []).filter(function (k) {
        return k.key_prefix && key.startsWith(k.key_prefix) && !k.revoked_at;
      });
      if (mine.length) scopes = mine.flatMap(function (k) { return k.scopes || []; });
    } catch (_) {
      scopes = null;
    }
    if (generation !== state.generation || key !== state.key) return;
    if (scopes === null) {
      scopes = key.startsWith("admin_")
        ? ["jobs:submit", "jobs:lease"]
        : key.startsWith("worker_")
          ? ["jobs:lease"]
          : key.startsWith("client_")
            ? ["jobs:submit"]
            : [];
    }
    // Pausing a queue changes it for every client and worker: it takes a key that may both
    // submit and lease (an admin key).
    state.canPause = scopes.indexOf("jobs:submit") >= 0 && scopes.indexOf("jobs:lease") >= 0;
    setCanWrite(scopes.indexOf("jobs:submit") >= 0);
  }

  function setCanWrite(canWrite) {
    if (state.canWrite === canWrite) return;
    state.canWrite = canWrite;
    document.body.dataset.write = String(canWrite);
    for (const entry of state.rows.values()) fillRow(entry.tr, entry.job);
    if (state.selected) scheduleDetail();
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
    learnScopes(generation);
    const live = document.createElement("div");
    live.id = "live";
    live.setAttribute("hx-ext", "sse");
    // batch=1: job events come as arrays (`event: jobs`), a few hundred dispatches for a burst
    // of 50,000 instead of 50,000.
    live.setAttribute("sse-connect", "/events?batch=1&ticket=" + encodeURIComponent(ticket.ticket));
    const stats = document.createElement("span");
    stats.setAttribute("hx-trigger", "sse:stats");
    live.append(stats);
    $("live-host").append(live);
    htmx.process(live);
  }

  const followedSources = new WeakSet();

  document.addEventListener("htmx:sseOpen", function (e) {
    const source = e.detail && e.detail.source;
    if (source && !followedSources.has(source)) {
      // The same EventSource reopens after a drop: one listener each, however often it opens.
      followedSources.add(source);
      source.addEventListener("job", onJobFrame);
      source.addEventListener("jobs", onJobsFrame);
    }
    state.retryMs = 1000;
    setConn("live", "live");
    // Events missed while disconnected are not replayed: resync the table.
    loadJobs();
    loadConsole();
    if (state.selected) scheduleDetail();
  });

  document.addEventListener("htmx:sseError", function (e) {
    const source = e.detail && e.detail.source;
    if (source && source.readyState === EventSource.CLOSED) {
      // Refused (an expired ticket; a ticket signed by another key store) or gone: get a new one.
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
    if (!stats) return;
    state.latestStats = stats;
    state.statsDirty = true;
    requestPaint();
  });

  function onJobFrame(message) {
    if (message.target.readyState === EventSource.CLOSED) return;
    let event;
    try {
      event = JSON.parse(message.data);
    } catch (_) {
      return; // a frame we cannot read is skipped, not fatal
    }
    if (event && event.job_id) applyEvent(event);
  }

  function onJobsFrame(message) {
    if (message.target.readyState === EventSource.CLOSED) return;
    let events;
    try {
      events = JSON.parse(message.data);
    } catch (_) {
      return;
    }
    if (!Array.isArray(events)) return;
    for (const event of events) {
      if (event && event.job_id) applyEvent(event);
    }
  }

  // ------------------------------------------------------------------ the render loop

  function requestPaint() {
    if (!state.frame) state.frame = requestAnimationFrame(paint);
  }

  // One frame's work: counters if a stats frame came, the table if it is due. A background tab
  // gets no frames; the model stays bounded meanwhile and the first frame paints the newest state.
  function paint() {
    state.frame = 0;
    if (state.statsDirty) {
      state.statsDirty = false;
      renderStats(state.latestStats);
    }
    if (state.tableDirty && !state.paused && isLivePage()) {
      const wait = state.lastTable + TABLE_INTERVAL_MS - performance.now();
      if (wait <= 0) {
        renderTable();
      } else if (!state.tableTimer) {
        state.tableTimer = setTimeout(function () {
          state.tableTimer = null;
          requestPaint();
        }, wait);
      }
    }
  }

  function isLivePage() {
    return state.cursor === null;
  }

  // An event as a model change: O(1) whatever the rate, no DOM. Events carry run_at (a delayed
  // job is SCHEDULED at once), the lease holder and the current error split: no request per row.
  function applyEvent(event) {
    const known = state.model.get(event.job_id);
    const job = Object.assign({}, known || {}, {
      job_id: event.job_id,
      queue: event.queue,
      state: event.state,
      attempts: event.attempts,
      priority: event.priority,
      updated_at: event.at,
    });
    for (const field of ["run_at", "worker", "error_class", "error_message"]) {
      if (field in event) job[field] = event[field];
    }
    if (known) state.model.delete(event.job_id);
    if (matchesView(job)) {
      state.model.set(event.job_id, job);
      if (state.model.size > MODEL_LIMIT) state.model.delete(state.model.keys().next().value);
    }
    if (known || state.model.has(event.job_id)) {
      state.tableDirty = true;
      requestPaint();
    }
    if (state.selected === event.job_id) scheduleDetail();
  }

  // Does a job belong in the current view? The same filters the server applies to a page.
  function matchesView(job) {
    const shown = displayState(job);
    const wanted = state.filter || state.search.state;
    if (wanted === "SCHEDULED") {
      if (shown !== "SCHEDULED") return false;
    } else if (wanted && wanted !== job.state) {
      return false;
    }
    const search = state.search;
    if (search.queue && search.queue !== job.queue) return false;
    if (search.idPrefix && !String(job.job_id).startsWith(search.idPrefix)) return false;
    if (search.text && !errorLine(job).toLowerCase().includes(search.text.toLowerCase())) return false;
    return true;
  }

  function errorLine(job) {
    if (job.error_class || job.error_message) {
      return (job.error_class ? job.error_class + ": " : "") + (job.error_message || "");
    }
    return job.result_error ? parseError(job.result_error).line : "";
  }

  // ------------------------------------------------------------------ stats + sparklines

  // Queues whose oldest runnable job has waited longer than their max_latency_ms (the same
  // test /health's max_latency warning makes), from the stats frame's `latency` block.
  function renderLatencyWarning(latency) {
    const late = [];
    for (const name of Object.keys(latency).sort()) {
      const q = latency[name];
      if (q && q.max_latency_s && q.oldest_runnable_age_s && q.oldest_runnable_age_s > q.max_latency_s) {
        late.push(name + " (oldest job waiting " + formatDuration(q.oldest_runnable_age_s) + ", max " + formatDuration(q.max_latency_s) + ")");
      }
    }
    const banner = $("latency-warning");
    const text = late.length ? "Past their max latency: " + late.join("; ") : "";
    if (banner.textContent !== text) banner.textContent = text;
    banner.hidden = late.length === 0;
  }

  function renderStats(stats) {
    if (!stats) return;
    for (const field of STAT_FIELDS) {
      const el = $("stat-" + field);
      const text = numberFormat.format(stats[field] || 0);
      if (el.textContent !== text) {
        el.textContent = text;
        // A colour animation repaints every frame it runs: a counter that changes every second
        // would never stop. Only a change after a quiet spell is worth the eye.
        const now = performance.now();
        if (now - (Number(el.dataset.changedAt) || -1e9) > QUIET_MS) swapAnimation(el, "bump-a", "bump-b");
        el.dataset.changedAt = String(now);
      }
    }
    renderLatencyWarning(stats.latency || {});
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

  // Restart a CSS animation without reading layout: the two classes run the same keyframes
  // under two names, and a changed animation-name starts over.
  function swapAnimation(el, a, b) {
    if (el.classList.contains(a)) {
      el.classList.replace(a, b);
    } else {
      el.classList.remove(b);
      el.classList.add(a);
    }
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

  // The y axis starts at zero, always: 161 against 196 acks/s must not look like empty and full.
  function drawSpark(svg, values, slots) {
    const width = slots || SPARK_POINTS;
    const base = svgChild(svg, "base", "line");
    const area = svgChild(svg, "area", "path");
    const line = svgChild(svg, "line", "path");
    base.setAttribute("x1", "0");
    base.setAttribute("x2", String(SPARK_W));
    base.setAttribute("y1", String(SPARK_H));
    base.setAttribute("y2", String(SPARK_H));
    if (values.length === 0) return;
    let peak = 1;
    for (const v of values) if (v > peak) peak = v;
    const top = peak * 1.15;
    const step = SPARK_W / (width - 1);
    const offset = width - values.length; // the newest sample sits at the right edge
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

  // The query for the current view: the server filters (state, scheduled, queue, id prefix,
  // error text) and pages by an opaque cursor.
  function jobsQuery(cursor) {
    const params = new URLSearchParams();
    params.set("limit", String(MAX_ROWS));
    const wanted = state.filter || state.search.state;
    if (wanted) params.set("state", wanted.toLowerCase());
    if (state.search.queue) params.set("queue", state.search.queue);
    if (state.search.idPrefix) params.set("id_prefix", state.search.idPrefix);
    if (state.search.text) params.set("error", state.search.text);
    if (cursor) params.set("cursor", cursor);
    return "/jobs?" + params.toString();
  }

  function searching() {
    return Boolean(state.search.idPrefix || state.search.text);
  }

  async function loadJobs() {
    if (!state.key) return;
    const generation = state.generation;
    const view = viewKey();
    const cursor = state.cursor;
    let jobs = [];
    let next = cursor;
    try {
      // A search is a bounded scan: a page may come back short with a cursor to go on from.
      for (let round = 0; round < SEARCH_ROUNDS; round++) {
        const data = await api("GET", jobsQuery(next));
        jobs = jobs.concat(data.jobs || []);
        next = data.next_cursor || null;
        if (!searching() || !next || jobs.length >= MAX_ROWS) break;
      }
    } catch (err) {
      if (err.status === 401) keyRejected(err.message);
      else if (err.status) toast("Could not list jobs: " + err.message, "error");
      return;
    }
    if (generation !== state.generation || view !== viewKey() || cursor !== state.cursor) return;
    state.nextCursor = next;
    state.model.clear();
    // The page is newest first; the model keeps the newest last.
    for (let i = jobs.length - 1; i >= 0; i--) state.model.set(jobs[i].job_id, jobs[i]);
    renderTable(true);
  }

  function viewKey() {
    const s = state.search;
    return [state.filter, s.text, s.queue, s.state, s.idPrefix].join("\u0000");
  }

  // The newest MAX_ROWS of the model, painted by moving the rows that exist and building only
  // the new ones: a few dozen rows a few times a second, whatever the event rate.
  function renderTable(force) {
    if (state.tableTimer) {
      clearTimeout(state.tableTimer);
      state.tableTimer = null;
    }
    if (!force && state.paused) return;
    state.tableDirty = false;
    state.lastTable = performance.now();
    let jobs = [];
    const values = Array.from(state.model.values());
    if ((state.filter || state.search.state) === "SCHEDULED") {
      jobs = values.sort(function (a, b) {
        return Date.parse(a.run_at) - Date.parse(b.run_at);
      }).slice(0, MAX_ROWS);
    } else {
      for (let i = values.length - 1; i >= 0 && jobs.length < MAX_ROWS; i--) jobs.push(values[i]);
    }
    const previous = state.rows;
    const next = new Map();
    const trs = [];
    const flashed = [];
    for (const job of jobs) {
      const entry = previous.get(job.job_id);
      let tr;
      if (entry) {
        tr = entry.tr;
        if (entry.job !== job) {
          fillRow(tr, job);
          if (entry.job.state !== job.state) flashed.push(tr);
        }
      } else {
        tr = buildRow(job);
        if (previous.size > 0 && !force) flashed.push(tr);
      }
      next.set(job.job_id, { job: job, tr: tr });
      trs.push(tr);
    }
    // Under load every row is new at every rebuild: flashing them all would repaint the table
    // every frame. A quiet table shows its few changes.
    if (flashed.length <= FLASH_MAX) for (const tr of flashed) swapAnimation(tr, "flash-a", "flash-b");
    state.rows = next;
    const body = $("jobs-body");
    if (!sameOrder(body.children, trs)) body.replaceChildren.apply(body, trs);
    updateEmpty();
    updatePager();
  }

  function sameOrder(children, trs) {
    if (children.length !== trs.length) return false;
    for (let i = 0; i < trs.length; i++) if (children[i] !== trs[i]) return false;
    return true;
  }

  function updateEmpty() {
    const empty = $("jobs-empty");
    empty.hidden = state.rows.size > 0;
    if (!state.key) empty.textContent = "Connect with a key to see jobs.";
    else if (state.search.text || state.search.queue || state.search.idPrefix || state.search.state)
      empty.textContent = "No job on this page matches the search.";
    else if (state.filter) empty.textContent = "No " + state.filter.toLowerCase() + " jobs.";
    else empty.textContent = "No jobs yet. Enqueue one to see it here.";
  }

  function updatePager() {
    const live = isLivePage();
    $("page-newest").disabled = live;
    $("page-older").disabled = !state.nextCursor;
    const toggle = $("live-toggle");
    toggle.setAttribute("aria-pressed", String(state.paused));
    toggle.textContent = state.paused ? "Resume live" : "Pause live";
    $("jobs-title").dataset.paused = String(state.paused || !live);
    $("page-info").textContent = live
      ? state.paused
        ? "paused"
        : "live"
      : "page " + (state.pages.length + 1);
  }

  function buildRow(job) {
    const tr = document.createElement("tr");
    tr.tabIndex = 0;
    for (const cls of ["", "", "col-queue", "col-num col-priority", "col-num col-attempts", "col-error", "col-time", "col-action"]) {
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
    fillErrorCell(cells[5], job);
    cells[6].textContent = formatTime(job.updated_at || job.created_at, false);
    cells[6].title = formatTime(job.updated_at || job.created_at, true);
    if (job.state === "DEAD" && state.canWrite) {
      if (!cells[7].querySelector("button")) cells[7].replaceChildren(requeueButton(job.job_id, true));
    } else {
      cells[7].replaceChildren();
    }
  }

  // The error column: the exception class in bold and its message. The server keeps only the
  // current error (a successful retry clears it), so what is shown is never stale.
  function fillErrorCell(td, job) {
    const line = errorLine(job);
    if (!line) {
      td.replaceChildren();
      td.title = "";
      return;
    }
    const cls = document.createElement("span");
    cls.className = "error-class";
    const message = document.createElement("span");
    message.className = "error-message";
    if (job.error_class !== undefined || job.error_message !== undefined) {
      cls.textContent = job.error_class || "";
      message.textContent = job.error_message || "";
    } else {
      const parsed = parseError(job.result_error);
      cls.textContent = parsed.cls;
      message.textContent = parsed.message;
    }
    td.replaceChildren(cls, message);
    td.title = line;
  }

  // "Traceback (most recent call last): … ValueError: bad" → {cls: "ValueError", message: "bad"}.
  function parseError(text) {
    const lines = String(text).split("\n").map(function (l) {
      return l.trim();
    }).filter(Boolean);
    let line = lines.length ? lines[lines.length - 1] : "";
    if (lines.length && /^Traceback \(most recent call last\)/.test(lines[0]) && lines.length === 1) line = lines[0];
    const match = /^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Timeout|[A-Z]\w*)):\s?(.*)$/.exec(line);
    if (match) return { cls: match[1], message: match[2], line: line };
    const bare = /^([A-Za-z_][\w.]*(?:Error|Exception|Timeout))$/.exec(line);
    if (bare) return { cls: bare[1], message: "", line: line };
    return { cls: "", message: line, line: line };
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
    button.className = "btn btn-danger write-control" + (small ? " btn-small" : "");
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

  // ------------------------------------------------------------------ search, pause, pages

  // "queue:emails state:dead 3f2a" → the server's filters plus an id prefix; any other words
  // are error text.
  function parseSearch(text) {
    const search = { text: "", queue: "", state: "", idPrefix: "" };
    const words = [];
    for (const word of text.trim().split(/\s+/).filter(Boolean)) {
      const colon = word.indexOf(":");
      const name = colon > 0 ? word.slice(0, colon).toLowerCase() : "";
      const value = colon > 0 ? word.slice(colon + 1) : word;
      if (name === "queue") search.queue = value;
      else if (name === "state") search.state = value.toUpperCase();
      else if (name === "id") search.idPrefix = value.toLowerCase();
      else if (!name && /^[0-9a-f-]{4,36}$/i.test(word) && !search.idPrefix) search.idPrefix = word.toLowerCase();
      else words.push(word);
    }
    search.text = words.join(" "); // the server matches it case-insensitively
    return search;
  }

  function resetPages() {
    state.pages = [];
    state.cursor = null;
    state.nextCursor = null;
  }

  function setPaused(paused) {
    state.paused = paused;
    updatePager();
    if (!paused) {
      if (isLivePage()) renderTable();
      else {
        resetPages();
        loadJobs();
      }
    }
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
    if (state.detailTimer) return; // one read per 300 ms at most, whatever the event rate
    state.detailTimer = setTimeout(function () {
      state.detailTimer = null;
      loadDetail();
    }, 300);
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
    renderDetailError(job);
    renderHistory(job);
    // Issue 19: a running job's progress.
    const progress = job.progress;
    $("d-progress").textContent = progress
      ? Math.round(progress.progress * 100) + "% " + (progress.note || "")
      : "—";
    loadExplain(job.job_id);
    const actions = $("d-actions");
    actions.replaceChildren();
    if (job.state === "DEAD" && state.canWrite) actions.append(requeueButton(job.job_id, false));
    if ((job.state === "READY" || job.state === "RETRY") && state.canWrite) actions.append(cancelButton(job.job_id));
  }

  function cancelButton(jobId) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "btn btn-ghost write-control";
    button.textContent = "Cancel";
    button.dataset.cancel = jobId;
    button.setAttribute("hx-post", "/jobs/" + encodeURIComponent(jobId) + "/cancel");
    button.setAttribute("hx-confirm", "Cancel job " + shortId(jobId) + "?");
    button.setAttribute("hx-swap", "none");
    htmx.process(button);
    return button;
  }

  // The current error (the server clears it on a successful ack): a job that succeeded on a
  // retry shows "no error" here, its failures in the attempt history below.
  function renderDetailError(job) {
    const box = $("d-error");
    const error = job.result_error || "";
    box.hidden = !error;
    $("d-error-none").hidden = Boolean(error);
    const parsed = job.error_class || job.error_message
      ? { cls: job.error_class || "", message: job.error_message || "" }
      : parseError(error);
    $("d-error-class").textContent = parsed.cls;
    $("d-error-message").textContent = parsed.message;
    $("d-result_error").textContent = error;
    // A one-line error has nothing more to unfold; a traceback opens on demand.
    box.open = error !== "" && error.indexOf("\n") < 0;
  }

  // The attempt history (GET /jobs/{id} `attempt_history`, the last 10, oldest first): who ran
  // each attempt, when, how it ended, and its traceback folded.
  function renderHistory(job) {
    const history = Array.isArray(job.attempt_history) ? job.attempt_history : null;
    $("d-history").hidden = !history || history.length === 0;
    const list = $("d-history-list");
    list.replaceChildren();
    if (!history) return;
    for (const attempt of history) {
      const li = document.createElement("li");
      li.dataset.outcome = String(attempt.outcome || "");
      const head = document.createElement("div");
      head.className = "history-head";
      const outcome = pill(String(attempt.outcome || "running").toUpperCase());
      const what = document.createElement("span");
      const parts = ["attempt " + attempt.attempt];
      if (attempt.worker) parts.push(attempt.worker);
      if (attempt.started_at) parts.push(formatTime(attempt.started_at, true));
      if (attempt.ended_at) parts.push("→ " + formatTime(attempt.ended_at, false));
      what.textContent = parts.join(" · ");
      head.append(outcome, what);
      li.append(head);
      if (attempt.error_class || attempt.error_message || attempt.traceback) {
        const details = document.createElement("details");
        details.className = "error-box";
        const summary = document.createElement("summary");
        const cls = document.createElement("span");
        cls.className = "error-class";
        cls.textContent = attempt.error_class || "";
        summary.append(cls, document.createTextNode(" " + (attempt.error_message || "")));
        details.append(summary);
        if (attempt.traceback) {
          const pre = document.createElement("pre");
          pre.className = "code code-error";
          pre.textContent = attempt.traceback;
          details.append(pre);
        }
        li.append(details);
      }
      list.append(li);
    }
  }

  // Why the job is where it is (GET /jobs/{id}/explain, issue 19), one sentence; quiet when
  // the server has no such route.
  async function loadExplain(jobId) {
    const out = $("d-why");
    out.textContent = "";
    try {
      const why = await api("GET", "/jobs/" + encodeURIComponent(jobId) + "/explain");
      if (jobId === state.selected && why && why.summary) out.textContent = why.summary;
    } catch (_) {
      /* an older server, or the job is gone */
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

  // ------------------------------------------------------------------ queues, workers, history

  // Read every CONSOLE_REFRESH_MS while the stream is live and the tab visible: a few small
  // requests, whatever the job rate (the queue overviews of the busiest OVERVIEW_MAX only).
  async function loadConsole() {
    if (!state.key || document.hidden || $("conn").dataset.state !== "live") return;
    const generation = state.generation;
    await Promise.all([
      loadQueues(generation),
      loadWorkers(generation),
      loadSchedules(generation),
      loadHistory(generation),
      loadDeadGroups(generation),
    ]);
  }

  async function loadQueues(generation) {
    let page;
    try {
      page = await api("GET", "/queues?limit=100");
    } catch (_) {
      return;
    }
    const queues = (page.queues || []).slice().sort(function (a, b) {
      return (b.runnable + b.running + b.retry + b.dead) - (a.runnable + a.running + a.retry + a.dead) || (a.name < b.name ? -1 : 1);
    });
    const shown = queues.slice(0, OVERVIEW_MAX);
    const overviews = await Promise.all(shown.map(function (queue) {
      const name = encodeURIComponent(queue.name);
      return api("GET", "/queues/" + name + "/overview?limit=5").catch(function () { return null; });
    }));
    if (generation !== state.generation) return;
    const body = $("queues-body");
    const rows = shown.map(function (queue, i) {
      return queueRow(queue, overviews[i]);
    });
    body.replaceChildren.apply(body, rows);
    $("queues-empty").hidden = rows.length > 0;
  }

  // cell(text, cls) appends a <td> to `tr` and returns it.
  function cellAdder(tr) {
    return function (text, cls) {
      const td = document.createElement("td");
      if (cls) td.className = cls;
      td.textContent = text;
      tr.append(td);
      return td;
    };
  }

  function queueRow(queue, overview) {
    const tr = document.createElement("tr");
    tr.dataset.queue = queue.name;
    // GET /queues carries each queue's flow settings when the server has flow control.
    const paused = Boolean(queue.paused);
    tr.dataset.paused = String(paused);
    const cell = cellAdder(tr);
    const name = cell(queue.name);
    if (paused) {
      const badge = pill("PAUSED");
      badge.classList.add("paused-badge");
      name.append(badge);
    }
    // Its limits (issue 18), as set with PUT /queues/{name}: 0 or absent is no limit.
    if (queue.concurrency) {
      const limit = document.createElement("span");
      limit.className = "limit-note";
      limit.dataset.limit = "concurrency";
      limit.textContent = "≤ " + numberFormat.format(queue.concurrency) + " running";
      name.append(limit);
    }
    if (queue.rate_limit) {
      const limit = document.createElement("span");
      limit.className = "limit-note";
      limit.dataset.limit = "rate";
      limit.textContent = numberFormat.format(queue.rate_limit) + " leases / " + formatMs(queue.rate_period_ms || 0);
      name.append(limit);
    }
    cell(numberFormat.format(queue.runnable), "col-num");
    cell(numberFormat.format(queue.running), "col-num");
    cell(numberFormat.format(queue.scheduled), "col-num col-optional");
    cell(numberFormat.format(queue.retry), "col-num col-optional");
    cell(numberFormat.format(queue.dead), "col-num");
    const latency = overview && typeof overview.latency_ms === "number" ? formatMs(overview.latency_ms) : "—";
    cell(latency, "col-num").dataset.field = "latency";
    const acked = overview && overview.throughput && overview.throughput.acked;
    // The last whole minute: the current one is still filling.
    cell(acked && acked.length > 1 ? numberFormat.format(acked[acked.length - 2]) : "—", "col-num col-optional");
    const leases = cell("", "col-optional");
    for (const lease of (overview && overview.leases) || []) {
      const line = document.createElement("div");
      line.className = "lease";
      line.textContent = shortId(lease.job_id) + " · " + (lease.worker || "unnamed worker") + " · since " + formatTime(lease.since, false) + " until " + formatTime(lease.until, false);
      leases.append(line);
    }
    if (overview && overview.next_cursor) {
      const more = document.createElement("div");
      more.className = "lease muted-note";
      more.textContent = "and " + numberFormat.format(Math.max(0, queue.running - 5)) + " more";
      leases.append(more);
    }
    const action = cell("", "col-action");
    if ("paused" in queue && state.canPause) action.append(pauseButton(queue.name, paused));
    return tr;
  }

  // A Pause/Resume button of a queue (data-pause-queue) or a schedule (data-pause-schedule).
  function pauseButton(name, paused, what) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "btn btn-ghost btn-small write-control";
    button.textContent = paused ? "Resume" : "Pause";
    button.dataset[what === "schedule" ? "pauseSchedule" : "pauseQueue"] = name;
    button.dataset.paused = String(paused);
    return button;
  }

  // Pausing asks first (saying what it stops); resuming does not. Returns true when the key
  // was refused (403): the caller hides the control.
  async function sendPause(path, label, resume, stops) {
    if (!resume && !window.confirm("Pause " + label + "? " + stops)) return false;
    try {
      await api("POST", path + (resume ? "/resume" : "/pause"));
      toast((resume ? "Resumed " : "Paused ") + label);
    } catch (err) {
      toast("Could not change " + label + ": " + err.message, "error");
      return err.status === 403;
    }
    return false;
  }

  async function togglePause(button) {
    const queue = button.dataset.pauseQueue;
    const resume = button.dataset.paused === "true";
    const path = "/queues/" + encodeURIComponent(queue);
    const stops = "Workers lease nothing from it until it is resumed.";
    if (await sendPause(path, "queue " + queue, resume, stops)) state.canPause = false;
    loadQueues(state.generation);
  }

  function formatMs(ms) {
    if (ms < 1000) return Math.round(ms) + " ms";
    return formatDuration(ms / 1000);
  }

  async function loadWorkers(generation) {
    let page;
    try {
      page = await api("GET", "/workers?limit=50");
    } catch (_) {
      return;
    }
    if (generation !== state.generation) return;
    const rows = (page.workers || []).map(function (worker) {
      const tr = document.createElement("tr");
      tr.dataset.worker = worker.worker_id;
      const values = [
        [worker.worker_id, "job-id"],
        [numberFormat.format(worker.leases), "col-num"],
        [(worker.queues || []).join(", "), "col-optional"],
        [worker.last_seen ? formatTime(worker.last_seen, false) : "—", "col-time"],
      ];
      for (const [text, cls] of values) {
        const td = document.createElement("td");
        td.className = cls;
        td.textContent = text;
        tr.append(td);
      }
      return tr;
    });
    const body = $("workers-body");
    body.replaceChildren.apply(body, rows);
    $("workers-empty").hidden = rows.length > 0;
  }

  // Periodic jobs (issue 18): each schedule, when it runs next and last, paused or not; keys
  // that may submit may pause and resume one (POST /schedules/{name}/pause|resume).
  async function loadSchedules(generation) {
    let page;
    try {
      page = await api("GET", "/schedules?limit=50");
    } catch (_) {
      return;
    }
    if (generation !== state.generation) return;
    const rows = (page.schedules || []).map(scheduleRow);
    const body = $("schedules-body");
    body.replaceChildren.apply(body, rows);
    $("schedules-empty").hidden = rows.length > 0;
  }

  function scheduleRow(schedule) {
    const tr = document.createElement("tr");
    tr.dataset.schedule = schedule.name;
    tr.dataset.paused = String(Boolean(schedule.paused));
    const cell = cellAdder(tr);
    const name = cell(schedule.name);
    if (schedule.paused) name.append(pill("PAUSED"));
    cell(schedule.cron + (schedule.timezone && schedule.timezone !== "UTC" ? " (" + schedule.timezone + ")" : ""), "job-id");
    cell(schedule.queue, "col-optional");
    cell(schedule.next_fire_at ? formatTime(schedule.next_fire_at, false) : "—", "col-time").dataset.field = "next";
    cell(schedule.last_fired_at ? formatTime(schedule.last_fired_at, false) : "—", "col-time col-optional");
    cell(numberFormat.format(schedule.runs || 0), "col-num col-optional");
    const action = cell("", "col-action");
    if (state.canWrite) {
      action.append(pauseButton(schedule.name, Boolean(schedule.paused), "schedule"));
    }
    return tr;
  }

  async function toggleSchedule(button) {
    const name = button.dataset.pauseSchedule;
    const path = "/schedules/" + encodeURIComponent(name);
    const stops = "It makes no job until it is resumed.";
    await sendPause(path, "schedule " + name, button.dataset.paused === "true", stops);
    loadSchedules(state.generation);
  }

  async function loadHistory(generation) {
    const window_ = state.historyWindow;
    let history;
    try {
      history = await api("GET", "/stats/history?window=" + window_);
    } catch (_) {
      return;
    }
    if (generation !== state.generation || window_ !== state.historyWindow) return;
    for (const field of ["submitted", "acked", "failed"]) {
      const values = history[field] || [];
      drawSpark($("hist-" + field), values, Math.max(2, values.length));
      const total = values.reduce(function (a, b) { return a + b; }, 0);
      $("hist-" + field + "-total").textContent = numberFormat.format(total) + " in " + window_;
    }
  }

  // ------------------------------------------------------------------ dead-letter groups

  // The DEAD jobs grouped by cause (GET /dead/groups, issue 19): the biggest first, each with a
  // requeue and a cancel of the whole group, confirmed. Quiet on a server without the route.
  async function loadDeadGroups(generation) {
    let page;
    try {
      page = await api("GET", "/dead/groups");
    } catch (_) {
      return;
    }
    if (generation !== state.generation || !page) return;
    const rows = (page.groups || []).slice(0, 20).map(function (group) {
      const tr = document.createElement("tr");
      tr.dataset.fingerprint = group.fingerprint;
      const error = document.createElement("td");
      error.className = "col-error";
      const cls = document.createElement("span");
      cls.className = "error-class";
      cls.textContent = group.error_type || "";
      const pattern = document.createElement("span");
      pattern.className = "error-message";
      pattern.textContent = group.pattern || "";
      error.append(cls, pattern);
      error.title = group.sample_error || "";
      const count = document.createElement("td");
      count.className = "col-num";
      count.textContent = numberFormat.format(group.count);
      const queues = document.createElement("td");
      queues.className = "col-optional";
      queues.textContent = Object.keys(group.queues || {}).join(", ");
      const last = document.createElement("td");
      last.className = "col-time";
      last.textContent = formatTime(group.last_seen, false);
      const action = document.createElement("td");
      action.className = "col-action";
      if (state.canWrite) {
        for (const verb of ["requeue", "cancel"]) {
          const button = document.createElement("button");
          button.type = "button";
          button.className = "btn btn-small write-control " + (verb === "requeue" ? "btn-danger" : "btn-ghost");
          button.textContent = verb === "requeue" ? "Requeue" : "Cancel";
          button.dataset.groupAction = verb;
          action.append(button);
        }
      }
      tr.append(error, count, queues, last, action);
      return tr;
    });
    const body = $("groups-body");
    body.replaceChildren.apply(body, rows);
    $("groups-empty").hidden = rows.length > 0;
    $("groups-note").textContent = page.group_count
      ? numberFormat.format(page.dead) + " dead in " + numberFormat.format(page.group_count) + " groups"
      : "";
  }

  async function settleGroup(button) {
    const tr = button.closest("tr");
    const verb = button.dataset.groupAction;
    const what = tr.querySelector(".col-error").textContent;
    const count = tr.children[1].textContent;
    const question = (verb === "requeue" ? "Requeue" : "Cancel for good") + " the " + count + " dead jobs of “" + what + "”?";
    if (!window.confirm(question)) return;
    try {
      const done = await api("POST", "/dead/groups/" + encodeURIComponent(tr.dataset.fingerprint) + "/" + verb);
      toast((verb === "requeue" ? "Requeued " : "Cancelled ") + numberFormat.format(done.settled) + " jobs");
    } catch (err) {
      if (err.status === 403) setCanWrite(false);
      toast("Could not " + verb + " the group: " + err.message, "error");
    }
    loadDeadGroups(state.generation);
    resetPages();
    loadJobs();
  }

  // ------------------------------------------------------------------ bulk actions

  // The current search as a bulk filter: what the operator sees is what the action takes.
  function bulkFilter() {
    const filter = {};
    if (state.search.queue) filter.queue = state.search.queue;
    if (state.search.text) filter.error = state.search.text;
    if (state.search.idPrefix) filter.id_prefix = state.search.idPrefix;
    return filter;
  }

  function describeFilter(filter) {
    const parts = [];
    if (filter.queue) parts.push("in queue " + filter.queue);
    if (filter.error) parts.push('with an error containing "' + filter.error + '"');
    if (filter.id_prefix) parts.push("with an id starting " + filter.id_prefix);
    return parts.length ? " " + parts.join(", ") : " in every queue";
  }

  async function bulk(action) {
    const filter = bulkFilter();
    const what = action === "requeue" ? "Requeue every DEAD job" : "Cancel every waiting job (ready, scheduled, retry)";
    const count = action === "requeue" && !filter.queue && !filter.error && !filter.id_prefix && state.latestStats
      ? " (" + numberFormat.format(state.latestStats.dead || 0) + " now)"
      : "";
    if (!window.confirm(what + describeFilter(filter) + count + "?")) return;
    try {
      const done = await api("POST", "/jobs/bulk", Object.assign({ action: action }, filter));
      toast((action === "requeue" ? "Requeued " : "Cancelled ") + numberFormat.format(done.changed) + " of " + numberFormat.format(done.matched) + " matching");
    } catch (err) {
      if (err.status === 403) setCanWrite(false);
      toast("Bulk " + action + " failed: " + err.message, "error");
    }
    resetPages();
    loadJobs();
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
      setCanWrite(false);
      state.model.clear();
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
      resetPages();
      loadJobs();
    });
    $("search-form").addEventListener("submit", function (e) {
      e.preventDefault();
      state.search = parseSearch($("search-input").value);
      resetPages();
      loadJobs();
    });
    $("search-input").addEventListener("search", function () {
      // The clear (×) button of a search field: back to everything.
      if ($("search-input").value === "") {
        state.search = parseSearch("");
        resetPages();
        loadJobs();
      }
    });
    $("live-toggle").addEventListener("click", function () {
      setPaused(!state.paused);
    });
    $("page-older").addEventListener("click", function () {
      if (!state.nextCursor) return;
      state.pages.push(state.cursor);
      state.cursor = state.nextCursor;
      loadJobs();
    });
    $("page-newest").addEventListener("click", function () {
      resetPages();
      state.paused = false;
      loadJobs();
    });
    $("bulk-requeue").addEventListener("click", function () {
      bulk("requeue");
    });
    $("bulk-cancel").addEventListener("click", function () {
      bulk("cancel");
    });
    $("queues-body").addEventListener("click", function (e) {
      const button = e.target.closest("button[data-pause-queue]");
      if (button) togglePause(button);
    });
    $("schedules-body").addEventListener("click", function (e) {
      const button = e.target.closest("button[data-pause-schedule]");
      if (button) toggleSchedule(button);
    });
    $("groups-body").addEventListener("click", function (e) {
      const button = e.target.closest("button[data-group-action]");
      if (button) settleGroup(button);
    });
    $("history-window").addEventListener("click", function (e) {
      const chip = e.target.closest(".chip");
      if (!chip) return;
      state.historyWindow = chip.dataset.window;
      for (const other of $("history-window").querySelectorAll(".chip")) {
        other.setAttribute("aria-pressed", String(other === chip));
      }
      loadHistory(state.generation);
    });
    setInterval(loadConsole, CONSOLE_REFRESH_MS);
    document.addEventListener("keydown", function (e) {
      if (e.target.closest && e.target.closest("input, textarea, select")) return;
      if (e.key === "/") {
        e.preventDefault();
        $("search-input").focus();
      } else if (e.key === "p") {
        setPaused(!state.paused);
      }
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
    document.body.dataset.write = "false";
    updatePager();
    showKeyState();
    updateEmpty();
    connect();
  });
})();
