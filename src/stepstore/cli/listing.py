"""The ``runs`` and ``show`` commands: list runs, show one."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from typing import Any

import click
from rich.table import Table

from ..backends.base import dotted_params
from ..query import RunView
from ..query.compare import (
    FIELDS,
    Metric,
    SortKey,
    check_metrics,
    default_metrics,
    field,
    param_paths,
    varying_params,
)
from ..query.views import Event
from . import main
from .options import json_option, open_store, store_option
from .output import describe, echo_json, fields, local_time, number, plain, stdout_console
from .tables import Column, compact_table, param_cell


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
@json_option
@click.option(
    "--csv", "as_csv", is_flag=True, help="Print CSV: a row per run, every param, the metrics."
)
@store_option
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
    with open_store(store) as opened:
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
            echo_json([describe(view) for view in views])
        elif as_csv:
            _echo_csv(views, chosen)
        elif not views:
            click.echo("no runs match" if where or project else f"no runs in {opened.uri}")
        else:
            console = stdout_console()
            console.print(_runs_heading(views), style="bold", soft_wrap=True)
            console.print(_runs_table(views, chosen, console.width))


@main.command("show")
@click.argument("run")
@json_option
@store_option
def show_command(run: str, as_json: bool, store: str | None) -> None:
    """Show one run, by id or name.

    Shows its metadata, params, capture policies, per key the points stored and skipped,
    the step range and the last, min and max values, and the run's events (a flight
    recorder's trigger firing).
    """
    with open_store(store) as opened:
        view = opened.run(run)
        if as_json:
            echo_json(describe(view, full=True))
            return
        console = stdout_console()
        console.print(f"run {view.name} ({view.id})", style="bold")
        console.print(fields(_metadata(view)))
        params = dict(dotted_params(view.params))
        if params:
            console.print("params", style="bold")
            console.print(fields({path: plain(value) for path, value in params.items()}))
        bindings = view.capture.get("bindings", [])
        if bindings:
            console.print("capture policies", style="bold")
            console.print(fields({b["pattern"]: b["policy"] for b in bindings}))
        reductions = {r["pattern"]: r["how"] or "raw" for r in view.capture.get("reductions", [])}
        if reductions:
            console.print("reductions (tensors stored as)", style="bold")
            console.print(fields(reductions))
        console.print(_key_table(view))
        events = view.events()
        if events:
            console.print(_event_table(events))


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
        "created": local_time(view.created),
        "ended": local_time(view.ended),
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
            number(stats.get("first_step")),
            number(stats.get("last_step")),
            number(stats.get("last")),
            number(stats.get("min")),
            number(stats.get("max")),
            info.get("policy") or "-",
            str(info.get("skipped", 0)),
        )
    return table


def _event_table(events: list[Event]) -> Table:
    """The run's events, by time: step, trigger, key, reason, rank and time."""
    table = Table("step", "trigger", "key", "reason", "rank", "time", title="events")
    for event in events:
        table.add_row(
            str(event.step),
            event.trigger,
            event.key or "-",
            event.reason,
            str(event.rank),
            local_time(event.time),
        )
    return table


def _runs_table(views: list[RunView], metrics: list[Metric], width: int) -> Table:
    """Runs with ``metrics`` and the params that vary (a metric ``KEY:STAT`` headed by KEY
    over STAT); the project and the status only when they differ between runs."""
    columns = [
        Column("id", [v.id for v in views]),
        Column("name", [v.name for v in views], wrap=True),
    ]
    for name in ("project", "status"):
        values = [field(v, name) for v in views]
        if len(set(values)) > 1:
            columns.append(Column(name, values, wrap=True))
    columns.append(Column("created", [_short_time(v.created) for v in views]))
    columns += [
        Column(m.label.replace(":", "\n"), [number(m.of(v)) for v in views], numeric=True)
        for m in metrics
    ]
    flat = [dict(dotted_params(v.params)) for v in views]
    for path in varying_params(views):
        cells = [param_cell(params, path) for params in flat]
        numeric = all(isinstance(p.get(path), (int, float)) for p in flat)
        columns.append(Column(path, cells, numeric, wrap=not numeric))
    return compact_table(columns, width)


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
    return "" if value is None else plain(value)


def _iso_time(seconds: float | None) -> str:
    return "" if seconds is None else datetime.fromtimestamp(seconds, timezone.utc).isoformat()


def _short_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M")
