// Scalar charts: one uPlot chart per key with every shown run overlaid. The server downsamples
// (min/max per bucket) to the chart's pixel width, and each zoom asks again for just the visible
// range, so a one-point spike is drawn at every zoom level. A run's events (a flight recorder's
// trigger firing) are dashed vertical lines across its charts, with a flag saying what fired.

import uPlot from "uplot";
import { getScalars, isReport, scalarsDownload, stats } from "./api.js";
import { el, errorBox, formatNumber, runColour } from "./dom.js";

const CHART_HEIGHT = 240;

/** Charts on the page by key, for `window.__stepstore.chart(key)` (the browser tests). */
const registry = new Map();
stats.chart = (key) => registry.get(key)?.describe() ?? null;

/** x column names and their labels. */
const X_AXES = { step: "step", epoch: "epoch", time: "wall time" };

/** Colour of event lines: a trigger firing must not look like one more series. */
const EVENT_COLOUR = "#cf222e";

/** An event for people: where, what fired, and why (the rank only when not the first). */
function eventText(event) {
  const rank = event.rank ? ` · rank ${event.rank}` : "";
  return `step ${event.step} · ${event.trigger} · ${event.reason}${rank}`;
}

/**
 * Merges several runs' sorted x columns into rows uPlot can draw: a row per distinct x (runs
 * sharing an x share its row), `undefined` where a run has no point (spanned, skipped by hover)
 * and `null` where its value is not finite (a gap).
 */
function align(columns) {
  const heads = columns.map(() => 0);
  const xs = [];
  const ys = columns.map(() => []);
  const raws = columns.map(() => []);
  for (;;) {
    let x = Infinity;
    for (let r = 0; r < columns.length; r++) {
      if (heads[r] < columns[r].x.length && columns[r].x[heads[r]] < x) x = columns[r].x[heads[r]];
    }
    if (x === Infinity) break;
    xs.push(x);
    for (let r = 0; r < columns.length; r++) {
      const c = columns[r];
      if (heads[r] < c.x.length && c.x[heads[r]] === x) {
        ys[r].push(c.y[heads[r]]);
        raws[r].push(c.raw[heads[r]]);
        heads[r] += 1;
      } else {
        ys[r].push(undefined);
        raws[r].push(undefined);
      }
    }
  }
  return { xs, ys, raws };
}

/** Debiased exponential moving average over the finite values; gaps are carried over. */
function ema(values, weight) {
  let last = 0;
  let n = 0;
  return values.map((v) => {
    if (typeof v !== "number") return undefined;
    last = last * weight + (1 - weight) * v;
    n += 1;
    return last / (1 - weight ** n);
  });
}

