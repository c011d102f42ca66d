"""MLflow's fluent logging API, recording into stepstore runs::

    import stepstore.compat.mlflow as mlflow                # was: import mlflow

How it maps:

- ``set_experiment(name)``: the project of the runs started next (MLflow's ``Default``, or
  ``$MLFLOW_EXPERIMENT_NAME``, before any); an ``experiment_id`` is a project name too.
- ``start_run(run_name=, tags=, nested=, description=, log_system_metrics=)``: a run, also
  a context manager (``failed`` on an exception, as MLflow's ``FAILED``). The stepstore
  run is created at the first metric, artifact, ``end_run`` or ``info.run_id``, so that
  params and tags given before it become its params and its tags (``key=value``); ones
  given later are stored as the records ``params`` and ``tags``. ``start_run(run_id=ID)``
  continues a stepstore run. A log call without an active run starts one, as in MLflow; a
  run still active at exit is created then and ends ``incomplete``.
- ``log_param(s)``: params (values kept as given, not turned into strings); changing one
  raises, as in MLflow. ``set_tag(s)``: tags ``key=value``; values are strings, as there.
- ``log_metric(s)(..., step=None, timestamp=None)``: scalar series at ``step`` (0 when
  omitted, as in MLflow) with ``timestamp`` (ms) as the wall time; a key may take several
  values at one step.
- ``log_artifact``, ``log_artifacts``, ``log_dict`` (JSON, or YAML for ``.yaml``/``.yml``),
  ``log_text``, ``log_figure``: artifacts with MLflow's bytes. Stepstore artifacts are
  files by name: an ``artifact_path`` folder or a folder in ``artifact_file`` is refused.
- ``end_run(status)``: ``FINISHED`` -> ``finished``, ``FAILED`` -> ``failed``,
  ``KILLED`` -> ``killed``.

Runs go to ``store=`` of ``start_run`` (default as :func:`stepstore.init`:
``$STEPSTORE_URI`` or ``./stepstore``); ``set_tracking_uri`` is refused, since MLflow's
tracking URIs are not stepstore stores.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import (
    InvalidArgumentError,
    MissingDependencyError,
    RunStateError,
)
from ..integrations.adapter import plain
from ..query import open as open_store
from ..recording.run import Run
from ..recording.start import init
from . import step_of, unsupported

#: MLflow's run statuses at ``end_run`` and the stepstore statuses they become.
_STATUSES = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}
#: The record keys of params and tags given once the run exists.
PARAMS_RECORD, TAGS_RECORD = "params", "tags"

_experiment: str | None = None
_active: list[ActiveRun] = []
_exit_hook: list[bool] = []  # holds True once the exit hook is registered


@dataclass(frozen=True)
class Experiment:
    """What ``set_experiment`` returns: the project, under MLflow's two names for it."""

    experiment_id: str
    name: str


class RunInfo:
    """``active_run().info``: the run's id, name, experiment (project) and status."""

    def __init__(self, active: ActiveRun) -> None:
        self._active = active

    @property
    def run_id(self) -> str:
        """The stepstore run id (creates the run if it does not exist yet)."""
        return self._active.run.id

    @property
    def run_name(self) -> str | None:
        """The run's name (generated when the run is created, if none was given)."""
        started = self._active.started
        return started.name if started is not None else self._active.name

    @property
    def experiment_id(self) -> str:
        """The project."""
        return self._active.project

    @property
    def status(self) -> str:
        """``RUNNING``, or the status the run ended with, in MLflow's words."""
        return self._active.status


