"""What the page shows of a tensor series, computed from the logged arrays: per-step
statistics, a 2-D slice (reduced by block mean to fit a heatmap) and histograms over steps
with shared edges. Every figure is computed in float64 from the tensors as logged."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from ..tensors.reduce import stats
from ..tensors.series import TensorSeries

#: Largest side of a slice sent for a heatmap; larger slices are reduced by block mean.
SLICE_SIDE = 256


def spread_steps(series: TensorSeries, count: int) -> np.ndarray:
    """Up to ``count`` of the recorded steps, evenly spaced, always the first and the last."""
    steps = np.unique(series.steps)
    if len(steps) <= count:
        return steps
    picked = np.unique(np.round(np.linspace(0, len(steps) - 1, count)).astype(np.int64))
    return steps[picked]


def step_stats(series: TensorSeries, steps: np.ndarray) -> dict[str, list[float]]:
    """min, max, mean, std and L2 norm of the tensor at each of ``steps`` (NaN-propagating,
    as ``reduce="stats"`` records them)."""
    columns: dict[str, list[Any]] = {"step": steps.tolist()}
    names = ("min", "max", "mean", "std", "norm")
    for name in names:
        columns[name] = []
    for step in steps.tolist():
        figures = stats(series.at(step))
        for name in names:
            columns[name].append(figures[name])
    return columns


def tensor_slice(series: TensorSeries, step: int, index: tuple[int, ...]) -> dict[str, Any]:
    """The 2-D slice of the tensor at ``step`` that ``index`` (leading indices of a tensor
    with more than two dimensions; zeros by default) picks; a 1-D tensor is one row.

    Returns ``step``, ``shape`` (rows, columns of the whole slice), ``values`` (at most
    :data:`SLICE_SIDE` square, block means when ``reduced``) and the ``min`` and ``max``
    of its finite values (None when it has none).

    Raises:
        InvalidArgumentError: ``index`` does not fit the tensor's dimensions.
        NotFoundError: ``step`` was not recorded.
    """
    known = series.shape[1:]
    # when the shape changed during the run, the shape of this step's tensor
    shape = series.at(step).shape if None in known else tuple(int(d or 0) for d in known)
    leading = len(shape) - 2
    if index and len(index) != max(leading, 0):
        raise InvalidArgumentError(
            f"index={','.join(map(str, index))}: the tensor has shape {tuple(shape)}; expected "
            + (f"{leading} leading indices" if leading > 0 else "no index")
        )
    chosen = index or (0,) * max(leading, 0)
    for axis, (i, size) in enumerate(zip(chosen, shape, strict=False)):
        if i >= size:
            raise InvalidArgumentError(
                f"index={','.join(map(str, chosen))}: {i} is out of range for dimension "
                f"{axis} of size {size}"
            )
    picked = np.asarray(series[(int(step), *chosen)], dtype=np.float64)
    plane = picked.reshape(1, -1) if picked.ndim == 1 else picked
    finite = plane[np.isfinite(plane)]
    values, reduced = block_mean(plane, SLICE_SIDE)
    return {
        "step": int(step),
        "shape": list(plane.shape),
        "values": values,
        "reduced": reduced,
        "min": float(finite.min()) if len(finite) else None,
        "max": float(finite.max()) if len(finite) else None,
    }


def block_mean(plane: np.ndarray, side: int) -> tuple[np.ndarray, bool]:
    """``plane`` reduced to at most ``side`` x ``side`` by the mean of equal blocks (the last
    row and column of blocks may be smaller), and whether it was reduced."""
    rows, cols = plane.shape
    step_r, step_c = -(-rows // side), -(-cols // side)
    if step_r == 1 and step_c == 1:
        return plane, False
    starts_r, starts_c = np.arange(0, rows, step_r), np.arange(0, cols, step_c)
    with np.errstate(invalid="ignore", over="ignore"):
        sums = np.add.reduceat(np.add.reduceat(plane, starts_r, axis=0), starts_c, axis=1)
    counts = np.outer(np.diff(np.r_[starts_r, rows]), np.diff(np.r_[starts_c, cols]))
    return sums / counts, True


def histograms(series: TensorSeries, steps: np.ndarray, bins: int) -> dict[str, Any]:
    """Histograms of the finite values of the tensor at each of ``steps`` over ``bins``
    equal bins spanning all of them (the same edges for every step)."""
    low, high = np.inf, -np.inf
    for step in steps.tolist():
        values = np.asarray(series.at(step), dtype=np.float64)
        finite = values[np.isfinite(values)]
        if len(finite):
            low, high = min(low, float(finite.min())), max(high, float(finite.max()))
    if low > high:  # no finite value at all
        low, high = 0.0, 1.0
    elif low == high:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    counts = []
    for step in steps.tolist():
        values = np.asarray(series.at(step), dtype=np.float64)
        counts.append(np.histogram(values[np.isfinite(values)], bins=edges)[0].tolist())
    return {"steps": steps.tolist(), "edges": edges, "counts": counts}
