// millrace console: a small single-page app over the public API, with no build step and no
// dependency. The API key lives in sessionStorage (gone when the tab closes) and goes with every
// call as `Authorization: Bearer`; the door decides what each call may see, so a page shows
// what the key's tenant and scopes allow and says so when a call is refused.
"use strict";

const KEY_ITEM = "millrace.key";
const STAGES = ["chunking", "metadata", "embeddings", "storage"];
const FINAL = new Set(["completed", "failed", "cancelled"]);
const SCOPES = ["ingest", "read", "search", "delete", "admin", "llm"];
const PAGE_SIZE = 20;

let consoleConfig = { trace_url: null };
// What this deployment's API offers beyond the core, read once from its own description
// (/openapi.json): cursor pages of jobs, the document listing and runs. A page uses them when
// they are there and says what it lacks when they are not, without calling a missing route.
const capabilities = { jobCursor: false, documentList: false, runs: false };

async function loadCapabilities() {
  const doc = await fetch("/openapi.json").then((r) => (r.ok ? r.json() : null)).catch(() => null);
  if (!doc) return;
  const paths = doc.paths || {};
  const jobList = ((doc.components || {}).schemas || {}).JobList;
  capabilities.jobCursor = !!(jobList && jobList.properties && jobList.properties.next_cursor);
  capabilities.documentList = !!(paths["/v1/documents"] && paths["/v1/documents"].get);
  capabilities.runs = !!(paths["/v1/runs"] && paths["/v1/runs"].get);
}
// The current page's work (timers, requests, event streams) stops when the page changes.
let page = new AbortController();

// ---------------------------------------------------------------------------------------------
// DOM helpers: text always goes in as text, never as HTML.

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function clear(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

function announce(text) {
  const region = document.getElementById("announce");
  region.textContent = "";
  setTimeout(() => { region.textContent = text; }, 50);
}

function badge(status) {
  return h("span", { class: `badge s-${status}` }, status);
}

function fmtTime(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

function fmtMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

function fmtNum(n, digits = 0) {
  return typeof n === "number" ? n.toLocaleString(undefined, { maximumFractionDigits: digits }) : "—";
}

function table(caption, headers, rows, empty) {
  if (!rows.length) return h("p", { class: "muted" }, empty || "Nothing to show.");
  return h("div", { class: "table-wrap" },
    h("table", {},
      caption ? h("caption", {}, caption) : null,
      h("thead", {}, h("tr", {}, headers.map((head) => {
        const [text, cls] = Array.isArray(head) ? head : [head, null];
        return h("th", { scope: "col", class: cls }, text);
      }))),
      h("tbody", {}, rows)));
}

function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  const hintNode = hint ? h("div", { class: "muted small", id: `${id}-hint` }, hint) : null;
  if (hintNode) input.setAttribute("aria-describedby", hintNode.id);
  return h("div", {}, h("label", { for: id }, label), input, hintNode);
}

// ---------------------------------------------------------------------------------------------
// The API.

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function key() {
  return sessionStorage.getItem(KEY_ITEM);
}

function headers(extra) {
  return Object.assign({ Authorization: `Bearer ${key()}` }, extra || {});
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
    else if (body && body.message) message = body.message;
  } catch (_) { /* not JSON: keep the status line */ }
  return new ApiError(response.status, message);
}

async function api(method, path, body, options) {
  const used = key();
  // A late call of a page left by signing out has no key to send.
  if (!used) throw new ApiError(401, "signed out");
  const init = { method, headers: headers(), signal: (options && options.signal) || page.signal };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    // Only if the refused key is still the one signed in (not one replaced meanwhile).
    if (key() === used) {
      sessionStorage.removeItem(KEY_ITEM);
      signIn("The key was refused (401): sign in again.");
    }
    throw new ApiError(401, "signed out");
  }
  if (!response.ok) throw await failure(response);
  if (response.status === 204) return null;
  return response.json();
}

// Server-Sent Events read with fetch, since EventSource cannot send the Authorization header.
async function followEvents(jobId, onEvent, signal) {
  if (!key()) return;
  const response = await fetch(`/v1/jobs/${encodeURIComponent(jobId)}/events`, {
    headers: headers({ Accept: "text/event-stream", "Last-Event-ID": "0" }),
    signal,
  });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const event = { id: null, type: "message", data: "" };
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (name === "id") event.id = text;
        else if (name === "event") event.type = text;
        else if (name === "data") event.data += (event.data ? "\n" : "") + text;
      }
      if (!event.data) continue;
      try {
        onEvent(Object.assign({ id: event.id, type: event.type }, JSON.parse(event.data)));
      } catch (_) { /* a keep-alive or a line that is not JSON */ }
    }
  }
}

// Runs `work`; a failure shows in `where` (a 403 says which scope is missing) unless the page
// changed meanwhile.
async function guarded(where, work) {
  try {
    return await work();
  } catch (err) {
    if (err.name === "AbortError" || (err instanceof ApiError && err.status === 401)) return undefined;
    if (where) where.prepend(problem(err));
    return undefined;
  }
}

function problem(err) {
  if (err instanceof ApiError && err.status === 403) {
    return h("div", { class: "alert", role: "alert" },
      h("strong", {}, "Not allowed for this key (403). "), err.message);
  }
  const status = err instanceof ApiError ? ` (${err.status})` : "";
  return h("div", { class: "alert", role: "alert" }, h("strong", {}, `Request failed${status}: `), err.message);
}

function every(ms, work) {
  let timer = null;
  const signal = page.signal;
  const run = async () => {
    await work();
    if (!signal.aborted) timer = setTimeout(run, ms);
  };
  signal.addEventListener("abort", () => clearTimeout(timer));
  run();
}

// ---------------------------------------------------------------------------------------------
// Layout and routing.

const main = () => document.getElementById("main");

function render(title, ...children) {
  document.title = `${title} · millrace console`;
  clear(main(), h("h1", {}, title), ...children);
}

function signIn(message) {
  page.abort();
  page = new AbortController();
  document.getElementById("nav").hidden = true;
  document.getElementById("who").hidden = true;
  if (location.hash && !location.hash.startsWith("#/signin")) sessionStorage.setItem("millrace.next", location.hash);
  history.replaceState(null, "", "#/signin");
  const input = h("input", { type: "password", name: "key", autocomplete: "off", required: true, spellcheck: "false" });
  const status = h("div");
  const form = h("form", { class: "panel", "aria-labelledby": "signin-title" },
    field("API key", input, "An API key (mr_…). It stays in this tab's session storage and goes with every call."),
    h("p", {}, h("button", { type: "submit" }, "Sign in")),
    status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const candidate = input.value.trim();
    if (!candidate) return;
    // Any route that needs a key tells whether the key is known: 401 is an unknown key, 403 a
    // known key without `read`.
    const response = await fetch("/v1/jobs?limit=1", { headers: { Authorization: `Bearer ${candidate}` } })
      .catch((err) => ({ ok: false, status: 0, statusText: err.message, json: async () => ({}) }));
    if (response.status === 401 || response.status === 0) {
      clear(status, h("div", { class: "alert", role: "alert" },
        response.status === 0 ? `Cannot reach the API: ${response.statusText}` : "That key is not valid (401)."));
      input.focus();
      return;
    }
    sessionStorage.setItem(KEY_ITEM, candidate);
    const next = sessionStorage.getItem("millrace.next") || "#/overview";
    sessionStorage.removeItem("millrace.next");
    location.hash = next;
    route();
  });
  document.title = "Sign in · millrace console";
  clear(main(), h("h1", { id: "signin-title" }, "Sign in"), message ? h("div", { class: "note", role: "status" }, message) : null, form);
  input.focus();
}