class ActiveRun:
    """A run started by :func:`start_run`; ``with start_run() as run:`` ends it."""

    def __init__(
        self,
        project: str,
        name: str | None,
        tags: Mapping[str, Any],
        store: str | os.PathLike[str] | None,
        system: bool,
        run: Run | None = None,
    ) -> None:
        self.project = project
        self.name = name
        self.status = "RUNNING"
        self.info = RunInfo(self)
        self._store = store
        self._system = system
        self._params: dict[str, Any] = {}
        self._pending_params: dict[str, Any] = {}
        self._pending_tags = {str(k): str(v) for k, v in tags.items()}
        self._run = run

    def __repr__(self) -> str:
        return f"<ActiveRun {self.name or '(unnamed)'} project={self.project!r} {self.status}>"

    @property
    def started(self) -> Run | None:
        """The stepstore run if it has been created, else None."""
        return self._run

    @property
    def run(self) -> Run:
        """The stepstore run, created now (with the params and tags given so far) if
        needed."""
        if self._run is None:
            self._run = init(
                self.project,
                name=self.name,
                params=self._pending_params,
                tags=[f"{k}={v}" for k, v in self._pending_tags.items()],
                store=self._store,
                allow_rewind=True,
                system=self._system,
            )
        return self._run

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record params; a param already logged with another value raises."""
        values = {str(key): plain(value) for key, value in params.items()}
        for key, value in values.items():
            if key in self._params and str(self._params[key]) != str(value):
                raise InvalidArgumentError(
                    f"log_param: param {key!r} was logged as {self._params[key]!r}; MLflow "
                    f"params cannot change (got {value!r})"
                )
        new = {k: v for k, v in values.items() if k not in self._params}
        self._params.update(new)
        if self._run is None:
            self._pending_params.update(new)
        elif new:
            self._run.log_record(PARAMS_RECORD, new)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Record tags (values as strings)."""
        values = {str(k): str(v) for k, v in tags.items()}
        if self._run is None:
            self._pending_tags.update(values)
        elif values:
            self._run.log_record(TAGS_RECORD, values)

    def end(self, status: str) -> None:
        """Finish the stepstore run (creating it if nothing created it yet)."""
        self.run.finish(_STATUSES[status])
        self.status = status

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, tb: Any) -> None:
        if any(active is self for active in _active):
            while _active[-1] is not self:  # nested runs left open end with it
                end_run("FINISHED" if kind is None else "FAILED")
            end_run("FINISHED" if kind is None else "FAILED")


# -- experiments and runs ---------------------------------------------------------------


def set_experiment(
    experiment_name: str | None = None, experiment_id: str | None = None
) -> Experiment:
    """Make the project ``experiment_name`` (or ``experiment_id``) the one runs start in."""
    global _experiment
    name = experiment_name if experiment_name is not None else experiment_id
    if not isinstance(name, str) or not name.strip():
        raise InvalidArgumentError(
            f"set_experiment: experiment_name={experiment_name!r}, experiment_id="
            f"{experiment_id!r}: expected a non-empty name (the stepstore project)"
        )
    _experiment = name
    return Experiment(experiment_id=name, name=name)


def start_run(
    run_id: str | None = None,
    experiment_id: str | None = None,
    run_name: str | None = None,
    nested: bool = False,
    parent_run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    description: str | None = None,
    log_system_metrics: bool | None = None,
    *,
    store: str | os.PathLike[str] | None = None,
) -> ActiveRun:
    """Start a run (``run_id``: continue that stepstore run) and make it the active one.

    A run is already active: with ``nested=True`` the new one is its child (tag
    ``mlflow.parentRunId``), else ``RunStateError``. ``log_system_metrics`` samples
    system metrics (:func:`stepstore.init`'s ``system=True``).
    """
    if _active and not nested:
        raise RunStateError(
            f"start_run: run {_active[-1].name or '(unnamed)'} is already active; end it "
            "with end_run() first, or pass nested=True to start a child run"
        )
    all_tags = dict(tags or {})
    if parent_run_id is None and nested and _active:
        parent_run_id = _active[-1].info.run_id
    if parent_run_id is not None:
        all_tags["mlflow.parentRunId"] = parent_run_id
    if description is not None:
        all_tags["mlflow.note.content"] = description
    system = bool(log_system_metrics)
    if run_id is not None:
        with open_store(store) as opened:
            project = opened.run(run_id).project
        run = init(project, resume=run_id, store=store, allow_rewind=True, system=system)
        active = ActiveRun(project, run.name, {}, store, system, run)
        active.set_tags(all_tags)
    else:
        project = experiment_id or _experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME")
        active = ActiveRun(project or "Default", run_name, all_tags, store, system)
    _active.append(active)
    if not _exit_hook:
        # when threads may still start, and before stepstore's own hook (they run last
        # registered first), which then ends the runs created here ``incomplete``
        threading._register_atexit(_create_pending)  # type: ignore[attr-defined]
        _exit_hook.append(True)
    return active


