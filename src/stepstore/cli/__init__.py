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

import click

from .. import __version__
from .options import Group, store_option


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stepstore")
@store_option
def main(store: str | None) -> None:
    """stepstore: list, inspect, export and check recorded training runs."""


# The command modules register their commands on ``main``.
from . import comparing, exporting, importing, listing, maintenance, plotting, serving  # noqa: E402, F401
