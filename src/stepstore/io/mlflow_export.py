"""Export runs to an MLflow tracking store (``stepstore export RUN... --format mlflow -o URI``).

Written with MLflow's own ``MlflowClient`` (``log_batch``, 1,000 points a call), so any store
MLflow writes works: a file store, a SQL store, a tracking server. The mapping is the reverse
of :mod:`stepstore.io.mlflow_import`:

- project -> experiment (created if missing), name -> run name, created/ended -> start/end
  time (ms), status -> MLflow status (a run imported from MLflow gets its MLflow status
  back; else finished/failed/killed -> FINISHED/FAILED/KILLED, crashed and incomplete ->
  FAILED, running -> RUNNING);
- params -> params (nested ones by dotted path; a float written as ``repr``, a string as it
  is, lists and dicts as JSON); tags ``key=value`` / ``key`` -> tags (value ``""`` for
  ``key``); a run imported from MLflow also gets back MLflow's own ``mlflow.*`` tags;
- every scalar key -> a metric with every point: step, timestamp (the point's time, in ms),
  value bit for bit (a SQL store keeps infinities as ±1.797e308, as MLflow does);
- artifacts -> artifacts at their names (``plots/loss.png`` in a folder ``plots``).

Tensors, images and records have no MLflow counterpart and are not exported. Each exported
run carries the tag ``stepstore.run_id``; exporting a run again into the same experiment
skips it. A run MLflow refuses (a key it does not accept) is deleted again, so nothing is
left half-exported, and the error names it.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import dotted_params
from ..errors import InvalidArgumentError, StoreError
from ..query.views import RunView
from .mlflow_source import SQL_SCHEMES, require, with_driver

#: stepstore run status -> MLflow run status (runs not imported from MLflow).
STATUSES = {
    "finished": "FINISHED",
    "failed": "FAILED",
    "killed": "KILLED",
    "crashed": "FAILED",
    "incomplete": "FAILED",
    "running": "RUNNING",
}
#: Tag naming the stepstore run an MLflow run was exported from.
RUN_ID_TAG = "stepstore.run_id"
_METRICS_PER_BATCH = 1000
_PARAMS_PER_BATCH = 100


@dataclass(frozen=True)
class ExportResult:
    """One exported run: its MLflow run id, and ``exported`` or ``skipped`` (it was there)."""

    run_id: str
    mlflow_run_id: str
    action: str
    points: int


def param_text(value: Any) -> str:
    """A stepstore param value as MLflow param text (the inverse of ``param_value``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return repr(value) if isinstance(value, float) else str(value)


def mlflow_tags(view: RunView) -> dict[str, str]:
    """The MLflow tags of ``view``: MLflow's own kept from an import, then its tags."""
    origin = view.env.get("mlflow", {}) if isinstance(view.env, dict) else {}
    tags = {k: v for k, v in origin.get("tags", {}).items() if k.startswith("mlflow.")}
    for tag in view.tags:
        key, _, value = tag.partition("=")
        tags[key] = value
    tags["mlflow.runName"] = view.name
    tags[RUN_ID_TAG] = view.id
    return tags


def _status(view: RunView) -> str:
    origin = view.env.get("mlflow", {}) if isinstance(view.env, dict) else {}
    if view.writer.get("imported_from") == "mlflow" and "status" in origin:
        return str(origin["status"])
    return STATUSES[view.status]


def _ms(seconds: float) -> int:
    return int(np.floor_divide(round(seconds * 1e6), 1000))


def tracking_uri(uri: str) -> str:
    """``uri`` as ``MlflowClient`` takes it: a SQL URI with a driver that is installed."""
    scheme = uri.partition("://")[0].partition("+")[0].lower()
    return with_driver(uri) if scheme in SQL_SCHEMES else uri


def export_mlflow(
    views: Sequence[RunView],
    uri: str,
    on_run: Callable[[RunView, ExportResult], None] | None = None,
) -> list[ExportResult]:
    """Export ``views`` to the MLflow tracking store ``uri``; see the module docstring."""
    tracking = require("mlflow.tracking")
    exceptions = require("mlflow.exceptions")
    try:
        client = tracking.MlflowClient(tracking_uri=tracking_uri(uri))
    except exceptions.MlflowException as exc:
        raise StoreError(f"MLflow tracking store {uri}: {exc.message}") from None
    results = []
    for view in views:
        result = _export_run(client, exceptions.MlflowException, view, uri)
        results.append(result)
        if on_run is not None:
            on_run(view, result)
    return results


def _experiment(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    return str(client.create_experiment(name))


def _export_run(client: Any, failure: type[Exception], view: RunView, uri: str) -> ExportResult:
    try:
        experiment = _experiment(client, view.project)
        done = client.search_runs(
            [experiment], filter_string=f"tags.`{RUN_ID_TAG}` = '{view.id}'", max_results=1
        )
    except failure as exc:
        raise StoreError(f"MLflow tracking store {uri}: {exc}") from None
    if done:
        return ExportResult(view.id, done[0].info.run_id, "skipped", 0)
    entities = require("mlflow.entities")
    run = client.create_run(
        experiment, start_time=_ms(view.created), tags=mlflow_tags(view), run_name=view.name
    )
    run_id = run.info.run_id
    try:
        params = [
            entities.Param(path, param_text(value)) for path, value in dotted_params(view.params)
        ]
        for start in range(0, len(params), _PARAMS_PER_BATCH):
            client.log_batch(run_id, params=params[start : start + _PARAMS_PER_BATCH])
        points = 0
        for batch in _metric_batches(view, entities.Metric):
            client.log_batch(run_id, metrics=batch)
            points += len(batch)
        _log_artifacts(client, run_id, view)
        ended = None if view.ended is None else _ms(view.ended)
        status = _status(view)
        if status == "RUNNING":
            client.update_run(run_id, status=status)
        else:
            client.set_terminated(run_id, status=status, end_time=ended)
    except (failure, InvalidArgumentError) as exc:
        client.delete_run(run_id)
        message = getattr(exc, "message", str(exc))
        raise InvalidArgumentError(
            f"run {view.name} ({view.id}): MLflow refused it ({message}); nothing exported for it"
        ) from None
    return ExportResult(view.id, run_id, "exported", points)


def _metric_batches(view: RunView, metric: type) -> Iterator[list[Any]]:
    """Every scalar point of ``view`` as MLflow metrics, in batches MLflow accepts."""
    batch: list[Any] = []
    for key in view.keys("scalar"):
        columns = view.columns(key)
        stamps = np.floor_divide(columns.time, 1000).tolist()
        for step, stamp, value in zip(
            columns.step.tolist(), stamps, columns.value.tolist(), strict=True
        ):
            batch.append(metric(key, value, stamp, step))
            if len(batch) == _METRICS_PER_BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


def _log_artifacts(client: Any, run_id: str, view: RunView) -> None:
    """Write ``view``'s artifacts into a folder at their names and log it as the run's."""
    names = view.artifacts()
    if not names:
        return
    with tempfile.TemporaryDirectory(prefix="stepstore-mlflow-") as folder:
        root = Path(folder).resolve()
        for name in names:
            path = (root / name).resolve()
            if root not in path.parents:
                raise InvalidArgumentError(f"artifact {name!r}: not a path inside the run")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(view.artifact(name))
        client.log_artifacts(run_id, str(root))
