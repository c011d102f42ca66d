"""The read side: Store (an opened store) and RunView (one run, read-only)."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import time
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ..backends.base import (
    Backend,
    ImageRow,
    Problem,
    RecordRow,
    RunRecord,
    SeriesRecord,
    series_label,
)
from ..errors import InvalidArgumentError, KindMismatchError, NotFoundError, StoreError
from ..series.chunk import NO_EPOCH, Columns
from ..tensors.images import decode_png
from ..tensors.location import ArrayLocation
from ..tensors.series import TensorSeries, read_file
from .arrow import points_schema, points_table
from .ranks import across_ranks as across_ranks_of
from .ranks import check_aggregate, thin
from .runs_frame import check_stats, param_arrays, runs_frame, runs_table
from .scalars import _range, _time_range, read_series, to_frame

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

#: Inclusive step, epoch and time (µs) ranges of a read; None where unbounded.
Ranges = tuple[tuple[int, int] | None, tuple[int, int] | None, tuple[int, int] | None]


class ImageEntry(NamedTuple):
    """An image as listed, not read: its step, its position among the images logged at
    that step (0 for the first) and its caption."""

    step: int
    position: int
    caption: str | None


class LoggedImage(NamedTuple):
    """An image as read back: its step, caption and uint8 HxW or HxWxC array."""

    step: int
    caption: str | None
    array: np.ndarray


class RecordEntry(NamedTuple):
    """A record as read back: its step, its epoch (None if none) and its fields."""

    step: int
    epoch: int | None
    fields: dict[str, Any]


class Event(NamedTuple):
    """Something that happened to a run, as stored: the step and wall time (Unix seconds),
    the trigger that fired (``"on_nan('loss')"``, ``"dump_flight"``), the key whose value
    fired it (None for exceptions and dumps), why, and the rank it happened on."""

    step: int
    time: float
    trigger: str
    key: str | None
    reason: str
    rank: int


class RunView:
    """A recorded run as stored: metadata, summary and its series, read on demand.

    A distributed run recorded with ``ranks="all"`` holds series per rank: ``summary``,
    ``keys()`` and the readers show rank 0's unless given ``rank=`` / ``ranks=``.
    """

    def __init__(
        self, backend: Backend, record: RunRecord, series: list[SeriesRecord] | None = None
    ) -> None:
        self._backend = backend
        self._record = record
        self._series: dict[int, dict[str, SeriesRecord]] | None = None
        if series is not None:
            self._index(series)

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
    heartbeat = property(
        lambda self: self._record.heartbeat,
        doc="Last sign of life of the recording process, Unix seconds, or None.",
    )
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

    def _index(self, series: list[SeriesRecord]) -> dict[int, dict[str, SeriesRecord]]:
        """Keep the run's series (every rank's, by key) for the readers."""
        self._series = {0: {}}
        for s in series:
            self._series.setdefault(s.rank, {})[s.key] = s
        return self._series

    def _by_rank(self) -> dict[int, dict[str, SeriesRecord]]:
        if self._series is None:
            return self._index(self._backend.series(self.id, None))
        return self._series

    def _all_series(self, rank: int = 0) -> dict[str, SeriesRecord]:
        series = self._by_rank().get(rank)
        if series is not None:
            return series
        known = self.ranks
        if rank in known:  # the rank joined but recorded nothing yet
            return {}
        raise NotFoundError(
            f"run {self.name} ({self.id}) has no rank {rank!r}; recorded ranks: "
            f"{', '.join(map(str, known))}"
        )

    @property
    def ranks(self) -> list[int]:
        """The ranks that recorded into this run: ``[0]`` unless it ran with
        ``ranks="all"``."""
        return sorted({0, *self._by_rank(), *self.rank_status})

    @property
    def rank_status(self) -> dict[int, str]:
        """Each rank's status (rank 0's is the run's); a stale ``running`` is ``crashed``."""
        statuses = {0: self.status}
        statuses.update((r.rank, r.status) for r in self._backend.ranks(self.id))
        return statuses

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

    def keys(self, kind: str | None = None, rank: int = 0) -> list[str]:
        """Recorded keys, sorted; ``kind="scalar"`` limits them to one kind."""
        return [k for k, s in self._all_series(rank).items() if kind is None or s.kind == kind]

    def _resolve(
        self,
        keys: str | list[str] | tuple[str, ...] | None,
        series: dict[str, SeriesRecord] | None = None,
    ) -> list[SeriesRecord]:
        """The scalar series ``keys`` (names or globs) name among ``series`` (rank 0's)."""
        series = self._all_series() if series is None else series
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
        ranks: int | list[int] | tuple[int, ...] | str | None = None,
        across_ranks: str | None = None,
        times: tuple[float | None, float | None] | None = None,
    ) -> pd.DataFrame:
        """Scalar points as a long-form DataFrame: ``key, step, epoch, time, value``.

        Args:
            keys: A key, a glob (``"val/*"``) or a list of them; all scalar keys if None.
            steps: A step or an inclusive ``(low, high)`` range (either end may be None).
            epochs: An epoch or an inclusive ``(low, high)`` range.
            max_points: Per key, keep at most this many points, choosing each bucket's
                minimum and maximum (and first NaN) so no spike is hidden.
            ranks: Of a run recorded with ``ranks="all"``: a rank, a list of ranks or
                ``"all"``; the frame gets a ``rank`` column after ``key``. ``None`` reads
                rank 0 without that column.
            across_ranks: Combine the chosen ranks (all when ``ranks`` is None) per key and
                step with ``"mean"``, ``"min"``, ``"max"``, ``"sum"`` or ``"std"``
                (population); instead of ``rank`` the frame gets ``ranks``, how many ranks
                reported the step. A NaN on any rank gives NaN. ``max_points`` applies
                after combining.
            times: An inclusive ``(low, high)`` range of wall-clock times, Unix seconds
                (either end may be None), rounded to the microsecond.
        """
        if max_points is not None and (
            isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2
        ):
            raise InvalidArgumentError(f"max_points={max_points!r}: expected an integer >= 2")
        ranges = (_range("steps", steps), _range("epochs", epochs), _time_range(times))
        if ranks is None and across_ranks is None:
            chosen = self._resolve(keys)
            parts = [self._read(s, ranges, max_points) for s in chosen]
            return to_frame([s.key for s in chosen], parts)
        how = None if across_ranks is None else check_aggregate(across_ranks)
        picked = self._pick_ranks("all" if ranks is None else ranks)
        return self._rank_frame(keys, picked, how, ranges, max_points)

    def _rank_frame(
        self,
        keys: str | list[str] | tuple[str, ...] | None,
        picked: list[int],
        how: str | None,
        ranges: Ranges,
        max_points: int | None,
    ) -> pd.DataFrame:
        """:meth:`scalars` of several ranks: a ``rank`` column, or combined by ``how``."""
        union: dict[str, SeriesRecord] = {}
        for rank in picked:
            for key, s in self._all_series(rank).items():
                union.setdefault(key, s)
        names = [s.key for s in self._resolve(keys, union)]
        per_key = [self._scalar_series(k, picked) for k in names]
        if how is None:
            labels = [(k, r) for k, found in zip(names, per_key, strict=True) for r, _ in found]
            parts = [self._read(s, ranges, max_points) for found in per_key for _, s in found]
            return to_frame([k for k, _ in labels], parts, [r for _, r in labels])
        combined = [
            across_ranks_of([self._read(s, ranges, None) for _, s in found], how)
            for found in per_key
        ]
        if max_points is not None:
            combined = [thin(columns, counts, max_points) for columns, counts in combined]
        return to_frame(names, [c for c, _ in combined], counts=[n for _, n in combined])

    def _scalar_series(self, key: str, ranks: list[int]) -> list[tuple[int, SeriesRecord]]:
        """``key``'s scalar series on each of ``ranks`` that recorded it."""
        found = []
        for rank in ranks:
            series = self._all_series(rank).get(key)
            if series is not None and series.kind == "scalar":
                found.append((rank, series))
        return found

    def _read(self, series: SeriesRecord, ranges: Ranges, max_points: int | None) -> Columns:
        """One series' points in the (step, epoch, time) ``ranges``, downsampled."""
        steps, epochs, times = ranges
        where = series_label(self.id, series.key, series.rank)
        return read_series(self._backend, series.id, where, steps, epochs, max_points, times)

    def _pick_ranks(self, ranks: object) -> list[int]:
        """The ranks ``ranks=`` names (a rank, a list of them or ``"all"``), checked."""
        known = self.ranks
        if ranks == "all":
            return known
        wanted = [ranks] if isinstance(ranks, (int, np.integer)) else ranks
        if (
            not isinstance(wanted, (list, tuple))
            or not wanted
            or not all(isinstance(r, (int, np.integer)) and not isinstance(r, bool) for r in wanted)
        ):
            raise InvalidArgumentError(
                f"ranks={ranks!r}: expected 'all', a rank or a non-empty list of ranks"
            )
        missing = [int(r) for r in wanted if r not in known]
        if missing:
            raise NotFoundError(
                f"run {self.name} ({self.id}) has no rank {missing[0]}; recorded ranks: "
                f"{', '.join(map(str, known))}"
            )
        return sorted({int(r) for r in wanted})

    def _series_of(self, key: str, kind: str, rank: int = 0) -> SeriesRecord:
        series = self._all_series(rank).get(key)
        if series is None:
            known = ", ".join(self.keys(kind, rank)) or "none"
            where = f" rank {rank}" if rank else ""
            raise NotFoundError(
                f"run {self.name} ({self.id}){where} has no {kind} key {key!r}; {kind} keys: "
                f"{known}"
            )
        if series.kind != kind:
            raise KindMismatchError(
                f"key {key!r} of run {self.id} holds {series.kind} values, not {kind}s"
            )
        return series

    def _location(self) -> ArrayLocation:
        return self._backend.array_location(self._record.array_store)

    def tensor(self, key: str, rank: int = 0) -> TensorSeries:
        """A tensor series, indexed by step numbers (see ``TensorSeries``)."""
        segments, chunks = self._backend.tensor_index(self._series_of(key, "tensor", rank).id)
        return TensorSeries(self._location(), key, segments, chunks)

    def images(self, key: str, rank: int = 0) -> list[LoggedImage]:
        """The images of a key in step order: ``(step, caption, array)`` named tuples."""
        location = self._location()
        return [
            LoggedImage(row.step, row.caption, decode_png(_image_file(location, key, row)))
            for row in self._backend.images(self._series_of(key, "image", rank).id)
        ]

    def image_index(self, key: str, rank: int = 0) -> list[ImageEntry]:
        """The images of a key in step order, listed without reading them:
        ``(step, position, caption)`` named tuples."""
        rows = self._backend.images(self._series_of(key, "image", rank).id)
        return [ImageEntry(row.step, row.position, row.caption) for row in rows]

    def image_png(self, key: str, step: int, position: int = 0, rank: int = 0) -> bytes:
        """The PNG file of one image as stored (checked against its checksum): the one at
        ``position`` among those logged at ``step``; ``NotFoundError`` naming them if none."""
        for row in self._backend.images(self._series_of(key, "image", rank).id):
            if row.step == step and row.position == position:
                return _image_file(self._location(), key, row)
        where = f" position {position}" if position else ""
        raise NotFoundError(
            f"run {self.name} ({self.id}) has no image {key!r} at step {step}{where}"
        )

    def records(self, key: str, rank: int = 0) -> pd.DataFrame:
        """The records of a key: a ``step`` column plus one column per record field."""
        import pandas as pd

        entries = self.record_entries(key, rank)
        frame = pd.DataFrame([e.fields for e in entries])
        frame.insert(0, "step", [e.step for e in entries])
        return frame

    def record_entries(self, key: str, rank: int = 0) -> list[RecordEntry]:
        """The records of a key as stored, in step order: ``(step, epoch, fields)`` named
        tuples, ``fields`` the dict as logged (``epoch`` None where none was given)."""
        rows = self._backend.records(self._series_of(key, "record", rank).id)
        return [
            RecordEntry(
                r.step,
                None if r.epoch is None or r.epoch == NO_EPOCH else r.epoch,
                self._record_fields(key, r),
            )
            for r in rows
        ]

    def _record_fields(self, key: str, row: RecordRow) -> dict[str, Any]:
        """The fields of one stored record; ``StoreError`` when its JSON is damaged."""
        try:
            fields = json.loads(row.data)
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            raise StoreError(
                f"record {key!r} step {row.step} of run {self.id}: {row.data!r:.80} is not a "
                "JSON object; the store is damaged"
            )
        return fields

    def events(self) -> list[Event]:
        """The run's events (a flight recorder's trigger firing, ``run.dump_flight``), by
        time."""
        return [
            Event(e.step, e.time, e.trigger, e.key, e.reason, e.rank)
            for e in self._backend.events(self.id)
        ]

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
                data = read_file(self._location(), a.path)
                if hashlib.sha256(data).hexdigest() != a.sha256:
                    raise StoreError(f"artifact {name!r} of run {self.id}: SHA-256 mismatch")
                return data
        raise NotFoundError(f"run {self.id} has no artifact {name!r}")

    def verify_arrays(self) -> list[Problem]:
        """Problems in this run's tensor chunks and their Zarr metadata, images, records and
        artifacts; a series that cannot be read is one problem, and the check goes on."""
        problems: list[Problem] = []
        for rank, by_key in self._by_rank().items():
            for key, series in by_key.items():
                where = series_label(self.id, key, rank)
                try:
                    if series.kind == "tensor":
                        problems.extend(
                            Problem(where, what) for what in self.tensor(key, rank).verify()
                        )
                    elif series.kind == "image":
                        self.images(key, rank)
                    elif series.kind == "record":
                        self.records(key, rank)
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

    def plot(
        self,
        keys: str | list[str] | tuple[str, ...],
        x: str = "step",
        ax: Any = None,
        smooth: float | None = None,
        log: bool = False,
    ) -> Any:
        """Draw scalar keys (names or globs) on a matplotlib Axes (a new figure's if None)
        and return it; see ``stepstore.plot.plot_scalars``. Needs matplotlib."""
        from ..plot import plot_scalars

        return plot_scalars(self, keys, x=x, ax=ax, smooth=smooth, log=log)


