"""Every backend against the conformance suite; server connection errors and settings."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import stepstore as ss
from stepstore.backends import REGISTRY, open_backend
from stepstore.backends.mysql import MySQLBackend
from stepstore.backends.postgresql import PostgresBackend
from stepstore.backends.server import CONNECT_TIMEOUT, ServerAddress, mask_password
from stepstore.repair import repair
from stepstore.testing import BackendConformance, run_record

from .backend_fixtures import SERVERS, fresh_store


class TestBackends(BackendConformance):
    """The conformance suite, once per backend (the ``store_uri`` fixture's parameters)."""

    @pytest.fixture(params=["sqlite", *SERVERS, "memory"])
    def store_uri(
        self, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[str]:
        """A fresh, empty store in each backend, a memory one too."""
        with fresh_store(request.param, tmp_path, monkeypatch) as uri:
            yield uri


def test_registry_names_every_server_scheme():
    assert {s: REGISTRY[s] for s in ("postgresql", "postgres", "mysql", "mariadb")} == {
        "postgresql": "stepstore.backends.postgresql:PostgresBackend",
        "postgres": "stepstore.backends.postgresql:PostgresBackend",
        "mysql": "stepstore.backends.mysql:MySQLBackend",
        "mariadb": "stepstore.backends.mysql:MySQLBackend",
    }
    assert PostgresBackend.schemes == ("postgresql", "postgres")
    assert MySQLBackend.schemes == ("mysql", "mariadb")
    with pytest.raises(ss.UnknownSchemeError, match=r"mariadb://, mysql://, postgres://"):
        ss.open("redis://localhost/0")


@pytest.mark.parametrize(
    ("uri", "masked"),
    [
        ("postgresql://u:secret@h:5/db", "postgresql://u:***@h:5/db"),
        ("mysql://u:p%40ss:word@h/db?unix_socket=/s", "mysql://u:***@h/db?unix_socket=/s"),
        ("postgres://u@h/db", "postgres://u@h/db"),
        ("postgresql://h/db?sslmode=require&password=x", "postgresql://h/db?sslmode=require&password=***"),
        ("mariadb://:only@h/db", "mariadb://:***@h/db"),
    ],
)  # fmt: skip
def test_passwords_are_masked(uri, masked):
    assert mask_password(uri) == masked


def test_server_address_and_local_names():
    address = ServerAddress.parse("mysql://me:p%40ss@db.example:3307/runs", 3306)
    assert (address.user, address.password, address.host, address.port, address.database) == (
        "me",
        "p@ss",
        "db.example",
        3307,
        "runs",
    )
    assert address.local_name == "db.example-3307-runs"
    assert ServerAddress.parse("postgresql:///x y", 5432).local_name == "localhost-5432-x_y"
    searching = ServerAddress.parse("postgresql://h/db?options=-csearch_path%3Dother", 5432)
    assert searching.local_name.startswith("h-5432-db-") and len(searching.local_name) == 18
    timeout_only = ServerAddress.parse("postgresql://h/db?connect_timeout=3&password=x", 5432)
    assert timeout_only.local_name == "h-5432-db"
    with pytest.raises(ss.InvalidArgumentError, match="port is not a number"):
        ServerAddress.parse("mysql://h:port/db", 3306)
    with pytest.raises(ss.InvalidArgumentError, match="expected scheme://user@host:port/database"):
        ServerAddress.parse("mysql://h/db/extra", 3306)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "mysql", "mariadb"])
def test_unreachable_server_fails_fast_naming_the_masked_uri(scheme):
    uri = f"{scheme}://stepstore:s3cret@127.0.0.1:1/db"
    start = time.monotonic()
    with pytest.raises(ss.StoreError) as info:
        open_backend(uri, create=True)
    assert time.monotonic() - start < CONNECT_TIMEOUT + 2
    message = str(info.value)
    assert message.startswith(f"cannot connect to {scheme}://stepstore:***@127.0.0.1:1/db: ")
    assert "refused" in message.lower()
    assert "s3cret" not in message


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_silent_server_times_out(scheme, silent_port):
    uri = f"{scheme}://u:s3cret@127.0.0.1:{silent_port}/db?connect_timeout=2"
    start = time.monotonic()
    with pytest.raises(ss.StoreError, match=r"cannot connect to \w+://u:\*\*\*@") as info:
        open_backend(uri, create=True)
    assert 1.5 < time.monotonic() - start < 6
    assert "s3cret" not in str(info.value)