const ROUTES = [
  [/^#\/overview$/, overviewPage],
  [/^#\/jobs$/, jobsPage],
  [/^#\/jobs\/(.+)$/, jobPage],
  [/^#\/upload$/, uploadPage],
  [/^#\/documents(?:\/(.+))?$/, documentsPage],
  [/^#\/dlq$/, deadLettersPage],
  [/^#\/search$/, searchPage],
  [/^#\/keys$/, keysPage],
  [/^#\/runs$/, runsPage],
  [/^#\/runs\/(.+)$/, runPage],
];

function route() {
  if (!key()) {
    signIn();
    return;
  }
  page.abort();
  page = new AbortController();
  const hash = location.hash.split("?")[0] || "#/overview";
  const found = ROUTES.find(([pattern]) => pattern.test(hash));
  if (!found) {
    location.replace("#/overview");
    return;
  }
  document.getElementById("nav").hidden = false;
  document.getElementById("who").hidden = false;
  clear(document.getElementById("who-key"), `key ${key().slice(0, 7)}…`);
  for (const link of document.querySelectorAll("#nav a")) {
    const section = link.getAttribute("href");
    if (hash === section || hash.startsWith(`${section}/`)) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const args = hash.match(found[0]).slice(1).map((part) => (part === undefined ? undefined : decodeURIComponent(part)));
  found[1](...args);
  main().focus({ preventScroll: true });
}

function query() {
  const at = location.hash.indexOf("?");
  return new URLSearchParams(at < 0 ? "" : location.hash.slice(at + 1));
}

// ---------------------------------------------------------------------------------------------
// Overview: live figures from /v1/stats, /v1/limits, the jobs list and /metrics.

function overviewPage() {
  const cards = h("div", { class: "grid" });
  const queues = h("section", { "aria-labelledby": "queues-title" }, h("h2", { id: "queues-title" }, "Queues per stage"));
  const breakers = h("section", { "aria-labelledby": "breakers-title" }, h("h2", { id: "breakers-title" }, "Circuit breakers"));
  const limits = h("section", { "aria-labelledby": "limits-title" }, h("h2", { id: "limits-title" }, "Rate limits and budget"));
  const errors = h("div");
  render("Overview", errors, h("p", { class: "muted small" }, "Live: refreshed every 2 seconds."), cards, queues, breakers, limits);

  const samples = [];
  every(2000, async () => {
    const now = performance.now();
    const [stats, lim, metrics, jobs] = await Promise.all([
      api("GET", "/v1/stats").catch((err) => err),
      api("GET", "/v1/limits").catch((err) => err),
      fetch("/metrics", { signal: page.signal }).then((r) => (r.ok ? r.text() : "")).catch(() => ""),
      api("GET", "/v1/jobs?limit=200").catch((err) => err),
    ]);
    if (page.signal.aborted) return;
    clear(errors);
    for (const result of [stats, lim, jobs]) {
      if (result instanceof Error && result.name !== "AbortError" && result.status !== 401) {
        errors.append(problem(result));
        break;
      }
    }
    const finished = promSum(metrics, "millrace_ingestion_jobs_finished_total");
    const stored = jobs instanceof Error ? null : jobs.jobs.reduce((sum, job) => sum + (job.chunks.stored || 0), 0);
    samples.push({ at: now, finished, stored });
    while (samples.length > 6) samples.shift();
    const first = samples[0];
    const seconds = (now - first.at) / 1000;
    const rate = (a, b) => (seconds > 0 && a !== null && b !== null ? Math.max(0, (b - a) / seconds) : null);
    const budget = lim instanceof Error ? null : budgetOf(lim);
    clear(cards,
      stat("Jobs finished / s", fmtNum(rate(first.finished, finished), 2), "all tenants, from /metrics"),
      stat("Chunks stored / s", fmtNum(rate(first.stored, stored), 1), "this key's 200 newest jobs"),
      stat("Jobs queued", fmtNum(promValue(metrics, 'millrace_ingestion_jobs_active{status="queued"}'))),
      stat("Jobs running", fmtNum(promValue(metrics, 'millrace_ingestion_jobs_active{status="running"}'))),
      budget ? stat("LLM spend today", `$${budget.spent_usd.toFixed(5)}`,
        budget.max_daily_cost_usd ? `of $${budget.max_daily_cost_usd} budget` : "no daily budget set",
        budget.max_daily_cost_usd ? budget.spent_usd / budget.max_daily_cost_usd : null) : null);
    if (!(stats instanceof Error)) {
      renderQueues(queues, stats);
      renderBreakers(breakers, stats);
    }
    if (!(lim instanceof Error)) renderLimits(limits, lim);
  });
}

function stat(label, value, note, share) {
  const meter = typeof share === "number"
    ? h("div", { class: `meter${share >= 0.9 ? " hot" : ""}`, role: "meter", "aria-label": label,
      "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": Math.round(share * 100) },
    h("span"))
    : null;
  if (meter) meter.firstChild.style.width = `${Math.min(100, share * 100)}%`;
  return h("div", { class: "stat" }, h("div", { class: "label" }, label), h("div", { class: "value" }, value),
    note ? h("div", { class: "muted small" }, note) : null, meter);
}

function promSum(text, name) {
  if (!text) return null;
  let sum = 0;
  let found = false;
  for (const line of text.split("\n")) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) {
      sum += Number(line.slice(line.lastIndexOf(" ") + 1));
      found = true;
    }
  }
  return found ? sum : null;
}

function promValue(text, series) {
  if (!text) return null;
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : null;
}

function renderQueues(section, stats) {
  const rows = [];
  for (const service of stats.services) {
    // Ingestion reports the chunking stream it feeds; the chunking row shows it.
    if (service.service === "ingestion" && service.reachable) continue;
    if (!service.reachable) {
      rows.push(h("tr", {}, h("th", { scope: "row" }, service.service), h("td", { colspan: 6, class: "muted" }, `unreachable: ${service.error || ""}`)));
      continue;
    }
    for (const queue of service.queues || []) {
      const conc = service.concurrency || { in_use: 0, limit: 0 };
      rows.push(h("tr", {},
        h("th", { scope: "row" }, service.service),
        h("td", { class: "mono hide-narrow" }, queue.stream),
        h("td", { class: "num" }, fmtNum(queue.length)),
        h("td", { class: "num" }, fmtNum(queue.lag)),
        h("td", { class: "num" }, fmtNum(queue.pending)),
        h("td", { class: "num" }, `${conc.in_use} / ${conc.limit}`),
        h("td", { class: "num" }, fmtNum(queue.dead_letters))));
    }
  }
  clear(section, section.firstChild, table(null,
    ["Stage", ["Stream", "hide-narrow"], ["Length", "num"], ["Lag", "num"], ["Pending", "num"], ["In flight", "num"], ["Dead letters", "num"]],
    rows, "No stage reports a queue."));
}

function renderBreakers(section, stats) {
  const rows = [];
  for (const service of stats.services) {
    for (const breaker of service.breakers || []) {
      rows.push(h("tr", {}, h("th", { scope: "row" }, service.service), h("td", {}, breaker.name), h("td", {}, badge(breaker.state))));
    }
  }
  clear(section, section.firstChild, table(null, ["Service", "Breaker", "State"], rows, "No circuit breakers."));
}

function budgetOf(limits) {
  const gateway = limits.services && limits.services["llm-gateway"];
  return gateway && gateway.budget ? gateway.budget : null;
}

function renderLimits(section, limits) {
  const gateway = (limits.services || {})["llm-gateway"] || {};
  const rows = (gateway.upstreams || []).map((upstream) => {
    const limiter = upstream.rate_limiter;
    const use = (used, quota) => (quota ? `${fmtNum(used)} / ${fmtNum(quota)}` : `${fmtNum(used)} (no limit)`);
    return h("tr", {},
      h("th", { scope: "row" }, upstream.name),
      h("td", { class: "num" }, limiter ? use(limiter.requests_in_window, limiter.rpm) : "no limiter"),
      h("td", { class: "num" }, limiter ? use(limiter.tokens_in_window, limiter.tpm) : "—"),
      h("td", { class: "num" }, `${upstream.in_flight} / ${upstream.max_concurrency}`),
      h("td", {}, badge(upstream.breaker ? upstream.breaker.state : "closed")));
  });
  const unreachable = gateway.reachable === false ? h("p", { class: "alert" }, `llm-gateway unreachable: ${gateway.error || ""}`) : null;
  clear(section, section.firstChild, unreachable,
    h("p", { class: "muted small" }, "LLM upstreams: requests and tokens in the last minute against their quotas."),
    table(null,
      ["Upstream", ["RPM", "num"], ["TPM", "num"], ["In flight", "num"], "Breaker"], rows, "The gateway has no upstream configured."));
}

// ---------------------------------------------------------------------------------------------
// Jobs: filters, pages and live status.

function jobsPage() {
  const params = query();
  const cursorMode = capabilities.jobCursor;
  const status = h("select", { name: "status" },
    ["", "queued", "running", "completed", "failed", "cancelled"].map((s) => h("option", { value: s, selected: (params.get("status") || "") === s }, s || "any")));
  const doc = h("input", { name: "document", value: params.get("document") || "", placeholder: "document id contains" });
  const collection = h("input", { name: "collection", value: params.get("collection") || "", placeholder: "any" });
  const tenant = h("input", { name: "tenant", value: params.get("tenant") || "", placeholder: "admin keys: another tenant" });
  const form = h("form", { class: "inline panel", role: "search", "aria-label": "Filter jobs" },
    field("Status", status), cursorMode ? field("Collection", collection) : field("Document", doc), field("Tenant", tenant),
    h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    if (status.value) next.set("status", status.value);
    if (!cursorMode && doc.value.trim()) next.set("document", doc.value.trim());
    if (cursorMode && collection.value.trim()) next.set("collection", collection.value.trim());
    if (params.get("run_id")) next.set("run_id", params.get("run_id"));
    if (tenant.value.trim()) next.set("tenant", tenant.value.trim());
    location.hash = `#/jobs${next.toString() ? `?${next}` : ""}`;
  });
  const list = h("div", { "aria-live": "polite" });
  const note = h("p", { class: "muted small" }, cursorMode
    ? `${PAGE_SIZE} jobs per page, newest first; unfinished jobs update live.`
    : `The newest 500 jobs matching the filter, ${PAGE_SIZE} per page; unfinished jobs update live.`);
  render("Jobs", form, note, params.get("run_id") ? h("p", {}, `Jobs of run ${params.get("run_id")}.`) : null, list);
  guarded(list, async () => {
    const search = new URLSearchParams();
    for (const name of ["status", "tenant"].concat(cursorMode ? ["collection", "run_id", "cursor"] : [])) {
      if (params.get(name)) search.set(name, params.get(name));
    }
    let shown;
    let pagerNode;
    let caption;
    if (cursorMode) {
      search.set("limit", String(PAGE_SIZE));
      const body = await api("GET", `/v1/jobs?${search}`);
      shown = body.jobs;
      caption = `${shown.length} jobs on this page`;
      pagerNode = cursorPager("#/jobs", params, body.next_cursor, "Job pages");
    } else {
      search.set("limit", "500");
      const body = await api("GET", `/v1/jobs?${search}`);
      const needle = (params.get("document") || "").toLowerCase();
      const jobs = body.jobs.filter((job) => !needle || job.document_id.toLowerCase().includes(needle));
      const pages = Math.max(1, Math.ceil(jobs.length / PAGE_SIZE));
      const pageNo = Math.min(pages, Math.max(1, Number(params.get("page")) || 1));
      shown = jobs.slice((pageNo - 1) * PAGE_SIZE, pageNo * PAGE_SIZE);
      caption = `${jobs.length} jobs`;
      pagerNode = pager(pageNo, pages, params);
    }
    clear(list, table(caption, ["Job", "Document", "Status", ["Progress", "hide-narrow"], ["Chunks", "num"], ["Created", "hide-narrow"]],
      shown.map((job) => jobRow(job)), "No jobs match."), pagerNode);
    // Live status: follow the unfinished jobs on this page; a page (20) stays under the API's
    // readers per key (MILLRACE_MAX_WATCHERS_PER_CLIENT, 32 by default).
    for (const job of shown.filter((j) => !FINAL.has(j.status))) {
      followEvents(job.job_id, async (event) => {
        if (event.type === "batch" || FINAL.has(event.type) || event.type === "chunked" || event.type === "retried") {
          const fresh = await api("GET", `/v1/jobs/${encodeURIComponent(job.job_id)}`).catch(() => null);
          const row = list.querySelector(`tr[data-job="${CSS.escape(job.job_id)}"]`);
          if (fresh && row) row.replaceWith(jobRow(fresh));
        }
      }, page.signal).catch(() => {});
    }
  });
}

// Links to the first page and the next one of a cursor-paginated listing (the browser's Back
// goes to the page before).
function cursorPager(base, params, next, label) {
  if (!next && !params.get("cursor")) return null;
  const link = (cursor, text) => {
    const p = new URLSearchParams(params);
    if (cursor) p.set("cursor", cursor);
    else p.delete("cursor");
    return h("a", { href: `${base}${p.toString() ? `?${p}` : ""}`, class: "button secondary" }, text);
  };
  return h("nav", { "aria-label": label, class: "inline" },
    params.get("cursor") ? link(null, "First page") : null, " ", next ? link(next, "Next page") : h("span", { class: "muted" }, "Last page"));
}

function jobRow(job) {
  return h("tr", { "data-job": job.job_id },
    h("td", { class: "mono" }, h("a", { href: `#/jobs/${encodeURIComponent(job.job_id)}` }, job.job_id.slice(0, 12))),
    h("td", { class: "mono" }, job.document_id),
    h("td", { "data-status": job.status }, badge(job.status)),
    h("td", { class: "hide-narrow" }, h("progress", { max: 100, value: job.progress, "aria-label": `progress of ${job.job_id}` }), ` ${job.progress}%`),
    h("td", { class: "num" }, `${job.chunks.stored} / ${job.chunks.total}`),
    h("td", { class: "hide-narrow" }, fmtTime(job.created_at)));
}

function pager(current, pages, params) {
  if (pages <= 1) return null;
  const link = (n, label) => {
    const next = new URLSearchParams(params);
    next.set("page", String(n));
    return h("a", { href: `#/jobs?${next}`, class: "button secondary" }, label);
  };
  return h("nav", { "aria-label": "Job pages", class: "inline" },
    current > 1 ? link(current - 1, "Previous page") : null, ` Page ${current} of ${pages} `,
    current < pages ? link(current + 1, "Next page") : null);
}

// ---------------------------------------------------------------------------------------------
// Job detail: summary, stage timeline, events, chunks, error and trace.

function jobPage(jobId) {
  const summary = h("section", { class: "panel", "aria-labelledby": "summary-title" }, h("h2", { id: "summary-title" }, "Summary"));
  const timeline = h("section", { class: "panel", "aria-labelledby": "timeline-title" }, h("h2", { id: "timeline-title" }, "Stage timeline"));
  const events = h("section", { class: "panel", "aria-labelledby": "events-title" }, h("h2", { id: "events-title" }, "Events"));
  const chunks = h("section", { class: "panel", "aria-labelledby": "chunks-title" }, h("h2", { id: "chunks-title" }, "Chunks"));
  const errors = h("div");
  render(`Job ${jobId}`, errors, summary, timeline, events, chunks);
  const seen = [];
  let job = null;
  let chunksShown = false;
  const refresh = async () => {
    job = await api("GET", `/v1/jobs/${encodeURIComponent(jobId)}`);
    renderSummary(summary, job);
    renderTimeline(timeline, job, seen);
    if (job.status === "completed" && !chunksShown) {
      chunksShown = true;
      guarded(chunks, () => renderDocumentChunks(chunks, job.document_id));
    } else if (job.status !== "completed" && !chunksShown) {
      clear(chunks, chunks.firstChild, h("p", { class: "muted" }, "Chunks show once the job has completed."));
    }
  };
  guarded(errors, async () => {
    await refresh();
    let pending = null;
    await followEvents(jobId, (event) => {
      seen.push(event);
      renderEvents(events, seen);
      renderTimeline(timeline, job, seen);
      // One refresh of the record per burst of events.
      if (!pending) pending = setTimeout(() => { pending = null; guarded(errors, refresh); }, 300);
    }, page.signal);
    if (!page.signal.aborted) await refresh();
  });
}

function renderSummary(section, job) {
  const trace = job.trace_id
    ? (consoleConfig.trace_url
      ? h("a", { href: consoleConfig.trace_url.replace("{trace_id}", job.trace_id), rel: "noopener noreferrer", target: "_blank" }, job.trace_id)
      : h("code", {}, job.trace_id))
    : "—";
  const pairs = [
    ["Status", badge(job.status)],
    ["Progress", `${job.progress}%`],
    ["Document", h("a", { href: `#/documents/${encodeURIComponent(job.document_id)}` }, job.document_id)],
    ["Version", job.version],
    ["Tenant / collection", `${job.tenant_id || "—"} / ${job.collection || "—"}`],
    ["Content", `${job.content_type || "—"}, ${fmtNum(job.content_bytes)} bytes`],
    ["Source", job.source || job.url || "—"],
    job.http_status ? ["Fetch", `HTTP ${job.http_status}`] : null,
    ["Chunks", `${job.chunks.stored} stored of ${job.chunks.total} (${job.chunks.reused || 0} reused, ${job.chunks.metadata_failed || 0} without LLM metadata)`],
    ["Batches", `${job.batches_stored ?? "—"} / ${job.batches_total ?? "—"}`],
    ["Attempts", job.attempts === undefined ? "—" : `${job.attempts}${job.last_attempt_at ? `, last ${fmtTime(job.last_attempt_at)}` : ""}`],
    job.run_id ? ["Run", h("a", { href: `#/runs/${encodeURIComponent(job.run_id)}` }, job.run_id)] : null,
    ["LLM use", job.llm ? `${fmtNum(job.llm.prompt_tokens)} + ${fmtNum(job.llm.completion_tokens)} tokens, $${(job.llm.cost_usd || 0).toFixed(5)}` : "—"],
    ["Created", fmtTime(job.created_at)],
    ["Finished", fmtTime(job.finished_at)],
    ["Trace", trace],
  ];
  const actions = h("p", {});
  if (!FINAL.has(job.status)) {
    actions.append(h("button", { type: "button", class: "danger", onclick: async (event) => {
      event.target.disabled = true;
      await guarded(section, () => api("DELETE", `/v1/jobs/${encodeURIComponent(job.job_id)}`));
      announce("Cancel requested.");
    } }, "Cancel job"));
  }
  clear(section, section.firstChild,
    job.error ? h("div", { class: "alert", role: "alert" }, h("strong", {}, `Failed at ${job.error.stage}: `), job.error.message) : null,
    h("dl", { class: "kv" }, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])), actions);
}

function eventTime(event) {
  const ms = event.id ? Number(event.id.split("-")[0]) : NaN;
  return Number.isFinite(ms) ? ms : (event.at ? Date.parse(event.at) : NaN);
}

// Per stage of the job's latest attempt, from its events: when the stage's input was ready,
// and for each piece of work it finished (the document for chunking, a batch for the others)
// when its worker took it up (`started_ms`) and when it finished (the event's stream id, in
// milliseconds). Input is ready when the step before finished: the job was queued (or retried)
// for chunking, chunked for metadata and embeddings, both halves of a batch done for storage.
// A dead-letter retry (`retried`) starts a new attempt, whose work is ready from the retry on.
function stageSpans(events) {
  const retry = events.map((e) => e.type).lastIndexOf("retried");
  const origin = retry >= 0 ? events[retry] : events.find((e) => e.type === "queued");
  if (!origin) return [];
  const from = eventTime(origin);
  const attempt = events.slice(Math.max(retry, 0));
  // A piece of work: `started` is null for events written before they carried it. The worker's
  // clock and Redis's may differ a little, so a start is kept within [ready, finished].
  const work = (event, ready) => {
    const finished = eventTime(event);
    const started = typeof event.started_ms === "number" ? Math.min(Math.max(event.started_ms, ready), finished) : null;
    return { ready, started, finished };
  };
  const spans = [];
  const chunkedAny = events.filter((e) => e.type === "chunked").pop();
  const chunked = attempt.find((e) => e.type === "chunked");
  if (retry < 0 || chunked || !chunkedAny) spans.push({ stage: "chunking", ready: from, work: chunked ? [work(chunked, from)] : [] });
  const batchesOf = (list, stage) => list.filter((e) => e.type === "batch" && e.stage === stage);
  if (chunkedAny) {
    const ready = Math.max(eventTime(chunkedAny), from);
    for (const stage of ["metadata", "embeddings"]) {
      spans.push({ stage, ready, work: batchesOf(attempt, stage).map((e) => work(e, ready)) });
    }
  }
  // A half done in an earlier attempt still counts: a retry puts back only what a batch lacks.
  const halvesDone = {};
  for (const stage of ["metadata", "embeddings"]) {
    for (const e of batchesOf(events, stage)) (halvesDone[e.batch] = halvesDone[e.batch] || {})[stage] = eventTime(e);
  }
  const readyOfBatch = {};
  for (const [batch, done] of Object.entries(halvesDone)) {
    if (done.metadata !== undefined && done.embeddings !== undefined) readyOfBatch[batch] = Math.max(done.metadata, done.embeddings, from);
  }
  const readies = Object.values(readyOfBatch);
  if (readies.length) {
    const stored = batchesOf(attempt, "storage");
    spans.push({ stage: "storage", ready: Math.min(...readies), work: stored.map((e) => work(e, readyOfBatch[e.batch] ?? Math.min(...readies))) });
  }
  // A retry puts back only the steps the job still lacked: once the attempt has ended, a stage
  // with nothing in it had nothing to do.
  const ended = attempt.some((e) => FINAL.has(e.type));
  for (const span of spans) Object.assign(span, stageTimes(span));
  return spans.filter((span) => retry < 0 || !ended || span.work.length);
}

// A stage's times: queued, from its input being ready to its worker taking up the first piece of
// work; worked, the time at least one piece was being worked on (the union of the pieces'
// [started, finished]: workers take batches in parallel, so a sum would count time twice); in
// stage, from ready to the last result. Null where the events do not say.
function stageTimes(span) {
  const finished = span.work.map((w) => w.finished);
  const last = finished.length ? Math.max(...finished) : null;
  const known = span.work.length > 0 && span.work.every((w) => w.started !== null);
  const intervals = known ? span.work.map((w) => [w.started, w.finished]).sort((a, b) => a[0] - b[0]) : [];
  const merged = [];
  for (const [a, b] of intervals) {
    const top = merged[merged.length - 1];
    if (top && a <= top[1]) top[1] = Math.max(top[1], b);
    else merged.push([a, b]);
  }
  return {
    last,
    merged,
    queued: known ? merged[0][0] - span.ready : null,
    worked: known ? merged.reduce((sum, [a, b]) => sum + (b - a), 0) : null,
    inStage: last === null ? null : last - span.ready,
  };
}

function renderTimeline(section, job, events) {
  const spans = stageSpans(events);
  if (!spans.length) {
    clear(section, section.firstChild, h("p", { class: "muted" }, "No events yet."));
    return;
  }
  const origin = Math.min(...spans.map((s) => s.ready));
  const end = Math.max(origin + 1, ...spans.map((s) => s.last || s.ready), ...events.map(eventTime).filter(Number.isFinite));
  const pct = (t) => `${(((t - origin) / (end - origin)) * 100).toFixed(2)}%`;
  const bar = (cls, from, to) => {
    const node = h("span", { class: cls });
    node.style.left = pct(from);
    node.style.width = `max(2px, calc(${pct(to)} - ${pct(from)}))`;
    return node;
  };
  const rows = [];
  const tableRows = [];
  let unknown = false;
  for (const span of spans) {
    const label = span.last === null
      ? `${span.stage}: waiting since ${fmtMs(span.ready - origin)} after the start, no result yet`
      : span.queued === null
        ? `${span.stage}: ${fmtMs(span.inStage)} in stage; queued and worked not recorded`
        : `${span.stage}: queued ${fmtMs(span.queued)}, worked ${fmtMs(span.worked)}, ${fmtMs(span.inStage)} in stage`;
    const track = h("div", { class: "track", role: "img", "aria-label": label });
    if (span.queued !== null) {
      track.append(bar("wait", span.ready, span.merged[0][0]), ...span.merged.map(([a, b]) => bar("work", a, b)));
    } else if (span.last !== null) {
      unknown = true;
      track.append(bar("unknown", span.ready, span.last));
    }
    rows.push(h("div", {}, span.stage), track);
    tableRows.push(h("tr", { "data-stage": span.stage }, h("th", { scope: "row" }, span.stage),
      h("td", { class: "num", "data-time": "queued" }, fmtMs(span.queued)),
      h("td", { class: "num", "data-time": "worked" }, fmtMs(span.worked)),
      h("td", { class: "num", "data-time": "in-stage" }, fmtMs(span.inStage))));
  }
  const retried = events.some((e) => e.type === "retried");
  clear(section, section.firstChild,
    h("div", { class: "timeline" }, rows),
    h("div", { class: "legend", "aria-hidden": "true" },
      h("span", {}, h("i", { class: "key-wait" }), "queued: input ready → first work taken up"),
      h("span", {}, h("i", { class: "key-work" }), "worked: a batch (chunking: the document) being worked on"),
      unknown ? h("span", {}, h("i", { class: "key-unknown" }), "in stage, not split (older events)") : null),
    table("Time per stage", ["Stage", ["Queued", "num"], ["Worked", "num"], ["In stage", "num"]], tableRows),
    h("p", { class: "muted small" },
      "From the job's events. A stage's input is ready when the step before it finished (storage: when both halves of a batch are done). ",
      "Queued: from then until its worker took up its first batch (chunking: the document). ",
      "Worked: the time at least one of its batches was being worked on, from a worker taking it up to its result. ",
      "In stage: from input ready to the last result; the rest of it, later batches waited. ",
      retried ? "The job was retried: this is its latest attempt, from the retry. " : "",
      `Total ${fmtMs(end - origin)}.`));
}

function renderEvents(section, events) {
  const origin = events.length ? eventTime(events[0]) : NaN;
  const clock = { hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3, hour12: false };
  const rows = events.map((event) => h("tr", {},
    h("td", { class: "mono" }, event.at ? new Date(event.at).toLocaleTimeString(undefined, clock) : event.id),
    h("td", { class: "num" }, Number.isFinite(origin) ? `+${fmtMs(eventTime(event) - origin)}` : ""),
    h("td", {}, badge(event.type)),
    h("td", {}, event.stage || ""),
    h("td", { class: "num" }, event.batch ?? ""),
    h("td", { class: "num" }, event.chunks ?? ""),
    // From its worker taking the work up to this result (at least 0: two clocks).
    h("td", { class: "num hide-narrow" }, typeof event.started_ms === "number" ? fmtMs(Math.max(0, eventTime(event) - event.started_ms)) : ""),
    h("td", {}, event.error || "")));
  clear(section, section.firstChild, table(null, ["Time", ["Since queued", "num"], "Event", "Stage", ["Batch", "num"], ["Chunks", "num"], ["Worked", "num hide-narrow"], "Error"], rows));
}

// A document's chunks (its visible version) in `section`, in order, a page at a time from
// GET /v1/documents/{id}/chunks, with a "Load more chunks" button while pages are left. A new
// version made visible between pages (409 for the old version's cursor) lists from the start.
const CHUNK_PAGE_SIZE = 100;

async function renderDocumentChunks(section, documentId) {
  const status = h("p", { class: "muted small", role: "status" });
  const list = h("div");
  const more = h("button", { type: "button", class: "secondary" }, "Load more chunks");
  const controls = h("p", { hidden: true }, more);
  let cursor = null;
  let shown = 0;
  const item = (chunk) => h("details", { class: "hit", open: shown === 0 && chunk.chunk_index === 0, "data-chunk": chunk.chunk_index },
    h("summary", {}, `Chunk ${chunk.chunk_index}: ${chunk.text.slice(0, 90)}${chunk.text.length > 90 ? "…" : ""}`),
    h("p", {}, chunk.text),
    h("pre", { "aria-label": `metadata of chunk ${chunk.chunk_index}` }, JSON.stringify(chunk.metadata, null, 2)));
  const load = async () => {
    const params = new URLSearchParams({ limit: String(CHUNK_PAGE_SIZE) });
    if (cursor) params.set("cursor", cursor);
    let body;
    try {
      body = await api("GET", `/v1/documents/${encodeURIComponent(documentId)}/chunks?${params}`);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 409 && cursor)) throw err;
      cursor = null;
      shown = 0;
      list.replaceChildren();
      announce(`A new version of ${documentId} is visible: its chunks are listed again from the first.`);
      return load();
    }
    append(list, body.chunks.map(item));
    shown += body.chunks.length;
    cursor = body.next_cursor;
    const count = (n) => `${n} chunk${n === 1 ? "" : "s"}`;
    status.textContent = cursor
      ? `${count(shown)} of version ${body.version} of ${documentId} shown; more to load.`
      : `Version ${body.version} of ${documentId} has ${count(shown)}.`;
    controls.hidden = !cursor;
    if (!shown) list.replaceChildren(h("p", { class: "muted" }, "No chunks visible."));
  };
  more.addEventListener("click", () => {
    const first = shown;
    more.disabled = true;
    guarded(section, async () => {
      await load();
      // Keyboard and screen reader users go on from the first chunk just loaded.
      const next = list.querySelector(`details:nth-of-type(${first + 1}) summary`);
      if (next) next.focus();
    }).finally(() => { more.disabled = false; });
  });
  clear(section, section.firstChild, status, list, controls);
  await load();
}

// ---------------------------------------------------------------------------------------------
// Upload: files (drag and drop or picker) and URLs, each followed to its end.

function uploadPage() {
  // The label below is the keyboard's way in (Enter or Space), so the input itself takes no tab stop.
  const files = h("input", { type: "file", multiple: true, class: "visually-hidden", id: "upload-files", tabindex: -1 });
  const drop = h("div", { class: "drop", id: "drop" },
    h("p", {}, "Drop files here, or ", h("label", { for: "upload-files", class: "button secondary", tabindex: 0, role: "button" }, "choose files"), "."),
    h("p", { class: "muted small" }, "Text, Markdown, HTML, PDF and DOCX."), files);
  const urls = h("textarea", { name: "urls", rows: 3, placeholder: "https://example.com/page.html" });
  const collection = h("input", { name: "collection", placeholder: "default", pattern: "[A-Za-z0-9._\\-]{1,64}" });
  const urlForm = h("form", { class: "panel" }, field("URLs, one per line", urls),
    h("p", {}, h("button", { type: "submit" }, "Submit URLs")));
  const metadata = h("textarea", { name: "metadata", rows: 2, placeholder: '{"team": "research"}', spellcheck: "false" });
  const where = h("div", { class: "panel grid" },
    field("Collection", collection, "For the files and URLs below; optional (default: default). A key may be limited to some collections."),
    field("Metadata (JSON object)", metadata, "Optional; copied into every chunk."));
  // The metadata as the API takes it, or an error shown where it was typed.
  const metadataText = () => {
    const text = metadata.value.trim();
    if (!text) return null;
    let value;
    try {
      value = JSON.parse(text);
    } catch (err) {
      value = undefined;
    }
    if (!value || typeof value !== "object" || Array.isArray(value)) {
      metadata.setCustomValidity("Metadata must be a JSON object, such as {\"team\": \"research\"}.");
      metadata.reportValidity();
      throw new Error("metadata is not a JSON object");
    }
    metadata.setCustomValidity("");
    return JSON.stringify(value);
  };
  metadata.addEventListener("input", () => metadata.setCustomValidity(""));
  const progress = h("section", { "aria-labelledby": "progress-title" }, h("h2", { id: "progress-title" }, "Submitted"));
  const list = h("ul", { class: "panel", "aria-live": "polite", id: "uploads" });
  progress.append(list);
  render("Upload", where, h("section", { class: "panel", "aria-label": "Files" }, drop), urlForm, progress);
  const label = drop.querySelector("label");
  label.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      files.click();
    }
  });

  const submitFile = (file) => {
    let meta;
    try {
      meta = metadataText();
    } catch (_) {
      return;
    }
    const form = new FormData();
    if (meta) form.append("metadata", meta);
    form.append("file", file, file.name);
    form.append("document_id", file.name);
    form.append("source", file.name);
    if (collection.value.trim()) form.append("collection", collection.value.trim());
    track(list, file.name, api("POST", "/v1/ingest", form));
  };
  files.addEventListener("change", () => {
    for (const file of files.files) submitFile(file);
    files.value = "";
  });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    for (const file of event.dataTransfer.files) submitFile(file);
  });
  urlForm.addEventListener("submit", (event) => {
    event.preventDefault();
    let meta;
    try {
      meta = metadataText();
    } catch (_) {
      return;
    }
    for (const url of urls.value.split(/\s+/).filter(Boolean)) {
      const body = { url };
      if (meta) body.metadata = JSON.parse(meta);
      if (collection.value.trim()) body.collection = collection.value.trim();
      track(list, url, api("POST", "/v1/ingest", body));
    }
    urls.value = "";
  });
}

