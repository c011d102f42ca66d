"""The ``stepstore`` command line: a thin layer over the public API.

Every command takes ``--store URI`` (also accepted before the command name); without it the
store is ``$STEPSTORE_URI`` or ``./stepstore``. Output is for people by default; ``--json``
prints JSON and nothing else. In JSON, times are Unix seconds and the numbers JSON cannot
hold are the strings ``"nan"``, ``"inf"`` and ``"-inf"`` (which ``float()`` reads back),
wherever they occur.

Exit codes: 0 success; 1 a stepstore error (printed as ``error: <message>`` on stderr) or a
failed ``check``; 2 a usage error or a missing optional dependency.
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import io
import json
import math
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple, NoReturn, TypeVar

import click
from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import StepstoreError
from .io import (
    FORMATS,
    TENSOR_FORMATS,
    copy_runs,
    export_each,
    export_records,
    export_runs,
    export_tensors,
)
from .query import RunView, Store
from .query import open as open_store
from .query.compare import (
    FIELDS,
    Divergence,
    Metric,
    SortKey,
    check_metrics,
    default_metrics,
    diverge,
    field,
    param_paths,
    varying_params,
)
from .query.runs_frame import dotted_params

_Command = TypeVar("_Command", bound=Callable[..., Any])

#: File extensions ``export`` recognises when ``--format`` is not given.
_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
#: How many keys' last values the ``runs`` table shows.
_SUMMARY_KEYS = 3
#: Line width of tables when stdout is not a terminal.
_PIPED_WIDTH = 200
#: Python modules the demo needs, by the name a failed import reports.
_DEMO_MODULES = ("torch", "sklearn")
#: Python modules the dashboard needs (the ui extra).
_UI_MODULES = ("starlette", "uvicorn")
#: Python modules plots need (the plot extra).
_PLOT_MODULES = ("matplotlib",)
#: Cells wider than their header's first this many characters let the header fold.
_MIN_HEADER = 8
#: Characters between two columns of a comparison table.
_GAP = 2


class _Group(click.Group):
    """A command group that reports a :class:`StepstoreError` as ``error: ...``, exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StepstoreError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)


def _store_option(command: _Command) -> _Command:
    return click.option(
        "--store",
        metavar="URI",
        default=None,
        help="Store path or URI [default: $STEPSTORE_URI or ./stepstore].",
    )(command)


def _json_option(command: _Command) -> _Command:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print JSON (and nothing else) for scripts."
    )(command)


def _store_uri(store: str | None) -> str | None:
    """The store given to the command, else the one given before it, else None (default)."""
    if store is not None:
        return store
    root: str | None = click.get_current_context().find_root().params.get("store")
    return root


def _open(store: str | None) -> Store:
    return open_store(_store_uri(store))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stepstore")
@_store_option
def main(store: str | None) -> None:
    """stepstore: list, inspect, export and check recorded training runs."""