def end_run(status: str = "FINISHED") -> None:
    """End the active run with ``status`` (``FINISHED``, ``FAILED`` or ``KILLED``); does
    nothing when no run is active."""
    if status not in _STATUSES:
        raise InvalidArgumentError(
            f"end_run: status={status!r}: expected one of {', '.join(_STATUSES)}"
        )
    if _active:
        _active[-1].end(status)
        _active.pop()


def active_run() -> ActiveRun | None:
    """The active run, or None."""
    return _active[-1] if _active else None


def _create_pending() -> None:
    """At exit: create the active runs nothing has created yet, so that their params and
    tags are stored (stepstore's exit hook then ends them ``incomplete``)."""
    for active in _active:
        active.run  # noqa: B018 - creates the run


def _current(call: str, run_id: str | None = None) -> ActiveRun:
    """The run a call records into: the active one, started as MLflow does if none is."""
    active = _active[-1] if _active else start_run()
    if run_id is not None and run_id != active.info.run_id:
        raise InvalidArgumentError(
            f"{call}: run_id={run_id!r} is not the active run {active.info.run_id!r}; "
            "start_run(run_id=...) makes it active"
        )
    return active


# -- params, tags, metrics --------------------------------------------------------------


def log_param(key: str, value: Any, synchronous: bool | None = None) -> Any:
    """Record one param; returns ``value``."""
    _current("log_param").log_params({key: value})
    return value


def log_params(
    params: Mapping[str, Any], synchronous: bool | None = None, run_id: str | None = None
) -> None:
    """Record params."""
    _current("log_params", run_id).log_params(params)


def set_tag(key: str, value: Any, synchronous: bool | None = None) -> None:
    """Record one tag."""
    _current("set_tag").set_tags({key: value})


def set_tags(tags: Mapping[str, Any], synchronous: bool | None = None) -> None:
    """Record tags."""
    _current("set_tags").set_tags(tags)


def log_metric(
    key: str,
    value: float,
    step: int | None = None,
    synchronous: bool | None = None,
    timestamp: int | None = None,
    run_id: str | None = None,
) -> None:
    """Record a metric at ``step`` (0 when omitted) and ``timestamp`` (ms; now when
    omitted)."""
    log_metrics({key: value}, step, synchronous, run_id, timestamp)


def log_metrics(
    metrics: Mapping[str, float],
    step: int | None = None,
    synchronous: bool | None = None,
    run_id: str | None = None,
    timestamp: int | None = None,
) -> None:
    """Record metrics at one ``step`` (0 when omitted) and ``timestamp`` (ms)."""
    call = "log_metrics"
    run = _current(call, run_id).run
    seconds = None if timestamp is None else _milliseconds(call, timestamp) / 1000
    run.log(dict(metrics), step=step_of(call, step), time=seconds)


def _milliseconds(call: str, timestamp: Any) -> int:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise InvalidArgumentError(
            f"{call}: timestamp={timestamp!r}: expected milliseconds since the Unix epoch (an int)"
        )
    return timestamp


# -- artifacts ---------------------------------------------------------------------------


def log_artifact(
    local_path: str | os.PathLike[str], artifact_path: str | None = None, run_id: str | None = None
) -> None:
    """Store a file as an artifact under its file name."""
    if artifact_path:
        raise InvalidArgumentError(
            f"log_artifact: artifact_path={artifact_path!r}: stepstore stores artifacts by "
            f"file name, without folders; leave it out (the file is stored as "
            f"{Path(local_path).name!r})"
        )
    _current("log_artifact", run_id).run.log_artifact(local_path)


def log_artifacts(
    local_dir: str | os.PathLike[str], artifact_path: str | None = None, run_id: str | None = None
) -> None:
    """Store each file of a folder (which holds no folders) as an artifact."""
    entries = sorted(Path(local_dir).iterdir())
    folders = [e.name for e in entries if not e.is_file()]
    if folders:
        raise InvalidArgumentError(
            f"log_artifacts: {os.fspath(local_dir)!r} holds folders ({', '.join(folders)}); "
            "stepstore stores artifacts by file name, without folders"
        )
    for entry in entries:
        log_artifact(entry, artifact_path, run_id)


