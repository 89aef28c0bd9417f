// kiln dashboard: the live /status page. Snapshots arrive over server-sent events (/events);
// if none arrives for a while (a proxy that buffers, a browser throttling the stream) the page
// asks /json/snapshot.json instead.
"use strict";
(function () {
  const STATES = ["released", "waiting", "queued", "no-worker", "processing", "memory", "erred"];
  const PALETTE = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
    "#7f7f7f", "#aec7e8", "#98df8a", "#c5b0d5", "#c49c94", "#f7b6d2", "#9edae5", "#dbdb8d"];
  const KIND_COLOURS = { transfer: "#d62728", spill: "#ff7f0e", unspill: "#ffbb78", error: "#000000" };
  const WINDOW_US = 10e6;
  const MAX_STREAM = 20000;
  let stream = [];
  let lastSeq = -1;
  let lastMessage = 0;
  let memoryPlot = null, cpuPlot = null;

  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  function bytes(n) {
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + u[i];
  }
  const colourOf = (prefix) => PALETTE[prefix % PALETTE.length];
  // Long hex tokens inside names (`sum-<token>-partial`) say nothing to a reader.
  const shortName = (name) => name.replace(/-[0-9a-f]{12,}/g, "");

  function memoryClass(w) {
    if (!w.memory_limit) return "ok";
    const f = w.process / w.memory_limit;
    return f >= 0.8 ? "pause" : f >= 0.7 ? "spill" : f >= 0.6 ? "target" : "ok";
  }

  function renderMemory(s) {
    const workers = s.aggregates.workers;
    const scale = Math.max(1, ...workers.map((w) => Math.max(w.memory_limit || 0, w.process + w.spilled)));
    $("memory").innerHTML = workers.map((w) => {
      const unmanaged = Math.max(0, w.process - w.managed);
      const pct = (x) => (100 * x / scale).toFixed(2) + "%";
      return `<div class="row worker-row" data-worker="${w.id}"><span class="label"><a href="/info/worker/${w.id}">${esc(w.name)}</a></span>` +
        `<span class="bar"><div class="${memoryClass(w)}" style="width:${pct(w.managed)}"></div>` +
        `<div class="unmanaged" style="width:${pct(unmanaged)}"></div><div class="spilled" style="width:${pct(w.spilled)}"></div></span>` +
        `<span class="value">${bytes(w.managed)} + ${bytes(unmanaged)} + ${bytes(w.spilled)} spilled</span></div>`;
    }).join("");
  }

  function renderProcessing(s) {
    const loads = s.loads;
    const scale = Math.max(1, ...loads.map((l) => l.processing));
    const names = Object.fromEntries(s.aggregates.workers.map((w) => [w.id, w.name]));
    $("processing").innerHTML = loads.map((l) =>
      `<div class="row"><span class="label">${esc(names[l.id] || l.id)}</span>` +
      `<span class="bar"><div class="proc" style="width:${(100 * l.processing / scale).toFixed(1)}%"></div></span>` +
      `<span class="value">${l.processing} tasks · occupancy ${l.occupancy_s.toFixed(2)} s</span></div>`).join("");
  }

  function renderProgress(s) {
    const rows = s.aggregates.prefixes.filter((p) => p.done + p.erred + p.counts[1] + p.counts[2] + p.counts[3] + p.counts[4] > 0);
    $("progress").innerHTML = rows.map((p) => {
      const c = p.counts;
      const remaining = c[1] + c[2] + c[3] + c[4];
      const total = p.done + p.erred + remaining;
      const pct = (x) => (100 * x / Math.max(1, total)).toFixed(2) + "%";
      const percent = Math.floor(100 * (p.done + p.erred) / Math.max(1, total));
      return `<div class="row progress-row" data-prefix="${esc(p.name)}" data-percent="${percent}"><span class="label" title="${esc(p.name)}">${esc(shortName(p.name))}</span>` +
        `<span class="bar"><div class="p-memory" style="width:${pct(p.done)}"></div><div class="p-erred" style="width:${pct(p.erred)}"></div>` +
        `<div class="p-processing" style="width:${pct(c[4])}"></div><div class="p-queued" style="width:${pct(c[2] + c[3])}"></div>` +
        `<div class="p-waiting" style="width:${pct(c[1])}"></div></span>` +
        `<span class="value">${p.done} / ${total} (${percent} %)${p.erred ? ", " + p.erred + " erred" : ""}</span></div>`;
    }).join("");
  }

  function renderStream(s) {
    for (const e of s.aggregates.stream) {
      if (e.seq > lastSeq) { stream.push(e); lastSeq = e.seq; }
    }
    if (stream.length > MAX_STREAM) stream = stream.slice(stream.length - MAX_STREAM);
    const canvas = $("task-stream");
    const ctx = canvas.getContext("2d");
    const width = canvas.width, height = canvas.height;
    ctx.clearRect(0, 0, width, height);
    const rows = new Map();
    let n = 0;
    for (const w of s.aggregates.workers) { rows.set(w.id, [n, w.nthreads]); n += Math.max(1, w.nthreads); }
    if (n === 0 || stream.length === 0) { canvas.dataset.painted = "0"; return; }
    let end = 0, first = Infinity;
    for (const e of stream) { end = Math.max(end, e.start_us + e.duration_us); first = Math.min(first, e.start_us); }
    // The last ten seconds, or less when everything happened faster (min 100 ms).
    const span = Math.min(WINDOW_US, Math.max(1e5, end - first));
    const start = end - span;
    const rowHeight = height / n;
    let painted = 0;
    for (const e of stream) {
      const stop = e.start_us + e.duration_us;
      if (stop < start) continue;
      const row = rows.get(e.worker);
      if (!row) continue;
      const r = row[0] + Math.min(e.thread, row[1] - 1);
      const x = (e.start_us - start) / span * width;
      const w = Math.max(1, e.duration_us / span * width);
      ctx.fillStyle = e.kind === "compute" ? colourOf(e.prefix) : KIND_COLOURS[e.kind];
      const inset = e.kind === "compute" ? 1 : rowHeight * 0.3;
      ctx.fillRect(x, r * rowHeight + inset, w, Math.max(1, rowHeight - 2 * inset));
      painted++;
    }
    canvas.dataset.painted = String(painted);
    $("stream-legend").innerHTML = s.aggregates.prefixes.slice(0, 30).map((p, i) =>
      `<span><span class="swatch" style="background:${colourOf(i)}"></span> ${esc(shortName(p.name))}</span>`).join("");
  }

  function renderSeries(s) {
    if (typeof uPlot === "undefined") return;
    const series = s.aggregates.series;
    const t = series.map((x) => x.time_us / 1e6);
    const memData = [t, series.map((x) => x.managed), series.map((x) => x.unmanaged), series.map((x) => x.spilled)];
    const cpuData = [t, series.map((x) => x.cpu_percent)];
    const width = Math.max(300, $("memory-series").clientWidth - 10);
    if (!memoryPlot) {
      memoryPlot = new uPlot({ width, height: 180, series: [{}, { label: "managed", stroke: "#3b7dd8" },
        { label: "unmanaged", stroke: "#9ecae1" }, { label: "spilled", stroke: "#999" }],
        axes: [{}, { values: (u, v) => v.map((x) => bytes(x)), size: 70 }] }, memData, $("memory-series"));
      cpuPlot = new uPlot({ width, height: 180, series: [{}, { label: "CPU %", stroke: "#2ca02c" }] }, cpuData, $("cpu-series"));
    } else {
      memoryPlot.setData(memData);
      cpuPlot.setData(cpuData);
    }
  }

  function render(s) {
    lastMessage = Date.now();
    const a = s.aggregates;
    $("summary").textContent = `${a.workers.length} workers · ${s.tasks} tasks · ${a.totals.tasks_finished} finished · ${s.clients} clients`;
    renderMemory(s);
    renderProcessing(s);
    renderStream(s);
    renderProgress(s);
    renderSeries(s);
    document.body.dataset.updates = String((Number(document.body.dataset.updates) || 0) + 1);
  }

  function poll() {
    fetch("/json/snapshot.json").then((r) => r.json()).then(render).catch(() => {});
  }

  // `?frames=N` stops live updates after N snapshots: for captures by a headless browser,
  // which waits for open connections before it advances its clock and takes the picture.
  const frames = Number(new URLSearchParams(location.search).get("frames")) || 0;
  let received = 0;
  poll();
  if (typeof EventSource !== "undefined") {
    const source = new EventSource("/events");
    source.addEventListener("snapshot", (m) => {
      $("connection").textContent = "live";
      render(JSON.parse(m.data));
      received++;
      document.body.dataset.frames = String(received);
      if (frames && received >= frames) { source.close(); $("connection").textContent = "paused after " + frames + " updates"; }
    });
    source.onerror = () => { $("connection").textContent = "reconnecting…"; };
  }
  if (!frames) setInterval(() => { if (Date.now() - lastMessage > 2000) poll(); }, 1000);
})();
