"""``stepstore check --repair``: drop what is damaged, keep everything intact, rebuild summaries.

:func:`repair` works on every backend (the embedded SQLite store, PostgreSQL and
MariaDB/MySQL) and fixes what :meth:`stepstore.Store.check` reports:

- a scalar chunk whose checksum or decoding fails is deleted; one whose index row (first
  and last step, epochs, point count, statistics) is not that of its points gets it
  rebuilt from them; the series' summary (count, min, max, last, first and last step) is
  rebuilt from the chunks left;
- a tensor chunk whose file is missing or does not decompress, or whose index row is
  damaged, is dropped from the index; otherwise only its damaged rows are: those whose
  CRC-32 fails, those past the end of a raw file left short by a machine crash (the file
  is padded back to its full size so it can be memory-mapped), and those whose step the
  index and the Zarr ``steps`` array disagree on when neither can be told right. Every
  other row stays, the index row keeping where each lies in the chunk;
- steps that the index and the ``steps`` array disagree on are restored from whichever
  runs from the chunk's first to its last step without going back: in the index, or in
  the ``steps`` array; a ``zarr.json`` that is missing or does not describe its array is
  written again from the index (a segment's only when its first row in the ``steps``
  array can be confirmed);
- an image or artifact whose file is missing or whose checksum fails is removed from the
  index;
- a series whose stored summary disagrees with its chunks gets it rebuilt.

Runs left behind by dead processes are recovered when the store is opened (see
``recovery.py``), before this runs. Runs that may still be recorded are left alone: those
whose status reads ``running`` (a live process, perhaps on another host, keeps their
heartbeat fresh) and those with a journal in the store's local journal directory (held by
a live process on this host). The edits of each series go to the backend as one
:class:`~stepstore.backends.base.RepairBatch`, applied in one transaction; chunk files are
never rewritten (only padded with zeros past their rows), and nothing intact is deleted.
Damage to the database itself (a failed ``PRAGMA integrity_check`` of the SQLite file, a
row whose values are not of their column's type, a server schema of another version) is
not repaired: the runs and series it makes unreadable are skipped, the others repaired,
and :meth:`Store.check` still reports it afterwards.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
import zlib
from collections.abc import Callable

import numpy as np

from .backends.base import (
    Backend,
    Problem,
    RepairBatch,
    RunRecord,
    SeriesRecord,
    decode_chunk,
    index_differences,
    index_fields,
    series_label,
)
from .errors import StoreError
from .query.views import Store
from .recording.journal import SUFFIX
from .series.tail import Summary
from .tensors.index import ChunkIndex, Segment
from .tensors.location import ArrayLocation
from .tensors.series import (
    ZarrMetadata,
    check_steps,
    chunk_path,
    field_of,
    index_damage,
    read_file,
    row_damage,
)
from .tensors.zarr_v3 import (
    STEPS_CHUNK,
    array_document,
    chunk_key,
    group_document,
    segment_document,
)

#: Steps a repair message lists before it says how many more were lost.
_LISTED_STEPS = 10


def repair(store: Store) -> list[Problem]:
    """Repair ``store`` in place; return one :class:`Problem` per repair made.

    Each ``Problem.where`` names the run, key and chunk (or image, artifact); ``what`` says
    what was done and how many points or rows were lost. Afterwards :meth:`Store.check`
    reports only what cannot be repaired (damage to the database itself) and damage in
    runs that may still be recorded, which are left alone.
    """
    backend = store.backend
    try:
        runs = backend.find_runs()  # statuses as store.runs() reads them
    except StoreError:
        return []  # the runs table is damaged: check reports it
    repaired: list[Problem] = []
    for run in runs:
        try:
            if _maybe_recording(backend, run):
                continue  # its writer owns the summaries and may still extend its chunks
            repaired.extend(_repair_run(backend, run))
        except StoreError:
            continue  # the database is damaged here: check reports it
    return repaired


def _repair_run(backend: Backend, run: RunRecord) -> list[Problem]:
    """Repair each series of ``run`` and its artifacts; a series whose index rows cannot be
    read (or written) is skipped."""
    location = backend.array_location(run.array_store)
    repaired: list[Problem] = []
    for series in backend.series(run.id, None):
        repair_series = _REPAIRS.get(series.kind)
        if repair_series is not None:
            where = series_label(run.id, series.key, series.rank)
            edit = functools.partial(repair_series, backend, location, run, series, where)
            repaired.extend(_applied(backend, edit))
    edit = functools.partial(_repair_artifacts, backend, location, run.id)
    return repaired + _applied(backend, edit)


def _applied(backend: Backend, edit: Callable[[RepairBatch], list[Problem]]) -> list[Problem]:
    """Collect one batch of edits with ``edit`` and apply it; return what ``edit`` reports,
    or nothing when the database cannot be read or written there (check reports it)."""
    batch = RepairBatch()
    try:
        found = edit(batch)
        backend.apply_repairs(batch)
    except StoreError:
        return []
    return found


def _maybe_recording(backend: Backend, run: RunRecord) -> bool:
    """Whether a live process may be recording ``run``: its status or one of its ranks'
    reads ``running`` (a stale one reads ``crashed``), or a journal of it, of any rank, is
    in the store's local journal directory (``<id>.journal`` or ``<id>.rN.journal``)."""
    journals = backend.journal_dir
    return (
        run.status == "running"
        or any(r.status == "running" for r in backend.ranks(run.id))
        or (
            journals is not None
            and (
                (journals / f"{run.id}{SUFFIX}").exists()
                or any(journals.glob(f"{run.id}.*{SUFFIX}"))
            )
        )
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


def _steps_text(steps: np.ndarray) -> str:
    """Up to :data:`_LISTED_STEPS` step numbers, then how many more."""
    listed = ", ".join(str(int(s)) for s in steps[:_LISTED_STEPS])
    more = len(steps) - _LISTED_STEPS
    return listed + (f" and {more} more" if more > 0 else "")


# -- scalar series ---------------------------------------------------------------------------


def _repair_scalars(
    backend: Backend,
    location: ArrayLocation,
    run: RunRecord,
    series: SeriesRecord,
    where: str,
    batch: RepairBatch,
) -> list[Problem]:
    """Add to ``batch`` the deletion of a scalar series' damaged chunks, the index rows of
    intact chunks rebuilt from their points and, when the stored one differs, its summary
    rebuilt from the chunks left."""
    repaired: list[Problem] = []
    summary = Summary()
    for row in backend.chunks(series.id):
        at = f"{where} chunk {row.seq}"
        try:
            columns = decode_chunk(row, at)
        except StoreError as exc:
            batch.chunks.append((series.id, row.seq))
            reason = str(exc).removeprefix(f"{at}: ")
            repaired.append(Problem(at, f"deleted the chunk ({reason}); {row.count} point(s) lost"))
            continue
        fields = index_fields(row, columns)
        differ = index_differences(row, fields, columns)
        if differ:
            batch.chunk_index.append((series.id, fields))
            what = f"rebuilt its index row from its {fields.size} points ({', '.join(differ)})"
            repaired.append(Problem(at, what))
        summary.update(columns)
    if not _same_summary(summary, series.summary):
        batch.summaries.append((series.id, summary))
        repaired.append(
            Problem(where, f"rebuilt the summary from its chunks ({summary.count} points)")
        )
    return repaired


# -- tensor series ---------------------------------------------------------------------------


@dataclasses.dataclass
class _TensorRepair:
    """The repair of one tensor series under way: the edits, what was done, the metadata."""

    location: ArrayLocation
    where: str
    batch: RepairBatch
    metadata: ZarrMetadata | None
    repaired: list[Problem] = dataclasses.field(default_factory=list)

    def report(self, chunk: ChunkIndex | None, what: str) -> None:
        """Record a repair of ``chunk`` (None: of the series)."""
        at = self.where
        if chunk is not None:
            at += f" segment {chunk.segment} chunk {chunk.chunk}"
        self.repaired.append(Problem(at, what))


def _repair_tensor(
    backend: Backend,
    location: ArrayLocation,
    run: RunRecord,
    series: SeriesRecord,
    where: str,
    batch: RepairBatch,
) -> list[Problem]:
    """Add to ``batch`` the drop of missing or damaged tensor chunks and rows, steps
    restored and a stale summary rebuilt; pad short raw chunk files, fix the steps array
    and write damaged ``zarr.json`` files again at once."""
    segments, chunks = backend.tensor_index(series.id)
    by_number = {s.segment: s for s in segments}
    used = [s for s in segments if any(c.segment == s.segment for c in chunks)]
    metadata = ZarrMetadata(location, used) if used else None
    work = _TensorRepair(location, where, batch, metadata)
    before = np.cumsum([0, *(c.count for c in chunks)])  # index rows before each chunk
    after = [
        _repair_chunk(work, by_number.get(c.segment), c, int(before[i]))
        for i, c in enumerate(chunks)
    ]
    kept = [chunk for chunk in after if chunk is not None]
    if metadata is not None and kept:
        _repair_metadata(work, run, series, kept)
    summary = Summary(
        count=sum(c.count for c in kept),
        first_step=min((c.first_step for c in kept), default=None),
        last_step=max((c.last_step for c in kept), default=None),
    )
    return work.repaired + _step_summary(batch, series, summary, where)


def _repair_chunk(
    work: _TensorRepair, segment: Segment | None, chunk: ChunkIndex, before: int
) -> ChunkIndex | None:
    """Repair one tensor chunk (see the module docstring), which ``before`` index rows of
    its series precede; return its index row as it is afterwards, or None when it was
    dropped."""
    broken = index_damage(segment, chunk)
    if broken is not None or segment is None:
        _drop(work, chunk, f"its index row is damaged: {broken}")
        return None
    damage = row_damage(work.location, segment, chunk)
    if damage is not None and len(damage.bad) == chunk.count:
        _drop(work, chunk, damage.reason)
        return None
    reasons: list[str] = []
    bad: set[int] = set()
    if damage is not None:
        if damage.pad_to:
            _pad(work.location, segment, chunk, damage.pad_to)
        if damage.bad:
            bad, reasons = set(damage.bad), [damage.reason]
        else:
            work.report(chunk, f"{damage.reason}: padded it to its full size")
    steps = np.frombuffer(chunk.steps, "<i8").copy()
    unknown, why = _repair_steps(work, chunk, before, steps)
    if unknown:
        bad, reasons = bad | unknown, [*reasons, why]
    return _keep(work, chunk, bad, "; ".join(reasons), steps)


def _keep(
    work: _TensorRepair, chunk: ChunkIndex, bad: set[int], reason: str, steps: np.ndarray
) -> ChunkIndex | None:
    """Drop the ``bad`` entries of ``chunk`` (for ``reason``) and give the others ``steps``;
    return the index row left, or None when none is."""
    keep = np.array([e for e in range(chunk.count) if e not in bad], np.int64)
    if not len(keep):
        _drop(work, chunk, reason)
        return None
    if bad:
        lost = np.frombuffer(chunk.steps, "<i8")[sorted(bad)]
        work.report(
            chunk,
            f"dropped {len(bad)} of its {chunk.count} rows ({reason}); steps lost: "
            f"{_steps_text(lost)}",
        )
    shorter = _kept_rows(chunk, keep, steps)
    if shorter != chunk:
        work.batch.cut_tensor_chunks.append(shorter)
    return shorter


def _drop(work: _TensorRepair, chunk: ChunkIndex, reason: str) -> None:
    """Drop a whole chunk from the index."""
    work.batch.tensor_chunks.append((chunk.series_id, chunk.segment, chunk.chunk))
    work.report(chunk, f"dropped the chunk ({reason}); {chunk.count} row(s) lost")


def _repair_steps(
    work: _TensorRepair, chunk: ChunkIndex, before: int, steps: np.ndarray
) -> tuple[set[int], str]:
    """Compare the chunk's steps with the steps array: restore wrong ones in ``steps`` (in
    place) or in the steps array; return the entries whose step is not known, and why."""
    if work.metadata is None:
        return set(), ""
    found = work.metadata.chunk_steps(chunk, before)
    check = check_steps(chunk, found if isinstance(found, str) else found[1])
    if check is None:
        return set(), ""
    if check.steps is None:
        return set(check.wrong), check.reason
    if check.array_wrong and not isinstance(found, str):
        wrong = list(check.wrong)
        _rewrite_steps(work, found[0][wrong], steps[wrong])
        work.report(chunk, f"wrote the steps of {len(wrong)} row(s) into the steps array again")
        return set(), ""
    if check.wrong:
        steps[list(check.wrong)] = check.steps[list(check.wrong)]
        work.report(
            chunk,
            f"restored the steps of {len(check.wrong)} row(s) from the steps array "
            f"({check.reason})",
        )
    else:
        work.report(chunk, f"rebuilt its first and last step from its rows ({check.reason})")
    return set(), ""


def _rewrite_steps(work: _TensorRepair, rows: np.ndarray, steps: np.ndarray) -> None:
    """Write ``steps`` at ``rows`` of the steps array."""
    assert work.metadata is not None
    for number in np.unique(rows // STEPS_CHUNK):
        path = f"{work.metadata.root}/steps/{chunk_key(int(number), 1)}"
        block = np.frombuffer(read_file(work.location, path), "<i8").copy()
        inside = rows // STEPS_CHUNK == number
        block[rows[inside] % STEPS_CHUNK] = steps[inside]
        try:
            work.location.write(path, block.tobytes())
        except OSError as exc:
            raise StoreError(f"{work.location.describe(path)} cannot be written ({exc})") from None
    work.metadata = ZarrMetadata(work.location, list(work.metadata.segments.values()))


def _kept_rows(chunk: ChunkIndex, keep: np.ndarray, steps: np.ndarray) -> ChunkIndex:
    """The index row of ``chunk`` with only the entries ``keep``, holding ``steps``."""
    positions = chunk.row_positions()[keep]
    contiguous = bool(np.array_equal(positions, np.arange(len(keep))))
    kept_steps = steps[keep]
    return dataclasses.replace(
        chunk,
        first_step=int(kept_steps[0]),
        last_step=int(kept_steps[-1]),
        count=len(keep),
        steps=kept_steps.astype("<i8").tobytes(),
        epochs=np.frombuffer(chunk.epochs, "<i8")[keep].tobytes(),
        times=np.frombuffer(chunk.times, "<i8")[keep].tobytes(),
        checksums=np.frombuffer(chunk.checksums, "<u4")[keep].tobytes(),
        positions=b"" if contiguous else positions.astype("<i8").tobytes(),
    )


def _pad(location: ArrayLocation, segment: Segment, chunk: ChunkIndex, size: int) -> None:
    """Extend a short raw chunk file with zeros to ``size`` bytes (its rows stay)."""
    local = location.local_path(chunk_path(segment, chunk))
    try:
        with open(local, "r+b") as handle:
            if os.fstat(handle.fileno()).st_size < size:
                os.ftruncate(handle.fileno(), size)
    except OSError as exc:
        raise StoreError(f"chunk file {local} cannot be padded ({exc})") from None


def _repair_metadata(
    work: _TensorRepair, run: RunRecord, series: SeriesRecord, kept: list[ChunkIndex]
) -> None:
    """Write again each ``zarr.json`` of the series that is missing or does not describe
    its array, from the index rows ``kept``."""
    metadata = work.metadata
    assert metadata is not None
    segments = metadata.segments
    if metadata.group_problem() is not None:
        attributes = {"key": series.key, "run": run.id, "rank": series.rank}
        dtype = segments[min(segments)].dtype
        document = group_document({"stepstore": {**attributes, "dtype": dtype}})
        _rewrite(work, f"{metadata.root}/zarr.json", document, metadata.group_problem())
    ends = [0]  # where the segment before ends in the steps array, by its index or file
    last_end = 0
    for number, rows in sorted(metadata.extents(kept).items()):
        segment = segments[number]
        problem = metadata.segment_problem(segment, rows)
        first = metadata.first_row(segment)
        if problem is not None:
            first = _confirmed_first_row(metadata, segment, kept, ends)
            if first is not None:
                document = segment_document(segment, rows, first)
                _rewrite(work, f"{segment.path}/zarr.json", document, problem)
        stored = field_of(metadata.document(f"{segment.path}/zarr.json"), "shape")
        ends = [(first or 0) + rows]
        if isinstance(stored, list) and stored and isinstance(stored[0], int):
            ends.append((first or 0) + stored[0])
        last_end = max(last_end, ends[0])
    problem = metadata.steps_problem(last_end)
    if problem is not None:
        document = array_document((last_end,), (STEPS_CHUNK,), "int64", False)
        _rewrite(work, f"{metadata.root}/steps/zarr.json", document, problem)


def _confirmed_first_row(
    metadata: ZarrMetadata, segment: Segment, kept: list[ChunkIndex], guesses: list[int]
) -> int | None:
    """The first row of ``segment`` in the steps array: the first of ``guesses`` (where
    the segment before ends) at which the steps array holds the segment's indexed steps,
    or None."""
    chunks = [c for c in kept if c.segment == segment.segment]
    for guess in guesses:
        found = [
            metadata.steps_at(guess + c.chunk * segment.chunk_steps + c.row_positions())
            for c in chunks
        ]
        if all(
            not isinstance(f, str) and np.array_equal(f, np.frombuffer(c.steps, "<i8"))
            for f, c in zip(found, chunks, strict=True)
        ):
            return guess
    return None


def _rewrite(work: _TensorRepair, path: str, document: bytes, problem: str | None) -> None:
    """Write a ``zarr.json`` again."""
    try:
        work.location.write(path, document)
    except OSError as exc:
        raise StoreError(f"{work.location.describe(path)} cannot be written ({exc})") from None
    work.report(None, f"wrote {work.location.describe(path)} again from the index ({problem})")


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


def _file_fault(
    location: ArrayLocation,
    path: str,
    digest: Callable[[bytes], object],
    expected: object,
    mismatch: str,
) -> str | None:
    """Why the array file at ``path`` is not as stored (missing, unreadable, or its
    ``digest`` is not ``expected``: ``mismatch`` names that), or None."""
    try:
        data = read_file(location, path)
    except StoreError as exc:
        if "is missing" in str(exc):
            return f"file {location.describe(path)} is missing"
        return str(exc)
    return None if digest(data) == expected else f"{mismatch} in {location.describe(path)}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _repair_images(
    backend: Backend,
    location: ArrayLocation,
    run: RunRecord,
    series: SeriesRecord,
    where: str,
    batch: RepairBatch,
) -> list[Problem]:
    """Add to ``batch`` the removal of images whose file is missing or fails its CRC and a
    stale summary rebuilt."""
    repaired: list[Problem] = []
    steps: list[int] = []
    for row in backend.images(series.id):
        fault = _file_fault(location, row.path, zlib.crc32, row.checksum, "checksum mismatch")
        if fault is None:
            steps.append(row.step)
            continue
        batch.images.append((row.series_id, row.step, row.position))
        repaired.append(
            Problem(
                f"{where} image step {row.step} position {row.position}",
                f"removed the image from the index ({fault})",
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
        fault = _file_fault(location, row.path, _sha256, row.sha256, "SHA-256 mismatch")
        if fault is None:
            continue
        batch.artifacts.append((run_id, row.name))
        repaired.append(
            Problem(
                f"run {run_id} artifact {row.name!r}",
                f"removed the artifact from the index ({fault})",
            )
        )
    return repaired


_REPAIRS = {"scalar": _repair_scalars, "tensor": _repair_tensor, "image": _repair_images}
