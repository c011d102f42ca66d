"""Cheaper alternatives to raw tensors: summary statistics, histograms, float16, samples."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidArgumentError

STAT_NAMES = ("mean", "std", "min", "max", "norm", "zeros")
HOWS = (None, "raw", "stats", "histogram")


@dataclass(frozen=True)
class Reduction:
    """How a tensor key is recorded.

    Attributes:
        how: ``None``/``"raw"`` keeps the tensor; ``"stats"`` records the scalar series
            ``KEY/mean``, ``KEY/std``, ``KEY/min``, ``KEY/max``, ``KEY/norm`` (L2) and
            ``KEY/zeros`` (fraction of zeros); ``"histogram"`` records ``KEY/histogram``
            (counts) and ``KEY/histogram_edges`` per step.
        dtype: ``"float16"`` stores raw floating tensors at half precision (lossy).
        sample: Keep only this many elements, chosen once at random; their flat indices
            are recorded as the one-step tensor ``KEY/sample_index``.
        bins: Histogram bins.
    """

    how: str | None = None
    dtype: str | None = None
    sample: int | None = None
    bins: int = 64

    def __post_init__(self) -> None:
        if self.how not in HOWS:
            raise InvalidArgumentError(
                f"reduce={self.how!r}: expected one of None, 'raw', 'stats', 'histogram'"
            )
        if self.dtype not in (None, "float16"):
            raise InvalidArgumentError(f"dtype={self.dtype!r}: expected None or 'float16'")
        if self.sample is not None and (
            isinstance(self.sample, bool) or not isinstance(self.sample, int) or self.sample < 1
        ):
            raise InvalidArgumentError(f"sample={self.sample!r}: expected an integer >= 1")
        if isinstance(self.bins, bool) or not isinstance(self.bins, int) or self.bins < 1:
            raise InvalidArgumentError(f"bins={self.bins!r}: expected an integer >= 1")

    @property
    def raw(self) -> bool:
        """Whether the tensor itself (possibly cast or sampled) is stored."""
        return self.how in (None, "raw")


def stats(array: np.ndarray) -> dict[str, float]:
    """Mean, std, min, max, L2 norm and fraction of zeros of an array (NaN-propagating)."""
    values = np.asarray(array, dtype=np.float64).reshape(-1)
    if not len(values):
        return {name: float("nan") for name in STAT_NAMES}
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "norm": float(np.sqrt(np.dot(values, values))),
        "zeros": float(np.count_nonzero(values == 0) / len(values)),
    }


def histogram(array: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts and edges over the finite values of an array."""
    values = np.asarray(array, dtype=np.float64).reshape(-1)
    finite = values[np.isfinite(values)]
    if not len(finite):
        return np.zeros(bins, np.int64), np.linspace(0.0, 1.0, bins + 1)
    counts, edges = np.histogram(finite, bins=bins)
    return counts.astype(np.int64), edges
