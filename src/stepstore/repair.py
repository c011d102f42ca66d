"""``stepstore check --repair``: drop what is damaged, keep everything intact, rebuild summaries.

:func:`repair` works on the embedded SQLite store (the only backend whose rows it can delete
so far) and fixes what :meth:`stepstore.Store.check` reports:

- a scalar chunk whose checksum, decoding or point count fails is deleted; the series'
  summary (count, min, max, last, first and last step) is rebuilt from the chunks left;
- a tensor chunk whose file is missing is dropped from the index; a raw (row-per-step)
  chunk is cut back to its rows that are intact from the start, up to the first row whose
  CRC fails or that lies past the end of a file left short by a machine crash (the
  ``steps``, ``epochs``, ``times`` and ``checksums`` columns are cut alike, and a short file
  is padded back to its full size so it can be memory-mapped); a compressed chunk whose
  CRC fails is dropped whole;
- an image or artifact whose file is missing or whose checksum fails is removed from the
  index;
- a series whose stored summary disagrees with its chunks gets it rebuilt.

Runs left behind by dead processes are recovered when the store is opened (see
``recovery.py``), before this runs. Runs still being recorded (their journal is held by a
live process) are left alone. Each series is repaired in one transaction, data files are
never rewritten (only padded with zeros past the intact rows), and nothing intact is
deleted. Integrity errors of the SQLite file itself (``PRAGMA integrity_check``) are not
repaired; :meth:`Store.check` still reports them afterwards.
"""

from __future__ import annotations

import hashlib
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backends.base import Backend, Problem, SeriesRecord
from .backends.sqlite import SQLiteBackend
from .errors import InvalidArgumentError, StoreError
from .journal import SUFFIX
from .query.views import Store
from .series import chunk as chunk_codec
from .series.tail import Summary
from .tensors.dtypes import storage_dtype
from .tensors.index import ChunkIndex, Segment
from .tensors.location import ArrayLocation
from .tensors.series import chunk_path, first_bad_row, load_chunk

#: One SQL statement and its parameters.
_Statement = tuple[str, Sequence[Any]]


def repair(store: Store) -> list[Problem]:
    """Repair ``store`` in place; return one :class:`Problem` per repair made.

    Each ``Problem.where`` names the run, key and chunk (or image, artifact); ``what`` says
    what was done and how many points or rows were lost. Afterwards :meth:`Store.check`
    reports only what cannot be repaired (damage inside the SQLite file itself).

    Raises:
        InvalidArgumentError: The store is not an embedded (SQLite) store.
    """
    backend = _sqlite(store.backend)
    repaired: list[Problem] = []
    for view in store.runs():
        run_id = view.id
        if (backend.journal_dir / f"{run_id}{SUFFIX}").exists():
            continue  # being recorded by a live process: its writer owns the summaries
        location = ArrayLocation(view._record.array_store or backend.default_array_store)
        for series in backend.series(run_id):
            where = f"run {run_id} key {series.key!r}"
            if series.kind == "scalar":
                repaired.extend(_repair_scalars(backend, series, where))
            elif series.kind == "tensor":
                repaired.extend(_repair_tensor(backend, location, series, where))
            elif series.kind == "image":
                repaired.extend(_repair_images(backend, location, series, where))
        repaired.extend(_repair_artifacts(backend, location, run_id))
    return repaired


# -- SQLite access ---------------------------------------------------------------------------


def _sqlite(backend: Backend) -> SQLiteBackend:
    """The backend as a SQLite store, or a clear error for the others."""
    if not isinstance(backend, SQLiteBackend):
        raise InvalidArgumentError(
            f"repair of {backend.uri} is not supported: only the embedded (SQLite) store can be "
            "repaired so far; `stepstore check` still reports what is damaged"
        )
    return backend


def _execute(backend: SQLiteBackend, statements: Sequence[_Statement]) -> None:
    """Run ``statements`` (SQL, parameters) in one write transaction of ``backend``."""
    if not statements:
        return
    with backend._write():
        for sql, args in statements:
            backend._db.execute(sql, args)


