"""Export runs' scalar series to CSV (wide: one row per step) and Parquet (long: one row per point).

CSV, one run::

    step,epoch,acc,loss
    0,0,0.5,0.7
    1,0,,0.65

CSV, several runs: the same with leading ``run_id,run`` columns, rows grouped by run (in the
order given) and then by step. A key's column is empty at a step where it has no point; when a
key has several points at one step the last one is kept. ``epoch`` is the first epoch given
among the step's points (empty if none). Values are written with Python's ``repr``, which
round-trips every float64 exactly; NaN and infinities are ``nan``, ``inf`` and ``-inf``.

Parquet holds every point, nothing merged, with the columns of :meth:`stepstore.Store.to_arrow`
(``run_id, project, run, key, step, epoch, time, value``; ``time`` is UTC with µs precision)
and schema metadata ``stepstore.version`` and ``stepstore.run_ids`` (comma-separated).

With ``ranks="all"`` (runs recorded with ``ranks="all"``) every rank's points are written, with
a ``rank`` column: in CSV before ``step`` (rows grouped by run, then rank, then step), in
Parquet after ``key``.
"""

from __future__ import annotations

import csv
import fnmatch
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InvalidArgumentError, NotFoundError
from ..query.arrow import points_schema, points_table
from ..query.views import RunView

if TYPE_CHECKING:
    import pandas as pd

#: The formats :func:`export_runs` writes.
FORMATS = ("csv", "parquet")

Keys = str | Sequence[str] | None


def export_runs(
    runs: Sequence[RunView],
    path: str | os.PathLike[str],
    format: str,  # noqa: A002 - mirrors the CLI's --format
    keys: Keys = None,
    ranks: str | None = None,
) -> int:
    """Write the runs' scalar points to ``path`` in ``format`` (one of :data:`FORMATS`).

    Returns the number of rows written; see :func:`export_csv` and :func:`export_parquet`.
    """
    writers = {"csv": export_csv, "parquet": export_parquet}
    if format not in writers:
        raise InvalidArgumentError(f"format={format!r}: expected one of {', '.join(FORMATS)}")
    return writers[format](runs, path, keys, ranks)


def export_csv(
    runs: Sequence[RunView],
    path: str | os.PathLike[str],
    keys: Keys = None,
    ranks: str | None = None,
) -> int:
    """Write the runs' scalar series to a CSV file, one row per (run, step), one column per key.

    Args:
        runs: The runs to export; with more than one, rows start with ``run_id`` and ``run``.
        path: The file to write (replaced if it exists); its directory must exist.
        keys: A key, a glob (``"val/*"``) or a list of them; all scalar keys if None. Each
            must match a key of at least one of the runs.
        ranks: ``"all"`` for every rank's rows with a ``rank`` column; rank 0's if None.

    Returns:
        The number of rows written, header excluded.

    Raises:
        InvalidArgumentError: ``runs``, ``path`` or ``keys`` is not acceptable, or a key is
            named like one of the fixed columns.
        NotFoundError: A key matches no scalar key of any of the runs.
    """
    views = check_runs(runs)
    target = check_path(path)
    frames = _read(views, keys, ranks)
    columns = list(dict.fromkeys(k for frame in frames for k in frame["key"].cat.categories))
    fixed = [
        *(["run_id", "run"] if len(views) > 1 else []),
        *(["rank"] if ranks else []),
        "step",
        "epoch",
    ]
    clash = sorted(set(columns) & set(fixed))
    if clash:
        raise InvalidArgumentError(
            f"key {clash[0]!r} has the name of a fixed CSV column ({', '.join(fixed)}); "
            "export it to Parquet instead"
        )
    rows: list[list[str]] = []
    for view, frame in zip(views, frames, strict=True):
        prefix = [view.id, view.name] if len(views) > 1 else []
        if not ranks:
            rows.extend([*prefix, *row] for row in _wide(frame, columns))
            continue
        for rank, part in frame.groupby("rank", sort=True):
            rows.extend([*prefix, str(rank), *row] for row in _wide(part, columns))
    write_csv(target, [*fixed, *columns], rows)
    return len(rows)


