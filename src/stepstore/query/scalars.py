"""Reading scalar series back: chunk selection, decoding, range filters, downsampling."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..backends.base import Backend, ChunkRow
from ..errors import InvalidArgumentError, StoreError
from ..series import chunk as codec
from ..series.chunk import BLOCKS, NO_EPOCH, STATS_DTYPE, Columns
from . import downsample

if TYPE_CHECKING:
    import pandas as pd


def _range(name: str, value: object) -> tuple[int, int] | None:
    """Normalise ``steps=``/``epochs=``: an int or an inclusive ``(low, high)`` pair."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value), int(value)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(
            v is None or (isinstance(v, (int, np.integer)) and not isinstance(v, bool))
            for v in value
        )
    ):
        low = 0 if value[0] is None else int(value[0])
        high = 2**63 - 1 if value[1] is None else int(value[1])
        if low > high:
            raise InvalidArgumentError(f"{name}={value!r}: low end is above high end")
        return low, high
    raise InvalidArgumentError(
        f"{name}={value!r}: expected an integer or an inclusive (low, high) pair of integers"
    )


def _time_range(value: object) -> tuple[int, int] | None:
    """Normalise ``times=``: an inclusive ``(low, high)`` pair of Unix seconds (either end may
    be None) as µs, rounded to the nearest µs."""
    if value is None:
        return None
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(
            v is None
            or (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool))
            for v in value
        )
        and all(v is None or np.isfinite(v) for v in value)
    ):
        low = -(2**63) if value[0] is None else round(float(value[0]) * 1e6)
        high = 2**63 - 1 if value[1] is None else round(float(value[1]) * 1e6)
        if low > high:
            raise InvalidArgumentError(f"times={value!r}: low end is above high end")
        return low, high
    raise InvalidArgumentError(
        f"times={value!r}: expected an inclusive (low, high) pair of Unix seconds "
        "(finite numbers or None)"
    )


def _decode(row: ChunkRow, where: str, out: Columns | None = None) -> Columns:
    data = row.data or b""
    if codec.checksum(data) != row.checksum:
        raise StoreError(f"{where} chunk {row.seq}: checksum mismatch; run `stepstore check`")
    return codec.decode(data, f"{where} chunk {row.seq}", out)


def _decode_all(rows: list[ChunkRow], where: str) -> Columns:
    """Decode consecutive chunks straight into one set of columns."""
    total = sum(r.count for r in rows)
    columns = Columns(
        np.empty(total, np.int64),
        np.empty(total, np.int64),
        np.empty(total, np.int64),
        np.empty(total, np.float64),
    )
    start = 0
    for row in rows:
        stop = start + row.count
        _decode(row, where, Columns(*(c[start:stop] for c in columns)))
        start = stop
    return columns


def _concat(parts: list[Columns]) -> Columns:
    if not parts:
        empty_i = np.empty(0, np.int64)
        return Columns(empty_i, empty_i, empty_i, np.empty(0, np.float64))
    if len(parts) == 1:
        return parts[0]
    return Columns(*(np.concatenate(cols) for cols in zip(*parts, strict=True)))


def _mask(
    columns: Columns,
    steps: tuple[int, int] | None,
    epochs: tuple[int, int] | None,
    times: tuple[int, int] | None = None,
) -> Columns:
    """The points inside every given inclusive range: a view of a step range when steps go
    forward (no copy), a masked copy otherwise."""
    step = columns.step
    if (
        steps is not None
        and epochs is None
        and times is None
        and bool(np.all(step[1:] >= step[:-1]))
    ):
        start = np.searchsorted(step, steps[0], "left")
        stop = np.searchsorted(step, steps[1], "right")
        return Columns(*(c[start:stop] for c in columns))
    keep = None
    for column, bounds in ((columns.step, steps), (columns.epoch, epochs), (columns.time, times)):
        if bounds is None:
            continue
        inside = (column >= bounds[0]) & (column <= bounds[1])
        keep = inside if keep is None else keep & inside
    if keep is None or keep.all():
        return columns
    return Columns(*(c[keep] for c in columns))


