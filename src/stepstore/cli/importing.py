"""The ``import`` commands: runs in from TensorBoard event files and MLflow stores."""

from __future__ import annotations

import click
from rich.console import Console

from . import main
from .options import Group, open_store, store_option, store_uri


@main.group("import", cls=Group)
def import_group() -> None:
    """Import runs from other tools' logs (TensorBoard event files, MLflow stores)."""


@import_group.command("tensorboard")
@click.argument("logdir", type=click.Path(), metavar="LOGDIR")
@click.option("--project", metavar="P", help="Project of the runs [default: LOGDIR's name].")
@store_option
def import_tensorboard_command(logdir: str, project: str | None, store: str | None) -> None:
    """Import TensorBoard event files: a run per directory under LOGDIR that holds them.

    Runs are named by their directory's path relative to LOGDIR. Importing again skips the
    runs already imported; a damaged file's readable part is imported, its run marked
    incomplete, and what was skipped is listed. Needs pip install 'stepstore[compat]'.
    """
    from rich.progress import Progress

    from ..backends import open_backend
    from ..config import load_config
    from ..errors import MissingDependencyError
    from ..io.tensorboard_import import import_tensorboard, total_bytes

    open_backend(load_config(store=store_uri(store)).store, create=True).close()
    with open_store(store) as opened:
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
@store_option
def import_mlflow_command(uri: str, store: str | None) -> None:
    """Import the runs of an MLflow tracking store: a file store (a path to mlruns or
    file:///...) or a SQL store (sqlite:///mlflow.db, postgresql://...).

    Experiments become projects; each run keeps its MLflow run id, params, tags, every
    metric point (step, timestamp, value) and its artifacts. Importing again skips runs
    already imported and unchanged. Needs pip install 'stepstore[compat]'.
    """
    from rich.progress import Progress

    from ..backends import open_backend
    from ..config import load_config
    from ..errors import MissingDependencyError
    from ..io.mlflow_import import import_mlflow
    from ..io.mlflow_source import open_source

    try:
        source = open_source(uri)
    except MissingDependencyError as exc:
        click.echo(f"error: {exc}", err=True)
        click.get_current_context().exit(2)
    try:
        runs = source.runs()
        open_backend(load_config(store=store_uri(store)).store, create=True).close()
        with open_store(store) as opened, Progress(console=Console(stderr=True)) as bar:
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