def _same(a: float | int | None, b: float | int | None) -> bool:
    """Equality of summary fields where NaN equals NaN and NULL stands for NaN."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _same_summary(a: Summary, b: Summary) -> bool:
    return all(
        _same(getattr(a, name), getattr(b, name))
        for name in ("count", "min", "max", "last", "first_step", "last_step")
    )


def _summary_sql(series_id: int, summary: Summary) -> _Statement:
    return (
        "UPDATE series SET count = ?, min = ?, max = ?, last = ?, first_step = ?, last_step = ? "
        "WHERE id = ?",
        (
            summary.count,
            summary.min,
            summary.max,
            summary.last,
            summary.first_step,
            summary.last_step,
            series_id,
        ),
    )


# -- scalar series ---------------------------------------------------------------------------


def _repair_scalars(backend: SQLiteBackend, series: SeriesRecord, where: str) -> list[Problem]:
    """Delete damaged chunks of a scalar series and rebuild its summary from the rest."""
    repaired: list[Problem] = []
    statements: list[_Statement] = []
    summary = Summary()
    for row in backend.chunks(series.id):
        at = f"{where} chunk {row.seq}"
        data = row.data or b""
        reason = None
        if chunk_codec.checksum(data) != row.checksum:
            reason = "checksum mismatch"
        else:
            try:
                columns = chunk_codec.decode(data, at)
            except StoreError as exc:
                reason = str(exc).removeprefix(f"{at}: ")
            else:
                if len(columns.step) != row.count:
                    reason = "point count differs from its index"
        if reason is not None:
            statements.append(
                ("DELETE FROM chunks WHERE series_id = ? AND seq = ?", (series.id, row.seq))
            )
            repaired.append(Problem(at, f"deleted the chunk ({reason}); {row.count} point(s) lost"))
            continue
        summary.update(columns)
    if not _same_summary(summary, series.summary):
        statements.append(_summary_sql(series.id, summary))
        repaired.append(
            Problem(where, f"rebuilt the summary from its chunks ({summary.count} points)")
        )
    _execute(backend, statements)
    return repaired


# -- tensor series ---------------------------------------------------------------------------


_CHUNK_KEY = "series_id = ? AND segment = ? AND chunk = ?"


@dataclass(frozen=True)
class _Cut:
    """What to do with one tensor chunk: keep ``rows`` of its rows (0 drops it)."""

    rows: int
    reason: str
    pad_to: int = 0


def _raw_cut(location: ArrayLocation, segment: Segment, chunk: ChunkIndex) -> _Cut | None:
    """How many rows of a raw, in-place chunk are intact from the start (None: all)."""
    local = location.local_path(chunk_path(segment, chunk))
    if not local.exists():
        return _Cut(0, f"chunk file {local} is missing")
    row_bytes = int(np.prod(segment.shape, dtype=np.int64)) * storage_dtype(segment.dtype).itemsize
    full = segment.chunk_steps * row_bytes
    sums = np.frombuffer(chunk.checksums, "<u4")
    data = local.read_bytes()
    for pos in range(chunk.count):
        row = data[pos * row_bytes : (pos + 1) * row_bytes]
        if len(row) < row_bytes:
            return _Cut(pos, f"chunk file {local} ends in row {pos}", full)
        if pos < len(sums) and zlib.crc32(row) != int(sums[pos]):
            return _Cut(pos, f"checksum mismatch in {local} row {pos}", full)
    if len(data) < full:
        return _Cut(chunk.count, f"chunk file {local} is short", full)
    return None


def _packed_cut(location: ArrayLocation, segment: Segment, chunk: ChunkIndex) -> _Cut | None:
    """How many rows of a whole-blob chunk (compressed, or on an object store) are intact
    from the start (None: all)."""
    path = chunk_path(segment, chunk)
    try:
        data = load_chunk(location, segment, path)
    except StoreError as exc:
        return _Cut(0, str(exc))
    bad = first_bad_row(data, chunk, range(chunk.count))
    if bad is None:
        return None
    return _Cut(bad, f"checksum mismatch in {location.describe(path)} row {bad}")


def _pad(location: ArrayLocation, segment: Segment, chunk: ChunkIndex, size: int) -> None:
    """Extend a short raw chunk file with zeros to ``size`` bytes (its intact rows stay)."""
    local = location.local_path(chunk_path(segment, chunk))
    if local.exists() and local.stat().st_size < size:
        with open(local, "r+b") as handle:
            os.ftruncate(handle.fileno(), size)


def _repair_tensor(
    backend: SQLiteBackend, location: ArrayLocation, series: SeriesRecord, where: str
) -> list[Problem]:
    """Drop missing or damaged tensor chunks, cut torn raw chunks back to their intact rows."""
    segments, chunks = backend.tensor_index(series.id)
    by_number = {s.segment: s for s in segments}
    repaired: list[Problem] = []
    statements: list[_Statement] = []
    kept: list[tuple[int, int, int]] = []  # (count, first step, last step) of each chunk kept
    for chunk in chunks:
        segment = by_number.get(chunk.segment)
        at = f"{where} segment {chunk.segment} chunk {chunk.chunk}"
        args = (chunk.series_id, chunk.segment, chunk.chunk)
        if segment is None:
            cut: _Cut | None = _Cut(0, f"segment {chunk.segment} is not in the index")
        elif segment.codec == "raw" and location.local:
            cut = _raw_cut(location, segment, chunk)
        else:
            cut = _packed_cut(location, segment, chunk)
        if cut is None:
            kept.append((chunk.count, chunk.first_step, chunk.last_step))
            continue
        if segment is not None and cut.pad_to and cut.rows:
            _pad(location, segment, chunk, cut.pad_to)
        if cut.rows == chunk.count:
            kept.append((chunk.count, chunk.first_step, chunk.last_step))
            repaired.append(Problem(at, f"{cut.reason}: padded it to its full size"))
            continue
        lost = chunk.count - cut.rows
        if cut.rows == 0:
            statements.append((f"DELETE FROM tensor_chunks WHERE {_CHUNK_KEY}", args))
            repaired.append(Problem(at, f"dropped the chunk ({cut.reason}); {lost} row(s) lost"))
            continue
        n = cut.rows
        steps = np.frombuffer(chunk.steps, "<i8")[:n]
        statements.append(
            (
                "UPDATE tensor_chunks SET count = ?, first_step = ?, last_step = ?, steps = ?, "
                f"epochs = ?, times = ?, checksums = ? WHERE {_CHUNK_KEY}",
                (
                    n,
                    int(steps[0]),
                    int(steps[-1]),
                    steps.tobytes(),
                    np.frombuffer(chunk.epochs, "<i8")[:n].tobytes(),
                    np.frombuffer(chunk.times, "<i8")[:n].tobytes(),
                    np.frombuffer(chunk.checksums, "<u4")[:n].tobytes(),
                    *args,
                ),
            )
        )
        kept.append((n, int(steps[0]), int(steps[-1])))
        repaired.append(
            Problem(
                at,
                f"cut the chunk to its {n} intact row(s) ({cut.reason}); {lost} row(s) lost "
                f"(steps {int(np.frombuffer(chunk.steps, '<i8')[n])} and later)",
            )
        )
    summary = Summary(
        count=sum(c for c, _, _ in kept),
        first_step=min((f for _, f, _ in kept), default=None),
        last_step=max((last for _, _, last in kept), default=None),
    )
    repaired.extend(_step_summary(statements, series, summary, where))
    _execute(backend, statements)
    return repaired


def _step_summary(
    statements: list[_Statement],
    series: SeriesRecord,
    summary: Summary,
    where: str,
) -> list[Problem]:
    """Queue a summary update (count and steps) for a non-scalar series when it is stale."""
    stored = series.summary
    if (stored.count, stored.first_step, stored.last_step) == (
        summary.count,
        summary.first_step,
        summary.last_step,
    ):
        return []
    statements.append(
        (
            "UPDATE series SET count = ?, first_step = ?, last_step = ? WHERE id = ?",
            (summary.count, summary.first_step, summary.last_step, series.id),
        )
    )
    return [Problem(where, f"rebuilt the summary from its index ({summary.count} rows)")]


# -- images and artifacts --------------------------------------------------------------------


def _repair_images(
    backend: SQLiteBackend, location: ArrayLocation, series: SeriesRecord, where: str
) -> list[Problem]:
    """Remove images whose file is missing or fails its CRC from the index."""
    repaired: list[Problem] = []
    statements: list[_Statement] = []
    steps: list[int] = []
    for row in backend.images(series.id):
        try:
            ok = zlib.crc32(location.read(row.path)) == row.checksum
            reason = f"checksum mismatch in {location.describe(row.path)}"
        except StoreError:
            ok, reason = False, f"file {location.describe(row.path)} is missing"
        if ok:
            steps.append(row.step)
            continue
        statements.append(
            (
                "DELETE FROM images WHERE series_id = ? AND step = ? AND position = ?",
                (row.series_id, row.step, row.position),
            )
        )
        repaired.append(
            Problem(
                f"{where} image step {row.step} position {row.position}",
                f"removed the image from the index ({reason})",
            )
        )
    steps.extend(r.step for r in backend.records(series.id))
    summary = Summary(count=len(steps), first_step=min(steps, default=None))
    summary.last_step = max(steps, default=None)
    repaired.extend(_step_summary(statements, series, summary, where))
    _execute(backend, statements)
    return repaired


def _repair_artifacts(
    backend: SQLiteBackend, location: ArrayLocation, run_id: str
) -> list[Problem]:
    """Remove artifacts whose file is missing or fails its SHA-256 from the index."""
    repaired: list[Problem] = []
    statements: list[_Statement] = []
    for row in backend.artifacts(run_id):
        try:
            ok = hashlib.sha256(location.read(row.path)).hexdigest() == row.sha256
            reason = f"SHA-256 mismatch in {location.describe(row.path)}"
        except StoreError:
            ok, reason = False, f"file {location.describe(row.path)} is missing"
        if ok:
            continue
        statements.append(
            ("DELETE FROM artifacts WHERE run_id = ? AND name = ?", (run_id, row.name))
        )
        repaired.append(
            Problem(
                f"run {run_id} artifact {row.name!r}",
                f"removed the artifact from the index ({reason})",
            )
        )
    _execute(backend, statements)
    return repaired
