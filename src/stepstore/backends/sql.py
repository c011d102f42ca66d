"""What the server backends share: PostgreSQL (``postgresql.py``) and MySQL/MariaDB (``mysql.py``).

Both keep the tables, columns and meaning of the embedded SQLite store (``sqlite.py``):
runs with flattened params and tags, series with summaries, scalar chunks as blobs, and the
index rows of tensors, records, images and artifacts. This module holds every statement
the two have in common, written to run on both: ``%s`` placeholders, ``"key"`` quoted with
double quotes (MySQL sessions run with ``ANSI_QUOTES``), ``GREATEST``/``LEAST`` for SQLite's
two-argument ``MAX``/``MIN``. A subclass supplies the driver, its connection settings, its
schema migrations, upserts and the bulk path for chunks.

Connections and transactions
    One connection per backend object, guarded by a lock that the writer thread and the
    caller share. Autocommit is off and every call runs in a transaction of its own that
    ends in ``COMMIT`` (reads too, so no connection sits idle in a transaction holding
    locks or an old snapshot). A transaction the server aborts as a deadlock or
    serialization failure is retried; a broken connection is replaced on the next call.
    Driver errors become :class:`~stepstore.errors.StoreError` naming the store's URI with
    any password masked.

Local files
    Journals are local files of the recording process (see ``journal.py``), so a server
    store keeps them in ``$STEPSTORE_JOURNAL_DIR/<name>`` or, without it,
    ``~/.cache/stepstore/journal/<name>`` (``$XDG_CACHE_HOME`` is honoured), where
    ``<name>`` is ``host-port-database`` made filename-safe: a process recovers only the
    journals of runs of this database. Tensors, images and artifacts go to
    ``$STEPSTORE_ARRAY_STORE`` or ``~/.local/share/stepstore/arrays/<name>``
    (``$XDG_DATA_HOME`` is honoured); a team sharing a server store should pass
    ``array_store=`` a shared path or fsspec URL (or set ``$STEPSTORE_ARRAY_STORE``) so that
    every reader finds the arrays, since a run records where its arrays went.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import math
import os
import random
import re
import threading
import time
import weakref
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

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
    RUN_COLUMNS,
    ArrayBatch,
    ArtifactRow,
    Backend,
    ChunkRow,
    ImageRow,
    Problem,
    RankRecord,
    RecordRow,
    RepairBatch,
    RunRecord,
    SeriesRecord,
    chunk_selection,
    decode_row,
    flatten_params,
    row_of,
    run_row,
    schema_version_of,
)

_T = TypeVar("_T")
_R = TypeVar("_R")

#: Seconds a connection attempt may take before the store is reported unreachable.
CONNECT_TIMEOUT = 10
#: Attempts at a transaction the server aborted as a deadlock or serialization failure.
ATTEMPTS = 5
#: Run ids per query of ``series_of_runs``.
SERIES_BATCH = 500

CHUNK_COLUMNS = (
    "series_id",
    "seq",
    "first_step",
    "last_step",
    "min_epoch",
    "max_epoch",
    "count",
    "sealed",
    "stats",
    "checksum",
    "data",
)
#: Columns of the tables that hold the records of ``base.py``, named as the records' fields.
SEGMENT = tuple(f.name for f in dataclasses.fields(Segment))
TENSOR_CHUNK = tuple(f.name for f in dataclasses.fields(ChunkIndex))
RECORD = tuple(f.name for f in dataclasses.fields(RecordRow))
IMAGE = tuple(f.name for f in dataclasses.fields(ImageRow))
ARTIFACT = tuple(f.name for f in dataclasses.fields(ArtifactRow))
_CHUNK_READ = (
    "series_id, seq, first_step, last_step, count, sealed, stats, {data}, checksum, min_epoch, "
    "max_epoch"
)
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Query parameters that change how a client connects, not which store it reaches.
_CONNECTION_ONLY = frozenset({"password", "connect_timeout", "sslmode", "application_name"})


def mask_password(uri: str) -> str:
    """``uri`` with the password of its user info and any ``password=`` parameter as ``***``."""
    parts = urlsplit(uri)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
    query = re.sub(r"(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return parts._replace(netloc=netloc, query=query).geturl()


@dataclass(frozen=True)
class ServerAddress:
    """Where a server store lives, parsed from its URI.

    Attributes:
        uri: The URI as given (it may hold a password: never show it).
        user: User name, or ``None`` for the driver's default.
        password: Password, or ``None``.
        host: Host name or address (``""`` for the driver's default).
        port: TCP port.
        database: Database name (``""`` for the driver's default).
        query: The URI's query parameters.
    """

    uri: str
    user: str | None
    password: str | None
    host: str
    port: int
    database: str
    query: dict[str, str]

    @classmethod
    def parse(cls, uri: str, default_port: int) -> ServerAddress:
        """Split ``scheme://user:password@host:port/database?params``.

        Raises:
            InvalidArgumentError: The port is not a number or the path has more than a
                database name.
        """
        parts = urlsplit(uri)
        try:
            port = parts.port or default_port
        except ValueError:
            raise InvalidArgumentError(
                f"store URI {mask_password(uri)}: the port is not a number from 0 to 65535"
            ) from None
        database = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
        if "/" in database:
            raise InvalidArgumentError(
                f"store URI {mask_password(uri)}: expected scheme://user@host:port/database"
            )
        return cls(
            uri=uri,
            user=None if parts.username is None else unquote(parts.username),
            password=None if parts.password is None else unquote(parts.password),
            host=parts.hostname or "",
            port=port,
            database=database,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
        )

    @property
    def masked(self) -> str:
        """The URI with its password masked: safe for messages."""
        return mask_password(self.uri)

    @property
    def local_name(self) -> str:
        """``host-port-database`` made filename-safe, naming this store's local directories.

        Query parameters that may select other tables of the same database (PostgreSQL's
        ``options=-csearch_path=...``, say) add a short digest, so two stores in one
        database never share a journal directory.
        """
        name = _SAFE.sub("_", f"{self.host or 'localhost'}-{self.port}-{self.database}")
        selecting = sorted((k, v) for k, v in self.query.items() if k not in _CONNECTION_ONLY)
        if selecting:
            name += "-" + hashlib.sha256(repr(selecting).encode()).hexdigest()[:8]
        return name


def import_driver(module: str, extra: str, uri: str) -> ModuleType:
    """Import a database driver, or explain which extra installs it.

    Raises:
        InvalidArgumentError: The driver is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InvalidArgumentError(
            f"store {uri} needs the {module} package: pip install 'stepstore[{extra}]'"
        ) from None


def _null_nan(value: float | None) -> float | None:
    """``value``, with NaN as ``None`` (stored as NULL, as SQLite does)."""
    return None if value is None or math.isnan(value) else value


def _values(item: object, names: Sequence[str]) -> tuple[Any, ...]:
    """The fields ``names`` of a record, as a row."""
    return tuple(getattr(item, name) for name in names)


#: Connections a child process inherited through ``fork()`` and let go of: kept
#: referenced, since closing one (even by garbage collection) ends the parent's session.
_INHERITED: list[Any] = []


def _release(connection: Any, owner: int) -> None:
    """Close a connection that may already be broken; keep one that ``owner`` (another
    process, the parent of a fork) is still using."""
    if os.getpid() != owner:
        _INHERITED.append(connection)
        return
    with contextlib.suppress(Exception):
        connection.close()


class SQLBackend(Backend):
    """A store in a database server; subclasses bind it to one driver and dialect.

    Args:
        uri: ``scheme://user:password@host:port/database``.
        create: Create the schema in an empty database (otherwise an empty database is
            ``NotAStoreError``).
        stale_after: Seconds without a heartbeat after which a running run shows as
            ``crashed``.
        fsync: Whether a commit waits until it is durable (where the server lets a
            session choose).

    Raises:
        StoreError: The server cannot be reached or refuses the credentials.
        NotAStoreError: ``create`` is false and the database holds no stepstore schema.
        SchemaVersionError: The schema is newer than this stepstore understands.
    """

    #: Ordered, append-only schema migrations; entry ``i`` brings the schema to version
    #: ``i + 1``. Version 0 is a database without the ``meta`` table.
    migrations: ClassVar[Sequence[Sequence[str]]] = ()
    #: TCP port when the URI names none.
    default_port: ClassVar[int] = 0
    #: SQL expression naming the schema (database) that unqualified tables live in.
    current_schema_sql: ClassVar[str] = ""
    #: Columns of ``series`` holding the summary, in the order of :meth:`_summary_values`.
    summary_columns: ClassVar[tuple[str, ...]] = (
        "count",
        "min",
        "max",
        "last",
        "first_step",
        "last_step",
    )
    #: Types of :attr:`summary_columns` as stored (see ``base.decode_row``).
    summary_types: ClassVar[str] = (
        "count:int min:float? max:float? last:float? first_step:int? last_step:int?"
    )
    #: Conflict target of the unique (run, key, rank) index of ``series`` (for upserts).
    series_key_conflict: ClassVar[str] = '(run_id, "key", "rank")'

    def __init__(
        self, uri: str, *, create: bool, stale_after: float = 60.0, fsync: bool = True
    ) -> None:
        self.address = ServerAddress.parse(uri, self.default_port)
        self.uri = self.address.masked
        self.stale_after = stale_after
        self.fsync = fsync
        self._lock = threading.RLock()
        self._connection_obj: Any = None
        self._owner = os.getpid()
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._closed = False
        self._connection()
        try:
            self._migrate(create)
        except BaseException:
            self.close()
            raise

    # -- what a dialect provides -----------------------------------------------------------

    @abstractmethod
    def _connect(self) -> Any:
        """A new connection (autocommit off, session settings applied).

        Raises:
            StoreError: The server cannot be reached or refuses the credentials; the
                message names :attr:`uri` and the reason.
        """

    @abstractmethod
    def _alive(self, connection: Any) -> bool:
        """Whether ``connection`` can still be used."""

    @property
    @abstractmethod
    def _driver_error(self) -> type[Exception]:
        """The driver's base exception class."""

    @abstractmethod
    def _transient(self, error: Exception) -> bool:
        """Whether ``error`` aborted the transaction as a deadlock or serialization failure."""

    @abstractmethod
    def _reason(self, error: Exception) -> str:
        """A one-line description of a driver error."""

    @abstractmethod
    def _schema_lock(self, cursor: Any) -> contextlib.AbstractContextManager[None]:
        """Hold the lock that serialises schema migrations across processes."""

    @abstractmethod
    def _upsert_sql(
        self, table: str, columns: Sequence[str], conflict: str, update: Sequence[str] = ()
    ) -> str:
        """``INSERT`` of one row of ``columns`` that, when the row exists (by the unique
        index named by ``conflict``), updates the ``update`` columns or does nothing."""

    def _migration_step(self, cursor: Any, statement: str) -> None:
        """Execute one migration statement (a dialect may fill in templates, or skip what
        an interrupted migration applied)."""
        cursor.execute(statement)

    def _write_chunks(self, cursor: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert chunk rows (:data:`CHUNK_COLUMNS`), replacing rows with the same key."""
        cursor.executemany(
            self._upsert_sql("chunks", CHUNK_COLUMNS, "(series_id, seq)", CHUNK_COLUMNS[2:]),
            rows,
        )

    def _summary_values(self, summary: Summary) -> tuple[Any, ...]:
        """The values of :attr:`summary_columns` for ``summary`` (NaN stored as NULL)."""
        return (
            summary.count,
            _null_nan(summary.min),
            _null_nan(summary.max),
            _null_nan(summary.last),
            summary.first_step,
            summary.last_step,
        )

    def _summary(self, kind: str, values: Sequence[Any]) -> Summary:
        """The summary stored as ``values`` (of :attr:`summary_columns`).

        A counted scalar series with a NULL ``last`` ended in NaN, as in SQLite.
        """
        count, lo, hi, last, first_step, last_step = values[:6]
        if kind == "scalar" and count and last is None:
            last = math.nan
        return Summary(count, lo, hi, last, first_step, last_step)

    # -- connection and transactions -----------------------------------------------------

    def _cursor(self, connection: Any) -> Any:
        """A cursor of ``connection`` (a backend may ask its driver for a faster kind)."""
        return connection.cursor()

    def _connection(self) -> Any:
        """The open connection, connecting (again) if there is none, it broke, or it was
        inherited from the parent process through ``fork()``."""
        if self._closed:
            raise StoreError(f"{self.uri}: the store was closed")
        connection = self._connection_obj
        if connection is None or self._owner != os.getpid() or not self._alive(connection):
            self._drop_connection()
            self._connection_obj = self._connect()
            self._owner = os.getpid()
            self._finalizer = weakref.finalize(self, _release, self._connection_obj, self._owner)
        return self._connection_obj

    def _drop_connection(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._connection_obj = None

    def _run(self, work: Callable[[Any], _T], what: str) -> _T:
        """Run ``work(cursor)`` in a transaction of its own and commit it.

        Retries a transaction that the server aborted as a deadlock or serialization
        failure, or that lost its connection before ``COMMIT`` was sent (a server restart,
        an idle connection killed): nothing of it was committed, and the retry connects
        again. Rolls back and reports any other failure: a driver error as a
        ``StoreError`` naming the store and ``what`` the transaction was doing.
        """
        with self._lock:
            attempt = 1
            while True:
                connection = self._connection()
                committing = False
                try:
                    with self._cursor(connection) as cursor:
                        result = work(cursor)
                    committing = True
                    connection.commit()
                    return result
                except BaseException as exc:
                    with contextlib.suppress(Exception):
                        connection.rollback()
                    if not isinstance(exc, self._driver_error):
                        raise
                    lost = not committing and not self._alive(connection)
                    if attempt < ATTEMPTS and (lost or self._transient(exc)):
                        time.sleep(random.uniform(0.005, 0.05) * attempt)
                        attempt += 1
                        continue
                    raise StoreError(f"{self.uri}: {what}: {self._reason(exc)}") from exc

    def _query(
        self, sql: str, args: Sequence[Any] = (), what: str = "the database"
    ) -> list[tuple[Any, ...]]:
        """Rows of one read statement, which reads ``what`` (named in errors)."""

        def work(cursor: Any) -> list[tuple[Any, ...]]:
            cursor.execute(sql, args)
            return list(cursor.fetchall())

        return self._run(work, f"reading {what}")

    def _rows_of(self, cls: type[_R], sql: str, args: Sequence[Any], what: str) -> list[_R]:
        """Rows of one read statement as records of type ``cls``, checked."""
        where = f"{self.uri}: reading {what}"
        return [row_of(cls, row, where) for row in self._query(sql, args, what)]

    @staticmethod
    def _many(cursor: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """``executemany`` that skips an empty batch."""
        if rows:
            cursor.executemany(sql, rows)

    # -- schema ----------------------------------------------------------------------------

    def _read_version(self, cursor: Any) -> int:
        cursor.execute(
            "SELECT COUNT(*) FROM information_schema.tables "
            f"WHERE table_schema = {self.current_schema_sql} AND table_name = 'meta'"
        )
        if not cursor.fetchone()[0]:
            return 0
        cursor.execute("SELECT value FROM meta WHERE \"key\" = 'schema_version'")
        return schema_version_of(cursor.fetchone(), self.uri)

    @property
    def schema_version(self) -> int:
        """The schema version of the open store."""
        return self._run(self._read_version, "reading the schema version")

    def _refuse_newer(self, version: int) -> None:
        supported = len(self.migrations)
        if version > supported:
            raise SchemaVersionError(
                f"{self.uri}: store schema version {version} is newer than this stepstore "
                f"supports ({supported}); upgrade stepstore to read or write it"
            )

    def _migrate(self, create: bool) -> None:
        version = self._run(self._read_version, "reading the schema version")
        self._refuse_newer(version)
        if version == len(self.migrations):
            return
        if version == 0 and not create:
            raise NotAStoreError(
                f"{self.uri}: not a stepstore store (the database holds no stepstore "
                "schema); record a run with stepstore.init(store=...) first"
            )
        self._run(self._apply_migrations, "migrating the schema")

    def _apply_migrations(self, cursor: Any) -> None:
        with self._schema_lock(cursor):
            version = self._read_version(cursor)  # another process may have migrated meanwhile
            self._refuse_newer(version)
            set_version = self._upsert_sql("meta", ('"key"', "value"), '("key")', ("value",))
            for number, statements in enumerate(self.migrations[version:], start=version + 1):
                for statement in statements:
                    self._migration_step(cursor, statement)
                cursor.execute(set_version, ("schema_version", str(number)))
            # committed before the lock is released (MySQL's is the session's), so the next
            # process to take it reads the new version and does not apply a migration twice
            cursor.connection.commit()

    # -- local directories -----------------------------------------------------------------

    @property
    def journal_dir(self) -> Path:
        base = os.environ.get("STEPSTORE_JOURNAL_DIR")
        if base:
            return Path(base).expanduser() / self.address.local_name
        cache = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
        return cache / "stepstore" / "journal" / self.address.local_name

    @property
    def default_array_store(self) -> str:
        explicit = os.environ.get("STEPSTORE_ARRAY_STORE")
        if explicit:
            return explicit
        data = Path(os.environ.get("XDG_DATA_HOME") or "~/.local/share").expanduser()
        return str(data / "stepstore" / "arrays" / self.address.local_name)

    # -- runs ------------------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        values = [getattr(run, name) for name in RUN_COLUMNS]
        values = [json.dumps(v) if isinstance(v, (dict, list)) else v for v in values]
        params = [(run.id, *row) for row in flatten_params(run.params)]
        tags = [(run.id, tag) for tag in dict.fromkeys(run.tags)]

        def work(cursor: Any) -> None:
            cursor.execute(
                f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) "
                f"VALUES ({', '.join(['%s'] * len(values))})",
                values,
            )
            self._many(
                cursor,
                "INSERT INTO run_params (run_id, path, num, str) VALUES (%s, %s, %s, %s)",
                params,
            )
            self._many(cursor, "INSERT INTO run_tags (run_id, tag) VALUES (%s, %s)", tags)

        self._run(work, f"writing run {run.id}")

    def get_run(self, id_or_name: str) -> RunRecord:
        select = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"

        def work(cursor: Any) -> list[tuple[Any, ...]]:
            cursor.execute(f"{select} WHERE id = %s", (id_or_name,))
            rows = cursor.fetchall()
            if not rows:
                cursor.execute(f"{select} WHERE name = %s ORDER BY created, id", (id_or_name,))
                rows = cursor.fetchall()
            return list(rows)

        rows = self._run(work, f"reading run {id_or_name!r}")
        if not rows:
            raise NotFoundError(f"no run with id or name {id_or_name!r} in {self.uri}")
        if len(rows) > 1:
            ids = ", ".join(str(row[0]) for row in rows)
            raise InvalidArgumentError(
                f"run name {id_or_name!r} is ambiguous in {self.uri}: use one of the ids {ids}"
            )
        return self._record(rows[0])

    def find_runs(self, where: str | None = None, project: str | None = None) -> list[RunRecord]:
        from ..query.filter import Dialect, compile_filter

        clauses: list[str] = []
        args: list[Any] = []
        if where:
            sql, where_args = compile_filter(
                where, Dialect(param="%s", status_sql=self._status_sql())
            )
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

    @staticmethod
    def _set_run_fields(cursor: Any, run_id: str, fields: dict[str, Any], rank: int = 0) -> None:
        where, table, allowed = run_row(rank)
        unknown = set(fields) - allowed
        if unknown:
            raise InvalidArgumentError(f"cannot update run fields {sorted(unknown)}")
        names = sorted(fields)
        values = [
            json.dumps(fields[n]) if isinstance(fields[n], dict) else fields[n] for n in names
        ]
        cursor.execute(
            f"UPDATE {table} SET {', '.join(n + ' = %s' for n in names)} WHERE {where}",
            [*values, run_id, *([rank] if rank else [])],
        )

    def update_run(self, run_id: str, **fields: Any) -> None:
        self._run(
            lambda cursor: self._set_run_fields(cursor, run_id, fields), f"writing run {run_id}"
        )

    # -- series ----------------------------------------------------------------------------

    def join_rank(self, run_id: str, rank: int, host: str, pid: int) -> RankRecord:
        upsert = self._upsert_sql(
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
        columns = ", ".join(f'"{c}"' for c in RANK_COLUMNS)
        rows = self._query(
            f'SELECT {columns} FROM run_ranks WHERE run_id = %s ORDER BY "rank"',
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
        query = (
            f'SELECT run_id, id, "key", kind, {", ".join(self.summary_columns)}, "rank" '
            f'FROM series WHERE {clause} ORDER BY run_id, "key", "rank"'
        )
        types = f"run_id:text id:int key:text kind:text {self.summary_types} rank:int"
        records = []
        for row in self._query(query, args, what):
            run_id, sid, key, kind, *values, series_rank = decode_row(
                row, types, f"{self.uri}: reading {what}"
            )
            summary = self._summary(kind, values)
            records.append(SeriesRecord(sid, run_id, key, kind, summary, series_rank))
        return records

    def ensure_series(self, run_id: str, key: str, kind: str, rank: int = 0) -> int:
        select = 'SELECT id, kind FROM series WHERE run_id = %s AND "key" = %s AND "rank" = %s'
        insert = self._upsert_sql(
            "series", ("run_id", '"key"', "kind", '"rank"'), self.series_key_conflict
        )

        def work(cursor: Any) -> tuple[int, str]:
            cursor.execute(select, (run_id, key, rank))
            row = cursor.fetchone()
            if row is None:  # insert-or-ignore: another process may create it meanwhile
                cursor.execute(insert, (run_id, key, kind, rank))
                cursor.execute(select, (run_id, key, rank))
                row = cursor.fetchone()
            series_id, stored = decode_row(
                row, "id:int kind:text", f"{self.uri}: series {key!r} of run {run_id}"
            )
            return int(series_id), str(stored)

        series_id, stored = self._run(work, f"writing series {key!r} of run {run_id}")
        if stored != kind:
            raise KindMismatchError(
                f"key {key!r} of run {run_id} holds {stored} values; got a {kind}"
            )
        return series_id

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
        updates = [(*self._summary_values(s), sid) for sid, s in summaries]
        set_summary = ", ".join(f"{name} = %s" for name in self.summary_columns)

        def work(cursor: Any) -> None:
            if rows:
                self._write_chunks(cursor, rows)
            self._many(cursor, f"UPDATE series SET {set_summary} WHERE id = %s", updates)
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
        clause, args = chunk_selection(series_id, steps, epochs, "%s")
        return self._chunk_rows(clause, args, with_data)

    # -- arrays, records, images, artifacts --------------------------------------------------

    def commit_arrays(self, batch: ArrayBatch) -> None:
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
            self._many(
                cursor,
                self._upsert_sql("tensor_segments", SEGMENT, "(series_id, segment)"),
                segments,
            )
            self._many(
                cursor,
                self._upsert_sql(
                    "tensor_chunks", TENSOR_CHUNK, "(series_id, segment, chunk)", TENSOR_CHUNK[3:]
                ),
                [_values(c, TENSOR_CHUNK) for c in batch.chunks],
            )
            self._many(
                cursor,
                f"INSERT INTO records ({', '.join(RECORD)}) "
                f"VALUES ({', '.join(['%s'] * len(RECORD))})",
                [_values(r, RECORD) for r in batch.records],
            )
            self._many(
                cursor,
                self._upsert_sql("images", IMAGE, "(series_id, step, position)", IMAGE[3:]),
                [_values(i, IMAGE) for i in batch.images],
            )
            self._many(
                cursor,
                self._upsert_sql("artifacts", ARTIFACT, "(run_id, name)", ARTIFACT[2:]),
                [_values(a, ARTIFACT) for a in batch.artifacts],
            )
            self._many(
                cursor,
                "UPDATE series SET last_step = GREATEST(COALESCE(last_step, %s), %s), "
                "first_step = LEAST(COALESCE(first_step, %s), %s) WHERE id = %s",
                [(max(s), max(s), min(s), min(s), sid) for sid, s in sorted(steps.items())],
            )
            self._many(
                cursor,
                "UPDATE series SET count = (SELECT COALESCE(SUM(count), 0) FROM tensor_chunks "
                "WHERE series_id = %s) WHERE id = %s",
                [(sid, sid) for sid in tensor_series],
            )
            self._many(
                cursor,
                "UPDATE series SET count = (SELECT COUNT(*) FROM records WHERE series_id = %s) "
                "+ (SELECT COUNT(*) FROM images WHERE series_id = %s) WHERE id = %s",
                [(sid, sid, sid) for sid in item_series],
            )

        if batch:
            self._run(work, "writing tensor, image, record and artifact index rows")

    def tensor_index(self, series_id: int) -> tuple[list[Segment], list[ChunkIndex]]:
        def work(cursor: Any) -> tuple[list[Any], list[Any]]:  # chunks first: see Backend
            cursor.execute(
                f"SELECT {', '.join(TENSOR_CHUNK)} FROM tensor_chunks WHERE series_id = %s "
                "ORDER BY segment, chunk",
                (series_id,),
            )
            chunks = list(cursor.fetchall())
            cursor.execute(
                f"SELECT {', '.join(SEGMENT)} FROM tensor_segments WHERE series_id = %s "
                "ORDER BY segment",
                (series_id,),
            )
            return list(cursor.fetchall()), chunks

        what = f"the tensor index of series {series_id}"
        segment_rows, chunk_rows = self._run(work, f"reading {what}")
        where = f"{self.uri}: reading {what}"
        return (
            [row_of(Segment, row, where) for row in segment_rows],
            [row_of(ChunkIndex, row, where) for row in chunk_rows],
        )

    def records(self, series_id: int) -> list[RecordRow]:
        return self._rows_of(
            RecordRow,
            f"SELECT {', '.join(RECORD)} FROM records WHERE series_id = %s ORDER BY step, id",
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

    def apply_repairs(self, batch: RepairBatch) -> None:
        tensor_key = "WHERE series_id = %s AND segment = %s AND chunk = %s"
        set_cut = ", ".join(f"{name} = %s" for name in TENSOR_CHUNK[3:])
        cuts = [
            (*_values(c, TENSOR_CHUNK[3:]), *_values(c, TENSOR_CHUNK[:3]))
            for c in batch.cut_tensor_chunks
        ]
        set_summary = ", ".join(f"{name} = %s" for name in self.summary_columns)
        chunk_index = [
            (c.first_step, c.last_step, c.min_epoch, c.max_epoch, c.size, c.stats, sid, c.seq)
            for sid, c in batch.chunk_index
        ]

        def work(cursor: Any) -> None:
            self._many(cursor, "DELETE FROM chunks WHERE series_id = %s AND seq = %s", batch.chunks)
            self._many(
                cursor,
                "UPDATE chunks SET first_step = %s, last_step = %s, min_epoch = %s, "
                "max_epoch = %s, count = %s, stats = %s WHERE series_id = %s AND seq = %s",
                chunk_index,
            )
            self._many(cursor, f"DELETE FROM tensor_chunks {tensor_key}", batch.tensor_chunks)
            self._many(cursor, f"UPDATE tensor_chunks SET {set_cut} {tensor_key}", cuts)
            self._many(
                cursor,
                "DELETE FROM images WHERE series_id = %s AND step = %s AND position = %s",
                batch.images,
            )
            self._many(
                cursor, "DELETE FROM artifacts WHERE run_id = %s AND name = %s", batch.artifacts
            )
            self._many(
                cursor,
                f"UPDATE series SET {set_summary} WHERE id = %s",
                [(*self._summary_values(s), sid) for sid, s in batch.summaries],
            )
            self._many(
                cursor,
                "UPDATE series SET count = %s, first_step = %s, last_step = %s WHERE id = %s",
                [(count, first, last, sid) for sid, count, first, last in batch.step_summaries],
            )

        if batch:
            self._run(work, "writing repairs")

    # -- integrity -------------------------------------------------------------------------

    def _check_database(self) -> list[Problem]:
        try:
            version = self.schema_version
        except StoreError as exc:
            return [Problem(self.uri, str(exc))]
        if version != len(self.migrations):
            return [Problem(self.uri, f"schema version {version}, expected {len(self.migrations)}")]
        return []

    def _series_names(self) -> list[Any]:
        return self._query('SELECT id, run_id, "key", "rank" FROM series', (), "the series")

    def _chunk_page(self, after: tuple[Any, Any], size: int) -> list[Any]:
        return self._query(
            f"SELECT {_CHUNK_READ.format(data='data')} FROM chunks "
            "WHERE (series_id, seq) > (%s, %s) ORDER BY series_id, seq LIMIT %s",
            (*after, size),
            "the chunks",
        )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop_connection()
