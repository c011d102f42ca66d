"""Routes of runs: the list (with the filter language) and one run with its keys."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from starlette.datastructures import QueryParams

from ..query import RunView, Store
from ..query.runs_frame import duration, scalar_summary
from . import params

#: Kinds of series, as ``RunView.keys`` names them, and the names the API lists them by.
KINDS = {"scalar": "scalars", "tensor": "tensors", "image": "images", "record": "records"}


def iso(seconds: float | None) -> str | None:
    """Unix seconds as ISO 8601 in UTC to the millisecond (``2026-12-02T06:30:00.123Z``)."""
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def describe(view: RunView, now: float) -> dict[str, Any]:
    """A run as the API lists it; ``now`` (Unix seconds) ends a live run's duration."""
    return {
        "id": view.id,
        "name": view.name,
        "project": view.project,
        "status": view.status,
        "live": view.status == "running",  # a running run whose heartbeat stopped: crashed
        "created": iso(view.created),
        "ended": iso(view.ended),
        "duration": duration(view, now),
        "params": view.params,
        "tags": view.tags,
        "summary": scalar_summary(view),
    }


def list_runs(store: Store, query: QueryParams) -> dict[str, Any]:
    """``GET /api/runs?where=EXPR&project=P``: the matching runs, oldest first."""
    where = params.text(query, "where")
    project = params.text(query, "project")
    views = store.runs(where=where or None, project=project, with_keys=True)
    now = time.time()
    return {"runs": [describe(view, now) for view in views]}


def one_run(store: Store, query: QueryParams, run: str) -> dict[str, Any]:
    """``GET /api/runs/{id}``: one run (by id or unique name) with its keys by kind and its
    events (time in Unix seconds, as the scalar series' time column)."""
    view = store.run(run)
    data = describe(view, time.time())
    data["keys"] = {name: sorted(view.keys(kind)) for kind, name in KINDS.items()}
    data["meta"] = {"host": view.host, "pid": view.pid, "git_commit": view.git_commit}
    data["events"] = [event._asdict() for event in view.events()]
    return data
