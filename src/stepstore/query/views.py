"""The read side: Store (an opened store) and RunView (one run, read-only)."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import zlib
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ..backends.base import Backend, Problem, RunRecord, SeriesRecord
from ..errors import InvalidArgumentError, KindMismatchError, NotFoundError, StoreError
from ..series.chunk import Columns
from ..tensors.images import decode_png
from ..tensors.location import ArrayLocation
from ..tensors.series import TensorSeries
from .arrow import points_schema, points_table
from .scalars import _range, read_series, to_frame

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


class LoggedImage(NamedTuple):
    """An image as read back: its step, caption and uint8 HxW or HxWxC array."""

    step: int
    caption: str | None
    array: np.ndarray


class RunView:
    """A recorded run as stored: metadata, summary and its series, read on demand."""

    def __init__(self, backend: Backend, record: RunRecord) -> None:
        self._backend = backend
        self._record = record
        self._series: dict[str, SeriesRecord] | None = None

    def __repr__(self) -> str:
        r = self._record
        return f"<RunView {r.name} id={r.id} project={r.project!r} {r.status}>"

    id = property(lambda self: self._record.id, doc="The run's unique id.")
    name = property(lambda self: self._record.name, doc="The run's name.")
    project = property(lambda self: self._record.project, doc="The run's project.")
    params = property(lambda self: self._record.params, doc="Hyper-parameters (nested dict).")
    tags = property(lambda self: list(self._record.tags), doc="The run's tags.")
    status = property(
        lambda self: self._record.status,
        doc="running, finished, crashed (or stale heartbeat), incomplete or failed.",
    )
    created = property(lambda self: self._record.created, doc="Start time, Unix seconds.")
    ended = property(lambda self: self._record.ended, doc="End time, Unix seconds, or None.")
    host = property(lambda self: self._record.host, doc="Host the run was recorded on.")
    pid = property(lambda self: self._record.pid, doc="Process id that recorded it.")
    git_commit = property(lambda self: self._record.git_commit, doc="Git commit, if any.")
    env = property(lambda self: self._record.env, doc="Python, platform, argv, packages.")
    capture = property(
        lambda self: self._record.capture,
        doc="Policy bindings and, per key, its policy and points recorded and skipped.",
    )
    writer = property(
        lambda self: self._record.writer,
        doc="Writer counters: flushes, points, waits of log() and seconds waited.",
    )

    def _all_series(self) -> dict[str, SeriesRecord]:
        if self._series is None:
            self._series = {s.key: s for s in self._backend.series(self.id)}
        return self._series

    @property
    def summary(self) -> dict[str, dict[str, Any]]:
        """Per key: ``last``, ``min``, ``max`` (NaN-ignoring), ``count``, ``first_step``,
        ``last_step``."""
        return {
            key: {
                "last": s.summary.last,
                "min": s.summary.min,
                "max": s.summary.max,
                "count": s.summary.count,
                "first_step": s.summary.first_step,
                "last_step": s.summary.last_step,
            }
            for key, s in self._all_series().items()
        }

    def keys(self, kind: str | None = None) -> list[str]:
        """Recorded keys, sorted; ``kind="scalar"`` limits them to one kind."""
        return [k for k, s in self._all_series().items() if kind is None or s.kind == kind]

    def _resolve(self, keys: str | list[str] | tuple[str, ...] | None) -> list[SeriesRecord]:
        series = self._all_series()
        if keys is None:
            return [s for s in series.values() if s.kind == "scalar"]
        wanted = [keys] if isinstance(keys, str) else list(keys)
        found: dict[str, SeriesRecord] = {}
        for pattern in wanted:
            if not isinstance(pattern, str):
                raise InvalidArgumentError(f"keys: {pattern!r} is not a key name or pattern")
            if any(c in pattern for c in "*?["):
                matches = [k for k in series if fnmatch.fnmatchcase(k, pattern)]
            else:
                matches = [pattern] if pattern in series else []
            if not matches:
                known = ", ".join(sorted(series)) or "none"
                raise NotFoundError(
                    f"run {self.name} ({self.id}) has no key matching {pattern!r}; "
                    f"recorded keys: {known}"
                )
            for k in matches:
                if series[k].kind != "scalar":
                    if k == pattern:
                        raise KindMismatchError(
                            f"key {k!r} holds {series[k].kind} values; read it with "
                            f".{'tensor' if series[k].kind == 'tensor' else series[k].kind + 's'}"
                            f"({k!r})"
                        )
                    continue
                found.setdefault(k, series[k])
        return list(found.values())

    def scalars(
        self,
        keys: str | list[str] | tuple[str, ...] | None = None,
        steps: int | tuple[int | None, int | None] | None = None,
        epochs: int | tuple[int | None, int | None] | None = None,
        max_points: int | None = None,
    ) -> pd.DataFrame:
        """Scalar points as a long-form DataFrame: ``key, step, epoch, time, value``.

        Args:
            keys: A key, a glob (``"val/*"``) or a list of them; all scalar keys if None.
            steps: A step or an inclusive ``(low, high)`` range (either end may be None).
            epochs: An epoch or an inclusive ``(low, high)`` range.
            max_points: Per key, keep at most this many points, choosing each bucket's
                minimum and maximum (and first NaN) so no spike is hidden.
        """
        if max_points is not None and (
            isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2
        ):
            raise InvalidArgumentError(f"max_points={max_points!r}: expected an integer >= 2")
        step_range, epoch_range = _range("steps", steps), _range("epochs", epochs)
        chosen = self._resolve(keys)
        parts = [
            read_series(
                self._backend,
                s.id,
                f"run {self.id} key {s.key!r}",
                step_range,
                epoch_range,
                max_points,
            )
            for s in chosen
        ]
        return to_frame([s.key for s in chosen], parts)

    def _series_of(self, key: str, kind: str) -> SeriesRecord:
        series = self._all_series().get(key)
        if series is None:
            known = ", ".join(self.keys(kind)) or "none"
            raise NotFoundError(
                f"run {self.name} ({self.id}) has no {kind} key {key!r}; {kind} keys: {known}"
            )
        if series.kind != kind:
            raise KindMismatchError(
                f"key {key!r} of run {self.id} holds {series.kind} values, not {kind}s"
            )
        return series

    def _location(self) -> ArrayLocation:
        return ArrayLocation(self._record.array_store or self._backend.default_array_store)

    def tensor(self, key: str) -> TensorSeries:
        """A tensor series, indexed by step numbers (see ``TensorSeries``)."""
        segments, chunks = self._backend.tensor_index(self._series_of(key, "tensor").id)
        return TensorSeries(self._location(), key, segments, chunks)

    def images(self, key: str) -> list[LoggedImage]:
        """The images of a key in step order: ``(step, caption, array)`` named tuples."""
        location = self._location()
        out = []
        for row in self._backend.images(self._series_of(key, "image").id):
            data = location.read(row.path)
            if zlib.crc32(data) != row.checksum:
                raise StoreError(
                    f"image {key!r} step {row.step}: checksum mismatch in "
                    f"{location.describe(row.path)}"
                )
            out.append(LoggedImage(row.step, row.caption, decode_png(data)))
        return out

    def records(self, key: str) -> pd.DataFrame:
        """The records of a key: a ``step`` column plus one column per record field."""
        import pandas as pd

        rows = self._backend.records(self._series_of(key, "record").id)
        frame = pd.DataFrame([json.loads(r.data) for r in rows])
        frame.insert(0, "step", [r.step for r in rows])
        return frame

    def artifacts(self) -> dict[str, dict[str, Any]]:
        """Stored files by name: ``path`` (in the array store), ``size``, ``sha256``."""
        location = self._location()
        return {
            a.name: {"path": location.describe(a.path), "size": a.size, "sha256": a.sha256}
            for a in self._backend.artifacts(self.id)
        }

    def artifact(self, name: str) -> bytes:
        """The content of a stored file, verified against its SHA-256."""
        for a in self._backend.artifacts(self.id):
            if a.name == name:
                data = self._location().read(a.path)
                if hashlib.sha256(data).hexdigest() != a.sha256:
                    raise StoreError(f"artifact {name!r} of run {self.id}: SHA-256 mismatch")
                return data
        raise NotFoundError(f"run {self.id} has no artifact {name!r}")

    def verify_arrays(self) -> list[Problem]:
        """Problems in this run's tensor chunks, images and artifacts."""
        problems: list[Problem] = []
        for key, series in self._all_series().items():
            where = f"run {self.id} key {key!r}"
            try:
                if series.kind == "tensor":
                    problems.extend(Problem(where, what) for what in self.tensor(key).verify())
                elif series.kind == "image":
                    self.images(key)
            except StoreError as exc:
                problems.append(Problem(where, str(exc)))
        for name in self.artifacts():
            try:
                self.artifact(name)
            except StoreError as exc:
                problems.append(Problem(f"run {self.id} artifact {name!r}", str(exc)))
        return problems

    def columns(self, key: str) -> Columns:
        """One key's raw columns as NumPy arrays (``time`` in µs since the epoch)."""
        (series,) = self._resolve([key])
        return read_series(self._backend, series.id, f"run {self.id} key {key!r}")