function track(list, name, submission) {
  const state = h("span", {}, badge("submitting"));
  const bar = h("progress", { max: 100, value: 0, "aria-label": `progress of ${name}` });
  const item = h("li", { class: "upload", "data-name": name }, h("strong", {}, name), " ", state, " ", bar);
  list.append(item);
  guarded(item, async () => {
    const accepted = await submission;
    const link = h("a", { href: `#/jobs/${encodeURIComponent(accepted.job_id)}` }, `job ${accepted.job_id.slice(0, 12)}`);
    item.append(" ", link);
    const update = async () => {
      const job = await api("GET", `/v1/jobs/${encodeURIComponent(accepted.job_id)}`);
      clear(state, badge(job.status), job.error ? ` ${job.error.stage}: ${job.error.message}` : "");
      bar.value = job.progress;
      if (FINAL.has(job.status)) announce(`${name}: ${job.status}`);
      return job;
    };
    await update();
    await followEvents(accepted.job_id, () => update().catch(() => {}), page.signal);
    await update();
  });
}

// ---------------------------------------------------------------------------------------------
// Documents: the visible version, the versions submitted, chunks, delete.

function documentsPage(documentId) {
  const input = h("input", { name: "document_id", value: documentId || "", required: true, spellcheck: "false" });
  const form = h("form", { class: "inline panel", role: "search", "aria-label": "Find a document" },
    field("Document id", input), h("button", { type: "submit" }, "Open"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.value.trim()) location.hash = `#/documents/${encodeURIComponent(input.value.trim())}`;
  });
  const body = h("div");
  render("Documents", form, body);
  if (!documentId) {
    if (!capabilities.documentList) {
      body.append(h("p", { class: "muted" }, "Open a document by its id (the job list names them). This API has no document listing."));
      return;
    }
    const params = query();
    guarded(body, async () => {
      const search = new URLSearchParams({ limit: String(PAGE_SIZE) });
      for (const name of ["document_id_prefix", "cursor", "collection"]) if (params.get(name)) search.set(name, params.get(name));
      const list = await api("GET", `/v1/documents?${search}`);
      const rows = list.documents.map((doc) => h("tr", {},
        h("td", { class: "mono" }, h("a", { href: `#/documents/${encodeURIComponent(doc.document_id)}` }, doc.document_id)),
        h("td", { class: "num" }, doc.version), h("td", { class: "num" }, doc.chunk_count),
        h("td", { class: "hide-narrow" }, doc.content_type), h("td", { class: "hide-narrow" }, doc.collection || ""),
        h("td", { class: "hide-narrow" }, fmtTime(doc.updated_at))));
      clear(body, table("Documents, by id", ["Document", ["Version", "num"], ["Chunks", "num"], ["Type", "hide-narrow"], ["Collection", "hide-narrow"], ["Updated", "hide-narrow"]],
        rows, "No documents."), cursorPager("#/documents", params, list.next_cursor, "Document pages"));
    });
    return;
  }
  guarded(body, async () => {
    const [doc, jobs] = await Promise.all([
      api("GET", `/v1/documents/${encodeURIComponent(documentId)}`),
      api("GET", "/v1/jobs?limit=500").catch(() => ({ jobs: [] })),
    ]);
    const versions = jobs.jobs.filter((job) => job.document_id === documentId)
      .map((job) => h("tr", {}, h("td", { class: "num" }, job.version ?? "—"), h("td", {}, badge(job.status)),
        h("td", { class: "mono" }, h("a", { href: `#/jobs/${encodeURIComponent(job.job_id)}` }, job.job_id.slice(0, 12))),
        h("td", {}, fmtTime(job.created_at))));
    const del = h("button", { type: "button", class: "danger", onclick: async () => {
      if (!window.confirm(`Delete ${documentId} and all its chunks?`)) return;
      del.disabled = true;
      await guarded(body, async () => {
        await api("DELETE", `/v1/documents/${encodeURIComponent(documentId)}`);
        clear(body, h("div", { class: "note", role: "status" }, `${documentId} deleted.`));
        announce(`${documentId} deleted`);
      });
    } }, "Delete document");
    const chunks = h("section", { class: "panel", "aria-labelledby": "doc-chunks" }, h("h2", { id: "doc-chunks" }, "Chunks"));
    clear(body,
      h("section", { class: "panel", "aria-labelledby": "doc-title" }, h("h2", { id: "doc-title" }, "Visible version"),
        h("dl", { class: "kv" }, [
          ["Document", doc.document_id], ["Version", doc.version], ["Collection", doc.collection || "—"],
          ["Chunks", doc.chunk_count], ["Content type", doc.content_type], ["Source", doc.source || "—"],
          ["Content hash", h("code", {}, doc.content_hash)], ["Updated", fmtTime(doc.updated_at)],
        ].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
        h("h3", {}, "Metadata"), h("pre", {}, JSON.stringify(doc.metadata, null, 2)),
        h("p", {}, del)),
      h("section", { class: "panel", "aria-labelledby": "doc-versions" }, h("h2", { id: "doc-versions" }, "Versions submitted"),
        table(null, [["Version", "num"], "Status", "Job", "Submitted"], versions, "No job of this document among the newest 500.")),
      chunks);
    guarded(chunks, () => renderDocumentChunks(chunks, documentId));
  });
}

