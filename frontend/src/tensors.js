// Tensor series: per key, a heatmap of a 2-D slice at a chosen step, a histogram over steps
// (steps on x, bins on y) and the stats lines (min, max, mean, std, norm).

import uPlot from "uplot";
import { getTensor, getTensorHistogram, getTensorSlice } from "./api.js";
import { el, errorBox, formatNumber, runColour } from "./dom.js";

// Viridis, sampled at five stops and interpolated linearly.
const STOPS = [
  [68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37],
];
const MISSING = [200, 200, 200];

function colour(t) {
  const x = Math.min(1, Math.max(0, t)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(x));
  const f = x - i;
  return STOPS[i].map((a, k) => Math.round(a + (STOPS[i + 1][k] - a) * f));
}

/**
 * Paints `rows` (arrays of numbers, null or "inf" strings) on `canvas`, one cell per value,
 * mapped through `scale(v)` -> 0..1 (or null for "not drawable", painted grey).
 */
function paint(canvas, rows, scale) {
  const height = rows.length;
  const width = rows.reduce((n, r) => Math.max(n, r.length), 0);
  if (!width || !height) return;
  const cells = new ImageData(width, height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const t = scale(rows[y][x]);
      const [r, g, b] = t === null ? MISSING : colour(t);
      const o = (y * width + x) * 4;
      cells.data[o] = r;
      cells.data[o + 1] = g;
      cells.data[o + 2] = b;
      cells.data[o + 3] = 255;
    }
  }
  const source = document.createElement("canvas");
  source.width = width;
  source.height = height;
  source.getContext("2d").putImageData(cells, 0, 0);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(source, 0, 0, canvas.width, canvas.height);
}

function linear(min, max) {
  const span = max - min || 1;
  return (v) => (typeof v === "number" ? (v - min) / span : null);
}

function sizeCanvas(canvas, rows, cols) {
  const width = Math.min(480, Math.max(160, canvas.parentElement?.clientWidth || 360));
  const height = rows <= 1 ? 32 : Math.min(360, Math.max(64, Math.round((width * rows) / Math.max(cols, 1))));
  canvas.width = width;
  canvas.height = height;
}

function heatmapView(runId, key, info) {
  const steps = info.steps;
  const slider = el("input", { type: "range", testid: "tensor-slider", min: "0", max: String(Math.max(0, steps.length - 1)), step: "1", value: String(Math.max(0, steps.length - 1)), "aria-label": `${key} step` });
  slider.disabled = steps.length < 2;
  const leading = info.shape.length > 2 ? info.shape.slice(0, -2) : [];
  const index = el("input.index", { type: "text", value: leading.map(() => 0).join(","), title: `leading indices of shape [${info.shape.join(", ")}]`, "aria-label": "leading indices" });
  const canvas = el("canvas.heatmap", { testid: "tensor-heatmap", width: "360", height: "120" });
  const label = el("div.caption");
  const message = el("div");
  let seq = 0;

  async function show() {
    const step = steps[Number(slider.value)];
    if (step === undefined) {
      message.replaceChildren(el("p.muted", {}, "No steps recorded."));
      return;
    }
    const mine = ++seq;
    label.textContent = `step ${step}`;
    try {
      const slice = await getTensorSlice(runId, key, step, leading.length ? index.value : undefined);
      if (mine !== seq) return;
      message.replaceChildren();
      sizeCanvas(canvas, slice.values.length, slice.values[0]?.length || 0);
      paint(canvas, slice.values, linear(slice.min, slice.max));
      const reduced = slice.reduced ? ` (block means of ${slice.shape.join("×")})` : "";
      label.textContent = `step ${slice.step} · min ${formatNumber(slice.min)} · max ${formatNumber(slice.max)}${reduced}`;
    } catch (err) {
      if (mine !== seq) return;
      canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
      message.replaceChildren(errorBox(err, `step ${step}`));
    }
  }
  slider.addEventListener("input", show);
  index.addEventListener("change", show);
  show();
  return el("div.tensor-view", {},
    el("h4", {}, "slice"),
    el("div.slider-row", {}, slider, leading.length ? el("label", {}, " index ", index) : null),
    canvas, label, message);
}

