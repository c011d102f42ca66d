"""The ``migrate`` and ``check`` commands: the store's schema and integrity."""

from __future__ import annotations

from typing import Any

import click

from . import main
from .options import json_option, open_store, store_option, store_uri
from .output import echo_json


@main.command("migrate")
@store_option
def migrate_command(store: str | None) -> None:
    """Create the store if needed and bring its schema to this version of stepstore.

    Opening a store for recording migrates it too; this command does it ahead of time (a
    server store shared by a team, for instance). A store written by a newer stepstore is
    refused.
    """
    from ..backends import open_backend
    from ..config import load_config

    uri = load_config(store=store_uri(store)).store
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
@json_option
@store_option
def check_command(repair: bool, as_json: bool, store: str | None) -> None:
    """Verify the store's integrity.

    Checks the database and every chunk's checksum; lists what is damaged and exits 1 if
    anything is. With ``--repair`` it first repairs what it can (runs still being recorded
    are left alone) and lists the repairs; the exit code then says whether anything is still
    damaged.
    """
    from ..repair import repair as repair_store

    with open_store(store) as opened:
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
        echo_json(document)
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