// ---------------------------------------------------------------------------------------------
// Dead letters.

function deadLettersPage() {
  const body = h("div", { "aria-live": "polite" });
  const report = h("div");
  render("Dead letters", report, body);
  const load = () => guarded(body, async () => {
    const list = await api("GET", "/v1/dlq?limit=100");
    const empty = list.stages.filter((stage) => stage.count === 0).map((stage) => stage.stage);
    const sections = list.stages.filter((stage) => stage.count > 0).map((stage) => {
      const rows = stage.entries.map((entry) => h("tr", { "data-entry": entry.id },
        h("td", { class: "mono" }, entry.id),
        h("td", { class: "mono" }, h("a", { href: `#/jobs/${encodeURIComponent(entry.job_id)}` }, entry.job_id.slice(0, 12))),
        h("td", { class: "num" }, entry.batch ?? "—"),
        h("td", { class: "num" }, entry.deliveries),
        h("td", {}, entry.error),
        h("td", {}, entry.job_status ? badge(entry.job_status) : "expired"),
        h("td", {}, h("button", { type: "button", "aria-label": `Retry ${entry.id}`, onclick: () => retry(stage.stage, [entry.id]) }, "Retry"))));
      return h("section", { class: "panel", "aria-labelledby": `dlq-${stage.stage}` },
        h("h2", { id: `dlq-${stage.stage}` }, `${stage.stage} (${stage.count})`),
        table(null, ["Entry", "Job", ["Batch", "num"], ["Deliveries", "num"], "Error", "Job status", ""], rows, "No dead letters."),
        stage.entries.length ? h("p", {}, h("button", { type: "button", class: "secondary", onclick: () => retry(stage.stage, null) }, `Retry all of ${stage.stage}`)) : null);
    });
    clear(body, h("p", { class: "muted" }, `${list.total} dead letters in all`, empty.length ? `; none in ${empty.join(", ")}.` : "."), sections);
  });
  const retry = (stage, ids) => guarded(report, async () => {
    const result = await api("POST", `/v1/dlq/${stage}/retry`, ids ? { ids } : {});
    const refused = result.refused.map((r) => `${r.id}: ${r.reason || r.error || JSON.stringify(r)}`);
    clear(report, h("div", { class: "note", role: "status" },
      `Retried ${result.retried.length} of ${stage}`, refused.length ? `; refused ${refused.join(", ")}` : "", "."));
    announce(`Retried ${result.retried.length} dead letters`);
    await load();
  });
  load();
}

