"""The dashboard's JSON API (``stepstore ui``) against the floor of the same reads, one process.

    python benchmarks/bench_ui.py            # 10M-point series, 1,000 runs x 20 params
    python benchmarks/bench_ui.py --quick    # 1M points, 300 runs

The API runs under uvicorn in a thread of this process and is asked over HTTP (httpx), as the
page asks it. Each figure is the median of repeats; the floor of a view is
``RunView.scalars(...)`` plus ``json.dumps`` of its columns (what any server must do), and of
the runs table ``Store.runs()`` plus ``json.dumps`` of its fields, with the per-run
``.summary`` reads a server without the batched read would add. Prints markdown and writes
``benchmarks/results/ui.md`` and ``ui.json`` (``ui.quick.*`` with ``--quick``). Sections are a
dict in :func:`main`, so a page-load timing (headless Chromium) can join them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, load, median, num, perf, quiet, ratio, spread, table, verdict

import stepstore as ss

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Settings:
    """Sizes and repeats; ``--quick`` shrinks them."""

    repeats: int = 9
    view_points: int = 10_000_000
    max_points: int = 2_000
    runs: int = 1_000
    params: int = 20
    keys_per_run: int = 5

    @classmethod
    def quick(cls) -> Settings:
        return cls(repeats=5, view_points=1_000_000, runs=300)


def log_line(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {load()}] {message}", file=sys.stderr, flush=True)


class Server:
    """The dashboard under uvicorn in a thread, on a free loopback port."""

    def __init__(self, store: ss.Store) -> None:
        import uvicorn

        from stepstore.ui import create_app
        from stepstore.ui.serving import LOOPBACK_NAMES, bind

        self.socket = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        app = create_app(store, allowed_hosts=LOOPBACK_NAMES)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    def __enter__(self) -> Server:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join()
        self.socket.close()


def timed(fn: Any, repeats: int) -> tuple[list[float], Any]:
    """Seconds of each of ``repeats`` calls of ``fn`` (after one warm-up) and its result."""
    result = fn()
    times = []
    for _ in range(repeats):
        quiet()
        t0 = perf()
        result = fn()
        times.append(perf() - t0)
    return times, result


def columns_json(frame: Any) -> bytes:
    """The floor's encoding of a view: its four columns as JSON lists."""
    return json.dumps(
        {
            "step": frame["step"].tolist(),
            "time": (frame["time"].astype("int64") / 1e6).tolist(),
            "value": frame["value"].tolist(),
        }
    ).encode()


def spike_step(cfg: Settings) -> int:
    """Where the one spike of the big series is."""
    return cfg.view_points // 2 + 12_345


_BUILT: dict[Path, tuple[Path, str, float]] = {}


def build_view_run(cfg: Settings, tmp: Path) -> tuple[Path, str, float]:
    """A run with ``view_points`` points of ``loss`` (one spike of 1e6 near the middle) over
    100 epochs; recorded once per benchmark run (sections 1 and 3 share it)."""
    if tmp not in _BUILT:
        _BUILT[tmp] = _record_view_run(cfg, tmp)
    return _BUILT[tmp]


