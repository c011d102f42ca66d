"""The ``diff`` command: compare two runs."""

from __future__ import annotations

import dataclasses
import fnmatch

import click
from rich.table import Table

from ..backends.base import dotted_params
from ..query import RunView
from ..query.compare import Divergence, diverge, varying_params
from . import main
from .options import json_option, open_store, store_option
from .output import describe, echo_json, fields, local_time, number, stdout_console
from .tables import Column, compact_table, param_cell


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
@json_option
@store_option
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
    with open_store(store) as opened:
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
        echo_json(
            {
                "a": describe(a),
                "b": describe(b),
                "params": {p: [params_a.get(p), params_b.get(p)] for p in differing},
                "only_a": only["a"],
                "only_b": only["b"],
                "series": [dataclasses.asdict(d) for d in parted],
            }
        )
        return
    console = stdout_console()
    width = console.width
    console.print(fields({label: _run_line(view) for label, view in (("A", a), ("B", b))}))
    if differing:
        console.print("params that differ", style="bold")
        console.print(
            compact_table(
                [
                    Column("param", differing, wrap=True),
                    Column("A", [param_cell(params_a, p) for p in differing], wrap=True),
                    Column("B", [param_cell(params_b, p) for p in differing], wrap=True),
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


def _run_line(view: RunView) -> str:
    """A run in one line: name, id, project, status and creation time."""
    return f"{view.name} ({view.id}) · {view.project} · {view.status} · {local_time(view.created)}"


def _summary_table(a: RunView, b: RunView, keys: list[str], width: int) -> Table:
    """The summaries of ``keys`` in both runs, a row per key and run."""
    rows = [
        (key if label == "A" else "", label, view.summary[key])
        for key in keys
        for label, view in (("A", a), ("B", b))
    ]
    return compact_table(
        [
            Column("key", [key for key, _, _ in rows], wrap=True),
            Column("run", [label for _, label, _ in rows]),
            *(
                Column(stat, [number(s[stat]) for _, _, s in rows], True)
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

    return compact_table(
        [
            Column("key", [d.key for d in parted], wrap=True),
            Column("first difference", [where(d) for d in parted]),
            Column("A", [number(d.a) if d.step is not None else "" for d in parted], True),
            Column("B", [number(d.b) if d.step is not None else "" for d in parted], True),
        ],
        width,
    )
