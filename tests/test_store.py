"""Opening stores, schema versions, integrity checks, downsampling, Arrow and DuckDB."""

from __future__ import annotations

import contextlib
import math
import sqlite3
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import stepstore as ss
from stepstore.backends.sqlite import SCHEMA_VERSION

from .conftest import FAST, run_python


def test_open_missing_or_foreign_directory_fails_clearly(tmp_path):
    with pytest.raises(ss.NotAStoreError, match=r"not a stepstore store \(does not exist\)"):
        ss.open(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hi")
    with pytest.raises(ss.NotAStoreError, match=r"holds no stepstore.db"):
        ss.open(tmp_path / "other")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "stepstore.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ss.NotAStoreError, match="not a stepstore database"):
        ss.open(tmp_path / "bad")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ss.NotAStoreError, match="exists and is not a directory"):
        ss.init("p", store=tmp_path / "file")


def test_unknown_scheme_lists_known_ones(tmp_path):
    with pytest.raises(ss.UnknownSchemeError, match=r"unknown scheme 'redis'; known: file://"):
        ss.open("redis://localhost/0")


def test_newer_schema_is_refused(new_run, store_path):
    new_run().finish()
    db = sqlite3.connect(store_path / "stepstore.db")
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(
        ss.SchemaVersionError,
        match=rf"schema version {SCHEMA_VERSION + 1} is "
        r"newer than this stepstore supports",
    ):
        ss.open(store_path)
    with pytest.raises(ss.SchemaVersionError):
        ss.init("p", store=store_path)


def test_unknown_run_and_key_errors(new_run, store_path):
    run = new_run()
    run.log({"loss": 1.0})
    run.finish()
    store = ss.open(store_path)
    with pytest.raises(ss.NotFoundError, match="no run with id or name 'zzz'"):
        store.run("zzz")
    with pytest.raises(ss.NotFoundError, match=r"has no key matching 'acc'; recorded keys: loss"):
        store.run(run.id).scalars("acc")
    with pytest.raises(ss.InvalidArgumentError, match=r"steps=\(5, 1\): low end is above"):
        store.run(run.id).scalars("loss", steps=(5, 1))
    with pytest.raises(ss.InvalidArgumentError, match="max_points=1: expected an integer >= 2"):
        store.run(run.id).scalars("loss", max_points=1)


def test_duplicate_names_are_ambiguous(new_run, store_path):
    a = new_run(name="same")
    b = new_run(name="same")
    a.finish()
    b.finish()
    with pytest.raises(ss.InvalidArgumentError, match="run name 'same' is ambiguous"):
        ss.open(store_path).run("same")


def test_check_reports_the_damaged_chunk_and_rest_reads(new_run, store_path):
    run = new_run(chunk_size=16)
    for i in range(64):
        run.log({"a": float(i), "b": float(-i)})
    run.finish()
    store = ss.open(store_path)
    assert store.check() == []
    db = sqlite3.connect(store_path / "stepstore.db")
    sid = db.execute("SELECT id FROM series WHERE key = 'a'").fetchone()[0]
    data = bytearray(
        db.execute("SELECT data FROM chunks WHERE series_id = ? AND seq = 2", (sid,)).fetchone()[0]
    )
    data[-3] ^= 0xFF
    db.execute("UPDATE chunks SET data = ? WHERE series_id = ? AND seq = 2", (bytes(data), sid))
    db.commit()
    db.close()
    problems = store.check()
    assert [(p.where, p.what) for p in problems] == [
        (f"run {run.id} key 'a' chunk 2", "checksum mismatch")
    ]
    view = store.run(run.id)
    with pytest.raises(ss.StoreError, match=rf"run {run.id} key 'a' chunk 2: checksum mismatch"):
        view.scalars("a")
    assert view.scalars("a", steps=(0, 31))["value"].tolist() == [float(i) for i in range(32)]
    assert view.scalars("b")["value"].tolist() == [float(-i) for i in range(64)]


