// The modelplane dashboard: plain JavaScript, no build step, nothing loaded from elsewhere.
// Everything it shows comes from /api and /v1, called with the key the user signed in with.
// Text from the server is only ever set as text (never as HTML).
"use strict";

const BASE = location.pathname.replace(/\/ui(\/.*)?$/, "");
const KEY_STORE = "modelplane.key";
const $ = (sel) => document.querySelector(sel);
let apiKey = sessionStorage.getItem(KEY_STORE);

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function errorMessage(resp) {
  try {
    const body = await resp.json();
    return body.detail || (body.error && body.error.message) || body.title || `HTTP ${resp.status}`;
  } catch {
    return `HTTP ${resp.status} ${resp.statusText}`;
  }
}

function headers(extra = {}) {
  return { authorization: `Bearer ${apiKey}`, ...extra };
}

async function api(path, options = {}) {
  const resp = await fetch(BASE + path, { ...options, headers: headers(options.headers) });
  if (resp.status === 401 && !$("#app").hidden) {
    signOut("The server no longer accepts this key (revoked or expired): sign in again.");
  }
  if (!resp.ok) throw new ApiError(resp.status, await errorMessage(resp));
  return resp.status === 204 ? null : resp.json();
}

// h("td", {class: "num"}, "3") builds an element; strings become text nodes.
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function table(columns, rows, empty) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : null }, c.title)))),
    h("tbody", {}, rows),
  );
}

const fmt = {
  int: (n) => (n ?? 0).toLocaleString("en-US"),
  num: (n, d = 1) => (n === null || n === undefined ? "–" : Number(n).toFixed(d)),
  ms: (n) => (n === null || n === undefined ? "–" : n >= 1000 ? `${(n / 1000).toFixed(2)} s` : `${Math.round(n)} ms`),
  rate: (n) => (!n ? "0" : n < 0.01 ? "< 0.01" : n.toFixed(2)),
  pct: (n) => `${((n || 0) * 100).toFixed(1)}%`,
  usd: (n) => `$${(n || 0).toFixed(4)}`,
  time: (epoch) => new Date(epoch * 1000).toLocaleTimeString("en-GB"),
};

function showError(container, err, what) {
  const text = err instanceof ApiError && err.status === 403 ? `This key cannot read ${what}: ${err.message}` : `Could not load ${what}: ${err.message}`;
  container.replaceChildren(h("p", { class: "error" }, text));
}

function stamp(page) {
  const el = page.querySelector(".updated");
  if (el) el.textContent = `updated ${new Date().toLocaleTimeString("en-GB")}`;
}

// ---- charts: small SVG line charts, redrawn on every poll ----

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((m) => m >= v);
}