class Store:
    """An opened store: find runs, read them, export points."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    @property
    def uri(self) -> str:
        """Where the store lives."""
        return self._backend.uri

    @property
    def backend(self) -> Backend:
        """The backend serving this store."""
        return self._backend

    def __repr__(self) -> str:
        return f"<Store {self.uri}>"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the store's connections."""
        self._backend.close()

    def runs(self, where: str | None = None, project: str | None = None) -> list[RunView]:
        """Runs matching a filter expression (see ``stepstore.query.filter``), oldest first."""
        if where is not None and not isinstance(where, str):
            raise InvalidArgumentError(f"where={where!r}: expected a filter expression string")
        return [RunView(self._backend, r) for r in self._backend.find_runs(where, project)]

    def run(self, id_or_name: str) -> RunView:
        """The run with this id, or the only run with this name."""
        if not isinstance(id_or_name, str) or not id_or_name:
            raise InvalidArgumentError(f"run {id_or_name!r}: expected a run id or name")
        return RunView(self._backend, self._backend.get_run(id_or_name))

    def check(self) -> list[Problem]:
        """Integrity problems in the store (empty when all is well): metadata, scalar chunks,
        tensor chunks, images and artifacts, each checked against its checksum."""
        problems = self._backend.check()
        for view in self.runs():
            problems.extend(view.verify_arrays())
        return problems

    def to_arrow(
        self,
        where: str | None = None,
        project: str | None = None,
        keys: str | list[str] | None = None,
    ) -> pa.Table:
        """All matching scalar points as one Arrow table:
        ``run_id, project, run, key, step, epoch, time, value``."""
        import pyarrow as pa

        tables = []
        for view in self.runs(where, project):
            try:
                frame = view.scalars(keys)
            except NotFoundError:
                continue
            tables.append(points_table(view, frame))
        return pa.concat_tables(tables) if tables else points_schema().empty_table()

    def duckdb(
        self, connection: Any = None, where: str | None = None, project: str | None = None
    ) -> Any:
        """A DuckDB connection with views ``points`` (as :meth:`to_arrow`) and ``runs``.

        Needs the ``duckdb`` package (``pip install stepstore[duckdb]``).
        """
        try:
            import duckdb
        except ImportError:
            raise InvalidArgumentError(
                "Store.duckdb() needs the duckdb package: pip install 'stepstore[duckdb]'"
            ) from None
        import pyarrow as pa

        con = connection if connection is not None else duckdb.connect()
        views = self.runs(where, project)
        runs = pa.table(
            {
                "id": [v.id for v in views],
                "project": [v.project for v in views],
                "name": [v.name for v in views],
                "status": [v.status for v in views],
                "created": [v.created for v in views],
            }
        )
        con.register("points", self.to_arrow(where, project))
        con.register("runs", runs)
        return con