def _time_samples(rows: list[ChunkRow]) -> tuple[np.ndarray, np.ndarray] | None:
    """Per chunk, the smallest and largest time among the points its statistics name (each
    block's extremes, the first NaN), or None when those points do not show time going
    forward with the steps.

    Times only go forward in a series unless given with ``when=`` or the clock jumped
    back; where they do, a chunk's first point is no later than its earliest named point
    and its last no later than the next chunk's earliest, which bounds every chunk's
    time span without decoding it.
    """
    stats = np.frombuffer(b"".join(r.stats for r in rows), dtype=STATS_DTYPE)
    outline = stats["outline"]
    nan_step = np.where(stats["nan_count"] > 0, stats["nan_step"], -1)
    step = np.concatenate([outline["lo"]["step"], outline["hi"]["step"], nan_step[:, None]], 1)
    time = np.concatenate(
        [outline["lo"]["time"], outline["hi"]["time"], stats["nan_time"][:, None]], 1
    )
    valid = step >= 0
    chunk = np.repeat(np.arange(len(rows)), valid.sum(axis=1))
    order = np.lexsort((time[valid], step[valid], chunk))
    ordered = time[valid][order]
    if np.any(np.diff(ordered) < 0):
        return None
    lo = np.where(valid, time, np.iinfo(np.int64).max).min(axis=1)
    hi = np.where(valid, time, np.iinfo(np.int64).min).max(axis=1)
    return lo, hi


def _split(
    rows: list[ChunkRow], steps: tuple[int, int] | None, times: tuple[int, int] | None
) -> tuple[list[ChunkRow], list[ChunkRow]] | None:
    """The chunks (of ``rows``, in order) wholly inside the step and time ranges, and those
    that may hold points on both sides of a bound (decoded and masked); chunks wholly
    outside are dropped. None when time does not go forward (see :func:`_time_samples`)."""
    inside = [steps is None or (r.first_step >= steps[0] and r.last_step <= steps[1]) for r in rows]
    if times is not None and rows:
        samples = _time_samples(rows)
        if samples is None:
            return None
        lo, hi = samples
        big = np.iinfo(np.int64).max
        # a chunk's points lie between the previous chunk's latest and the next one's earliest
        after = np.r_[np.iinfo(np.int64).min, hi[:-1]]
        before = np.r_[lo[1:], big]
        start_in = after >= times[0]
        stop_in = before <= times[1]
        out = (before < times[0]) | (after > times[1])
        kept = [
            (r, flag and bool(a) and bool(b))
            for r, flag, a, b, gone in zip(rows, inside, start_in, stop_in, out, strict=True)
            if not gone
        ]
        return [r for r, whole in kept if whole], [r for r, whole in kept if not whole]
    return (
        [r for r, whole in zip(rows, inside, strict=True) if whole],
        [r for r, whole in zip(rows, inside, strict=True) if not whole],
    )


def read_series(
    backend: Backend,
    series_id: int,
    where: str,
    steps: tuple[int, int] | None = None,
    epochs: tuple[int, int] | None = None,
    max_points: int | None = None,
    times: tuple[int, int] | None = None,
) -> Columns:
    """The points of one series in the given inclusive ranges (``times`` in µs since the
    epoch), downsampled to ``max_points``.

    Each chunk is decoded at most once. Zoomed out (more chunks than ``max_points`` can
    show), chunks wholly inside the ranges are read from their statistics only and just
    the chunks cut by a bound are decoded. Without an epoch range, a time range selects
    chunks the same way while time goes forward with the steps (the usual case; see
    :func:`_time_samples`); otherwise every chunk in the step range is decoded and masked.
    """
    span = steps
    if epochs is None and (max_points is not None or times is not None):
        index = backend.chunks(series_id, steps, None, with_data=False)
        split = _split(index, steps, times)
        if split is not None:
            interior, edges = split
            total = sum(r.count for r in interior) + sum(r.count for r in edges)
            chunks = len(interior) + len(edges)
            if max_points is not None and chunks * 2 * BLOCKS >= max_points and total > max_points:
                interior, edges = _decode_ends(interior, edges)
                return _outline_view(
                    backend, series_id, where, interior, edges, steps, times, max_points
                )
            if times is not None:
                if not chunks:
                    return _concat([])
                kept = interior + edges
                first = min(r.first_step for r in kept)
                last = max(r.last_step for r in kept)
                span = (
                    (first, last) if steps is None else (max(first, steps[0]), min(last, steps[1]))
                )
    rows = backend.chunks(series_id, span, epochs, with_data=True)
    columns = _mask(_decode_all(rows, where), steps, epochs, times)
    if max_points is not None:
        columns = downsample.from_columns(columns, max_points)
    return columns


