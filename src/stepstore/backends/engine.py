"""The SQL engine every database backend runs: each statement written once, via a dialect.

The tables, columns and their meaning are the same in SQLite, PostgreSQL and MySQL/MariaDB
(see ``schema.py``): runs with flattened params and tags, series with summaries, scalar
chunks as blobs, the index rows of tensors, records, images and artifacts, and events.
Statements are written with ``%s`` placeholders and ``"key"``/``"rank"`` in double quotes;
the :class:`~stepstore.backends.dialect.Dialect` turns them into its own SQL.

Transactions
    Every call runs in a transaction of its own under the backend's lock, which the
    writer thread and the caller share: :meth:`SQLBackend._run` begins it, runs the work
    on a cursor, commits, and rolls back on any error. A transaction the database aborted
    as transient (a deadlock, a serialization failure, a connection lost before
    ``COMMIT``) is retried; any other driver error becomes a
    :class:`~stepstore.errors.StoreError` naming the store and what was read or written.
    How a transaction begins and ends, and which errors are transient, is each backend's
    own (the hooks below). Rows are checked as they are read (see ``base.decode_row``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any, ClassVar, TypeVar

from ..errors import (
    InvalidArgumentError,
    KindMismatchError,
    NotAStoreError,
    NotFoundError,
    SchemaVersionError,
    StoreError,
)
from ..series.chunk import EncodedChunk
from ..series.tail import Summary
from ..tensors.index import ChunkIndex, Segment
from .base import (
    RANK_COLUMNS,
    RANK_UPDATABLE,
    RUN_COLUMNS,
    UPDATABLE,
    ArrayBatch,
    ArtifactRow,
    Backend,
    ChunkRow,
    EventRow,
    ImageRow,
    Problem,
    RankRecord,
    RecordRow,
    RepairBatch,
    RunRecord,
    SeriesRecord,
    decode_row,
    flatten_params,
    row_of,
)
from .dialect import Dialect

_T = TypeVar("_T")
_R = TypeVar("_R")

#: Attempts at a transaction the database aborted as transient.
ATTEMPTS = 5
#: Run ids per query of ``series_of_runs``.
SERIES_BATCH = 500

#: Columns of the tables that hold the records of ``base.py``, named as the records' fields.
SEGMENT = tuple(f.name for f in dataclasses.fields(Segment))
TENSOR_CHUNK = tuple(f.name for f in dataclasses.fields(ChunkIndex))
RECORD = tuple(f.name for f in dataclasses.fields(RecordRow))
IMAGE = tuple(f.name for f in dataclasses.fields(ImageRow))
ARTIFACT = tuple(f.name for f in dataclasses.fields(ArtifactRow))
EVENT_FIELDS = tuple(f.name for f in dataclasses.fields(EventRow))
_INSERT_PARAM = "INSERT INTO run_params (run_id, path, num, str) VALUES (%s, %s, %s, %s)"
EVENT = tuple(f'"{name}"' for name in EVENT_FIELDS)
_CHUNK_READ = (
    "series_id, seq, first_step, last_step, count, sealed, stats, {data}, checksum, min_epoch, "
    "max_epoch"
)
_RANKS = ", ".join(f'"{c}"' for c in RANK_COLUMNS)


def schema_version_of(row: Sequence[Any] | None, where: str) -> int:
    """The schema version a ``meta`` row holds (0 without one); ``StoreError`` naming
    ``where`` when it is not a number."""
    if not row:
        return 0
    try:
        return int(row[0])
    except (TypeError, ValueError):
        raise StoreError(
            f"{where}: the schema version {row[0]!r:.40} is not a number; the database is damaged"
        ) from None


def _values(item: object, names: Sequence[str]) -> tuple[Any, ...]:
    """The fields ``names`` of a record, as a row."""
    return tuple(getattr(item, name) for name in names)


def _many(cursor: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """``executemany`` that skips an empty batch."""
    if rows:
        cursor.executemany(sql, rows)


class SQLBackend(Backend):
    """A store in one SQL database; a subclass binds it to a driver and its dialect.

    A subclass's constructor sets :attr:`uri`, :attr:`stale_after` and a connection, then
    calls :meth:`_migrate`.
    """

    #: The database's spelling.
    dialect: ClassVar[Dialect]
    #: Ordered, append-only schema migrations (see ``schema.py``).
    migrations: ClassVar[Sequence[Sequence[str]]] = ()
    #: How error messages name the database (the SQLite file, a server's masked URI).
    _label: str
    _lock: threading.RLock

    # -- what a backend provides -------------------------------------------------------------

    @abstractmethod
    def _connection(self) -> Any:
        """The open connection (connecting again where the backend can)."""

    @abstractmethod
    def _begin(self, connection: Any, write: bool) -> None:
        """Begin a transaction on ``connection`` (``write``: one that will write)."""

    @abstractmethod
    def _commit(self, connection: Any, write: bool) -> None:
        """Commit the transaction :meth:`_begin` began."""

    @abstractmethod
    def _rollback(self, connection: Any) -> None:
        """Roll back an open transaction; never raises over the error that caused it."""

    @property
    @abstractmethod
    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        """The driver's exception classes."""

    def _transient(self, error: BaseException) -> bool:
        """Whether ``error`` aborted the transaction as a deadlock or serialization failure."""
        return False

    def _alive(self, connection: Any) -> bool:
        """Whether ``connection`` can still be used."""
        return True

    def _reason(self, error: BaseException) -> str:
        """A one-line description of a driver error."""
        return str(error) or type(error).__name__

    def _cursor(self, connection: Any) -> Any:
        """A cursor of ``connection`` (a backend may ask its driver for a faster kind)."""
        return connection.cursor()

    def _schema_lock(self, cursor: Any) -> contextlib.AbstractContextManager[None]:
        """Hold the lock that serialises schema migrations across processes."""
        return contextlib.nullcontext()

    def _migration_step(self, cursor: Any, statement: str) -> None:
        """Execute one migration statement (a dialect may fill in templates, or skip what
        an interrupted migration applied)."""
        cursor.execute(statement)

    def _migrated(self, cursor: Any) -> None:
        """Check or settle the migrations just applied, before their transaction commits."""

    def _migrating(self) -> contextlib.AbstractContextManager[None]:
        """Settings held while the schema migrates."""
        return contextlib.nullcontext()

    def _database_problems(self) -> list[Problem]:
        """Problems the database finds in itself (an integrity check), if it can."""
        return []

    # -- transactions ----------------------------------------------------------------------

    def _run(self, work: Callable[[Any], _T], what: str, *, write: bool = True) -> _T:
        """Run ``work(cursor)`` in a transaction of its own and commit it.

        Retries a transaction that the database aborted as transient, or that lost its
        connection before ``COMMIT`` was sent: nothing of it was committed. Rolls back and
        reports any other failure: a driver error as a ``StoreError`` naming the store and
        ``what`` the transaction was doing.
        """
        with self._lock:
            attempt = 1
            while True:
                connection = self._connection()
                committing = False
                try:
                    self._begin(connection, write)
                    cursor = self._cursor(connection)
                    try:
                        result = work(cursor)
                    finally:
                        cursor.close()
                    committing = True
                    self._commit(connection, write)
                    return result
                except BaseException as exc:
                    self._rollback(connection)
                    if not isinstance(exc, self._driver_errors):
                        raise
                    lost = not committing and not self._alive(connection)
                    if attempt < ATTEMPTS and (lost or self._transient(exc)):
                        time.sleep(random.uniform(0.005, 0.05) * attempt)
                        attempt += 1
                        continue
                    raise StoreError(f"{self._label}: {what}: {self._reason(exc)}") from exc

    def _query(self, sql: str, args: Sequence[Any] = (), what: str = "the database") -> list[Any]:
        """Rows of one read statement (``%s`` placeholders), which reads ``what``."""
        statement = self.dialect.sql(sql)

        def work(cursor: Any) -> list[Any]:
            cursor.execute(statement, args)
            return list(cursor.fetchall())

        return self._run(work, f"reading {what}", write=False)

    def _rows_of(self, cls: type[_R], sql: str, args: Sequence[Any], what: str) -> list[_R]:
        """Rows of one read statement as records of type ``cls``, checked."""
        where = f"{self._label}: reading {what}"
        return [row_of(cls, row, where) for row in self._query(sql, args, what)]

    # -- schema ----------------------------------------------------------------------------

    def _read_version(self, cursor: Any) -> int:
        cursor.execute(self.dialect.meta_exists)
        if not cursor.fetchone()[0]:
            return 0
        cursor.execute("SELECT value FROM meta WHERE \"key\" = 'schema_version'")
        return schema_version_of(cursor.fetchone(), self._label)

    @property
    def schema_version(self) -> int:
        """The schema version of the open store."""
        return self._run(self._read_version, "reading the schema version", write=False)

    def _refuse_newer(self, version: int) -> None:
        supported = len(self.migrations)
        if version > supported:
            raise SchemaVersionError(
                f"{self.uri}: store schema version {version} is newer than this stepstore "
                f"supports ({supported}); upgrade stepstore to read or write it"
            )

    def _migrate(self, create: bool) -> None:
        """Bring the schema to the latest version; an empty database is ``NotAStoreError``
        unless ``create``."""
        version = self.schema_version
        self._refuse_newer(version)
        if version == len(self.migrations):
            return
        if version == 0 and not create:
            raise NotAStoreError(
                f"{self.uri}: not a stepstore store (the database holds no stepstore "
                "schema); record a run with stepstore.init(store=...) first"
            )
        with self._migrating():
            self._run(self._apply_migrations, "migrating the schema")

    def _apply_migrations(self, cursor: Any) -> None:
        with self._schema_lock(cursor):
            version = self._read_version(cursor)  # another process may have migrated meanwhile
            self._refuse_newer(version)
            set_version = self.dialect.upsert("meta", ('"key"', "value"), '("key")', ("value",))
            for number, statements in enumerate(self.migrations[version:], start=version + 1):
                for statement in statements:
                    self._migration_step(cursor, statement)
                cursor.execute(set_version, ("schema_version", str(number)))
            self._migrated(cursor)

    # -- runs ------------------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        values = [getattr(run, name) for name in RUN_COLUMNS]
        values = [json.dumps(v) if isinstance(v, (dict, list)) else v for v in values]
        params = [(run.id, *row) for row in flatten_params(run.params)]
        tags = [(run.id, tag) for tag in dict.fromkeys(run.tags)]
        sql = self.dialect.sql

        def work(cursor: Any) -> None:
            cursor.execute(
                f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) "
                f"VALUES ({self.dialect.params(len(values))})",
                values,
            )
            _many(cursor, sql(_INSERT_PARAM), params)
            _many(cursor, sql("INSERT INTO run_tags (run_id, tag) VALUES (%s, %s)"), tags)

        self._run(work, f"writing run {run.id}")

    def get_run(self, id_or_name: str) -> RunRecord:
        """The run with this id, or the only run with this name; several runs of one name
        are listed by creation time, then id."""
        select = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"
        by_id = self.dialect.sql(f"{select} WHERE id = %s")
        by_name = self.dialect.sql(f"{select} WHERE name = %s ORDER BY created, id")

        def work(cursor: Any) -> list[Any]:
            cursor.execute(by_id, (id_or_name,))
            rows = cursor.fetchall()
            if not rows:
                cursor.execute(by_name, (id_or_name,))
                rows = cursor.fetchall()
            return list(rows)

        rows = self._run(work, f"reading run {id_or_name!r}", write=False)
        if not rows:
            raise NotFoundError(f"no run with id or name {id_or_name!r} in {self.uri}")
        if len(rows) > 1:
            ids = ", ".join(str(row[0]) for row in rows)
            raise InvalidArgumentError(
                f"run name {id_or_name!r} is ambiguous in {self.uri}: use one of the ids {ids}"
            )
        return self._record(rows[0])

    def find_runs(self, where: str | None = None, project: str | None = None) -> list[RunRecord]:
        from .filter_sql import FilterDialect, compile_filter, status_sql  # imports the parser

        clauses: list[str] = []
        args: list[Any] = []
        if where:
            target = FilterDialect(param="%s", status_sql=status_sql(self.stale_after))
            sql, where_args = compile_filter(where, target)
            clauses.append(f"({sql})")
            args.extend(where_args)
        if project is not None:
            clauses.append("r.project = %s")
            args.append(project)
        query = f"SELECT {', '.join('r.' + c for c in RUN_COLUMNS)} FROM runs r"
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        rows = self._query(query + " ORDER BY r.created, r.id", args, "the runs")
        return [self._record(row) for row in rows]

    def _set_run_fields(
        self, cursor: Any, run_id: str, fields: dict[str, Any], rank: int = 0
    ) -> None:
        """Set fields of the run's row (of its rank's row for a non-zero ``rank``)."""
        allowed = RANK_UPDATABLE if rank else UPDATABLE
        unknown = set(fields) - allowed
        if unknown:
            raise InvalidArgumentError(f"cannot update run fields {sorted(unknown)}")
        names = sorted(fields)
        values = [
            json.dumps(fields[n]) if isinstance(fields[n], dict) else fields[n] for n in names
        ]
        where = 'run_id = %s AND "rank" = %s' if rank else "id = %s"
        cursor.execute(
            self.dialect.sql(
                f"UPDATE {'run_ranks' if rank else 'runs'} "
                f"SET {', '.join(n + ' = %s' for n in names)} WHERE {where}"
            ),
            [*values, run_id, *([rank] if rank else [])],
        )

    def update_run(self, run_id: str, **fields: Any) -> None:
        self._run(
            lambda cursor: self._set_run_fields(cursor, run_id, fields), f"writing run {run_id}"
        )

    def update_params(self, run_id: str, params: dict[str, Any]) -> None:
        rows = [(run_id, *row) for row in flatten_params(params)]
        sql = self.dialect.sql

        def work(cursor: Any) -> None:
            cursor.execute(sql("SELECT 1 FROM runs WHERE id = %s"), (run_id,))
            if not cursor.fetchall():  # (MySQL counts only rows an UPDATE changed)
                raise NotFoundError(f"no run with id {run_id!r} in {self.uri}")
            cursor.execute(
                sql("UPDATE runs SET params = %s WHERE id = %s"), (json.dumps(params), run_id)
            )
            cursor.execute(sql("DELETE FROM run_params WHERE run_id = %s"), (run_id,))
            _many(cursor, sql(_INSERT_PARAM), rows)

        self._run(work, f"writing the params of run {run_id}")

    # -- ranks and series --------------------------------------------------------------------

    def join_rank(self, run_id: str, rank: int, host: str, pid: int) -> RankRecord:
        upsert = self.dialect.upsert(
            "run_ranks",
            ("run_id", '"rank"', "host", "pid", "status", "heartbeat", "ended"),
            '(run_id, "rank")',
            ("host", "pid", "status", "heartbeat", "ended"),
        )
        self._run(
            lambda cursor: cursor.execute(
                upsert, (run_id, rank, host, pid, "running", time.time(), None)
            ),
            f"writing rank {rank} of run {run_id}",
        )
        return next(r for r in self.ranks(run_id) if r.rank == rank)

    def ranks(self, run_id: str) -> list[RankRecord]:
        rows = self._query(
            f'SELECT {_RANKS} FROM run_ranks WHERE run_id = %s ORDER BY "rank"',
            (run_id,),
            f"the ranks of run {run_id}",
        )
        return [self._rank_record(row) for row in rows]

    def series(self, run_id: str, rank: int | None = 0) -> list[SeriesRecord]:
        what = f"the series of run {run_id}"
        if rank is None:
            return self._series_where("run_id = %s", [run_id], what)
        return self._series_where('run_id = %s AND "rank" = %s', [run_id, rank], what)

    def series_of_runs(self, run_ids: Sequence[str]) -> dict[str, list[SeriesRecord]]:
        found: dict[str, list[SeriesRecord]] = {run_id: [] for run_id in run_ids}
        for start in range(0, len(run_ids), SERIES_BATCH):
            batch = list(run_ids[start : start + SERIES_BATCH])
            clause = f"run_id IN ({', '.join(['%s'] * len(batch))})"
            for record in self._series_where(clause, batch, f"the series of {len(batch)} runs"):
                found[record.run_id].append(record)
        return found

    def _series_where(self, clause: str, args: Sequence[Any], what: str) -> list[SeriesRecord]:
        """The series rows matching ``clause`` (SQL over the series table), by run, key and
        rank."""
        dialect = self.dialect
        query = (
            f'SELECT run_id, id, "key", kind, {", ".join(dialect.summary_columns)}, "rank" '
            f'FROM series WHERE {clause} ORDER BY run_id, "key", "rank"'
        )
        types = f"run_id:text id:int key:text kind:text {dialect.summary_types} rank:int"
        records = []
        for row in self._query(query, args, what):
            run_id, sid, key, kind, *values, series_rank = decode_row(
                row, types, f"{self._label}: reading {what}"
            )
            summary = dialect.summary(kind, values)
            records.append(SeriesRecord(sid, run_id, key, kind, summary, series_rank))
        return records

    def ensure_series(self, run_id: str, key: str, kind: str, rank: int = 0) -> int:
        select = self.dialect.sql(
            'SELECT id, kind FROM series WHERE run_id = %s AND "key" = %s AND "rank" = %s'
        )
        insert = self.dialect.upsert(
            "series", ("run_id", '"key"', "kind", '"rank"'), self.dialect.series_conflict
        )

        def work(cursor: Any) -> tuple[int, str]:
            cursor.execute(select, (run_id, key, rank))
            row = cursor.fetchone()
            if row is None:  # insert-or-ignore: another process may create it meanwhile
                cursor.execute(insert, (run_id, key, kind, rank))
                cursor.execute(select, (run_id, key, rank))
                row = cursor.fetchone()
            series_id, stored = decode_row(
                row, "id:int kind:text", f"{self._label}: series {key!r} of run {run_id}"
            )
            return int(series_id), str(stored)

        series_id, stored = self._run(work, f"writing series {key!r} of run {run_id}")
        if stored != kind:
            raise KindMismatchError(
                f"key {key!r} of run {run_id} holds {stored} values; got a {kind}"
            )
        return series_id

    # -- scalar chunks -----------------------------------------------------------------------

    def _chunk_rows(self, clause: str, args: Sequence[Any], with_data: bool) -> list[ChunkRow]:
        columns = _CHUNK_READ.format(data="data" if with_data else "NULL")
        what = f"the chunks of series {args[0]}"
        return self._rows_of(ChunkRow, f"SELECT {columns} FROM chunks {clause}", args, what)

    def open_chunk(self, series_id: int) -> ChunkRow | None:
        rows = self._chunk_rows(
            "WHERE series_id = %s ORDER BY seq DESC LIMIT 1", (series_id,), with_data=True
        )
        return rows[0] if rows and not rows[0].sealed else None

    def next_chunk_seq(self, series_id: int) -> int:
        ((last,),) = self._query(
            "SELECT MAX(seq) FROM chunks WHERE series_id = %s",
            (series_id,),
            f"the chunks of series {series_id}",
        )
        return 0 if last is None else int(last) + 1

    def commit(
        self,
        run_id: str,
        chunks: Sequence[tuple[int, EncodedChunk]],
        summaries: Sequence[tuple[int, Summary]],
        run_fields: dict[str, Any],
        rank: int = 0,
    ) -> None:
        dialect = self.dialect
        rows = [
            (
                sid,
                c.seq,
                c.first_step,
                c.last_step,
                c.min_epoch,
                c.max_epoch,
                c.size,
                bool(c.sealed),
                c.stats,
                c.checksum,
                c.data,
            )
            for sid, c in chunks
        ]
        updates = [(*dialect.summary_values(s), sid) for sid, s in summaries]
        set_summary = dialect.sql(
            f"UPDATE series SET {', '.join(f'{n} = %s' for n in dialect.summary_columns)} "
            "WHERE id = %s"
        )

        def work(cursor: Any) -> None:
            if rows:
                dialect.write_chunks(cursor, rows)
            _many(cursor, set_summary, updates)
            if run_fields:
                self._set_run_fields(cursor, run_id, run_fields, rank)

        self._run(work, f"writing the points of run {run_id}")

    def chunks(
        self,
        series_id: int,
        steps: tuple[int, int] | None = None,
        epochs: tuple[int, int] | None = None,
        with_data: bool = True,
    ) -> list[ChunkRow]:
        clause, args = "WHERE series_id = %s", [series_id]
        if steps is not None:
            clause += " AND last_step >= %s AND first_step <= %s"
            args += [steps[0], steps[1]]
        if epochs is not None:
            clause += " AND max_epoch >= %s AND min_epoch <= %s"
            args += [epochs[0], epochs[1]]
        # Sorted here, not by the database: with a step range SQLite walks the step index
        # and would sort the selected blobs in a temporary B-tree (~10 ms per 1M points).
        return sorted(self._chunk_rows(clause, args, with_data), key=attrgetter("seq"))

    # -- arrays, records, images, artifacts, events -------------------------------------------

    def commit_arrays(self, batch: ArrayBatch) -> None:
        dialect, sql = self.dialect, self.dialect.sql
        steps: dict[int, list[int]] = {}
        for c in batch.chunks:
            steps.setdefault(c.series_id, []).extend((c.first_step, c.last_step))
        items: list[RecordRow | ImageRow] = [*batch.records, *batch.images]
        for item in items:
            steps.setdefault(item.series_id, []).append(item.step)
        tensor_series = sorted({c.series_id for c in batch.chunks})
        item_series = sorted({item.series_id for item in items})
        segments = [
            tuple(json.dumps(list(g.shape)) if n == "shape" else getattr(g, n) for n in SEGMENT)
            for g in batch.segments
        ]

        def work(cursor: Any) -> None:
            _many(
                cursor, dialect.upsert("tensor_segments", SEGMENT, "(series_id, segment)"), segments
            )
            _many(
                cursor,
                dialect.upsert(
                    "tensor_chunks", TENSOR_CHUNK, "(series_id, segment, chunk)", TENSOR_CHUNK[3:]
                ),
                [_values(c, TENSOR_CHUNK) for c in batch.chunks],
            )
            _many(
                cursor,
                f"INSERT INTO records ({', '.join(RECORD)}) VALUES ({dialect.params(len(RECORD))})",
                [_values(r, RECORD) for r in batch.records],
            )
            _many(
                cursor,
                dialect.upsert("images", IMAGE, "(series_id, step, position)", IMAGE[3:]),
                [_values(i, IMAGE) for i in batch.images],
            )
            _many(
                cursor,
                dialect.upsert("artifacts", ARTIFACT, "(run_id, name)", ARTIFACT[2:]),
                [_values(a, ARTIFACT) for a in batch.artifacts],
            )
            _many(
                cursor,
                sql(
                    f"UPDATE series SET last_step = {dialect.greatest}(COALESCE(last_step, %s), "
                    f"%s), first_step = {dialect.least}(COALESCE(first_step, %s), %s) "
                    "WHERE id = %s"
                ),
                [(max(s), max(s), min(s), min(s), sid) for sid, s in sorted(steps.items())],
            )
            _many(
                cursor,
                sql(
                    "UPDATE series SET count = (SELECT COALESCE(SUM(count), 0) FROM "
                    "tensor_chunks WHERE series_id = %s) WHERE id = %s"
                ),
                [(sid, sid) for sid in tensor_series],
            )
            _many(
                cursor,
                sql(
                    "UPDATE series SET count = (SELECT COUNT(*) FROM records WHERE series_id = "
                    "%s) + (SELECT COUNT(*) FROM images WHERE series_id = %s) WHERE id = %s"
                ),
                [(sid, sid, sid) for sid in item_series],
            )

        if batch:
            self._run(work, "writing tensor, image, record and artifact index rows")

    def tensor_index(self, series_id: int) -> tuple[list[Segment], list[ChunkIndex]]:
        sql = self.dialect.sql
        chunks_sql = sql(
            f"SELECT {', '.join(TENSOR_CHUNK)} FROM tensor_chunks WHERE series_id = %s "
            "ORDER BY segment, chunk"
        )
        segments_sql = sql(
            f"SELECT {', '.join(SEGMENT)} FROM tensor_segments WHERE series_id = %s "
            "ORDER BY segment"
        )

        def work(cursor: Any) -> tuple[list[Any], list[Any]]:  # chunks first: see Backend
            cursor.execute(chunks_sql, (series_id,))
            chunks = list(cursor.fetchall())
            cursor.execute(segments_sql, (series_id,))
            return list(cursor.fetchall()), chunks

        what = f"the tensor index of series {series_id}"
        segment_rows, chunk_rows = self._run(work, f"reading {what}", write=False)
        where = f"{self._label}: reading {what}"
        return (
            [row_of(Segment, row, where) for row in segment_rows],
            [row_of(ChunkIndex, row, where) for row in chunk_rows],
        )

    def records(self, series_id: int) -> list[RecordRow]:
        return self._rows_of(
            RecordRow,
            f"SELECT {', '.join(RECORD)} FROM records WHERE series_id = %s "
            f"ORDER BY step, {self.dialect.row_order}",
            (series_id,),
            f"the records of series {series_id}",
        )

    def images(self, series_id: int) -> list[ImageRow]:
        return self._rows_of(
            ImageRow,
            f"SELECT {', '.join(IMAGE)} FROM images WHERE series_id = %s ORDER BY step, position",
            (series_id,),
            f"the images of series {series_id}",
        )

    def artifacts(self, run_id: str) -> list[ArtifactRow]:
        return self._rows_of(
            ArtifactRow,
            f"SELECT {', '.join(ARTIFACT)} FROM artifacts WHERE run_id = %s ORDER BY name",
            (run_id,),
            f"the artifacts of run {run_id}",
        )

    def add_event(self, event: EventRow) -> None:
        insert = self.dialect.sql(
            f"INSERT INTO events ({', '.join(EVENT)}) VALUES ({', '.join(['%s'] * len(EVENT))})"
        )
        self._run(
            lambda cursor: cursor.execute(insert, _values(event, EVENT_FIELDS)),
            f"writing an event of run {event.run_id}",
        )

    def events(self, run_id: str) -> list[EventRow]:
        return self._rows_of(
            EventRow,
            f"SELECT {', '.join(EVENT)} FROM events WHERE run_id = %s "
            'ORDER BY "time", "step", "rank", "trigger"',
            (run_id,),
            f"the events of run {run_id}",
        )

    def apply_repairs(self, batch: RepairBatch) -> None:
        dialect, sql = self.dialect, self.dialect.sql
        tensor_key = "WHERE series_id = %s AND segment = %s AND chunk = %s"
        set_cut = ", ".join(f"{name} = %s" for name in TENSOR_CHUNK[3:])
        cuts = [
            (*_values(c, TENSOR_CHUNK[3:]), *_values(c, TENSOR_CHUNK[:3]))
            for c in batch.cut_tensor_chunks
        ]
        set_summary = ", ".join(f"{name} = %s" for name in dialect.summary_columns)
        chunk_index = [
            (c.first_step, c.last_step, c.min_epoch, c.max_epoch, c.size, c.stats, sid, c.seq)
            for sid, c in batch.chunk_index
        ]

        def work(cursor: Any) -> None:
            _many(cursor, sql("DELETE FROM chunks WHERE series_id = %s AND seq = %s"), batch.chunks)
            _many(
                cursor,
                sql(
                    "UPDATE chunks SET first_step = %s, last_step = %s, min_epoch = %s, "
                    "max_epoch = %s, count = %s, stats = %s WHERE series_id = %s AND seq = %s"
                ),
                chunk_index,
            )
            _many(cursor, sql(f"DELETE FROM tensor_chunks {tensor_key}"), batch.tensor_chunks)
            _many(cursor, sql(f"UPDATE tensor_chunks SET {set_cut} {tensor_key}"), cuts)
            _many(
                cursor,
                sql("DELETE FROM images WHERE series_id = %s AND step = %s AND position = %s"),
                batch.images,
            )
            _many(
                cursor,
                sql("DELETE FROM artifacts WHERE run_id = %s AND name = %s"),
                batch.artifacts,
            )
            _many(
                cursor,
                sql(f"UPDATE series SET {set_summary} WHERE id = %s"),
                [(*dialect.summary_values(s), sid) for sid, s in batch.summaries],
            )
            _many(
                cursor,
                sql("UPDATE series SET count = %s, first_step = %s, last_step = %s WHERE id = %s"),
                [(count, first, last, sid) for sid, count, first, last in batch.step_summaries],
            )

        if batch:
            self._run(work, "writing repairs")

    # -- integrity -------------------------------------------------------------------------

    def _check_database(self) -> list[Problem]:
        problems = self._database_problems()
        try:
            version = self.schema_version
        except StoreError as exc:
            return [*problems, Problem(self.uri, str(exc))]
        if version != len(self.migrations):
            expected = len(self.migrations)
            problems.append(Problem(self.uri, f"schema version {version}, expected {expected}"))
        return problems

    def _series_names(self) -> list[Any]:
        return self._query('SELECT id, run_id, "key", "rank" FROM series', (), "the series")

    def _chunk_page(self, after: tuple[Any, Any], size: int) -> list[Any]:
        return self._query(
            f"SELECT {_CHUNK_READ.format(data='data')} FROM chunks "
            "WHERE (series_id, seq) > (%s, %s) ORDER BY series_id, seq LIMIT %s",
            (*after, size),
            "the chunks",
        )
