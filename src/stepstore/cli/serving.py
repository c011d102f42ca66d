"""The ``ui``, ``report`` and ``demo`` commands: the dashboard, HTML reports, a demo run."""

from __future__ import annotations

import click

from . import main
from .options import missing_extra, open_store, store_option, store_uri

#: Python modules the demo needs, by the name a failed import reports.
_DEMO_MODULES = ("torch", "sklearn")


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
@store_option
def ui_command(
    host: str, port: int, token: str | None, open_browser: bool, store: str | None
) -> None:
    """Serve the dashboard: runs, charts, images, tensors and records in a browser.

    Read-only. Prints the address to open (with the token, when there is one); Ctrl-C
    stops it. Needs the ui extras: pip install 'stepstore[ui]'.
    """
    try:
        from ..ui import serve
    except ModuleNotFoundError as exc:
        missing_extra(exc, "ui")
    with open_store(store) as opened:
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
@store_option
def report_command(runs: tuple[str, ...], path: str, store: str | None) -> None:
    """Write a self-contained HTML report of runs (charts, images, tensors, records).

    RUN is a run id or name. The file needs no server and no network: attach it to a paper
    or a ticket. Needs the ui extras: pip install 'stepstore[ui]'.
    """
    try:
        from ..ui.report import write_report
    except ModuleNotFoundError as exc:
        missing_extra(exc, "ui")
    with open_store(store) as opened:
        written = write_report(opened, list(runs), path)
    click.echo(f"wrote {written} ({len(runs)} run(s))")


@main.command("demo")
@click.option(
    "--epochs", type=click.IntRange(min=1), default=4, show_default=True, help="Epochs to train."
)
@click.option(
    "--blowup",
    is_flag=True,
    help="Raise the learning rate until the loss is NaN and show the steps the flight "
    "recorder kept before it (--epochs does not apply).",
)
@store_option
def demo_command(epochs: int, blowup: bool, store: str | None) -> None:
    """Train a small network and record it.

    Needs the demo extras: pip install 'stepstore[demo]'.
    """
    uri = store_uri(store)
    try:
        from .. import demo

        run_id = demo.blowup(store=uri) if blowup else demo.main(store=uri, epochs=epochs)
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
