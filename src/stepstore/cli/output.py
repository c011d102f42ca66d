"""Output for people and for scripts: the console, JSON, and values and runs as text."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..query import RunView
from ..values import text_nonfinite

#: Line width of tables when stdout is not a terminal.
_PIPED_WIDTH = 200


def stdout_console() -> Console:
    """A console on the current stdout that prints text as given (no markup, no highlighting);
    fitted to a terminal, and wide enough for whole table cells when piped."""
    console = Console(markup=False, highlight=False)
    if not console.is_terminal:
        console.width = _PIPED_WIDTH
    return console


def echo_json(data: Any) -> None:
    """Print ``data`` as JSON, non-finite floats as strings (see :func:`text_nonfinite`)."""
    click.echo(json.dumps(text_nonfinite(data), indent=2, ensure_ascii=False, allow_nan=False))


def describe(view: RunView, full: bool = False) -> dict[str, Any]:
    """A run as a JSON-ready dict; ``full`` adds host, environment, capture, writer, ranks
    and events."""
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
            events=[event._asdict() for event in view.events()],
        )
    return data


def fields(rows: dict[str, str]) -> Table:
    """Two aligned columns, name and value, without borders."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column()
    for name, value in rows.items():
        table.add_row(name, value)
    return table


def plain(value: Any) -> str:
    """A param value for people: strings as they are, floats exactly, the rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)
    return json.dumps(text_nonfinite(value), ensure_ascii=False)


def number(value: float | None) -> str:
    """A number for people: ``-`` for none, integers in full, floats to 6 digits."""
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else format(value, ".6g")


def local_time(seconds: float | None) -> str:
    """A time for people, to the second in local time; ``-`` for none."""
    return "-" if seconds is None else datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")
