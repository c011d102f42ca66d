// Small DOM and formatting helpers shared by the views.

/**
 * Creates an element: `el("div.cls", {attrs, on: {click}}, children...)`. Attributes named
 * `testid` become `data-testid`; children may be strings, nodes, arrays, null or false.
 */
export function el(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const node = document.createElement(tag || "div");
  if (classes.length) node.className = classes.join(" ");
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "on") {
      for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
    } else if (name === "testid") {
      node.dataset.testid = value;
    } else if (name === "style" && typeof value === "object") {
      Object.assign(node.style, value);
    } else if (name in node && typeof value !== "string") {
      node[name] = value;
    } else {
      node.setAttribute(name, value === true ? "" : value);
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : String(child));
  }
}

/** A visible error box: API failures are always shown, never swallowed. */
export function errorBox(err, context) {
  const text = err && err.message ? err.message : String(err);
  return el("pre.error", { role: "alert" }, context ? `${context}: ${text}` : text);
}

export function formatNumber(v) {
  if (v === null || v === undefined) return "";
  if (v === "inf") return "+inf";
  if (v === "-inf") return "-inf";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return Number(v.toPrecision(4)).toExponential();
  return String(Number(v.toPrecision(5)));
}

export function formatDate(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const h = Math.floor(m / 60);
  return h < 48 ? `${h}h ${m % 60}m` : `${Math.floor(h / 24)}d ${h % 24}h`;
}

/** One colour per run, in the order runs are shown (Tableau 10). */
const PALETTE = [
  "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
  "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
];

export const runColour = (i) => PALETTE[i % PALETTE.length];

/** Sorts rows in place by `value(row)`: numbers numerically, text naturally, blanks last. */
export function sortRows(rows, value, direction) {
  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
  const blank = (v) => v === null || v === undefined || v === "";
  return rows.sort((a, b) => {
    const x = value(a);
    const y = value(b);
    if (blank(x) || blank(y)) return blank(x) - blank(y);
    const order =
      typeof x === "number" && typeof y === "number" ? x - y : collator.compare(String(x), String(y));
    return order * direction;
  });
}