// lines: [{name, color, values}] over the timestamps t (epoch seconds).
function lineChart(container, t, lines, format) {
  const width = Math.max(container.clientWidth, 300);
  const height = container.clientHeight || 170;
  const pad = { l: 44, r: 8, t: 8, b: 20 };
  const all = lines.flatMap((l) => l.values).filter((v) => v !== null);
  const max = niceMax(Math.max(0, ...all));
  const x = (i) => pad.l + (i * (width - pad.l - pad.r)) / Math.max(1, t.length - 1);
  const y = (v) => height - pad.b - (v / max) * (height - pad.t - pad.b);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4;
    svg.append(s("line", { class: "grid", x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v) }));
    const label = s("text", { class: "axis", x: pad.l - 6, y: y(v) + 3, "text-anchor": "end" });
    label.textContent = format(v);
    svg.append(label);
  }
  if (t.length) {
    for (const [i, anchor] of [[0, "start"], [t.length - 1, "end"]]) {
      const label = s("text", { class: "axis", x: x(i), y: height - 4, "text-anchor": anchor });
      label.textContent = fmt.time(t[i]);
      svg.append(label);
    }
  }
  let points = 0;
  for (const line of lines) {
    let d = "";
    line.values.forEach((v, i) => {
      if (v === null) return;
      const prev = i > 0 ? line.values[i - 1] : null;
      d += `${prev === null ? "M" : "L"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      if (v > 0) points += 1;
      const alone = prev === null && (i + 1 >= line.values.length || line.values[i + 1] === null);
      if (alone) svg.append(s("circle", { cx: x(i), cy: y(v), r: 3, fill: line.color }));
    });
    svg.append(s("path", { d, fill: "none", stroke: line.color, "stroke-width": 1.8, "stroke-linejoin": "round" }));
  }
  svg.dataset.points = String(points);
  const legend = h("div", { class: "legend" });
  const describe = (i) => {
    legend.replaceChildren(
      i === null ? "" : `${fmt.time(t[i])}  `,
      ...lines.flatMap((l) => [
        h("b", { style: `color:${l.color}` }, `● ${l.name} `),
        i === null ? "" : `${l.values[i] === null ? "–" : format(l.values[i])}  `,
      ]),
    );
  };
  svg.addEventListener("mousemove", (ev) => {
    const box = svg.getBoundingClientRect();
    const px = ((ev.clientX - box.left) / box.width) * width;
    const i = Math.round(((px - pad.l) / (width - pad.l - pad.r)) * (t.length - 1));
    describe(Math.min(t.length - 1, Math.max(0, i)));
  });
  svg.addEventListener("mouseleave", () => describe(null));
  describe(null);
  container.replaceChildren(svg, legend);
}

// ---- pages ----

const pages = {};

pages.endpoints = {
  interval: 5000,
  async load(page) {
    const body = $("#endpoints-body");
    let data;
    try {
      data = (await api("/api/endpoints")).data;
    } catch (err) {
      return showError(body, err, "endpoints");
    }
    const rows = data.map((ep) => {
      const replicas = ep.replica_status || [];
      return h(
        "tr",
        { dataset: { endpoint: ep.name } },
        h("td", {}, h("b", {}, ep.name), ep.team ? h("div", { class: "muted" }, `team ${ep.team}`) : null),
        h("td", {}, ep.provider ? `${ep.provider} (provider)` : ep.engine, h("div", { class: "muted mono" }, ep.model)),
        h("td", {}, h("span", { class: `badge ${ep.status}`, dataset: { status: ep.status } }, ep.status)),
        h("td", { class: "num" }, ep.provider ? "–" : `${ep.ready_replicas} / ${ep.replicas}`),
        h(
          "td",
          {},
          replicas.length
            ? replicas.map((r) =>
                h(
                  "div",
                  { class: "replica" },
                  h("span", { class: `badge ${r.status}` }, `#${r.index} ${r.status}`),
                  h("span", { class: "muted" }, `${r.restarts} restart${r.restarts === 1 ? "" : "s"}`),
                  r.last_error ? h("span", { class: "err" }, r.last_error) : null,
                ),
              )
            : ep.health
              ? h(
                  "div",
                  { class: "replica" },
                  h("span", { class: `badge ${{ healthy: "ready", unhealthy: "failed" }[ep.health.status] || "pending"}` }, `health check ${ep.health.status}`),
                  ep.health.last_error ? h("span", { class: "err" }, ep.health.last_error) : null,
                )
              : h("span", { class: "muted" }, ep.provider ? "served by the provider" : "no replicas"),
        ),
      );
    });
    const columns = [{ title: "Name" }, { title: "Serves" }, { title: "Status" }, { title: "Ready", num: true }, { title: "Replicas" }];
    body.replaceChildren(table(columns, rows, "No endpoints yet. Create one with POST /api/endpoints or `modelplane endpoints create`."));
    stamp(page);
  },
};

