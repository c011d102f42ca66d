"""Tensor series into Zarr v3: rows into chunk files, index rows for the store (what the
array writer thread calls; ``series.py`` reads them back).

Raw chunks on a local disk (codec ``"rows"``) are Zarr shards of single rows that each
step's row is ``pwrite``-n onto the end of, as fast as ``np.save`` per step: a file holds
the rows written so far and no more (its shard index, written at each flush before the
index rows that point at the rows, says where they lie; see ``zarr_v3``). Data that
compresses (detected on a series segment's first row: zstd must save at least 20 %) and
data on object stores is written as whole chunks, the open chunk rewritten at each flush.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field

import numpy as np

from ..errors import StoreError
from .dtypes import storage_dtype
from .index import ChunkIndex, Segment
from .location import ArrayLocation
from .paths import series_path
from .zarr_v3 import (
    SHARD_ENTRY_BYTES,
    STEPS_CHUNK,
    array_document,
    chunk_key,
    empty_shard_header,
    group_document,
    segment_document,
    shard_entries,
    shard_header_bytes,
)

RAW_CHUNK_BYTES = 64 << 20
PACKED_CHUNK_BYTES = 16 << 20
MAX_CHUNK_STEPS = 4096
_COMPRESS_GAIN = 0.8

_zstd = None


def _compressor():  # type: ignore[no-untyped-def]
    global _zstd
    if _zstd is None:
        from numcodecs import Zstd

        _zstd = Zstd(level=1)
    return _zstd


def _pays_to_compress(row: np.ndarray) -> bool:
    sample = row.reshape(-1).view(np.uint8)[: 1 << 20].tobytes()
    return len(_compressor().encode(sample)) < _COMPRESS_GAIN * len(sample)


@dataclass
class _OpenChunk:
    index: int
    rows: int = 0
    steps: list[int] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    checksums: list[int] = field(default_factory=list)
    fd: int | None = None
    indexed: int = 0  # rows the shard index of a "rows" chunk file names
    buffer: np.ndarray | None = None
    dirty: bool = False


class SegmentWriter:
    """Appends rows of one shape to one Zarr array."""

    def __init__(self, location: ArrayLocation, segment: Segment, first_row: int) -> None:
        self.location = location
        self.segment = segment
        self.first_row = first_row
        self.rows = 0
        self.row_shape = segment.shape
        self.dtype = storage_dtype(segment.dtype)
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self.in_place = segment.codec == "rows"
        self.header_bytes = shard_header_bytes(segment.chunk_steps) if self.in_place else 0
        self._chunk = _OpenChunk(0)
        self._pending: list[ChunkIndex] = []
        self._sealed_fds: list[int] = []
        self._meta_rows = -1

    @classmethod
    def start(
        cls,
        location: ArrayLocation,
        series_id: int,
        number: int,
        path: str,
        row: np.ndarray,
        dtype: str,
        first_row: int,
    ) -> SegmentWriter:
        """A new segment for rows like ``row``, choosing chunking and codec from it."""
        row_bytes = max(1, row.nbytes)
        packed = not location.local or _pays_to_compress(row)
        target = PACKED_CHUNK_BYTES if packed else RAW_CHUNK_BYTES
        steps = int(min(MAX_CHUNK_STEPS, max(1, target // row_bytes)))
        segment = Segment(
            series_id,
            number,
            tuple(row.shape),
            dtype,
            steps,
            "zstd" if packed else "rows",
            f"{path}/s{number}",
        )
        return cls(location, segment, first_row)

    def _chunk_path(self, index: int) -> str:
        return f"{self.segment.path}/{chunk_key(index, len(self.row_shape) + 1)}"

    def append(self, step: int, epoch: int, time_us: int, row: np.ndarray) -> None:
        """Write one step's row. Nothing is counted before the row is written, so a call
        that raises (a full disk) can be repeated."""
        if self._chunk.rows == self.segment.chunk_steps:
            self._seal()
        chunk = self._chunk
        data = np.ascontiguousarray(row, dtype=self.dtype)
        if self.in_place:
            self._write_in_place(chunk, data.reshape(-1).view(np.uint8).data)
        else:
            if chunk.buffer is None:
                chunk.buffer = np.zeros((self.segment.chunk_steps, *self.row_shape), self.dtype)
            chunk.buffer[chunk.rows] = data
        chunk.checksums.append(zlib.crc32(data.reshape(-1).view(np.uint8).data))
        chunk.steps.append(step)
        chunk.epochs.append(epoch)
        chunk.times.append(time_us)
        chunk.rows += 1
        chunk.dirty = True
        self.rows += 1

    def _write_in_place(self, chunk: _OpenChunk, data: memoryview) -> None:
        """Write a row onto the end of the open chunk file (created with an empty shard
        index at its first row)."""
        if chunk.fd is None:
            fd = self.location.open_chunk(self._chunk_path(chunk.index))
            try:
                self._pwrite(chunk, fd, empty_shard_header(self.segment.chunk_steps), 0)
            except BaseException:
                os.close(fd)
                raise
            chunk.fd = fd
        self._pwrite(chunk, chunk.fd, data, self.header_bytes + chunk.rows * self.row_bytes)

    def _pwrite(self, chunk: _OpenChunk, fd: int, data: bytes | memoryview, offset: int) -> None:
        """Write ``data`` at ``offset``, going on after a short write, so a row is never left
        half-written under the checksum of the whole row; raises ``OSError`` (a full disk)
        or ``StoreError`` when nothing more can be written."""
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, offset)
            if written <= 0:
                where = self.location.describe(self._chunk_path(chunk.index))
                raise StoreError(f"{where}: no room for {len(view)} bytes at offset {offset}")
            view, offset = view[written:], offset + written

    def _index_rows(self, chunk: _OpenChunk) -> None:
        """Name the rows written since the last call in the chunk file's shard index."""
        assert chunk.fd is not None
        if chunk.indexed < chunk.rows:
            entries = shard_entries(
                chunk.indexed, chunk.rows - chunk.indexed, self.row_bytes, self.segment.chunk_steps
            )
            self._pwrite(chunk, chunk.fd, entries, chunk.indexed * SHARD_ENTRY_BYTES)
            chunk.indexed = chunk.rows

    def _index(self, chunk: _OpenChunk, sealed: bool) -> ChunkIndex:
        return ChunkIndex(
            self.segment.series_id,
            self.segment.segment,
            chunk.index,
            chunk.steps[0],
            chunk.steps[-1],
            chunk.rows,
            sealed,
            np.asarray(chunk.steps, "<i8").tobytes(),
            np.asarray(chunk.epochs, "<i8").tobytes(),
            np.asarray(chunk.times, "<i8").tobytes(),
            np.asarray(chunk.checksums, "<u4").tobytes(),
        )

    def _write_packed(self, chunk: _OpenChunk) -> None:
        assert chunk.buffer is not None
        raw = chunk.buffer.reshape(-1).view(np.uint8)
        blob = bytes(_compressor().encode(raw)) if self.segment.codec == "zstd" else raw.tobytes()
        self.location.write(self._chunk_path(chunk.index), blob)

    def _seal(self) -> None:
        chunk = self._chunk
        if chunk.fd is not None:
            self._index_rows(chunk)
            self._sealed_fds.append(chunk.fd)  # synced at the next flush, before its index
            chunk.fd = None
        else:
            self._write_packed(chunk)
        self._pending.append(self._index(chunk, sealed=True))
        self._chunk = _OpenChunk(chunk.index + 1)

    def flush(self, durable: bool) -> list[ChunkIndex]:
        """Make rows so far readable (and durable with ``durable``); return index updates."""
        if self._chunk.rows == self.segment.chunk_steps:
            self._seal()
        while self._sealed_fds:
            if durable:
                os.fdatasync(self._sealed_fds[0])
            os.close(self._sealed_fds.pop(0))
        chunk = self._chunk
        if chunk.dirty and chunk.rows:
            if chunk.fd is not None:
                self._index_rows(chunk)
                if durable:
                    os.fdatasync(chunk.fd)
            else:
                self._write_packed(chunk)
            chunk.dirty = False
            self._pending.append(self._index(chunk, sealed=False))
        if self._meta_rows != self.rows:
            self.location.write(
                f"{self.segment.path}/zarr.json",
                segment_document(self.segment, self.rows, self.first_row),
            )
            self._meta_rows = self.rows
        pending, self._pending = self._pending, []
        return pending

    def close(self) -> list[ChunkIndex]:
        """Flush durably and release the open chunk file."""
        pending = self.flush(durable=True)
        if self._chunk.fd is not None:
            os.close(self._chunk.fd)
            self._chunk.fd = None
        return pending


