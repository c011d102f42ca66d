"""MLflow import and export: real MLflow stores (a file store and a SQLite store) written with
MlflowClient, imported, compared value for value with MlflowClient's answers, exported to new
stores and compared again (MLflow -> stepstore -> MLflow)."""

from __future__ import annotations

import math
import os
import secrets
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("mlflow")
import mlflow
from mlflow.entities import Metric

import stepstore as ss
from stepstore.backends import open_backend
from stepstore.cli import main
from stepstore.errors import InvalidArgumentError, StoreError
from stepstore.io.mlflow_export import RUN_ID_TAG, export_mlflow, param_text
from stepstore.io.mlflow_import import import_mlflow, param_value
from stepstore.io.mlflow_source import open_source

# MLflow's SQL store uses SQLAlchemy options that SQLAlchemy 2.1 deprecates
pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SADeprecationWarning")

KINDS = ("file", "sqlite")
SQL_MAX = 1.7976931348623157e308  # what a SQL store keeps for an infinity


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow puts a new experiment's artifacts under ./mlruns: keep them in the test's folder."""
    monkeypatch.chdir(tmp_path)


def _uri(kind: str, folder: Path) -> str:
    return f"file://{folder / 'mlruns'}" if kind == "file" else f"sqlite:///{folder / 'mlflow.db'}"


def _fill(client: Any, folder: Path) -> dict[str, str]:
    """Two experiments, three runs: every kind of value and order MLflow allows."""
    ids = {}
    a = client.create_experiment("exp-a", artifact_location=str(folder / "art-a"))
    b = client.create_experiment("exp-b", artifact_location=str(folder / "art-b"))
    run = client.create_run(a, start_time=1_700_000_000_123, tags={"team": "vision", "flag": ""})
    rid = ids["main"] = run.info.run_id
    for key, value in {"lr": 0.001, "layers": 3, "opt": "adam", "odd": "1e-3"}.items():
        client.log_param(rid, key, value)
    values = [0.1, -0.0, 5e-324, float("nan"), float("inf"), -float("inf"), 1 / 3, 2.5]
    points = [Metric("loss", v, 1_700_000_001_000 + i, i) for i, v in enumerate(values)]
    points += [
        Metric("loss", 7.0, 1_700_000_000_500, 2),  # a second point at step 2, earlier
        Metric("loss", 8.0, 1_700_000_002_000, 1),  # a step below the last, logged later
        Metric("val/acc", 0.5, 1_700_000_003_000, 10),
        Metric("val/acc", 0.25, 1_700_000_003_000, 10),  # same step and timestamp
        Metric("val/acc", 0.75, 1_700_000_004_000, -3),  # no stepstore step
    ]
    client.log_batch(rid, metrics=points)
    (folder / "model.txt").write_text("weights")
    (folder / "plot.svg").write_text("<svg/>")
    client.log_artifact(rid, str(folder / "model.txt"))
    client.log_artifact(rid, str(folder / "plot.svg"), "plots/train")
    client.set_terminated(rid, "FINISHED", end_time=1_700_000_009_999)
    run = client.create_run(b, start_time=1_700_000_100_000, run_name="long")
    ids["long"] = run.info.run_id
    rng = np.random.default_rng(7)
    long = [Metric("x", float(v), 1_700_000_100_000 + i, i) for i, v in enumerate(rng.random(2500))]
    for start in range(0, len(long), 1000):
        client.log_batch(ids["long"], metrics=long[start : start + 1000])
    client.set_terminated(ids["long"], "FAILED", end_time=1_700_000_200_000)
    run = client.create_run(b, start_time=1_700_000_300_000, run_name="live")
    ids["live"] = run.info.run_id
    client.log_metric(ids["live"], "y", 1.0, timestamp=1_700_000_300_001, step=0)
    return ids


@pytest.fixture(scope="module")
def allow_file_store():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        yield


@pytest.fixture(scope="module")
def sources(tmp_path_factory, allow_file_store) -> dict[str, tuple[str, dict[str, str]]]:
    """Per kind: the tracking URI and the run ids by role."""
    made = {}
    for kind in KINDS:
        folder = tmp_path_factory.mktemp(f"mlflow-{kind}")
        uri = _uri(kind, folder)
        made[kind] = (uri, _fill(mlflow.MlflowClient(uri), folder))
    return made


def _import(uri: str, store: Path) -> list[Any]:
    source = open_source(uri)
    backend = open_backend(str(store), create=True)
    try:
        return import_mlflow(source, backend)
    finally:
        source.close()
        backend.close()


def _bits(values: list[float]) -> list[Any]:
    return ["nan" if math.isnan(v) else np.float64(v).view(np.int64) for v in values]


def _history(client: Any, run_id: str, key: str) -> list[tuple[int, int, Any]]:
    """MLflow's history of a key as stepstore orders it: by step, then timestamp, then the
    store's order; as (step, timestamp, value bits)."""
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return [
        (m.step, m.timestamp, b)
        for m, b in zip(points, _bits([m.value for m in points]), strict=True)
    ]