function fade(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${n >> 16},${(n >> 8) & 255},${n & 255},${alpha})`;
}

/** One chart: `runs` = [{id, name, colour, events}], `options` = {x, log, smoothing}. */
class ScalarChart {
  constructor(key, runs, options) {
    this.key = key;
    this.runs = runs;
    this.options = options;
    this.zoom = null;
    this.series = runs.map(() => null);
    this.seq = 0;
    this.loads = 0; // answers drawn, for the zoom benchmark
    this.uplot = null;
    this.drawnEvents = [];
    this.flags = el("div.event-flags");
    this.plot = el("div.plot");
    this.note = el("div.note");
    this.errors = el("div");
    this.downloads = el("div.downloads");
    const reset = el("button.small", { type: "button", testid: "zoom-reset", title: "drag to zoom, shift-drag to pan; this (or a double-click) shows everything", on: { click: () => this.resetZoom() } }, "reset zoom");
    this.node = el("section.chart", { testid: "chart", "data-key": key },
      el("div.chart-head", {}, el("h3", {}, key), reset),
      this.plot, this.note, this.errors, this.downloads);
    this.resize = new ResizeObserver(() => this.uplot && this.uplot.setSize(this.size()));
    this.resize.observe(this.plot);
    // Captured before uPlot's own handler sees it: shift-drag pans instead of selecting.
    this.plot.addEventListener("mousedown", (e) => this.pan(e), true);
    registry.set(key, this);
  }

  /** Shift-drag moves the x range with the mouse, then asks the server for the new range. */
  pan(down) {
    const u = this.uplot;
    if (!down.shiftKey || !u || down.button !== 0) return;
    down.stopPropagation();
    down.preventDefault();
    const { min, max } = u.scales.x;
    const perPixel = (max - min) / (u.bbox.width / devicePixelRatio);
    const move = (e) => {
      const shift = (e.clientX - down.clientX) * perPixel;
      u.setScale("x", { min: min - shift, max: max - shift });
    };
    const up = () => {
      document.removeEventListener("mousemove", move);
      document.removeEventListener("mouseup", up);
      if (u.scales.x.min === min) return;
      this.zoom = { min: u.scales.x.min, max: u.scales.x.max };
      this.load();
    };
    document.addEventListener("mousemove", move);
    document.addEventListener("mouseup", up);
  }

  size() {
    return { width: Math.max(200, this.plot.clientWidth), height: CHART_HEIGHT };
  }

  /** The plot's width in CSS pixels: how many buckets to ask the server for. */
  pixelWidth() {
    return this.uplot ? Math.round(this.uplot.bbox.width / devicePixelRatio) : this.size().width;
  }

  range() {
    return {
      x: this.options.x,
      start: this.zoom?.min,
      stop: this.zoom?.max,
      maxPoints: Math.min(100000, Math.max(2, this.pixelWidth())),
    };
  }

  /** Asks the server for every run's points in the visible range, then redraws. */
  async load() {
    const seq = ++this.seq;
    const range = this.range();
    const results = await Promise.allSettled(this.runs.map((r) => getScalars(r.id, this.key, range)));
    if (seq !== this.seq) return;
    const failed = [];
    results.forEach((result, i) => {
      if (result.status === "fulfilled") this.series[i] = result.value;
      else failed.push(errorBox(result.reason, this.runs[i].name));
    });
    this.errors.replaceChildren(...failed);
    this.draw();
    this.loads += 1;
  }

  /**
   * Appends the points live runs wrote since the last answer (new steps only). A zoomed chart
   * keeps its view; once appended points outgrow the width, the whole range is asked again.
   */
  async append(liveIds) {
    if (this.zoom) return;
    const total = this.series.reduce((n, s) => n + (s ? s.step.length : 0), 0);
    if (total > 8 * this.pixelWidth()) return this.load();
    const seq = this.seq;
    const x = this.options.x;
    const jobs = this.runs.map(async (run, i) => {
      const s = this.series[i];
      if (!liveIds.has(run.id)) return;
      const n = s ? s.step.length : 0;
      const lastStep = n ? s.step[n - 1] : -Infinity;
      const start = n && s[x][n - 1] !== null ? s[x][n - 1] : undefined;
      const fresh = await getScalars(run.id, this.key, { x, start, maxPoints: this.pixelWidth() });
      if (seq !== this.seq) return;
      if (!s) {
        this.series[i] = fresh;
        return;
      }
      for (let j = 0; j < fresh.step.length; j++) {
        if (fresh.step[j] <= lastStep) continue;
        for (const column of ["step", "epoch", "time", "value"]) s[column].push(fresh[column][j]);
      }
    });
    const results = await Promise.allSettled(jobs);
    if (seq !== this.seq) return;
    const failed = results.filter((r) => r.status === "rejected").map((r) => errorBox(r.reason, "live update"));
    this.errors.replaceChildren(...failed);
    this.draw();
  }

  resetZoom() {
    this.zoom = null;
    this.load();
  }

  setOptions(options) {
    const rebuild = options.x !== this.options.x;
    this.options = options;
    this.uplot?.destroy();
    this.uplot = null;
    if (rebuild) {
      this.zoom = null;
      this.load();
    } else {
      this.draw();
    }
  }

  /** Each run's drawable columns on the chosen x, with the counts of what cannot be drawn. */
  columns() {
    const { x, log } = this.options;
    const counts = { nan: 0, inf: 0, nonPositive: 0 };
    const columns = this.series.map((s) => {
      const c = { x: [], y: [], raw: [] };
      if (!s) return c;
      for (let i = 0; i < s.value.length; i++) {
        const xv = s[x][i];
        if (xv === null) continue;
        const v = s.value[i];
        let y = v;
        if (v === null) counts.nan += 1;
        else if (typeof v === "string") {
          counts.inf += 1;
          y = null;
        } else if (log && v <= 0) {
          counts.nonPositive += 1;
          y = null;
        }
        c.x.push(xv);
        c.y.push(y);
        c.raw.push(v);
      }
      return c;
    });
    return { columns, counts };
  }

  draw() {
    const { columns, counts } = this.columns();
    const { xs, ys, raws } = align(columns);
    const smoothing = this.options.smoothing;
    const data = [xs];
    this.raws = [null];
    for (let r = 0; r < ys.length; r++) {
      data.push(ys[r]);
      this.raws.push(raws[r]);
      if (smoothing > 0) {
        data.push(ema(ys[r], smoothing));
        this.raws.push(null);
      }
    }
    this.showNote(counts, xs.length);
    this.showDownloads();
    if (!this.uplot) {
      this.uplot = new uPlot(this.config(), data, this.plot);
      this.uplot.over.append(this.flags);
      // For the page-load benchmark: milliseconds from navigation to the first chart with data.
      if (xs.length && stats.firstChartMs === undefined) stats.firstChartMs = performance.now();
    } else if (this.zoom) {
      this.uplot.setData(data, false);
      this.uplot.setScale("x", { min: this.zoom.min, max: this.zoom.max });
    } else {
      this.uplot.setData(data);
    }
  }

  showNote(counts, rows) {
    const parts = [];
    if (counts.inf) parts.push(`${counts.inf} infinite value${counts.inf > 1 ? "s" : ""} shown as gaps`);
    if (counts.nan) parts.push(`${counts.nan} NaN${counts.nan > 1 ? "s" : ""} (line breaks)`);
    if (counts.nonPositive) {
      parts.push(`${counts.nonPositive} value${counts.nonPositive > 1 ? "s" : ""} ≤ 0 not drawn on the log scale`);
    }
    if (!rows && this.series.some(Boolean)) {
      parts.push(this.options.x === "epoch" ? "no epochs were logged with this key" : "no points in this range");
    }
    this.note.textContent = parts.join(" · ");
  }

  showDownloads() {
    if (isReport()) return;
    const range = { x: this.options.x, start: this.zoom?.min, stop: this.zoom?.max };
    const links = this.runs.map((run) =>
      el("span.download", {},
        this.runs.length > 1 ? `${run.name}: ` : "download: ",
        el("a", { testid: "download-csv", href: scalarsDownload(run.id, this.key, "csv", range), download: "" }, "CSV"),
        " · ",
        el("a", { testid: "download-parquet", href: scalarsDownload(run.id, this.key, "parquet", range), download: "" }, "Parquet")));
    this.downloads.replaceChildren(...links);
  }

  config() {
    const { x, log, smoothing } = this.options;
    const series = [{ label: X_AXES[x], value: x === "time" ? undefined : (u, v) => formatNumber(v) }];
    this.runs.forEach((run, r) => {
      const colour = run.colour;
      const value = (u, v, si, idx) => {
        if (idx === null || idx === undefined) return "--";
        const raw = this.raws[si]?.[idx];
        return raw === undefined ? formatNumber(v) : raw === null ? "NaN" : formatNumber(raw);
      };
      if (smoothing > 0) {
        series.push({ label: `${run.name} (raw)`, stroke: fade(colour, 0.3), width: 1, value });
        series.push({ label: run.name, stroke: colour, width: 1.5, value });
      } else {
        series.push({ label: run.name, stroke: colour, width: 1.25, value });
      }
    });
    return {
      ...this.size(),
      series,
      scales: { x: { time: x === "time" }, y: log ? { distr: 3 } : {} },
      axes: [
        { label: X_AXES[x], labelSize: 20, grid: { stroke: "#eee" } },
        { size: 64, grid: { stroke: "#eee" }, values: (u, splits) => splits.map(formatNumber) },
      ],
      cursor: {
        drag: { x: true, y: false, setScale: false },
        // The hover line follows the mouse across charts; zoom stays each chart's own.
        sync: { key: "stepstore-x", setSeries: false, filters: { pub: (type) => type === "mousemove" || type === "mouseleave" } },
        bind: { dblclick: () => () => { this.resetZoom(); return null; } },
      },
      legend: { live: true },
      hooks: { setSelect: [(u) => this.onSelect(u)], draw: [(u) => this.drawEvents(u)] },
    };
  }

  /** The shown runs' events placed on the chosen x axis: [{run, event, x}]. */
  marks() {
    const x = this.options.x;
    const marks = [];
    this.runs.forEach((run, r) => {
      for (const event of run.events || []) {
        const at = x === "step" ? event.step : x === "time" ? event.time : this.epochAt(r, event.step);
        if (at !== null && at !== undefined) marks.push({ run, event, x: at });
      }
    });
    return marks;
  }

  /** Run `r`'s epoch at `step`: that of its last point received at or before it, if any. */
  epochAt(r, step) {
    const s = this.series[r];
    let epoch = null;
    for (let i = 0; s && i < s.step.length && s.step[i] <= step; i++) epoch = s.epoch[i];
    return epoch;
  }

  /** After each redraw: a dashed line per event in view, and its flag (hover: what fired). */
  drawEvents(u) {
    const { ctx } = u;
    const { left, top, width, height } = u.bbox;
    const flags = [];
    this.drawnEvents = [];
    ctx.save();
    ctx.strokeStyle = EVENT_COLOUR;
    ctx.lineWidth = 2 * devicePixelRatio;
    ctx.setLineDash([5 * devicePixelRatio, 3 * devicePixelRatio]);
    for (const { run, event, x } of this.marks()) {
      const px = Math.round(u.valToPos(x, "x", true));
      if (!(px >= left && px <= left + width)) continue;
      ctx.beginPath();
      ctx.moveTo(px, top);
      ctx.lineTo(px, top + height);
      ctx.stroke();
      const label = `${this.runs.length > 1 ? `${run.name}: ` : ""}${eventText(event)}`;
      // In the plot's right half the tooltip opens to the left, so it stays on the page.
      flags.push(el(px - left > width / 2 ? "div.event-flag.leftward" : "div.event-flag", {
        testid: "event-flag",
        title: label,
        "data-label": label,
        style: { left: `${(px - left) / devicePixelRatio}px` },
      }));
      this.drawnEvents.push({ run: run.name, step: event.step, trigger: event.trigger, px });
    }
    ctx.restore();
    this.flags.replaceChildren(...flags);
  }

  onSelect(u) {
    const { left, width } = u.select;
    if (width < 3) return;
    const min = u.posToVal(left, "x");
    const max = u.posToVal(left + width, "x");
    u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
    this.zoom = { min, max };
    this.load();
  }

  /**
 * What the tests read: points received, series names, y range drawn, x range shown, events
 * drawn (`px`: the line's canvas column) and the plot's place on the canvas.
 */
  describe() {
    const u = this.uplot;
    let yMax = -Infinity;
    let yMin = Infinity;
    for (const s of this.series) {
      for (const v of s ? s.value : []) {
        if (typeof v === "number") {
          yMax = Math.max(yMax, v);
          yMin = Math.min(yMin, v);
        }
      }
    }
    return {
      points: this.series.reduce((n, s) => n + (s ? s.value.length : 0), 0),
      series: u ? u.series.slice(1).map((s) => s.label) : [],
      yMin: yMin === Infinity ? null : yMin,
      yMax: yMax === -Infinity ? null : yMax,
      xMin: u ? u.scales.x.min : null,
      xMax: u ? u.scales.x.max : null,
      zoomed: this.zoom !== null,
      loads: this.loads,
      events: this.drawnEvents,
      plot: u ? { left: u.bbox.left, width: u.bbox.width } : null,
    };
  }

  destroy() {
    this.seq += 1;
    this.resize.disconnect();
    this.uplot?.destroy();
    if (registry.get(this.key) === this) registry.delete(this.key);
  }
}

/**
 * The scalars part of a run or compare view: shared controls (x axis, log scale, smoothing),
 * a key picker, the runs' events and one chart per picked key. `runs` = [{id, name, keys,
 * events}].
 */
export function scalarsSection(runs) {
  const shown = runs.map((run, i) => ({ ...run, colour: runColour(i) }));
  const options = { x: "step", log: false, smoothing: 0 };
  const charts = new Map();
  const allKeys = () => [...new Set(shown.flatMap((r) => r.keys.scalars))].sort();
  const picked = new Set(allKeys().slice(0, 6));

  const xAxis = el("select", { testid: "x-axis", "aria-label": "x axis" },
    Object.entries(X_AXES).map(([value, label]) => el("option", { value }, label)));
  const logScale = el("input", { type: "checkbox", testid: "log-scale" });
  const smoothing = el("input", { type: "range", testid: "smoothing", min: "0", max: "0.99", step: "0.01", value: "0" });
  const smoothingValue = el("span.num", {}, "0");
  const picker = el("div.key-picker");
  const events = el("div.events", { testid: "events" });
  const grid = el("div.chart-grid");
  const node = el("section.scalars", {},
    el("div.controls", {},
      el("label", {}, "x axis ", xAxis),
      el("label", {}, logScale, " log scale"),
      el("label", {}, "smoothing ", smoothing, " ", smoothingValue),
      el("span.muted.hint", {}, "drag: zoom · shift-drag: pan · double-click: reset")),
    picker, events, grid);

  function update() {
    for (const chart of charts.values()) chart.setOptions({ ...options });
  }
  xAxis.addEventListener("change", () => { options.x = xAxis.value; update(); });
  logScale.addEventListener("change", () => { options.log = logScale.checked; update(); });
  let frame = 0;
  smoothing.addEventListener("input", () => {
    options.smoothing = Number(smoothing.value);
    smoothingValue.textContent = smoothing.value;
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(update);
  });

  function renderPicker() {
    const keys = allKeys();
    if (!keys.length) {
      picker.replaceChildren(el("p.muted", {}, "No scalars were logged."));
      return;
    }
    picker.replaceChildren(
      el("span.muted", {}, "keys: "),
      ...keys.map((key) => {
        const box = el("input", { type: "checkbox", value: key });
        box.checked = picked.has(key);
        box.addEventListener("change", () => {
          box.checked ? picked.add(key) : picked.delete(key);
          renderCharts();
        });
        return el("label.chip", {}, box, key);
      }),
    );
  }

  function renderEvents() {
    const items = shown.flatMap((run) => (run.events || []).map((event) =>
      el("li", { testid: "event" },
        el("span.event-line"),
        shown.length > 1 ? el("span", {}, el("span.swatch", { style: { background: run.colour } }), `${run.name}: `) : null,
        eventText(event),
        event.key ? el("span.muted", {}, ` (key ${event.key})`) : null)));
    events.replaceChildren(...(items.length ? [el("h4", {}, "events"), el("ul", {}, items)] : []));
  }

  function renderCharts() {
    for (const [key, chart] of charts) {
      if (!picked.has(key)) {
        chart.destroy();
        charts.delete(key);
      }
    }
    const added = [];
    for (const key of allKeys()) {
      if (!picked.has(key) || charts.has(key)) continue;
      const having = shown.filter((r) => r.keys.scalars.includes(key));
      const chart = new ScalarChart(key, having, { ...options });
      charts.set(key, chart);
      added.push(chart);
    }
    grid.replaceChildren(...allKeys().filter((k) => charts.has(k)).map((k) => charts.get(k).node));
    // Loaded once in the grid: the first request asks for as many points as the chart is wide.
    for (const chart of added) chart.load();
  }

  return {
    node,
    /** Draws the picker and charts; call once `node` is in the page (charts size to it). */
    start() {
      renderPicker();
      renderEvents();
      renderCharts();
    },
    /**
     * Runs still live (ids) get their new points appended; new keys join the picker, new
     * events the list and the charts.
     */
    async update(fresh, liveIds) {
      let changed = false;
      let newEvents = false;
      for (const run of shown) {
        const events = fresh.get(run.id)?.events;
        if (events && events.length !== (run.events || []).length) {
          run.events = events; // the charts hold this object: their next draw shows them
          newEvents = true;
        }
        const keys = fresh.get(run.id)?.keys?.scalars;
        if (keys && keys.join() !== run.keys.scalars.join()) {
          run.keys = { ...run.keys, scalars: keys };
          changed = true;
        }
      }
      if (changed) {
        if (!picked.size) for (const key of allKeys().slice(0, 6)) picked.add(key);
        renderPicker();
        renderCharts();
      }
      if (newEvents) renderEvents();
      await Promise.all([...charts.values()].map((chart) => chart.append(liveIds)));
    },
    destroy() {
      for (const chart of charts.values()) chart.destroy();
    },
  };
}