def _record_view_run(cfg: Settings, tmp: Path) -> tuple[Path, str, float]:
    store = tmp / "view"
    run = ss.init("bench-ui", store=store, journal_slots=1 << 22)
    log = run.log
    rng = np.random.default_rng(0)
    spike = spike_step(cfg)
    t0 = perf()
    block = 1_000_000
    for start in range(0, cfg.view_points, block):
        values = rng.standard_normal(min(block, cfg.view_points - start))
        if start <= spike < start + len(values):
            values[spike - start] = 1e6
        for step, v in enumerate(values.tolist(), start):
            log({"loss": v}, epoch=step * 100 // cfg.view_points)
    run.finish()
    return store, run.id, perf() - t0


def view(cfg: Settings, tmp: Path) -> dict[str, Any]:
    """Section 1: the 2,000-point view of the big series, full and zoomed to 1 % around its
    spike by step, time and epoch."""
    import httpx

    log_line(f"1 view: recording {cfg.view_points:,} points")
    path, run_id, build_s = build_view_run(cfg, tmp)
    out: dict[str, Any] = {"build_s": build_s, "points": cfg.view_points}
    store = ss.open(path)
    run = store.run(run_id)
    n = cfg.view_points
    lo = spike_step(cfg) - n // 200  # a 1 % zoom around the spike
    hi = lo + n // 100 - 1
    epoch = spike_step(cfg) * 100 // n
    times = run.scalars("loss", steps=(lo, hi))["time"]
    t_lo, t_hi = (t.value / 1e9 for t in (times.iloc[0], times.iloc[-1]))
    cases = {
        "full": ({}, {}),
        "zoom_step": ({"start": lo, "stop": hi}, {"steps": (lo, hi)}),
        "zoom_time": (
            {"x": "time", "start": repr(t_lo), "stop": repr(t_hi)},
            {"times": (t_lo, t_hi)},
        ),
        "zoom_epoch": ({"x": "epoch", "start": epoch, "stop": epoch}, {"epochs": (epoch, epoch)}),
    }
    with Server(store) as server, httpx.Client(base_url=server.url) as client:
        for name, (query, kwargs) in cases.items():
            log_line(f"1 view: {name}")

            def api(query: dict[str, Any] = query) -> Any:
                answer = client.get(
                    f"/api/runs/{run_id}/scalars",
                    params={"key": "loss", "max_points": cfg.max_points, **query},
                )
                answer.raise_for_status()
                return answer.json()["series"][0]

            def floor(kwargs: dict[str, Any] = kwargs) -> Any:
                frame = run.scalars("loss", max_points=cfg.max_points, **kwargs)
                columns_json(frame)
                return frame

            api_s, series = timed(api, cfg.repeats)
            floor_s, frame = timed(floor, cfg.repeats)
            out[name] = {
                "api_s": api_s,
                "floor_s": floor_s,
                "points": len(series["step"]),
                "floor_points": len(frame),
                "spike_kept": 1e6 in series["value"],
                "query": query,
            }
    store.close()
    return out


def build_runs(cfg: Settings, tmp: Path) -> tuple[Path, float]:
    """``runs`` finished runs, each with ``params`` params and ``keys_per_run`` scalar keys."""
    path = tmp / "runs"
    rng = random.Random(5)
    t0 = perf()
    for i in range(cfg.runs):
        params: dict[str, Any] = {f"p{j:02d}": rng.random() for j in range(cfg.params - 3)}
        params.update(optimizer=rng.choice(["sgd", "adam"]), model={"width": 64}, seed=i)
        run = ss.init("bench-ui-runs", store=path, params=params, fsync=False)
        for step in range(3):
            run.log({f"metric{k}": rng.random() for k in range(cfg.keys_per_run)}, step=step)
        run.finish()
    return path, perf() - t0


def runs_table(cfg: Settings, tmp: Path) -> dict[str, Any]:
    """Section 2: ``/api/runs`` of ``runs`` runs with ``params`` params each."""
    import httpx

    log_line(f"2 runs: creating {cfg.runs:,} runs")
    path, build_s = build_runs(cfg, tmp)
    store = ss.open(path)
    out: dict[str, Any] = {"build_s": build_s, "runs": cfg.runs, "params": cfg.params}

    def fields(view: Any) -> dict[str, Any]:
        return {"id": view.id, "name": view.name, "params": view.params, "tags": view.tags}

    def floor() -> Any:
        return json.dumps([fields(v) for v in store.runs()])

    def per_run_summary() -> Any:
        return json.dumps([{**fields(v), "summary": v.summary} for v in store.runs()])

    with Server(store) as server, httpx.Client(base_url=server.url) as client:

        def api() -> Any:
            answer = client.get("/api/runs")
            answer.raise_for_status()
            return answer.json()["runs"]

        log_line("2 runs: /api/runs")
        api_s, listed = timed(api, cfg.repeats)
    floor_s, _ = timed(floor, cfg.repeats)
    unbatched_s, _ = timed(per_run_summary, cfg.repeats)
    store.close()
    out.update(api_s=api_s, floor_s=floor_s, unbatched_s=unbatched_s, listed=len(listed))
    return out


CHROMIUM = "/usr/bin/chromium"

#: Drags across the middle 10 % of the loss chart's plot (what a user's zoom does).
DRAG = """() => {
    const over = document.querySelector("[data-testid=chart][data-key='loss'] .u-over");
    const box = over.getBoundingClientRect();
    return [box.x + box.width * 0.45, box.x + box.width * 0.55, box.y + box.height / 2];
}"""


def page(cfg: Settings, tmp: Path) -> dict[str, Any]:
    """Section 3: headless Chromium opens the run of the big series; the time from
    navigation to its chart drawn with data (the page's own ``performance.now()`` mark),
    and from a drag-zoom's mouse-up to the chart redrawn with the re-queried range."""
    from playwright.sync_api import sync_playwright

    log_line(f"3 page: recording {cfg.view_points:,} points (or reusing section 1's)")
    path, run_id, _ = build_view_run(cfg, tmp)
    first, zoom = [], []
    with Server(ss.open(path)) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        for attempt in range(cfg.repeats + 1):  # the first is a warm-up
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            tab = context.new_page()
            tab.goto(f"{server.url}/#/run/{run_id}")
            tab.wait_for_function("() => window.__stepstore.firstChartMs !== undefined")
            drawn = tab.evaluate("window.__stepstore.firstChartMs")
            x0, x1, y = tab.evaluate(DRAG)
            before = tab.evaluate("window.__stepstore.chart('loss').loads")
            tab.mouse.move(x0, y)
            tab.mouse.down()
            tab.mouse.move(x1, y, steps=4)
            t0 = perf()
            tab.mouse.up()
            tab.wait_for_function(
                "n => window.__stepstore.chart('loss').loads > n", arg=before, polling=5
            )
            zoomed = perf() - t0
            if attempt:
                first.append(drawn / 1000)
                zoom.append(zoomed)
            context.close()
        browser.close()
    return {"first_chart_s": first, "zoom_s": zoom, "points": cfg.view_points}


def report(cfg: Settings, res: dict[str, Any], quick: bool) -> str:
    env = res["env"]
    md = [
        f"# stepstore ui benchmark{' (quick)' if quick else ''}",
        "",
        f"Python {env['python']} on {env['platform']}, {env['cpus']} CPUs; load average "
        f"{env['loadavg_start'][0]:.2f} at the start, {res['loadavg_end'][0]:.2f} at the end. "
        f"Medians of {cfg.repeats} repeats, ms; API over HTTP (uvicorn in a thread, httpx).",
        "",
    ]
    targets = []
    if "view" in res:
        v = res["view"]
        md += [
            f"## 1. A {cfg.max_points:,}-point view of a {v['points']:,}-point series",
            "",
            "Floor: `RunView.scalars(..., max_points)` and `json.dumps` of its columns.",
            "",
        ]
        rows = []
        for name in ("full", "zoom_step", "zoom_time", "zoom_epoch"):
            case = v[name]
            api, floor = median(case["api_s"]), median(case["floor_s"])
            lo, hi = spread(case["api_s"])
            rows.append(
                [
                    name,
                    json.dumps(case["query"]) if case["query"] else "-",
                    case["points"],
                    num(api * 1e3),
                    f"{num(lo * 1e3)}–{num(hi * 1e3)}",
                    num(floor * 1e3),
                    ratio(api / floor),
                    "yes" if case["spike_kept"] else "no",
                ]
            )
            if name in ("full", "zoom_step", "zoom_time"):
                targets.append((f"view {name} < 100 ms", f"{num(api * 1e3)} ms", api < 0.1))
        md.append(
            table(
                [
                    "range",
                    "query",
                    "points",
                    "API ms",
                    "API range",
                    "floor ms",
                    "API/floor",
                    "spike in view",
                ],
                rows,
            )
        )
        md.append("")
    if "runs" in res:
        r = res["runs"]
        api, floor, unbatched = (median(r[k]) for k in ("api_s", "floor_s", "unbatched_s"))
        md += [
            f"## 2. `/api/runs`: {r['runs']:,} runs x {r['params']} params, "
            f"{cfg.keys_per_run} scalar keys each",
            "",
            table(
                ["what", "ms", "vs floor"],
                [
                    ["API `/api/runs` (HTTP, JSON)", num(api * 1e3), ratio(api / floor)],
                    ["floor: `Store.runs()` + json.dumps", num(floor * 1e3), "1×"],
                    [
                        "`Store.runs()` + `.summary` per run",
                        num(unbatched * 1e3),
                        ratio(unbatched / floor),
                    ],
                ],
            ),
            "",
        ]
        targets.append(
            (f"/api/runs of {r['runs']:,} runs < 300 ms", f"{num(api * 1e3)} ms", api < 0.3)
        )
    if "page" in res:
        g = res["page"]
        rows, names = (
            [],
            {
                "first_chart_s": "navigation to first chart drawn",
                "zoom_s": "drag-zoom: mouse-up to chart redrawn",
            },
        )
        for field, what in names.items():
            lo, hi = spread(g[field])
            rows.append([what, num(median(g[field]) * 1e3), f"{num(lo * 1e3)}–{num(hi * 1e3)}"])
        md += [
            f"## 3. The page in headless Chromium: the run of the {g['points']:,}-point series",
            "",
            "A new browser context (empty cache) per repeat, 1280x900; the chart is 2,000 px "
            "wide at most, so each answer is about as many points. The zoom includes the "
            "re-query over HTTP and the redraw.",
            "",
            table(["what", "median ms", "range"], rows),
            "",
        ]
        first, zoom = median(g["first_chart_s"]), median(g["zoom_s"])
        targets.append(("first chart < 1 s after page load", f"{num(first * 1e3)} ms", first < 1))
        targets.append(("zoom re-query < 100 ms", f"{num(zoom * 1e3)} ms", zoom < 0.1))
    md += [
        "## Targets",
        "",
        table(["target", "measured", "verdict"], [[a, b, verdict(c)] for a, b, c in targets]),
        "",
    ]
    return "\n".join(md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller N, fewer repeats")
    parser.add_argument("--repeats", type=int, help="repeats per measurement")
    parser.add_argument("--only", default="1,2,3", help="comma-separated sections to run")
    parser.add_argument("--tmp", help="directory for the stores (default: system temp)")
    parser.add_argument("--out", default=str(RESULTS), help="where to write ui.md/.json")
    args = parser.parse_args()
    cfg = Settings.quick() if args.quick else Settings()
    if args.repeats:
        cfg.repeats = args.repeats
    only = {int(s) for s in args.only.split(",") if s.strip()}
    res: dict[str, Any] = {"env": environment(), "settings": asdict(cfg), "quick": args.quick}
    tmp = Path(tempfile.mkdtemp(prefix="stepstore-bench-ui-", dir=args.tmp))
    sections = {1: ("view", view), 2: ("runs", runs_table), 3: ("page", page)}
    try:
        for number, (name, fn) in sections.items():
            if number in only:
                res[name] = fn(cfg, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["loadavg_end"] = list(os.getloadavg())
    text = report(cfg, res, args.quick)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "ui.quick" if args.quick else "ui"
    if only != set(sections):
        stem += "." + "".join(str(s) for s in sorted(only))
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1, default=str))
    log_line(f"wrote {out / stem}.md and .json")


if __name__ == "__main__":
    main()