pages.metrics = {
  interval: 2000,
  async load() {
    const seconds = $("#metrics-window").value;
    const select = $("#metrics-endpoint");
    const chosen = select.value;
    const only = chosen ? `&endpoint=${encodeURIComponent(chosen)}` : "";
    let stats;
    try {
      stats = await api(`/api/stats?window=${seconds}${only}`);
    } catch (err) {
      return showError($("#metrics-tiles"), err, "statistics");
    }
    const names = Object.keys(stats.endpoints);
    const known = [...select.options].map((o) => o.value).slice(1);
    if (names.some((n) => !known.includes(n))) {
      const all = [...new Set([...known, ...names])].sort();
      select.replaceChildren(h("option", { value: "" }, "All"), ...all.map((n) => h("option", { value: n }, n)));
      select.value = chosen;
    }
    const view = chosen ? stats.endpoints[chosen] || idle(stats.t.length) : stats.overall;
    const tot = view.totals;
    const tiles = [
      ["requests", "Requests", fmt.int(tot.requests)],
      ["rps", "Requests / s", fmt.rate(tot.rps)],
      ["error_rate", "Error rate", fmt.pct(tot.error_rate)],
      ["p50_ms", "Latency p50", fmt.ms(tot.p50_ms)],
      ["p95_ms", "Latency p95", fmt.ms(tot.p95_ms)],
      ["ttft_p50_ms", "TTFT p50", fmt.ms(tot.ttft_p50_ms)],
      ["tokens_per_s", "Tokens / s", fmt.rate(tot.tokens_per_s)],
    ];
    $("#metrics-tiles").replaceChildren(
      ...tiles.map(([key, label, text]) =>
        h("div", { class: "tile", dataset: { metric: key, value: String(tot[key] ?? "") } }, h("div", { class: "label" }, label), h("div", { class: "value" }, text)),
      ),
    );
    const sr = view.series;
    const errorsPerS = sr.rps.map((r, i) => +(r * sr.error_rate[i]).toFixed(3));
    lineChart($("#chart-rps"), stats.t, [
      { name: "requests/s", color: "#3b5bdb", values: sr.rps },
      { name: "errors/s", color: "#c92a2a", values: errorsPerS },
    ], (v) => fmt.num(v, 2));
    lineChart($("#chart-latency"), stats.t, [
      { name: "p50", color: "#3b5bdb", values: sr.p50_ms },
      { name: "p95", color: "#f08c00", values: sr.p95_ms },
    ], (v) => fmt.num(v, 0));
    lineChart($("#chart-ttft"), stats.t, [{ name: "p50", color: "#0c8599", values: sr.ttft_p50_ms }], (v) => fmt.num(v, 0));
    lineChart($("#chart-tokens"), stats.t, [{ name: "tokens/s", color: "#2b8a3e", values: sr.tokens_per_s }], (v) => fmt.num(v, 1));
    const rows = Object.entries(stats.endpoints).map(([name, v]) =>
      h(
        "tr",
        { dataset: { endpoint: name } },
        h("td", {}, h("b", {}, name)),
        h("td", { class: "num" }, fmt.int(v.totals.requests)),
        h("td", { class: "num" }, fmt.int(v.totals.errors)),
        h("td", { class: "num" }, fmt.ms(v.totals.p50_ms)),
        h("td", { class: "num" }, fmt.ms(v.totals.p95_ms)),
        h("td", { class: "num" }, fmt.ms(v.totals.ttft_p50_ms)),
        h("td", { class: "num" }, fmt.rate(v.totals.tokens_per_s)),
      ),
    );
    const columns = ["Endpoint", "Requests", "Errors", "p50", "p95", "TTFT p50", "Tokens / s"].map((title, i) => ({ title, num: i > 0 }));
    $("#metrics-endpoints").replaceChildren(table(columns, rows, "No requests in this window."));
  },
};

// An endpoint with no requests in the window: nothing to add up.
function idle(n) {
  const none = Array(n).fill(null);
  const zero = Array(n).fill(0);
  return {
    totals: { requests: 0, rps: 0, error_rate: 0, p50_ms: null, p95_ms: null, ttft_p50_ms: null, tokens_per_s: 0 },
    series: { requests: zero, rps: zero, error_rate: zero, p50_ms: none, p95_ms: none, ttft_p50_ms: none, tokens_per_s: zero },
  };
}

function usageTable(report, group) {
  const label = (row) => (row[group] === null || row[group] === undefined ? h("span", { class: "muted" }, group === "team" ? "(no team)" : "–") : row[group]);
  const rows = report.data.map((row) =>
    h(
      "tr",
      {},
      h("td", {}, label(row)),
      h("td", { class: "num" }, fmt.int(row.requests)),
      h("td", { class: "num" }, fmt.int(row.errors)),
      h("td", { class: "num" }, fmt.int(row.prompt_tokens)),
      h("td", { class: "num" }, fmt.int(row.completion_tokens)),
      h("td", { class: "num" }, fmt.usd(row.cost_usd)),
      h("td", { class: "num" }, fmt.ms(row.avg_latency_ms)),
    ),
  );
  const columns = [group === "team" ? "Team" : "Endpoint", "Requests", "Errors", "Prompt tokens", "Completion tokens", "Spend", "Avg latency"].map((title, i) => ({ title, num: i > 0 }));
  return table(columns, rows, "No usage recorded in this period.");
}

pages.usage = {
  async load() {
    const days = $("#usage-since").value;
    const since = days ? `&since=${new Date(Date.now() - days * 86400000).toISOString()}` : "";
    for (const group of ["team", "endpoint"]) {
      const box = $(`#usage-${group}`);
      try {
        box.replaceChildren(usageTable(await api(`/api/usage?group_by=${group}${since}`), group));
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) {
          box.replaceChildren(h("p", { class: "empty", dataset: { unavailable: "" } }, "Usage is not available on this server."));
        } else {
          showError(box, err, "usage");
        }
      }
    }
  },
};

