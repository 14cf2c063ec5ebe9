// The adrizzle dashboard: polls /api/status, keeps the last KEEP polls, draws them with uPlot.
// Per poll, latency and delay points are the p50/p99 of the micro-batches timed since the
// previous poll (the snapshot lists the last 100 values and how many were timed in all).
"use strict";

const POLL_MS = 500;
const KEEP = 600; // five minutes of polls

const series = {
  t: [],
  latP50: [], latP99: [],
  delayP50: [], delayP99: [], procP50: [],
  group: [], groupMean: [],
  tput: [],
};
let prev = null;
let polls = 0;

function quantile(values, q) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(1, Math.ceil(sorted.length * q)) - 1];
}

function ms(v) { return v == null ? null : v * 1e3; }

// The values of `recent` that belong to batches timed since the previous snapshot.
function fresh(recent, stats) {
  const n = prev ? stats.micro_batches_timed - prev.micro_batches_timed : recent.length;
  return n > 0 ? recent.slice(Math.max(0, recent.length - n)) : [];
}

function push(key, value) {
  const s = series[key];
  s.push(value);
  if (s.length > KEEP) s.shift();
}

function record(stats) {
  const lat = fresh(stats.batch_latency_s.recent, stats);
  const proc = fresh(stats.processing_time_s.recent, stats);
  const delay = fresh(stats.scheduling_delay_s.recent, stats);
  push("t", stats.time);
  push("latP50", ms(quantile(lat, 0.5)));
  push("latP99", ms(quantile(lat, 0.99)));
  push("delayP50", ms(quantile(delay, 0.5)));
  push("delayP99", ms(quantile(delay, 0.99)));
  push("procP50", ms(quantile(proc, 0.5)));
  const sizes = stats.recent_group_sizes;
  push("group", stats.group_size);
  push("groupMean", sizes.length ? sizes.reduce((a, b) => a + b, 0) / sizes.length : null);
  let rate = null;
  if (prev && stats.time > prev.time) {
    rate = (stats.micro_batches_completed - prev.micro_batches_completed) / (stats.time - prev.time);
  }
  push("tput", rate);
}

function makeChart(id, lines, keys) {
  const el = document.getElementById(id);
  const opts = {
    width: Math.max(300, el.clientWidth),
    height: 200,
    legend: { live: true },
    scales: { x: { time: true } },
    series: [{}, ...lines.map(([label, stroke]) => ({
      label, stroke, width: 1.5, spanGaps: true, points: { show: false },
    }))],
    axes: [{}, { size: 60 }],
  };
  const chart = new uPlot(opts, [[], ...lines.map(() => [])], el);
  return { el, chart, keys };
}

const charts = [
  makeChart("chart-latency", [["p50", "#1f77b4"], ["p99", "#d62728"]], ["latP50", "latP99"]),
  makeChart("chart-delay",
    [["scheduling p50", "#ff7f0e"], ["scheduling p99", "#8c564b"], ["processing p50", "#2ca02c"]],
    ["delayP50", "delayP99", "procP50"]),
  makeChart("chart-group", [["last", "#9467bd"], ["mean of last 100", "#17becf"]],
    ["group", "groupMean"]),
  makeChart("chart-throughput", [["micro-batches/s", "#2ca02c"]], ["tput"]),
];

function redraw() {
  for (const c of charts) {
    c.chart.setData([series.t, ...c.keys.map((k) => series[k])]);
    const points = series[c.keys[0]].filter((v) => v != null).length;
    c.el.dataset.points = String(points);
  }
}

window.addEventListener("resize", () => {
  for (const c of charts) c.chart.setSize({ width: Math.max(300, c.el.clientWidth), height: 200 });
});

function fmtNum(v, digits = 2) {
  if (v == null) return "–";
  return typeof v === "number" && !Number.isInteger(v) ? v.toFixed(digits) : String(v);
}

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}

