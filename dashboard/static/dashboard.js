// The dashboard's pages: each fetches its data from /api and draws it; no build step.
"use strict";

const body = document.body;
const token = body.dataset.token || "";
const POLL_MS = 3000;

function withToken(path, params) {
  const query = new URLSearchParams(params || {});
  if (token) query.set("token", token);
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

async function api(path, params) {
  const response = await fetch(withToken(path, params), { headers: { Accept: "application/json" } });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (_) { /* not JSON */ }
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return response.json();
}

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function link(path, text) { return el("a", { href: withToken(path) }, text); }
const studyPath = (name) => `/studies/${encodeURIComponent(name)}`;
const trialPath = (name, number) => `${studyPath(name)}/trials/${number}`;
const runPath = (name) => `/compressions/${encodeURIComponent(name)}`;

function fmt(value, name) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  if (name === "params" || name === "macs" || Number.isInteger(value) && Math.abs(value) >= 1000) {
    return Math.round(value).toLocaleString("en");
  }
  return Math.abs(value) >= 100 ? value.toFixed(1) : value.toPrecision(4);
}

// A compression budget's limits that are set ("speedup 4, max_accuracy_drop 0.3"), or "none".
function budgetText(budget) {
  return Object.entries(budget).filter(([, v]) => v !== null).map(([k, v]) => `${k} ${v}`).join(", ") || "none";
}

function when(text) { return text ? text.replace("T", " ").slice(0, 19) : "–"; }

function showError(error) {
  const box = document.getElementById("error");
  box.textContent = String(error.message || error);
  box.hidden = false;
}

function crumbs(...parts) {
  const holder = document.getElementById("crumbs");
  holder.replaceChildren();
  for (const part of parts) holder.append(" / ", part);
}

function fill(tbody, rows) { tbody.replaceChildren(...rows); }

function keyValueRows(entries) {
  return entries.map(([key, value]) => el("tr", {}, el("th", {}, key), el("td", {}, value)));
}

function setLive(running) {
  const live = document.getElementById("live");
  live.textContent = running ? "● live" : "";
}

// studies page

async function studiesPage() {
  const draw = async () => {
    const data = await api("/api/studies");
    window.archetypeOverview = data;
    fill(document.querySelector("#studies tbody"), data.studies.map((s) => el("tr", { "data-study": s.name },
      el("td", {}, link(studyPath(s.name), s.name)),
      el("td", { class: `status ${s.status}` }, s.status),
      el("td", {}, s.space), el("td", {}, s.target),
      el("td", {}, s.budget.join(", ") || "none"),
      el("td", { class: "num" }, s.total),
      el("td", {}, Object.entries(s.counts).sort().map(([k, v]) => `${v} ${k}`).join(", ") || "–"),
      el("td", { class: "num" }, s.best === null ? "–" : `${s.best_objective} ${fmt(s.best, s.best_objective)}`),
      el("td", {}, when(s.updated_at)))));
    document.getElementById("no-studies").hidden = data.studies.length > 0;
    fill(document.querySelector("#compressions tbody"), data.compressions.map((r) => el("tr", { "data-run": r.name },
      el("td", {}, link(runPath(r.name), r.name)),
      el("td", { class: `status ${r.status}` }, r.status),
      el("td", {}, r.source_study ? link(trialPath(r.source_study, r.source_trial), r.source) : r.source),
      el("td", {}, r.target),
      el("td", {}, budgetText(r.budget)),
      el("td", { class: "num" }, r.steps), el("td", {}, when(r.created_at)))));
    document.getElementById("no-compressions").hidden = data.compressions.length > 0;
    setLive(data.studies.some((s) => s.status === "running"));
    body.dataset.loaded = "true";
  };
  await draw();
  setInterval(() => draw().catch(showError), POLL_MS);
}

// study page

const study = { view: null, x: null, y: null, sort: "number", order: "asc", offset: 0, limit: 50 };