// ---------------------------------------------------------------------------------------------
// Search playground.

function searchPage() {
  const q = h("input", { name: "query", required: true, type: "search", size: 40 });
  const mode = h("select", { name: "mode" }, ["hybrid", "vector", "keyword"].map((m) => h("option", { value: m }, m)));
  const group = h("select", { name: "group_by" }, ["document", "chunk"].map((m) => h("option", { value: m }, m)));
  const topK = h("input", { name: "top_k", type: "number", min: 1, max: 100, value: 10 });
  const docs = h("input", { name: "document_ids", placeholder: "id1, id2" });
  const types = h("select", { name: "content_types", multiple: true, size: 3 },
    ["text/plain", "text/markdown", "text/html", "application/pdf", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"]
      .map((t) => h("option", { value: t }, t)));
  const prefix = h("input", { name: "source_prefix", placeholder: "https://docs.example.com/" });
  const collections = h("input", { name: "collections", placeholder: "default, other" });
  const form = h("form", { class: "panel", role: "search", "aria-label": "Search chunks" },
    h("div", { class: "inline form" }, field("Query", q)),
    h("div", { class: "grid" }, field("Mode", mode), field("Group by", group), field("Top k", topK),
      field("Documents", docs, "Comma-separated ids"), field("Content types", types), field("Source prefix", prefix), field("Collections", collections)),
    h("p", {}, h("button", { type: "submit" }, "Search")));
  const results = h("section", { "aria-labelledby": "results-title", "aria-live": "polite" }, h("h2", { id: "results-title" }, "Results"));
  render("Search playground", form, results);
  q.focus();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const list = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);
    const filter = {};
    if (list(docs.value).length) filter.document_ids = list(docs.value);
    const chosen = [...types.selectedOptions].map((o) => o.value);
    if (chosen.length) filter.content_types = chosen;
    if (prefix.value) filter.source_prefix = prefix.value;
    const request = { query: q.value, mode: mode.value, group_by: group.value, top_k: Number(topK.value) || 10 };
    if (Object.keys(filter).length) request.filter = filter;
    if (list(collections.value).length) request.collections = list(collections.value);
    clear(results, results.firstChild, h("p", { class: "muted" }, "Searching…"));
    guarded(results, async () => {
      const started = performance.now();
      const body = await api("POST", "/v1/search", request);
      const took = performance.now() - started;
      clear(results, results.firstChild,
        h("p", { class: "muted small" }, `${body.results.length} result(s), ${body.mode}, grouped by ${body.group_by}, in ${fmtMs(took)}.`),
        body.results.map((hit) => h("article", { class: "hit" },
          h("h3", {}, `${hit.rank}. `, h("a", { href: `#/documents/${encodeURIComponent(hit.document_id)}` }, hit.document_id), ` · chunk ${hit.chunk_index}`),
          h("p", { class: "small muted" },
            `score ${hit.score.toFixed(4)} · vector ${scoreText(hit.scores.vector, hit.ranks.vector)} · keyword ${scoreText(hit.scores.keyword, hit.ranks.keyword)} · collection ${hit.collection}`),
          h("p", {}, highlighted(hit.text, hit.highlights)),
          hit.chunks && hit.chunks.length ? h("p", { class: "small muted" }, `Also matching: chunks ${hit.chunks.map((c) => c.chunk_index).join(", ")}`) : null)));
      announce(`${body.results.length} results`);
    });
  });
}