function fmtSeconds(s) {
  if (s == null) return "–";
  if (s < 120) return s.toFixed(1) + " s";
  if (s < 7200) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function renderCards(stats) {
  const lat = stats.batch_latency_s, delay = stats.scheduling_delay_s;
  const proc = stats.processing_time_s;
  const cards = [
    ["uptime", fmtSeconds(stats.uptime_s)],
    ["workers", `${stats.workers.length} (${stats.workers.reduce((a, w) => a + w.slots, 0)} slots)`],
    ["runs active", stats.runs_active],
    ["groups in flight", stats.groups_in_flight],
    ["group size", fmtNum(stats.group_size)],
    ["micro-batches", `${stats.micro_batches_completed} (${stats.jobs_failed} failed)`],
    ["tasks", stats.tasks_completed],
    ["latency p50 / p99", `${fmtNum(ms(lat.p50))} / ${fmtNum(ms(lat.p99))} ms`],
    ["sched. delay p50 / p99", `${fmtNum(ms(delay.p50))} / ${fmtNum(ms(delay.p99))} ms`],
    ["processing p50 / p99", `${fmtNum(ms(proc.p50))} / ${fmtNum(ms(proc.p99))} ms`],
    ["failures / recoveries", `${stats.failures} / ${stats.recoveries}`],
    ["workers joined / lost", `${stats.workers_joined} / ${stats.workers_lost}`],
    ["driver loop lag", `${fmtNum(ms(stats.loop_lag_s))} ms`],
  ];
  const root = document.getElementById("cards");
  root.replaceChildren(...cards.map(([label, value]) => {
    const div = document.createElement("div");
    div.className = "card";
    const l = document.createElement("span"); l.className = "label"; l.textContent = label;
    const v = document.createElement("span"); v.className = "value"; v.textContent = String(value);
    div.append(l, v);
    return div;
  }));
}

function renderWorkers(stats) {
  const body = document.querySelector("#workers tbody");
  body.replaceChildren();
  for (const w of stats.workers) {
    const row = body.insertRow();
    row.dataset.workerId = w.id;
    cell(row, w.id);
    cell(row, w.address);
    cell(row, w.pid);
    cell(row, w.slots, "num");
    cell(row, w.state, "state-" + w.state);
    cell(row, w.tasks_done, "num");
    cell(row, w.groups_done, "num");
    cell(row, fmtSeconds(Math.max(0, stats.time - w.last_heartbeat)) + " ago", "num");
    cell(row, fmtSeconds(Math.max(0, stats.time - w.connected_at)), "num");
  }
  if (!stats.workers.length) {
    const row = body.insertRow();
    const td = cell(row, "no worker connected", "empty");
    td.colSpan = 9;
  }
}

function renderFrames(stats) {
  const kinds = new Set([...Object.keys(stats.frames_sent), ...Object.keys(stats.frames_received)]);
  const body = document.querySelector("#frames tbody");
  body.replaceChildren();
  for (const kind of [...kinds].sort()) {
    const row = body.insertRow();
    cell(row, kind);
    cell(row, stats.frames_sent[kind] ?? 0, "num");
    cell(row, fmtBytes(stats.bytes_sent[kind] ?? 0), "num");
    cell(row, stats.frames_received[kind] ?? 0, "num");
    cell(row, fmtBytes(stats.bytes_received[kind] ?? 0), "num");
  }
}

async function poll() {
  const conn = document.getElementById("connection");
  try {
    const resp = await fetch("/api/status", { cache: "no-store" });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    const stats = await resp.json();
    record(stats);
    prev = stats;
    polls++;
    redraw();
    renderCards(stats);
    renderWorkers(stats);
    renderFrames(stats);
    document.getElementById("address").textContent = "driver " + stats.address;
    document.getElementById("version").textContent = "v" + stats.version;
    conn.textContent = "live";
    conn.className = "conn live";
  } catch (err) {
    conn.textContent = "disconnected: " + err.message;
    conn.className = "conn down";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

window.adrizzleDashboard = { series, charts, polls: () => polls };
poll();
