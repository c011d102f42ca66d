"""Min/max-preserving downsampling: a spike or a NaN is never hidden.

Points are grouped into consecutive buckets; each bucket keeps its minimum, its maximum
and its first NaN (each at most once), in step order; the first and last points are kept
too (from 4 points on), so a chart of the view spans the whole range. Zoomed out far
enough that buckets span several blocks of a chunk, only the chunk statistics (each
block's min and max) are read and just the chunks at the ends are decoded.
"""

from __future__ import annotations

import numpy as np

from ..series.chunk import STATS_DTYPE, Columns, extreme_per_bucket


def minmax_indices(values: np.ndarray, buckets: int, ends: bool = False) -> np.ndarray:
    """Sorted indices to keep from ``values``: per bucket the min, the max and the first NaN;
    with ``ends``, the first and last index too."""
    n = len(values)
    if n <= 2 * buckets + 2 * ends:
        return np.arange(n)
    nan = np.isnan(values)
    lo = extreme_per_bucket(np.where(nan, np.inf, values), buckets, "min")
    hi = extreme_per_bucket(np.where(nan, -np.inf, values), buckets, "max")
    keep = [lo[lo < n], hi[hi < n], np.array([0, n - 1] if ends else [], np.int64)]
    if nan.any():
        first_nan = extreme_per_bucket(nan.astype(np.float64), buckets, "max")
        first_nan = first_nan[first_nan < n]
        keep.append(first_nan[nan[first_nan]])
    kept = np.unique(np.concatenate(keep))
    return kept


def from_columns(columns: Columns, max_points: int) -> Columns:
    """Downsample decoded columns to at most ``max_points`` points (plus NaN markers); from
    4 points on, the first and last are among them."""
    ends = max_points >= 4
    keep = minmax_indices(columns.value, max(1, (max_points - 2 * ends) // 2), ends)
    return Columns(*(c[keep] for c in columns))


def from_stats(stats_blobs: list[bytes], max_points: int) -> Columns:
    """Downsample from chunk statistics only: every block's min and max point and every
    chunk's first NaN are the candidates, reduced like decoded points."""
    stats = np.frombuffer(b"".join(stats_blobs), dtype=STATS_DTYPE)
    sides = [stats["outline"][side].reshape(-1) for side in ("lo", "hi")]
    points = np.concatenate([*(side[side["step"] >= 0] for side in sides)])
    nan = stats[stats["nan_count"] > 0]
    columns = Columns(
        np.concatenate([points["step"], nan["nan_step"]]),
        np.concatenate([points["epoch"], nan["nan_epoch"]]),
        np.concatenate([points["time"], nan["nan_time"]]),
        np.concatenate([points["value"], np.full(len(nan), np.nan)]),
    )
    order = np.lexsort((columns.time, columns.step))
    step, epoch, time, value = (c[order] for c in columns)
    distinct = np.r_[True, (step[1:] != step[:-1]) | (time[1:] != time[:-1])]
    return from_columns(
        Columns(step[distinct], epoch[distinct], time[distinct], value[distinct]), max_points
    )
