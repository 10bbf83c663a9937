// Parlour proxy dashboard. Plain JS, no build step. Every value from the server is put in
// the page with textContent / value, never as HTML.
"use strict";
(function () {
  const POLL_MS = 1000;
  const TOKEN_KEY = "parlour.proxy.token";
  const $ = (sel) => document.querySelector(sel);

  // ---- token handling: ?token= or #token= once, then sessionStorage only ----
  function takeTokenFromUrl() {
    const url = new URL(window.location.href);
    let token = url.searchParams.get("token");
    if (token) url.searchParams.delete("token");
    if (!token && url.hash.startsWith("#token=")) {
      token = decodeURIComponent(url.hash.slice("#token=".length));
      url.hash = "#dashboard";
    }
    if (token) {
      sessionStorage.setItem(TOKEN_KEY, token);
      history.replaceState(null, "", url.pathname + url.search + url.hash);
    }
  }
  const getToken = () => sessionStorage.getItem(TOKEN_KEY) || "";

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + getToken() };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, "network", "proxy admin API unreachable");
    }
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok) {
      const err = (data && data.error) || {};
      if (resp.status === 401) showLogin("Token rejected — sign in again.");
      throw new ApiError(resp.status, err.code || "http_" + resp.status, err.message || resp.statusText);
    }
    return data;
  }

  // ---- DOM helpers ----
  function el(tag, opts, ...children) {
    const node = document.createElement(tag);
    if (opts) {
      if (opts.cls) node.className = opts.cls;
      if (opts.text !== undefined) node.textContent = String(opts.text);
      if (opts.title !== undefined) node.title = String(opts.title);
      if (opts.data) for (const [k, v] of Object.entries(opts.data)) node.dataset[k] = String(v);
      if (opts.attrs) for (const [k, v] of Object.entries(opts.attrs)) node.setAttribute(k, String(v));
      if (opts.onclick) node.addEventListener("click", opts.onclick);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }
  const setText = (sel, v) => { const n = $(sel); if (n && n.textContent !== v) n.textContent = v; };

  // ---- formatting ----
  function fmtInt(n) { return typeof n === "number" ? n.toLocaleString("en-US") : "–"; }
  function fmtBytes(n) {
    if (typeof n !== "number") return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(n) : n.toFixed(n >= 100 ? 0 : 1)) + " " + units[i];
  }
  function fmtDuration(s) {
    if (typeof s !== "number" || !(s > 0)) return "–";
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60), sec = s % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + String(m).padStart(2, "0") + "m";
    if (m) return m + "m " + String(sec).padStart(2, "0") + "s";
    return sec + "s";
  }
  function fmtTime(t, short) {
    if (typeof t !== "number" || !t) return "never";
    const d = new Date(t * 1000);
    const p = (x) => String(x).padStart(2, "0");
    const clock = p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
    const day = d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate());
    return short && new Date().toDateString() === d.toDateString() ? clock : day + " " + clock;
  }
  function fmtMs(v) { return typeof v === "number" ? (v >= 100 ? v.toFixed(0) : v.toFixed(1)) + " ms" : "–"; }
  const STATES = ["up", "down", "draining", "disabled", "checking"];
  const badge = (state) => el("span", { cls: "badge badge-" + (STATES.includes(state) ? state : "down"), text: state });

  // ---- state ----
  let stats = null;
  let prev = null; // {now, requests}
  let pollTimer = null;
  let eventsLoadedAt = 0;
  const sort = { key: "host", dir: 1 };
  const charts = {};

  // ---- login ----
  function showLogin(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    stopPolling();
    $("#login").hidden = false;
    setText("#login-error", message || "");
    $("#token-input").focus();
  }
  async function tryLogin(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    try {
      await api("GET", "/api/settings");
    } catch (e) {
      if (e.status !== 401) showLogin(e.message);
      return false;
    }
    $("#login").hidden = true;
    startPolling();
    if (document.body.dataset.page === "config") loadConfig(false); // shown before sign-in
    return true;
  }

  // ---- routing ----
  const PAGES = ["dashboard", "servers", "config", "log"];
  function route() {
    let page = window.location.hash.replace(/^#/, "");
    if (!PAGES.includes(page)) page = "dashboard";
    for (const sec of document.querySelectorAll(".page")) sec.hidden = sec.dataset.page !== page;
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page);
    document.body.dataset.page = page;
    if (page === "config") loadConfig(false);
    if (page === "log") loadEvents();
    render();
  }

  // ---- polling ----
  function startPolling() {
    stopPolling();
    poll();
    pollTimer = setInterval(poll, POLL_MS);
  }
  function stopPolling() {
    if (pollTimer !== null) clearInterval(pollTimer);
    pollTimer = null;
    setLive(false);
  }
  function setLive(on) {
    const n = $("#live");
    n.textContent = on ? "live" : "offline";
    n.className = "pill " + (on ? "pill-on" : "pill-off");
  }
  let inflight = false;
  async function poll() {
    if (inflight || !getToken() || (document.hidden && stats)) return; // idle in background tabs
    inflight = true;
    try {
      const data = await api("GET", "/api/stats");
      // requests/s from the change since the previous sample (the server's clock, not ours)
      const advanced = !prev || data.now > prev.now;
      data.rps = stats ? stats.rps : null;
      if (prev && advanced) data.rps = Math.max(0, (data.totals.requests - prev.requests) / (data.now - prev.now));
      // per backend too, so the load bars show how the algorithm spreads traffic right now
      data.backendRps = stats ? stats.backendRps : {};
      if (prev && advanced) {
        data.backendRps = {};
        for (const b of data.backends) {
          const before = prev.byBackend[b.id];
          if (before !== undefined) data.backendRps[b.id] = Math.max(0, (b.requests - before) / (data.now - prev.now));
        }
      }
      if (advanced) {
        const byBackend = {};
        for (const b of data.backends) byBackend[b.id] = b.requests;
        prev = { now: data.now, requests: data.totals.requests, byBackend };
      }
      stats = data;
      if (advanced) pushCharts(data);
      setLive(true);
      render();
      if (document.body.dataset.page === "log" && Date.now() - eventsLoadedAt > 5000) loadEvents();
    } catch (e) {
      setLive(false);
    } finally {
      inflight = false;
    }
  }

  function pushCharts(data) {
    if (!charts.rps) {
      charts.rps = new window.ParlourCharts.LineChart($("#chart-rps"), [{ color: "#3aa0ff", label: "req/s" }]);
      charts.lat = new window.ParlourCharts.LineChart($("#chart-latency"), [
        { color: "#3aa0ff", label: "p50" }, { color: "#f5a524", label: "p99" }]);
    }
    let p50 = null, p99 = null, weight = 0, sum = 0;
    for (const b of data.backends) {
      if (typeof b.p50_ms === "number") { const w = Math.max(1, b.requests); sum += b.p50_ms * w; weight += w; }
      if (typeof b.p99_ms === "number") p99 = p99 === null ? b.p99_ms : Math.max(p99, b.p99_ms);
    }
    if (weight) p50 = sum / weight;
    charts.rps.push([data.rps]);
    charts.lat.push([p50, p99]);
  }

  // ---- rendering ----
  function render() {
    if (!stats) return;
    const page = document.body.dataset.page;
    const s = stats.settings;
    setText("#algo-pill", s.algorithm.replace(/_/g, " ") + (s.selection_mode === "interval" ? " · every " + s.interval_s + " s" : ""));
    renderPrompt();
    if (page === "dashboard") renderDashboard();
    if (page === "servers") renderServers();
    if (page === "log") renderLog();
  }

  // ---- "no backend is up": ask for addresses (the API says when, in stats.prompt) ----
  function renderPrompt() {
    const prompt = stats.prompt;
    const box = $("#add-prompt");
    box.hidden = !prompt;
    if (!prompt) { setText("#prompt-status", ""); return; }
    setText("#prompt-title", prompt.reason === "no_backends"
      ? "No backends yet — where should the proxy send traffic?"
      : "No backend is up — clients get 503 until one is");
    setText("#prompt-text", prompt.message);
    const list = $("#prompt-backends");
    const items = prompt.reason === "no_backends" ? [] : stats.backends.map((b) => el("li", null,
      el("span", { cls: "mono", text: b.id }), " ", badge(b.state),
      b.state === "down" && b.last_crash_reason ? " " + b.last_crash_reason : ""));
    const key = items.map((li) => li.textContent).join("\n");
    if (list.dataset.key !== key) { list.replaceChildren(...items); list.dataset.key = key; }
  }
  async function addFromPrompt(ev) {
    ev.preventDefault();
    setText("#prompt-error", "");
    const host = $("#prompt-host").value.trim();
    const port = $("#prompt-port").value.trim();
    try {
      const got = await api("POST", "/api/backends", { host, port: port === "" ? undefined : Number(port) });
      $("#prompt-form").reset();
      setText("#prompt-status", "Added " + got.backend.id + (got.backend.state === "checking" ? " — checking it before it takes traffic…" : "."));
      await poll();
    } catch (e) {
      setText("#prompt-error", e.message);
    }
  }

  function fmtRate(r) {
    return r.toFixed(r < 10 ? 1 : 0);
  }

  function renderDashboard() {
    const t = stats.totals;
    setText("#t-active", fmtInt(t.active_conns));
    setText("#t-rps", stats.rps === null || stats.rps === undefined ? "–" : stats.rps.toFixed(stats.rps < 10 ? 1 : 0));
    setText("#t-requests", fmtInt(t.requests));
    setText("#t-conns", fmtInt(t.total_conns));
    setText("#t-bytes", fmtBytes(t.bytes_in) + " / " + fmtBytes(t.bytes_out));
    setText("#t-errors", fmtInt(t.errors));
    setText("#t-up", t.backends_up + " / " + t.backends);
    setText("#t-uptime", fmtDuration(stats.uptime_s));
    charts.rps && charts.rps.draw();
    charts.lat && charts.lat.draw();

    const box = $("#load-bars");
    const backends = stats.backends;
    $("#load-empty").hidden = backends.length > 0;
    const rates = stats.backendRps || {};
    const totalRate = backends.reduce((a, b) => a + (rates[b.id] || 0), 0);
    const totalReq = backends.reduce((a, b) => a + b.requests, 0);
    const rows = backends.map((b) => {
      // the bar: this backend's share of the requests/s right now (how the algorithm
      // spreads traffic); the label adds active connections and the all-time share
      const rate = rates[b.id];
      const pct = totalRate ? (100 * (rate || 0)) / totalRate : 0;
      const fill = el("div", { cls: "bar-fill state-" + b.state });
      fill.style.width = pct.toFixed(1) + "%";
      const now = rate === undefined ? "" : fmtRate(rate) + " req/s" + (totalRate ? " (" + pct.toFixed(0) + "%)" : "") + " · ";
      const share = totalReq ? ((100 * b.requests) / totalReq).toFixed(1) + "% of all requests" : "no requests yet";
      return el("div", { cls: "bar-row", data: { backend: b.id } },
        el("div", { cls: "bar-name", title: b.id }, badge(b.state), " ", b.id),
        el("div", { cls: "bar-track", title: "share of the current requests/s" }, fill),
        el("div", { cls: "bar-label", text: now + b.active_conns + " active" + (b.max_conns ? " / " + b.max_conns : "") + " · " + share }));
    });
    box.replaceChildren(...rows);
  }

  function actionButton(label, cls, handler) {
    const b = el("button", { cls: "btn btn-small " + cls, text: label, attrs: { type: "button" } });
    b.addEventListener("click", async () => {
      b.disabled = true;
      setText("#servers-error", "");
      try { await handler(); } catch (e) { setText("#servers-error", e.message); }
      b.disabled = false;
      const row = b.closest("tr");
      if (row && row._parts) row._parts.state = null; // recompute button states
      await poll();
    });
    return b;
  }

  // Rows are updated in place (not rebuilt) so a weight being edited or a button being
  // clicked is never replaced under the operator's hands by a live update.
  function buildServerRow(b) {
    const id = encodeURIComponent(b.id);
    const weight = el("input", { cls: "weight-input", attrs: { type: "number", min: 1, max: 1000, "aria-label": "weight" } });
    weight.value = String(b.weight);
    weight.dataset.orig = String(b.weight);
    const setWeight = actionButton("Set", "", async () => {
      const w = Number(weight.value);
      await api("PUT", "/api/backends/" + id + "/weight", { weight: Number.isInteger(w) ? w : weight.value });
      weight.dataset.orig = weight.value;
    });
    const buttons = {
      enable: actionButton("Enable", "", () => api("POST", "/api/backends/" + id + "/enable")),
      drain: actionButton("Drain", "", () => api("POST", "/api/backends/" + id + "/drain")),
      disable: actionButton("Disable", "", () => api("POST", "/api/backends/" + id + "/disable")),
      remove: actionButton("Remove", "btn-danger", async () => {
        if (!window.confirm("Remove backend " + b.id + "? Established connections finish normally.")) return;
        await api("DELETE", "/api/backends/" + id);
      }),
    };
    const cells = {
      state: el("td"),
      active: el("td", { cls: "num" }),
      max: el("td", { cls: "num" }),
    };
    const row = el("tr", { data: { backend: b.id } },
      el("td", { cls: "mono", text: b.id, title: b.id }),
      cells.state, cells.active, cells.max,
      el("td", null, el("div", { cls: "actions" }, weight, setWeight)),
      el("td", null, el("div", { cls: "actions" }, buttons.enable, buttons.drain, buttons.disable, buttons.remove)));
    row._parts = { weight, buttons, cells, state: null };
    return row;
  }

  function updateServerRow(row, b) {
    const p = row._parts;
    if (p.state !== b.state) {
      p.cells.state.replaceChildren(badge(b.state));
      p.state = b.state;
      p.buttons.enable.disabled = b.state === "up";
      p.buttons.drain.disabled = b.state === "draining" || b.state === "disabled";
      p.buttons.disable.disabled = b.state === "disabled";
    }
    const active = fmtInt(b.active_conns);
    if (p.cells.active.textContent !== active) p.cells.active.textContent = active;
    const max = b.max_conns ? fmtInt(b.max_conns) : "∞";
    if (p.cells.max.textContent !== max) p.cells.max.textContent = max;
    const w = String(b.weight);
    const editing = document.activeElement === p.weight || p.weight.value !== p.weight.dataset.orig;
    if (!editing && p.weight.value !== w) p.weight.value = w;
    if (p.weight.dataset.orig !== w && !editing) p.weight.dataset.orig = w;
  }

  function renderServers() {
    const tbody = $("#servers-table tbody");
    const existing = new Map();
    for (const row of tbody.children) existing.set(row.dataset.backend, row);
    const wanted = stats.backends.map((b) => {
      let row = existing.get(b.id);
      if (!row || !row._parts) row = buildServerRow(b);
      updateServerRow(row, b);
      return row;
    });
    const same = wanted.length === tbody.children.length && wanted.every((r, i) => tbody.children[i] === r);
    if (!same) tbody.replaceChildren(...wanted);
  }

  function sortValue(b, key) {
    if (key === "bytes") return b.bytes_in + b.bytes_out;
    const v = b[key];
    return v === null || v === undefined ? -Infinity : v;
  }

  function renderLog() {
    if (!stats) return;
    const rows = stats.backends.slice().sort((a, b) => {
      const x = sortValue(a, sort.key), y = sortValue(b, sort.key);
      let c = typeof x === "string" && typeof y === "string" ? x.localeCompare(y) : (x < y ? -1 : x > y ? 1 : 0);
      if (c === 0) c = a.id.localeCompare(b.id);
      return c * sort.dir;
    });
    for (const th of document.querySelectorAll("#log-table th")) {
      if (th.dataset.key === sort.key) th.setAttribute("aria-sort", sort.dir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
    const tbody = $("#log-table tbody");
    tbody.replaceChildren(...rows.map((b) => {
      const crashed = b.last_crashed ? fmtTime(b.last_crashed, true) + (b.last_crash_reason ? " — " + b.last_crash_reason : "") : "never";
      return el("tr", { data: { backend: b.id } },
        el("td", { cls: "mono", text: b.host, title: b.host }),
        el("td", { cls: "num", text: b.port }),
        el("td", null, badge(b.state)),
        el("td", { cls: "num", text: fmtInt(b.active_conns) }),
        el("td", { cls: "num", text: fmtInt(b.total_conns) }),
        el("td", { cls: "num", text: fmtDuration(b.air_time_s) }),
        el("td", { cls: "num", text: fmtDuration(b.total_up_s) }),
        el("td", { text: fmtTime(b.last_connected, true), title: fmtTime(b.last_connected) }),
        el("td", { cls: "reason", text: crashed }),
        el("td", { cls: "num", text: fmtInt(b.requests) }),
        el("td", { cls: "num", text: fmtBytes(b.bytes_in) + " / " + fmtBytes(b.bytes_out) }),
        el("td", { cls: "num", text: fmtInt(b.errors), title: b.connect_errors + " connect, " + b.response_errors + " response" }),
        el("td", { cls: "num", text: fmtInt(b.retries) }),
        el("td", { cls: "num", text: fmtMs(b.p50_ms) }),
        el("td", { cls: "num", text: fmtMs(b.p99_ms) }));
    }));
  }

  async function loadEvents() {
    eventsLoadedAt = Date.now();
    let data;
    try { data = await api("GET", "/api/events?limit=50"); } catch (e) { return; }
    const tbody = $("#events-table tbody");
    $("#events-empty").hidden = data.events.length > 0;
    $("#events-table").hidden = data.events.length === 0;
    tbody.replaceChildren(...data.events.map((ev) => el("tr", null,
      el("td", { text: fmtTime(ev.at) }),
      el("td", { cls: "mono", text: ev.backend_id }),
      el("td", { text: ev.kind }),
      el("td", { cls: "reason", text: ev.reason }))));
  }

  // ---- configuration ----
  // The form stays disabled until the settings first fill it (an edit or a save before
  // that would compare against nothing), and is aria-busy while settings are on their way.
  let configDirty = false;
  let configLoads = 0;
  function enableConfigForm(on) {
    for (const n of $("#config-form").elements) n.disabled = !on;
  }
  async function loadConfig(force) {
    if (configDirty && !force) return;
    const form = $("#config-form");
    configLoads++;
    form.setAttribute("aria-busy", "true");
    try {
      let data;
      try { data = await api("GET", "/api/settings"); } catch (e) { return; }
      // edits made while the answer was on its way win over it (a save or a reload of the
      // file forces the form to show what is now applied)
      if (configDirty && !force) return;
      for (const [k, v] of Object.entries(data.listener || {})) {
        const out = document.querySelector("#listener [name=" + k + "]");
        if (!out) continue;
        out.value = typeof v === "boolean" ? (v ? "on" : "off") : v === null ? "—" : String(v);
      }
      for (const [k, v] of Object.entries(data.settings)) {
        const input = form.elements.namedItem(k);
        if (!input) continue;
        if (input.type === "checkbox") input.checked = !!v; else input.value = String(v);
        input.dataset.orig = String(v);
        input.classList.remove("invalid");
      }
      configDirty = false;
      enableConfigForm(true);
    } finally {
      if (--configLoads === 0) form.removeAttribute("aria-busy");
    }
  }
  function readConfigChanges() {
    const form = $("#config-form");
    const changes = {};
    for (const input of form.querySelectorAll("input[name], select[name]")) {
      const raw = input.type === "checkbox" ? String(input.checked) : input.value;
      if (raw === input.dataset.orig) continue;
      const kind = input.dataset.kind || "str";
      let v = raw;
      if (kind === "int" || kind === "float") {
        v = raw.trim() === "" ? raw : Number(raw);
        if (typeof v === "number" && Number.isNaN(v)) v = raw;
      } else if (kind === "bool") v = input.checked;
      changes[input.name] = v;
    }
    return changes;
  }
  async function saveConfig(ev) {
    ev.preventDefault();
    const status = $("#config-status");
    for (const n of document.querySelectorAll("#config-form .invalid")) n.classList.remove("invalid");
    const changes = readConfigChanges();
    if (!Object.keys(changes).length) {
      status.textContent = "Nothing changed.";
      status.className = "status-line";
      return;
    }
    try {
      await api("PUT", "/api/settings", changes);
      configDirty = false;
      await loadConfig(true);
      status.textContent = "Saved and applied: " + Object.keys(changes).join(", ");
      status.className = "status-line ok";
      poll();
    } catch (e) {
      status.textContent = "Not saved — " + e.message + " (" + e.code + ")";
      status.className = "status-line err";
      for (const k of Object.keys(changes)) {
        if (e.message.includes(k)) {
          const n = $("#config-form").elements.namedItem(k);
          if (n) n.classList.add("invalid");
        }
      }
    }
  }
  async function reloadConfig() {
    const status = $("#config-status");
    try {
      await api("POST", "/api/reload");
      await loadConfig(true);
      status.textContent = "Configuration file reloaded.";
      status.className = "status-line ok";
    } catch (e) {
      status.textContent = "Reload failed — " + e.message;
      status.className = "status-line err";
    }
  }

  // ---- wiring ----
  async function addBackend(ev) {
    ev.preventDefault();
    setText("#add-error", "");
    const num = (sel) => { const v = $(sel).value.trim(); return v === "" ? undefined : Number(v); };
    const body = { host: $("#add-host").value.trim(), port: num("#add-port") };
    const weight = num("#add-weight"), max = num("#add-max");
    if (weight !== undefined) body.weight = weight;
    if (max !== undefined) body.max_conns = max;
    try {
      await api("POST", "/api/backends", body);
      $("#add-form").reset();
      await poll();
    } catch (e) {
      setText("#add-error", e.message);
    }
  }

  function init() {
    takeTokenFromUrl();
    enableConfigForm(false);
    $("#login-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const token = $("#token-input").value.trim();
      if (!token) return;
      if (await tryLogin(token)) $("#token-input").value = "";
      else showLogin("Wrong token.");
    });
    $("#logout").addEventListener("click", () => showLogin(""));
    $("#add-form").addEventListener("submit", addBackend);
    $("#prompt-form").addEventListener("submit", addFromPrompt);
    $("#config-form").addEventListener("submit", saveConfig);
    $("#config-form").addEventListener("input", () => { configDirty = true; });
    $("#reload-btn").addEventListener("click", reloadConfig);
    for (const th of document.querySelectorAll("#log-table th[data-key]")) {
      th.tabIndex = 0;
      th.addEventListener("click", () => {
        if (sort.key === th.dataset.key) sort.dir = -sort.dir; else { sort.key = th.dataset.key; sort.dir = 1; }
        renderLog();
      });
      th.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); th.click(); }
      });
    }
    document.addEventListener("visibilitychange", () => { if (!document.hidden && pollTimer !== null) poll(); });
    window.addEventListener("hashchange", route);
    window.addEventListener("resize", () => render());
    route();
    if (getToken()) tryLogin(getToken()); else showLogin("");
  }
  document.addEventListener("DOMContentLoaded", init);
})();
