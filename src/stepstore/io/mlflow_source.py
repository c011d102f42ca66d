"""Reading MLflow tracking stores directly: a file store's folders (``mlruns/``) and a SQL
store's tables (``sqlite:///``, ``postgresql://``, ``mysql://``, ``mssql://``).

Reading the files and tables themselves is what makes an import fast: MLflow's own
``MlflowClient.get_metric_history`` builds a Python object per point. What is read is what
``MlflowClient`` answers, value for value (checked by the tests against it), with one
difference: a file-store metric line with dataset fields (``timestamp value step name
digest``) keeps its step, where MLflow's file store reads it as step 0.

Only live experiments and runs are read (``lifecycle_stage = active``), as MLflow lists them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple, Protocol
from urllib.parse import unquote, urlparse

import numpy as np

from ..errors import InvalidArgumentError, MissingDependencyError, StoreError

#: MLflow's ``RunStatus`` numbers, as the file store writes them in ``meta.yaml``.
_STATUS_NUMBERS = {1: "RUNNING", 2: "SCHEDULED", 3: "FINISHED", 4: "FAILED", 5: "KILLED"}
#: URI schemes of MLflow's SQL stores (SQLAlchemy dialects), before any ``+driver``.
SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mssql")
#: Drivers used when a URI names none and SQLAlchemy's default one is not installed.
_FALLBACK_DRIVERS = {
    "postgresql": ("psycopg2", "psycopg"),
    "postgres": ("psycopg2", "psycopg"),
    "mysql": ("MySQLdb", "pymysql"),
}
_METRIC_ROW = np.dtype([("step", "<i8"), ("timestamp", "<i8"), ("value", "<f8"), ("nan", "<i8")])


def require(module: str) -> ModuleType:
    """Import ``module`` (a package of the ``compat`` extra) or raise
    ``MissingDependencyError`` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(
            f"MLflow import and export need {exc.name}, which is not installed; "
            "pip install 'stepstore[compat]'"
        ) from None


@dataclass(frozen=True)
class MlflowRun:
    """One MLflow run's metadata as its store holds it (times in ms since the epoch)."""

    id: str
    experiment_id: str
    experiment: str
    name: str
    status: str
    start_time: int | None
    end_time: int | None
    artifact_uri: str
    params: dict[str, str]
    tags: dict[str, str]


class History(NamedTuple):
    """One metric's points in the store's order: steps, timestamps (ms) and float64 values."""

    step: np.ndarray
    timestamp: np.ndarray
    value: np.ndarray


class Source(Protocol):
    """An MLflow tracking store opened for reading."""

    uri: str

    def runs(self) -> list[MlflowRun]:
        """The store's live runs, by experiment and start time."""

    def histories(self, run: MlflowRun) -> dict[str, History]:
        """Every metric of ``run``, by key, each in the store's order (the file's; a SQL
        store's by step, then timestamp, value and NaN-ness)."""

    def fingerprint(self, run: MlflowRun) -> str:
        """A digest that changes whenever ``run`` or its metrics change."""

    def close(self) -> None:
        """Release connections."""


def open_source(uri: str | os.PathLike[str]) -> Source:
    """Open the MLflow tracking store at ``uri`` (a ``file://`` URI or a path to an
    ``mlruns`` folder, or a SQL store URI) for reading.

    Raises ``StoreError`` when there is no MLflow store there or it does not answer.
    """
    text = os.fspath(uri)
    scheme = urlparse(text).scheme.lower().partition("+")[0]
    if scheme in ("", "file") or re.fullmatch(r"[a-z]", scheme):  # a path (C:\ on Windows)
        return FileSource(text)
    if scheme in SQL_SCHEMES:
        return SqlSource(text)
    raise InvalidArgumentError(
        f"MLflow tracking URI {text!r}: expected a file store (a path or file:///...) or a "
        f"SQL store ({', '.join(f'{s}://' for s in SQL_SCHEMES)}); for a tracking server "
        "(http://...), import from the store it serves (its --backend-store-uri)"
    )


