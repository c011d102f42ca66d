"""The embedded store: a directory holding a SQLite database (WAL mode) and run journals.

Layout::

    STORE/stepstore.db      runs, params, tags, series summaries and scalar chunks
    STORE/journal/          memory-mapped journals of runs being recorded
    STORE/arrays/           tensors, images and artifacts (unless a run names another place)

Several processes may write different runs at once: every write transaction starts with
``BEGIN IMMEDIATE`` under a 60 s busy timeout, and a flush is a single short transaction;
reads run outside a transaction (each statement sees one snapshot). The statements are the
engine's (``engine.py``); this module holds what is SQLite's own: opening the file,
switching it to WAL, transactions, and the integrity check.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import NotAStoreError, StoreError
from .base import Problem
from .dialect import SQLITE, Dialect
from .engine import SQLBackend
from .schema import MIGRATIONS

if TYPE_CHECKING:
    import sqlite3

DB_NAME = "stepstore.db"
SCHEMA_VERSION = len(MIGRATIONS["sqlite"])
BUSY_TIMEOUT = 60.0  # seconds a write waits for another process's transaction


def driver() -> ModuleType:
    """The ``sqlite3`` module, imported when a store first needs it (as the servers'
    drivers are), so that ``import stepstore`` stays light."""
    return importlib.import_module("sqlite3")


class SQLiteEngine(SQLBackend):
    """The engine on one sqlite3 connection: SQLite's transactions, errors and checks."""

    dialect: ClassVar[Dialect] = SQLITE
    migrations: ClassVar[Sequence[Sequence[str]]] = MIGRATIONS["sqlite"]
    _db: sqlite3.Connection

    @classmethod
    def from_uri(
        cls, uri: str, rest: str, *, create: bool, stale_after: float, fsync: bool
    ) -> SQLiteEngine:
        """Open the store named by what follows the scheme: a path, or a memory store's
        name."""
        return cls(rest, create=create, stale_after=stale_after, fsync=fsync)  # type: ignore[call-arg]

    def _setup(self, db: sqlite3.Connection, fsync: bool, label: str) -> None:
        """Use ``db`` (closed again on failure), set it up and migrate the schema; a file
        that is no SQLite database is ``NotAStoreError``, any other SQLite error a
        ``StoreError``."""
        self._db, self._label, self._lock = db, label, threading.RLock()
        try:
            try:
                _enable_wal(db)
                db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
                db.execute("PRAGMA foreign_keys=ON")
            except (driver().Error, UnicodeDecodeError) as exc:
                if getattr(exc, "sqlite_errorname", "") == "SQLITE_NOTADB":
                    raise NotAStoreError(f"{label}: not a stepstore database ({exc})") from None
                raise StoreError(f"{label}: cannot open the database ({_text(exc)})") from None
            self._migrate(create=True)
        except BaseException:
            db.close()
            raise

    def _connection(self) -> sqlite3.Connection:
        return self._db

    def _cursor(self, connection: sqlite3.Connection) -> _Statements:
        return _Statements(connection)

    def _begin(self, connection: sqlite3.Connection, write: bool) -> None:
        if write:
            connection.execute("BEGIN IMMEDIATE")

    def _commit(self, connection: sqlite3.Connection, write: bool) -> None:
        if connection.in_transaction:
            connection.execute("COMMIT")

    def _rollback(self, connection: sqlite3.Connection) -> None:
        if connection.in_transaction:  # SQLite ends some failed transactions itself
            with contextlib.suppress(driver().Error):
                connection.execute("ROLLBACK")

    @property
    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        return (driver().Error, UnicodeDecodeError)

    def _reason(self, error: BaseException) -> str:
        return _text(error)

    @contextlib.contextmanager
    def _migrating(self) -> Iterator[None]:
        # tables are rebuilt (SQLite cannot drop a UNIQUE constraint): foreign keys are off
        # meanwhile, as SQLite's procedure for altering a table asks; it cannot change inside
        # a transaction
        self._db.execute("PRAGMA foreign_keys=OFF")
        try:
            yield
        finally:
            self._db.execute("PRAGMA foreign_keys=ON")

    def _migrated(self, cursor: Any) -> None:
        cursor.execute("PRAGMA foreign_key_check")
        if cursor.fetchone() is not None:
            raise NotAStoreError(f"{self.uri}: migration broke a foreign key")

    def _database_problems(self) -> list[Problem]:
        try:
            lines = self._query("PRAGMA integrity_check", (), "the integrity check")
        except StoreError as exc:
            return [Problem(self._label, str(exc).removeprefix(f"{self._label}: "))]
        return [Problem(self._label, str(line)) for (line,) in lines if line != "ok"]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class SQLiteBackend(SQLiteEngine):
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
        sqlite3 = driver()
        try:
            db = sqlite3.connect(
                self._path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{self._path}: cannot open the database ({exc})") from None
        self._setup(db, fsync, str(self._path))

    @property
    def journal_dir(self) -> Path:
        return self.root / "journal"

    @property
    def default_array_store(self) -> str:
        return str(self.root / "arrays")


class _Statements:
    """The cursor interface the engine uses, over the connection's own ``execute`` (the
    statements go through the connection object, which a white-box test may wrap)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self._rows: Iterator[Any] = iter(())

    def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        self._rows = iter(self.connection.execute(sql, args))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.connection.executemany(sql, rows)

    def fetchall(self) -> list[Any]:
        return list(self._rows)

    def fetchone(self) -> Any:
        return next(self._rows, None)

    def close(self) -> None:
        self._rows = iter(())


def _text(error: BaseException) -> str:
    """The message of a SQLite error; sqlite3 raises ``UnicodeDecodeError`` instead when the
    message quotes bytes of a damaged database that are not UTF-8."""
    if isinstance(error, UnicodeDecodeError):
        return f"SQLite's error message is not UTF-8 (it quotes damaged bytes: {error})"
    return str(error)


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
        except driver().OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