function scoreText(score, rank) {
  return score === null || score === undefined ? "—" : `${score.toFixed(4)} (#${rank})`;
}

// Highlights are code point offsets, so the text is split by code points, not UTF-16 units.
function highlighted(text, highlights) {
  const points = Array.from(text);
  const out = [];
  let at = 0;
  for (const { start, end } of highlights || []) {
    if (start < at || end > points.length) continue;
    out.push(points.slice(at, start).join(""), h("mark", {}, points.slice(start, end).join("")));
    at = end;
  }
  out.push(points.slice(at).join(""));
  return out;
}

// ---------------------------------------------------------------------------------------------
// API keys (admin).

function keysPage() {
  const tenant = h("input", { name: "tenant", required: true, pattern: "[A-Za-z0-9._\\-]{1,64}" });
  const name = h("input", { name: "name", required: true });
  const scopes = h("fieldset", {}, h("legend", {}, "Scopes"),
    SCOPES.map((s) => h("label", {}, h("input", { type: "checkbox", name: "scope", value: s, checked: s === "read" }), s)));
  const rpm = h("input", { name: "rpm", type: "number", min: 1 });
  const created = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "panel", "aria-labelledby": "create-title" }, h("h2", { id: "create-title" }, "Create a key"),
    h("div", { class: "grid" }, field("Tenant", tenant), field("Name", name, "What the key is for"), field("Requests per minute", rpm, "Optional")),
    scopes, h("p", {}, h("button", { type: "submit" }, "Create key")), created);
  const list = h("section", { "aria-labelledby": "keys-title" }, h("h2", { id: "keys-title" }, "Keys"));
  render("API keys", form, list);
  const load = () => guarded(list, async () => {
    const body = await api("GET", "/v1/keys");
    const rows = body.keys.map((k) => h("tr", { "data-key": k.id },
      h("td", { class: "mono" }, k.id), h("td", {}, k.tenant), h("td", {}, k.name), h("td", { class: "mono" }, `${k.prefix}…`),
      h("td", {}, k.scopes.join(", ")), h("td", {}, k.revoked_at ? badge("revoked") : badge("active")),
      h("td", {}, k.revoked_at ? fmtTime(k.revoked_at) : h("button", { type: "button", class: "danger", "aria-label": `Revoke ${k.name}`, onclick: async () => {
        if (!window.confirm(`Revoke the key “${k.name}”? Calls with it fail at once.`)) return;
        await guarded(list, () => api("DELETE", `/v1/keys/${encodeURIComponent(k.id)}`));
        announce(`Key ${k.name} revoked`);
        load();
      } }, "Revoke"))));
    clear(list, list.firstChild, table(null, ["Id", "Tenant", "Name", "Prefix", "Scopes", "State", ""], rows, "No keys in the key store."));
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = [...scopes.querySelectorAll("input:checked")].map((i) => i.value);
    const request = { tenant: tenant.value.trim(), name: name.value.trim(), scopes: chosen };
    if (rpm.value) request.rpm = Number(rpm.value);
    guarded(created, async () => {
      const key = await api("POST", "/v1/keys", request);
      clear(created, h("div", { class: "secret", role: "status" }, "Key created. Copy the secret now; it is not shown again: ",
        h("code", { id: "new-secret" }, key.key)));
      form.reset();
      load();
    });
  });
  load();
}

