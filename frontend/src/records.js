// Records: per key, a table of the logged dicts (step plus one column per field), sortable.

import { getRecords } from "./api.js";
import { el, errorBox, formatNumber, sortRows } from "./dom.js";

function cell(v) {
  if (v !== null && typeof v === "object") return JSON.stringify(v);
  return formatNumber(v);
}

function recordsTable(columns, rows) {
  let sort = { column: 0, direction: 1 };
  const head = el("thead");
  const body = el("tbody");

  function render() {
    head.replaceChildren(el("tr", {}, columns.map((name, i) => {
      const arrow = sort.column === i ? (sort.direction > 0 ? " ▲" : " ▼") : "";
      return el("th.sortable", {
        on: {
          click: () => {
            sort = { column: i, direction: sort.column === i ? -sort.direction : 1 };
            sortRows(rows, (r) => r[i], sort.direction);
            render();
          },
        },
      }, name, arrow);
    })));
    body.replaceChildren(...rows.map((row) => el("tr", {}, row.map((v) => el("td", {}, cell(v))))));
  }
  render();
  return el("div.records-scroll", {}, el("table.records", { testid: "records-table" }, head, body));
}

function recordsPanel(runId, key) {
  const body = el("div", {}, el("p.muted", {}, "loading…"));
  getRecords(runId, key).then(
    (r) => body.replaceChildren(r.rows.length ? recordsTable(r.columns, r.rows) : el("p.muted", {}, "No records.")),
    (err) => body.replaceChildren(errorBox(err, `records ${key}`)),
  );
  return el("section.panel", { "data-key": key }, el("h3", {}, key), body);
}

export function recordsSection(runId, keys) {
  return { node: el("div.panel-list", {}, keys.map((key) => recordsPanel(runId, key))) };
}
