"""Reading scalar series back: chunk selection, decoding, range filters, downsampling."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..backends.base import Backend, ChunkRow
from ..errors import InvalidArgumentError, StoreError
from ..series import chunk as codec
from ..series.chunk import BLOCKS, NO_EPOCH, Columns
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
    columns: Columns, steps: tuple[int, int] | None, epochs: tuple[int, int] | None
) -> Columns:
    keep = None
    if steps is not None:
        keep = (columns.step >= steps[0]) & (columns.step <= steps[1])
    if epochs is not None:
        in_epochs = (columns.epoch >= epochs[0]) & (columns.epoch <= epochs[1])
        keep = in_epochs if keep is None else keep & in_epochs
    if keep is None or keep.all():
        return columns
    return Columns(*(c[keep] for c in columns))


def read_series(
    backend: Backend,
    series_id: int,
    where: str,
    steps: tuple[int, int] | None = None,
    epochs: tuple[int, int] | None = None,
    max_points: int | None = None,
) -> Columns:
    """The points of one series in the given ranges, downsampled to ``max_points``."""
    if max_points is not None and epochs is None:
        index = backend.chunks(series_id, steps, None, with_data=False)
        if len(index) * 2 * BLOCKS >= max_points and sum(r.count for r in index) > max_points:
            interior: list[ChunkRow] = []
            edges: list[ChunkRow] = []
            for r in index:
                inside = steps is None or (r.first_step >= steps[0] and r.last_step <= steps[1])
                (interior if inside else edges).append(r)
            parts = [downsample.from_stats([r.stats for r in interior], max_points)]
            total = max(1, sum(r.count for r in index))
            for edge in edges:  # at most the two chunks the step range cuts through
                (row,) = (
                    r
                    for r in backend.chunks(series_id, (edge.first_step, edge.last_step))
                    if r.seq == edge.seq
                )
                part = _mask(_decode(row, where), steps, None)
                share = max(2, max_points * len(part.step) // total)
                parts.append(downsample.from_columns(part, share))
            merged = _concat(parts)
            order = np.argsort(merged.step, kind="stable")
            return Columns(*(c[order] for c in merged))
    rows = backend.chunks(series_id, steps, epochs, with_data=True)
    columns = _mask(_decode_all(rows, where), steps, epochs)
    if max_points is not None:
        columns = downsample.from_columns(columns, max_points)
    return columns


def to_frame(
    keys: list[str],
    parts: list[Columns],
    ranks: list[int] | None = None,
    counts: list[np.ndarray] | None = None,
) -> pd.DataFrame:
    """Long-form DataFrame ``key, step, epoch, time, value`` of several series.

    ``keys`` names each part (a key may repeat, once per rank); with ``ranks`` (one per
    part) a ``rank`` column follows ``key``; with ``counts`` (per point, how many ranks a
    combined point stands for) a ``ranks`` column ends the frame.
    """
    import pandas as pd

    lengths = [len(p.step) for p in parts]
    merged = _concat(parts)
    names = list(dict.fromkeys(keys))
    codes = np.repeat(np.array([names.index(k) for k in keys], dtype=np.int32), lengths)
    no_epoch = merged.epoch == NO_EPOCH
    frame: dict[str, Any] = {
        "key": pd.Categorical.from_codes(codes, categories=pd.Index(names, dtype=object))
    }
    if ranks is not None:
        frame["rank"] = np.repeat(np.array(ranks, dtype=np.int64), lengths)
    frame.update(
        step=merged.step,
        epoch=pd.arrays.IntegerArray(np.where(no_epoch, 0, merged.epoch), no_epoch),
        time=pd.to_datetime(merged.time, unit="us", utc=True),
        value=merged.value,
    )
    if counts is not None:
        frame["ranks"] = np.concatenate([np.empty(0, np.int64), *counts]).astype(np.int64)
    return pd.DataFrame(frame)