// ---------------------------------------------------------------------------------------------
// Runs (when the API has them): the list, and a run's counts, failures, items and report.

function runsPage() {
  const params = query();
  const body = h("div", { "aria-live": "polite" });
  render("Runs", body);
  guarded(body, async () => {
    const search = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (params.get("cursor")) search.set("cursor", params.get("cursor"));
    const list = await api("GET", `/v1/runs?${search}`);
    const rows = list.runs.map((run) => h("tr", {},
      h("td", {}, h("a", { href: `#/runs/${encodeURIComponent(run.run_id)}` }, run.name || run.run_id)),
      h("td", {}, run.kind), h("td", {}, badge(run.status)), h("td", { class: "num" }, fmtNum(run.items)),
      h("td", { class: "hide-narrow" }, run.collection), h("td", { class: "hide-narrow" }, fmtTime(run.created_at)),
      h("td", { class: "hide-narrow" }, fmtTime(run.finished_at))));
    clear(body, table(null, ["Run", "Kind", "Status", ["Items", "num"], ["Collection", "hide-narrow"], ["Started", "hide-narrow"], ["Ended", "hide-narrow"]],
      rows, "No runs yet (POST /v1/runs, or `millrace crawl`)."), cursorPager("#/runs", params, list.next_cursor, "Run pages"));
  });
}