def test_wrong_credentials_are_a_store_error(server):
    # the PostgreSQL test server trusts local users, so an unknown user stands in
    user = "stepstore_nobody" if server.kind == "postgresql" else "root"
    admin = ServerAddress.parse(server.admin_uri, 0)
    uri = f"{server.scheme}://{user}:wr0ng@{admin.host}:{admin.port}/{admin.database}"
    with pytest.raises(ss.StoreError) as info:
        open_backend(uri, create=True)
    message = str(info.value)
    assert f"{user}:***@" in message and "wr0ng" not in message
    assert any(word in message for word in ("does not exist", "Access denied"))


def test_server_store_local_directories(server_uri, tmp_path, monkeypatch):
    backend = open_backend(server_uri, create=True)
    try:
        address = ServerAddress.parse(server_uri, 0)
        assert backend.journal_dir == tmp_path / "journals" / backend.address.local_name
        assert backend.address.local_name.endswith(f"-{address.database}")
        assert backend.default_array_store == str(tmp_path / "arrays")
        monkeypatch.delenv("STEPSTORE_JOURNAL_DIR")
        monkeypatch.delenv("STEPSTORE_ARRAY_STORE")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
        name = backend.address.local_name
        assert backend.journal_dir == tmp_path / "cache" / "stepstore" / "journal" / name
        assert backend.default_array_store == str(tmp_path / "data/stepstore/arrays" / name)
    finally:
        backend.close()


def test_fsync_setting(server_uri):
    """PostgreSQL maps fsync to synchronous_commit; MySQL leaves durability to the server."""
    setting = (
        "SHOW synchronous_commit"
        if server_uri.startswith("postgres")
        else "SELECT @@innodb_flush_log_at_trx_commit"
    )
    values = []
    for fsync in (True, False):
        backend = open_backend(server_uri, create=True, fsync=fsync)
        try:
            values.append(backend._query(setting)[0][0])
        finally:
            backend.close()
    assert values == (["on", "off"] if server_uri.startswith("postgres") else [values[0]] * 2)


def test_closed_backend_refuses_calls(server_uri):
    backend = open_backend(server_uri, create=True)
    backend.close()
    with pytest.raises(ss.StoreError, match="the store was closed"):
        backend.find_runs()


def test_broken_connection_is_replaced(server_uri):
    backend = open_backend(server_uri, create=True)
    try:
        backend._connection_obj.close()
        assert backend.find_runs() == []
    finally:
        backend.close()


def test_killed_session_is_replaced_transparently(server, server_uri):
    backend = open_backend(server_uri, create=True)
    try:
        if server.kind == "postgresql":
            ((pid,),) = backend._query("SELECT pg_backend_pid()")
            server.execute("SELECT pg_terminate_backend(%s)", (pid,))
        else:
            ((pid,),) = backend._query("SELECT CONNECTION_ID()")
            server.execute(f"KILL {int(pid)}")
        backend.create_run(run_record("after-kill"))
        assert [r.id for r in backend.find_runs()] == ["after-kill"]
    finally:
        backend.close()


def test_forked_child_leaves_the_parent_session_alone(server, server_uri):
    session = "SELECT pg_backend_pid()" if server.kind == "postgresql" else "SELECT CONNECTION_ID()"
    backend = open_backend(server_uri, create=True)
    try:
        before = backend._query(session)
        child = os.fork()
        if child == 0:  # the child connects on its own, then closes what it opened
            code = 0 if backend.find_runs() == [] and backend._query(session) != before else 1
            backend.close()
            os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert backend._query(session) == before  # the parent's session survived
    finally:
        backend.close()


