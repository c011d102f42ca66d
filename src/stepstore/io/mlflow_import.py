"""Import MLflow runs into a stepstore store (``stepstore import mlflow TRACKING_URI``).

Mapping, per MLflow run (read by :mod:`stepstore.io.mlflow_source`):

- the run keeps its MLflow run id as its stepstore id; experiment -> project, run name ->
  name, start/end time -> created/ended, status FINISHED/FAILED/KILLED -> finished/failed/
  killed (RUNNING and SCHEDULED -> incomplete);
- params -> params, each a number when the text is exactly how Python writes that number
  (``"0.001"``, ``"64"``), else the text (``"1e-3"``, ``"adam"``);
- tags -> tags ``"key=value"`` (``"key"`` for an empty value), except MLflow's own
  ``mlflow.*`` tags; every tag, MLflow's included, is kept verbatim in ``env["mlflow"]``
  with the experiment id, the user and the source URI; ``mlflow.source.git.commit`` ->
  ``git_commit``;
- each metric -> a scalar key with every point: step, value bit for bit (NaN and infinities
  kept, as MLflow returns them: a SQL store holds infinities as ±1.797e308), and timestamp
  (ms, as the point's time). A key's points are ordered by step, then timestamp, then the
  store's order, so its steps only go forward as stepstore's readers expect (MLflow allows
  any order, and several points at one step: all are kept, in that order). MLflow steps
  below 0 have no stepstore step: those points are skipped and the run is ``incomplete``,
  with what was skipped in its ``writer`` field and in the capture counts of ``show``;
- artifacts -> artifacts named by their path in the run (``plots/loss.png``).

Idempotent: a run already imported whose MLflow run has not changed since is skipped; one
that changed (it was still running) is brought up to date (metrics, artifacts, status, end
time; params and tags stay as first imported). A run is written whole or left
``incomplete``: its status becomes the final one in the same transaction as its last points.
"""

from __future__ import annotations

import hashlib
import math
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import ArrayBatch, ArtifactRow, Backend, RunRecord
from ..errors import NotFoundError, StoreError
from ..series.chunk import NO_EPOCH, Columns, make_chunk
from ..series.tail import Summary
from ..tensors.location import ArrayLocation
from ..tensors.paths import artifact_path
from .mlflow_source import History, MlflowRun, Source, copy_artifacts

#: Points per chunk of an imported series (the default of recorded runs).
CHUNK_POINTS = 8192
#: MLflow run status -> stepstore run status.
STATUSES = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}
_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_EXACT_INT = 2**53


@dataclass(frozen=True)
class ImportResult:
    """What happened to one MLflow run: ``imported``, ``updated`` or ``skipped`` (up to
    date), with the points written and what could not be imported."""

    run_id: str
    name: str
    project: str
    action: str
    points: int
    skipped: tuple[str, ...] = ()


def param_value(text: str) -> Any:
    """An MLflow param (text) as a stepstore param: an int or float when ``text`` is exactly
    how Python writes that number, so writing it back gives the same text; else ``text``."""
    if _INT.fullmatch(text):
        number = int(text)
        return number if abs(number) < _EXACT_INT else text
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) and repr(value) == text else text


def tag_list(tags: dict[str, str]) -> list[str]:
    """MLflow tags as stepstore tags: ``key=value`` (``key`` alone for an empty value),
    leaving out MLflow's own ``mlflow.*`` tags."""
    return [
        key if value == "" else f"{key}={value}"
        for key, value in sorted(tags.items())
        if not key.startswith("mlflow.")
    ]


