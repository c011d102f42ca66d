"""End-to-end tests of the dashboard page in headless Chromium, against the real app on
stores the tests record. Fixtures (browser, page, serve) are in conftest.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Page, expect

import stepstore as ss

Serve = Callable[[Path], str]

FAST = {"flush_interval": 0.05}

# Counts a canvas's pixels whose colour is near (r, g, b); with rgb=None, every pixel that is
# neither transparent nor white (anything drawn).
INK = """([selector, rgb]) => {
  const canvas = document.querySelector(selector);
  const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  let n = 0;
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
    if (a < 128) continue;
    if (rgb === null ? r + g + b < 750 :
        Math.abs(r - rgb[0]) + Math.abs(g - rgb[1]) + Math.abs(b - rgb[2]) < 60) n += 1;
  }
  return n;
}"""
FIRST_RUN_COLOUR = [0x4E, 0x79, 0xA7]
EVENT_COLOUR = [0xCF, 0x22, 0x2E]
# Counts the pixels near (r, g, b) in canvas columns [left, left + width).
COLUMN_INK = """([selector, rgb, left, width]) => {
  const canvas = document.querySelector(selector);
  const { data } = canvas.getContext("2d").getImageData(left, 0, width, canvas.height);
  let n = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] >= 128 && Math.abs(data[i] - rgb[0]) + Math.abs(data[i + 1] - rgb[1]) +
        Math.abs(data[i + 2] - rgb[2]) < 60) n += 1;
  }
  return n;
}"""


def ink(page: Page, selector: str, rgb: list[int] | None = None) -> int:
    return page.evaluate(INK, [selector, rgb])


def chart(page: Page, key: str) -> dict[str, Any] | None:
    """What the page says about its chart of ``key`` (points received, series, ranges)."""
    return page.evaluate("(key) => window.__stepstore.chart(key)", key)


def wait_chart(page: Page, key: str, points: int = 1) -> dict[str, Any]:
    """Waits until the chart of ``key`` has at least ``points`` points and is drawn."""
    page.wait_for_function(
        "([key, n]) => { const c = window.__stepstore.chart(key); return c && c.points >= n; }",
        arg=[key, points],
    )
    info = chart(page, key)
    assert info is not None
    return info


def drag(page: Page, key: str, start: float, stop: float) -> None:
    """Drags across the plot of ``key`` from fraction ``start`` to ``stop`` of its width."""
    box = page.locator(f"[data-testid=chart][data-key='{key}'] .u-over").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * start, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * stop, y, steps=8)
    page.mouse.up()


def rows(page: Page) -> list[str]:
    return page.locator("[data-testid=run-row]").evaluate_all(
        "rows => rows.map(r => r.dataset.runId)"
    )


def record_runs(store: Path, lrs: tuple[float, ...] = (0.001, 0.01, 0.1)) -> list[str]:
    """Finished runs with params, a loss curve over 300 steps and epochs, ids in order."""
    ids = []
    for i, lr in enumerate(lrs):
        with ss.init(
            "digits",
            name=f"lr-{lr}",
            params={"lr": lr, "model": {"width": 32 * (i + 1)}},
            store=store,
            **FAST,
        ) as run:
            for step in range(300):
                run.log({"loss": 1.0 / (step + 1) + lr, "acc": step / 300}, epoch=step // 100)
            ids.append(run.id)
    return ids


def open_run(page: Page, url: str, run_id: str) -> None:
    page.goto(f"{url}/#/run/{run_id}")


def test_runs_table_lists_runs_with_params_and_metrics(page: Page, serve: Serve, store_path: Path):
    ids = record_runs(store_path)
    page.goto(serve(store_path))
    page.wait_for_selector("[data-testid=run-row]")
    assert sorted(rows(page)) == sorted(ids)
    table = page.get_by_test_id("runs-table")
    header = table.locator(".thead").inner_text()
    for column in ("name", "project", "status", "created", "duration", "model.width", "loss"):
        assert column in header
    assert "lr-0.01" in table.inner_text()
    # A click on a header sorts by it; a second click reverses.
    page.locator(".th[data-column='params.lr']").click()
    assert rows(page) == ids
    page.locator(".th[data-column='params.lr']").click()
    assert rows(page) == ids[::-1]


def test_many_runs_render_only_the_visible_rows(page: Page, serve: Serve, store_path: Path):
    for i in range(200):
        with ss.init("sweep", name=f"run-{i:03d}", params={"i": i}, store=store_path) as run:
            run.log({"loss": float(i)})
    page.goto(serve(store_path))
    page.wait_for_selector("[data-testid=run-row]")
    expect(page.locator(".count")).to_have_text("200 runs")
    assert len(rows(page)) < 80  # virtualised: the DOM holds the visible rows only
    page.locator(".th[data-column='params.i']").click()
    table = page.get_by_test_id("runs-table")
    table.evaluate("t => { t.scrollTop = t.scrollHeight; }")
    expect(table.locator("[data-testid=run-row]", has_text="run-199")).to_be_visible()
    assert len(rows(page)) < 80


def test_filter_narrows_the_table_and_shows_syntax_errors(
    page: Page, serve: Serve, store_path: Path
):
    ids = record_runs(store_path)
    page.goto(serve(store_path))
    page.wait_for_selector("[data-testid=run-row]")
    box = page.get_by_test_id("filter-input")
    box.fill("params.lr < 0.05")
    box.press("Enter")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=run-row]').length == 2")
    assert sorted(rows(page)) == sorted(ids[:2])

    box.fill("params.lr < ")
    box.press("Enter")
    error = page.get_by_test_id("filter-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("column")
    # The table keeps the last good answer.
    assert len(rows(page)) == 2


def test_click_opens_a_run_and_its_chart_draws(page: Page, serve: Serve, store_path: Path):
    ids = record_runs(store_path)
    page.goto(serve(store_path))
    page.locator(f"[data-testid=run-row][data-run-id='{ids[0]}']").click()
    page.wait_for_url(f"**/#/run/{ids[0]}")
    info = wait_chart(page, "loss", points=300)
    assert info["series"] == ["lr-0.001"]
    canvas = "[data-testid=chart][data-key='loss'] canvas"
    assert ink(page, canvas, FIRST_RUN_COLOUR) > 200  # the line, in the run's colour
    assert page.locator("h1").inner_text() == "lr-0.001"


def test_drag_zoom_requeries_the_visible_range_and_reset_shows_all(
    page: Page, serve: Serve, store_path: Path
):
    ids = record_runs(store_path)
    open_run(page, serve(store_path), ids[0])
    wait_chart(page, "loss", points=300)
    before = page.evaluate("window.__stepstore.requests")
    drawn = chart(page, "loss")["loads"]
    drag(page, "loss", 0.25, 0.5)
    page.wait_for_function("() => window.__stepstore.chart('loss').zoomed")
    page.wait_for_function(f"() => window.__stepstore.requests > {before}")
    # the re-queried answer drawn, not just asked for
    page.wait_for_function(f"() => window.__stepstore.chart('loss').loads > {drawn}")
    query = page.evaluate("window.__stepstore.lastScalarsQuery")
    assert "start=" in query and "stop=" in query and "max_points=" in query
    info = chart(page, "loss")
    assert 50 < info["xMin"] < 100 and 125 < info["xMax"] < 175
    assert info["points"] < 300

    # Shift-drag pans: the range moves right and is asked for again.
    before = page.evaluate("window.__stepstore.requests")
    drawn = chart(page, "loss")["loads"]
    page.keyboard.down("Shift")
    drag(page, "loss", 0.5, 0.3)
    page.keyboard.up("Shift")
    page.wait_for_function(f"() => window.__stepstore.requests > {before}")
    page.wait_for_function(f"() => window.__stepstore.chart('loss').loads > {drawn}")
    panned = chart(page, "loss")
    assert panned["xMin"] > info["xMin"] + 10 and panned["zoomed"]

    page.locator("[data-testid=chart][data-key='loss'] [data-testid=zoom-reset]").click()
    page.wait_for_function("() => !window.__stepstore.chart('loss').zoomed")
    wait_chart(page, "loss", points=300)
    assert "start=" not in page.evaluate("window.__stepstore.lastScalarsQuery")


def test_compare_overlays_two_runs(page: Page, serve: Serve, store_path: Path):
    ids = record_runs(store_path)
    page.goto(serve(store_path))
    for run_id in ids[:2]:
        page.locator(f"[data-testid=run-row][data-run-id='{run_id}'] input").check()
    page.get_by_test_id("compare-button").click()
    page.wait_for_url("**/#/compare?runs=*")
    info = wait_chart(page, "loss", points=600)
    assert sorted(info["series"]) == ["lr-0.001", "lr-0.01"]
    legend = page.locator("[data-testid=chart][data-key='loss'] .u-legend").inner_text()
    assert "lr-0.001" in legend and "lr-0.01" in legend


def test_chart_controls_axis_log_smoothing_and_downloads(
    page: Page, serve: Serve, store_path: Path
):
    ids = record_runs(store_path, lrs=(0.01,))
    url = serve(store_path)
    open_run(page, url, ids[0])
    wait_chart(page, "loss", points=300)

    page.get_by_test_id("x-axis").select_option("epoch")
    page.wait_for_function("() => window.__stepstore.lastScalarsQuery.includes('x=epoch')")
    page.wait_for_function("() => window.__stepstore.chart('loss').xMax >= 2")
    assert chart(page, "loss")["xMax"] < 10

    page.get_by_test_id("log-scale").check()
    page.get_by_test_id("smoothing").fill("0.6")
    page.wait_for_function("() => window.__stepstore.chart('loss').series.length == 2")
    assert chart(page, "loss")["series"] == ["lr-0.01 (raw)", "lr-0.01"]

    link = page.locator("[data-testid=chart][data-key='loss'] [data-testid=download-csv]")
    href = link.get_attribute("href")
    assert "scalars.csv?" in href and "key=loss" in href and "x=epoch" in href
    answer = page.request.get(url + href)
    assert answer.status == 200
    assert answer.text().splitlines()[0].replace('"', "").startswith("key,step,epoch,time,value")
    parquet = page.locator("[data-testid=chart][data-key='loss'] [data-testid=download-parquet]")
    assert "scalars.parquet?" in parquet.get_attribute("href")


def test_nan_breaks_the_line_and_infinities_are_counted(page: Page, serve: Serve, store_path: Path):
    with ss.init("odd", name="non-finite", store=store_path, **FAST) as run:
        for step in range(100):
            special = {40: float("nan"), 60: float("inf"), 61: float("-inf")}
            run.log({"loss": special.get(step, float(step))})
        run_id = run.id
    open_run(page, serve(store_path), run_id)
    info = wait_chart(page, "loss", points=100)
    assert info["yMax"] == 99.0
    note = page.locator("[data-testid=chart][data-key='loss'] .note")
    expect(note).to_have_text("2 infinite values shown as gaps · 1 NaN (line breaks)")


def test_a_flight_recorder_event_is_marked_on_every_chart(
    page: Page, serve: Serve, store_path: Path
):
    with ss.init("flights", name="blew-up", store=store_path, **FAST) as run:
        run.flight("acts/*", steps=3, trigger=ss.on_nan("loss"))
        for step in range(100):
            loss = float("nan") if step == 60 else 1.0 / (step + 1)
            run.log({"loss": loss, "acc": step / 100, "acts/h": np.full(4, step, np.float32)})
        run_id = run.id
    open_run(page, serve(store_path), run_id)
    text = "step 60 · on_nan('loss') · loss is NaN at step 60"
    expect(page.get_by_test_id("event")).to_have_text([f"{text} (key loss)"])
    for key in ("loss", "acc"):
        info = wait_chart(page, key, points=100)
        (drawn,) = info["events"]
        assert (drawn["run"], drawn["step"], drawn["trigger"]) == ("blew-up", 60, "on_nan('loss')")
        plot = info["plot"]
        assert abs((drawn["px"] - plot["left"]) / plot["width"] - 60 / 99) < 0.01
        canvas = f"[data-testid=chart][data-key='{key}'] canvas"
        line = page.evaluate(COLUMN_INK, [canvas, EVENT_COLOUR, drawn["px"] - 1, 3])
        assert line > 60  # the dashed line down the plot, at the event's step
        assert ink(page, canvas, EVENT_COLOUR) < line + 20  # and nowhere else
    flag = page.locator("[data-testid=chart][data-key='loss'] [data-testid=event-flag]")
    assert flag.get_attribute("data-label") == text
    flag.hover()
    shown = flag.evaluate("f => getComputedStyle(f, '::after').content")
    assert shown == f'"{text}"'

    # Zoomed away from step 60: no line, no flag.
    drawn = chart(page, "loss")["loads"]
    drag(page, "loss", 0.05, 0.3)
    page.wait_for_function(f"() => window.__stepstore.chart('loss').loads > {drawn}")
    assert chart(page, "loss")["events"] == []
    assert flag.count() == 0
    assert ink(page, "[data-testid=chart][data-key='loss'] canvas", EVENT_COLOUR) == 0

    # On wall time the line is at the event's time (the x axis change shows everything again).
    page.get_by_test_id("x-axis").select_option("time")
    page.wait_for_function("() => window.__stepstore.chart('loss').events.length == 1")
    info = chart(page, "loss")
    (event,) = [e for e in ss.open(store_path).run(run_id).events() if e.step == 60]
    at = (info["events"][0]["px"] - info["plot"]["left"]) / info["plot"]["width"]
    assert abs(at - (event.time - info["xMin"]) / (info["xMax"] - info["xMin"])) < 0.01


def test_a_one_point_spike_among_a_million_is_drawn(page: Page, serve: Serve, store_path: Path):
    spike = 765_432
    with ss.init("big", name="million", store=store_path, **FAST) as run:
        noise = np.random.default_rng(0).random(1_000_000) * 0.01
        noise[spike] = 100.0
        for value in noise.tolist():
            run.log({"loss": value})
        run_id = run.id
    open_run(page, serve(store_path), run_id)
    info = wait_chart(page, "loss")
    assert info["yMax"] == 100.0  # the spike survives the downsampling to the chart's width
    assert info["points"] <= 2 * 1280  # and what came is about the pixels, not 1M points
    query = page.evaluate("window.__stepstore.lastScalarsQuery")
    assert "max_points=" in query

    drag(page, "loss", 0.70, 0.80)  # a tenth of the steps, around the spike
    page.wait_for_function("() => window.__stepstore.chart('loss').zoomed")
    page.wait_for_function("() => window.__stepstore.chart('loss').xMax < 900000")
    info = chart(page, "loss")
    assert info["xMin"] < spike < info["xMax"]
    assert info["yMax"] == 100.0


def test_image_slider_changes_the_image_and_caption(page: Page, serve: Serve, store_path: Path):
    with ss.init("vision", name="images", store=store_path, **FAST) as run:
        for i in range(5):
            pixels = np.full((16, 16, 3), i * 50, dtype=np.uint8)
            run.log({"samples": ss.Image(pixels, caption=f"sample {i}")}, step=i * 10)
        run_id = run.id
    open_run(page, serve(store_path), run_id)
    image = page.get_by_test_id("image")
    caption = page.get_by_test_id("image-caption")
    page.wait_for_function(
        "() => { const i = document.querySelector('[data-testid=image]');"
        " return i && i.complete && i.naturalWidth === 16; }"
    )
    expect(caption).to_have_text("step 40 · sample 4")  # the last image first
    last = image.get_attribute("src")

    page.get_by_test_id("image-slider").fill("1")
    expect(caption).to_have_text("step 10 · sample 1")
    assert image.get_attribute("src") != last
    assert "step=10" in image.get_attribute("src")
    page.wait_for_function(
        "() => { const i = document.querySelector('[data-testid=image]');"
        " return i.complete && i.naturalWidth === 16; }"
    )


def test_tensor_heatmap_histogram_and_records(page: Page, serve: Serve, store_path: Path):
    with ss.init("nets", name="tensors", store=store_path, **FAST) as run:
        for step in range(0, 50, 10):
            run.log({"weights/fc": np.outer(np.arange(8.0), np.arange(12.0)) * step}, step=step)
        for step, acc in ((1, 0.5), (2, 0.9), (3, 0.7)):
            run.log_record("eval", {"acc": acc, "split": "test"}, step=step)
        run_id = run.id
    open_run(page, serve(store_path), run_id)
    page.wait_for_function(
        "() => /^step 40 ·/.test(document.querySelector('.tensor-view .caption')?.textContent)"
    )
    assert ink(page, "[data-testid=tensor-heatmap]") > 1000
    page.get_by_test_id("tensor-slider").fill("1")
    page.wait_for_function(
        "() => /^step 10 ·/.test(document.querySelector('.tensor-view .caption').textContent)"
    )
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=tensor-histogram]').length == 1"
        " && document.querySelector('[data-testid=tensor-histogram]').nextSibling.textContent"
    )
    assert ink(page, "[data-testid=tensor-histogram]") > 1000

    table = page.get_by_test_id("records-table")
    acc = table.locator("tbody tr td:nth-child(2)")
    expect(acc).to_have_text(["0.5", "0.9", "0.7"])
    table.locator("th", has_text="acc").click()
    expect(acc).to_have_text(["0.5", "0.7", "0.9"])


@pytest.fixture
def live_run(store_path: Path) -> Iterator[tuple[ss.Run, threading.Event]]:
    """A running run that a background thread keeps logging into (a point every 50 ms)."""
    run = ss.init("live", name="training", store=store_path, **FAST)
    for step in range(20):
        run.log({"loss": 1.0 / (step + 1)})
    run.flush()
    stop = threading.Event()

    def train() -> None:
        step = 20
        while not stop.is_set():
            run.log({"loss": 1.0 / (step + 1)})
            step += 1
            time.sleep(0.05)

    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    yield run, stop
    stop.set()
    thread.join()
    run.finish()


def test_a_live_runs_chart_grows_without_reload(
    page: Page, serve: Serve, store_path: Path, live_run
):
    run, _ = live_run
    open_run(page, serve(store_path), run.id)
    first = wait_chart(page, "loss", points=20)["points"]
    assert page.locator(".status.live").count() == 1
    page.wait_for_function(
        f"() => window.__stepstore.chart('loss').points >= {first + 20}", timeout=20_000
    )


def test_an_event_of_a_live_run_appears_without_reload(page: Page, serve: Serve, store_path: Path):
    run = ss.init("flights", name="training", store=store_path, **FAST)
    try:
        run.flight("acts/*", steps=2, trigger=ss.on_nan("loss"))
        for step in range(20):
            run.log({"loss": 1.0 / (step + 1), "acts/h": np.zeros(2)})
        run.flush()
        open_run(page, serve(store_path), run.id)
        wait_chart(page, "loss", points=20)
        assert chart(page, "loss")["events"] == []
        assert page.get_by_test_id("event").count() == 0
        for step in range(20, 25):
            run.log({"loss": float("nan") if step == 22 else 0.1, "acts/h": np.zeros(2)})
        run.flush()
        expect(page.get_by_test_id("event")).to_have_text(
            ["step 22 · on_nan('loss') · loss is NaN at step 22 (key loss)"], timeout=20_000
        )
        page.wait_for_function("() => window.__stepstore.chart('loss').events.length == 1")
        assert chart(page, "loss")["events"][0]["step"] == 22
    finally:
        run.finish()


def test_the_static_report_draws_offline(page: Page, store_path: Path, tmp_path: Path):
    from stepstore.ui.report import write_report

    ids = record_runs(store_path, lrs=(0.01,))
    report = write_report(str(store_path), ids, tmp_path / "report.html")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(report.as_uri() + f"#/run/{ids[0]}")
    info = wait_chart(page, "loss", points=300)
    assert info["series"] == ["lr-0.01"]
    assert ink(page, "[data-testid=chart][data-key='loss'] canvas", FIRST_RUN_COLOUR) > 200
    assert page.get_by_test_id("download-csv").count() == 0
    drag(page, "loss", 0.25, 0.5)  # zoom filters the inlined series
    page.wait_for_function("() => window.__stepstore.chart('loss').zoomed")
    assert chart(page, "loss")["points"] < 300
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