function frontFigure(view, x, y) {
  const usable = view.points.filter((p) => x in p.values && y in p.values);
  const gl = usable.length > 3000 ? "scattergl" : "scatter";
  const trace = (name, points, style) => ({
    type: gl, name, mode: "markers", x: points.map((p) => p.values[x]), y: points.map((p) => p.values[y]),
    customdata: points.map((p) => p.number),
    text: points.map((p) => `#${p.number} ${p.state}<br>${p.summary}`),
    hovertemplate: `%{text}<br>${x} %{x}<br>${y} %{y}<extra>${name}</extra>`, ...style,
  });
  const front = usable.filter((p) => p.on_front).sort((a, b) => a.values[x] - b.values[x]);
  return [
    trace("over budget or pruned", usable.filter((p) => !p.feasible), { marker: { color: "#bbb", symbol: "x", size: 7 } }),
    trace("within budget", usable.filter((p) => p.feasible && !p.on_front), { marker: { color: "#5b8def", size: 7 } }),
    trace("Pareto front", front, { mode: "lines+markers", line: { color: "#d35400", shape: "hv" },
      marker: { color: "#d35400", size: 11, line: { color: "#000", width: 1 } } }),
  ];
}

function drawFront() {
  const { view, x, y } = study;
  const layout = { margin: { t: 10, r: 10 }, xaxis: { title: { text: x } }, yaxis: { title: { text: y } },
    legend: { orientation: "h" }, hovermode: "closest" };
  const plot = document.getElementById("front-plot");
  Plotly.react(plot, frontFigure(view, x, y), layout, { displaylogo: false, responsive: true });
  if (!plot.dataset.clicks) {
    plot.on("plotly_click", (event) => {
      const number = event.points[0] && event.points[0].customdata;
      if (number) window.location.href = withToken(trialPath(view.study.name, number));
    });
    plot.dataset.clicks = "true";
  }
}

function drawProgress() {
  const { view } = study;
  const numbers = view.progress.map((p) => p.number);
  const traces = [{ type: "scatter", mode: "lines+markers", name: `best ${view.study.best_objective || ""} within budget`,
    x: numbers, y: view.progress.map((p) => p.best), line: { shape: "hv", color: "#27ae60" } }];
  if (view.hypervolume_objectives.length >= 2) {
    traces.push({ type: "scatter", mode: "lines", name: `hypervolume (${view.hypervolume_objectives.join(", ")})`,
      x: numbers, y: view.progress.map((p) => p.hypervolume), yaxis: "y2", line: { shape: "hv", color: "#8e44ad" } });
  }
  const layout = { margin: { t: 40, r: 60 }, xaxis: { title: { text: "trial" } }, legend: { orientation: "h", y: 1.15 },
    yaxis: { title: { text: view.study.best_objective || "" } },
    yaxis2: { title: { text: "hypervolume" }, overlaying: "y", side: "right", showgrid: false } };
  Plotly.react("progress-plot", traces, layout, { displaylogo: false, responsive: true });
}

function drawOperators() {
  const { view } = study;
  const ops = [...new Set(view.operators.map((o) => o.op))];
  const slots = [...new Set(view.operators.map((o) => o.slot))];
  const traces = ops.map((op) => ({ type: "bar", name: op, x: slots,
    y: slots.map((slot) => (view.operators.find((o) => o.slot === slot && o.op === op) || { count: 0 }).count) }));
  const layout = { barmode: "stack", margin: { t: 10, r: 10 }, yaxis: { title: { text: "front members" } },
    legend: { orientation: "h" } };
  Plotly.react("operators-plot", traces, layout, { displaylogo: false, responsive: true });
}

function axisOptions(select, metrics, chosen) {
  select.replaceChildren(...metrics.map((m) => el("option", { value: m }, m)));
  select.value = chosen;
}

async function loadTrials() {
  const params = { sort: study.sort, order: study.order, offset: study.offset, limit: study.limit };
  const state = document.getElementById("filter-state").value;
  const budget = document.getElementById("filter-budget").value;
  if (state) params.state = state;
  if (budget) params.budget = budget;
  const table = await api(`/api/studies/${encodeURIComponent(study.view.study.name)}/trials`, params);
  const metrics = study.view.metrics;
  const columns = [["number", "#"], ["state", "state"], ...metrics.map((m) => [m, m]), ["", "budget"], ["", "architecture"]];
  const head = document.querySelector("#trials thead tr");
  head.replaceChildren(...columns.map(([key, label]) => {
    const mark = key === study.sort ? (study.order === "asc" ? " ▲" : " ▼") : "";
    const cell = el("th", key ? { class: "sortable", "data-sort": key } : {}, label + mark);
    if (key) cell.addEventListener("click", () => {
      study.order = study.sort === key && study.order === "asc" ? "desc" : "asc";
      study.sort = key; study.offset = 0; loadTrials().catch(showError);
    });
    return cell;
  }));
  fill(document.querySelector("#trials tbody"), table.rows.map((row) => el("tr", { "data-number": row.number },
    el("td", { class: "num" }, link(trialPath(study.view.study.name, row.number), row.number)),
    el("td", { class: `status ${row.state}` }, row.state),
    ...metrics.map((m) => el("td", { class: "num" }, fmt(row.values[m], m))),
    el("td", {}, row.within_budget ? "within" : "over"),
    el("td", { class: "arch", title: row.error || "" }, row.error ? `error: ${row.error}` : row.summary))));
  const last = Math.min(table.offset + table.rows.length, table.total);
  document.getElementById("page-info").textContent =
    table.total ? `${table.offset + 1}–${last} of ${table.total}` : "no trials match";
  document.getElementById("page-prev").disabled = table.offset === 0;
  document.getElementById("page-next").disabled = last >= table.total;
  body.dataset.trialsLoaded = String((Number(body.dataset.trialsLoaded) || 0) + 1);
}

