// The data layer: every request the page makes goes through here. In a static report
// (a <script id="stepstore-report"> holding {"api": {...}, "blobs": {...}}) answers come from
// that map instead of the network, keyed by the canonical URL of the contract.

/**
 * What the browser tests and the benchmark read: API requests made, the last scalars URL,
 * `firstChartMs` (set by charts.js) and `chart(key)` (a chart's state, set by charts.js).
 */
export const stats = { requests: 0, lastScalarsQuery: null };
window.__stepstore = stats;

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

let report;

/**
 * The report's map, read once (after the document is parsed), or null on a live server. Its
 * keys are put in this page's canonical form, so encoding details of the writer cannot matter.
 */
function reportData() {
  if (report === undefined) {
    const node = document.getElementById("stepstore-report");
    report = null;
    if (node) {
      const data = JSON.parse(node.textContent);
      const api = new Map();
      for (const [url, answer] of Object.entries(data.api)) api.set(normalise(url), answer);
      report = { api, blobs: data.blobs || {} };
    }
  }
  return report;
}

function normalise(url) {
  const [path, search = ""] = url.split("?");
  const segments = path.split("/").map((s) => encodeURIComponent(decodeURIComponent(s)));
  return canonicalUrl(segments.join("/"), Object.fromEntries(groupParams(search)));
}

function groupParams(search) {
  const grouped = new Map();
  for (const [name, value] of new URLSearchParams(search)) {
    grouped.set(name, [...(grouped.get(name) || []), value]);
  }
  return grouped;
}

/** True when the page is a static report: no network, no downloads, no polling. */
export const isReport = () => reportData() !== null;

/** Parameters dropped from a report's keys: the report holds whole series, filtered here. */
const RANGE_PARAMS = ["start", "stop", "max_points", "x"];

function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === "") continue;
    for (const v of Array.isArray(value) ? value : [value]) search.append(name, String(v));
  }
  return search;
}

function withQuery(path, search) {
  const text = search.toString();
  return text ? `${path}?${text}` : path;
}

/** The report's key for a request: path plus its parameters sorted by name, ranges removed. */
function canonicalUrl(path, params = {}) {
  const search = query(params);
  for (const name of RANGE_PARAMS) search.delete(name);
  search.sort();
  return withQuery(path, search);
}

async function get(path, params = {}) {
  stats.requests += 1;
  if (isReport()) {
    const answer = report.api.get(canonicalUrl(path, params));
    if (answer === undefined) throw new ApiError("not in this report", 404);
    // A copy, so callers may change what they get without touching the report.
    return structuredClone(answer);
  }
  const url = withQuery(path, query(params));
  let response;
  try {
    response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  } catch (err) {
    throw new ApiError(`cannot reach the server (${err.message})`, 0);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // A non-JSON body (a proxy's error page, say): reported below with the status.
  }
  if (!response.ok) {
    const message = body && body.error ? body.error : `${response.status} ${response.statusText}`;
    throw new ApiError(message, response.status);
  }
  if (body === null) throw new ApiError(`${url}: the answer is not JSON`, response.status);
  return body;
}

const runPath = (id) => `/api/runs/${encodeURIComponent(id)}`;

export const listRuns = (where) => get("/api/runs", { where });

export const getRun = (id) => get(runPath(id));

/**
 * One key of one run. `range` = {x, start, stop, maxPoints}; a report filters its whole
 * series to [start, stop] instead of asking a server.
 */
export async function getScalars(id, key, { x = "step", start, stop, maxPoints } = {}) {
  const params = { key, x, start, stop, max_points: maxPoints };
  stats.lastScalarsQuery = withQuery(`${runPath(id)}/scalars`, query(params));
  const body = await get(`${runPath(id)}/scalars`, params);
  const series = body.series.find((s) => s.key === key) || body.series[0];
  return isReport() && (start !== undefined || stop !== undefined)
    ? filterRange(series, x, start, stop)
    : series;
}

function filterRange(series, x, start, stop) {
  const xs = series[x];
  const keep = [];
  for (let i = 0; i < xs.length; i++) {
    const v = xs[i];
    if (v === null) continue;
    if ((start === undefined || v >= start) && (stop === undefined || v <= stop)) keep.push(i);
  }
  const pick = (column) => keep.map((i) => column[i]);
  return {
    key: series.key,
    step: pick(series.step),
    epoch: pick(series.epoch),
    time: pick(series.time),
    value: pick(series.value),
  };
}

/** Links for a download of what a chart shows; null in a report (nothing to download from). */
export function scalarsDownload(id, key, format, { x = "step", start, stop } = {}) {
  if (isReport()) return null;
  return withQuery(`${runPath(id)}/scalars.${format}`, query({ key, x, start, stop }));
}

export const getImages = (id, key) => get(`${runPath(id)}/images`, { key });

/** Where an image's bytes come from: the server, or the report's inlined data: URL. */
export function imageSource(url) {
  if (!isReport()) return url;
  return report.blobs[url] || "";
}

export const getTensor = (id, key) => get(`${runPath(id)}/tensors`, { key });

export const getTensorSlice = (id, key, step, index) =>
  get(`${runPath(id)}/tensors/slice`, { key, step, index });

export const getTensorHistogram = (id, key) => get(`${runPath(id)}/tensors/histogram`, { key });

export const getRecords = (id, key) => get(`${runPath(id)}/records`, { key });
