"""What the commands share: the command group class, ``--store`` and ``--json``, opening the
store, and reporting a missing optional dependency."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from ..errors import StepstoreError
from ..query import Store
from ..query import open as open_uri

_Command = TypeVar("_Command", bound=Callable[..., Any])

#: Python modules the dashboard needs (the ui extra).
_UI_MODULES = ("starlette", "uvicorn")


class Group(click.Group):
    """A command group that reports a :class:`StepstoreError` as ``error: ...``, exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StepstoreError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)


def store_option(command: _Command) -> _Command:
    """Add ``--store URI`` to ``command``."""
    return click.option(
        "--store",
        metavar="URI",
        default=None,
        help="Store path or URI [default: $STEPSTORE_URI or ./stepstore].",
    )(command)


def json_option(command: _Command) -> _Command:
    """Add ``--json`` (the ``as_json`` flag) to ``command``."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print JSON (and nothing else) for scripts."
    )(command)


def store_uri(store: str | None) -> str | None:
    """The store given to the command, else the one given before it, else None (default)."""
    if store is not None:
        return store
    root: str | None = click.get_current_context().find_root().params.get("store")
    return root


def open_store(store: str | None) -> Store:
    """Open the store given to the command (see :func:`store_uri`)."""
    return open_uri(store_uri(store))


def missing_extra(
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