function drawStudy() {
  const s = study.view.study;
  const objectives = s.objectives.map((o) => `${o.direction} ${o.name}`).join(", ");
  const reference = Object.entries(study.view.hypervolume_reference).map(([k, v]) => `${k} ${fmt(v, k)}`).join(", ");
  const volume = study.view.progress.length ? study.view.progress[study.view.progress.length - 1].hypervolume : null;
  const hv = reference && volume !== null ? `hypervolume ${Number(volume.toPrecision(4))} (reference: ${reference})` : "";
  const info = document.getElementById("study-info");
  info.replaceChildren(`${s.status} · space ${s.space} · target ${s.target} · budget ${s.budget.join(", ") || "none"}`
    + ` · ${objectives} · ${s.total} trials (${Object.entries(s.counts).sort().map(([k, v]) => `${v} ${k}`).join(", ")})`
    + ` · ${study.view.front.length} on the front` + (hv ? ` · ${hv}` : ""));
  drawFront(); drawProgress(); drawOperators();
  setLive(s.status === "running");
}

async function studyPage() {
  const name = body.dataset.study;
  crumbs(link(studyPath(name), name));
  study.view = await api(`/api/studies/${encodeURIComponent(name)}`);
  window.archetypeView = study.view;
  const metrics = study.view.metrics;
  const objectives = study.view.study.objectives.map((o) => o.name).filter((m) => metrics.includes(m));
  study.y = objectives[0] || metrics[0];
  study.x = objectives[1] || metrics.find((m) => m !== study.y) || study.y;
  const xs = document.getElementById("axis-x");
  const ys = document.getElementById("axis-y");
  axisOptions(xs, metrics, study.x); axisOptions(ys, metrics, study.y);
  xs.addEventListener("change", () => { study.x = xs.value; drawFront(); });
  ys.addEventListener("change", () => { study.y = ys.value; drawFront(); });
  for (const id of ["filter-state", "filter-budget"]) {
    document.getElementById(id).addEventListener("change", () => { study.offset = 0; loadTrials().catch(showError); });
  }
  document.getElementById("page-prev").addEventListener("click", () => {
    study.offset = Math.max(0, study.offset - study.limit); loadTrials().catch(showError);
  });
  document.getElementById("page-next").addEventListener("click", () => {
    study.offset += study.limit; loadTrials().catch(showError);
  });
  drawStudy();
  await loadTrials();
  body.dataset.loaded = "true";
  setInterval(async () => {
    try {
      const fresh = await api(`/api/studies/${encodeURIComponent(name)}`);
      if (fresh.study.updated_at === study.view.study.updated_at && fresh.study.status === study.view.study.status) return;
      study.view = fresh; window.archetypeView = fresh;
      drawStudy(); await loadTrials();
      body.dataset.updates = String((Number(body.dataset.updates) || 0) + 1);
    } catch (error) { showError(error); }
  }, POLL_MS);
}

// trial page