@main.command("runs")
@click.option(
    "--where",
    metavar="EXPR",
    help="Filter, e.g. \"params.lr < 0.01 and 'baseline' in tags and status = 'finished'\".",
)
@click.option("--project", metavar="P", help="Only runs of this project.")
@click.option(
    "-m",
    "--metric",
    "metrics",
    multiple=True,
    metavar="KEY[:STAT]",
    help="A summary value to show: KEY:last|min|max|count (last if no STAT), e.g. "
    "val/acc:max; repeat for more [default: the last values of the 3 scalar keys most runs "
    "share, val/* and losses first].",
)
@click.option(
    "--sort",
    metavar="KEY",
    help="Order by a run field (created, name, status, duration...), a param (params.lr) "
    "or a metric (val/acc:max); a leading - for descending; runs without a value last "
    "[default: created].",
)
@click.option(
    "--limit", type=click.IntRange(min=1), metavar="N", help="Only the first N runs (sorted)."
)
@_json_option
@click.option(
    "--csv", "as_csv", is_flag=True, help="Print CSV: a row per run, every param, the metrics."
)
@_store_option
def runs_command(
    where: str | None,
    project: str | None,
    metrics: tuple[str, ...],
    sort: str | None,
    limit: int | None,
    as_json: bool,
    as_csv: bool,
    store: str | None,
) -> None:
    """List runs, oldest first, to compare them.

    The table shows each run's id, name, status and creation time, the params whose values
    differ between the listed runs and the chosen metrics; what is the same for every run
    (the project, the status) goes in the title. --json prints every field of each run,
    summary included; --csv a row per run with every param and the chosen metrics.
    """
    if as_json and as_csv:
        raise click.UsageError("give --json or --csv, not both")
    chosen = [Metric.parse(text) for text in metrics]
    with _open(store) as opened:
        views = opened.runs(where=where, project=project, with_keys=True)
        check_metrics(chosen, views)
        order = None if sort is None else SortKey.parse(sort, views)
        if order is not None:
            views = order.sort(views)
        views = views[:limit]
        chosen = chosen or default_metrics(views)
        if order is not None and order.metric is not None and order.metric not in chosen:
            chosen.append(order.metric)
        if as_json:
            _echo_json([_describe(view) for view in views])
        elif as_csv:
            _echo_csv(views, chosen)
        elif not views:
            click.echo("no runs match" if where or project else f"no runs in {opened.uri}")
        else:
            console = _console()
            console.print(_runs_heading(views), style="bold", soft_wrap=True)
            console.print(_runs_table(views, chosen, console.width))


@main.command("show")
@click.argument("run")
@_json_option
@_store_option
def show_command(run: str, as_json: bool, store: str | None) -> None:
    """Show one run, by id or name.

    Shows its metadata, params, capture policies and, per key, the points stored and
    skipped, the step range and the last, min and max values.
    """
    with _open(store) as opened:
        view = opened.run(run)
        if as_json:
            _echo_json(_describe(view, full=True))
            return
        console = _console()
        console.print(f"run {view.name} ({view.id})", style="bold")
        console.print(_fields(_metadata(view)))
        params = dict(dotted_params(view.params))
        if params:
            console.print("params", style="bold")
            console.print(_fields({path: _plain(value) for path, value in params.items()}))
        bindings = view.capture.get("bindings", [])
        if bindings:
            console.print("capture policies", style="bold")
            console.print(_fields({b["pattern"]: b["policy"] for b in bindings}))
        reductions = {r["pattern"]: r["how"] or "raw" for r in view.capture.get("reductions", [])}
        if reductions:
            console.print("reductions (tensors stored as)", style="bold")
            console.print(_fields(reductions))
        console.print(_key_table(view))


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
@_store_option
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
    with _open(store) as opened:
        views = [opened.run(run) for run in runs] or opened.runs(where, project, with_keys=True)
        if not views:
            click.echo(
                f"error: no runs match {_selection(where, project)}; nothing written", err=True
            )
            click.get_current_context().exit(1)
        if fmt == "mlflow":
            from .errors import MissingDependencyError
            from .io.mlflow_export import export_mlflow

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
            from .errors import MissingDependencyError
            from .io.tensorboard_export import export_tensorboard

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
@_json_option
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
    from .backends import open_backend

    with open_store(source) as src, Store(open_backend(target, create=True)) as dst:
        results = copy_runs(src, dst, where=where, project=project, array_store=array_store)
    if as_json:
        _echo_json([dataclasses.asdict(r) for r in results])
        return
    for result in results:
        click.echo(f"{result.action} {result.run_id} ({result.name}): {result.points} points")
    copied = sum(r.action == "copied" for r in results)
    click.echo(f"{copied} copied, {len(results) - copied} already up to date")


@main.command("migrate")
@_store_option
def migrate_command(store: str | None) -> None:
    """Create the store if needed and bring its schema to this version of stepstore.

    Opening a store for recording migrates it too; this command does it ahead of time (a
    server store shared by a team, for instance). A store written by a newer stepstore is
    refused.
    """
    from .backends import open_backend
    from .config import load_config

    uri = load_config(store=_store_uri(store)).store
    backend = open_backend(uri, create=True)
    try:
        click.echo(f"{backend.uri}: schema version {backend.schema_version}")
    finally:
        backend.close()