def import_run(source: Source, run: MlflowRun, backend: Backend) -> ImportResult:
    """Import one MLflow run into ``backend``; see the module docstring."""
    fingerprint = source.fingerprint(run)
    try:
        existing: RunRecord | None = backend.get_run(run.id)
    except NotFoundError:
        existing = None
    name = run.name or run.id
    if existing is not None:
        if existing.writer.get("imported_from") != "mlflow":
            raise StoreError(
                f"MLflow run {run.id}: the store already has a run with that id that was not "
                "imported from MLflow; nothing imported"
            )
        if existing.writer.get("fingerprint") == fingerprint:
            return ImportResult(run.id, existing.name, existing.project, "skipped", 0)
    started = (run.start_time if run.start_time is not None else time.time() * 1000) / 1000
    if existing is None:
        existing = _record(run, source.uri, started)
        backend.create_run(existing)
    location = backend.array_location(existing.array_store)
    artifacts = _artifacts(run, location, started)
    if artifacts:
        backend.commit_arrays(ArrayBatch(artifacts=artifacts))
    points, skipped, capture = 0, [], {}
    histories = source.histories(run)
    for key, history in sorted(histories.items()):
        written, dropped = _write_series(backend, run.id, key, history)
        points += written
        capture[key] = {"policy": None, "recorded": written, "skipped": dropped}
        if dropped:
            skipped.append(
                f"metric {key!r}: {dropped} point(s) at negative steps (stepstore steps are >= 0)"
            )
    status = STATUSES.get(run.status, "incomplete") if not skipped else "incomplete"
    ended = None if run.end_time is None else run.end_time / 1000
    writer: dict[str, Any] = {"imported_from": "mlflow", "fingerprint": fingerprint}
    if skipped:
        writer["skipped"] = "; ".join(skipped)
    fields = {
        "status": status,
        "ended": ended,
        "heartbeat": ended or started,
        "capture": {"keys": capture},
        "writer": writer,
    }
    backend.commit(run.id, [], [], fields)  # the status goes last: the run is now whole
    action = "imported" if existing.writer.get("fingerprint") is None else "updated"
    return ImportResult(run.id, name, run.experiment, action, points, tuple(skipped))


def _record(run: MlflowRun, uri: str, started: float) -> RunRecord:
    """The stepstore run row of ``run``, ``incomplete`` until its points are in."""
    return RunRecord(
        id=run.id,
        project=run.experiment,
        name=run.name or run.id,
        status="incomplete",
        created=started,
        heartbeat=started,
        git_commit=run.tags.get("mlflow.source.git.commit"),
        params={key: param_value(value) for key, value in run.params.items()},
        tags=tag_list(run.tags),
        env={
            "mlflow": {
                "tracking_uri": uri,
                "run_id": run.id,
                "experiment_id": run.experiment_id,
                "status": run.status,
                "user": run.tags.get("mlflow.user"),
                "tags": run.tags,
            }
        },
        writer={"imported_from": "mlflow", "state": "importing"},
    )


def _write_series(backend: Backend, run_id: str, key: str, history: History) -> tuple[int, int]:
    """Write one metric's points as a scalar series (replacing an earlier import's chunks);
    returns the points written and those skipped (negative steps)."""
    step, stamp, value = history
    rise = np.diff(step)
    if not ((rise > 0) | ((rise == 0) & (np.diff(stamp) >= 0))).all():
        order = np.lexsort((stamp, step))  # stable: ties keep the store's order
        step, stamp, value = step[order], stamp[order], value[order]
    keep = step >= 0
    dropped = int(len(step) - keep.sum())
    if dropped:
        step, stamp, value = step[keep], stamp[keep], value[keep]
    if not len(step):
        return 0, dropped
    series_id = backend.ensure_series(run_id, key, "scalar")
    epoch = np.full(len(step), NO_EPOCH, np.int64)
    micros = stamp * 1000
    summary = Summary()
    chunks = []
    for seq, start in enumerate(range(0, len(step), CHUNK_POINTS)):
        part = slice(start, start + CHUNK_POINTS)
        columns = Columns(step[part], epoch[part], micros[part], value[part])
        summary.update(columns)
        chunks.append((series_id, make_chunk(seq, columns, sealed=True)))
    backend.commit(run_id, chunks, [(series_id, summary)], {})
    return len(step), dropped


def _artifacts(run: MlflowRun, location: ArrayLocation, created: float) -> list[ArtifactRow]:
    """Copy ``run``'s artifacts into the run's array location; their index rows."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="stepstore-mlflow-") as folder:
        for name in copy_artifacts(run, Path(folder)):
            data = (Path(folder) / name).read_bytes()
            path = artifact_path(run.id, name)
            location.write(path, data)
            digest = hashlib.sha256(data).hexdigest()
            rows.append(ArtifactRow(run.id, name, path, len(data), digest, created))
    return rows


def import_mlflow(
    source: Source,
    backend: Backend,
    runs: Sequence[MlflowRun] | None = None,
    on_run: Callable[[MlflowRun, ImportResult], None] | None = None,
) -> list[ImportResult]:
    """Import ``runs`` (by default every live run of ``source``) into ``backend``, calling
    ``on_run`` after each; see the module docstring."""
    results = []
    for run in source.runs() if runs is None else runs:
        result = import_run(source, run, backend)
        results.append(result)
        if on_run is not None:
            on_run(run, result)
    return results
