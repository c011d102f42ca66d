"""The read side of tensor series: NumPy-style indexing whose first axis is step numbers,
and the checks of a series' chunk files and Zarr metadata against its index that
``Store.check`` and ``check --repair`` share."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidArgumentError, NotFoundError, StoreError
from .dtypes import DTYPES, common_dtype, logical_dtype, storage_dtype
from .index import ChunkIndex, Segment
from .location import ArrayLocation
from .zarr_v3 import STEPS_CHUNK, chunk_key, shard_header_bytes

if TYPE_CHECKING:
    import pandas as pd


class TensorSeries:
    """One key's tensors over training: ``ts[step]``, ``ts[a:b, 17]``, ``ts[[10, 20]]``.

    The first index selects by **step number**: an int (the row logged at that step; the
    last one if several), a slice ``a:b`` (recorded steps ``a <= step < b``) or a list of
    steps; a step that was not recorded raises ``NotFoundError`` (a ``KeyError``) naming
    it. Further indices apply NumPy-style to each tensor. Raw chunks are memory-mapped,
    so reading one element across many steps touches one page per step.

    Raises:
        StoreError: An index row is damaged (run ``stepstore check --repair``).
    """

    def __init__(
        self, location: ArrayLocation, key: str, segments: list[Segment], chunks: list[ChunkIndex]
    ) -> None:
        self.key = key
        self._location = location
        used = {c.segment for c in chunks}  # a segment without chunks has no data yet
        self._segments = {s.segment: s for s in segments if s.segment in used}
        for chunk in chunks:
            damage = index_damage(self._segments.get(chunk.segment), chunk)
            if damage is not None:
                raise StoreError(
                    f"tensor {key!r}: the index row of segment {chunk.segment} chunk "
                    f"{chunk.chunk} is damaged ({damage}); run `stepstore check --repair`"
                )
        self._chunks = chunks
        counts = [c.count for c in chunks]
        self.steps = _joined([np.frombuffer(c.steps, "<i8") for c in chunks])
        self._epochs = _joined([np.frombuffer(c.epochs, "<i8") for c in chunks])
        self._chunk_of_row = np.repeat(np.arange(len(chunks)), counts)
        self._entry_of_row = _joined([np.arange(n, dtype=np.int64) for n in counts])
        self._pos_of_row = _joined([c.row_positions() for c in chunks])
        self._sorted = bool(np.all(np.diff(self.steps) >= 0))
        self._cache: tuple[int, np.ndarray] | None = None

    def __repr__(self) -> str:
        if not self._segments:
            return f"<TensorSeries {self.key!r}: 0 steps>"
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
        if not len(self.steps):
            found = np.zeros(len(wanted), bool)
            rows = np.full(len(wanted), -1)
        elif self._sorted:
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

    def _chunk_array(self, number: int, entries: Any, whole: bool) -> np.ndarray:
        """Chunk ``number`` as an array of its rows (see :func:`load_chunk`); checks that
        the file holds the rows of its index ``entries`` and, with ``whole`` (a read
        returns them whole), their CRC against the index."""
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
            wanted = chunk.row_positions()[entries]
            if np.any(wanted >= len(data)):
                end = int(wanted[wanted >= len(data)].min())
                raise StoreError(f"chunk file {self._location.describe(path)} ends in row {end}")
            if whole:
                bad = first_bad_row(data, chunk, entries)
                if bad is not None:
                    raise StoreError(_crc_text(self._location.describe(path), chunk, [bad]))
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
            entries = self._entry_of_row[rows[group]]
            data = self._chunk_array(number, entries, whole_rows)
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
        """The tensor logged at ``step`` (the last one if several); a step that was not
        recorded raises ``NotFoundError`` (a ``KeyError``) naming it."""
        return self[int(step)]

    def verify(self) -> list[str]:
        """Check every chunk against its checksums and the Zarr metadata (``zarr.json``
        files, the ``steps`` array) against the index; one message per problem."""
        problems = []
        for chunk in self._chunks:
            damage = row_damage(self._location, self._segments[chunk.segment], chunk)
            if damage is not None:
                problems.append(damage.reason)
        if self._segments:
            metadata = ZarrMetadata(self._location, list(self._segments.values()))
            problems.extend(metadata.problems(self._chunks))
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
            data = self._chunk_array(number, np.arange(chunk.count), False)
            steps = np.frombuffer(chunk.steps, "<i8")
            segment = self._segments[chunk.segment]
            for entry, pos in enumerate(chunk.row_positions()):
                row = _logical(np.asarray(data[pos]), segment)
                rows.append({"step": int(steps[entry]), **stats(row)})
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


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """``parts`` concatenated into one int64 array (empty when there are none)."""
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)


def chunk_path(segment: Segment, chunk: ChunkIndex) -> str:
    """Path of a chunk file under the array root (its Zarr chunk key)."""
    return f"{segment.path}/{chunk_key(chunk.chunk, len(segment.shape) + 1)}"


def series_root(segment: Segment) -> str:
    """Path of the Zarr group of the series that ``segment`` belongs to."""
    return segment.path.rpartition("/")[0]


def _logical(array: np.ndarray, segment: Segment) -> np.ndarray:
    """Stored values as the dtype they were logged with (bfloat16 is stored as uint16)."""
    dtype = logical_dtype(segment.dtype)
    return array.view(dtype) if dtype != array.dtype else array


def index_damage(segment: Segment | None, chunk: ChunkIndex) -> str | None:
    """Why a chunk's index row cannot be read (its segment is not in the index, or see
    :meth:`ChunkIndex.damage`), or None."""
    if segment is None:
        return f"segment {chunk.segment} is not in the index"
    return chunk.damage(segment.chunk_steps)


def read_file(location: ArrayLocation, path: str) -> bytes:
    """The bytes of an array file; raises ``StoreError`` naming it when it cannot be read
    (missing, a directory, a path a damaged index made unusable). An object store that does
    not answer raises ``ConnectionError``: that is no damage, and repair must not act on it."""
    try:
        return location.read(path)
    except (OSError, ValueError) as exc:
        if isinstance(exc, (StoreError, ConnectionError)):
            raise
        raise StoreError(f"array file {location.describe(path)} cannot be read ({exc})") from None


def load_chunk(location: ArrayLocation, segment: Segment, path: str) -> np.ndarray:
    """A chunk file as an array ``(rows, *shape)``: memory-mapped when raw and local, else
    read (and decompressed). ``rows`` is ``chunk_steps`` but for a ``"rows"`` chunk, which
    holds the whole rows its file does (fewer while it grows). Raises ``StoreError`` naming
    the file when it is missing, short (but for ``"rows"``) or does not decompress."""
    dtype = storage_dtype(segment.dtype)
    full = (segment.chunk_steps, *segment.shape)
    size = int(np.prod(full, dtype=np.int64)) * dtype.itemsize
    if size == 0:  # tensors with a 0-length dimension: nothing to read (or to memory-map)
        return np.empty(full, dtype)
    if segment.codec == "rows":
        return _rows_chunk(location, segment, path, dtype)
    if segment.codec == "raw" and location.local:
        return _map_chunk(location, path, dtype, full, size)
    blob = read_file(location, path)
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


def _map_chunk(
    location: ArrayLocation, path: str, dtype: np.dtype, full: tuple[int, ...], size: int
) -> np.ndarray:
    """A local raw chunk file, memory-mapped."""
    local = location.local_path(path)
    try:
        if not local.exists():
            raise StoreError(f"chunk file {local} is missing")
        actual = local.stat().st_size
        if actual < size:
            raise StoreError(f"chunk file {local} is short ({actual} of {size} bytes)")
        return np.memmap(local, dtype=dtype, mode="r", shape=full)
    except (OSError, ValueError) as exc:
        if isinstance(exc, StoreError):
            raise
        raise StoreError(f"chunk file {local} cannot be read ({exc})") from None


def _rows_chunk(
    location: ArrayLocation, segment: Segment, path: str, dtype: np.dtype
) -> np.ndarray:
    """The whole rows of a ``"rows"`` chunk file (a Zarr shard: its index, then the rows),
    memory-mapped when local."""
    header = shard_header_bytes(segment.chunk_steps)
    row = _row_bytes(segment)
    if not location.local:
        blob = read_file(location, path)
        count = min(segment.chunk_steps, max(0, len(blob) - header) // row)
        rows = np.frombuffer(blob, dtype, count * row // dtype.itemsize, header if count else 0)
        return rows.reshape(count, *segment.shape)
    local = location.local_path(path)
    try:
        size = local.stat().st_size
        count = min(segment.chunk_steps, max(0, size - header) // row)
        if not count:
            return np.empty((0, *segment.shape), dtype)
        return np.memmap(local, dtype, "r", header, (count, *segment.shape))
    except FileNotFoundError:
        raise StoreError(f"chunk file {local} is missing") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"chunk file {local} cannot be read ({exc})") from None


def first_bad_row(data: np.ndarray, chunk: ChunkIndex, entries: Any) -> int | None:
    """The first of a chunk's index ``entries`` whose row's CRC-32 differs from the index
    or that ``data`` does not hold, or None."""
    sums = np.frombuffer(chunk.checksums, "<u4")
    positions = chunk.row_positions()
    for entry in entries:
        if positions[entry] >= len(data):
            return int(entry)
        row = data[positions[entry]].reshape(-1).view(np.uint8)
        if zlib.crc32(row) != sums[entry]:
            return int(entry)
    return None


def _crc_text(where: str, chunk: ChunkIndex, entries: list[int]) -> str:
    """``checksum mismatch in FILE (row R, step S)`` for the first of ``entries``, and how
    many more there are."""
    entry = entries[0]
    position = int(chunk.row_positions()[entry])
    step = int(np.frombuffer(chunk.steps, "<i8")[entry])
    more = f" and {len(entries) - 1} more row(s)" if len(entries) > 1 else ""
    return f"checksum mismatch in {where} (row {position}, step {step}){more}"


# -- rows of a chunk against their checksums ---------------------------------------------------


@dataclass(frozen=True)
class RowDamage:
    """The rows of one chunk that cannot be read back as logged.

    Attributes:
        bad: Index entries (``0 .. count - 1``) whose row fails its CRC or is missing.
        reason: What is wrong, naming the file and the first bad row.
        pad_to: The size a local chunk file left short must have so that every indexed
            row position lies in it (a whole chunk for ``"raw"``: it is memory-mapped
            whole; 0: it is not short).
    """

    bad: tuple[int, ...]
    reason: str
    pad_to: int = 0


def row_damage(location: ArrayLocation, segment: Segment, chunk: ChunkIndex) -> RowDamage | None:
    """Which rows of ``chunk`` are damaged: those whose CRC-32 fails, those past the end
    of a raw chunk file left short by a machine crash, or all of a chunk whose file is
    missing or does not decompress. None when every row is intact and the file whole
    (a ``"rows"`` file holds its rows and need be no longer)."""
    path = chunk_path(segment, chunk)
    short = _short_raw_file(location, segment, path)
    if short is not None:
        return _short_damage(location, segment, chunk, path, *short)
    try:
        data = load_chunk(location, segment, path)
    except StoreError as exc:
        return RowDamage(tuple(range(chunk.count)), str(exc))
    positions = chunk.row_positions()
    missing = [e for e in range(chunk.count) if positions[e] >= len(data)]
    bad = _bad_entries(data, chunk, [e for e in range(chunk.count) if positions[e] < len(data)])
    if not bad and not missing:
        return None
    where = location.describe(path)
    reasons = [f"chunk file {where} ends in row {positions[missing[0]]}"] if missing else []
    if bad:
        reasons.append(_crc_text(where, chunk, bad))
    end = shard_header_bytes(segment.chunk_steps) + (int(positions[-1]) + 1) * _row_bytes(segment)
    pad_to = end if missing and location.local else 0
    return RowDamage(tuple(sorted(bad + missing)), "; ".join(reasons), pad_to)


def _bad_entries(data: np.ndarray, chunk: ChunkIndex, entries: Any) -> list[int]:
    """Those of ``entries`` whose row fails its CRC-32."""
    return [e for e in entries if first_bad_row(data, chunk, [e]) is not None]


def _row_bytes(segment: Segment) -> int:
    count = int(np.prod(segment.shape, dtype=np.int64))
    return count * storage_dtype(segment.dtype).itemsize


def _short_raw_file(
    location: ArrayLocation, segment: Segment, path: str
) -> tuple[bytes, int] | None:
    """The content and full size of a local raw chunk file shorter than a whole chunk, or
    None (not raw, not local, missing, or whole)."""
    if segment.codec != "raw" or not location.local:
        return None
    full = segment.chunk_steps * _row_bytes(segment)
    local = location.local_path(path)
    try:
        if not local.is_file() or local.stat().st_size >= full:
            return None
        return local.read_bytes(), full
    except (OSError, ValueError):
        return None  # reported when the file is read


def _short_damage(
    location: ArrayLocation,
    segment: Segment,
    chunk: ChunkIndex,
    path: str,
    data: bytes,
    full: int,
) -> RowDamage:
    """The damage of a short raw chunk file: rows past its end, rows failing their CRC."""
    row = _row_bytes(segment)
    padded = np.frombuffer(data + bytes(full - len(data)), storage_dtype(segment.dtype))
    rows = padded.reshape(segment.chunk_steps, *segment.shape)
    positions = chunk.row_positions()
    present = [e for e in range(chunk.count) if (positions[e] + 1) * row <= len(data)]
    missing = [e for e in range(chunk.count) if (positions[e] + 1) * row > len(data)]
    where = location.describe(path)
    reasons = [f"chunk file {where} is short ({len(data)} of {full} bytes)"]
    if missing:
        reasons = [f"chunk file {where} ends in row {positions[missing[0]]}"]
    bad = _bad_entries(rows, chunk, present)
    if bad:
        reasons.append(_crc_text(where, chunk, bad))
    return RowDamage(tuple(sorted(bad + missing)), "; ".join(reasons), full)


# -- Zarr metadata against the index -----------------------------------------------------------


def field_of(document: Any, *names: str) -> Any:
    """``document[names[0]][names[1]]...``, or None where a level is missing or no dict."""
    for name in names:
        if not isinstance(document, dict):
            return None
        document = document.get(name)
    return document


class ZarrMetadata:
    """The Zarr metadata of one tensor series (its group's and arrays' ``zarr.json``, its
    ``steps`` array) as stored, read once, checked against the series' index.

    Stepstore's own reads need none of it: it is what zarr, xarray and dask read.
    """

    def __init__(self, location: ArrayLocation, segments: list[Segment]) -> None:
        self.location = location
        self.segments = {s.segment: s for s in segments}
        self.root = series_root(segments[0])
        self._documents: dict[str, dict[str, Any] | str] = {}
        self._steps: dict[int, np.ndarray | str] = {}

    def document(self, path: str) -> dict[str, Any] | str:
        """The ``zarr.json`` at ``path`` as a dict, or why it is not one."""
        if path not in self._documents:
            try:
                parsed = json.loads(read_file(self.location, path))
            except StoreError as exc:
                parsed = str(exc)
            except ValueError:
                parsed = f"{self.location.describe(path)} is not JSON"
            if not isinstance(parsed, (dict, str)):
                parsed = f"{self.location.describe(path)} is not a JSON object"
            self._documents[path] = parsed
        return self._documents[path]

    def group_problem(self) -> str | None:
        """What is wrong with the series group's ``zarr.json``, or None."""
        path = f"{self.root}/zarr.json"
        document = self.document(path)
        if isinstance(document, str):
            return document
        if (document.get("zarr_format"), document.get("node_type")) != (3, "group"):
            return f"{self.location.describe(path)} is not a Zarr v3 group"
        return None

    def segment_problem(self, segment: Segment, rows: int) -> str | None:
        """What is wrong with a segment array's ``zarr.json`` (which must hold at least
        ``rows`` rows), or None."""
        path = f"{segment.path}/zarr.json"
        document = self.document(path)
        if isinstance(document, str):
            return document
        shape = document.get("shape")
        codecs = document.get("codecs")
        names = [field_of(c, "name") for c in codecs] if isinstance(codecs, list) else []
        wrong = [
            name
            for name, ok in (
                ("zarr_format", document.get("zarr_format") == 3),
                ("node_type", document.get("node_type") == "array"),
                ("data_type", document.get("data_type") == DTYPES[segment.dtype][0]),
                (
                    "shape",
                    isinstance(shape, list)
                    and shape[1:] == list(segment.shape)
                    and isinstance(shape[0], int)
                    and shape[0] >= rows,
                ),
                (
                    "chunk_grid",
                    field_of(document, "chunk_grid", "configuration", "chunk_shape")
                    == [segment.chunk_steps, *segment.shape],
                ),
                (
                    "codecs",
                    ("zstd" in names) == (segment.codec == "zstd")
                    and ("sharding_indexed" in names) == (segment.codec == "rows"),
                ),
                ("first_row", self.first_row(segment) is not None),
            )
            if not ok
        ]
        if wrong:
            return (
                f"{self.location.describe(path)} does not describe segment {segment.segment} "
                f"({', '.join(wrong)})"
            )
        return None

    def first_row(self, segment: Segment) -> int | None:
        """The row of the steps array that holds the segment's first row, as its
        ``zarr.json`` records it, or None."""
        document = self.document(f"{segment.path}/zarr.json")
        value = field_of(document, "attributes", "stepstore", "first_row")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        return None

    def steps_problem(self, rows: int) -> str | None:
        """What is wrong with the steps array's ``zarr.json`` (which must hold at least
        ``rows`` steps), or None."""
        path = f"{self.root}/steps/zarr.json"
        document = self.document(path)
        if isinstance(document, str):
            return document
        shape = document.get("shape")
        if (
            document.get("node_type") != "array"
            or document.get("data_type") != "int64"
            or field_of(document, "chunk_grid", "configuration", "chunk_shape") != [STEPS_CHUNK]
            or not (isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int))
            or shape[0] < rows
        ):
            return f"{self.location.describe(path)} does not describe the steps array"
        return None

    def array_rows(self, segment: Segment, chunk: ChunkIndex) -> np.ndarray | None:
        """The rows of the steps array that hold the chunk's rows, or None when the
        segment's first row is not known."""
        first = self.first_row(segment)
        if first is None:
            return None
        return first + chunk.chunk * segment.chunk_steps + chunk.row_positions()

    def steps_at(self, rows: np.ndarray) -> np.ndarray | str:
        """The steps the steps array holds at ``rows``, or why they cannot be read."""
        values = np.empty(len(rows), np.int64)
        for number in np.unique(rows // STEPS_CHUNK):
            block = self._steps_block(int(number))
            if isinstance(block, str):
                return block
            inside = rows // STEPS_CHUNK == number
            values[inside] = block[rows[inside] % STEPS_CHUNK]
        return values

    def _steps_block(self, number: int) -> np.ndarray | str:
        if number not in self._steps:
            path = f"{self.root}/steps/{chunk_key(number, 1)}"
            try:
                data = read_file(self.location, path)
            except StoreError as exc:
                self._steps[number] = str(exc)
            else:
                if len(data) != 8 * STEPS_CHUNK:
                    self._steps[number] = (
                        f"steps chunk {self.location.describe(path)} holds {len(data)} bytes, "
                        f"expected {8 * STEPS_CHUNK}"
                    )
                else:
                    self._steps[number] = np.frombuffer(data, "<i8")
        return self._steps[number]

    def chunk_steps(self, chunk: ChunkIndex, before: int) -> tuple[np.ndarray, np.ndarray] | str:
        """Where the chunk's rows lie in the steps array and the steps it holds there, or
        why it cannot say.

        A row lies at its segment's first row plus its place in the segment; but a run
        resumed after ``check --repair`` dropped rows writes the steps array's last block
        again with the rows indexed, one after the other (``before`` of them precede this
        chunk). Of the two readings, the one that agrees with more of the index is taken.
        """
        segment = self.segments[chunk.segment]
        placed = self.array_rows(segment, chunk)
        if placed is None:
            return f"the first row of segment {segment.segment} is not known"
        steps = np.frombuffer(chunk.steps, "<i8")
        best: tuple[np.ndarray, np.ndarray] | str = "no steps"
        for rows in (placed, before + np.arange(chunk.count)):
            found = self.steps_at(rows)
            if isinstance(best, str) or (
                not isinstance(found, str) and (found == steps).sum() > (best[1] == steps).sum()
            ):
                best = found if isinstance(found, str) else (rows, found)
        return best

    def extents(self, chunks: list[ChunkIndex]) -> dict[int, int]:
        """Per segment, how many rows its array must hold for the indexed ones."""
        extents: dict[int, int] = {}
        for chunk in chunks:
            segment = self.segments[chunk.segment]
            end = chunk.chunk * segment.chunk_steps + int(chunk.row_positions()[-1]) + 1
            extents[chunk.segment] = max(extents.get(chunk.segment, 0), end)
        return extents

    def problems(self, chunks: list[ChunkIndex]) -> list[str]:
        """Everything wrong with the metadata for the (consistent) index rows ``chunks``:
        ``zarr.json`` files that are missing, not JSON or do not describe their array, and
        index rows whose steps are not those of the steps array or of their first and last
        step."""
        problems = [p for p in [self.group_problem()] if p is not None]
        extents = self.extents(chunks)
        needed = 0
        for number, rows in sorted(extents.items()):
            segment = self.segments[number]
            problem = self.segment_problem(segment, rows)
            if problem is not None:
                problems.append(problem)
            first = self.first_row(segment)
            needed = max(needed, (first or 0) + rows)
        problem = self.steps_problem(needed)
        if problem is not None:
            problems.append(problem)
        before = 0
        for chunk in chunks:
            found = self.chunk_steps(chunk, before)
            check = check_steps(chunk, found if isinstance(found, str) else found[1])
            if check is not None:
                problems.append(f"segment {chunk.segment} chunk {chunk.chunk}: {check.reason}")
            before += chunk.count
        return problems


# -- the steps of an index row -----------------------------------------------------------------


@dataclass(frozen=True)
class StepCheck:
    """Where the steps of a chunk's index row and of the steps array part.

    Attributes:
        wrong: Index entries whose step in the index is not to be trusted.
        steps: The steps the index should hold (None: the wrong entries' steps are not
            known and the rows are to be dropped).
        array_wrong: Whether the steps array is what is damaged (the index is right).
        reason: What differs.
    """

    wrong: tuple[int, ...]
    steps: np.ndarray | None
    array_wrong: bool
    reason: str


def _ordered(steps: np.ndarray, chunk: ChunkIndex) -> bool:
    """Whether ``steps`` can be the chunk's: from its first to its last step, never back."""
    return (
        int(steps[0]) == chunk.first_step
        and int(steps[-1]) == chunk.last_step
        and bool(np.all(np.diff(steps) >= 0))
    )


def check_steps(chunk: ChunkIndex, array: np.ndarray | str) -> StepCheck | None:
    """Compare the steps of a (consistent) index row with those the steps array holds for
    its rows (``array``; a string when they cannot be read) and with its first and last
    step; None when they all agree.

    Where the two disagree, the one that runs from the first to the last step without
    going back is taken to be right; when both or neither do, the rows are not to be
    trusted.
    """
    steps = np.frombuffer(chunk.steps, "<i8")
    ends = (int(steps[0]), int(steps[-1])) == (chunk.first_step, chunk.last_step)
    ends_text = (
        f"its first and last step ({chunk.first_step}, {chunk.last_step}) are not those of its "
        f"rows ({int(steps[0])}, {int(steps[-1])})"
    )
    if isinstance(array, str):
        if ends:
            return None
        if np.all(np.diff(steps) >= 0):  # the rows' steps hang together: the ends are wrong
            return StepCheck((), steps, False, ends_text)
        ends_of = ((0, chunk.first_step), (chunk.count - 1, chunk.last_step))
        wrong = [entry for entry, step in ends_of if steps[entry] != step]
        return StepCheck(tuple(wrong), None, False, f"{ends_text}, and {array}")
    differ = tuple(int(e) for e in np.flatnonzero(steps != array))
    if not differ:
        if ends:
            return None
        return StepCheck((), steps, False, ends_text)
    index_ok, array_ok = _ordered(steps, chunk), _ordered(array, chunk)
    e = differ[0]
    reason = (
        f"the steps of {len(differ)} row(s) differ between its index and the steps array "
        f"(row {int(chunk.row_positions()[e])}: {int(steps[e])} in the index, {int(array[e])} "
        "in the array)"
    )
    if array_ok and not index_ok:
        return StepCheck(differ, np.array(array), False, reason)
    if index_ok and not array_ok:
        return StepCheck(differ, steps, True, reason)
    return StepCheck(differ, None, False, reason)