@main.command("check")
@click.option(
    "--repair",
    is_flag=True,
    help="Drop damaged scalar chunks, tensor rows, images and artifacts (keeping every intact "
    "point and row), rebuild index rows, zarr.json files and summaries; then check again.",
)
@_json_option
@_store_option
def check_command(repair: bool, as_json: bool, store: str | None) -> None:
    """Verify the store's integrity.

    Checks the database and every chunk's checksum; lists what is damaged and exits 1 if
    anything is. With ``--repair`` it first repairs what it can (runs still being recorded
    are left alone) and lists the repairs; the exit code then says whether anything is still
    damaged.
    """
    from .repair import repair as repair_store

    with _open(store) as opened:
        repaired = repair_store(opened) if repair else []
        problems = opened.check()
        uri = opened.uri
    if as_json:
        document: dict[str, Any] = {
            "ok": not problems,
            "problems": [{"where": p.where, "what": p.what} for p in problems],
        }
        if repair:
            document["repaired"] = [{"where": p.where, "what": p.what} for p in repaired]
        _echo_json(document)
    else:
        for fixed in repaired:
            click.echo(f"repaired {fixed.where}: {fixed.what}")
        if repair:
            click.echo(f"{len(repaired)} repair(s) in {uri}")
        if not problems:
            click.echo("ok")
        for problem in problems:
            click.echo(f"{problem.where}: {problem.what}")
        if problems:
            click.echo(f"{len(problems)} problem(s) in {uri}")
    if problems:
        click.get_current_context().exit(1)


@main.command("demo")
@click.option(
    "--epochs", type=click.IntRange(min=1), default=4, show_default=True, help="Epochs to train."
)
@_store_option
def demo_command(epochs: int, store: str | None) -> None:
    """Train a small network and record it.

    Needs the demo extras: pip install 'stepstore[demo]'.
    """
    uri = _store_uri(store)
    try:
        from . import demo

        run_id = demo.main(store=uri, epochs=epochs)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in _DEMO_MODULES:
            raise
        click.echo(
            f"error: the demo needs {missing}, which is not installed; "
            "pip install 'stepstore[demo]'",
            err=True,
        )
        click.get_current_context().exit(2)
    click.echo(f"run id: {run_id}")


