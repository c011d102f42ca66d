// Entry point: hash routing between the runs table (#/), one run (#/run/<id>) and a
// comparison (#/compare?runs=a,b).

import { isReport } from "./api.js";
import { el } from "./dom.js";
import { runDetailView } from "./run.js";
import { runsView } from "./runs.js";

let current = null;

function route() {
  current?.destroy();
  const app = document.getElementById("app");
  app.replaceChildren();
  window.scrollTo(0, 0);
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, search = ""] = hash.split("?");
  const run = path.match(/^\/run\/(.+)$/);
  if (run) {
    current = runDetailView(app, [decodeURIComponent(run[1])]);
  } else if (path === "/compare") {
    const ids = (new URLSearchParams(search).get("runs") || "").split(",").filter(Boolean);
    current = runDetailView(app, ids);
  } else {
    document.title = "runs · stepstore";
    current = runsView(app);
  }
}

function start() {
  if (isReport()) document.getElementById("mode").replaceChildren(el("span.badge", {}, "static report"));
  window.addEventListener("hashchange", route);
  route();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