def local_path(uri: str) -> Path | None:
    """The local folder a ``file://`` URI or a plain path names; None for other schemes."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or re.fullmatch(r"[a-zA-Z]", parsed.scheme):
        return Path(uri)
    return None


def copy_artifacts(run: MlflowRun, into: Path) -> list[str]:
    """Copy ``run``'s artifact files into the folder ``into``; returns their relative paths
    (``/``-separated). Local artifact locations are copied directly, others downloaded with
    MLflow's own artifact repositories."""
    folder = local_path(run.artifact_uri) if run.artifact_uri else None
    if folder is None:
        artifacts = require("mlflow.artifacts")
        try:
            artifacts.download_artifacts(artifact_uri=run.artifact_uri, dst_path=str(into))
        except Exception as exc:
            raise StoreError(
                f"MLflow run {run.id}: cannot download its artifacts from {run.artifact_uri} "
                f"({exc})"
            ) from exc
    elif folder.is_dir():
        shutil.copytree(folder, into, dirs_exist_ok=True)
    return sorted(p.relative_to(into).as_posix() for p in into.rglob("*") if p.is_file())


def run_digest(run: MlflowRun, metrics: Any) -> str:
    """A digest of ``run``'s metadata and a description of its metrics."""
    data = [run.status, run.start_time, run.end_time, run.params, run.tags, metrics]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


# -- file store ------------------------------------------------------------------------------


class FileSource:
    """An MLflow file store (``mlruns/EXPERIMENT/RUN/{meta.yaml,params,tags,metrics}``)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        root = local_path(uri)
        assert root is not None  # open_source only passes paths and file:// URIs
        self.root = root
        self._yaml = require("yaml")
        if not root.is_dir():
            raise StoreError(f"MLflow file store {uri}: no such folder")
        self._experiments = {
            meta["experiment_id"]: (path, meta)
            for path, meta in self._metas(root)
            if "experiment_id" in meta and meta.get("lifecycle_stage", "active") == "active"
        }
        if not self._experiments:
            raise StoreError(
                f"MLflow file store {uri}: no experiment in it (expected folders with a "
                "meta.yaml, as mlflow writes under mlruns/)"
            )

    def _metas(self, folder: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
        """Sub-folders of ``folder`` with a ``meta.yaml``, and its content."""
        loader = getattr(self._yaml, "CSafeLoader", self._yaml.SafeLoader)
        for path in sorted(folder.iterdir()):
            meta = path / "meta.yaml"
            if path.name != ".trash" and meta.is_file():
                try:
                    data = self._yaml.load(meta.read_text("utf-8"), Loader=loader)
                except (OSError, self._yaml.YAMLError) as exc:
                    raise StoreError(f"MLflow file store: cannot read {meta} ({exc})") from exc
                if isinstance(data, dict):
                    yield path, data

    def runs(self) -> list[MlflowRun]:
        found = []
        for experiment_id, (folder, experiment) in self._experiments.items():
            for path, meta in self._metas(folder):
                if "run_id" not in meta and "run_uuid" not in meta:
                    continue
                if meta.get("lifecycle_stage", "active") != "active":
                    continue
                tags = _read_values(path / "tags")
                status = meta.get("status", 0)
                found.append(
                    MlflowRun(
                        id=str(meta.get("run_id") or meta["run_uuid"]),
                        experiment_id=str(experiment_id),
                        experiment=str(experiment["name"]),
                        name=str(meta.get("run_name") or tags.get("mlflow.runName") or ""),
                        status=_STATUS_NUMBERS.get(status, str(status))
                        if isinstance(status, int)
                        else str(status),
                        start_time=meta.get("start_time"),
                        end_time=meta.get("end_time"),
                        artifact_uri=str(meta.get("artifact_uri") or ""),
                        params=_read_values(path / "params"),
                        tags=tags,
                    )
                )
        return sorted(found, key=lambda r: (r.experiment_id, r.start_time or 0, r.id))

    def _run_folder(self, run: MlflowRun) -> Path:
        return self._experiments[run.experiment_id][0] / run.id

    def _metric_files(self, run: MlflowRun) -> dict[str, Path]:
        folder = self._run_folder(run) / "metrics"
        if not folder.is_dir():
            return {}
        return {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}

    def histories(self, run: MlflowRun) -> dict[str, History]:
        return {key: _parse_metric_file(path) for key, path in self._metric_files(run).items()}

    def fingerprint(self, run: MlflowRun) -> str:
        sizes = {key: path.stat().st_size for key, path in self._metric_files(run).items()}
        return run_digest(run, sizes)

    def close(self) -> None:
        """Nothing to release."""


def _read_values(folder: Path) -> dict[str, str]:
    """Params or tags: one file per key (``/`` in a key makes sub-folders), the value as text."""
    if not folder.is_dir():
        return {}
    return {
        p.relative_to(folder).as_posix(): p.read_text("utf-8")
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _parse_metric_file(path: Path) -> History:
    """A metric file's lines ``timestamp value [step [dataset digest]]`` as columns."""
    data = path.read_bytes()
    lines = data.count(b"\n") + (not data.endswith(b"\n") and bool(data))
    tokens = data.split()
    if len(tokens) == 3 * lines:  # every line "timestamp value step": vectorised
        return History(
            np.array(tokens[2::3]).astype(np.int64),
            np.array(tokens[0::3]).astype(np.int64),
            np.array([float(v) for v in tokens[1::3]], np.float64),
        )
    steps, stamps, values = [], [], []
    for number, line in enumerate(data.splitlines(), 1):
        parts = line.split()
        if len(parts) not in (2, 3, 5):
            raise StoreError(
                f"MLflow metric file {path} line {number}: {len(parts)} fields, expected "
                "'timestamp value step'"
            )
        stamps.append(int(parts[0]))
        values.append(float(parts[1]))
        steps.append(int(parts[2]) if len(parts) > 2 else 0)
    return History(
        np.array(steps, np.int64), np.array(stamps, np.int64), np.array(values, np.float64)
    )