@main.command("ui")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but loopback needs a token.",
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=5757, show_default=True, help="TCP port."
)
@click.option(
    "--token",
    metavar="T",
    help="Require this token [default: none on loopback, else one generated and printed].",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the dashboard in a browser.")
@_store_option
def ui_command(
    host: str, port: int, token: str | None, open_browser: bool, store: str | None
) -> None:
    """Serve the dashboard: runs, charts, images, tensors and records in a browser.

    Read-only. Prints the address to open (with the token, when there is one); Ctrl-C
    stops it. Needs the ui extras: pip install 'stepstore[ui]'.
    """
    try:
        from .ui import serve
    except ModuleNotFoundError as exc:
        _missing_extra(exc, "ui")
    with _open(store) as opened:
        serve(opened, host=host, port=port, token=token, open_browser=open_browser)


@main.command("report")
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@click.option(
    "-o",
    "--output",
    "path",
    required=True,
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="HTML file to write.",
)
@_store_option
def report_command(runs: tuple[str, ...], path: str, store: str | None) -> None:
    """Write a self-contained HTML report of runs (charts, images, tensors, records).

    RUN is a run id or name. The file needs no server and no network: attach it to a paper
    or a ticket. Needs the ui extras: pip install 'stepstore[ui]'.
    """
    try:
        from .ui.report import write_report
    except ModuleNotFoundError as exc:
        _missing_extra(exc, "ui")
    with _open(store) as opened:
        written = write_report(opened, list(runs), path)
    click.echo(f"wrote {written} ({len(runs)} run(s))")


@main.command("diff")
@click.argument("first", metavar="RUN")
@click.argument("second", metavar="RUN")
@click.option(
    "-k",
    "--keys",
    multiple=True,
    metavar="KEY",
    help="A key or glob to compare; repeat for more [default: every key both recorded].",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    default=1e-6,
    show_default=True,
    help="Relative difference up to which two values count as the same.",
)
@click.option(
    "--abs-tolerance",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Absolute difference up to which two values count as the same.",
)
@_json_option
@_store_option
def diff_command(
    first: str,
    second: str,
    keys: tuple[str, ...],
    tolerance: float,
    abs_tolerance: float,
    as_json: bool,
    store: str | None,
) -> None:
    """Compare two runs (by id or name): A is the first, B the second.

    Shows the params that differ, the keys only one run recorded, the summary of the
    common keys side by side and, per common scalar key, the first step both recorded
    where the values differ by more than the tolerance ("same" if none does).
    """
    with _open(store) as opened:
        a, b = opened.run(first), opened.run(second)
        common = [k for k in a.keys() if k in set(b.keys())]
        if keys:
            common = [k for k in common if any(fnmatch.fnmatchcase(k, p) for p in keys)]
        scalars = set(a.keys("scalar")) & set(b.keys("scalar"))
        parted = [
            diverge(k, a.columns(k), b.columns(k), tolerance, abs_tolerance)
            for k in common
            if k in scalars
        ]
    params_a, params_b = dict(dotted_params(a.params)), dict(dotted_params(b.params))
    differing = varying_params([a, b])
    only = {
        name: sorted(set(x.keys()) - set(y.keys())) for name, x, y in (("a", a, b), ("b", b, a))
    }
    if as_json:
        _echo_json(
            {
                "a": _describe(a),
                "b": _describe(b),
                "params": {p: [params_a.get(p), params_b.get(p)] for p in differing},
                "only_a": only["a"],
                "only_b": only["b"],
                "series": [dataclasses.asdict(d) for d in parted],
            }
        )
        return
    console = _console()
    width = console.width
    console.print(_fields({label: _run_line(view) for label, view in (("A", a), ("B", b))}))
    if differing:
        console.print("params that differ", style="bold")
        console.print(
            _compact_table(
                [
                    _Column("param", differing, wrap=True),
                    _Column("A", [_param_cell(params_a, p) for p in differing], wrap=True),
                    _Column("B", [_param_cell(params_b, p) for p in differing], wrap=True),
                ],
                width,
            )
        )
    else:
        console.print("params: the same", style="bold")
    for name in ("a", "b"):
        if only[name]:
            console.print(f"only in {name.upper()}: {', '.join(only[name])}", soft_wrap=False)
    if common:
        console.print("summary of the keys both recorded", style="bold")
        console.print(_summary_table(a, b, common, width))
    if parted:
        limits = f"relative {tolerance:g}" + (
            f", absolute {abs_tolerance:g}" if abs_tolerance else ""
        )
        console.print(f"where the series part (tolerance: {limits})", style="bold")
        console.print(_divergence_table(parted, width))


@main.command("plot")
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@click.option(
    "-k",
    "--key",
    "keys",
    multiple=True,
    metavar="KEY",
    help="A scalar key or glob; one panel per --key, the runs overlaid; repeat for more.",
)
@click.option(
    "--tensor",
    metavar="KEY",
    help="Instead of --key: a tensor key, drawn as its histogram over steps (one panel per run).",
)
@click.option(
    "--x",
    "x",
    type=click.Choice(["step", "epoch", "time"]),
    default="step",
    show_default=True,
    help="The x axis: step, epoch, or seconds since the run was created.",
)
@click.option(
    "--smooth",
    type=click.FloatRange(min=0, min_open=True),
    metavar="EMA",
    help="Exponential moving average: a weight of the newest point in (0, 1), or a "
    "half-life in points (>= 1); the raw values stay, faint.",
)
@click.option(
    "--log", "log_scale", is_flag=True, help="Logarithmic y axis (colour, with --tensor)."
)
@click.option(
    "--max-points",
    type=click.IntRange(min=4),
    default=2000,
    show_default=True,
    help="Points per line; past it each bucket's min and max are kept and its range shaded.",
)
@click.option(
    "-o",
    "--output",
    "path",
    required=True,
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Image to write: .png or .svg.",
)
@_store_option
def plot_command(
    runs: tuple[str, ...],
    keys: tuple[str, ...],
    tensor: str | None,
    x: str,
    smooth: float | None,
    log_scale: bool,
    max_points: int,
    path: str,
    store: str | None,
) -> None:
    """Plot scalar keys of runs (overlaid), or a tensor key's histogram over steps, to an
    image file.

    RUN is a run id or name. Needs matplotlib: pip install 'stepstore[plot]'.
    """
    if bool(keys) == (tensor is not None):
        raise click.UsageError("give --key KEY (one or more) or --tensor KEY")
    if Path(path).suffix.lower() not in (".png", ".svg"):
        raise click.UsageError(f"cannot tell the image type of {path!r}; give a .png or .svg file")
    try:
        import matplotlib  # noqa: F401 - checked here, used by stepstore.plot
    except ModuleNotFoundError as exc:
        _missing_extra(exc, "plot", _PLOT_MODULES)
    from . import plot

    with _open(store) as opened:
        views = [opened.run(run) for run in runs]
        fig, axes = plot.figure(len(views) if tensor is not None else len(keys))
        if tensor is not None:
            for view, ax in zip(views, axes, strict=True):
                plot.plot_tensor_histogram(view, tensor, ax=ax, log=log_scale)
        else:
            for key, ax in zip(keys, axes, strict=True):
                plot.plot_scalars(
                    views, key, x=x, ax=ax, smooth=smooth, log=log_scale, max_points=max_points
                )
                ax.set_title(key, fontsize="medium")
            for ax in axes[:-1]:  # the panels share the x axis, labelled once at the bottom
                ax.set_xlabel("")
        plot.save(fig, path)
    click.echo(f"wrote {path}")


@main.group("import", cls=_Group)
def import_group() -> None:
    """Import runs from other tools' logs (TensorBoard event files, MLflow stores)."""


@import_group.command("tensorboard")
@click.argument("logdir", type=click.Path(), metavar="LOGDIR")
@click.option("--project", metavar="P", help="Project of the runs [default: LOGDIR's name].")
@_store_option
def import_tensorboard_command(logdir: str, project: str | None, store: str | None) -> None:
    """Import TensorBoard event files: a run per directory under LOGDIR that holds them.

    Runs are named by their directory's path relative to LOGDIR. Importing again skips the
    runs already imported; a damaged file's readable part is imported, its run marked
    incomplete, and what was skipped is listed. Needs pip install 'stepstore[compat]'.
    """
    from rich.progress import Progress

    from .backends import open_backend
    from .config import load_config
    from .errors import MissingDependencyError
    from .io.tensorboard_import import import_tensorboard, total_bytes

    open_backend(load_config(store=_store_uri(store)).store, create=True).close()
    with _open(store) as opened:
        try:
            total, console = total_bytes(logdir), Console(stderr=True)
            shown = bool(total) and console.is_terminal
            with Progress(console=console, transient=True, disable=not shown) as bar:
                task = bar.add_task("importing event files", total=total)
                results = import_tensorboard(
                    logdir, opened, project, lambda done: bar.advance(task, done)
                )
        except MissingDependencyError as exc:
            click.echo(f"error: {exc}", err=True)
            click.get_current_context().exit(2)
    for result in results:
        where = f"{result.directory} -> run {result.name} ({result.run_id})"
        if result.action == "skipped":
            click.echo(f"skipped {where}: already imported ({result.status})")
            continue
        click.echo(f"imported {where}: {result.values} values, {result.status}")
        for problem in result.problems:
            click.echo(f"  skipped {problem}")
    imported = sum(r.action == "imported" for r in results)
    incomplete = sum(r.status == "incomplete" and r.action == "imported" for r in results)
    click.echo(
        f"{imported} run(s) imported ({incomplete} incomplete), "
        f"{len(results) - imported} already imported"
    )


@import_group.command("mlflow")
@click.argument("uri", metavar="TRACKING_URI")
@_store_option
def import_mlflow_command(uri: str, store: str | None) -> None:
    """Import the runs of an MLflow tracking store: a file store (a path to mlruns or
    file:///...) or a SQL store (sqlite:///mlflow.db, postgresql://...).

    Experiments become projects; each run keeps its MLflow run id, params, tags, every
    metric point (step, timestamp, value) and its artifacts. Importing again skips runs
    already imported and unchanged. Needs pip install 'stepstore[compat]'.
    """
    from rich.progress import Progress

    from .backends import open_backend
    from .config import load_config
    from .errors import MissingDependencyError
    from .io.mlflow_import import import_mlflow
    from .io.mlflow_source import open_source

    try:
        source = open_source(uri)
    except MissingDependencyError as exc:
        click.echo(f"error: {exc}", err=True)
        click.get_current_context().exit(2)
    try:
        runs = source.runs()
        open_backend(load_config(store=_store_uri(store)).store, create=True).close()
        with _open(store) as opened, Progress(console=Console(stderr=True)) as bar:
            task = bar.add_task("importing MLflow runs", total=len(runs))
            results = import_mlflow(
                source, opened.backend, runs, lambda run, result: bar.advance(task)
            )
    finally:
        source.close()
    for result in results:
        where = f"{result.project} / {result.name} ({result.run_id})"
        if result.action == "skipped":
            click.echo(f"skipped {where}: already imported")
            continue
        click.echo(f"{result.action} {where}: {result.points} points")
        for problem in result.skipped:
            click.echo(f"  skipped {problem}; the run is marked incomplete")
    done = sum(r.action != "skipped" for r in results)
    click.echo(f"{done} run(s) imported from {source.uri}, {len(results) - done} already imported")


def _missing_extra(
    exc: ModuleNotFoundError, extra: str, modules: tuple[str, ...] = _UI_MODULES
) -> NoReturn:
    """Report a missing optional dependency (exit code 2), naming the extra that installs it."""
    missing = (exc.name or "").partition(".")[0]
    if missing not in modules:
        raise exc
    click.echo(
        f"error: this command needs {missing}, which is not installed; "
        f"pip install 'stepstore[{extra}]'",
        err=True,
    )
    click.get_current_context().exit(2)


# -- output helpers ----------------------------------------------------------------------------


def _console() -> Console:
    """A console on the current stdout that prints text as given (no markup, no highlighting);
    fitted to a terminal, and wide enough for whole table cells when piped."""
    console = Console(markup=False, highlight=False)
    if not console.is_terminal:
        console.width = _PIPED_WIDTH
    return console


def _jsonable(value: Any) -> Any:
    """``value`` with non-finite floats as the strings ``nan``, ``inf``, ``-inf``."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(_jsonable(data), indent=2, ensure_ascii=False, allow_nan=False))


def _describe(view: RunView, full: bool = False) -> dict[str, Any]:
    """A run as a JSON-ready dict; ``full`` adds host, environment, capture and writer."""
    data: dict[str, Any] = {
        "id": view.id,
        "name": view.name,
        "project": view.project,
        "status": view.status,
        "created": view.created,
        "ended": view.ended,
        "params": view.params,
        "tags": view.tags,
        "summary": view.summary,
    }
    if full:
        data.update(
            host=view.host,
            pid=view.pid,
            git_commit=view.git_commit,
            env=view.env,
            capture=view.capture,
            writer=view.writer,
            ranks={str(rank): status for rank, status in view.rank_status.items()},
        )
    return data


def _metadata(view: RunView) -> dict[str, str]:
    env = view.env
    writer = view.writer
    ranks = view.rank_status
    return {
        "project": view.project,
        "status": view.status,
        **(
            {"ranks": ", ".join(f"{rank} {status}" for rank, status in ranks.items())}
            if len(ranks) > 1
            else {}
        ),
        "created": _local_time(view.created),
        "ended": _local_time(view.ended),
        "host": f"{view.host} (pid {view.pid})",
        "git commit": view.git_commit or "-",
        "python": f"{env.get('python', '?')} ({env.get('implementation', '?')})",
        "tags": ", ".join(view.tags) or "-",
        "writer": " ".join(f"{k}={v}" for k, v in writer.items()) if writer else "-",
    }


def _key_table(view: RunView) -> Table:
    """Per key: points stored, step range, last/min/max, capture policy and points skipped.

    Keys with points, and keys whose every point the policy skipped; not a tensor key that
    was stored only as its reduction (runs recorded before the capture metadata listed the
    reduction's outputs in its place).
    """
    summary = view.summary
    capture = view.capture.get("keys", {})
    table = Table(
        "key", "count", "first step", "last step", "last", "min", "max", "policy", "skipped"
    )
    reduced = {
        key
        for key, info in capture.items()
        if key not in summary
        and info.get("recorded")
        and any(stored.startswith(f"{key}/") for stored in summary)
    }
    for key in sorted((set(summary) | set(capture)) - reduced):
        stats = summary.get(key, {})
        info = capture.get(key, {})
        table.add_row(
            key,
            str(stats.get("count", 0)),
            _number(stats.get("first_step")),
            _number(stats.get("last_step")),
            _number(stats.get("last")),
            _number(stats.get("min")),
            _number(stats.get("max")),
            info.get("policy") or "-",
            str(info.get("skipped", 0)),
        )
    return table


def _fields(rows: dict[str, str]) -> Table:
    """Two aligned columns, name and value, without borders."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column()
    for name, value in rows.items():
        table.add_row(name, value)
    return table


def _plain(value: Any) -> str:
    """A param value for people: strings as they are, floats exactly, the rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)
    return json.dumps(_jsonable(value), ensure_ascii=False)


def _number(value: float | None) -> str:
    """A number for people: ``-`` for none, integers in full, floats to 6 digits."""
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else format(value, ".6g")


def _local_time(seconds: float | None) -> str:
    return "-" if seconds is None else datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


# -- comparison output (runs, diff) ------------------------------------------------------------


class _Column(NamedTuple):
    """A column of a comparison table: its header, its cells, whether they are numbers
    (right-aligned) and whether they may wrap over lines (else they are never cut)."""

    header: str
    cells: list[str]
    numeric: bool = False
    wrap: bool = False

    @property
    def width(self) -> int:
        """The width the column takes: its widest cell or header line; a wrapping column's
        header may fold down to its cells' width (at least :data:`_MIN_HEADER`)."""
        widest = max(map(cell_len, self.cells), default=0)
        header = max(map(cell_len, self.header.splitlines()), default=0)
        return max(widest, min(header, max(widest, _MIN_HEADER)) if self.wrap else header)


def _compact_table(columns: list[_Column], width: int) -> Table:
    """A table without vertical lines of ``columns``: the first that fit in ``width``;
    the rest are left out, named in the caption."""
    shown: list[_Column] = []
    used = -_GAP
    for column in columns:
        if shown and used + _GAP + column.width > width:
            break
        shown.append(column)
        used += _GAP + column.width
    left = [c.header.replace("\n", ":") for c in columns[len(shown) :]]
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        caption=f"not shown (too wide): {', '.join(left)}" if left else None,
        caption_justify="left",
    )
    for column in shown:
        table.add_column(
            column.header,
            justify="right" if column.numeric else "left",
            no_wrap=not column.wrap,
            overflow="fold",
        )
    for row in zip(*(c.cells for c in shown), strict=True):
        table.add_row(*row)
    return table


def _runs_table(views: list[RunView], metrics: list[Metric], width: int) -> Table:
    """Runs with ``metrics`` and the params that vary (a metric ``KEY:STAT`` headed by KEY
    over STAT); the project and the status only when they differ between runs."""
    columns = [
        _Column("id", [v.id for v in views]),
        _Column("name", [v.name for v in views], wrap=True),
    ]
    for name in ("project", "status"):
        values = [field(v, name) for v in views]
        if len(set(values)) > 1:
            columns.append(_Column(name, values, wrap=True))
    columns.append(_Column("created", [_short_time(v.created) for v in views]))
    columns += [
        _Column(m.label.replace(":", "\n"), [_number(m.of(v)) for v in views], numeric=True)
        for m in metrics
    ]
    flat = [dict(dotted_params(v.params)) for v in views]
    for path in varying_params(views):
        cells = [_param_cell(params, path) for params in flat]
        numeric = all(isinstance(p.get(path), (int, float)) for p in flat)
        columns.append(_Column(path, cells, numeric, wrap=not numeric))
    return _compact_table(columns, width)


def _runs_heading(views: list[RunView]) -> str:
    """How many runs, and the project and status when all runs share them."""
    parts = [f"{len(views)} run{'s' * (len(views) != 1)}"]
    for name in ("project", "status"):
        values = {field(v, name) for v in views}
        if len(values) == 1:
            parts.append(f"{name} {values.pop()}")
    return " · ".join(parts)


def _echo_csv(views: list[RunView], metrics: list[Metric]) -> None:
    """Runs as CSV: fields, tags (JSON), every param (``params.PATH``) and ``metrics``
    (``metrics.KEY.STAT``); times in ISO 8601 (UTC), floats exact, nothing for none."""
    paths = param_paths(views)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            *FIELDS,
            "tags",
            *(f"params.{p}" for p in paths),
            *(f"metrics.{m.key}.{m.stat}" for m in metrics),
        ]
    )
    for view in views:
        params = dict(dotted_params(view.params))
        times = {"created": view.created, "ended": view.ended}
        writer.writerow(
            [
                *(
                    _iso_time(times[name]) if name in times else _csv_cell(field(view, name))
                    for name in FIELDS
                ),
                _csv_cell(view.tags),
                *(_csv_cell(params.get(p)) for p in paths),
                *(_csv_cell(m.of(view)) for m in metrics),
            ]
        )
    click.echo(out.getvalue(), nl=False)


