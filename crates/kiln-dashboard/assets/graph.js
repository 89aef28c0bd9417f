// The /graph page: polls /json/graph.json once a second and draws the tasks as dots in
// layers (a task sits one layer right of its deepest dependency), coloured by state. Above
// the server's cap it draws nothing and says why.
(function () {
  "use strict";
  const colours = {
    waiting: "#999", queued: "#ccc", "no-worker": "#ccc", processing: "#2ca02c",
    memory: "#d62728", released: "#1f77b4", erred: "#000", forgotten: "#eee",
  };
  const canvas = document.getElementById("graph");
  const note = document.getElementById("graph-note");
  const summary = document.getElementById("summary");
  // The layout is kept while the graph's shape (its keys and edges) stays the same, so a
  // refresh only recolours.
  let shapeId = "";
  let layout = null;

  function place(graph) {
    const n = graph.nodes.length;
    const deps = Array.from({ length: n }, () => []);
    const out = Array.from({ length: n }, () => []);
    for (const [a, b] of graph.edges) { deps[b].push(a); out[a].push(b); }
    // Longest path from the sources, in topological order (Kahn).
    const depth = new Array(n).fill(0);
    const pending = deps.map((d) => d.length);
    const ready = [];
    for (let i = 0; i < n; i++) if (pending[i] === 0) ready.push(i);
    while (ready.length) {
      const i = ready.pop();
      for (const j of out[i]) {
        depth[j] = Math.max(depth[j], depth[i] + 1);
        if (--pending[j] === 0) ready.push(j);
      }
    }
    const layers = [];
    for (let i = 0; i < n; i++) (layers[depth[i]] = layers[depth[i]] || []).push(i);
    const x = new Array(n), y = new Array(n);
    const width = canvas.width, height = canvas.height, margin = 12;
    const columns = Math.max(layers.length, 1);
    layers.forEach((layer, d) => {
      layer.forEach((i, k) => {
        x[i] = margin + (columns === 1 ? (width - 2 * margin) / 2 : d * (width - 2 * margin) / (columns - 1));
        y[i] = margin + (layer.length === 1 ? (height - 2 * margin) / 2 : k * (height - 2 * margin) / (layer.length - 1));
      });
    });
    const tallest = Math.max(1, ...layers.map((l) => l.length));
    const radius = Math.max(1.5, Math.min(6, (height - 2 * margin) / tallest / 2.5));
    return { x, y, radius };
  }

  function draw(graph) {
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    canvas.dataset.tasks = String(graph.tasks);
    summary.textContent = graph.tasks + " tasks";
    if (graph.too_large) {
      note.hidden = false;
      note.textContent = "The scheduler knows " + graph.tasks + " tasks: this page draws graphs of up to " +
        graph.cap + " tasks. The progress bars on the status page follow larger graphs.";
      canvas.dataset.drawn = "0";
      shapeId = "";
      return;
    }
    note.hidden = true;
    const id = graph.nodes.map((n) => n.key).join("\u0000") + "|" + graph.edges.length;
    if (id !== shapeId) { layout = place(graph); shapeId = id; }
    const { x, y, radius } = layout;
    ctx.strokeStyle = "rgba(0,0,0,0.15)";
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (const [a, b] of graph.edges) { ctx.moveTo(x[a], y[a]); ctx.lineTo(x[b], y[b]); }
    ctx.stroke();
    graph.nodes.forEach((node, i) => {
      ctx.fillStyle = colours[node.state] || "#f0f";
      ctx.beginPath();
      ctx.arc(x[i], y[i], radius, 0, 2 * Math.PI);
      ctx.fill();
    });
    canvas.dataset.drawn = String(graph.nodes.length);
  }

  function poll() {
    fetch("/json/graph.json")
      .then((r) => r.json())
      .then(draw)
      .catch(() => { summary.textContent = "the scheduler is not answering"; })
      .finally(() => setTimeout(poll, 1000));
  }
  poll();
})();
