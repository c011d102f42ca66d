"""Combining one key's points across the ranks of a distributed run (``ranks="all"``).

Points of different ranks at the same step are combined into one point: its value by the
chosen statistic, its epoch from the lowest rank, its time the latest (when the last rank
reported), and the number of ranks that reported. A NaN on any rank makes the combined
value NaN, so a rank that diverged is never averaged away.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidArgumentError
from ..series.chunk import Columns
from .downsample import minmax_indices

#: Statistics ``across_ranks=`` accepts (``std`` is the population standard deviation).
AGGREGATES = ("mean", "min", "max", "sum", "std")


def check_aggregate(how: object) -> str:
    """``how`` if it names one of :data:`AGGREGATES`; a clear error otherwise."""
    if how not in AGGREGATES:
        raise InvalidArgumentError(
            f"across_ranks={how!r}: expected one of {', '.join(map(repr, AGGREGATES))}"
        )
    return str(how)


def across_ranks(parts: list[Columns], how: str) -> tuple[Columns, np.ndarray]:
    """One key's points of several ranks (``parts``, lowest rank first) combined per step;
    returns the columns and, per point, how many ranks reported that step."""
    merged = Columns(*(np.concatenate(cols) for cols in zip(*parts, strict=True)))
    order = np.argsort(merged.step, kind="stable")
    step, epoch, time, value = (c[order] for c in merged)
    if len(step) == 0:
        return Columns(step, epoch, time, value), np.empty(0, np.int64)
    starts = np.flatnonzero(np.r_[True, step[1:] != step[:-1]])
    counts = np.diff(np.r_[starts, len(step)])
    if how == "min":
        combined = np.minimum.reduceat(value, starts)
    elif how == "max":
        combined = np.maximum.reduceat(value, starts)
    else:
        total = np.add.reduceat(value, starts)
        combined = total if how == "sum" else total / counts
        if how == "std":
            spread = (value - np.repeat(combined, counts)) ** 2
            combined = np.sqrt(np.add.reduceat(spread, starts) / counts)
    latest = np.maximum.reduceat(time, starts)
    return Columns(step[starts], epoch[starts], latest, combined), counts


def thin(columns: Columns, counts: np.ndarray, max_points: int) -> tuple[Columns, np.ndarray]:
    """Combined points downsampled like any series (see ``downsample``), counts alike."""
    keep = minmax_indices(columns.value, max(1, max_points // 2))
    return Columns(*(c[keep] for c in columns)), counts[keep]