function histogramView(runId, key) {
  const canvas = el("canvas.heatmap", { testid: "tensor-histogram", width: "360", height: "160" });
  const label = el("div.caption");
  const node = el("div.tensor-view", {}, el("h4", {}, "histogram over steps"), canvas, label);
  getTensorHistogram(runId, key).then(
    (h) => {
      if (!h.steps.length) {
        label.textContent = "No steps recorded.";
        return;
      }
      // Rows are bins, highest at the top; columns are steps, first at the left.
      const bins = h.edges.length - 1;
      const rows = [];
      let most = 0;
      for (let b = bins - 1; b >= 0; b--) rows.push(h.counts.map((c) => c[b]));
      for (const c of h.counts) for (const n of c) most = Math.max(most, n);
      canvas.width = Math.min(480, Math.max(160, node.clientWidth || 360));
      canvas.height = 160;
      const top = Math.log1p(most) || 1;
      paint(canvas, rows, (n) => (n > 0 ? 0.15 + (0.85 * Math.log1p(n)) / top : 0));
      label.textContent = `steps ${h.steps[0]}–${h.steps[h.steps.length - 1]} · values ${formatNumber(h.edges[0])} to ${formatNumber(h.edges[bins])} (log count)`;
    },
    (err) => node.append(errorBox(err, "histogram")),
  );
  return node;
}

const STATS = ["min", "max", "mean", "std", "norm"];

/** The stats lines; what it leaves running (chart, resize observer) goes into `cleanup`. */
function statsView(info, cleanup) {
  const plot = el("div.plot");
  const node = el("div.tensor-view.wide", {}, el("h4", {}, "stats"), plot);
  const finite = (v) => (typeof v === "number" ? v : null);
  const data = [info.stats.step, ...STATS.map((name) => info.stats[name].map(finite))];
  const create = () => {
    const chart = new uPlot({
      width: Math.max(200, plot.clientWidth), height: 200,
      series: [{ label: "step" }, ...STATS.map((name, i) => ({ label: name, stroke: runColour(i), width: 1.25 }))],
      scales: { x: { time: false } },
      axes: [{ grid: { stroke: "#eee" } }, { size: 64, grid: { stroke: "#eee" }, values: (u, s) => s.map(formatNumber) }],
      legend: { live: true },
    }, data, plot);
    const resize = new ResizeObserver(() => chart.setSize({ width: Math.max(200, plot.clientWidth), height: 200 }));
    resize.observe(plot);
    cleanup.push(() => {
      resize.disconnect();
      chart.destroy();
    });
  };
  // Sized once the panel is in the page.
  const frame = requestAnimationFrame(create);
  cleanup.push(() => cancelAnimationFrame(frame));
  return node;
}

function tensorPanel(runId, key, cleanup) {
  const body = el("div.tensor-body", {}, el("p.muted", {}, "loading…"));
  const node = el("section.panel.tensor", { "data-key": key }, el("h3", {}, key), body);
  getTensor(runId, key).then(
    (info) => {
      body.replaceChildren(
        el("div.muted", {}, `${info.dtype} · shape [${info.shape.join(", ")}] per step · ${info.steps.length} steps`),
        el("div.tensor-views", {}, heatmapView(runId, key, info), histogramView(runId, key)),
        statsView(info, cleanup),
      );
    },
    (err) => body.replaceChildren(errorBox(err, `tensor ${key}`)),
  );
  return node;
}

export function tensorsSection(runId, keys) {
  const cleanup = [];
  return {
    node: el("div.panel-list", {}, keys.map((key) => tensorPanel(runId, key, cleanup))),
    destroy: () => cleanup.forEach((stop) => stop()),
  };
}
