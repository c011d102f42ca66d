"""The read side of tensor series: NumPy-style indexing whose first axis is step numbers."""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidArgumentError, NotFoundError, StoreError
from .dtypes import common_dtype, logical_dtype, storage_dtype
from .index import ChunkIndex, Segment
from .location import ArrayLocation
from .zarr_v3 import chunk_key

if TYPE_CHECKING:
    import pandas as pd


class TensorSeries:
    """One key's tensors over training: ``ts[step]``, ``ts[a:b, 17]``, ``ts[[10, 20]]``.

    The first index selects by **step number**: an int (the row logged at that step; the
    last one if several), a slice ``a:b`` (recorded steps ``a <= step < b``) or a list of
    steps; a step that was not recorded raises ``NotFoundError`` (a ``KeyError``) naming
    it. Further indices apply NumPy-style to each tensor. Raw chunks are memory-mapped,
    so reading one element across many steps touches one page per step.
    """

    def __init__(
        self, location: ArrayLocation, key: str, segments: list[Segment], chunks: list[ChunkIndex]
    ) -> None:
        self.key = key
        self._location = location
        used = {c.segment for c in chunks}  # a segment without chunks has no data yet
        self._segments = {s.segment: s for s in segments if s.segment in used}
        self._chunks = chunks
        counts = [c.count for c in chunks]
        self.steps = (
            np.concatenate([np.frombuffer(c.steps, "<i8") for c in chunks])
            if chunks
            else np.empty(0, np.int64)
        )
        self._epochs = (
            np.concatenate([np.frombuffer(c.epochs, "<i8") for c in chunks])
            if chunks
            else np.empty(0, np.int64)
        )
        self._chunk_of_row = np.repeat(np.arange(len(chunks)), counts)
        self._pos_of_row = (
            np.concatenate([np.arange(n) for n in counts]) if chunks else np.empty(0, np.int64)
        )
        self._sorted = bool(np.all(np.diff(self.steps) >= 0))
        self._cache: tuple[int, np.ndarray] | None = None

    def __repr__(self) -> str:
        return (
            f"<TensorSeries {self.key!r} steps={len(self.steps)} shape={self.shape} {self.dtype}>"
        )

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def dtype(self) -> np.dtype:
        """The dtype the tensors were logged with; when it changed during the run, the one
        that holds them all (each ``at(step)`` keeps its own)."""
        if not self._segments:
            raise NotFoundError(f"tensor series {self.key!r} has no data yet")
        return common_dtype([s.dtype for s in self._segments.values()])

    @property
    def shape(self) -> tuple[int | None, ...]:
        """``(steps, *tensor shape)``; a dimension that changed during the run is ``None``."""
        shapes = {s.shape for s in self._segments.values()}
        if not shapes:
            return (0,)
        first = next(iter(shapes))
        if len({len(s) for s in shapes}) != 1:
            return (len(self.steps), None)
        return (
            len(self.steps),
            *(d if all(s[i] == d for s in shapes) else None for i, d in enumerate(first)),
        )

    # -- row lookup -----------------------------------------------------------------------

    def _rows_for_steps(self, wanted: np.ndarray) -> np.ndarray:
        """Row of each wanted step (the last row logged at it)."""
        if self._sorted:
            rows = np.searchsorted(self.steps, wanted, side="right") - 1
            found = (rows >= 0) & (self.steps[np.clip(rows, 0, None)] == wanted)
        else:
            rows = np.array(
                [np.flatnonzero(self.steps == s)[-1:].tolist() or [-1] for s in wanted]
            ).reshape(-1)
            found = rows >= 0
        if not found.all():
            missing = int(wanted[~found][0])
            raise NotFoundError(
                f"tensor {self.key!r}: step {missing} was not recorded ({self._range_text()})"
            )
        return rows.astype(np.int64)

    def _range_text(self) -> str:
        if not len(self.steps):
            return "no steps recorded"
        return f"{len(self.steps)} steps recorded between {self.steps.min()} and {self.steps.max()}"

    def _rows(self, index: Any) -> tuple[np.ndarray, bool]:
        """Rows selected by the first index, and whether it was a single step."""
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            return self._rows_for_steps(np.array([int(index)], np.int64)), True
        if isinstance(index, slice):
            if index.step is not None:
                raise InvalidArgumentError(
                    f"tensor {self.key!r}: slices of steps take no stride (got {index})"
                )
            low = -np.inf if index.start is None else index.start
            high = np.inf if index.stop is None else index.stop
            return np.flatnonzero((self.steps >= low) & (self.steps < high)), False
        if isinstance(index, (list, tuple, np.ndarray)):
            return self._rows_for_steps(np.asarray(index, dtype=np.int64).reshape(-1)), False
        raise InvalidArgumentError(
            f"tensor {self.key!r}: the first index must be a step, a slice of steps or a list "
            f"of steps, got {index!r}"
        )

    # -- chunk access ---------------------------------------------------------------------

    def _chunk_array(self, number: int, rows: np.ndarray | None) -> np.ndarray:
        """Chunk ``number`` as an array ``(chunk_steps, *shape)``; checks the CRC of each of
        ``rows`` (the rows a read returns whole) against the index."""
        chunk = self._chunks[number]
        segment = self._segments[chunk.segment]
        path = chunk_path(segment, chunk)
        try:
            if self._cache is not None and self._cache[0] == number:
                data = self._cache[1]
            else:
                data = load_chunk(self._location, segment, path)
                if not isinstance(data, np.memmap):
                    self._cache = (number, data)
            if rows is not None:
                bad = first_bad_row(data, chunk, rows)
                if bad is not None:
                    step = np.frombuffer(chunk.steps, "<i8")[bad]
                    raise StoreError(
                        f"checksum mismatch in {self._location.describe(path)} "
                        f"(row {bad}, step {step})"
                    )
        except StoreError as exc:
            raise StoreError(f"tensor {self.key!r}: {exc}; run `stepstore check`") from None
        return data

    def _gather(self, rows: np.ndarray, rest: tuple[Any, ...], single: bool) -> Any:
        whole_rows = not rest or all(isinstance(r, slice) and r == slice(None) for r in rest)
        parts = []
        chunk_ids = self._chunk_of_row[rows]
        boundaries = np.flatnonzero(np.diff(chunk_ids)) + 1
        for group in np.split(np.arange(len(rows)), boundaries):
            if not len(group):
                continue
            number = int(chunk_ids[group[0]])
            positions = self._pos_of_row[rows[group]]
            data = self._chunk_array(number, positions if whole_rows else None)
            if len(positions) > 1 and np.all(np.diff(positions) == 1):
                picked = data[positions[0] : positions[-1] + 1][(slice(None), *rest)]
            else:
                picked = data[(positions, *rest)]
            segment = self._segments[self._chunks[number].segment]
            parts.append(_logical(np.array(picked), segment))
        if single:
            return parts[0][0]
        shapes = {p.shape[1:] for p in parts}
        if len(shapes) > 1:
            raise InvalidArgumentError(
                f"tensor {self.key!r}: the selected steps hold tensors of different shapes "
                f"{sorted(shapes)}; select steps of one shape or use .at(step)"
            )
        if not parts:
            first = next(iter(self._segments.values()), None)
            if first is None:
                return np.empty((0,))
            return _logical(np.empty((0, *first.shape), storage_dtype(first.dtype)), first)
        if len({p.dtype for p in parts}) > 1:
            return np.concatenate(parts, dtype=self.dtype)
        return np.concatenate(parts)

    def __getitem__(self, index: Any) -> np.ndarray:
        first, rest = (index[0], tuple(index[1:])) if isinstance(index, tuple) else (index, ())
        rows, single = self._rows(first)
        return self._gather(rows, rest, single)

    def at(self, step: int) -> np.ndarray:
        """The tensor logged at ``step`` (the last one if several)."""
        return self[int(step)]

    def verify(self) -> list[str]:
        """Check every chunk against its checksums; one message per damaged chunk."""
        problems = []
        for number, chunk in enumerate(self._chunks):
            try:
                self._chunk_array(number, np.arange(chunk.count))
            except StoreError as exc:
                problems.append(
                    str(exc)
                    .removeprefix(f"tensor {self.key!r}: ")
                    .removesuffix("; run `stepstore check`")
                )
        return problems

    def epochs(self) -> np.ndarray:
        """The epoch of each recorded step (-1 for none), aligned with ``steps``."""
        return np.where(self._epochs == np.iinfo(np.int64).min, -1, self._epochs)

    def stats(self) -> pd.DataFrame:
        """Per step: mean, std, min, max, L2 norm and fraction of zeros, chunk by chunk."""
        import pandas as pd

        from .reduce import STAT_NAMES, stats

        rows = []
        for number, chunk in enumerate(self._chunks):
            data = self._chunk_array(number, None)
            steps = np.frombuffer(chunk.steps, "<i8")
            segment = self._segments[chunk.segment]
            for pos in range(chunk.count):
                row = _logical(np.asarray(data[pos]), segment)
                rows.append({"step": int(steps[pos]), **stats(row)})
        return pd.DataFrame(rows, columns=["step", *STAT_NAMES])

    def to_xarray(self) -> Any:
        """The series as an ``xarray.DataArray`` with a ``step`` coordinate (needs xarray)."""
        try:
            import xarray as xr
        except ImportError:
            raise InvalidArgumentError(
                "TensorSeries.to_xarray() needs xarray: pip install xarray"
            ) from None
        data = self[:]
        dims = ["step", *(f"dim_{i}" for i in range(data.ndim - 1))]
        return xr.DataArray(data, dims=dims, coords={"step": self.steps}, name=self.key)


