"""``stepstore check --repair``: drop what is damaged, keep everything intact, rebuild summaries.

:func:`repair` works on every backend (the embedded SQLite store, PostgreSQL and
MariaDB/MySQL) and fixes what :meth:`stepstore.Store.check` reports:

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
``recovery.py``), before this runs. Runs that may still be recorded are left alone: those
whose status reads ``running`` (a live process, perhaps on another host, keeps their
heartbeat fresh) and those with a journal in the store's local journal directory (held by
a live process on this host). The edits of each series go to the backend as one
:class:`~stepstore.backends.base.RepairBatch`, applied in one transaction; data files are
never rewritten (only padded with zeros past the intact rows), and nothing intact is
deleted. Damage to the database itself (a failed ``PRAGMA integrity_check`` of the SQLite
file, a server schema of another version) is not repaired; :meth:`Store.check` still
reports it afterwards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import zlib
from dataclasses import dataclass

import numpy as np

from .backends.base import (
    Backend,
    Problem,
    RepairBatch,
    RunRecord,
    SeriesRecord,
    series_label,
)
from .errors import StoreError
from .journal import SUFFIX
from .query.views import Store
from .series import chunk as chunk_codec
from .series.tail import Summary
from .tensors.dtypes import storage_dtype
from .tensors.index import ChunkIndex, Segment
from .tensors.location import ArrayLocation
from .tensors.series import chunk_path, first_bad_row, load_chunk


def repair(store: Store) -> list[Problem]:
    """Repair ``store`` in place; return one :class:`Problem` per repair made.

    Each ``Problem.where`` names the run, key and chunk (or image, artifact); ``what`` says
    what was done and how many points or rows were lost. Afterwards :meth:`Store.check`
    reports only what cannot be repaired (damage to the database itself) and damage in
    runs that may still be recorded, which are left alone.
    """
    backend = store.backend
    repaired: list[Problem] = []
    for run in backend.find_runs():  # statuses as store.runs() reads them
        if _maybe_recording(backend, run):
            continue  # its writer owns the summaries and may still extend its chunks
        location = ArrayLocation(run.array_store or backend.default_array_store)
        for series in backend.series(run.id, None):
            batch = RepairBatch()
            where = series_label(run.id, series.key, series.rank)
            if series.kind == "scalar":
                repaired.extend(_repair_scalars(backend, series, where, batch))
            elif series.kind == "tensor":
                repaired.extend(_repair_tensor(backend, location, series, where, batch))
            elif series.kind == "image":
                repaired.extend(_repair_images(backend, location, series, where, batch))
            backend.apply_repairs(batch)
        batch = RepairBatch()
        repaired.extend(_repair_artifacts(backend, location, run.id, batch))
        backend.apply_repairs(batch)
    return repaired


def _maybe_recording(backend: Backend, run: RunRecord) -> bool:
    """Whether a live process may be recording ``run``: its status or one of its ranks'
    reads ``running`` (a stale one reads ``crashed``), or a journal of it, of any rank, is
    in the store's local journal directory (``<id>.journal`` or ``<id>.rN.journal``)."""
    journals = backend.journal_dir
    return (
        run.status == "running"
        or any(r.status == "running" for r in backend.ranks(run.id))
        or (journals / f"{run.id}{SUFFIX}").exists()
        or any(journals.glob(f"{run.id}.*{SUFFIX}"))
    )


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


# -- scalar series ---------------------------------------------------------------------------


def _repair_scalars(
    backend: Backend, series: SeriesRecord, where: str, batch: RepairBatch
) -> list[Problem]:
    """Add to ``batch`` the deletion of a scalar series' damaged chunks and, when the stored
    one differs, its summary rebuilt from the chunks left."""
    repaired: list[Problem] = []
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
            batch.chunks.append((series.id, row.seq))
            repaired.append(Problem(at, f"deleted the chunk ({reason}); {row.count} point(s) lost"))
            continue
        summary.update(columns)
    if not _same_summary(summary, series.summary):
        batch.summaries.append((series.id, summary))
        repaired.append(
            Problem(where, f"rebuilt the summary from its chunks ({summary.count} points)")
        )
    return repaired


# -- tensor series ---------------------------------------------------------------------------


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


