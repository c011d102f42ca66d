"""The ``plot`` command: runs' scalars or a tensor's histograms to an image."""

from __future__ import annotations

from pathlib import Path

import click

from . import main
from .options import missing_extra, open_store, store_option

#: Python modules plots need (the plot extra).
_PLOT_MODULES = ("matplotlib",)


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
@store_option
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
        missing_extra(exc, "plot", _PLOT_MODULES)
    from .. import plot

    with open_store(store) as opened:
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
