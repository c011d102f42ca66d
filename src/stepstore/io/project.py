"""Export many runs at once, one file per run: ``DIR/RUN_ID.csv`` or ``DIR/RUN_ID.parquet``
(``RUN_ID`` made a safe file name by :func:`stepstore.tensors.paths.path_name`), each laid
out as :func:`stepstore.io.export_runs` (scalars) or :func:`stepstore.io.export_records`
(records) lays out a file of one run.

Only runs holding something of the chosen kind (and keys) get a file. Keys are checked
across all the runs before anything is written: a pattern that matches in none of them, or
runs holding nothing to export, raise ``NotFoundError`` and leave no file behind.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from ..errors import InvalidArgumentError
from ..query.views import RunView
from ..tensors.paths import path_name
from .export import FORMATS, Keys, check_keys, check_runs, export_runs
from .records import export_records
from .select import check_directory, plan_keys

#: What :func:`export_each` exports, by the kind of series it reads.
WHAT = {"scalars": "scalar", "records": "record"}


class Written(NamedTuple):
    """One file an export wrote: its run, path and number of rows."""

    run: RunView
    path: Path
    rows: int


def export_each(
    runs: Sequence[RunView],
    directory: str | os.PathLike[str],
    format: str,  # noqa: A002 - mirrors the CLI's --format
    what: str = "scalars",
    keys: Keys = None,
    ranks: str | None = None,
) -> list[Written]:
    """Write one ``format`` file (``csv`` or ``parquet``) per run into ``directory``
    (created if missing; its parent must exist), of ``what`` (``scalars`` or ``records``).

    ``keys`` picks keys (names or globs) as in :func:`export_runs`; ``ranks="all"`` exports
    every rank's scalar points (scalars only). Returns the files written, in run order.
    """
    if format not in FORMATS:
        raise InvalidArgumentError(f"format={format!r}: expected one of {', '.join(FORMATS)}")
    if what not in WHAT:
        raise InvalidArgumentError(f"what={what!r}: expected one of {', '.join(WHAT)}")
    if ranks is not None and what != "scalars":
        raise InvalidArgumentError(f"ranks={ranks!r}: only scalars are exported per rank")
    views = check_runs(runs)
    plan = plan_keys(views, WHAT[what], check_keys(keys), ranks)
    root = check_directory(directory)
    written = []
    for view, patterns in plan:
        target = root / f"{path_name(view.id)}.{format}"
        if what == "scalars":
            rows = export_runs([view], target, format, patterns, ranks)
        else:
            rows = export_records([view], target, format, patterns)
        written.append(Written(view, target, rows))
    return written
