"""The ``export`` and ``copy`` commands: runs out to files, other tools and other stores."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from ..io import (
    FORMATS,
    TENSOR_FORMATS,
    export_each,
    export_records,
    export_runs,
    export_tensors,
)
from ..io.copy import copy as copy_stores
from . import main
from .options import json_option, open_store, store_option
from .output import echo_json

#: File extensions ``export`` recognises when ``--format`` is not given.
_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


@main.command("export")
@click.argument("runs", nargs=-1, metavar="[RUN...]")
@click.option("--where", metavar="EXPR", help="Export the runs matching this filter.")
@click.option("--project", metavar="P", help="Export the runs of this project.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice((*FORMATS, *TENSOR_FORMATS, "tensorboard", "mlflow")),
    help="csv (scalars: a row per step, a column per key; records: a row per record), "
    "parquet (a row per point or record), npy (tensors: PATH/RUN/KEY/STEP.npy), zarr "
    "(tensors: a Zarr v3 store per run), tensorboard (everything: event files in "
    "PATH/RUN_NAME) or mlflow (scalars, params, tags, artifacts: into the MLflow tracking "
    "URI PATH) [default: from the extension of PATH].",
)
@click.option(
    "-o",
    "--output",
    "path",
    required=True,
    type=click.Path(),
    metavar="PATH",
    help="File to write; with --where/--project (without --one-file), npy or zarr: a "
    "directory, created if missing.",
)
@click.option(
    "--what",
    type=click.Choice(("scalars", "records")),
    default="scalars",
    show_default=True,
    help="What csv and parquet hold: scalar points or records (Run.log_record).",
)
@click.option(
    "--one-file",
    is_flag=True,
    help="With --where/--project: every run in one file (led by run columns) instead of a "
    "file per run.",
)
@click.option(
    "-k",
    "--keys",
    multiple=True,
    metavar="KEY",
    help="A key or glob to export; repeat for more [default: every key of the kind].",
)
@click.option(
    "--all-ranks",
    is_flag=True,
    help='Every rank\'s points of runs recorded with ranks="all", with a rank column '
    "[default: rank 0's]; scalars only.",
)
@store_option
def export_command(
    runs: tuple[str, ...],
    where: str | None,
    project: str | None,
    fmt: str | None,
    path: str,
    what: str,
    one_file: bool,
    keys: tuple[str, ...],
    all_ranks: bool,
    store: str | None,
) -> None:
    """Export runs' scalars or records (CSV, Parquet) or tensors (npy, Zarr).

    Name the runs (RUN is an id or name; they go into one file) or select them with
    --where/--project (a file per run in the directory PATH, or one file with --one-file).
    Tensors go to a directory: PATH/RUN_ID/KEY/STEP.npy, or a Zarr store PATH/RUN_ID.
    """
    if runs and (where is not None or project is not None):
        raise click.UsageError(
            f"give RUN... or --where/--project, not both (got RUN {' '.join(runs)} and "
            f"{_selection(where, project)})"
        )
    if not runs and where is None and project is None:
        raise click.UsageError("give the runs to export: RUN..., --where EXPR or --project P")
    fmt = fmt or _export_format(path)
    tensors = fmt in (*TENSOR_FORMATS, "tensorboard", "mlflow")
    if tensors and (what != "scalars" or one_file or all_ranks):
        raise click.UsageError(
            f"--format {fmt} exports tensors, a file per tensor or a store per run: "
            "--what, --one-file and --all-ranks do not apply"
        )
    if what == "records" and all_ranks:
        raise click.UsageError("--all-ranks applies to scalars, not records")
    chosen_keys = list(keys) or None
    ranks = "all" if all_ranks else None
    with open_store(store) as opened:
        views = [opened.run(run) for run in runs] or opened.runs(where, project, with_keys=True)
        if not views:
            click.echo(
                f"error: no runs match {_selection(where, project)}; nothing written", err=True
            )
            click.get_current_context().exit(1)
        if fmt == "mlflow":
            from ..errors import MissingDependencyError
            from ..io.mlflow_export import export_mlflow

            try:
                done = export_mlflow(views, path)
            except MissingDependencyError as exc:
                click.echo(f"error: {exc}", err=True)
                click.get_current_context().exit(2)
            points = sum(r.points for r in done)
            skipped = sum(r.action == "skipped" for r in done)
            click.echo(
                f"wrote {points} points from {len(done) - skipped} run(s) to {path} (mlflow)"
                + (f"; {skipped} run(s) already there, skipped" if skipped else "")
            )
        elif fmt == "tensorboard":
            from ..errors import MissingDependencyError
            from ..io.tensorboard_export import export_tensorboard

            try:
                events, _ = export_tensorboard(views, opened.backend, path)
            except MissingDependencyError as exc:
                click.echo(f"error: {exc}", err=True)
                click.get_current_context().exit(2)
            click.echo(f"wrote {events} events from {len(views)} run(s) to {path} (tensorboard)")
        elif tensors:
            count = export_tensors(views, path, fmt, chosen_keys)
            click.echo(f"wrote {count} tensors from {len(views)} run(s) to {path} ({fmt})")
        elif runs or one_file:
            if what == "records":
                rows = export_records(views, path, fmt, chosen_keys)
            else:
                rows = export_runs(views, path, fmt, chosen_keys, ranks)
            click.echo(f"wrote {rows} {_unit(what)} from {len(views)} run(s) to {path} ({fmt})")
        else:
            written = export_each(views, path, fmt, what, chosen_keys, ranks)
            rows = sum(w.rows for w in written)
            click.echo(
                f"wrote {rows} {_unit(what)} from {len(written)} run(s) into {len(written)} "
                f"files in {path} ({fmt})"
            )
            if len(written) < len(views):
                given = " of the keys given" if keys else ""
                click.echo(f"skipped {len(views) - len(written)} run(s) without {what}{given}")


def _export_format(path: str) -> str:
    """The export format the extension of ``path`` names; a usage error if none does."""
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise click.UsageError(
            f"cannot tell the format from {path!r}; give --format "
            f"{'|'.join((*FORMATS, *TENSOR_FORMATS))}"
        )
    return _SUFFIXES[suffix]


def _selection(where: str | None, project: str | None) -> str:
    """``--where``/``--project`` as given, for messages."""
    parts = [f"--where {where!r}" if where is not None else ""]
    parts.append(f"--project {project!r}" if project is not None else "")
    return " and ".join(p for p in parts if p)


def _unit(what: str) -> str:
    return "rows" if what == "scalars" else "records"


@main.command("copy")
@click.option("--from", "source", required=True, metavar="URI", help="Store to copy from.")
@click.option("--to", "target", required=True, metavar="URI", help="Store to copy into.")
@click.option("--where", metavar="EXPR", help="Only the runs matching this filter.")
@click.option("--project", metavar="P", help="Only runs of this project.")
@click.option(
    "--array-store",
    metavar="URL",
    help="Where copied runs' tensors, images and artifacts go (a path or fsspec URL such "
    "as s3://bucket/prefix); the target's own by default.",
)
@json_option
def copy_command(
    source: str,
    target: str,
    where: str | None,
    project: str | None,
    array_store: str | None,
    as_json: bool,
) -> None:
    """Copy runs between stores (idempotent: up-to-date runs are skipped).

    The target is created if it is a new embedded store, migrated if it is a server.
    """
    if target.startswith("memory://"):
        raise click.UsageError(
            f"--to {target}: a memory store lives in one process and would be gone when this "
            "command exits; copy into a directory or a server store (ss.copy() copies into "
            "memory from Python)"
        )
    results = copy_stores(source, target, where, project=project, array_store=array_store)
    if as_json:
        echo_json([dataclasses.asdict(r) for r in results])
        return
    for result in results:
        click.echo(f"{result.action} {result.run_id} ({result.name}): {result.points} points")
    copied = sum(r.action == "copied" for r in results)
    click.echo(f"{copied} copied, {len(results) - copied} already up to date")