def _image_file(location: ArrayLocation, key: str, row: ImageRow) -> bytes:
    """The PNG file of an image row, checked against its checksum."""
    data = read_file(location, row.path)
    if zlib.crc32(data) != row.checksum:
        raise StoreError(
            f"image {key!r} step {row.step}: checksum mismatch in {location.describe(row.path)}"
        )
    return data


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

    def runs(
        self, where: str | None = None, project: str | None = None, *, with_keys: bool = False
    ) -> list[RunView]:
        """Runs matching a filter expression (see ``stepstore.filterlang``), oldest first.

        ``with_keys=True`` reads the keys and summaries of all of them at once, so that
        ``.summary`` and ``.keys()`` of many runs need no query each.
        """
        if where is not None and not isinstance(where, str):
            raise InvalidArgumentError(f"where={where!r}: expected a filter expression string")
        records = self._backend.find_runs(where, project)
        if not with_keys:
            return [RunView(self._backend, r) for r in records]
        series = self._backend.series_of_runs([r.id for r in records])
        return [RunView(self._backend, r, series.get(r.id, [])) for r in records]

    def run(self, id_or_name: str) -> RunView:
        """The run with this id, or the only run with this name."""
        if not isinstance(id_or_name, str) or not id_or_name:
            raise InvalidArgumentError(f"run {id_or_name!r}: expected a run id or name")
        return RunView(self._backend, self._backend.get_run(id_or_name))

    def check(self) -> list[Problem]:
        """Integrity problems in the store (empty when all is well): the database, scalar
        chunks against their checksums and index rows, tensor chunks, images and artifacts
        against their checksums, the Zarr metadata of tensors against their index.

        Damage that makes a run unreadable is reported for that run, and the check goes on
        with the next one; runs that cannot even be listed are one problem of the store.
        """
        problems = self._backend.check()
        try:
            records = self._backend.find_runs()
        except StoreError as exc:
            return [*problems, Problem(self.uri, str(exc))]
        for record in records:
            try:
                problems.extend(RunView(self._backend, record).verify_arrays())
            except StoreError as exc:
                problems.append(Problem(f"run {record.id}", str(exc)))
        return problems

    def runs_frame(
        self,
        where: str | None = None,
        project: str | None = None,
        metrics: str | Sequence[str] = ("last",),
    ) -> pd.DataFrame:
        """Matching runs as a DataFrame, oldest first, one row per run (the MLflow
        ``search_runs`` shape): ``id, name, project, status, created`` (UTC timestamps),
        ``duration`` (seconds; a running run's until now), ``tags`` (lists), a
        ``params.NAME`` column per flattened param (``params.model.width``) and a
        ``metrics.KEY.STAT`` column per scalar key and statistic of ``metrics`` (any of
        ``last``, ``min``, ``max``, ``count``). See :mod:`stepstore.query.runs_frame`.
        """
        stats = check_stats(metrics)
        return runs_frame(self.runs(where, project, with_keys=True), stats, time.time())

    def to_arrow(
        self,
        where: str | None = None,
        project: str | None = None,
        keys: str | list[str] | None = None,
        ranks: str | None = None,
        *,
        params: bool = False,
    ) -> pa.Table:
        """All matching scalar points as one Arrow table:
        ``run_id, project, run, key, step, epoch, time, value``; with ``ranks="all"`` every
        rank's points and a ``rank`` column after ``key`` (see ``RunView.scalars``); with
        ``params=True`` each row also carries its run's ``params.*`` columns (as in
        :meth:`runs_frame`; JSON text where a param's values are not of one type)."""
        if ranks not in (None, "all"):
            raise InvalidArgumentError(f"ranks={ranks!r}: expected None or 'all'")
        return _points(self.runs(where, project, with_keys=True), keys, ranks, params)

    def duckdb(
        self,
        connection: Any = None,
        where: str | None = None,
        project: str | None = None,
        ranks: str | None = None,
    ) -> Any:
        """A DuckDB connection with two relations: ``points`` (as :meth:`to_arrow`) and
        ``runs`` (``id, name, project, status, created, duration, tags`` and the
        ``params.*`` columns of :meth:`runs_frame`; ``tags`` is a list of strings), so
        ``SELECT r."params.lr", max(p.value) FROM points p JOIN runs r ON p.run_id = r.id
        WHERE p.key = 'val/acc' GROUP BY 1`` works.

        Needs the ``duckdb`` package (``pip install stepstore[duckdb]``).
        """
        try:
            import duckdb
        except ImportError:
            raise InvalidArgumentError(
                "Store.duckdb() needs the duckdb package: pip install 'stepstore[duckdb]'"
            ) from None
        if ranks not in (None, "all"):
            raise InvalidArgumentError(f"ranks={ranks!r}: expected None or 'all'")
        con = connection if connection is not None else duckdb.connect()
        views = self.runs(where, project, with_keys=True)
        con.register("points", _points(views, None, ranks, False))
        con.register("runs", runs_table(views, time.time()))
        return con


def _points(
    views: list[RunView], keys: str | list[str] | None, ranks: str | None, params: bool
) -> pa.Table:
    """The runs' scalar points of ``keys`` (runs without such keys give none) as one table of
    :func:`points_schema`; ``params`` appends each row's run's ``params.*`` columns."""
    import pyarrow as pa

    tables, counts = [], []
    for view in views:
        try:
            frame = view.scalars(keys, ranks=ranks)
        except NotFoundError:
            counts.append(0)
            continue
        tables.append(points_table(view, frame))
        counts.append(tables[-1].num_rows)
    empty = points_schema(with_rank=ranks is not None).empty_table()
    table = pa.concat_tables(tables) if tables else empty
    if not params or not tables:
        return table
    rows = pa.array(np.repeat(np.arange(len(views)), counts))
    for name, column in param_arrays(views).items():
        table = table.append_column(name, column.take(rows))
    return table