async function trialPage() {
  const name = body.dataset.study;
  const number = Number(body.dataset.number);
  crumbs(link(studyPath(name), name), link(trialPath(name, number), `trial ${number}`));
  const t = await api(`/api/studies/${encodeURIComponent(name)}/trials/${number}`);
  window.archetypeTrial = t;
  document.getElementById("trial-info").textContent =
    `${t.state} · architecture ${t.arch_key} · input ${t.input || "?"} · attempt ${t.attempt}`
    + ` · started ${when(t.started_at)} · finished ${when(t.finished_at)}`;
  if (t.error) {
    const box = document.getElementById("trial-error");
    box.textContent = `This trial failed: ${t.error}`; box.hidden = false;
  }
  if (t.svg) document.getElementById("arch-graph").innerHTML = t.svg;  // drawn and escaped by the server
  if (t.graph_error) {
    const note = document.getElementById("graph-note");
    note.textContent = t.graph_error; note.hidden = false;
  }
  fill(document.querySelector("#metrics tbody"), keyValueRows(Object.entries(t.values).map(([k, v]) => [k, fmt(v, k)])));
  fill(document.querySelector("#budget tbody"), t.budget.map((c) => el("tr", { class: c.satisfied ? "ok" : "bad" },
    el("th", {}, c.constraint), el("td", {}, fmt(c.value)), el("td", {}, c.satisfied ? "met" : "not met"))));
  fill(document.querySelector("#fingerprint tbody"), keyValueRows([["latency target", t.target || "–"],
    ...Object.entries(t.fingerprint), ...Object.entries(t.timings).map(([k, v]) => [`${k} seconds`, fmt(v)])]));
  document.getElementById("compressions").replaceChildren(...t.compressions.map((run) => el("li", {}, link(runPath(run), run))));
  fill(document.querySelector("#slots tbody"), t.slots.map((s) => el("tr", { "data-slot": s.slot, class: s.op === "identity" ? "identity" : "" },
    el("td", {}, s.slot), el("td", {}, s.op),
    el("td", {}, Object.entries(s.params).map(([k, v]) => `${k}=${v}`).join(", ") || "–"),
    el("td", {}, s.category || "–"), el("td", { class: "num" }, fmt(s.n_params, "params")),
    el("td", { class: "num" }, fmt(s.macs, "macs")), el("td", {}, s.skip_from || ""))));
  body.dataset.loaded = "true";
}

// compression page

async function compressionPage() {
  const name = body.dataset.run;
  crumbs(link(runPath(name), name));
  const run = await api(`/api/compressions/${encodeURIComponent(name)}`);
  window.archetypeRun = run;
  const info = document.getElementById("run-info");
  const source = run.source_study ? link(trialPath(run.source_study, run.source_trial),
    `trial ${run.source_trial} of ${run.source_study}`) : run.source;
  info.replaceChildren(`${run.status} · from `, source, ` · target ${run.target} · budget `
    + budgetText(run.budget)
    + ` · pipeline ${run.pipeline.join(" → ")}` + (run.out_dir ? ` · output ${run.out_dir}` : ""));
  if (run.error) {
    const box = document.getElementById("run-error");
    box.textContent = `This run failed: ${run.error}`; box.hidden = false;
  }
  const count = run.waterfalls.length;
  const traces = run.waterfalls.map((w, i) => ({
    type: "waterfall", name: w.metric, x: w.labels, y: w.values, measure: w.measures,
    text: w.notes, textposition: "none", xaxis: `x${i ? i + 1 : ""}`, yaxis: `y${i ? i + 1 : ""}`,
    hovertemplate: `%{x}<br>${w.metric} %{y}<br>%{text}<extra></extra>`,
    increasing: { marker: { color: w.metric === "accuracy" ? "#27ae60" : "#c0392b" } },
    decreasing: { marker: { color: w.metric === "accuracy" ? "#c0392b" : "#27ae60" } },
    totals: { marker: { color: "#34495e" } },
  }));
  const layout = { grid: { rows: 1, columns: Math.max(count, 1), pattern: "independent" }, showlegend: false,
    margin: { t: 30, r: 10 }, annotations: run.waterfalls.map((w, i) => ({ text: w.metric, showarrow: false,
      xref: `x${i ? i + 1 : ""} domain`, yref: `y${i ? i + 1 : ""} domain`, x: 0.5, y: 1.08 })) };
  Plotly.react("waterfall-plot", traces, layout, { displaylogo: false, responsive: true });
  fill(document.querySelector("#steps tbody"), run.steps.map((s) => el("tr", { class: s.accepted ? "" : "rejected" },
    el("td", { class: "num" }, s.position), el("td", {}, s.name), el("td", {}, s.accepted ? "yes" : "no"),
    ...["latency_ms", "size_mb", "accuracy"].map((m) => el("td", { class: "num" }, fmt(s.metrics[m], m))),
    el("td", { class: "num" }, fmt(s.seconds)), el("td", {}, s.message || ""))));
  body.dataset.loaded = "true";
}

const pages = { studies: studiesPage, study: studyPage, trial: trialPage, compression: compressionPage };
pages[body.dataset.page]().catch(showError);