def _cut_index(chunk: ChunkIndex, rows: int) -> ChunkIndex:
    """The index row of ``chunk`` with only its first ``rows`` rows (at least one)."""
    steps = np.frombuffer(chunk.steps, "<i8")[:rows]
    return dataclasses.replace(
        chunk,
        first_step=int(steps[0]),
        last_step=int(steps[-1]),
        count=rows,
        steps=steps.tobytes(),
        epochs=np.frombuffer(chunk.epochs, "<i8")[:rows].tobytes(),
        times=np.frombuffer(chunk.times, "<i8")[:rows].tobytes(),
        checksums=np.frombuffer(chunk.checksums, "<u4")[:rows].tobytes(),
    )


def _repair_tensor(
    backend: Backend,
    location: ArrayLocation,
    series: SeriesRecord,
    where: str,
    batch: RepairBatch,
) -> list[Problem]:
    """Add to ``batch`` the drop of missing or damaged tensor chunks, the cut of torn raw
    chunks back to their intact rows and a stale summary rebuilt; short raw chunk files are
    padded at once."""
    segments, chunks = backend.tensor_index(series.id)
    by_number = {s.segment: s for s in segments}
    repaired: list[Problem] = []
    kept: list[tuple[int, int, int]] = []  # (count, first step, last step) of each chunk kept
    for chunk in chunks:
        segment = by_number.get(chunk.segment)
        at = f"{where} segment {chunk.segment} chunk {chunk.chunk}"
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
            batch.tensor_chunks.append((chunk.series_id, chunk.segment, chunk.chunk))
            repaired.append(Problem(at, f"dropped the chunk ({cut.reason}); {lost} row(s) lost"))
            continue
        shorter = _cut_index(chunk, cut.rows)
        batch.cut_tensor_chunks.append(shorter)
        kept.append((shorter.count, shorter.first_step, shorter.last_step))
        repaired.append(
            Problem(
                at,
                f"cut the chunk to its {cut.rows} intact row(s) ({cut.reason}); {lost} row(s) "
                f"lost (steps {int(np.frombuffer(chunk.steps, '<i8')[cut.rows])} and later)",
            )
        )
    summary = Summary(
        count=sum(c for c, _, _ in kept),
        first_step=min((f for _, f, _ in kept), default=None),
        last_step=max((last for _, _, last in kept), default=None),
    )
    repaired.extend(_step_summary(batch, series, summary, where))
    return repaired


def _step_summary(
    batch: RepairBatch, series: SeriesRecord, summary: Summary, where: str
) -> list[Problem]:
    """Add to ``batch`` the summary (count and steps) of a non-scalar series when the stored
    one differs."""
    stored = series.summary
    if (stored.count, stored.first_step, stored.last_step) == (
        summary.count,
        summary.first_step,
        summary.last_step,
    ):
        return []
    batch.step_summaries.append((series.id, summary.count, summary.first_step, summary.last_step))
    return [Problem(where, f"rebuilt the summary from its index ({summary.count} rows)")]


# -- images and artifacts --------------------------------------------------------------------


def _repair_images(
    backend: Backend,
    location: ArrayLocation,
    series: SeriesRecord,
    where: str,
    batch: RepairBatch,
) -> list[Problem]:
    """Add to ``batch`` the removal of images whose file is missing or fails its CRC and a
    stale summary rebuilt."""
    repaired: list[Problem] = []
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
        batch.images.append((row.series_id, row.step, row.position))
        repaired.append(
            Problem(
                f"{where} image step {row.step} position {row.position}",
                f"removed the image from the index ({reason})",
            )
        )
    steps.extend(r.step for r in backend.records(series.id))
    summary = Summary(count=len(steps), first_step=min(steps, default=None))
    summary.last_step = max(steps, default=None)
    repaired.extend(_step_summary(batch, series, summary, where))
    return repaired


def _repair_artifacts(
    backend: Backend, location: ArrayLocation, run_id: str, batch: RepairBatch
) -> list[Problem]:
    """Add to ``batch`` the removal of artifacts whose file is missing or fails its SHA-256."""
    repaired: list[Problem] = []
    for row in backend.artifacts(run_id):
        try:
            ok = hashlib.sha256(location.read(row.path)).hexdigest() == row.sha256
            reason = f"SHA-256 mismatch in {location.describe(row.path)}"
        except StoreError:
            ok, reason = False, f"file {location.describe(row.path)} is missing"
        if ok:
            continue
        batch.artifacts.append((run_id, row.name))
        repaired.append(
            Problem(
                f"run {run_id} artifact {row.name!r}",
                f"removed the artifact from the index ({reason})",
            )
        )
    return repaired