pages.errors = {
  interval: 5000,
  async load(page) {
    const body = $("#errors-body");
    let errors;
    try {
      errors = (await api("/api/stats/errors")).data;
    } catch (err) {
      return showError(body, err, "errors");
    }
    const rows = errors.map((e) =>
      h(
        "tr",
        {},
        h("td", { class: "mono" }, fmt.time(e.at)),
        h("td", {}, h("span", { class: "badge bad" }, e.status)),
        h("td", {}, e.model || "–"),
        h("td", {}, e.endpoint || "–"),
        h("td", {}, e.message),
        h("td", { class: "mono" }, e.request_id),
      ),
    );
    const columns = ["Time", "Status", "Model", "Endpoint", "Message", "Request id"].map((title) => ({ title }));
    body.replaceChildren(table(columns, rows, "No errors: this server process keeps its last 50."));
    stamp(page);
  },
};

pages.routes = {
  interval: 10000,
  async load(page) {
    const body = $("#routes-body");
    let data;
    try {
      data = (await api("/api/routes")).data;
    } catch (err) {
      return showError(body, err, "routes");
    }
    const rows = data.map((r) => {
      const total = r.targets.reduce((sum, t) => sum + t.weight, 0) || 1;
      return h(
        "tr",
        { dataset: { route: r.name } },
        h("td", {}, h("b", {}, r.name), r.aliases.length ? h("div", { class: "muted" }, `aliases: ${r.aliases.join(", ")}`) : null),
        h(
          "td",
          {},
          h(
            "div",
            { class: "weights" },
            r.targets.map((t) =>
              h(
                "div",
                { class: "weight", dataset: { target: t.endpoint, weight: String(t.weight) } },
                h("span", {}, t.endpoint),
                h("div", { class: "bar" }, h("span", { style: `width:${(100 * t.weight) / total}%` })),
                h("span", { class: "muted num" }, `${t.weight}`),
              ),
            ),
          ),
        ),
        h("td", {}, r.fallbacks.length ? r.fallbacks.join(" → ") : h("span", { class: "muted" }, "none")),
        h("td", {}, r.sticky || h("span", { class: "muted" }, "no")),
        h("td", {}, r.source === "config" ? "modelplane.yaml" : "API", r.team ? h("div", { class: "muted" }, `team ${r.team}`) : null),
      );
    });
    const columns = ["Name", "Targets (weight)", "Fallbacks", "Sticky", "Defined in"].map((title) => ({ title }));
    body.replaceChildren(table(columns, rows, "No routes: every endpoint is reachable under its own name."));
    stamp(page);
  },
};

// ---- playground ----

const chat = { history: [], controller: null };

pages.playground = {
  async load() {
    const select = $("#play-model");
    if (select.options.length) return;
    try {
      const models = (await api("/v1/models")).data;
      select.replaceChildren(...models.map((m) => h("option", { value: m.id }, m.id)));
      if (!models.length) playError("No models yet: create an endpoint first.");
    } catch (err) {
      playError(`Could not list the models: ${err.message}`);
    }
  },
};

function playError(text) {
  const el = $("#play-error");
  el.textContent = text;
  el.hidden = !text;
}

function addMessage(role, text) {
  const el = h("div", { class: `msg ${role}` }, text);
  $("#play-transcript").append(el);
  el.scrollIntoView({ block: "end" });
  return el;
}

// Parses an SSE byte stream (fetch + ReadableStream) and calls onEvent with each data payload.
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (data === "[DONE]") return;
      if (data) onEvent(JSON.parse(data));
    }
  }
}

