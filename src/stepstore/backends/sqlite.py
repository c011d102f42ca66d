"""The embedded store: a directory holding a SQLite database (WAL mode) and run journals.

Layout::

    STORE/stepstore.db      runs, params, tags, series summaries and scalar chunks
    STORE/journal/          memory-mapped journals of runs being recorded (see journal.py)

Several processes may write different runs at once: every write transaction starts with
``BEGIN IMMEDIATE`` under a 60 s busy timeout, and a flush is a single short transaction.

Every statement runs inside :meth:`SQLiteBackend._reading` or :meth:`SQLiteBackend._writing`,
which turn any ``sqlite3`` error (a damaged file, a full disk, a lock held too long) into a
:class:`~stepstore.errors.StoreError` naming the database and what was being read or
written; rows are checked as they are read (see ``base.decode_row``).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

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
    SERIES_TYPES,
    UPDATABLE,
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

_R = TypeVar("_R")

DB_NAME = "stepstore.db"

#: Ordered, append-only list of migrations; entry ``i`` brings the schema to version ``i + 1``.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            project TEXT NOT NULL,
            name TEXT NOT NULL,
            status TEXT NOT NULL,
            created REAL NOT NULL,
            ended REAL,
            heartbeat REAL,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            git_commit TEXT,
            params TEXT NOT NULL,
            tags TEXT NOT NULL,
            env TEXT NOT NULL,
            capture TEXT NOT NULL,
            writer TEXT NOT NULL,
            journal_seq INTEGER NOT NULL DEFAULT 0)""",
        "CREATE INDEX runs_project ON runs (project, created)",
        "CREATE INDEX runs_name ON runs (name)",
        """CREATE TABLE run_params (
            run_id TEXT NOT NULL REFERENCES runs (id),
            path TEXT NOT NULL,
            num REAL,
            str TEXT,
            PRIMARY KEY (run_id, path))""",
        "CREATE INDEX run_params_num ON run_params (path, num)",
        "CREATE INDEX run_params_str ON run_params (path, str)",
        """CREATE TABLE run_tags (
            run_id TEXT NOT NULL REFERENCES runs (id),
            tag TEXT NOT NULL,
            PRIMARY KEY (run_id, tag))""",
        "CREATE INDEX run_tags_tag ON run_tags (tag)",
        """CREATE TABLE series (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs (id),
            key TEXT NOT NULL,
            kind TEXT NOT NULL,
            count INTEGER NOT NULL DEFAULT 0,
            min REAL,
            max REAL,
            last REAL,
            first_step INTEGER,
            last_step INTEGER,
            UNIQUE (run_id, key))""",
        """CREATE TABLE chunks (
            series_id INTEGER NOT NULL REFERENCES series (id),
            seq INTEGER NOT NULL,
            first_step INTEGER NOT NULL,
            last_step INTEGER NOT NULL,
            min_epoch INTEGER,
            max_epoch INTEGER,
            count INTEGER NOT NULL,
            sealed INTEGER NOT NULL,
            stats BLOB NOT NULL,
            checksum INTEGER NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (series_id, seq))""",
        "CREATE INDEX chunks_steps ON chunks (series_id, last_step)",
    ],
    [
        "ALTER TABLE runs ADD COLUMN array_store TEXT",
        """CREATE TABLE tensor_segments (
            series_id INTEGER NOT NULL REFERENCES series (id),
            segment INTEGER NOT NULL,
            shape TEXT NOT NULL,
            dtype TEXT NOT NULL,
            chunk_steps INTEGER NOT NULL,
            codec TEXT NOT NULL,
            path TEXT NOT NULL,
            PRIMARY KEY (series_id, segment))""",
        """CREATE TABLE tensor_chunks (
            series_id INTEGER NOT NULL REFERENCES series (id),
            segment INTEGER NOT NULL,
            chunk INTEGER NOT NULL,
            first_step INTEGER NOT NULL,
            last_step INTEGER NOT NULL,
            count INTEGER NOT NULL,
            sealed INTEGER NOT NULL,
            steps BLOB NOT NULL,
            epochs BLOB NOT NULL,
            times BLOB NOT NULL,
            checksums BLOB NOT NULL,
            PRIMARY KEY (series_id, segment, chunk))""",
        """CREATE TABLE records (
            series_id INTEGER NOT NULL REFERENCES series (id),
            step INTEGER NOT NULL,
            epoch INTEGER,
            time INTEGER NOT NULL,
            data TEXT NOT NULL)""",
        "CREATE INDEX records_steps ON records (series_id, step)",
        """CREATE TABLE images (
            series_id INTEGER NOT NULL REFERENCES series (id),
            step INTEGER NOT NULL,
            position INTEGER NOT NULL,
            epoch INTEGER,
            time INTEGER NOT NULL,
            caption TEXT,
            path TEXT NOT NULL,
            size INTEGER NOT NULL,
            checksum INTEGER NOT NULL,
            PRIMARY KEY (series_id, step, position))""",
        """CREATE TABLE artifacts (
            run_id TEXT NOT NULL REFERENCES runs (id),
            name TEXT NOT NULL,
            path TEXT NOT NULL,
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            created REAL NOT NULL,
            PRIMARY KEY (run_id, name))""",
    ],
    [  # ranks="all": series per (run, key, rank); the ranks' journal positions
        """CREATE TABLE series_v3 (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs (id),
            key TEXT NOT NULL,
            kind TEXT NOT NULL,
            count INTEGER NOT NULL DEFAULT 0,
            min REAL,
            max REAL,
            last REAL,
            first_step INTEGER,
            last_step INTEGER,
            rank INTEGER NOT NULL DEFAULT 0,
            UNIQUE (run_id, key, rank))""",
        "INSERT INTO series_v3 (id, run_id, key, kind, count, min, max, last, first_step, "
        "last_step) SELECT id, run_id, key, kind, count, min, max, last, first_step, last_step "
        "FROM series",
        "DROP TABLE series",
        "ALTER TABLE series_v3 RENAME TO series",
        """CREATE TABLE run_ranks (
            run_id TEXT NOT NULL REFERENCES runs (id),
            rank INTEGER NOT NULL,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            status TEXT NOT NULL,
            heartbeat REAL,
            ended REAL,
            journal_seq INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (run_id, rank))""",
    ],
    [  # check --repair keeps the intact rows of a chunk: where each lies in its chunk
        "ALTER TABLE tensor_chunks ADD COLUMN positions BLOB NOT NULL DEFAULT x''",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)