def _csv_cell(value: Any) -> str:
    """A CSV cell: empty for none, strings as they are, floats exactly, the rest as JSON."""
    return "" if value is None else _plain(value)


def _iso_time(seconds: float | None) -> str:
    return "" if seconds is None else datetime.fromtimestamp(seconds, timezone.utc).isoformat()


def _short_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M")


def _run_line(view: RunView) -> str:
    """A run in one line: name, id, project, status and creation time."""
    return f"{view.name} ({view.id}) · {view.project} · {view.status} · {_local_time(view.created)}"


def _param_cell(params: dict[str, Any], path: str) -> str:
    return _plain(params[path]) if path in params else "-"


def _summary_table(a: RunView, b: RunView, keys: list[str], width: int) -> Table:
    """The summaries of ``keys`` in both runs, a row per key and run."""
    rows = [
        (key if label == "A" else "", label, view.summary[key])
        for key in keys
        for label, view in (("A", a), ("B", b))
    ]
    return _compact_table(
        [
            _Column("key", [key for key, _, _ in rows], wrap=True),
            _Column("run", [label for _, label, _ in rows]),
            *(
                _Column(stat, [_number(s[stat]) for _, _, s in rows], True)
                for stat in ("count", "last", "min", "max")
            ),
        ],
        width,
    )


def _divergence_table(parted: list[Divergence], width: int) -> Table:
    """Per key: the first step where the runs' values part, with both values, or "same"."""

    def where(d: Divergence) -> str:
        if d.step is not None:
            return f"step {d.step}"
        if not d.common:
            return "no common steps"
        return "same" if d.same_steps else f"same on {d.common} common steps"

    return _compact_table(
        [
            _Column("key", [d.key for d in parted], wrap=True),
            _Column("first difference", [where(d) for d in parted]),
            _Column("A", [_number(d.a) if d.step is not None else "" for d in parted], True),
            _Column("B", [_number(d.b) if d.step is not None else "" for d in parted], True),
        ],
        width,
    )