# -- SQL store -------------------------------------------------------------------------------


class SqlSource:
    """An MLflow SQL store, read with plain SQL over its stable tables (``experiments``,
    ``runs``, ``params``, ``tags``, ``metrics``)."""

    def __init__(self, uri: str) -> None:
        sqlalchemy = require("sqlalchemy")
        url = sqlalchemy.engine.make_url(with_driver(uri))
        self.uri = url.render_as_string(hide_password=True)
        if url.get_backend_name() == "sqlite":
            database = url.database or ""
            if database in ("", ":memory:") or not Path(database).is_file():
                raise StoreError(f"MLflow tracking store {self.uri}: no such database file")
        connect_args = (
            {} if url.get_backend_name() in ("sqlite", "mssql") else {"connect_timeout": 10}
        )
        self._engine = sqlalchemy.create_engine(
            url, poolclass=sqlalchemy.pool.NullPool, connect_args=connect_args
        )
        try:
            self._connection = self._engine.raw_connection()
        except (sqlalchemy.exc.SQLAlchemyError, self._engine.dialect.loaded_dbapi.Error) as exc:
            self._engine.dispose()
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise StoreError(
                f"MLflow tracking store {self.uri} does not answer: {reason}"
            ) from None
        style = self._engine.dialect.paramstyle
        self._mark = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(style, "?")
        try:
            self._query("SELECT experiment_id FROM experiments WHERE 1 = 0")
            self._query("SELECT run_uuid FROM metrics WHERE 1 = 0")
        except StoreError:
            self.close()
            raise StoreError(
                f"{self.uri}: not an MLflow tracking database (no experiments or metrics table)"
            ) from None

    def _execute(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        cursor = self._connection.cursor()
        try:
            cursor.execute(sql.replace("?", self._mark), args)
        except Exception as exc:
            self._connection.rollback()
            raise StoreError(f"MLflow tracking store {self.uri}: {exc}") from exc
        return cursor

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._execute(sql, args).fetchall()
        return rows

    def runs(self) -> list[MlflowRun]:
        experiments = {
            str(row[0]): str(row[1])
            for row in self._query(
                "SELECT experiment_id, name FROM experiments WHERE lifecycle_stage = 'active'"
            )
        }
        params = self._pairs("params")
        tags = self._pairs("tags")
        rows = self._query(
            "SELECT run_uuid, experiment_id, name, status, start_time, end_time, artifact_uri "
            "FROM runs WHERE lifecycle_stage = 'active' "
            "ORDER BY experiment_id, start_time, run_uuid"
        )
        return [
            MlflowRun(
                id=run_id,
                experiment_id=str(experiment_id),
                experiment=experiments[str(experiment_id)],
                name=name or "",
                status=status,
                start_time=start,
                end_time=end,
                artifact_uri=artifact_uri or "",
                params=params.get(run_id, {}),
                tags=tags.get(run_id, {}),
            )
            for run_id, experiment_id, name, status, start, end, artifact_uri in rows
            if str(experiment_id) in experiments
        ]

    def _pairs(self, table: str) -> dict[str, dict[str, str]]:
        """Every run's key/value rows of ``table`` (params or tags), by run id."""
        found: dict[str, dict[str, str]] = {}
        for run_id, key, value in self._query(
            f"SELECT run_uuid, {self._key()}, value FROM {table}"
        ):
            found.setdefault(run_id, {})[key] = "" if value is None else value
        return found

    def _key(self) -> str:
        return "`key`" if self._engine.dialect.name == "mysql" else '"key"'

    def histories(self, run: MlflowRun) -> dict[str, History]:
        key = self._key()
        keys = [
            row[0]
            for row in self._query(
                f"SELECT DISTINCT {key} FROM metrics WHERE run_uuid = ?",
                (run.id,),
            )
        ]
        found = {}
        for name in sorted(keys):
            cursor = self._execute(
                "SELECT step, timestamp, value, is_nan FROM metrics "
                f"WHERE run_uuid = ? AND {key} = ?",
                (run.id, name),
            )
            rows = np.fromiter(cursor, dtype=_METRIC_ROW)
            if len(rows) > 1 and not (np.diff(rows["step"]) > 0).all():
                # by step, then as MLflow orders a history (its SQL primary key)
                rows = rows[
                    np.lexsort((rows["nan"], rows["value"], rows["timestamp"], rows["step"]))
                ]
            values = rows["value"]
            values[rows["nan"] != 0] = np.nan  # MLflow stores NaN as 0 with is_nan set
            found[name] = History(rows["step"], rows["timestamp"], values)
        return found

    def fingerprint(self, run: MlflowRun) -> str:
        # metrics are only ever added: their count per key tells whether there are new ones
        counts = self._query(
            f"SELECT {self._key()}, COUNT(*) FROM metrics WHERE run_uuid = ? GROUP BY 1",
            (run.id,),
        )
        return run_digest(run, sorted([str(k), int(n)] for k, n in counts))

    def close(self) -> None:
        try:
            self._connection.close()
        finally:
            self._engine.dispose()


def with_driver(uri: str) -> str:
    """``uri`` with a driver SQLAlchemy can load: its default for the dialect when
    installed, else another one that is (``postgresql://`` uses psycopg 3 without psycopg2)."""
    import importlib.util

    scheme, sep, rest = uri.partition("://")
    choices = _FALLBACK_DRIVERS.get(scheme.lower())
    if not sep or choices is None or importlib.util.find_spec(choices[0]) is not None:
        return uri
    for driver in choices[1:]:
        if importlib.util.find_spec(driver) is not None:
            return f"{scheme}+{driver}://{rest}"
    return uri
