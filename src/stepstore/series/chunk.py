"""Encoding of one scalar chunk: step, epoch, time and value columns plus its statistics.

A chunk blob is self-describing: a header names the format version and the codec pipeline,
so data written by any version decodes with any later one::

    b"SSCK" | u8 format version | u8 pipeline id | u32 point count | payload

Pipeline 1 (written before pipeline 2; still read): the three int64 columns (step, epoch, time in
µs) are delta-encoded, and the four columns are byte-shuffled (byte *i* of every value
stored together) and zstd-compressed as one Blosc frame (numcodecs; SIMD shuffle, C speed).

Pipeline 2 (written now) stores each column as cheaply as its shape allows, so a read
decompresses and rebuilds only what carries information::

    u8 step kind | u8 epoch kind | u8 time delta width | i64 first step | i64 step stride
    | i64 epoch | i64 first time | (u32 length | Blosc frame) per stored column

Steps that advance by one stride (the usual case) are stored as ``first + i * stride``
and an epoch that stays the same through the chunk (or is absent) as that one value;
otherwise the column's deltas are a frame of their own. Time is stored as deltas from its
first value, as int32 when every delta fits. Each frame is byte-shuffled and zstd-compressed
(Blosc), values bit for bit. Deltas use wrap-around int64 arithmetic, so every int64 value
round-trips exactly in both pipelines.
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
PIPELINE_COLUMNS_ZSTD = 2
_HEADER = struct.Struct("<4sBBI")
_COLUMNS = struct.Struct("<BBBqqqq")
_FRAME = struct.Struct("<I")
#: A Blosc frame's header holds its decompressed size in bytes 4-7.
_BLOSC_NBYTES = struct.Struct("<I")
#: Column kinds of pipeline 2: rebuilt from the header alone, or stored as a delta frame.
_RULE, _FRAMED = 0, 1
_INT32 = np.iinfo(np.int32)

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
    """One chunk ready for a backend: its blob, checksum, statistics and index fields
    (``first_step``/``last_step``: its smallest and largest step, which a step range
    selects by; the first and last unless the series was rewound)."""

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
    """Encode the four columns of one chunk into a self-describing blob (pipeline 2)."""
    n = len(columns.step)
    step, epoch, time = (np.asarray(c, dtype="<i8") for c in columns[:3])
    frames = []
    with np.errstate(over="ignore"):
        step_delta = _delta(step)
        stride = int(step_delta[1]) if n > 1 else 0
        strided = bool((step_delta[1:] == stride).all())
        if not strided:
            frames.append(step_delta)
        steady = bool((epoch == epoch[0]).all()) if n else True
        if not steady:
            frames.append(_delta(epoch))
        time_delta = _delta(time)
    time_delta[:1] = 0
    narrow = not n or (_INT32.min <= time_delta.min() and time_delta.max() <= _INT32.max)
    frames.append(time_delta.astype("<i4") if narrow else time_delta)
    frames.append(np.ascontiguousarray(columns.value, dtype="<f8"))
    header = _COLUMNS.pack(
        _RULE if strided else _FRAMED,
        _RULE if steady else _FRAMED,
        4 if narrow else 8,
        int(step[0]) if n else 0,
        stride,
        int(epoch[0]) if n else NO_EPOCH,
        int(time[0]) if n else 0,
    )
    parts = [_HEADER.pack(MAGIC, FORMAT_VERSION, PIPELINE_COLUMNS_ZSTD, n), header]
    for frame in frames:
        data = bytes(_blosc().encode(frame))
        parts += [_FRAME.pack(len(data)), data]
    return b"".join(parts)


def decode(blob: bytes, where: str = "chunk", out: Columns | None = None) -> Columns:
    """Decode a blob written by :func:`encode` (any pipeline); ``where`` names it in error
    messages.

    With ``out`` (four contiguous arrays of the chunk's length) the columns are written there.
    """
    if len(blob) < _HEADER.size:
        raise StoreError(f"{where}: truncated chunk ({len(blob)} bytes)")
    magic, version, pipeline, n = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise StoreError(f"{where}: not a scalar chunk (magic {magic!r})")
    if version > FORMAT_VERSION or pipeline not in _DECODERS:
        raise StoreError(
            f"{where}: chunk format {version}/pipeline {pipeline} is newer than this "
            f"stepstore understands (format {FORMAT_VERSION}); upgrade stepstore"
        )
    if out is None:
        out = Columns(
            np.empty(n, np.int64),
            np.empty(n, np.int64),
            np.empty(n, np.int64),
            np.empty(n, np.float64),
        )
    elif any(len(column) != n for column in out):
        raise StoreError(f"{where}: chunk holds {n} points, its index says {len(out.step)}")
    try:
        _DECODERS[pipeline](memoryview(blob)[_HEADER.size :], n, where, out)
    except (RuntimeError, ValueError, struct.error) as exc:
        raise StoreError(f"{where}: chunk payload does not decompress ({exc})") from None
    return out


def _decode_table(payload: memoryview, n: int, where: str, out: Columns) -> None:
    """Pipeline 1: one frame of the four columns, int64 ones as deltas."""
    raw = _blosc().decode(payload)
    if len(raw) != 32 * n:
        raise StoreError(f"{where}: chunk holds {len(raw)} bytes, expected {32 * n}")
    table = np.frombuffer(raw, dtype="<i8").reshape(4, n)
    with np.errstate(over="ignore"):
        for i in range(3):
            np.cumsum(table[i], out=out[i])
    out.value[:] = table[3].view("<f8")


def _decode_columns(payload: memoryview, n: int, where: str, out: Columns) -> None:
    """Pipeline 2: rules from the header, one frame per other column (see the module doc)."""
    step_kind, epoch_kind, width, first, stride, epoch, start = _COLUMNS.unpack_from(payload)
    if {step_kind, epoch_kind} - {_RULE, _FRAMED} or width not in (4, 8):
        raise StoreError(
            f"{where}: unknown column layout (step kind {step_kind}, epoch kind {epoch_kind}, "
            f"time width {width}); expected kinds 0 or 1 and width 4 or 8"
        )
    expected = 2 + (step_kind == _FRAMED) + (epoch_kind == _FRAMED)
    frames = iter(_frames(payload[_COLUMNS.size :], expected, where))
    if step_kind == _RULE:
        with np.errstate(over="ignore"):
            np.multiply(np.arange(n, dtype=np.int64), stride, out=out.step)
            np.add(out.step, first, out=out.step)
    else:
        _unpack(next(frames), out.step, where, "step")
        np.cumsum(out.step, out=out.step)
    if epoch_kind == _RULE:
        out.epoch.fill(epoch)
    else:
        _unpack(next(frames), out.epoch, where, "epoch")
        np.cumsum(out.epoch, out=out.epoch)
    if width == 4:
        deltas = np.empty(n, np.int32)
        _unpack(next(frames), deltas, where, "time")
        np.cumsum(deltas, dtype=np.int64, out=out.time)
    else:
        _unpack(next(frames), out.time, where, "time")
        np.cumsum(out.time, out=out.time)
    np.add(out.time, start, out=out.time)
    _unpack(next(frames), out.value, where, "value")


def _frames(payload: memoryview, expected: int, where: str) -> list[memoryview]:
    """The ``expected`` length-prefixed frames that make up a pipeline 2 payload."""
    frames, offset = [], 0
    while offset < len(payload):
        if len(payload) - offset < _FRAME.size:
            raise StoreError(f"{where}: chunk has {len(payload) - offset} stray byte(s) at its end")
        (size,) = _FRAME.unpack_from(payload, offset)
        offset += _FRAME.size + size
        if offset > len(payload):
            raise StoreError(f"{where}: truncated chunk (a column ends past the blob)")
        frames.append(payload[offset - size : offset])
    if len(frames) != expected:
        raise StoreError(f"{where}: chunk holds {len(frames)} column frames, expected {expected}")
    return frames


def _unpack(frame: memoryview, column: np.ndarray, where: str, name: str) -> None:
    """Decompress one Blosc frame straight into ``column`` (its exact size checked)."""
    (size,) = _BLOSC_NBYTES.unpack_from(frame, 4)
    if size != column.nbytes:
        raise StoreError(f"{where}: {name} column holds {size} bytes, expected {column.nbytes}")
    _blosc().decode(frame, out=column)


_DECODERS = {PIPELINE_DELTA_SHUFFLE_ZSTD: _decode_table, PIPELINE_COLUMNS_ZSTD: _decode_columns}


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
    return indexed(seq, sealed, columns, data, checksum(data))


def indexed(seq: int, sealed: bool, columns: Columns, data: bytes, crc: int) -> EncodedChunk:
    """The chunk whose blob ``data`` (checksum ``crc``) holds ``columns``, with the index
    fields and statistics those points give."""
    epochs = columns.epoch[columns.epoch != NO_EPOCH]
    return EncodedChunk(
        seq=seq,
        sealed=sealed,
        first_step=int(columns.step.min()),
        last_step=int(columns.step.max()),
        min_epoch=int(epochs.min()) if len(epochs) else None,
        max_epoch=int(epochs.max()) if len(epochs) else None,
        size=len(columns.step),
        stats=compute_stats(columns).tobytes(),
        data=data,
        checksum=crc,
    )
