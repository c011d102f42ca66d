"""Plots of recorded runs with matplotlib: scalar curves overlaid, tensor histograms over steps.

Needs matplotlib (``pip install 'stepstore[plot]'``), imported only when a plot is drawn.
Curves are drawn from every point of a series: past ``max_points`` the line keeps each
bucket's minimum and maximum (as ``RunView.scalars(max_points=...)`` does) and a shaded
band spans each bucket's range, so a one-step spike is never lost.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from .errors import InvalidArgumentError, NotFoundError
from .query.downsample import minmax_indices
from .query.views import RunView

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: What the x axis of a curve may show: step, epoch, or seconds since the run was created.
X_AXES = ("step", "epoch", "time")
#: Points a curve keeps at most (before the band), about one per pixel of a wide figure.
MAX_POINTS = 2000
#: File types :func:`save` writes, by suffix.
FORMATS = {".png": "png", ".svg": "svg"}
_X_LABELS = {"step": "step", "epoch": "epoch", "time": "seconds since the run was created"}
#: Figure width and the height of one panel, in inches (100 pixels each in a PNG).
_WIDTH, _PANEL_HEIGHT = 8.0, 3.2


class Curve(NamedTuple):
    """One series as drawn: the line's points and, when thinned, the band of the buckets'
    ranges (``band_x`` holds each bucket's first x and then the last x; ``low``/``high``
    hold one value per entry of ``band_x``, the last repeated)."""

    x: np.ndarray
    y: np.ndarray
    raw: tuple[np.ndarray, np.ndarray] | None
    band: tuple[np.ndarray, np.ndarray, np.ndarray] | None


def ema(values: np.ndarray, smooth: float) -> np.ndarray:
    """Exponential moving average, debiased (as pandas ``ewm(adjust=True)``): ``smooth`` in
    (0, 1) is the weight of the newest point, from 1 on a half-life in points. NaN and
    infinite points are skipped (the average carries over them)."""
    if not (isinstance(smooth, (int, float)) and not isinstance(smooth, bool) and smooth > 0):
        raise InvalidArgumentError(
            f"smooth={smooth!r}: expected an EMA weight in (0, 1) or a half-life >= 1 (points)"
        )
    import pandas as pd

    alpha = smooth if smooth < 1 else 1 - 0.5 ** (1 / smooth)
    finite = np.where(np.isfinite(values), values, np.nan)
    return pd.Series(finite).ewm(alpha=alpha, ignore_na=True).mean().to_numpy()


def curve(
    x: np.ndarray, y: np.ndarray, smooth: float | None = None, max_points: int = MAX_POINTS
) -> Curve:
    """The line and band drawn for the points ``(x, y)`` (in step order).

    Past ``max_points`` the line keeps, of each of ``(max_points - 2) // 2`` buckets of
    consecutive points, the minimum and maximum (and the first and last point); the band
    spans each bucket's range of the raw values. With ``smooth`` the line is the EMA
    (thinned the same way) and the raw values show as a faint line, or as the band.
    """
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 4:
        raise InvalidArgumentError(f"max_points={max_points!r}: expected an integer >= 4")
    line = y if smooth is None else ema(y, smooth)
    buckets = (max_points - 2) // 2
    keep = minmax_indices(line, buckets, ends=True)
    thinned = len(keep) < len(y)
    raw = (x, y) if smooth is not None and not thinned else None
    band = None
    if thinned:
        starts = np.arange(0, len(y), -(-len(y) // buckets))
        finite = np.where(np.isfinite(y), y, np.nan)
        with np.errstate(invalid="ignore"):
            low = np.fmin.reduceat(finite, starts)
            high = np.fmax.reduceat(finite, starts)
        band = (np.r_[x[starts], x[-1]], np.r_[low, low[-1]], np.r_[high, high[-1]])
    return Curve(x[keep], line[keep], raw, band)


def plot_scalars(
    runs: RunView | Sequence[RunView],
    keys: str | Sequence[str],
    *,
    x: str = "step",
    ax: Axes | None = None,
    smooth: float | None = None,
    log: bool = False,
    max_points: int = MAX_POINTS,
) -> Axes:
    """Draw scalar series of one or more runs, overlaid on one Axes, and return it.

    Args:
        runs: A run or several.
        keys: A key, a glob (``"val/*"``) or a list of them; each must match a scalar key
            of at least one run (else ``NotFoundError`` listing the scalar keys).
        x: ``"step"``, ``"epoch"`` (points without an epoch are left out) or ``"time"``
            (seconds since the run was created).
        ax: Axes to draw on; a new figure's (through pyplot) if None.
        smooth: EMA smoothing (see :func:`ema`); the raw values stay visible, faintly.
        log: Logarithmic y axis.
        max_points: Per line; past it the line is thinned and a min/max band drawn.
    """
    views = [runs] if isinstance(runs, RunView) else list(runs)
    if x not in X_AXES:
        raise InvalidArgumentError(f"x={x!r}: expected one of {', '.join(X_AXES)}")
    chosen = _scalar_keys(views, [keys] if isinstance(keys, str) else list(keys))
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.figure(layout="constrained").add_subplot()
    names = {key for found in chosen for key in found}
    for view, found in zip(views, chosen, strict=True):
        for key in found:
            points = _points(view, key, x)
            drawn = curve(*points, smooth, max_points)
            label = " ".join([view.name] * (len(views) > 1) + [key] * (len(names) > 1))
            (line,) = ax.plot(drawn.x, drawn.y, linewidth=1.2, label=label or view.name)
            color = line.get_color()
            if drawn.raw is not None:
                ax.plot(*drawn.raw, color=color, linewidth=0.8, alpha=0.3)
            if drawn.band is not None:
                ax.fill_between(*drawn.band, step="post", color=color, alpha=0.25, linewidth=0)
    ax.set_xlabel(_X_LABELS[x])
    ax.set_ylabel(next(iter(names)) if len(names) == 1 else "value")
    if log:
        ax.set_yscale("log")
    if len(views) > 1 or len(names) > 1:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return ax


def _scalar_keys(views: list[RunView], patterns: list[str]) -> list[list[str]]:
    """Per run, the scalar keys ``patterns`` name; each pattern must name one in some run."""
    import fnmatch

    if not views or not patterns:
        raise InvalidArgumentError("expected at least one run and one key to plot")
    recorded = [view.keys("scalar") for view in views]
    for pattern in patterns:
        if not any(fnmatch.filter(keys, pattern) for keys in recorded):
            known = sorted({key for keys in recorded for key in keys})
            raise NotFoundError(
                f"no scalar key matches {pattern!r} in run(s) "
                f"{', '.join(view.name for view in views)}; scalar keys: "
                f"{', '.join(known) or 'none'}"
            )
    return [
        list(dict.fromkeys(k for pattern in patterns for k in fnmatch.filter(keys, pattern)))
        for keys in recorded
    ]


def _points(view: RunView, key: str, x: str) -> tuple[np.ndarray, np.ndarray]:
    """Every point of ``key`` as ``(x, value)`` arrays, in step order."""
    import pandas as pd

    frame = view.scalars(key)
    if x == "epoch":
        frame = frame[frame["epoch"].notna()]
        xs = frame["epoch"].to_numpy(np.int64)
    elif x == "time":
        start = pd.Timestamp(view.created, unit="s", tz="UTC")
        xs = (frame["time"] - start).dt.total_seconds().to_numpy()
    else:
        xs = frame["step"].to_numpy()
    return xs, frame["value"].to_numpy()


def tensor_histogram(
    view: RunView, key: str, bins: int = 64, max_steps: int = 400
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per recorded step (at most ``max_steps`` of them, evenly chosen), the histogram of a
    tensor series' finite values over ``bins`` bins shared by all steps.

    Returns ``(steps, edges, fractions)``: fractions has shape ``(bins, len(steps))``, each
    column the fraction of that step's values in each bin (a step without finite values is
    a column of zeros).
    """
    for name, value in (("bins", bins), ("max_steps", max_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"{name}={value!r}: expected an integer >= 1")
    series = view.tensor(key)
    if not len(series):
        raise NotFoundError(f"tensor {key!r} of run {view.name} ({view.id}) has no steps yet")
    rows = np.unique(np.linspace(0, len(series) - 1, min(max_steps, len(series))).round())
    steps = np.unique(series.steps[rows.astype(np.int64)])
    low, high = np.inf, -np.inf
    for step in steps:  # two passes: one step in memory at a time
        values = _finite(series.at(int(step)))
        if len(values):
            low, high = min(low, float(values.min())), max(high, float(values.max()))
    if low > high:
        low, high = 0.0, 1.0
    elif low == high:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    fractions = np.zeros((bins, len(steps)))
    for column, step in enumerate(steps):
        values = _finite(series.at(int(step)))
        if len(values):
            fractions[:, column] = np.histogram(values, edges)[0] / values.size
    return steps, edges, fractions


def _finite(array: np.ndarray) -> np.ndarray:
    values = np.asarray(array, dtype=np.float64).ravel()
    return values[np.isfinite(values)]


def plot_tensor_histogram(
    view: RunView,
    key: str,
    *,
    ax: Axes | None = None,
    bins: int = 64,
    max_steps: int = 400,
    log: bool = False,
) -> Axes:
    """Draw a tensor series as an image, step across and value up, coloured by the fraction
    of each step's values in each bin (see :func:`tensor_histogram`); return the Axes.
    ``log`` colours on a logarithmic scale, so rare values show."""
    from matplotlib.colors import LogNorm

    steps, edges, fractions = tensor_histogram(view, key, bins, max_steps)
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.figure(layout="constrained").add_subplot()
    middles = (steps[1:] + steps[:-1]) / 2
    if len(steps) > 1:
        x_edges = np.r_[2 * steps[0] - middles[0], middles, 2 * steps[-1] - middles[-1]]
    else:
        x_edges = np.array([steps[0] - 0.5, steps[0] + 0.5])
    shown = np.ma.masked_equal(fractions, 0) if log else fractions
    positive = fractions[fractions > 0]
    norm = LogNorm(positive.min(), positive.max()) if log and len(positive) else None
    mesh = ax.pcolormesh(x_edges, edges, shown, cmap="viridis", norm=norm, shading="flat")
    ax.figure.colorbar(mesh, ax=ax, label="fraction of values")
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.set_title(f"{view.name}: {key}", fontsize="medium")
    return ax


def figure(panels: int) -> tuple[Figure, list[Axes]]:
    """A figure (not managed by pyplot) with ``panels`` Axes stacked, sharing the x axis."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(_WIDTH, _PANEL_HEIGHT * panels + 0.4), layout="constrained")
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    return fig, list(axes)


def save(fig: Figure, path: str | os.PathLike[str]) -> str:
    """Write ``fig`` to ``path`` as PNG or SVG (by its suffix); return the format."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise InvalidArgumentError(
            f"{os.fspath(path)!r}: expected a file name ending in {' or '.join(FORMATS)}"
        )
    fig.savefig(path, format=fmt, dpi=100, metadata=_METADATA[fmt])
    return fmt


#: Metadata without a date or version, so the same data gives the same file.
_METADATA = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None}}
