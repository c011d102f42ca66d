// The runs table: filter box (the filter language, sent as `where=`), sortable columns,
// selection for comparison, and virtualised rows (only the visible ones are in the DOM).

import { ApiError, isReport, listRuns } from "./api.js";
import { el, errorBox, formatDate, formatDuration, formatNumber, sortRows } from "./dom.js";

const ROW_HEIGHT = 28;
const OVERSCAN = 8;
const POLL_MS = 2000;

// Kept across visits to the table, so going back to it keeps the filter, sort and selection.
const state = { where: "", sort: { column: "created", direction: -1 }, selected: new Set() };

/** Nested params as dotted paths: {model: {width: 64}} -> {"model.width": 64}. */
export function flatten(params, prefix = "", out = {}) {
  for (const [name, value] of Object.entries(params || {})) {
    const path = prefix ? `${prefix}.${name}` : name;
    if (value && typeof value === "object" && !Array.isArray(value)) flatten(value, path, out);
    else out[path] = Array.isArray(value) ? JSON.stringify(value) : value;
  }
  return out;
}

export function statusBadge(run) {
  return el(
    `span.status.status-${run.status}${run.live ? ".live" : ""}`,
    { title: run.live ? "live: the run is still writing" : run.status },
    run.live ? "● " : "",
    run.status,
  );
}

function columnsFor(runs) {
  const params = new Set();
  const metrics = new Set();
  for (const run of runs) {
    for (const name of Object.keys(run.flatParams)) params.add(name);
    for (const name of Object.keys(run.summary || {})) metrics.add(name);
  }
  const number = (v) => el("span.num", {}, formatNumber(v));
  return [
    { id: "select", label: "", width: 32, select: true },
    { id: "name", label: "name", width: 200, value: (r) => r.name, render: (r) => el("a", { href: `#/run/${encodeURIComponent(r.id)}` }, r.name) },
    { id: "project", label: "project", width: 120, value: (r) => r.project },
    { id: "status", label: "status", width: 110, value: (r) => r.status, render: statusBadge },
    { id: "created", label: "created", width: 140, value: (r) => r.created, render: (r) => formatDate(r.created) },
    { id: "duration", label: "duration", width: 90, value: (r) => r.duration, render: (r) => formatDuration(r.duration) },
    ...[...params].sort().map((name) => ({
      id: `params.${name}`, label: name, width: 110, kind: "param",
      value: (r) => r.flatParams[name], render: (r) => number(r.flatParams[name]),
    })),
    ...[...metrics].sort().map((name) => ({
      id: `summary.${name}`, label: name, width: 110, kind: "metric",
      value: (r) => sortable(r.summary?.[name]?.last), render: (r) => number(r.summary?.[name]?.last),
    })),
  ];
}

/** Infinities sort as numbers; NaN (null) sorts as a blank. */
function sortable(v) {
  if (v === "inf") return Infinity;
  if (v === "-inf") return -Infinity;
  return v;
}