def write_csv(target: os.PathLike[str], header: list[str], rows: list[list[str]]) -> None:
    """``rows`` under ``header`` as a CSV file at ``target``; a path that cannot be written
    is an ``InvalidArgumentError`` naming it."""
    try:
        with open(target, "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
    except OSError as exc:
        raise InvalidArgumentError(f"path {str(target)!r}: cannot write ({exc.strerror})") from None


def export_parquet(
    runs: Sequence[RunView],
    path: str | os.PathLike[str],
    keys: Keys = None,
    ranks: str | None = None,
) -> int:
    """Write the runs' scalar points to a Parquet file in long form, one row per point.

    Args:
        runs: The runs to export.
        path: The file to write (replaced if it exists); its directory must exist.
        keys: A key, a glob (``"val/*"``) or a list of them; all scalar keys if None. Each
            must match a key of at least one of the runs.
        ranks: ``"all"`` for every rank's points with a ``rank`` column; rank 0's if None.

    Returns:
        The number of rows (points) written.

    Raises:
        InvalidArgumentError: ``runs``, ``path`` or ``keys`` is not acceptable.
        NotFoundError: A key matches no scalar key of any of the runs.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .. import __version__

    views = check_runs(runs)
    target = check_path(path)
    frames = _read(views, keys, ranks)
    schema = points_schema(with_rank=ranks is not None).with_metadata(
        {
            "stepstore.version": __version__,
            "stepstore.run_ids": ",".join(v.id for v in views),
        }
    )
    table = pa.concat_tables(
        [points_table(view, frame).cast(schema) for view, frame in zip(views, frames, strict=True)]
    )
    try:
        pq.write_table(table, target)
    except OSError as exc:
        raise InvalidArgumentError(f"path {str(target)!r}: cannot write ({exc})") from None
    return table.num_rows


def check_runs(runs: object) -> list[RunView]:
    """``runs`` as a list: a non-empty sequence of distinct RunViews, else
    ``InvalidArgumentError``."""
    if isinstance(runs, RunView) or not isinstance(runs, Sequence):
        raise InvalidArgumentError(f"runs={runs!r}: expected a list of RunView")
    if not runs:
        raise InvalidArgumentError("runs=[]: expected at least one run to export")
    seen: set[str] = set()
    for view in runs:
        if not isinstance(view, RunView):
            raise InvalidArgumentError(f"runs: {view!r} is not a RunView (see Store.run)")
        if view.id in seen:
            raise InvalidArgumentError(f"runs: run {view.name} ({view.id}) is given twice")
        seen.add(view.id)
    return list(runs)


def check_path(path: object) -> Path:
    """``path`` as a file path to write: not a directory, in a directory that exists."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise InvalidArgumentError(f"path={path!r}: expected a file path")
    target = Path(os.fspath(path)).expanduser()
    if target.is_dir():
        raise InvalidArgumentError(f"path {str(target)!r} is a directory; expected a file path")
    if not target.parent.is_dir():
        raise InvalidArgumentError(
            f"path {str(target)!r}: directory {str(target.parent)!r} does not exist"
        )
    return target


def check_keys(keys: Keys) -> list[str] | None:
    """``keys`` (a key, a glob or a list of them) as a list; None for every key."""
    if keys is None:
        return None
    wanted = [keys] if isinstance(keys, str) else keys
    if (
        not isinstance(wanted, Sequence)
        or not wanted
        or not all(isinstance(k, str) and k for k in wanted)
    ):
        raise InvalidArgumentError(
            f"keys={keys!r}: expected a key, a glob or a non-empty list of them"
        )
    return list(wanted)


def _read(views: list[RunView], keys: Keys, ranks: str | None) -> list[pd.DataFrame]:
    """Each run's points of the keys (patterns may match in only some runs), of rank 0 or,
    with ``ranks="all"``, of every rank."""
    if ranks not in (None, "all"):
        raise InvalidArgumentError(f"ranks={ranks!r}: expected None or 'all'")
    patterns = check_keys(keys)
    if patterns is None:
        return [view.scalars(ranks=ranks) for view in views]
    frames, matched = [], set()
    for view in views:
        names = {k for r in (view.ranks if ranks else [0]) for k in view.keys("scalar", r)}
        present = [p for p in patterns if any(fnmatch.fnmatchcase(n, p) for n in names)]
        matched.update(present)
        frames.append(view.scalars(present, ranks=ranks))
    missing = [p for p in patterns if p not in matched]
    if missing:
        runs = ", ".join(f"{v.name} ({v.id})" for v in views)
        raise NotFoundError(f"no scalar key matching {missing[0]!r} in run(s) {runs}")
    return frames


def _wide(frame: pd.DataFrame, columns: list[str]) -> list[list[str]]:
    """Rows ``step, epoch, *columns`` as CSV cells: last point per key and step."""
    steps = np.unique(frame["step"].to_numpy())
    epochs = frame.groupby("step", sort=True)["epoch"].first()
    cells = [
        [str(step) for step in steps.tolist()],
        ["" if epoch is None else str(epoch) for epoch in epochs.to_numpy(object, na_value=None)],
    ]
    codes = frame["key"].cat.codes.to_numpy()
    categories = list(frame["key"].cat.categories)
    step, value = frame["step"].to_numpy(), frame["value"].to_numpy()
    for key in columns:
        column = [""] * len(steps)
        if key in categories:
            mine = codes == categories.index(key)
            positions = np.searchsorted(steps, step[mine]).tolist()
            for position, number in zip(positions, value[mine].tolist(), strict=True):
                column[position] = repr(number)  # later points at a step overwrite earlier ones
        cells.append(column)
    return [list(row) for row in zip(*cells, strict=True)]