def _stored(view: ss.RunView, key: str) -> list[tuple[int, int, Any]]:
    columns = view.columns(key)
    assert (columns.time % 1000 == 0).all()
    return list(
        zip(
            columns.step.tolist(),
            (columns.time // 1000).tolist(),
            _bits(columns.value.tolist()),
            strict=True,
        )
    )


def _compare(client: Any, ids: dict[str, str], store: ss.Store) -> None:
    """Every imported run is what MlflowClient answers for it, point for point."""
    for run_id in ids.values():
        expected = client.get_run(run_id)
        view = store.run(run_id)
        assert view.project == client.get_experiment(expected.info.experiment_id).name
        assert view.name == expected.info.run_name
        assert view.created == expected.info.start_time / 1000
        end = expected.info.end_time
        assert view.ended == (None if end is None else end / 1000)
        assert {k: param_text(v) for k, v in view.params.items()} == expected.data.params
        assert view.env["mlflow"]["tags"] == expected.data.tags
        assert view.keys("scalar") == sorted(expected.data.metrics)
        for key in view.keys("scalar"):
            history = [p for p in _history(client, run_id, key) if p[0] >= 0]
            assert _stored(view, key) == history


@pytest.mark.parametrize("kind", KINDS)
def test_import_matches_mlflow_client(sources, kind, store_path, tmp_path):
    uri, ids = sources[kind]
    client = mlflow.MlflowClient(uri)
    results = {r.run_id: r for r in _import(uri, store_path)}
    assert {r.action for r in results.values()} == {"imported"}
    store = ss.open(store_path)
    _compare(client, ids, store)
    main_run = store.run(ids["main"])
    assert main_run.params == {"lr": 0.001, "layers": 3, "opt": "adam", "odd": "1e-3"}
    assert main_run.tags == ["flag", "team=vision"]
    assert main_run.status == "incomplete"  # the point at step -3 has no stepstore step
    assert results[ids["main"]].skipped == (
        "metric 'val/acc': 1 point(s) at negative steps (stepstore steps are >= 0)",
    )
    assert main_run.capture["keys"]["val/acc"] == {"policy": None, "recorded": 2, "skipped": 1}
    loss = main_run.columns("loss")
    assert loss.step.tolist() == [0, 1, 1, 2, 2, 3, 4, 5, 6, 7]  # by step, then timestamp
    inf = math.inf if kind == "file" else SQL_MAX
    assert loss.value[6:8].tolist() == [inf, -inf]
    assert store.run(ids["long"]).status == "failed"
    assert store.run(ids["live"]).status == "incomplete"  # still RUNNING in MLflow
    assert sorted(main_run.artifacts()) == ["model.txt", "plots/train/plot.svg"]
    assert main_run.artifact("plots/train/plot.svg") == b"<svg/>"
    assert main_run.artifact("model.txt") == b"weights"


@pytest.mark.parametrize("kind", KINDS)
def test_import_again_changes_nothing_until_mlflow_does(sources, kind, store_path):
    uri, ids = sources[kind]
    _import(uri, store_path)
    database = store_path / "stepstore.db"
    before = _dump(database)
    assert {r.action for r in _import(uri, store_path)} == {"skipped"}
    assert _dump(database) == before
    client = mlflow.MlflowClient(uri)
    client.log_metric(ids["live"], "y", 2.0, timestamp=1_700_000_300_002, step=1)
    try:
        actions = {r.run_id: r.action for r in _import(uri, store_path)}
        assert actions[ids["live"]] == "updated"
        assert {a for r, a in actions.items() if r != ids["live"]} == {"skipped"}
        assert ss.open(store_path).run(ids["live"]).columns("y").value.tolist() == [1.0, 2.0]
    finally:  # the live run of the shared source goes back to one point
        _drop_point(kind, uri, ids["live"])


def _drop_point(kind: str, uri: str, run_id: str) -> None:
    if kind == "sqlite":
        with sqlite3.connect(uri.removeprefix("sqlite:///")) as db:
            db.execute("DELETE FROM metrics WHERE run_uuid = ? AND step = 1", (run_id,))
        return
    (path,) = Path(uri.removeprefix("file://")).glob(f"*/{run_id}/metrics/y")
    path.write_text(path.read_text().splitlines(keepends=True)[0])


def _dump(database: Path) -> list[Any]:
    with sqlite3.connect(database) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return [(t, sorted(db.execute(f"SELECT * FROM {t}").fetchall(), key=repr)) for t in tables]


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_mlflow_stepstore_mlflow(sources, kind, store_path, tmp_path):
    uri, ids = sources[kind]
    _import(uri, store_path)
    target = _uri(kind, tmp_path)
    store = ss.open(store_path)
    views = [store.run(run_id) for run_id in ids.values()]
    exported = export_mlflow(views, target)
    assert [r.action for r in exported] == ["exported"] * 3
    assert sum(r.points for r in exported) == sum(
        v.summary[k]["count"] for v in views for k in v.keys()
    )
    source, copy = mlflow.MlflowClient(uri), mlflow.MlflowClient(target)
    for result in exported:
        old, new = source.get_run(result.run_id), copy.get_run(result.mlflow_run_id)
        assert new.info.run_name == old.info.run_name
        assert new.info.status == old.info.status
        assert new.info.start_time == old.info.start_time
        assert new.info.end_time == old.info.end_time
        assert new.data.params == old.data.params
        assert new.data.tags == {**old.data.tags, RUN_ID_TAG: result.run_id}
        assert copy.get_experiment(new.info.experiment_id).name == (
            source.get_experiment(old.info.experiment_id).name
        )
        for key in old.data.metrics:
            expected = [p for p in _history(source, result.run_id, key) if p[0] >= 0]
            assert _history(copy, result.mlflow_run_id, key) == expected
    main_copy = next(r.mlflow_run_id for r in exported if r.run_id == ids["main"])
    names = {a.path for a in copy.list_artifacts(main_copy)}
    assert names == {"model.txt", "plots"}
    assert (
        Path(copy.download_artifacts(main_copy, "plots/train/plot.svg")).read_bytes() == b"<svg/>"
    )
    assert [r.action for r in export_mlflow(views, target)] == ["skipped"] * 3


def test_export_of_a_recorded_run(new_run, store_path, tmp_path, allow_file_store):
    with new_run(
        name="rec", params={"lr": 0.5, "model": {"width": 64}, "act": "relu"}, tags=["baseline"]
    ) as run:
        for step in range(3):
            run.log({"loss": 1.0 / (step + 1)}, step=step, time=1_700_000_000.25 + step)
    view = ss.open(store_path).run("rec")
    uri = _uri("file", tmp_path)
    (result,) = export_mlflow([view], uri)
    client = mlflow.MlflowClient(uri)
    got = client.get_run(result.mlflow_run_id)
    assert got.data.params == {"lr": "0.5", "model.width": "64", "act": "relu"}
    assert got.data.tags == {"baseline": "", "mlflow.runName": "rec", RUN_ID_TAG: view.id}
    assert got.info.status == "FINISHED"
    assert [
        (m.step, m.timestamp, m.value) for m in client.get_metric_history(got.info.run_id, "loss")
    ] == [
        (0, 1_700_000_000_250, 1.0),
        (1, 1_700_000_001_250, 0.5),
        (2, 1_700_000_002_250, 1 / 3),
    ]


def test_cli_import_and_export(sources, store_path, tmp_path):
    uri, ids = sources["sqlite"]
    runner = CliRunner()
    result = runner.invoke(main, ["import", "mlflow", uri, "--store", str(store_path)])
    assert result.exit_code == 0, result.output
    assert f"imported exp-b / long ({ids['long']}): 2500 points" in result.output
    assert "skipped metric 'val/acc': 1 point(s) at negative steps" in result.output
    assert result.output.rstrip().endswith(f"3 run(s) imported from {uri}, 0 already imported")
    again = runner.invoke(main, ["import", "mlflow", uri, "--store", str(store_path)])
    assert again.output.rstrip().endswith("0 run(s) imported from " + uri + ", 3 already imported")
    target = _uri("sqlite", tmp_path)
    out = runner.invoke(
        main,
        ["export", ids["long"], "--format", "mlflow", "-o", target, "--store", str(store_path)],
    )
    assert out.exit_code == 0, out.output
    assert out.stdout == f"wrote 2500 points from 1 run(s) to {target} (mlflow)\n"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (
            "sqlite:///{tmp}/none.db",
            "MLflow tracking store sqlite:///{tmp}/none.db: no such database file",
        ),
        (
            "{tmp}",
            "MLflow file store {tmp}: no experiment in it (expected folders with a meta.yaml, "
            "as mlflow writes under mlruns/)",
        ),
        ("{tmp}/missing", "MLflow file store {tmp}/missing: no such folder"),
        (
            "sqlite:///{tmp}/other.db",
            "sqlite:///{tmp}/other.db: not an MLflow tracking database "
            "(no experiments or metrics table)",
        ),
    ],
)
def test_bad_tracking_uris(tmp_path, store_path, uri, message):
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.close()
    uri = uri.format(tmp=tmp_path)
    with pytest.raises(StoreError) as caught:
        open_source(uri)
    assert str(caught.value) == message.format(tmp=tmp_path)
    result = CliRunner().invoke(main, ["import", "mlflow", uri, "--store", str(store_path)])
    assert result.exit_code == 1
    assert result.output == f"error: {message.format(tmp=tmp_path)}\n"