def test_a_memory_store_lives_in_its_process_under_its_name():
    name = f"memory://shared-{os.getpid()}-{time.monotonic_ns()}"
    with pytest.raises(ss.NotAStoreError, match="memory stores live in one process"):
        open_backend(name, create=False)
    first = open_backend(name, create=True)
    first.create_run(run_record("m1"))
    first.close()  # a named store outlives its backends
    again = open_backend(name, create=False)
    assert [r.id for r in again.find_runs()] == ["m1"]
    assert again.journal_dir is None
    again.close()
    anonymous = open_backend("memory://", create=False)
    anonymous.create_run(run_record("a1"))
    assert open_backend("memory://", create=False).find_runs() == []
    assert [r.id for r in anonymous.find_runs()] == ["a1"]
    anonymous.close()
    with pytest.raises(ss.InvalidArgumentError, match="expected memory://NAME"):
        open_backend("memory://a/b", create=True)


def test_a_memory_store_writes_nothing_to_disk(tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("STEPSTORE_JOURNAL_DIR", "STEPSTORE_ARRAY_STORE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    uri = f"memory://disk-free-{time.monotonic_ns()}"
    image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    with ss.init("m", store=uri, flush_interval=0.05, params={"lr": 0.5}) as run:
        for step in range(300):
            run.log({"loss": 1.0 / (step + 1), "w": np.full(3, step, np.float32)}, step=step)
        run.log({"img": ss.Image(image, caption="c")}, step=300)
        run.log_record("note", {"text": "é"}, step=1)
    with ss.open(uri) as store:
        view = store.run(run.id)
        assert view.scalars("loss")["value"].tolist() == [1.0 / (s + 1) for s in range(300)]
        assert view.tensor("w").at(299).tolist() == [299.0] * 3
        assert np.array_equal(view.images("img")[0].array, image)
        assert view.records("note")["text"].tolist() == ["é"]
        assert [r.id for r in store.runs(where="params.lr = 0.5")] == [run.id]
        assert store.check() == []
        assert repair(store) == []
    assert list(tmp_path.rglob("*")) == []


def test_registry_comes_from_the_classes_schemes():
    from stepstore.backends import BACKENDS

    assert {
        scheme: f"{cls.__module__}:{cls.__qualname__}" for cls in BACKENDS for scheme in cls.schemes
    } == REGISTRY
    assert REGISTRY["memory"] == "stepstore.backends.memory:MemoryBackend"
    known = "file://, mariadb://, mysql://, postgres://, postgresql://, sqlite://, memory://"
    with pytest.raises(ss.UnknownSchemeError, match=f"known: {known} or a plain path$"):
        open_backend("redis://localhost/0", create=True)


def test_server_local_directories_come_from_the_config(server_uri, tmp_path, monkeypatch):
    from stepstore.config import load_config

    backend = open_backend(server_uri, create=True)
    try:
        name = backend.address.local_name
        assert backend.journal_dir == tmp_path / "journals" / name  # $STEPSTORE_JOURNAL_DIR
        assert backend.default_array_store == str(tmp_path / "arrays")  # $STEPSTORE_ARRAY_STORE
        monkeypatch.delenv("STEPSTORE_JOURNAL_DIR")
        monkeypatch.delenv("STEPSTORE_ARRAY_STORE")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
        assert backend.journal_dir == tmp_path / "cache" / "stepstore" / "journal" / name
        assert backend.default_array_store == str(tmp_path / "data/stepstore/arrays" / name)
        assert backend.array_location(None).url == backend.default_array_store
        assert backend.array_location("s3://b/p").url == "s3://b/p"
    finally:
        backend.close()
    monkeypatch.setenv("STEPSTORE_ARRAY_STORE", "from-env")
    assert load_config().array_store == "from-env"
    assert load_config(array_store="given").array_store == "given"
    assert load_config(journal_dir=None).journal_dir is None