def log_dict(dictionary: Mapping[str, Any], artifact_file: str, run_id: str | None = None) -> None:
    """Store a dict as a JSON artifact (YAML for ``.yaml``/``.yml``), as MLflow writes it."""
    if PurePosixPath(artifact_file).suffix in (".yml", ".yaml"):
        try:
            import yaml
        except ImportError as exc:
            raise MissingDependencyError(
                f"log_dict: {artifact_file!r} is YAML, which needs PyYAML ({exc}); install it "
                "with: pip install pyyaml"
            ) from None
        text = yaml.dump(dictionary, indent=2, default_flow_style=False)
    else:
        text = json.dumps(dictionary, indent=2, default=str)
    _store_bytes("log_dict", text.encode("utf-8"), artifact_file, run_id)


def log_text(text: str, artifact_file: str, run_id: str | None = None) -> None:
    """Store a text as an artifact (UTF-8)."""
    _store_bytes("log_text", text.encode("utf-8"), artifact_file, run_id)


def log_figure(
    figure: Any, artifact_file: str, *, save_kwargs: Mapping[str, Any] | None = None
) -> None:
    """Store a matplotlib figure as an artifact, saved as ``figure.savefig`` writes it
    (the format from ``artifact_file``'s extension)."""
    if not callable(getattr(figure, "savefig", None)):
        raise unsupported(
            f"log_figure of a {type(figure).__name__}",
            "give a matplotlib figure, or save the figure to a file and log_artifact it",
        )
    active = _current("log_figure")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / _file_name("log_figure", artifact_file)
        figure.savefig(path, **dict(save_kwargs or {}))
        active.run.log_artifact(path)


def _store_bytes(call: str, data: bytes, artifact_file: str, run_id: str | None) -> None:
    active = _current(call, run_id)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / _file_name(call, artifact_file)
        path.write_bytes(data)
        active.run.log_artifact(path)


def _file_name(call: str, artifact_file: str) -> str:
    """``artifact_file`` if it is a plain file name (stepstore artifacts have no folders)."""
    if not isinstance(artifact_file, str):
        raise InvalidArgumentError(
            f"{call}: artifact_file={artifact_file!r}: expected a file name (a string)"
        )
    name = PurePosixPath(artifact_file).name
    if name != artifact_file:
        raise InvalidArgumentError(
            f"{call}: artifact_file={artifact_file!r}: stepstore stores artifacts by file "
            f"name, without folders; expected a name like {name or 'data.json'!r}"
        )
    return name


# -- what stepstore does not do ------------------------------------------------------------


def set_tracking_uri(uri: Any) -> None:
    """Not supported: raises UnsupportedError."""
    raise unsupported(
        "set_tracking_uri",
        "runs go to a stepstore store: start_run(store=URI) or $STEPSTORE_URI "
        "(`stepstore import mlflow URI` brings an MLflow store's runs along)",
    )


def autolog(*args: Any, **kwargs: Any) -> None:
    """Not supported: raises UnsupportedError."""
    raise unsupported(
        "autolog",
        "record with the framework integrations (stepstore.keras, .lightning, .hf) or "
        "log_metric calls",
    )


def log_image(*args: Any, **kwargs: Any) -> None:
    """Not supported: raises UnsupportedError."""
    raise unsupported(
        "log_image",
        "record images with active_run().run.log({key: stepstore.Image(image)}, step=step)",
    )


def log_input(*args: Any, **kwargs: Any) -> None:
    """Not supported: raises UnsupportedError."""
    raise unsupported("log_input", "describe the dataset with log_params or log_dict")


def log_table(*args: Any, **kwargs: Any) -> None:
    """Not supported: raises UnsupportedError."""
    raise unsupported(
        "log_table", "store rows with active_run().run.log_record(key, row) or use log_dict"
    )


def __getattr__(name: str) -> Any:
    """Names of MLflow this module does not offer (model flavors, clients, search)."""
    raise AttributeError(
        f"stepstore.compat.mlflow has no {name!r}: it offers MLflow's fluent logging API "
        "(start_run, log_param(s), log_metric(s), set_tag(s), log_artifact, log_dict, "
        "log_text, log_figure, end_run); store models with torch.save and log_artifact, and "
        "read runs with stepstore.open()"
    )