function runPage(runId) {
  const params = query();
  const summary = h("section", { class: "panel", "aria-labelledby": "run-summary" }, h("h2", { id: "run-summary" }, "Summary"));
  const items = h("section", { class: "panel", "aria-labelledby": "run-items" }, h("h2", { id: "run-items" }, "Items"));
  const errors = h("div");
  render(`Run ${runId}`, errors, summary, items);
  const path = `/v1/runs/${encodeURIComponent(runId)}`;
  const act = (method, suffix, done) => guarded(errors, async () => {
    const result = await api(method, `${path}${suffix}`);
    clear(errors, h("div", { class: "note", role: "status" }, done(result)));
  });
  const download = () => guarded(errors, async () => {
    const response = await fetch(`${path}/report.csv`, { headers: headers(), signal: page.signal });
    if (!response.ok) throw await failure(response);
    const url = URL.createObjectURL(await response.blob());
    const a = h("a", { href: url, download: `run-${runId}.csv` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  });
  const live = h("div");
  errors.append(live);
  every(3000, () => guarded(clear(live), async () => {
    const run = await api("GET", path);
    const c = run.counts;
    clear(summary, summary.firstChild,
      h("p", {}, badge(run.status), ` ${run.name} · ${run.kind} · collection ${run.collection}`),
      h("progress", { max: 100, value: Math.round(run.progress * 100), "aria-label": "run progress" }), ` ${Math.round(run.progress * 100)}%`,
      h("dl", { class: "kv" }, [
        ["Items", fmtNum(run.items)], ["Pending", c.pending], ["In progress", c.in_progress], ["Completed", c.completed],
        ["Failed", c.failed], ["Cancelled", c.cancelled], ["Skipped", c.skipped], ["Refused", c.refused],
        ["Tokens", fmtNum(run.tokens)], ["Cost", `$${(run.cost_usd || 0).toFixed(5)}`],
        ["Started", fmtTime(run.created_at)], ["Ended", fmtTime(run.finished_at)],
      ].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      run.failures && run.failures.length ? [h("h3", {}, "Failures by reason"),
        table(null, ["Reason", ["Items", "num"]], run.failures.map((f) => h("tr", {}, h("td", {}, f.reason), h("td", { class: "num" }, f.count))))] : null,
      h("p", { class: "inline" },
        h("button", { type: "button", class: "secondary", onclick: download }, "Download report (CSV)"), " ",
        h("a", { href: `#/jobs?run_id=${encodeURIComponent(runId)}`, class: "button secondary" }, "Its jobs"), " ",
        c.failed || c.refused ? h("button", { type: "button", onclick: () => act("POST", "/retry-failed", (r) => `Retry asked: ${JSON.stringify(r)}`) }, "Retry failed items") : null, " ",
        run.status === "running" ? h("button", { type: "button", class: "danger", onclick: () => act("DELETE", "", () => "Run cancelled.") }, "Cancel run") : null));
  }));
  const statusFilter = params.get("status") || "";
  const itemList = h("div");
  items.append(itemList);
  // The items refresh with the summary while the run goes on.
  every(3000, () => guarded(clear(itemList), async () => {
    const search = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (statusFilter) search.set("status", statusFilter);
    if (params.get("cursor")) search.set("cursor", params.get("cursor"));
    const list = await api("GET", `${path}/items?${search}`);
    const rows = list.items.map((item) => h("tr", {},
      h("td", { class: "mono" }, item.url || item.document_id),
      h("td", {}, badge(item.status)),
      h("td", { class: "num hide-narrow" }, item.http_status ?? "—"),
      h("td", { class: "num" }, item.chunks),
      h("td", { class: "num hide-narrow" }, item.attempts),
      h("td", {}, item.job_id ? h("a", { href: `#/jobs/${encodeURIComponent(item.job_id)}` }, item.job_id.slice(0, 12)) : "—"),
      h("td", {}, item.error || "")));
    clear(itemList, table(null, ["Item", "Status", ["HTTP", "num hide-narrow"], ["Chunks", "num"], ["Attempts", "num hide-narrow"], "Job", "Error"], rows, "No items."),
      cursorPager(`#/runs/${encodeURIComponent(runId)}`, params, list.next_cursor, "Item pages"));
  }));
}

// ---------------------------------------------------------------------------------------------

// The skip link moves focus, not the route (the hash holds the page).
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  main().focus();
});
document.getElementById("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_ITEM);
  history.replaceState(null, "", "#/signin");
  sessionStorage.removeItem("millrace.next");
  signIn("Signed out.");
});
window.addEventListener("hashchange", () => {
  if (!location.hash.startsWith("#/signin")) route();
});
Promise.all([
  fetch("config.json").then((r) => (r.ok ? r.json() : {})).then((config) => { consoleConfig = Object.assign(consoleConfig, config); }),
  loadCapabilities(),
]).catch(() => {}).finally(() => {
  document.getElementById("nav-runs").hidden = !capabilities.runs;
  route();
});
