"""Fixtures that give each test a fresh, empty store in every backend.

``store_uri`` is parametrised over ``sqlite``, ``postgresql`` and ``mariadb`` (the
conformance suite adds ``memory``, see ``test_backends.py``); ``backend`` and
``store_sql`` follow it (see ``stepstore.testing`` for what each provides). A server
test gets a uniquely named database, dropped afterwards, and private journal and array
directories. The servers (administrator URIs, whose database is used to create others):

- ``$STEPSTORE_TEST_POSTGRESQL``, default ``postgresql://postgres@127.0.0.1:5432/test``
- ``$STEPSTORE_TEST_MARIADB``, default ``mariadb://root@127.0.0.1:3306/test``

A server that cannot be reached skips its tests, unless ``$STEPSTORE_REQUIRE_SERVICES``
is set: then each of its tests fails and says which server and why.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from stepstore.backends import open_backend
from stepstore.backends.base import Backend
from stepstore.backends.server import ServerAddress, mask_password
from stepstore.testing import StoreSQL

#: Seconds a fixture waits for a test server.
PROBE_TIMEOUT = 3


@dataclass(frozen=True)
class Server:
    """A database server the tests create databases in."""

    kind: str
    admin_uri: str

    @property
    def scheme(self) -> str:
        return urlsplit(self.admin_uri).scheme

    def uri(self, database: str) -> str:
        """The URI of ``database`` on this server, with the administrator's credentials."""
        return urlsplit(self.admin_uri)._replace(path=f"/{database}").geturl()

    def connect(self, database: str | None = None) -> Any:
        """An autocommit connection to ``database`` (the administrator's by default)."""
        address = ServerAddress.parse(self.uri(database) if database else self.admin_uri, 0)
        if self.kind == "postgresql":
            import psycopg

            return psycopg.connect(address.uri, autocommit=True, connect_timeout=PROBE_TIMEOUT)
        import pymysql

        return pymysql.connect(
            host=address.host,
            port=address.port or 3306,
            user=address.user,
            password=address.password or "",
            database=address.database,
            autocommit=True,
            connect_timeout=PROBE_TIMEOUT,
            sql_mode="ANSI_QUOTES",
            charset="utf8mb4",
        )

    def execute(
        self, statement: str, params: Sequence[Any] = (), database: str | None = None
    ) -> list[tuple[Any, ...]]:
        """Run one statement (``%s`` placeholders) and return its rows."""
        with contextlib.closing(self.connect(database)) as connection:
            cursor = connection.cursor()
            cursor.execute(statement, params)
            rows = list(cursor.fetchall()) if cursor.description else []
            cursor.close()
            return rows

    def problem(self) -> str | None:
        """Why the server cannot be used, or ``None`` when it can (probed once)."""
        if self.kind not in _PROBLEMS:
            try:
                self.execute("SELECT 1")
            except Exception as exc:  # noqa: BLE001 - any failure makes the server unusable
                reason = " ".join(str(exc).split()) or type(exc).__name__
                _PROBLEMS[self.kind] = (
                    f"{self.kind} server {mask_password(self.admin_uri)} is unusable: {reason}"
                )
            else:
                _PROBLEMS[self.kind] = None
        return _PROBLEMS[self.kind]

    def locale_options(self) -> str:
        """``CREATE DATABASE`` options giving the database a case-insensitive, linguistic
        default collation, where the server has one: stores must not depend on it."""
        if self.kind != "postgresql":
            return " CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        if self.kind not in _ICU:
            (version,) = self.execute("SHOW server_version_num")[0]
            icu = self.execute("SELECT 1 FROM pg_collation WHERE collname = 'en-US-x-icu'")
            _ICU[self.kind] = int(version) >= 150000 and bool(icu)
        return (
            " TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'" if _ICU[self.kind] else ""
        )

    def require(self) -> None:
        """Skip the test when the server cannot be used (fail it when services are required)."""
        problem = self.problem()
        if problem is None:
            return
        if os.environ.get("STEPSTORE_REQUIRE_SERVICES"):
            pytest.fail(f"{problem} ($STEPSTORE_REQUIRE_SERVICES is set)", pytrace=False)
        pytest.skip(problem)

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A new, empty database for one test; yields its URI and drops it afterwards."""
        self.require()
        name = f"stepstore_test_{uuid.uuid4().hex[:12]}"
        self.execute(f"CREATE DATABASE {name}{self.locale_options()}")
        try:
            yield self.uri(name)
        finally:
            force = " WITH (FORCE)" if self.kind == "postgresql" else ""
            self.execute(f"DROP DATABASE IF EXISTS {name}{force}")


SERVERS = {
    "postgresql": Server(
        "postgresql",
        os.environ.get("STEPSTORE_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/test"),
    ),
    "mariadb": Server(
        "mariadb", os.environ.get("STEPSTORE_TEST_MARIADB", "mariadb://root@127.0.0.1:3306/test")
    ),
}
_PROBLEMS: dict[str, str | None] = {}
_ICU: dict[str, bool] = {}
_SCHEMES = {"postgresql": "postgresql", "postgres": "postgresql", "mysql": "mariadb"}


def server_of(uri: str) -> Server:
    """The test server a store URI points at."""
    scheme = urlsplit(uri).scheme
    return SERVERS[_SCHEMES.get(scheme, scheme)]


@contextlib.contextmanager
def fresh_store(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The URI (a path for SQLite) of a new, empty store with private local directories."""
    monkeypatch.setenv("STEPSTORE_JOURNAL_DIR", str(tmp_path / "journals"))
    monkeypatch.setenv("STEPSTORE_ARRAY_STORE", str(tmp_path / "arrays"))
    if kind == "sqlite":
        yield str(tmp_path / "store")
    elif kind == "memory":
        yield f"memory://test-{uuid.uuid4().hex[:12]}"
    else:
        with SERVERS[kind].database() as uri:
            yield uri


@pytest.fixture(params=["sqlite", *SERVERS])
def store_uri(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A fresh, empty store in each backend."""
    with fresh_store(request.param, tmp_path, monkeypatch) as uri:
        yield uri


@pytest.fixture(params=list(SERVERS))
def server(request: pytest.FixtureRequest) -> Server:
    """Each test server (the test is skipped, or failed, when it cannot be used)."""
    chosen = SERVERS[request.param]
    chosen.require()
    return chosen


@pytest.fixture
def server_uri(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh, empty database in each server backend."""
    with fresh_store(server.kind, tmp_path, monkeypatch) as uri:
        yield uri


@pytest.fixture
def backend(store_uri: str) -> Iterator[Backend]:
    """The backend of ``store_uri``, created and closed after the test."""
    opened = open_backend(store_uri, create=True)
    yield opened
    opened.close()


@pytest.fixture
def store_sql(store_uri: str) -> StoreSQL:
    """Runs one SQL statement (``?`` placeholders) on the database of ``store_uri``."""
    if store_uri.startswith("memory://"):
        pytest.skip("a memory:// store's database is reached only through its backend")
    if "://" not in store_uri:

        def run_sqlite(statement: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
            with contextlib.closing(sqlite3.connect(Path(store_uri) / "stepstore.db")) as db:
                rows = db.execute(statement, params).fetchall()
                db.commit()
                return rows

        return run_sqlite
    server = server_of(store_uri)
    database = ServerAddress.parse(store_uri, 0).database

    def run_server(statement: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return server.execute(statement.replace("?", "%s"), params, database)

    return run_server
