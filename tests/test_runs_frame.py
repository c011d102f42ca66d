"""Runs as a table: ``Store.runs_frame``, the DuckDB ``runs`` relation, ``to_arrow(params=)``
and the column typing rule they share."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

import stepstore as ss
from stepstore.errors import InvalidArgumentError
from stepstore.query.columns import arrow_column, pandas_column, value_kind

from .conftest import FAST

NAN = math.nan
CHOICES = "expected any of last, min, max, count"


def record_runs(store: object) -> None:
    """Runs ``a`` (finished), ``b`` (failed), ``c`` (crashed) in project digits and ``d``
    (project other, a string lr)."""
    a = ss.init(
        "digits",
        name="a",
        params={"lr": 0.1, "model": {"width": 32, "act": "relu"}, "seed": 1},
        tags=["baseline"],
        store=store,
        **FAST,
    )
    for step, (loss, acc) in enumerate([(3.0, 0.5), (NAN, 0.25), (1.5, 0.75)]):
        a.log({"loss": loss, "val/acc": acc}, step=step)
    a.log({"weights": np.zeros(3, np.float32)}, step=2)
    a.finish()
    b = ss.init(
        "digits",
        name="b",
        params={"lr": 0.01, "model": {"width": 64}, "opt": {"name": "sgd", "momentum": 0.9}},
        tags=["cnn", "big"],
        store=store,
        **FAST,
    )
    b.log({"loss": 2.0}, step=0)
    b.log({"loss": 4.0}, step=5)
    b.finish("failed")
    with (
        pytest.raises(RuntimeError),
        ss.init(
            "digits", name="c", params={"lr": 0.001, "layers": [1, 2]}, store=store, **FAST
        ) as c,
    ):
        c.log({"val/acc": 0.125}, step=7)
        raise RuntimeError("boom")
    d = ss.init("other", name="d", params={"lr": "auto"}, store=store, **FAST)
    d.log({"loss": 9.0}, step=0)
    d.finish()


@pytest.fixture
def store(store_path):
    record_runs(store_path)
    with ss.open(store_path) as opened:
        yield opened


def expected_digits(views: list[ss.RunView]) -> pd.DataFrame:
    """The frame of project digits with the default metrics (last values)."""
    return pd.DataFrame(
        {
            "id": [v.id for v in views],
            "name": ["a", "b", "c"],
            "project": ["digits"] * 3,
            "status": ["finished", "failed", "crashed"],
            "created": pd.to_datetime([round(v.created * 1e6) for v in views], unit="us", utc=True),
            "duration": [v.ended - v.created for v in views],
            "tags": [["baseline"], ["cnn", "big"], []],
            "params.layers": [None, None, [1, 2]],
            "params.lr": [0.1, 0.01, 0.001],
            "params.model.act": ["relu", None, None],
            "params.model.width": pd.array([32, 64, None], "Int64"),
            "params.opt.momentum": [NAN, 0.9, NAN],
            "params.opt.name": [None, "sgd", None],
            "params.seed": pd.array([1, None, None], "Int64"),
            "metrics.loss.last": [1.5, 4.0, NAN],
            "metrics.val/acc.last": [0.75, NAN, 0.125],
        }
    ).astype({"params.layers": object})


def test_frame_has_a_row_per_run_with_params_and_last_values(store):
    views = store.runs(project="digits")
    frame = store.runs_frame(project="digits")
    pd.testing.assert_frame_equal(frame, expected_digits(views))


def test_every_statistic_in_the_order_given(store):
    frame = store.runs_frame(project="digits", metrics=("count", "max", "min", "max"))
    metrics = frame.filter(like="metrics.")
    expected = pd.DataFrame(
        {
            "metrics.loss.count": np.array([3, 2, 0], np.int64),
            "metrics.loss.max": [3.0, 4.0, NAN],
            "metrics.loss.min": [1.5, 2.0, NAN],
            "metrics.val/acc.count": np.array([3, 0, 1], np.int64),
            "metrics.val/acc.max": [0.75, NAN, 0.125],
            "metrics.val/acc.min": [0.25, NAN, 0.125],
        }
    )
    pd.testing.assert_frame_equal(metrics, expected)


def test_one_statistic_by_name_and_none_at_all(store):
    assert list(store.runs_frame(where="name = 'b'", metrics="max").filter(like="metrics.")) == [
        "metrics.loss.max"
    ]
    frame = store.runs_frame(project="digits", metrics=())
    assert list(frame.columns) == list(expected_digits(store.runs(project="digits")).columns)[:-2]


def test_where_filters_rows_and_a_mixed_param_is_kept_as_given(store):
    frame = store.runs_frame(where="name = 'a' or project = 'other'", metrics=())
    assert list(frame["name"]) == ["a", "d"]
    assert frame["params.lr"].dtype == object
    assert list(frame["params.lr"]) == [0.1, "auto"]
    assert list(store.runs_frame(where="params.lr < 0.05")["name"]) == ["b", "c"]


def test_no_matching_run_gives_the_fixed_columns(store):
    frame = store.runs_frame(where="name = 'nobody'")
    assert list(frame.columns) == [
        "id",
        "name",
        "project",
        "status",
        "created",
        "duration",
        "tags",
    ]
    assert len(frame) == 0


def test_running_run_lasts_until_now(new_run, store_path):
    run = new_run(name="live")
    run.log({"loss": 1.0})
    run.flush()
    with ss.open(store_path) as opened:
        created = opened.run("live").created
        before = time.time()
        frame = opened.runs_frame()
        after = time.time()
    assert list(frame["status"]) == ["running"]
    assert before - created <= frame["duration"][0] <= after - created
    assert frame["metrics.loss.last"][0] == 1.0


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        (
            ("last", "mean"),
            "metrics: 'mean' is not a statistic; " + CHOICES,
        ),
        ("avg", "metrics: 'avg' is not a statistic; " + CHOICES),
        (5, "metrics=5: expected a list of statistics among last, min, max, count"),
        ([None], "metrics: None is not a statistic; " + CHOICES),
    ],
)
def test_bad_metrics_name_the_choices(store, metrics, message):
    with pytest.raises(InvalidArgumentError) as caught:
        store.runs_frame(metrics=metrics)
    assert str(caught.value) == message


def test_summaries_are_read_in_one_batch(store, monkeypatch):
    def per_run(*_args: object) -> None:
        raise AssertionError("runs_frame read one run's series on its own")

    monkeypatch.setattr(store.backend, "series", per_run)
    assert len(store.runs_frame(metrics=("last", "count"))) == 4


def test_duckdb_joins_points_with_params(store):
    con = store.duckdb(project="digits")
    rows = con.sql(
        'SELECT r."params.lr", max(p.value) FROM points p JOIN runs r ON p.run_id = r.id '
        "WHERE p.key = 'val/acc' GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert rows == [(0.001, 0.125), (0.1, 0.75)]
    runs = con.sql(
        'SELECT name, tags, "params.model.width", "params.layers", status FROM runs ORDER BY name'
    ).fetchall()
    assert runs == [
        ("a", ["baseline"], 32, None, "finished"),
        ("b", ["cnn", "big"], 64, None, "failed"),
        ("c", [], None, "[1, 2]", "crashed"),
    ]


def test_duckdb_runs_table_has_the_frame_columns_without_metrics(store):
    table = store.duckdb().sql("SELECT * FROM runs ORDER BY name").to_arrow_table()
    frame = store.runs_frame(metrics=())
    assert table.column_names == list(frame.columns)
    assert table.column("params.lr").to_pylist() == ["0.1", "0.01", "0.001", '"auto"']
    created = table.column("created").cast(pa.int64()).to_pylist()
    assert created == frame["created"].astype("int64").tolist()
    assert table.column("duration").to_pylist() == frame["duration"].tolist()


def test_to_arrow_carries_params_per_point(store):
    table = store.to_arrow(project="digits", keys="loss", params=True)
    assert table.column_names[:8] == [
        "run_id",
        "project",
        "run",
        "key",
        "step",
        "epoch",
        "time",
        "value",
    ]
    assert table.select(["run", "step", "params.lr", "params.model.width"]).to_pylist() == [
        {"run": "a", "step": 0, "params.lr": 0.1, "params.model.width": 32},
        {"run": "a", "step": 1, "params.lr": 0.1, "params.model.width": 32},
        {"run": "a", "step": 2, "params.lr": 0.1, "params.model.width": 32},
        {"run": "b", "step": 0, "params.lr": 0.01, "params.model.width": 64},
        {"run": "b", "step": 5, "params.lr": 0.01, "params.model.width": 64},
    ]
    assert table.column("params.layers").to_pylist() == [None] * 5
    assert store.to_arrow(project="digits", keys="loss").column_names == table.column_names[:8]


def test_frame_is_the_same_on_every_backend(store_uri):
    record_runs(store_uri)
    with ss.open(store_uri) as opened:
        frame = opened.runs_frame(project="digits")
        pd.testing.assert_frame_equal(frame, expected_digits(opened.runs(project="digits")))
        rows = (
            opened.duckdb(project="digits")
            .sql(
                'SELECT r."params.model.width", min(p.value) FROM points p JOIN runs r '
                "ON p.run_id = r.id WHERE p.key = 'loss' GROUP BY 1 ORDER BY 1"
            )
            .fetchall()
        )
    assert rows == [(32, 1.5), (64, 2.0)]


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=5,
)


@given(st.lists(JSONISH, max_size=6))
def test_columns_keep_every_value(values):
    kind = value_kind(values)
    arrow = arrow_column(values).to_pylist()
    column = list(pandas_column(values))
    if kind == "json":
        assert [None if v is None else json.loads(v) for v in arrow] == values
        assert column == values
    elif kind == "float":
        assert arrow == [None if v is None else float(v) for v in values]
        assert [None if math.isnan(v) else v for v in column] == arrow
    else:
        assert arrow == values
        assert [None if v is pd.NA else v for v in column] == values
