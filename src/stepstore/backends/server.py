"""What the server backends share: PostgreSQL (``postgresql.py``) and MySQL/MariaDB (``mysql.py``).

Connections
    One connection per backend object, guarded by the engine's lock. Autocommit is off and
    every call runs in a transaction of its own that ends in ``COMMIT`` (reads too, so no
    connection sits idle in a transaction holding locks or an old snapshot). A broken
    connection, or one inherited through ``fork()``, is replaced on the next call. Driver
    errors name the store's URI with any password masked.

Local files
    Journals are local files of the recording process, so a server store keeps them in
    ``Config.journal_dir/<name>`` (``$STEPSTORE_JOURNAL_DIR``) or, without it,
    ``~/.cache/stepstore/journal/<name>`` (``$XDG_CACHE_HOME`` is honoured), where
    ``<name>`` is ``host-port-database`` made filename-safe: a process recovers only the
    journals of runs of this database. Tensors, images and artifacts go to
    ``Config.array_store`` (``$STEPSTORE_ARRAY_STORE``) or
    ``~/.local/share/stepstore/arrays/<name>`` (``$XDG_DATA_HOME`` is honoured); a team
    sharing a server store should pass ``array_store=`` a shared path or fsspec URL (or
    set ``$STEPSTORE_ARRAY_STORE``) so that every reader finds the arrays, since a run
    records where its arrays went.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import re
import threading
import weakref
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ..config import load_config
from ..errors import InvalidArgumentError, StoreError
from .engine import SQLBackend

#: Seconds a connection attempt may take before the store is reported unreachable.
CONNECT_TIMEOUT = 10

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


class ServerBackend(SQLBackend):
    """A store in a database server; a subclass binds it to one driver and dialect.

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

    #: TCP port when the URI names none.
    default_port: int = 0

    def __init__(
        self, uri: str, *, create: bool, stale_after: float = 60.0, fsync: bool = True
    ) -> None:
        self.address = ServerAddress.parse(uri, self.default_port)
        self.uri = self._label = self.address.masked
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

    @abstractmethod
    def _connect(self) -> Any:
        """A new connection (autocommit off, session settings applied).

        Raises:
            StoreError: The server cannot be reached or refuses the credentials; the
                message names :attr:`uri` and the reason.
        """

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

    def _begin(self, connection: Any, write: bool) -> None:
        """Nothing: with autocommit off, the first statement begins the transaction."""

    def _commit(self, connection: Any, write: bool) -> None:
        connection.commit()

    def _rollback(self, connection: Any) -> None:
        with contextlib.suppress(Exception):
            connection.rollback()

    def _migrated(self, cursor: Any) -> None:
        # committed before the lock is released (MySQL's is the session's), so the next
        # process to take it reads the new version and does not apply a migration twice
        cursor.connection.commit()

    @property
    def journal_dir(self) -> Path:
        base = load_config().journal_dir
        if base:
            return Path(base).expanduser() / self.address.local_name
        cache = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
        return cache / "stepstore" / "journal" / self.address.local_name

    @property
    def default_array_store(self) -> str:
        explicit = load_config().array_store
        if explicit:
            return explicit
        data = Path(os.environ.get("XDG_DATA_HOME") or "~/.local/share").expanduser()
        return str(data / "stepstore" / "arrays" / self.address.local_name)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop_connection()
