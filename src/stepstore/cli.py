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

import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import StepstoreError
from .io import FORMATS, copy_runs, export_runs
from .query import RunView, Store
from .query import open as open_store

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
@_json_option
@_store_option
def runs_command(where: str | None, project: str | None, as_json: bool, store: str | None) -> None:
    """List runs, oldest first.

    Shows id, name, project, status, creation time, number of keys and the last values of
    the first few keys.
    """
    with _open(store) as opened:
        views = opened.runs(where=where, project=project)
        if as_json:
            _echo_json([_describe(view) for view in views])
            return
        if not views:
            click.echo("no runs match" if where or project else f"no runs in {opened.uri}")
            return
        table = Table("id", "name", "project", "status", "created", "keys", "last values")
        for view in views:
            summary = view.summary
            shown = [f"{key}={_number(s['last'])}" for key, s in summary.items()]
            if len(shown) > _SUMMARY_KEYS:
                shown = [*shown[:_SUMMARY_KEYS], "…"]
            table.add_row(
                view.id,
                view.name,
                view.project,
                view.status,
                _local_time(view.created),
                str(len(summary)),
                " ".join(shown),
            )
    _console().print(table)


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
        params = dict(_flatten(view.params))
        if params:
            console.print("params", style="bold")
            console.print(_fields({path: _plain(value) for path, value in params.items()}))
        bindings = view.capture.get("bindings", [])
        if bindings:
            console.print("capture policies", style="bold")
            console.print(_fields({b["pattern"]: b["policy"] for b in bindings}))
        console.print(_key_table(view))


@main.command("export")
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    help="csv (wide: a row per step, a column per key) or parquet (long: a row per point) "
    "[default: from the extension of PATH].",
)
@click.option(
    "-o",
    "--output",
    "path",
    required=True,
    type=click.Path(),
    metavar="PATH",
    help="File to write.",
)
@click.option(
    "-k",
    "--keys",
    multiple=True,
    metavar="KEY",
    help="A key or glob to export; repeat for more [default: every scalar key].",
)
@click.option(
    "--all-ranks",
    is_flag=True,
    help='Every rank\'s points of runs recorded with ranks="all", with a rank column '
    "[default: rank 0's].",
)
@_store_option
def export_command(
    runs: tuple[str, ...],
    fmt: str | None,
    path: str,
    keys: tuple[str, ...],
    all_ranks: bool,
    store: str | None,
) -> None:
    """Export runs' scalar series to CSV or Parquet.

    RUN is a run id or name; several runs go into one file.
    """
    if fmt is None:
        suffix = Path(path).suffix.lower()
        if suffix not in _SUFFIXES:
            raise click.UsageError(
                f"cannot tell the format from {path!r}; give --format {'|'.join(FORMATS)}"
            )
        fmt = _SUFFIXES[suffix]
    with _open(store) as opened:
        views = [opened.run(run) for run in runs]
        rows = export_runs(views, path, fmt, list(keys) or None, "all" if all_ranks else None)
    click.echo(f"wrote {rows} rows from {len(views)} run(s) to {path} ({fmt})")


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


def _missing_extra(exc: ModuleNotFoundError, extra: str) -> NoReturn:
    """Report a missing optional dependency (exit code 2), naming the extra that installs it."""
    missing = (exc.name or "").partition(".")[0]
    if missing not in _UI_MODULES:
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
    """Per key: points stored, step range, last/min/max, capture policy and points skipped."""
    summary = view.summary
    capture = view.capture.get("keys", {})
    table = Table(
        "key", "count", "first step", "last step", "last", "min", "max", "policy", "skipped"
    )
    for key in sorted(set(summary) | set(capture)):
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


def _flatten(params: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested params as ``(dotted.path, value)`` pairs, as the filter language names them."""
    for key, value in params.items():
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


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