def test_import_from_postgresql(tmp_path, store_path):
    psycopg = pytest.importorskip("psycopg")
    server = "postgresql://postgres@127.0.0.1:5432"
    try:
        admin = psycopg.connect(f"{server}/test", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        pytest.skip("no PostgreSQL server at 127.0.0.1:5432")
    name = f"stepstore_mlflow_import_{os.getpid()}_{secrets.token_hex(4)}"  # runs may overlap
    with admin:
        admin.execute(f"CREATE DATABASE {name}")
        try:
            uri = f"{server}/{name}"
            client = mlflow.MlflowClient(uri.replace("postgresql://", "postgresql+psycopg://"))
            ids = _fill(client, tmp_path)
            assert {r.action for r in _import(uri, store_path)} == {"imported"}
            _compare(client, ids, ss.open(store_path))
            assert {r.action for r in _import(uri, store_path)} == {"skipped"}
        finally:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_a_server_that_does_not_answer():
    with pytest.raises(
        StoreError,
        match=r"^MLflow tracking store postgresql\+\w+://u:\*\*\*@127\.0\.0\.1:1/db "
        "does not answer: ",
    ):
        open_source("postgresql://u:secret@127.0.0.1:1/db")
    with pytest.raises(InvalidArgumentError, match="for a tracking server"):
        open_source("http://127.0.0.1:1")


@given(st.text())
def test_param_text_round_trips(text):
    assert param_text(param_value(text)) == text


@given(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**52), 2**52))
def test_numbers_become_numbers(number):
    assert param_value(param_text(number)) == number
