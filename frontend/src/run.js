// The run view (one run: its charts, images, tensors, records) and the compare view (several
// runs' charts overlaid). While a shown run is live, both poll every 2 s and charts grow.

import { getRun, isReport } from "./api.js";
import { scalarsSection } from "./charts.js";
import { el, errorBox, formatDate, formatDuration, formatNumber, runColour } from "./dom.js";
import { imagesSection } from "./images.js";
import { recordsSection } from "./records.js";
import { flatten, statusBadge } from "./runs.js";
import { tensorsSection } from "./tensors.js";

const POLL_MS = 2000;

function facts(run) {
  const meta = run.meta || {};
  return el("dl.facts", {},
    [
      ["project", run.project],
      ["status", statusBadge(run)],
      ["created", formatDate(run.created)],
      ["duration", formatDuration(run.duration)],
      ["tags", (run.tags || []).join(", ")],
      ["host", meta.host],
      ["git", meta.git_commit ? String(meta.git_commit).slice(0, 12) : null],
      ["id", run.id],
    ]
      .filter(([, v]) => v !== null && v !== undefined && v !== "")
      .map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, v))));
}

function paramsTable(runs) {
  const flat = runs.map((r) => flatten(r.params));
  const names = [...new Set(flat.flatMap((f) => Object.keys(f)))].sort();
  if (!names.length) return null;
  const differs = (name) => new Set(flat.map((f) => JSON.stringify(f[name]))).size > 1;
  // With several runs, the params that differ first: they are what the comparison is about.
  const ordered = runs.length > 1 ? [...names.filter(differs), ...names.filter((n) => !differs(n))] : names;
  return el("div.params-scroll", {}, el("table.params", {},
    runs.length > 1
      ? el("thead", {}, el("tr", {}, el("th", {}, "param"), runs.map((r, i) =>
        el("th", {}, el("span.swatch", { style: { background: runColour(i) } }), r.name))))
      : null,
    el("tbody", {}, ordered.map((name) => el(`tr${runs.length > 1 && differs(name) ? ".differs" : ""}`, {},
      el("th", {}, name), flat.map((f) => el("td.num", {}, formatNumber(f[name]))))))));
}

function section(title, content) {
  return el("section.block", {}, el("h2", {}, title), content);
}

export function runDetailView(root, ids) {
  let timer = null;
  let destroyed = false;
  const parts = [];
  const head = el("div.run-head", {}, el("p.muted", {}, "loading…"));
  const liveError = el("div");
  root.append(head, liveError);

  function renderHead(runs) {
    const single = runs.length === 1;
    const title = single ? runs[0].name : `Comparing ${runs.length} runs`;
    document.title = `${title} · stepstore`;
    head.replaceChildren(
      el("h1", {}, title),
      single
        ? facts(runs[0])
        : el("ul.run-list", {}, runs.map((r, i) => el("li", {},
          el("span.swatch", { style: { background: runColour(i) } }),
          el("a", { href: `#/run/${encodeURIComponent(r.id)}` }, r.name), " ", statusBadge(r)))),
    );
  }

  async function start() {
    let runs;
    try {
      runs = await Promise.all(ids.map((id) => getRun(id)));
    } catch (err) {
      head.replaceChildren(errorBox(err, "loading the run"));
      return;
    }
    if (destroyed) return;
    renderHead(runs);
    const scalars = scalarsSection(runs.map((r) => ({ id: r.id, name: r.name, keys: r.keys, events: r.events })));
    parts.push(scalars);
    const params = paramsTable(runs);
    root.append(section("Scalars", scalars.node));
    scalars.start();
    let images = null;
    if (runs.length === 1) {
      const { id, keys } = runs[0];
      if (keys.images.length) {
        images = imagesSection(id, keys.images);
        root.append(section("Images", images.node));
      }
      if (keys.tensors.length) {
        const tensors = tensorsSection(id, keys.tensors);
        parts.push(tensors);
        root.append(section("Tensors", tensors.node));
      }
      if (keys.records.length) root.append(section("Records", recordsSection(id, keys.records).node));
    }
    if (params) root.append(section("Params", params));
    if (!isReport()) poll(runs, scalars, images);
  }

  /** Re-reads live runs every 2 s: status, new keys, new points, new images. */
  function poll(runs, scalars, images) {
    let live = new Set(runs.filter((r) => r.live).map((r) => r.id));
    const tick = async () => {
      if (destroyed || !live.size) return;
      try {
        const fresh = await Promise.all([...live].map((id) => getRun(id)));
        if (destroyed) return;
        const byId = new Map(fresh.map((r) => [r.id, r]));
        runs = runs.map((r) => byId.get(r.id) || r);
        renderHead(runs);
        // The last round after a run ends still appends: it picks up the final points.
        await Promise.all([scalars.update(byId, live), images?.refresh()]);
        live = new Set(fresh.filter((r) => r.live).map((r) => r.id));
        liveError.replaceChildren();
      } catch (err) {
        liveError.replaceChildren(errorBox(err, "live update"));
      }
      if (!destroyed) timer = setTimeout(tick, POLL_MS);
    };
    timer = setTimeout(tick, POLL_MS);
  }

  start();
  return {
    destroy() {
      destroyed = true;
      clearTimeout(timer);
      for (const part of parts) part.destroy();
    },
  };
}