class TensorSeriesWriter:
    """One tensor series: its Zarr group, steps array and shape segments."""

    def __init__(
        self,
        location: ArrayLocation,
        run_id: str,
        key: str,
        series_id: int,
        dtype: str,
        existing: tuple[list[Segment], list[ChunkIndex]] = ([], []),
        rank: int = 0,
    ) -> None:
        self.location = location
        self.key = key
        self.series_id = series_id
        self.dtype = dtype
        self.path = series_path(run_id, key, rank)
        self.segments: list[Segment] = list(existing[0])  # a resumed run adds segments
        self._writer: SegmentWriter | None = None
        self._unannounced: Segment | None = None  # started, but no row is written in it yet
        self._closed: list[ChunkIndex] = []
        steps = np.concatenate(
            [np.empty(0, "<i8"), *(np.frombuffer(c.steps, "<i8") for c in existing[1])]
        )
        self._rows = len(steps)
        self._steps_chunk: list[int] = steps[self._rows - self._rows % STEPS_CHUNK :].tolist()
        self._steps_dirty = False
        location.write(
            f"{self.path}/zarr.json",
            group_document(
                {"stepstore": {"key": key, "run": run_id, "rank": rank, "dtype": dtype}}
            ),
        )

    def append(
        self, step: int, epoch: int, time_us: int, row: np.ndarray, dtype: str
    ) -> Segment | None:
        """Write one step of ``dtype``; returns the new segment when the shape or the dtype
        changed (or on the first), so every tensor is stored exactly as logged.

        A call that raises (a full disk) has counted nothing and announced no segment, so
        repeating it writes the row once, at the row it would have had."""
        if len(self._steps_chunk) == STEPS_CHUNK:
            if self._steps_dirty:
                self._write_steps()
            self._steps_chunk = []
        writer = self._writer
        if writer is None or writer.row_shape != row.shape or writer.segment.dtype != dtype:
            if writer is not None:
                self._closed.extend(writer.close())
            self._writer = writer = SegmentWriter.start(
                self.location,
                self.series_id,
                len(self.segments),
                self.path,
                row,
                dtype,
                self._rows,
            )
            self.segments.append(writer.segment)
            self._unannounced = writer.segment
        writer.append(step, epoch, time_us, row)
        self._rows += 1
        self._steps_chunk.append(step)
        self._steps_dirty = True
        started, self._unannounced = self._unannounced, None
        return started

    def _write_steps(self) -> None:
        number = (self._rows - 1) // STEPS_CHUNK
        padded = np.zeros(STEPS_CHUNK, "<i8")
        padded[: len(self._steps_chunk)] = self._steps_chunk
        self.location.write(f"{self.path}/steps/{chunk_key(number, 1)}", padded.tobytes())
        self.location.write(
            f"{self.path}/steps/zarr.json",
            array_document((self._rows,), (STEPS_CHUNK,), "int64", False),
        )
        self._steps_dirty = False

    def flush(self, durable: bool) -> list[ChunkIndex]:
        """Index updates since the last flush; writes the steps array and metadata. A call
        that raises keeps its updates for the next one."""
        if self._steps_dirty and self._steps_chunk:
            self._write_steps()
        if self._writer is not None:
            self._closed.extend(self._writer.flush(durable))
        pending, self._closed = self._closed, []
        return pending

    def close(self) -> list[ChunkIndex]:
        """Flush durably and close the open chunk."""
        if self._writer is not None:
            self._closed.extend(self._writer.close())
        return self.flush(durable=True)
