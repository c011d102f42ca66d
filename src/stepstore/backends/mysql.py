"""A store in a MySQL or MariaDB database: ``mysql://user:password@host:port/database``.

``mariadb://`` is the same. Needs PyMySQL (``pip install 'stepstore[mysql]'``): a pure
Python driver, so it installs everywhere without a C client library; a flush sends a few
large statements, so the driver's speed matters little. The tables, columns and their
meaning are those of the embedded SQLite store (see ``schema.py``; statements in ``engine.py``) in
MySQL types: ``BIGINT`` steps, epochs and counts, ``DOUBLE`` values, ``LONGBLOB`` blobs,
JSON as ``LONGTEXT`` (kept byte for byte), InnoDB tables.

Specifics:

- Text is ``utf8mb4`` with a binary, no-pad collation (``utf8mb4_0900_bin`` on MySQL 8,
  ``utf8mb4_nopad_bin`` on MariaDB; ``utf8mb4_bin`` on older servers, where trailing
  spaces are ignored in comparisons), so names, keys and tags compare exactly and
  case-sensitively and sort by code point, as in SQLite.
- Indexed text columns are ``VARCHAR`` sized for InnoDB's 3072-byte index limit: run ids
  up to 128 characters; project, name, param path, tag and artifact name up to 512.
  Series keys (up to 1024 characters, 4 kB in utf8mb4) are too long to index: ``series``
  has a stored generated column ``key_hash = UNHEX(SHA2(key, 256))`` and the unique index
  is on ``(run_id, key_hash)``. Longer values are refused (strict mode), never truncated.
- ``DOUBLE`` holds neither NaN nor ±inf. A NaN summary value is stored as NULL (as in
  SQLite: a counted series whose ``last`` is NULL ended in NaN). An infinite ``min``,
  ``max`` or ``last`` is stored as ±1.7976931348623157e308 (the largest finite double)
  with a bit in ``series.inf_flags`` (2 bits per column: 1 = +inf, 2 = -inf), so the
  summary reads back as ±inf exactly and a filter such as ``summary.loss.max > 1e6``
  matches it as it does in SQLite and PostgreSQL. Chunk blobs are binary and unaffected.
- A flush writes its chunks with multi-row ``INSERT ... ON DUPLICATE KEY UPDATE``
  statements: PyMySQL's ``executemany`` packs rows into statements of up to ~1 MB. For a
  flush of 100 chunks that measured 2.5-5x as fast as one INSERT per chunk for small
  chunks, and as fast as 8 MB statements (which would also exceed an older server's
  4 MB ``max_allowed_packet``). A single chunk larger than the server's
  ``max_allowed_packet`` needs that setting raised.
- Sessions run with ``ANSI_QUOTES`` and ``STRICT_ALL_TABLES`` at ``READ COMMITTED``.
- ``fsync`` is ignored: durability is the server's ``innodb_flush_log_at_trx_commit``,
  which only an administrator can set.
- Migrations hold a ``GET_LOCK`` lock so processes opening a new database at once do not
  race. MySQL commits each DDL statement implicitly, so a migration is not one
  transaction; its statements are idempotent (``CREATE TABLE IF NOT EXISTS`` with inline
  indexes; an ``ALTER TABLE`` is one statement, skipped when the column it adds exists) and
  the version is recorded after each migration, so an interrupted one is completed by the
  next open.
- URI query parameters: ``unix_socket`` and ``connect_timeout`` (seconds, default 10).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import InvalidArgumentError, StoreError
from ..series.tail import Summary
from .dialect import Dialect
from .schema import MIGRATIONS
from .server import CONNECT_TIMEOUT, ServerBackend, import_driver

#: A migration's ``ALTER TABLE ... ADD COLUMN``: the table and the column it adds.
_ADD_COLUMN = re.compile(r'ALTER TABLE (\w+) ADD COLUMN "(\w+)"')

#: Binary collations of utf8mb4, preferred first (no-pad ones compare trailing spaces).
_COLLATIONS = ("utf8mb4_0900_bin", "utf8mb4_nopad_bin", "utf8mb4_bin")
_SQL_MODE = "ANSI_QUOTES,STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,ERROR_FOR_DIVISION_BY_ZERO"
#: Error codes of transactions aborted by a deadlock or a lock wait timeout.
_TRANSIENT = frozenset({1205, 1213})
#: Seconds a process waits for another one's migration.
_MIGRATION_WAIT = 120
_QUERY_PARAMETERS = ("connect_timeout", "unix_socket")
_INF_FIELDS = (1, 2, 3)  # positions of min, max and last in the summary values


@dataclass(frozen=True)
class MySQLDialect(Dialect):
    """MySQL's spelling: ``ON DUPLICATE KEY UPDATE`` upserts (PyMySQL's ``executemany``
    packs their rows into multi-row statements), infinities flagged beside a summary."""

    def upsert(
        self, table: str, columns: Sequence[str], conflict: str, update: Sequence[str] = ()
    ) -> str:
        changes = ", ".join(f"{c} = VALUES({c})" for c in update or columns[:1])
        return (
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({self.params(len(columns))}) ON DUPLICATE KEY UPDATE {changes}"
        )

    def summary_values(self, summary: Summary) -> tuple[Any, ...]:
        values = list(super().summary_values(summary))
        flags = 0
        for shift, i in enumerate(_INF_FIELDS):
            value = values[i]
            if value is not None and math.isinf(value):
                flags |= (1 if value > 0 else 2) << (2 * shift)
                values[i] = math.copysign(sys.float_info.max, value)
        return (*values, flags)

    def summary(self, kind: str, values: Sequence[Any]) -> Summary:
        *stored, flags = values
        for shift, i in enumerate(_INF_FIELDS):
            bits = (flags >> (2 * shift)) & 3
            if bits:
                stored[i] = math.inf if bits == 1 else -math.inf
        return super().summary(kind, stored)


MYSQL = MySQLDialect(
    name="mysql",
    meta_exists="SELECT COUNT(*) FROM information_schema.tables "
    "WHERE table_schema = DATABASE() AND table_name = 'meta'",
    summary_columns=(*Dialect.summary_columns, "inf_flags"),
    summary_types=f"{Dialect.summary_types} inf_flags:int",
)


class MySQLBackend(ServerBackend):
    """A store in a MySQL or MariaDB database (``mysql://`` or ``mariadb://``)."""

    schemes = ("mysql", "mariadb")
    dialect: ClassVar[Dialect] = MYSQL
    migrations: ClassVar[Sequence[Sequence[str]]] = MIGRATIONS["mysql"]
    default_port = 3306
    _collation = _COLLATIONS[-1]

    def _connect(self) -> Any:
        pymysql = import_driver("pymysql", "mysql", self.uri)
        address = self.address
        unknown = sorted(set(address.query) - set(_QUERY_PARAMETERS))
        if unknown or not address.database:
            raise InvalidArgumentError(
                f"store URI {self.uri}: expected mysql://user:password@host:port/database"
                f" with optional parameters {', '.join(_QUERY_PARAMETERS)}"
                + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            )
        try:
            timeout = int(address.query.get("connect_timeout", CONNECT_TIMEOUT))
        except ValueError:
            raise InvalidArgumentError(
                f"store URI {self.uri}: connect_timeout is a whole number of seconds"
            ) from None
        try:
            connection = pymysql.connect(
                host=address.host or "localhost",
                port=address.port,
                user=address.user,
                password=address.password or "",
                database=address.database,
                unix_socket=address.query.get("unix_socket"),
                charset="utf8mb4",
                autocommit=False,
                connect_timeout=timeout,
                read_timeout=timeout,
                write_timeout=timeout,
                binary_prefix=True,
                sql_mode=_SQL_MODE,
                init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            )
        except pymysql.MySQLError as exc:
            raise StoreError(f"cannot connect to {self.uri}: {self._reason(exc)}") from exc
        # PyMySQL's connect_timeout covers the TCP connect only; the read and write timeouts
        # bound the handshake too, and are lifted afterwards: waiting for a lock may take
        # longer than connecting should.
        connection._read_timeout = connection._write_timeout = None
        return connection

    def _alive(self, connection: Any) -> bool:
        return bool(connection.open)

    @property
    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        pymysql = import_driver("pymysql", "mysql", self.uri)
        return (pymysql.MySQLError,)

    def _transient(self, error: BaseException) -> bool:
        return bool(error.args) and error.args[0] in _TRANSIENT

    def _reason(self, error: BaseException) -> str:
        if len(error.args) >= 2:
            return f"{error.args[1]} (error {error.args[0]})"
        return str(error) or type(error).__name__

    @contextlib.contextmanager
    def _schema_lock(self, cursor: Any) -> Iterator[None]:
        digest = hashlib.sha256(self.address.database.encode()).hexdigest()[:32]
        name = f"stepstore-migrate-{digest}"
        cursor.execute("SELECT GET_LOCK(%s, %s)", (name, _MIGRATION_WAIT))
        if cursor.fetchone()[0] != 1:
            raise StoreError(
                f"{self.uri}: another process has been migrating the schema for "
                f"{_MIGRATION_WAIT} s; try again"
            )
        try:
            yield
        finally:
            cursor.execute("SELECT RELEASE_LOCK(%s)", (name,))
            cursor.fetchall()

    def _apply_migrations(self, cursor: Any) -> None:
        cursor.execute(
            "SELECT COLLATION_NAME FROM information_schema.COLLATIONS "
            f"WHERE COLLATION_NAME IN ({', '.join(['%s'] * len(_COLLATIONS))})",
            _COLLATIONS,
        )
        available = {row[0] for row in cursor.fetchall()}
        self._collation = next((c for c in _COLLATIONS if c in available), "utf8mb4_bin")
        super()._apply_migrations(cursor)

    def _migration_step(self, cursor: Any, statement: str) -> None:
        added = _ADD_COLUMN.match(statement)
        if added is not None:
            cursor.execute(
                "SELECT 1 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
                "AND TABLE_NAME = %s AND COLUMN_NAME = %s",
                added.groups(),
            )
            if cursor.fetchall():
                return  # applied by a migration cut off before it recorded its version
        cursor.execute(statement.format(collation=self._collation))