BUSY_TIMEOUT = 60.0  # seconds a write waits for another process's transaction
SERIES_BATCH = 500  # run ids per query of series_of_runs

_RUN_COLUMNS = ", ".join(RUN_COLUMNS)
_RANK_COLUMNS = ", ".join(RANK_COLUMNS)
_CHUNK_COLUMNS = (
    "series_id, seq, first_step, last_step, count, sealed, stats, {data}, checksum, min_epoch, "
    "max_epoch"
)
_TENSOR_CHUNK_COLUMNS = (
    "series_id, segment, chunk, first_step, last_step, count, sealed, steps, epochs, times, "
    "checksums, positions"
)


class SQLiteBackend(Backend):
    """The embedded store in a local directory (the default)."""

    schemes = ("", "file", "sqlite")

    def __init__(
        self, path: str | Path, *, create: bool, stale_after: float = 60.0, fsync: bool = True
    ) -> None:
        self.root = Path(path).expanduser()
        self.uri = str(self.root)
        self.stale_after = stale_after
        self._path = self.root / DB_NAME
        if not self._path.exists():
            if not create:
                what = "does not exist" if not self.root.exists() else "holds no stepstore.db"
                raise NotAStoreError(
                    f"{self.root}: not a stepstore store ({what}); record a run with "
                    "stepstore.init(store=...) first"
                )
            if self.root.exists() and not self.root.is_dir():
                raise NotAStoreError(f"{self.root}: exists and is not a directory")
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"{self.root}: cannot create the store ({exc})") from None
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                self._path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{self._path}: cannot open the database ({exc})") from None
        try:
            self._open(fsync)
        except BaseException:
            self._db.close()
            raise

    def _open(self, fsync: bool) -> None:
        """Set the connection up and migrate the schema; a file that is no SQLite database
        is ``NotAStoreError``, any other SQLite error a ``StoreError``."""
        try:
            _enable_wal(self._db)
            self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
            self._db.execute("PRAGMA foreign_keys=ON")
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            if getattr(exc, "sqlite_errorname", "") == "SQLITE_NOTADB":
                raise NotAStoreError(f"{self._path}: not a stepstore database ({exc})") from None
            raise StoreError(f"{self._path}: cannot open the database ({_text(exc)})") from None
        self._migrate()

    # -- errors ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Raise a SQLite error of the block as a ``StoreError`` naming the database and
        ``action``."""
        try:
            yield
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise StoreError(f"{self._path}: {action}: {_text(exc)}") from exc

    @contextlib.contextmanager
    def _reading(self, what: str) -> Iterator[sqlite3.Connection]:
        """The connection, held under the backend's lock, for reading ``what``."""
        with self._errors(f"reading {what}"), self._lock:
            yield self._db

    @contextlib.contextmanager
    def _writing(self, what: str) -> Iterator[sqlite3.Connection]:
        """The connection inside a write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``,
        rolled back on error) for writing ``what``."""
        with self._errors(f"writing {what}"), _Transaction(self._db, self._lock):
            yield self._db

    def _fetch(self, what: str, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """The rows of one read statement."""
        with self._reading(what) as db:
            return db.execute(sql, args).fetchall()

    def _rows_of(self, cls: type[_R], what: str, sql: str, args: Sequence[Any]) -> list[_R]:
        """The rows of one read statement as records of type ``cls``, checked."""
        return [
            row_of(cls, row, f"{self._path}: reading {what}")
            for row in self._fetch(what, sql, args)
        ]

    # -- schema -------------------------------------------------------------------------

    def _version(self) -> int:
        has_meta = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        if not has_meta:
            return 0
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return schema_version_of(row, str(self._path))

    def _migrate(self) -> None:
        with self._reading("the schema version"):
            version = self._version()
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self.root}: store schema version {version} is newer than this stepstore "
                f"supports ({SCHEMA_VERSION}); upgrade stepstore to read or write it"
            )
        if version == SCHEMA_VERSION:
            return
        # tables are rebuilt (SQLite cannot drop a UNIQUE constraint): foreign keys are off
        # meanwhile, as SQLite's procedure for altering a table asks; it cannot change inside
        # a transaction
        with self._errors("migrating the schema"):
            self._db.execute("PRAGMA foreign_keys=OFF")
            try:
                self._apply_migrations()
            finally:
                self._db.execute("PRAGMA foreign_keys=ON")

    def _apply_migrations(self) -> None:
        with self._writing("the schema") as db:
            version = self._version()  # another process may have migrated meanwhile
            if version == 0:
                db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    db.execute(statement)
            if db.execute("PRAGMA foreign_key_check").fetchone() is not None:
                raise NotAStoreError(f"{self.root}: migration broke a foreign key")
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    @property
    def schema_version(self) -> int:
        """The schema version of the open store."""
        with self._reading("the schema version"):
            return self._version()

    @property
    def journal_dir(self) -> Path:
        return self.root / "journal"

    @property
    def default_array_store(self) -> str:
        return str(self.root / "arrays")

    # -- runs ---------------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        values = [getattr(run, c) for c in RUN_COLUMNS]
        values = [json.dumps(v) if isinstance(v, (dict, list)) else v for v in values]
        with self._writing(f"run {run.id}") as db:
            db.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES ({', '.join('?' * len(values))})",
                values,
            )
            db.executemany(
                "INSERT INTO run_params (run_id, path, num, str) VALUES (?, ?, ?, ?)",
                [(run.id, *row) for row in flatten_params(run.params)],
            )
            db.executemany(
                "INSERT OR IGNORE INTO run_tags (run_id, tag) VALUES (?, ?)",
                [(run.id, tag) for tag in run.tags],
            )

    def get_run(self, id_or_name: str) -> RunRecord:
        with self._reading(f"run {id_or_name!r}") as db:
            rows = (
                db.execute(
                    f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (id_or_name,)
                ).fetchall()
                or db.execute(
                    f"SELECT {_RUN_COLUMNS} FROM runs WHERE name = ?", (id_or_name,)
                ).fetchall()
            )
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

        clauses, args = [], []
        if where:
            sql, where_args = compile_filter(
                where, Dialect(param="?", status_sql=self._status_sql())
            )
            clauses.append(f"({sql})")
            args.extend(where_args)
        if project is not None:
            clauses.append("r.project = ?")
            args.append(project)
        query = f"SELECT {', '.join('r.' + c for c in RUN_COLUMNS)} FROM runs r"
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        rows = self._fetch("the runs", query + " ORDER BY r.created, r.id", args)
        return [self._record(row) for row in rows]

    def update_run(self, run_id: str, **fields: Any) -> None:
        unknown = set(fields) - UPDATABLE
        if unknown:
            raise InvalidArgumentError(f"cannot update run fields {sorted(unknown)}")
        names = sorted(fields)
        values = [
            json.dumps(fields[n]) if isinstance(fields[n], dict) else fields[n] for n in names
        ]
        with self._writing(f"run {run_id}") as db:
            db.execute(
                f"UPDATE runs SET {', '.join(n + ' = ?' for n in names)} WHERE id = ?",
                [*values, run_id],
            )

    # -- series -------------------------------------------------------------------------

    def join_rank(self, run_id: str, rank: int, host: str, pid: int) -> RankRecord:
        with self._writing(f"rank {rank} of run {run_id}") as db:
            db.execute(
                "INSERT INTO run_ranks (run_id, rank, host, pid, status, heartbeat) "
                "VALUES (?, ?, ?, ?, 'running', ?) ON CONFLICT (run_id, rank) DO UPDATE SET "
                "host = excluded.host, pid = excluded.pid, status = 'running', "
                "heartbeat = excluded.heartbeat, ended = NULL",
                (run_id, rank, host, pid, time.time()),
            )
        return next(r for r in self.ranks(run_id) if r.rank == rank)

    def ranks(self, run_id: str) -> list[RankRecord]:
        rows = self._fetch(
            f"the ranks of run {run_id}",
            f"SELECT {_RANK_COLUMNS} FROM run_ranks WHERE run_id = ? ORDER BY rank",
            (run_id,),
        )
        return [self._rank_record(row) for row in rows]

    def series(self, run_id: str, rank: int | None = 0) -> list[SeriesRecord]:
        what = f"the series of run {run_id}"
        if rank is None:
            return self._series_where("run_id = ?", [run_id], what)
        return self._series_where("run_id = ? AND rank = ?", [run_id, rank], what)

    def series_of_runs(self, run_ids: Sequence[str]) -> dict[str, list[SeriesRecord]]:
        found: dict[str, list[SeriesRecord]] = {run_id: [] for run_id in run_ids}
        for start in range(0, len(run_ids), SERIES_BATCH):
            batch = list(run_ids[start : start + SERIES_BATCH])
            clause = f"run_id IN ({', '.join('?' * len(batch))})"
            for record in self._series_where(clause, batch, f"the series of {len(batch)} runs"):
                found[record.run_id].append(record)
        return found

    def _series_where(self, clause: str, args: Sequence[Any], what: str) -> list[SeriesRecord]:
        """The series rows matching ``clause`` (SQL over the series table), by run, key and
        rank."""
        query = (
            "SELECT run_id, id, key, kind, count, min, max, last, first_step, last_step, rank "
            f"FROM series WHERE {clause} ORDER BY run_id, key, rank"
        )
        records = []
        for row in self._fetch(what, query, args):
            run_id, sid, key, kind, count, lo, hi, last, first_step, last_step, series_rank = (
                decode_row(row, "run_id:text " + SERIES_TYPES, f"{self._path}: reading {what}")
            )
            # SQLite stores NaN as NULL: a counted series with a NULL last ended in NaN.
            summary = Summary(
                count,
                lo,
                hi,
                float("nan") if kind == "scalar" and count and last is None else last,
                first_step,
                last_step,
            )
            records.append(SeriesRecord(sid, run_id, key, kind, summary, series_rank))
        return records

    def ensure_series(self, run_id: str, key: str, kind: str, rank: int = 0) -> int:
        with self._writing(f"series {key!r} of run {run_id}") as db:
            row = db.execute(
                "SELECT id, kind FROM series WHERE run_id = ? AND key = ? AND rank = ?",
                (run_id, key, rank),
            ).fetchone()
            if row is None:
                cursor = db.execute(
                    "INSERT INTO series (run_id, key, kind, rank) VALUES (?, ?, ?, ?)",
                    (run_id, key, kind, rank),
                )
                return int(cursor.lastrowid)  # type: ignore[arg-type]
        series_id, stored = decode_row(
            row, "id:int kind:text", f"{self._path}: series {key!r} of run {run_id}"
        )
        if stored != kind:
            raise KindMismatchError(
                f"key {key!r} of run {run_id} holds {stored} values; got a {kind}"
            )
        return int(series_id)

    def open_chunk(self, series_id: int) -> ChunkRow | None:
        rows = self._chunk_rows(
            "WHERE series_id = ? ORDER BY seq DESC LIMIT 1", (series_id,), with_data=True
        )
        return rows[0] if rows and not rows[0].sealed else None

    def next_chunk_seq(self, series_id: int) -> int:
        what = f"the chunks of series {series_id}"
        ((last,),) = self._fetch(
            what, "SELECT MAX(seq) FROM chunks WHERE series_id = ?", (series_id,)
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
        where, table, allowed = run_row(rank)
        unknown = set(run_fields) - allowed
        if unknown:
            raise InvalidArgumentError(f"cannot update run fields {sorted(unknown)}")
        with self._writing(f"the points of run {run_id}") as db:
            db.executemany(
                "INSERT OR REPLACE INTO chunks (series_id, seq, first_step, last_step, "
                "min_epoch, max_epoch, count, sealed, stats, checksum, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        sid,
                        c.seq,
                        c.first_step,
                        c.last_step,
                        c.min_epoch,
                        c.max_epoch,
                        c.size,
                        int(c.sealed),
                        c.stats,
                        c.checksum,
                        c.data,
                    )
                    for sid, c in chunks
                ],
            )
            db.executemany(
                "UPDATE series SET count = ?, min = ?, max = ?, last = ?, first_step = ?, "
                "last_step = ? WHERE id = ?",
                [
                    (s.count, s.min, s.max, s.last, s.first_step, s.last_step, sid)
                    for sid, s in summaries
                ],
            )
            if run_fields:
                names = sorted(run_fields)
                db.execute(
                    f"UPDATE {table} SET {', '.join(n + ' = ?' for n in names)} "
                    f"WHERE {where.replace('%s', '?')}",
                    [
                        *(
                            json.dumps(run_fields[n])
                            if isinstance(run_fields[n], dict)
                            else run_fields[n]
                            for n in names
                        ),
                        run_id,
                        *([rank] if rank else []),
                    ],
                )

    def _chunk_rows(self, clause: str, args: Sequence[Any], with_data: bool) -> list[ChunkRow]:
        columns = _CHUNK_COLUMNS.format(data="data" if with_data else "NULL")
        what = f"the chunks of series {args[0]}"
        return self._rows_of(ChunkRow, what, f"SELECT {columns} FROM chunks {clause}", args)

    def chunks(
        self,
        series_id: int,
        steps: tuple[int, int] | None = None,
        epochs: tuple[int, int] | None = None,
        with_data: bool = True,
    ) -> list[ChunkRow]:
        clause, args = chunk_selection(series_id, steps, epochs, "?")
        return self._chunk_rows(clause, args, with_data)

    # -- arrays, records, images, artifacts ---------------------------------------------------

    def commit_arrays(self, batch: ArrayBatch) -> None:
        with self._writing("tensor, image, record and artifact index rows") as db:
            db.executemany(
                "INSERT OR IGNORE INTO tensor_segments (series_id, segment, shape, dtype, "
                "chunk_steps, codec, path) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        g.series_id,
                        g.segment,
                        json.dumps(list(g.shape)),
                        g.dtype,
                        g.chunk_steps,
                        g.codec,
                        g.path,
                    )
                    for g in batch.segments
                ],
            )
            db.executemany(
                f"INSERT OR REPLACE INTO tensor_chunks ({_TENSOR_CHUNK_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [_tensor_chunk_values(c) for c in batch.chunks],
            )
            db.executemany(
                "INSERT INTO records (series_id, step, epoch, time, data) VALUES (?, ?, ?, ?, ?)",
                [(r.series_id, r.step, r.epoch, r.time, r.data) for r in batch.records],
            )
            db.executemany(
                "INSERT OR REPLACE INTO images (series_id, step, position, epoch, time, caption, "
                "path, size, checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        i.series_id,
                        i.step,
                        i.position,
                        i.epoch,
                        i.time,
                        i.caption,
                        i.path,
                        i.size,
                        i.checksum,
                    )
                    for i in batch.images
                ],
            )
            db.executemany(
                "INSERT OR REPLACE INTO artifacts (run_id, name, path, size, sha256, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(a.run_id, a.name, a.path, a.size, a.sha256, a.created) for a in batch.artifacts],
            )
            counts: dict[int, list[int]] = {}
            for c in batch.chunks:
                counts.setdefault(c.series_id, []).extend((c.first_step, c.last_step))
            items: list[RecordRow | ImageRow] = [*batch.records, *batch.images]
            for item in items:
                counts.setdefault(item.series_id, []).append(item.step)
            for series_id, steps in counts.items():
                db.execute(
                    "UPDATE series SET last_step = MAX(COALESCE(last_step, ?), ?), "
                    "first_step = MIN(COALESCE(first_step, ?), ?) WHERE id = ?",
                    (max(steps), max(steps), min(steps), min(steps), series_id),
                )
            db.executemany(
                "UPDATE series SET count = (SELECT COALESCE(SUM(count), 0) FROM tensor_chunks "
                "WHERE series_id = ?) WHERE id = ?",
                [(sid, sid) for sid in {c.series_id for c in batch.chunks}],
            )
            db.executemany(
                "UPDATE series SET count = (SELECT COUNT(*) FROM records WHERE series_id = ?) + "
                "(SELECT COUNT(*) FROM images WHERE series_id = ?) WHERE id = ?",
                [(sid, sid, sid) for sid in {item.series_id for item in items}],
            )

    def tensor_index(self, series_id: int) -> tuple[list[Segment], list[ChunkIndex]]:
        what = f"the tensor index of series {series_id}"
        with self._reading(what) as db:  # chunks first: see Backend.tensor_index
            chunk_rows = list(
                db.execute(
                    f"SELECT {_TENSOR_CHUNK_COLUMNS} FROM tensor_chunks WHERE series_id = ? "
                    "ORDER BY segment, chunk",
                    (series_id,),
                )
            )
            segment_rows = list(
                db.execute(
                    "SELECT series_id, segment, shape, dtype, chunk_steps, codec, path "
                    "FROM tensor_segments WHERE series_id = ? ORDER BY segment",
                    (series_id,),
                )
            )
        where = f"{self._path}: reading {what}"
        return (
            [row_of(Segment, row, where) for row in segment_rows],
            [row_of(ChunkIndex, row, where) for row in chunk_rows],
        )

    def records(self, series_id: int) -> list[RecordRow]:
        return self._rows_of(
            RecordRow,
            f"the records of series {series_id}",
            "SELECT series_id, step, epoch, time, data FROM records WHERE series_id = ? "
            "ORDER BY step, rowid",
            (series_id,),
        )

    def images(self, series_id: int) -> list[ImageRow]:
        return self._rows_of(
            ImageRow,
            f"the images of series {series_id}",
            "SELECT series_id, step, position, epoch, time, caption, path, size, checksum "
            "FROM images WHERE series_id = ? ORDER BY step, position",
            (series_id,),
        )

    def artifacts(self, run_id: str) -> list[ArtifactRow]:
        return self._rows_of(
            ArtifactRow,
            f"the artifacts of run {run_id}",
            "SELECT run_id, name, path, size, sha256, created FROM artifacts "
            "WHERE run_id = ? ORDER BY name",
            (run_id,),
        )

    def apply_repairs(self, batch: RepairBatch) -> None:
        if not batch:
            return
        with self._writing("repairs") as db:
            db.executemany("DELETE FROM chunks WHERE series_id = ? AND seq = ?", batch.chunks)
            db.executemany(
                "UPDATE chunks SET first_step = ?, last_step = ?, min_epoch = ?, max_epoch = ?, "
                "count = ?, stats = ? WHERE series_id = ? AND seq = ?",
                [
                    (
                        c.first_step,
                        c.last_step,
                        c.min_epoch,
                        c.max_epoch,
                        c.size,
                        c.stats,
                        sid,
                        c.seq,
                    )
                    for sid, c in batch.chunk_index
                ],
            )
            db.executemany(
                "DELETE FROM tensor_chunks WHERE series_id = ? AND segment = ? AND chunk = ?",
                batch.tensor_chunks,
            )
            db.executemany(
                "UPDATE tensor_chunks SET first_step = ?, last_step = ?, count = ?, sealed = ?, "
                "steps = ?, epochs = ?, times = ?, checksums = ?, positions = ? "
                "WHERE series_id = ? AND segment = ? AND chunk = ?",
                [
                    (*_tensor_chunk_values(c)[3:], *_tensor_chunk_values(c)[:3])
                    for c in batch.cut_tensor_chunks
                ],
            )
            db.executemany(
                "DELETE FROM images WHERE series_id = ? AND step = ? AND position = ?",
                batch.images,
            )
            db.executemany("DELETE FROM artifacts WHERE run_id = ? AND name = ?", batch.artifacts)
            db.executemany(
                "UPDATE series SET count = ?, min = ?, max = ?, last = ?, first_step = ?, "
                "last_step = ? WHERE id = ?",
                [
                    (s.count, s.min, s.max, s.last, s.first_step, s.last_step, sid)
                    for sid, s in batch.summaries
                ],
            )
            db.executemany(
                "UPDATE series SET count = ?, first_step = ?, last_step = ? WHERE id = ?",
                [(count, first, last, sid) for sid, count, first, last in batch.step_summaries],
            )

    # -- integrity ----------------------------------------------------------------------

    def _check_database(self) -> list[Problem]:
        try:
            lines = self._fetch("the integrity check", "PRAGMA integrity_check")
        except StoreError as exc:
            return [Problem(str(self._path), str(exc).removeprefix(f"{self._path}: "))]
        return [Problem(str(self._path), str(line)) for (line,) in lines if line != "ok"]

    def _series_names(self) -> list[Any]:
        return self._fetch("the series", "SELECT id, run_id, key, rank FROM series")

    def _chunk_page(self, after: tuple[Any, Any], size: int) -> list[Any]:
        return self._fetch(
            "the chunks",
            f"SELECT {_CHUNK_COLUMNS.format(data='data')} FROM chunks "
            "WHERE (series_id, seq) > (?, ?) ORDER BY series_id, seq LIMIT ?",
            (*after, size),
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _text(error: Exception) -> str:
    """The message of a SQLite error; sqlite3 raises ``UnicodeDecodeError`` instead when the
    message quotes bytes of a damaged database that are not UTF-8."""
    if isinstance(error, UnicodeDecodeError):
        return f"SQLite's error message is not UTF-8 (it quotes damaged bytes: {error})"
    return str(error)


def _tensor_chunk_values(c: ChunkIndex) -> tuple[Any, ...]:
    """The columns of a tensor chunk index row, as :data:`_TENSOR_CHUNK_COLUMNS` lists them."""
    return (
        c.series_id,
        c.segment,
        c.chunk,
        c.first_step,
        c.last_step,
        c.count,
        int(c.sealed),
        c.steps,
        c.epochs,
        c.times,
        c.checksums,
        c.positions,
    )


def _enable_wal(db: sqlite3.Connection) -> None:
    """Switch the database to WAL mode, waiting out other processes opening it at once.

    SQLite answers "database is locked" at once, without its busy handler, when another
    connection holds a lock while the journal mode changes, so the change is retried here.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT
    delay = 0.001
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error, or when the commit fails)
    under the backend's lock."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock) -> None:
        self._db, self._lock = db, lock

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, kind: type | None, *_: Any) -> None:
        try:
            if kind is None:
                self._commit()
            else:
                self._rollback()
        finally:
            self._lock.release()

    def _commit(self) -> None:
        """``COMMIT``; a commit that fails (a full disk) is rolled back, so the next
        transaction can begin."""
        try:
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        """``ROLLBACK`` of a transaction still open (SQLite ends some failed ones itself);
        its own failure is not raised over the error that caused it."""
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