def _decode_ends(
    interior: list[ChunkRow], edges: list[ChunkRow]
) -> tuple[list[ChunkRow], list[ChunkRow]]:
    """``interior`` and ``edges`` with the first and last chunk of the view among the edges
    (decoded), so the view has the range's first and last points, not just extremes."""
    kept = sorted(interior + edges, key=lambda r: r.first_step)
    ends = {id(kept[0]), id(kept[-1])}
    return (
        [r for r in interior if id(r) not in ends],
        edges + [r for r in interior if id(r) in ends],
    )


def _outline_view(
    backend: Backend,
    series_id: int,
    where: str,
    interior: list[ChunkRow],
    edges: list[ChunkRow],
    steps: tuple[int, int] | None,
    times: tuple[int, int] | None,
    max_points: int,
) -> Columns:
    """The downsampled view of :func:`read_series` from the statistics of the ``interior``
    chunks and the decoded points of the ``edges``; each part keeps its share of
    ``max_points`` (by points) and its extremes."""
    inside = sum(r.count for r in interior)
    total = max(1, inside + sum(r.count for r in edges))
    share = max(2, max_points * inside // total)
    parts = []
    if interior:
        outline = downsample.from_stats([r.stats for r in interior], share)
        parts.append(_mask(outline, None, None, times))
    for edge in edges:
        (row,) = (
            r
            for r in backend.chunks(series_id, (edge.first_step, edge.last_step))
            if r.seq == edge.seq
        )
        part = _mask(_decode(row, where), steps, None, times)
        parts.append(downsample.from_columns(part, max(4, max_points * len(part.step) // total)))
    merged = _concat(parts)
    order = np.argsort(merged.step, kind="stable")
    merged = Columns(*(c[order] for c in merged))
    # each edge keeps at least four points (its extremes and ends): many cut chunks and a
    # small max_points can exceed it, and a last pass (extremes and ends) brings it down
    return downsample.from_columns(merged, max_points)


def to_frame(
    keys: list[str],
    parts: list[Columns],
    ranks: list[int] | None = None,
    counts: list[np.ndarray] | None = None,
) -> pd.DataFrame:
    """Long-form DataFrame ``key, step, epoch, time, value`` of several series.

    ``keys`` names each part (a key may repeat, once per rank); with ``ranks`` (one per
    part) a ``rank`` column follows ``key``; with ``counts`` (per point, how many ranks a
    combined point stands for) a ``ranks`` column ends the frame. The frame may hold the
    parts' arrays themselves (no copy), so callers hand over parts they do not keep.
    """
    import pandas as pd

    lengths = [len(p.step) for p in parts]
    merged = _concat(parts)
    names = list(dict.fromkeys(keys))
    codes = np.repeat(
        np.array([names.index(k) for k in keys], np.min_scalar_type(-len(names))), lengths
    )
    no_epoch = merged.epoch == NO_EPOCH
    epoch = (
        np.zeros(len(no_epoch), np.int64) if no_epoch.all() else np.where(no_epoch, 0, merged.epoch)
    )
    frame: dict[str, Any] = {
        "key": pd.Categorical.from_codes(
            codes, categories=pd.Index(names, dtype=object), validate=False
        )
    }
    if ranks is not None:
        frame["rank"] = np.repeat(np.array(ranks, dtype=np.int64), lengths)
    frame.update(
        step=merged.step,
        epoch=pd.arrays.IntegerArray(epoch, no_epoch),
        time=_utc_times(merged.time),
        value=merged.value,
    )
    if counts is not None:
        frame["ranks"] = np.concatenate([np.empty(0, np.int64), *counts]).astype(np.int64)
    return pd.DataFrame(frame, copy=False)


def _utc_times(micros: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """µs since the epoch as UTC datetimes, in the unit ``pandas.to_datetime(..., unit="us")``
    gives (µs from pandas 3 on, ns before): the same column, built without its slow path."""
    import pandas as pd

    unit = pd.to_datetime(micros[:0], unit="us", utc=True).dtype
    times = pd.Series(micros.view("M8[us]"), copy=False).dt.tz_localize("UTC")
    return (times if times.dtype == unit else times.astype(unit)).array