def chunk_path(segment: Segment, chunk: ChunkIndex) -> str:
    """Path of a chunk file under the array root (its Zarr chunk key)."""
    return f"{segment.path}/{chunk_key(chunk.chunk, len(segment.shape) + 1)}"


def _logical(array: np.ndarray, segment: Segment) -> np.ndarray:
    """Stored values as the dtype they were logged with (bfloat16 is stored as uint16)."""
    dtype = logical_dtype(segment.dtype)
    return array.view(dtype) if dtype != array.dtype else array


def load_chunk(location: ArrayLocation, segment: Segment, path: str) -> np.ndarray:
    """A chunk file as an array ``(chunk_steps, *shape)``: memory-mapped when raw and local,
    else read (and decompressed). Raises ``StoreError`` naming the file when it is missing,
    short or does not decompress."""
    dtype = storage_dtype(segment.dtype)
    full = (segment.chunk_steps, *segment.shape)
    size = int(np.prod(full, dtype=np.int64)) * dtype.itemsize
    if size == 0:  # tensors with a 0-length dimension: nothing to read (or to memory-map)
        return np.empty(full, dtype)
    if segment.codec == "raw" and location.local:
        local = location.local_path(path)
        if not local.exists():
            raise StoreError(f"chunk file {local} is missing")
        if local.stat().st_size < size:
            raise StoreError(
                f"chunk file {local} is short ({local.stat().st_size} of {size} bytes)"
            )
        return np.memmap(local, dtype=dtype, mode="r", shape=full)
    blob = location.read(path)
    if segment.codec == "zstd":
        from numcodecs import Zstd

        try:
            blob = Zstd().decode(blob)
        except (RuntimeError, ValueError) as exc:
            raise StoreError(
                f"chunk file {location.describe(path)} does not decompress ({exc})"
            ) from None
    if len(blob) != size:
        raise StoreError(
            f"chunk file {location.describe(path)} holds {len(blob)} bytes, expected {size}"
        )
    return np.frombuffer(blob, dtype=dtype).reshape(full)


def first_bad_row(data: np.ndarray, chunk: ChunkIndex, rows: Any) -> int | None:
    """The first of ``rows`` whose CRC-32 differs from the chunk's index, or None."""
    sums = np.frombuffer(chunk.checksums, "<u4")
    for pos in rows:
        if pos < len(sums) and zlib.crc32(data[pos].reshape(-1).view(np.uint8)) != sums[pos]:
            return int(pos)
    return None
