"""Encoding of one scalar chunk: step, epoch, time and value columns plus its statistics.

A chunk blob is self-describing: a header names the format version and the codec pipeline,
so data written by any version decodes with any later one::

    b"SSCK" | u8 format version | u8 pipeline id | u32 point count | payload

Pipeline 1 (the only one so far): the three int64 columns (step, epoch, time in µs) are
delta-encoded, and the four columns are byte-shuffled (byte *i* of every value stored
together) and zstd-compressed as one Blosc frame (numcodecs; SIMD shuffle, C speed).
Deltas use wrap-around int64 arithmetic, so every int64 value round-trips exactly;
values are stored bit for bit.
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

import numpy as np

from ..errors import StoreError

MAGIC = b"SSCK"
FORMAT_VERSION = 1
PIPELINE_DELTA_SHUFFLE_ZSTD = 1
_HEADER = struct.Struct("<4sBBI")

#: Epoch value stored for points logged without an epoch.
NO_EPOCH = np.iinfo(np.int64).min

#: Blocks per chunk in its outline: each block's min and max point are kept in the stats,
#: so a zoomed-out view gets up to 2 * BLOCKS points per chunk without decoding it.
BLOCKS = 32
_POINT = [("step", "<i8"), ("epoch", "<i8"), ("time", "<i8"), ("value", "<f8")]
OUTLINE_DTYPE = np.dtype([("lo", _POINT), ("hi", _POINT)])

#: Statistics kept beside each chunk so plots and summaries need not decode it.
STATS_DTYPE = np.dtype(
    [
        ("count", "<i8"),
        ("nan_count", "<i8"),
        ("sum", "<f8"),
        ("first", "<f8"),
        ("last", "<f8"),
        ("min", "<f8"),
        ("max", "<f8"),
        ("min_step", "<i8"),
        ("min_epoch", "<i8"),
        ("min_time", "<i8"),
        ("max_step", "<i8"),
        ("max_epoch", "<i8"),
        ("max_time", "<i8"),
        ("nan_step", "<i8"),
        ("nan_epoch", "<i8"),
        ("nan_time", "<i8"),
        ("outline", OUTLINE_DTYPE, (BLOCKS,)),
    ]
)


class Columns(NamedTuple):
    """The four columns of a scalar series; ``time`` is µs since the Unix epoch."""

    step: np.ndarray
    epoch: np.ndarray
    time: np.ndarray
    value: np.ndarray


class EncodedChunk(NamedTuple):
    """One chunk ready for a backend: its blob, checksum, statistics and index fields."""

    seq: int
    sealed: bool
    first_step: int
    last_step: int
    min_epoch: int | None
    max_epoch: int | None
    size: int
    stats: bytes
    data: bytes
    checksum: int


_codec = None


def _blosc():  # type: ignore[no-untyped-def]
    global _codec
    if _codec is None:
        from numcodecs import Blosc

        _codec = Blosc(cname="zstd", clevel=3, shuffle=Blosc.SHUFFLE, blocksize=0)
    return _codec


def _delta(column: np.ndarray) -> np.ndarray:
    out = np.empty_like(column)
    if len(column):
        out[0] = column[0]
        np.subtract(column[1:], column[:-1], out=out[1:])
    return out


def encode(columns: Columns) -> bytes:
    """Encode the four columns of one chunk into a self-describing blob."""
    n = len(columns.step)
    table = np.empty((4, n), dtype="<i8")
    with np.errstate(over="ignore"):
        for row, column in enumerate(columns[:3]):
            table[row] = _delta(np.asarray(column, dtype="<i8"))
    table[3] = np.asarray(columns.value, dtype="<f8").view("<i8")
    payload = _blosc().encode(table)
    return _HEADER.pack(MAGIC, FORMAT_VERSION, PIPELINE_DELTA_SHUFFLE_ZSTD, n) + bytes(payload)


def decode(blob: bytes, where: str = "chunk", out: Columns | None = None) -> Columns:
    """Decode a blob written by :func:`encode`; ``where`` names it in error messages.

    With ``out`` (four arrays of the chunk's length) the columns are written there.
    """
    if len(blob) < _HEADER.size:
        raise StoreError(f"{where}: truncated chunk ({len(blob)} bytes)")
    magic, version, pipeline, n = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise StoreError(f"{where}: not a scalar chunk (magic {magic!r})")
    if version > FORMAT_VERSION or pipeline != PIPELINE_DELTA_SHUFFLE_ZSTD:
        raise StoreError(
            f"{where}: chunk format {version}/pipeline {pipeline} is newer than this "
            f"stepstore understands (format {FORMAT_VERSION}); upgrade stepstore"
        )
    try:
        raw = _blosc().decode(memoryview(blob)[_HEADER.size :])
    except (RuntimeError, ValueError) as exc:
        raise StoreError(f"{where}: chunk payload does not decompress ({exc})") from None
    if len(raw) != 32 * n:
        raise StoreError(f"{where}: chunk holds {len(raw)} bytes, expected {32 * n}")
    table = np.frombuffer(raw, dtype="<i8").reshape(4, n)
    if out is None:
        out = Columns(
            np.empty(n, np.int64),
            np.empty(n, np.int64),
            np.empty(n, np.int64),
            np.empty(n, np.float64),
        )
    elif any(len(column) != n for column in out):
        raise StoreError(f"{where}: chunk holds {n} points, its index says {len(out.step)}")
    with np.errstate(over="ignore"):
        for i in range(3):
            np.cumsum(table[i], out=out[i])
    out.value[:] = table[3].view("<f8")
    return out


def checksum(blob: bytes) -> int:
    """CRC-32 of a chunk blob, stored beside it and verified on read."""
    return zlib.crc32(blob)


def extreme_per_bucket(filled: np.ndarray, buckets: int, pick: str) -> np.ndarray:
    """Index of the min (``pick="min"``) or max of each of ``buckets`` equal-width buckets
    of ``filled``; indices past the end mark buckets that hold no point."""
    n = len(filled)
    width = -(-n // buckets)
    padded = np.full(buckets * width, np.inf if pick == "min" else -np.inf)
    padded[:n] = filled
    grid = padded.reshape(buckets, width)
    found = grid.argmin(axis=1) if pick == "min" else grid.argmax(axis=1)
    return found + np.arange(buckets) * width


def _outline(columns: Columns, nan: np.ndarray) -> np.ndarray:
    """The min and max point of each of ``BLOCKS`` blocks (step -1 where there is none)."""
    outline = np.zeros(BLOCKS, OUTLINE_DTYPE)
    n = len(columns.value)
    for side, pick, fill in (("lo", "min", np.inf), ("hi", "max", -np.inf)):
        found = extreme_per_bucket(np.where(nan, fill, columns.value), BLOCKS, pick)
        valid = found < n
        valid[valid] &= ~nan[found[valid]]
        picked = found[valid]
        outline[side]["step"] = -1
        outline[side]["epoch"] = NO_EPOCH
        for name, column in zip(("step", "epoch", "time", "value"), columns, strict=True):
            outline[side][name][valid] = column[picked]
    return outline


def compute_stats(columns: Columns) -> np.ndarray:
    """Count, NaN count, sum, first, last, the points holding min, max and the first NaN,
    and the per-block outline."""
    step, epoch, time, value = columns
    stats = np.zeros((), dtype=STATS_DTYPE)
    stats["count"] = len(value)
    nan = np.isnan(value)
    n_nan = int(nan.sum())
    stats["nan_count"] = n_nan
    stats["first"] = value[0]
    stats["last"] = value[-1]
    for field in ("min", "max", "nan"):
        stats[f"{field}_step"] = -1
        stats[f"{field}_epoch"] = NO_EPOCH
        stats[f"{field}_time"] = 0
    if n_nan:
        i = int(np.argmax(nan))
        stats["nan_step"], stats["nan_epoch"], stats["nan_time"] = step[i], epoch[i], time[i]
    stats["outline"] = _outline(columns, nan)
    if n_nan == len(value):
        stats["sum"] = stats["min"] = stats["max"] = np.nan
        return stats
    finite = value if not n_nan else np.where(nan, 0.0, value)
    with np.errstate(invalid="ignore", over="ignore"):
        stats["sum"] = finite.sum()
    lo = int(np.nanargmin(value)) if n_nan else int(np.argmin(value))
    hi = int(np.nanargmax(value)) if n_nan else int(np.argmax(value))
    for field, i in (("min", lo), ("max", hi)):
        stats[field] = value[i]
        stats[f"{field}_step"], stats[f"{field}_epoch"], stats[f"{field}_time"] = (
            step[i],
            epoch[i],
            time[i],
        )
    return stats


def make_chunk(seq: int, columns: Columns, sealed: bool) -> EncodedChunk:
    """Encode ``columns`` as chunk number ``seq`` of its series, with index fields."""
    data = encode(columns)
    epochs = columns.epoch[columns.epoch != NO_EPOCH]
    return EncodedChunk(
        seq=seq,
        sealed=sealed,
        first_step=int(columns.step[0]),
        last_step=int(columns.step[-1]),
        min_epoch=int(epochs.min()) if len(epochs) else None,
        max_epoch=int(epochs.max()) if len(epochs) else None,
        size=len(columns.step),
        stats=compute_stats(columns).tobytes(),
        data=data,
        checksum=checksum(data),
    )