async function sendMessage() {
  const input = $("#play-input");
  const text = input.value.trim();
  const model = $("#play-model").value;
  if (!text || !model || chat.controller) return;
  playError("");
  input.value = "";
  const messages = [];
  const system = $("#play-system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...chat.history, { role: "user", content: text });
  addMessage("user", text);
  const bubble = addMessage("assistant", "");
  bubble.classList.add("streaming");
  const request = { model, messages, stream: true, stream_options: { include_usage: true } };
  const maxTokens = parseInt($("#play-max-tokens").value, 10);
  if (maxTokens > 0) request.max_tokens = maxTokens;
  const temperature = $("#play-temperature").value;
  if (temperature !== "") request.temperature = parseFloat(temperature);
  chat.controller = new AbortController();
  $("#play-send").disabled = true;
  $("#play-stop").hidden = false;
  const started = performance.now();
  let answer = "";
  let first = null;
  let chunks = 0;
  let usage = null;
  let target = null;
  try {
    const resp = await fetch(`${BASE}/v1/chat/completions`, {
      method: "POST",
      headers: headers({ "content-type": "application/json" }),
      body: JSON.stringify(request),
      signal: chat.controller.signal,
    });
    if (!resp.ok) throw new ApiError(resp.status, await errorMessage(resp));
    target = resp.headers.get("x-modelplane-target");
    await readEvents(resp.body, (event) => {
      if (event.error) throw new Error(event.error.message || "the stream ended with an error");
      const delta = event.choices && event.choices[0] && event.choices[0].delta;
      if (delta && delta.content) {
        if (first === null) first = performance.now();
        answer += delta.content;
        chunks += 1;
        bubble.textContent = answer;
        bubble.dataset.chunks = String(chunks);
        bubble.scrollIntoView({ block: "end" });
      }
      if (event.usage) usage = event.usage;
    });
  } catch (err) {
    if (err.name !== "AbortError") playError(err.message);
  } finally {
    chat.controller = null;
    $("#play-send").disabled = false;
    $("#play-stop").hidden = true;
    bubble.classList.remove("streaming");
    bubble.dataset.done = "true";
  }
  if (answer) {
    chat.history.push({ role: "user", content: text }, { role: "assistant", content: answer });
    const seconds = (performance.now() - started) / 1000;
    const tokens = usage ? usage.completion_tokens : chunks;
    const parts = [
      first === null ? null : `first token ${fmt.ms(first - started)}`,
      `${tokens} tokens`,
      `${(tokens / Math.max(seconds, 0.001)).toFixed(1)} tokens/s`,
      target ? `served by ${target}` : null,
    ];
    $("#play-transcript").append(h("div", { class: "msg-meta" }, parts.filter(Boolean).join(" · ")));
  }
}

// ---- shell: sign-in, navigation, polling ----

let current = null;
let timer = null;

function show(name) {
  if (!pages[name]) name = "endpoints";
  clearInterval(timer);
  current = name;
  for (const el of document.querySelectorAll(".page")) el.hidden = el.id !== `page-${name}`;
  for (const a of document.querySelectorAll(".sidebar a")) a.classList.toggle("active", a.getAttribute("href") === `#${name}`);
  const page = $(`#page-${name}`);
  const refresh = () => current === name && pages[name].load(page);
  refresh();
  if (pages[name].interval) timer = setInterval(refresh, pages[name].interval);
}

function signOut(message) {
  clearInterval(timer);
  apiKey = null;
  sessionStorage.removeItem(KEY_STORE);
  $("#app").hidden = true;
  $("#login").hidden = false;
  const error = $("#login-error");
  error.textContent = message || "";
  error.hidden = !message;
  $("#api-key").focus();
}

function enter() {
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#who").textContent = `key ${apiKey.slice(0, 10)}…`;
  show(location.hash.slice(1));
}

async function signIn(key) {
  apiKey = key;
  try {
    await api("/api/endpoints");
  } catch (err) {
    const why =
      err.status === 401
        ? `This key was not accepted (401): ${err.message}`
        : err.status === 403
          ? `This key cannot read the control API (403): ${err.message}`
          : `Could not sign in: ${err.message}`;
    signOut(why);
    return;
  }
  sessionStorage.setItem(KEY_STORE, key);
  enter();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    signIn($("#api-key").value.trim());
  });
  $("#sign-out").addEventListener("click", () => signOut());
  window.addEventListener("hashchange", () => apiKey && show(location.hash.slice(1)));
  $("#metrics-window").addEventListener("change", () => show("metrics"));
  $("#metrics-endpoint").addEventListener("change", () => show("metrics"));
  $("#usage-since").addEventListener("change", () => show("usage"));
  $("#play-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sendMessage();
  });
  $("#play-input").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) {
      ev.preventDefault();
      sendMessage();
    }
  });
  $("#play-stop").addEventListener("click", () => chat.controller && chat.controller.abort());
  $("#play-clear").addEventListener("click", () => {
    chat.history = [];
    $("#play-transcript").replaceChildren();
    playError("");
  });
  if (apiKey) enter();
  else signOut();
});
