"""Export runs' records (``Run.log_record``) to CSV or Parquet, long form: one row per record.

CSV: ``key, step, epoch`` and one column per record field (in the order fields first
appear), led by ``run_id, run`` when the file holds several runs; rows by run (in the order
given), key (sorted) and step. A cell is empty where a record lacks the field (and the epoch
where none was given); strings are written as they are, every other value as JSON (floats
exactly, ``NaN``/``Infinity`` for non-finite ones).

Parquet: ``run_id, project, run, key, step, epoch`` and the field columns, each typed as
:mod:`stepstore.query.columns` says (JSON text where a field's values are not of one type);
schema metadata ``stepstore.version`` and ``stepstore.run_ids`` as for scalar points.

A field named like one of the fixed columns is refused before anything is written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from ..errors import InvalidArgumentError
from ..query.columns import arrow_column
from ..query.views import RecordEntry, RunView
from .export import Keys, check_keys, check_path, check_runs, write_csv
from .select import matching, plan_keys

#: The formats :func:`export_records` writes.
RECORD_FORMATS = ("csv", "parquet")

#: One record of one run: the run, its key and the record.
_Row = tuple[RunView, str, RecordEntry]


def export_records(
    runs: Sequence[RunView],
    path: str | os.PathLike[str],
    format: str,  # noqa: A002 - mirrors the CLI's --format
    keys: Keys = None,
) -> int:
    """Write the runs' records to ``path`` in ``format`` (``csv`` or ``parquet``; see the
    module docstring).

    Args:
        runs: The runs to export.
        path: The file to write (replaced if it exists); its directory must exist.
        format: ``csv`` or ``parquet``.
        keys: A record key, a glob or a list of them; every record key if None. Each must
            match a record key of at least one run.

    Returns:
        The number of rows (records) written.

    Raises:
        InvalidArgumentError: An argument is not acceptable, or a field is named like a
            fixed column.
        NotFoundError: No run has a record key, or a pattern matches none.
    """
    if format not in RECORD_FORMATS:
        raise InvalidArgumentError(
            f"format={format!r}: expected one of {', '.join(RECORD_FORMATS)}"
        )
    views = check_runs(runs)
    target = check_path(path)
    rows = _rows(views, check_keys(keys))
    fields = list(dict.fromkeys(name for _, _, entry in rows for name in entry.fields))
    if format == "csv":
        fixed = [*(["run_id", "run"] if len(views) > 1 else []), "key", "step", "epoch"]
    else:
        fixed = ["run_id", "project", "run", "key", "step", "epoch"]
    clash = [name for name in fields if name in fixed]
    if clash:
        raise InvalidArgumentError(
            f"record field {clash[0]!r} has the name of a fixed {format} column "
            f"({', '.join(fixed)})"
        )
    if format == "csv":
        _write_csv(target, views, rows, fixed, fields)
    else:
        _write_parquet(target, views, rows, fields)
    return len(rows)


def _rows(views: list[RunView], patterns: list[str] | None) -> list[_Row]:
    """Every record of the chosen keys, by run, key and step."""
    return [
        (view, key, entry)
        for view, present in plan_keys(views, "record", patterns, None)
        for key in matching(view.keys("record"), present)
        for entry in view.record_entries(key)
    ]


def _write_csv(
    target: os.PathLike[str],
    views: list[RunView],
    rows: list[_Row],
    fixed: list[str],
    fields: list[str],
) -> None:
    lines = []
    for view, key, entry in rows:
        lead = [view.id, view.name] if len(views) > 1 else []
        epoch = "" if entry.epoch is None else str(entry.epoch)
        cells = [_cell(entry.fields[f]) if f in entry.fields else "" for f in fields]
        lines.append([*lead, key, str(entry.step), epoch, *cells])
    write_csv(target, [*fixed, *fields], lines)


def _cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _write_parquet(
    target: os.PathLike[str], views: list[RunView], rows: list[_Row], fields: list[str]
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .. import __version__

    columns = {
        "run_id": pa.array([v.id for v, _, _ in rows], pa.string()),
        "project": pa.array([v.project for v, _, _ in rows], pa.string()),
        "run": pa.array([v.name for v, _, _ in rows], pa.string()),
        "key": pa.array([k for _, k, _ in rows], pa.string()),
        "step": pa.array([e.step for _, _, e in rows], pa.int64()),
        "epoch": pa.array([e.epoch for _, _, e in rows], pa.int64()),
    }
    columns.update((f, arrow_column([e.fields.get(f) for _, _, e in rows])) for f in fields)
    table = pa.table(columns).replace_schema_metadata(
        {"stepstore.version": __version__, "stepstore.run_ids": ",".join(v.id for v in views)}
    )
    try:
        pq.write_table(table, target)
    except OSError as exc:
        raise InvalidArgumentError(f"path {str(target)!r}: cannot write ({exc})") from None
