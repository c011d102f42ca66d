"""Min/max-preserving downsampling: a spike or a NaN is never hidden.

Points are grouped into consecutive buckets; each bucket keeps its minimum, its maximum
and its first NaN (each at most once), in step order. Zoomed out far enough that buckets
span whole chunks, only the per-chunk statistics are read, nothing is decoded.
"""

from __future__ import annotations

import numpy as np

from ..series.chunk import STATS_DTYPE, Columns


def _extreme_per_bucket(filled: np.ndarray, buckets: int, pick: str) -> np.ndarray:
    """Index of the min (``pick="min"``) or max of each equal-width bucket of ``filled``."""
    n = len(filled)
    width = -(-n // buckets)
    pad = np.inf if pick == "min" else -np.inf
    padded = np.full(buckets * width, pad)
    padded[:n] = filled
    grid = padded.reshape(buckets, width)
    found = grid.argmin(axis=1) if pick == "min" else grid.argmax(axis=1)
    return found + np.arange(buckets) * width


def minmax_indices(values: np.ndarray, buckets: int) -> np.ndarray:
    """Sorted indices to keep from ``values``: per bucket the min, the max and the first NaN."""
    n = len(values)
    if n <= 2 * buckets:
        return np.arange(n)
    nan = np.isnan(values)
    lo = _extreme_per_bucket(np.where(nan, np.inf, values), buckets, "min")
    hi = _extreme_per_bucket(np.where(nan, -np.inf, values), buckets, "max")
    keep = [lo[lo < n], hi[hi < n]]
    if nan.any():
        first_nan = _extreme_per_bucket(nan.astype(np.float64), buckets, "max")
        first_nan = first_nan[first_nan < n]
        keep.append(first_nan[nan[first_nan]])
    kept = np.unique(np.concatenate(keep))
    return kept


def from_columns(columns: Columns, max_points: int) -> Columns:
    """Downsample decoded columns to at most ``max_points`` points (plus NaN markers)."""
    keep = minmax_indices(columns.value, max(1, max_points // 2))
    return Columns(*(c[keep] for c in columns))


def _first_per_group(order: np.ndarray, groups: np.ndarray) -> np.ndarray:
    sorted_groups = groups[order]
    first = np.r_[True, sorted_groups[1:] != sorted_groups[:-1]]
    return order[first]


def from_stats(stats_blobs: list[bytes], max_points: int) -> Columns:
    """Downsample from per-chunk statistics only: buckets of whole chunks."""
    stats = np.frombuffer(b"".join(stats_blobs), dtype=STATS_DTYPE)
    count = len(stats)
    buckets = max(1, min(count, max_points // 2))
    groups = np.arange(count) * buckets // count
    valid = stats["min_step"] >= 0
    lo = _first_per_group(np.lexsort((np.where(valid, stats["min"], np.inf), groups)), groups)
    hi = _first_per_group(np.lexsort((np.where(valid, -stats["max"], np.inf), groups)), groups)
    lo, hi = lo[valid[lo]], hi[valid[hi]]
    nan_chunks = np.flatnonzero(stats["nan_count"] > 0)
    nan_first = nan_chunks[np.unique(groups[nan_chunks], return_index=True)[1]]
    step = np.concatenate(
        [stats["min_step"][lo], stats["max_step"][hi], stats["nan_step"][nan_first]]
    )
    epoch = np.concatenate(
        [stats["min_epoch"][lo], stats["max_epoch"][hi], stats["nan_epoch"][nan_first]]
    )
    time = np.concatenate(
        [stats["min_time"][lo], stats["max_time"][hi], stats["nan_time"][nan_first]]
    )
    value = np.concatenate([stats["min"][lo], stats["max"][hi], np.full(len(nan_first), np.nan)])
    # one row per distinct (step, time) point, in step order
    order = np.lexsort((time, step))
    step, epoch, time, value = step[order], epoch[order], time[order], value[order]
    distinct = np.r_[True, (step[1:] != step[:-1]) | (time[1:] != time[:-1])]
    return Columns(step[distinct], epoch[distinct], time[distinct], value[distinct])
