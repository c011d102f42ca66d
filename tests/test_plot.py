"""Plots: files of the expected size, the drawn data equal to the recorded values, the min/max
band, smoothing, tensor histograms over steps and the errors."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import stepstore as ss
from stepstore.cli import main
from stepstore.errors import InvalidArgumentError, KindMismatchError, NotFoundError
from stepstore.plot import curve, plot_scalars, plot_tensor_histogram, tensor_histogram

matplotlib.use("Agg")

import matplotlib.pyplot as plt

SPIKE_STEP = 2345
N = 5000


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def losses(n: int = N, spike: bool = True) -> np.ndarray:
    values = 2.0 / (1.0 + np.arange(n) / 100.0) + 0.01 * np.sin(np.arange(n))
    if spike:
        values[SPIKE_STEP] = 100.0
    return values


@pytest.fixture
def recorded(new_run, store_path: Path) -> Path:
    """Runs ``a`` (``loss`` with a spike, ``val/acc`` per epoch, a tensor) and ``b``."""
    a = new_run(name="a", params={"lr": 0.1})
    for step, value in enumerate(losses()):
        a.log({"loss": float(value)}, step=step, epoch=step // 1000)
    for epoch in range(5):
        a.log({"val/acc": 0.5 + epoch / 10}, step=epoch * 1000 + 999, epoch=epoch)
    for step in (0, 10, 20):
        a.log({"w": np.arange(12, dtype=np.float32).reshape(3, 4) * (step + 1)}, step=step)
    a.finish()
    b = new_run(name="b", params={"lr": 0.2})
    for step in range(50):
        b.log({"loss": 1.0 / (step + 1)}, step=step)
    b.finish()
    return store_path


def cli(*args: str | Path):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_png_and_svg_have_the_expected_size(recorded, tmp_path):
    png = tmp_path / "curves.png"
    result = cli(
        "plot", "a", "b", "--key", "loss", "--key", "val/acc", "-o", png, "--store", recorded
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {png}\n"
    assert png_size(png) == (800, 680)  # 8 in wide; 3.2 in per panel + 0.4 in, at 100 dpi
    svg = tmp_path / "curves.svg"
    assert cli("plot", "a", "--key", "loss", "-o", svg, "--store", recorded).exit_code == 0
    text = svg.read_text()
    assert text.startswith("<?xml")
    assert re.search(r'<svg [^>]*width="576pt" height="259\.2pt"', text)


def test_the_plotted_line_is_the_recorded_series(recorded):
    store = ss.open(recorded)
    b = store.run("b")
    ax = b.plot("loss")
    (line,) = ax.lines
    assert line.get_xydata().tolist() == [[s, 1.0 / (s + 1)] for s in range(50)]
    assert not ax.collections  # 50 points need no band
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("step", "loss")
    a = store.run("a")
    by_epoch = a.plot("val/acc", x="epoch")
    assert by_epoch.lines[0].get_xydata().tolist() == [[e, 0.5 + e / 10] for e in range(5)]
    frame = b.scalars("loss")
    elapsed = (frame["time"] - pd.Timestamp(b.created, unit="s", tz="UTC")).dt.total_seconds()
    by_time = b.plot("loss", x="time", log=True)
    assert by_time.lines[0].get_xdata().tolist() == elapsed.tolist()
    assert by_time.get_yscale() == "log"


def test_runs_are_overlaid_on_one_axes(recorded):
    store = ss.open(recorded)
    _, ax = plt.subplots()
    returned = plot_scalars(store.runs(), "loss", ax=ax)
    assert returned is ax
    assert [line.get_label() for line in ax.lines] == ["a", "b"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    keys = store.run("a").plot(["loss", "val/*"])
    assert [line.get_label() for line in keys.lines] == ["loss", "val/acc"]


def test_the_band_holds_a_one_point_spike_that_the_line_hits(recorded):
    a = ss.open(recorded).run("a")
    ax = plot_scalars(a, "loss", max_points=200)
    (line,) = ax.lines
    xy = line.get_xydata()
    assert len(xy) <= 200
    assert [SPIKE_STEP, 100.0] in xy.tolist()
    assert [0, losses()[0]] in xy.tolist() and [N - 1, losses()[-1]] in xy.tolist()
    (band,) = ax.collections
    outline = band.get_paths()[0]
    assert outline.vertices[:, 1].max() == 100.0
    assert outline.contains_point((SPIKE_STEP + 0.5, 99.0))
    # every recorded point lies inside the band of its bucket
    drawn = curve(np.arange(N), losses(), max_points=200)
    x, low, high = drawn.band
    bucket = np.searchsorted(x[:-1], np.arange(N), side="right") - 1
    assert np.all((low[bucket] <= losses()) & (losses() <= high[bucket]))


def test_smoothing_is_an_ema_over_every_point_with_the_raw_values_kept(recorded):
    b = ss.open(recorded).run("b")
    raw = np.array([1.0 / (s + 1) for s in range(50)])
    ax = b.plot("loss", smooth=0.3)
    smooth, faint = ax.lines
    expected = pd.Series(raw).ewm(alpha=0.3).mean().to_numpy()
    np.testing.assert_allclose(smooth.get_ydata(), expected, rtol=1e-12)
    assert faint.get_ydata().tolist() == raw.tolist()
    halflife = b.plot("loss", smooth=4).lines[0].get_ydata()
    np.testing.assert_allclose(halflife, pd.Series(raw).ewm(halflife=4).mean(), rtol=1e-12)
    with pytest.raises(InvalidArgumentError, match=r"smooth=0: expected an EMA weight"):
        b.plot("loss", smooth=0)


def test_a_tensor_histogram_over_steps(recorded, tmp_path):
    a = ss.open(recorded).run("a")
    steps, edges, fractions = tensor_histogram(a, "w", bins=6)
    assert steps.tolist() == [0, 10, 20]
    assert edges.tolist() == np.linspace(0.0, 11.0 * 21, 7).tolist()
    for column, step in enumerate(steps):
        values = np.arange(12) * (step + 1.0)
        assert fractions[:, column].tolist() == (np.histogram(values, edges)[0] / 12).tolist()
    ax = plot_tensor_histogram(a, "w", bins=6)
    (mesh,) = ax.collections
    assert np.asarray(mesh.get_array()).reshape(6, 3).tolist() == fractions.tolist()
    out = tmp_path / "hist.png"
    assert cli("plot", "a", "--tensor", "w", "-o", out, "--store", recorded).exit_code == 0
    assert png_size(out) == (800, 360)


def test_an_unknown_key_lists_the_known_ones(recorded, tmp_path):
    a = ss.open(recorded).run("a")
    with pytest.raises(NotFoundError) as caught:
        a.plot("nope")
    assert str(caught.value) == (
        "no scalar key matches 'nope' in run(s) a; scalar keys: loss, val/acc"
    )
    result = cli(
        "plot",
        "a",
        "b",
        "--key",
        "val/*",
        "--key",
        "los",
        "-o",
        tmp_path / "x.png",
        "--store",
        recorded,
    )
    assert result.exit_code == 1
    assert result.stderr == (
        "error: no scalar key matches 'los' in run(s) a, b; scalar keys: loss, val/acc\n"
    )
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(NotFoundError, match=r"has no tensor key 'nope'; tensor keys: w$"):
        tensor_histogram(a, "nope")
    with pytest.raises(KindMismatchError, match=r"key 'loss' .* holds scalar values"):
        tensor_histogram(a, "loss")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--key", "loss", "-o", "x.pdf"], "cannot tell the image type of 'x.pdf'"),
        (["-o", "x.png"], "give --key KEY (one or more) or --tensor KEY"),
        (["--key", "loss", "--tensor", "w", "-o", "x.png"], "give --key KEY"),
        (["--key", "loss", "--x", "wall", "-o", "x.png"], "'wall' is not one of"),
    ],
)
def test_usage_errors_exit_2(recorded, args, message):
    result = cli("plot", "a", *args, "--store", recorded)
    assert result.exit_code == 2
    assert message in result.stderr