export function runsView(root) {
  let runs = [];
  let columns = [];
  let request = 0;
  let pollTimer = null;
  let destroyed = false;

  const filter = el("input.filter", {
    type: "search", testid: "filter-input", value: state.where, spellcheck: false,
    placeholder: "filter, e.g. params.lr < 0.01 and status = 'finished'",
    "aria-label": "filter runs",
  });
  const filterError = el("div.filter-error", { testid: "filter-error", hidden: true });
  const count = el("span.count");
  const compare = el("button.primary", { testid: "compare-button", type: "button" });
  const scroller = el("div.table-scroll", { testid: "runs-table", role: "table" });
  const header = el("div.thead", { role: "row" });
  const body = el("div.tbody");
  const message = el("div");
  scroller.append(header, body);

  root.append(
    el("div.toolbar", {}, isReport() ? null : filter, count, compare),
    filterError,
    message,
    scroller,
  );

  let typing = null;
  filter.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(apply, 400);
  });
  filter.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      clearTimeout(typing);
      apply();
    }
  });
  compare.addEventListener("click", () => {
    const ids = runs.filter((r) => state.selected.has(r.id)).map((r) => r.id);
    if (ids.length) location.hash = `#/compare?runs=${ids.map(encodeURIComponent).join(",")}`;
  });
  let frame = 0;
  scroller.addEventListener("scroll", () => {
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(renderRows);
  });
  window.addEventListener("resize", renderRows);

  function apply() {
    state.where = filter.value.trim();
    load();
  }

  async function load() {
    const mine = ++request;
    clearTimeout(pollTimer);
    try {
      const body = await listRuns(state.where);
      if (mine !== request || destroyed) return;
      filterError.hidden = true;
      filterError.textContent = "";
      message.replaceChildren();
      setRuns(body.runs);
    } catch (err) {
      if (mine !== request || destroyed) return;
      if (err instanceof ApiError && err.status === 400) {
        filterError.textContent = err.message;
        filterError.hidden = false;
      } else {
        message.replaceChildren(errorBox(err, "loading runs"));
      }
    }
    if (!isReport() && !destroyed && runs.some((r) => r.live)) pollTimer = setTimeout(load, POLL_MS);
  }

  function setRuns(list) {
    runs = list.map((r) => ({ ...r, flatParams: flatten(r.params) }));
    columns = columnsFor(runs);
    const known = new Set(runs.map((r) => r.id));
    for (const id of state.selected) if (!known.has(id)) state.selected.delete(id);
    sortRunsBy();
    renderHeader();
    renderRows();
  }

  function sortRunsBy() {
    const column = columns.find((c) => c.id === state.sort.column) || columns[4];
    sortRows(runs, column.value, state.sort.direction);
  }

  function template() {
    return columns.map((c) => `${c.width}px`).join(" ");
  }

  function renderHeader() {
    const width = columns.reduce((sum, c) => sum + c.width, 0);
    header.style.gridTemplateColumns = template();
    body.style.width = header.style.width = `${width}px`;
    header.replaceChildren(
      ...columns.map((c) => {
        if (c.select) {
          const all = el("input", { type: "checkbox", title: "select all shown runs", "aria-label": "select all" });
          all.checked = runs.length > 0 && runs.every((r) => state.selected.has(r.id));
          all.addEventListener("change", () => {
            for (const r of runs) all.checked ? state.selected.add(r.id) : state.selected.delete(r.id);
            renderRows();
          });
          return el("div.th", { role: "columnheader" }, all);
        }
        const sorted = state.sort.column === c.id;
        const arrow = sorted ? (state.sort.direction > 0 ? " ▲" : " ▼") : "";
        return el(
          `div.th.sortable${c.kind ? `.${c.kind}` : ""}`,
          {
            role: "columnheader", title: c.id, "data-column": c.id,
            on: {
              click: () => {
                state.sort = { column: c.id, direction: sorted ? -state.sort.direction : 1 };
                sortRunsBy();
                renderHeader();
                renderRows();
              },
            },
          },
          c.label,
          arrow,
        );
      }),
    );
  }

  function renderRows() {
    if (destroyed) return;
    body.style.height = `${runs.length * ROW_HEIGHT}px`;
    const top = scroller.scrollTop;
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(runs.length, Math.ceil((top + scroller.clientHeight) / ROW_HEIGHT) + OVERSCAN);
    const rows = [];
    for (let i = first; i < last; i++) rows.push(renderRow(runs[i], i));
    body.replaceChildren(...rows);
    const n = state.selected.size;
    count.textContent = `${runs.length} run${runs.length === 1 ? "" : "s"}`;
    compare.textContent = n ? `Compare (${n})` : "Compare";
    compare.disabled = n === 0;
  }

  function renderRow(run, i) {
    const row = el(`div.tr${i % 2 ? ".odd" : ""}${state.selected.has(run.id) ? ".selected" : ""}`, {
      role: "row", testid: "run-row", "data-run-id": run.id,
      style: { top: `${i * ROW_HEIGHT}px`, height: `${ROW_HEIGHT}px`, gridTemplateColumns: template() },
    });
    for (const c of columns) {
      if (c.select) {
        const box = el("input", { type: "checkbox", "aria-label": `select ${run.name}` });
        box.checked = state.selected.has(run.id);
        box.addEventListener("change", () => {
          box.checked ? state.selected.add(run.id) : state.selected.delete(run.id);
          renderRows();
        });
        row.append(el("div.td", { role: "cell" }, box));
      } else {
        const content = c.render ? c.render(run) : c.value(run);
        const title = typeof content === "string" ? content : String(c.value(run) ?? "");
        row.append(el(`div.td${c.kind ? `.${c.kind}` : ""}`, { role: "cell", title }, content));
      }
    }
    row.addEventListener("click", (e) => {
      if (e.target.closest("input, a")) return;
      location.hash = `#/run/${encodeURIComponent(run.id)}`;
    });
    return row;
  }

  load();
  return {
    destroy() {
      destroyed = true;
      clearTimeout(pollTimer);
      clearTimeout(typing);
      cancelAnimationFrame(frame);
      window.removeEventListener("resize", renderRows);
    },
  };
}
