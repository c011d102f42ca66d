"""Copy runs between stores (a laptop's embedded store into the team's PostgreSQL, ...).

Copying is idempotent: a run already in the target with the same journal positions and
statuses (its own and each rank's) is skipped; otherwise its chunks, summaries and array
index rows are written again (they replace themselves), records only if the target has
none for that key, and its array files (tensors, images, artifacts; every rank's) are
copied into the target's array store: the one given as ``array_store=`` (a path or fsspec
URL such as ``s3://bucket/prefix``, then recorded with the copied run), else the target's
default; a run copied before keeps the array store it was copied into.

:func:`copy` is ``stepstore.copy``, the Python twin of ``stepstore copy``: it persists the
runs of a ``memory://`` store (which lives only as long as its process) to any other store.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass

from ..backends import open_backend
from ..backends.base import ArrayBatch, Backend, RunRecord, series_label
from ..errors import InvalidArgumentError, NotFoundError
from ..query import open as open_store
from ..query.views import RunView, Store
from ..series import chunk as codec
from ..tensors.location import ArrayLocation
from ..tensors.paths import run_root


@dataclass(frozen=True)
class CopyResult:
    """What happened to one run: ``copied`` or ``skipped`` (already up to date)."""

    run_id: str
    name: str
    action: str
    points: int


def _copy_arrays(run_id: str, source: ArrayLocation, target: ArrayLocation) -> None:
    """Copy the array files of a run (its folder, every rank's) between two locations."""
    root = run_root(run_id)
    if source.local and target.local:
        tree = source.local_path(root)
        if tree.is_dir() and tree.resolve() != target.local_path(root).resolve():
            shutil.copytree(tree, target.local_path(root), dirs_exist_ok=True)
        return
    if source.url.rstrip("/") == target.url.rstrip("/"):
        return  # both stores share one object store: the files are already there
    for path in source.list(root):
        target.write(path, source.read(path))


def _location(backend: Backend, record: RunRecord) -> ArrayLocation:
    return backend.array_location(record.array_store)


def copy_run(
    view: RunView, source: Backend, target: Backend, array_store: str | None = None
) -> CopyResult:
    """Copy one run from ``source`` into ``target`` (its arrays into ``array_store``, when
    given and the run is new there); see the module docstring."""
    record = source.get_run(view.id)
    try:
        existing: RunRecord | None = target.get_run(record.id)
    except NotFoundError:
        existing = None
    if existing is not None and _positions(existing, target) == _positions(record, source):
        return CopyResult(record.id, record.name, "skipped", 0)
    if existing is None:
        existing = dataclasses.replace(record, array_store=array_store)
        target.create_run(existing)
    _copy_arrays(record.id, _location(source, record), _location(target, existing))
    points = 0
    target_series = {(s.key, s.rank): s for s in target.series(record.id, None)}
    for series in source.series(record.id, None):
        series_id = target.ensure_series(record.id, series.key, series.kind, series.rank)
        where = series_label(record.id, series.key, series.rank)
        if series.kind == "scalar":
            chunks = [
                (
                    series_id,
                    codec.make_chunk(row.seq, codec.decode(row.data or b"", where), row.sealed),
                )
                for row in source.chunks(series.id)
            ]
            target.commit(record.id, chunks, [(series_id, series.summary)], {})
            points += series.summary.count
            continue
        batch = ArrayBatch()
        segments, index = source.tensor_index(series.id)
        batch.segments = [dataclasses.replace(s, series_id=series_id) for s in segments]
        batch.chunks = [dataclasses.replace(c, series_id=series_id) for c in index]
        batch.images = [
            dataclasses.replace(i, series_id=series_id) for i in source.images(series.id)
        ]
        old = target_series.get((series.key, series.rank))
        if old is None or not target.records(old.id):
            batch.records = [
                dataclasses.replace(r, series_id=series_id) for r in source.records(series.id)
            ]
        target.commit_arrays(batch)
        points += series.summary.count
    target.commit_arrays(ArrayBatch(artifacts=source.artifacts(record.id)))
    for row in source.ranks(record.id):
        target.join_rank(record.id, row.rank, row.host, row.pid)
        fields = {"status": row.status, "ended": row.ended, "heartbeat": row.heartbeat}
        target.commit(record.id, [], [], {**fields, "journal_seq": row.journal_seq}, row.rank)
    target.update_run(
        record.id,
        status=record.status,
        ended=record.ended,
        heartbeat=record.heartbeat,
        capture=record.capture,
        writer=record.writer,
        journal_seq=record.journal_seq,
    )
    return CopyResult(record.id, record.name, "copied", points)


def _positions(record: RunRecord, backend: Backend) -> list[tuple[int, int, str]]:
    """Journal position and status of the run and of each of its ranks."""
    own = (0, record.journal_seq, record.status)
    return [own, *((r.rank, r.journal_seq, r.status) for r in backend.ranks(record.id))]


def copy_runs(
    source: Store,
    target: Store,
    where: str | None = None,
    project: str | None = None,
    array_store: str | os.PathLike[str] | None = None,
) -> list[CopyResult]:
    """Copy the runs of ``source`` matching ``where``/``project`` into ``target``; the
    arrays of runs new there go to ``array_store`` (a path or fsspec URL) when given, else
    to the target's default array store."""
    if os.path.realpath(source.uri) == os.path.realpath(target.uri):
        raise InvalidArgumentError(f"copy: source and target are the same store {source.uri}")
    arrays = None if array_store is None else os.fspath(array_store)
    return [
        copy_run(view, source.backend, target.backend, arrays)
        for view in source.runs(where, project)
    ]


def copy(
    source: Store | str | os.PathLike[str],
    target: Store | str | os.PathLike[str],
    where: str | None = None,
    *,
    project: str | None = None,
    array_store: str | os.PathLike[str] | None = None,
) -> list[CopyResult]:
    """Copy the runs of ``source`` matching ``where`` (a filter expression) and ``project``
    into ``target``, as ``stepstore copy`` does; idempotent (runs already up to date there
    are skipped).

    Args:
        source: an opened :class:`Store` or the path or URI of an existing store, such as
            ``"memory://sweep"`` (a memory store of this process).
        target: an opened :class:`Store` or the path or URI of a store, created if it is a
            new embedded store, migrated if it is a server.
        where: only the runs matching this filter expression (all when ``None``).
        project: only the runs of this project.
        array_store: where the tensors, images and artifacts of runs new in ``target`` go
            (a path or fsspec URL); the target's own by default.

    Returns:
        One :class:`CopyResult` per selected run, oldest first: its ``run_id``, ``name``,
        ``action`` (``"copied"`` or ``"skipped"``) and the ``points`` copied.

    Stores given as paths or URIs are opened and closed here; given stores stay open.
    """
    opened: list[Store] = []
    try:
        if not isinstance(source, Store):
            source = open_store(source)
            opened.append(source)
        if not isinstance(target, Store):
            target = Store(open_backend(os.fspath(target), create=True))
            opened.append(target)
        return copy_runs(source, target, where, project, array_store)
    finally:
        for store in opened:
            store.close()