def test_step_and_epoch_ranges_are_inclusive(new_run, store_path):
    run = new_run(chunk_size=16)
    for i in range(100):
        run.log({"x": float(i)}, epoch=i // 10)
    run.finish()
    view = ss.open(store_path).run(run.id)
    assert view.scalars("x", steps=(15, 40))["step"].tolist() == list(range(15, 41))
    assert view.scalars("x", steps=(95, None))["step"].tolist() == list(range(95, 100))
    assert view.scalars("x", steps=7)["step"].tolist() == [7]
    assert view.scalars("x", epochs=(2, 3))["step"].tolist() == list(range(20, 40))
    assert view.scalars("x", epochs=4, steps=(0, 44))["step"].tolist() == list(range(40, 45))


@pytest.mark.parametrize("chunk_size", [16, 256, 8192])
def test_max_points_keeps_spikes_and_nans(new_run, store_path, chunk_size):
    run = new_run(chunk_size=chunk_size)
    rng = np.random.default_rng(1)
    values = rng.normal(size=20_000)
    values[12_345] = 1e6
    values[777] = -1e6
    values[15_000] = math.nan
    for v in values:
        run.log({"loss": float(v)})
    run.finish()
    view = ss.open(store_path).run(run.id)
    for steps in (None, (500, 19_000)):
        df = view.scalars("loss", max_points=200, steps=steps)
        assert len(df) <= 200 + 100  # min/max per bucket plus NaN markers
        assert df["step"].is_monotonic_increasing
        by_step = dict(zip(df["step"], df["value"], strict=True))
        assert by_step[12_345] == 1e6
        assert by_step[777] == -1e6
        assert math.isnan(by_step[15_000])
        if steps:
            assert df["step"].between(*steps).all()
    exact = view.scalars("loss")
    df = view.scalars("loss", max_points=200)
    joined = exact.set_index("step").loc[df["step"]]
    assert np.array_equal(joined["value"].to_numpy(), df["value"].to_numpy(), equal_nan=True)
    assert (joined["epoch"].isna().to_numpy() == df["epoch"].isna().to_numpy()).all()
    assert (joined["time"].to_numpy() == df["time"].to_numpy()).all()


def test_scalars_of_several_keys_and_globs(new_run, store_path):
    run = new_run()
    for i in range(3):
        run.log({"loss": float(i), "val/acc": 0.5, "val/loss": 1.0})
    run.finish()
    view = ss.open(store_path).run(run.id)
    df = view.scalars("val/*")
    assert sorted(df["key"].astype(str).unique()) == ["val/acc", "val/loss"]
    assert len(view.scalars(["loss", "val/acc"])) == 6
    assert view.keys() == ["loss", "val/acc", "val/loss"]


def test_to_arrow_and_duckdb_over_many_runs(new_run, store_path):
    for lr in (0.1, 0.01):
        run = new_run(params={"lr": lr})
        for i in range(10):
            run.log({"loss": lr * i})
        run.finish()
    store = ss.open(store_path)
    table = store.to_arrow(where="params.lr < 0.05")
    assert table.num_rows == 10
    assert table.column_names == [
        "run_id",
        "project",
        "run",
        "key",
        "step",
        "epoch",
        "time",
        "value",
    ]
    assert table.column("value").to_pylist() == [0.01 * i for i in range(10)]
    duckdb = pytest.importorskip("duckdb")
    con = store.duckdb(duckdb.connect())
    rows = con.execute(
        "SELECT r.name, max(p.value) FROM points p JOIN runs r ON r.id = p.run_id "
        "GROUP BY r.name ORDER BY 2"
    ).fetchall()
    assert [round(v, 6) for _, v in rows] == [0.09, 0.9]


def test_two_processes_write_one_store_at_once(store_path):
    ss.init("p", store=store_path).finish()  # create the store first
    code = """
        import sys, stepstore as ss
        run = ss.init("p", store=sys.argv[1], name=sys.argv[2], flush_interval=0.01,
                      chunk_size=64)
        for i in range(20000):
            run.log({"x": float(i)})
        run.finish()
        """
    import subprocess
    from pathlib import Path

    env = {"PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", __import__("textwrap").dedent(code), str(store_path), f"w{i}"],
            env={**__import__("os").environ, **env},
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    store = ss.open(store_path)
    for i in range(3):
        df = store.run(f"w{i}").scalars("x")
        assert df["value"].tolist() == [float(j) for j in range(20000)]
    assert store.check() == []


def test_import_is_light():
    result = run_python(
        """
        import sys, time
        t = time.perf_counter()
        import stepstore
        took = time.perf_counter() - t
        heavy = [m for m in ("torch", "pandas", "pyarrow", "sqlite3", "lark", "click", "rich",
                             "jax", "tensorflow", "psycopg", "duckdb", "numcodecs")
                 if m in sys.modules]
        print(took, heavy)
        """
    )
    took, heavy = result.stdout.split(" ", 1)
    assert heavy.strip() == "[]"
    assert float(took) < 1.0


def test_exported_names_are_the_documented_ones():
    documented = {
        "init",
        "open",
        "Run",
        "RunView",
        "Store",
        "Policy",
        "every",
        "every_epoch",
        "at",
        "copy",
        "log_spaced",
        "on_change",
        "on_exception",
        "on_nan",
        "first",
        "window",
        "StepstoreError",
        "InvalidValueError",
        "InvalidArgumentError",
        "StepOrderError",
        "KindMismatchError",
        "RunStateError",
        "WriterError",
        "FilterSyntaxError",
        "NotFoundError",
        "StoreError",
        "StoreUnavailableError",
        "MissingDependencyError",
        "NotAStoreError",
        "SchemaVersionError",
        "UnknownSchemeError",
        "UnsupportedError",
        "Image",
        "image_grid",
        "TensorSeries",
        "__version__",
    }
    assert set(ss.__all__) == documented
    for name in ss.__all__:
        assert hasattr(ss, name)
    for name in documented - {
        "Image",
        "image_grid",
        "TensorSeries",
        "__version__",
        "init",
        "open",
        "every",
        "every_epoch",
        "at",
        "copy",
        "log_spaced",
        "on_change",
        "on_exception",
        "on_nan",
        "first",
        "window",
        "Run",
        "RunView",
        "Store",
        "Policy",
    }:
        assert issubclass(getattr(ss, name), ss.StepstoreError)


def test_flush_makes_points_visible_to_other_readers(new_run, store_path):
    run = new_run(**FAST)
    run.log({"x": 1.0})
    run.flush()
    assert ss.open(store_path).run(run.id).summary["x"]["count"] == 1


def test_fsync_setting_picks_sqlite_synchronous_mode(monkeypatch, new_run, store_path):
    new_run().finish()
    assert ss.open(store_path).backend._db.execute("PRAGMA synchronous").fetchone() == (2,)
    monkeypatch.setenv("STEPSTORE_FSYNC", "0")
    assert ss.open(store_path).backend._db.execute("PRAGMA synchronous").fetchone() == (1,)


def _open_at_barrier(path: str, barrier: Any, errors: Any) -> None:
    from stepstore.backends.sqlite import SQLiteBackend

    barrier.wait()
    try:
        SQLiteBackend(path, create=True).close()
    except ss.StepstoreError as exc:
        errors.put(str(exc))


def test_processes_creating_one_store_at_once_never_see_it_locked(tmp_path):
    # switching a new database to WAL answers "locked" without waiting while another
    # process creates the schema; forked processes released together hit that window
    import multiprocessing

    context = multiprocessing.get_context("fork")
    errors = context.Queue()
    for trial in range(20):
        barrier = context.Barrier(8)
        path = str(tmp_path / f"s{trial}")
        procs = [
            context.Process(target=_open_at_barrier, args=(path, barrier, errors)) for _ in range(8)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=120)
        assert [proc.exitcode for proc in procs] == [0] * 8
    assert errors.empty(), errors.get()
    with ss.open(str(tmp_path / "s0")) as store:
        assert store.runs() == []


def test_a_schema_version_that_is_not_a_number_is_reported(store_path: Path) -> None:
    with ss.init("p", store=store_path, flush_interval=0.05) as run:
        run.log({"loss": 1.0})
    with contextlib.closing(sqlite3.connect(store_path / "stepstore.db")) as db, db:
        db.execute("UPDATE meta SET value = 'x7' WHERE key = 'schema_version'")
    with pytest.raises(ss.StoreError, match=r"the schema version 'x7' is not a number"):
        ss.open(store_path).runs()
