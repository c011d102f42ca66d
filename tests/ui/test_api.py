"""The dashboard's JSON API (``stepstore.ui``) on real stores in every backend: every route,
every error, exact values against what was logged, the security guard and concurrency."""

from __future__ import annotations

import io
import json
import math
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage
from starlette.routing import Route

import stepstore as ss
from stepstore.backends import open_backend
from stepstore.series.chunk import Columns, make_chunk
from stepstore.series.tail import Summary
from stepstore.ui import create_app
from stepstore.ui.jsonenc import dumps
from stepstore.ui.security import COOKIE

from .api_fixtures import BIG, BLOWUP, CAPTION, ODD_KEYS, SPIKE, Demo, client, demo

__all__ = ["demo"]

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
PROFILE = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def finite(value: object) -> float:
    """A JSON number back as a float: null is NaN, "inf"/"-inf" are infinities."""
    if value is None:
        return math.nan
    return float(value)  # type: ignore[arg-type]


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal arrays, NaN equal to NaN."""
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def frame_of(demo: Demo, run: str, key: str, **kwargs: object) -> pd.DataFrame:
    """What ``RunView.scalars`` reads (the exact points) of one key."""
    with ss.open(demo.uri) as store:
        return store.run(demo.ids[run]).scalars([key], **kwargs)


def seconds(frame: pd.DataFrame) -> np.ndarray:
    """The time column of a scalars frame as Unix seconds, as the API gives it."""
    micros = frame["time"].dt.tz_convert(None).to_numpy("datetime64[us]").view(np.int64)
    return micros / 1e6


def series(demo: Demo, run: str, **query: object) -> dict:
    with client(demo.uri) as c:
        answer = c.get(f"/api/runs/{demo.ids[run]}/scalars", params=query)
    assert answer.status_code == 200, answer.text
    (found,) = answer.json()["series"]
    return found


def assert_series_is(found: dict, frame: pd.DataFrame) -> None:
    """The API's series holds exactly the frame's points."""
    assert found["step"] == frame["step"].tolist()
    epochs = [None if pd.isna(e) else int(e) for e in frame["epoch"]]
    assert found["epoch"] == epochs
    assert found["time"] == seconds(frame).tolist()
    assert same(np.array([finite(v) for v in found["value"]]), frame["value"].to_numpy())


# -- runs --------------------------------------------------------------------------------


def test_runs_list_fields(demo: Demo) -> None:
    with client(demo.uri) as c:
        runs = {r["name"]: r for r in c.get("/api/runs").json()["runs"]}
    assert {"alpha", "big", "beta"} <= set(runs)
    alpha = runs["alpha"]
    assert alpha["id"] == demo.ids["alpha"]
    assert alpha["project"] == "p1"
    assert alpha["params"] == {
        "lr": 0.01,
        "model": {"width": 64, "act": "relu"},
        "tags_like": [1, 2],
    }
    assert alpha["tags"] == ["baseline"]
    assert alpha["status"] == "finished" and alpha["live"] is False
    assert ISO.match(alpha["created"]) and ISO.match(alpha["ended"])
    assert alpha["duration"] >= 0
    # summary: scalar keys only, non-finite as the contract says
    assert set(alpha["summary"]) == {"loss", "val/acc", *ODD_KEYS}
    assert alpha["summary"]["loss"] == {"last": 49.5, "min": "-inf", "max": "inf", "count": 100}
    beta = runs["beta"]
    assert beta["status"] == "running" and beta["live"] is True
    assert beta["ended"] is None and beta["duration"] >= 0


def test_runs_filter_and_project(demo: Demo) -> None:
    with client(demo.uri) as c:
        names = lambda **q: [r["name"] for r in c.get("/api/runs", params=q).json()["runs"]]  # noqa: E731
        assert names(where="params.lr < 0.05") == ["alpha"]
        assert names(where="'baseline' in tags") == ["alpha"]
        assert sorted(names(project="p2")) == ["beta", "big"]
        assert names(project="p2", where="params.lr > 0.05") == ["beta"]
        assert names(where="status = 'running'") == ["beta"]
        bad = c.get("/api/runs", params={"where": "params.lr < < 3"})
    assert bad.status_code == 400
    assert "column 13" in bad.json()["error"] and "expected a value" in bad.json()["error"]


def test_one_run_keys_and_meta(demo: Demo) -> None:
    with client(demo.uri) as c:
        by_id = c.get(f"/api/runs/{demo.ids['alpha']}").json()
        by_name = c.get("/api/runs/alpha").json()
        missing = c.get("/api/runs/nosuchrun")
    assert by_id == {**by_name, "duration": by_id["duration"]}
    assert by_id["keys"] == {
        "scalars": sorted(["loss", "val/acc", *ODD_KEYS]),
        "tensors": ["act/conv", "bias", "weights/fc"],
        "images": ["samples"],
        "records": ["eval"],
    }
    assert set(by_id["meta"]) == {"host", "pid", "git_commit"}
    assert by_id["meta"]["pid"] > 0
    assert missing.status_code == 404 and "'nosuchrun'" in missing.json()["error"]


def test_one_run_lists_its_events_exactly(demo: Demo) -> None:
    with client(demo.uri) as c:
        blowup = c.get(f"/api/runs/{demo.ids['blowup']}").json()
        alpha = c.get(f"/api/runs/{demo.ids['alpha']}").json()
        listed = c.get("/api/runs", params={"project": "p3"}).json()["runs"]
        doc = c.get("/api/openapi.json").json()
    with ss.open(demo.uri) as store:
        view = store.run(demo.ids["blowup"])
        times = [event.time for event in view.events()]
        created, ended = view.created, view.ended
    assert blowup["events"] == [
        {
            "step": BLOWUP,
            "time": times[0],
            "trigger": "on_nan('loss')",
            "key": "loss",
            "reason": f"loss is NaN at step {BLOWUP}",
            "rank": 0,
        },
        {
            "step": 19,
            "time": times[1],
            "trigger": "dump_flight",
            "key": None,
            "reason": "checked by hand",
            "rank": 0,
        },
    ]
    assert ended is not None and created <= times[0] <= times[1] <= ended
    assert alpha["events"] == []
    # the list stays light: events come with one run only
    assert [run["name"] for run in listed] == ["blowup"] and "events" not in listed[0]
    event = doc["components"]["schemas"]["RunDetail"]["properties"]["events"]["items"]
    assert set(event["properties"]) == set(blowup["events"][0])


# -- scalars -----------------------------------------------------------------------------


def test_scalars_whole_series_exact(demo: Demo) -> None:
    found = series(demo, "alpha", key="loss")
    assert_series_is(found, frame_of(demo, "alpha", "loss"))
    assert found["key"] == "loss"
    assert found["value"][5] is None
    assert found["value"][7] == "inf" and found["value"][9] == "-inf"
    assert found["epoch"][:11] == [0] * 10 + [1]


def test_scalars_several_keys_in_order(demo: Demo) -> None:
    with client(demo.uri) as c:
        answer = c.get(
            f"/api/runs/{demo.ids['alpha']}/scalars",
            params=[("key", "val/acc"), ("key", "loss"), ("key", "val/acc")],
        ).json()
    assert [s["key"] for s in answer["series"]] == ["val/acc", "loss"]
    assert answer["series"][0]["step"] == list(range(9, 100, 10))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"start": 10, "stop": 20}, {"steps": (10, 20)}),
        ({"x": "step", "start": "10.5", "stop": "19.5"}, {"steps": (11, 19)}),
        ({"start": 95}, {"steps": (95, None)}),
        ({"stop": 3}, {"steps": (None, 3)}),
        ({"x": "epoch", "start": 2, "stop": 3}, {"epochs": (2, 3)}),
        ({"x": "epoch", "start": "8.5"}, {"epochs": (9, None)}),
    ],
)
def test_scalars_step_and_epoch_ranges_exact(demo: Demo, query: dict, expected: dict) -> None:
    found = series(demo, "alpha", key="loss", **query)
    assert_series_is(found, frame_of(demo, "alpha", "loss", **expected))


def test_scalars_empty_integer_range(demo: Demo) -> None:
    found = series(demo, "alpha", key="loss", start="10.2", stop="10.8")
    assert found == {"key": "loss", "step": [], "epoch": [], "time": [], "value": []}


def test_scalars_time_ranges_exact(demo: Demo) -> None:
    frame = frame_of(demo, "alpha", "loss")
    times = seconds(frame)
    for lo, hi in [(10, 20), (0, 99), (50, 50), (37, 81)]:
        found = series(
            demo,
            "alpha",
            key="loss",
            x="time",
            start=repr(float(times[lo])),
            stop=repr(float(times[hi])),
        )
        inside = frame[(times >= times[lo]) & (times <= times[hi])].reset_index(drop=True)
        assert_series_is(found, inside)
        assert found["step"][0] <= lo and found["step"][-1] >= hi


def test_scalars_downsampled(demo: Demo) -> None:
    found = series(demo, "alpha", key="loss", max_points=10)
    frame = frame_of(demo, "alpha", "loss", max_points=10)
    assert_series_is(found, frame)
    assert 5 in found["step"]  # the first NaN of its bucket is kept


@pytest.mark.parametrize("key", ODD_KEYS)
def test_scalars_odd_keys(demo: Demo, key: str) -> None:
    found = series(demo, "alpha", key=key)
    assert found["key"] == key
    assert found["value"] == [s / 3 for s in range(100)]


def test_scalars_key_errors(demo: Demo) -> None:
    with client(demo.uri) as c:
        path = f"/api/runs/{demo.ids['alpha']}/scalars"
        none = c.get(path)
        missing = c.get(path, params={"key": "nope"})
        tensor = c.get(path, params={"key": "weights/fc"})
        glob = c.get(path, params={"key": "val/*"})
        run = c.get("/api/runs/zzz/scalars", params={"key": "loss"})
    assert none.status_code == 400 and "key" in none.json()["error"]
    for answer, name in ((missing, "'nope'"), (tensor, "'weights/fc'"), (glob, "'val/*'")):
        assert answer.status_code == 404
        assert name in answer.json()["error"] and "scalar keys" in answer.json()["error"]
    assert run.status_code == 404 and "'zzz'" in run.json()["error"]


BAD = [
    ("scalars", {"key": "loss", "max_points": "abc"}, "max_points='abc': expected an integer"),
    ("scalars", {"key": "loss", "max_points": "1"}, "max_points='1': expected an integer from 2"),
    ("scalars", {"key": "loss", "max_points": "100001"}, "to 100000"),
    ("scalars", {"key": "loss", "start": "5", "stop": "3"}, "start=5 is above stop=3"),
    ("scalars", {"key": "loss", "start": "abc"}, "start='abc': expected a finite number"),
    ("scalars", {"key": "loss", "stop": "nan"}, "stop='nan': expected a finite number"),
    ("scalars", {"key": "loss", "start": "inf"}, "start='inf': expected a finite number"),
    (
        "scalars",
        {"key": "loss", "x": "time", "stop": "1e400"},
        "stop=1E+400: expected Unix seconds",
    ),
    ("scalars", {"key": "loss", "x": "foo"}, "x='foo': expected one of step, epoch, time"),
    ("scalars", [("key", "loss"), ("x", "step"), ("x", "time")], "x: given 2 times"),
    ("scalars", {"key": ""}, "key: empty"),
    ("scalars.csv", {"key": "loss", "max_points": "x"}, "max_points='x'"),
    ("tensors", {}, "key: missing"),
    ("tensors", {"key": "bias", "max_steps": "1"}, "max_steps='1': expected an integer from 2"),
    ("tensors/histogram", {"key": "bias", "bins": "0"}, "bins='0': expected an integer from 1"),
    ("tensors/histogram", {"key": "bias", "bins": "2.5"}, "bins='2.5'"),
    ("tensors/slice", {"key": "act/conv", "step": "1.5"}, "step='1.5': expected an integer"),
    ("tensors/slice", {"key": "act/conv"}, "step: missing"),
    ("tensors/slice", {"key": "act/conv", "step": "0", "index": "a,b"}, "index='a,b': expected"),
    ("tensors/slice", {"key": "act/conv", "step": "0", "index": "-1,0"}, "index='-1,0'"),
    ("tensors/slice", {"key": "act/conv", "step": "0", "index": "1"}, "expected 2 leading"),
    ("tensors/slice", {"key": "act/conv", "step": "0", "index": "2,0"}, "2 is out of range"),
    ("tensors/slice", {"key": "bias", "step": "3", "index": "0"}, "expected no index"),
    ("image.png", {"key": "samples", "step": "x"}, "step='x'"),
    ("image.png", {"key": "samples", "step": "0", "position": "-1"}, "position='-1'"),
    ("images", {}, "key: missing"),
    ("records", {}, "key: missing"),
]


@pytest.mark.parametrize(("route", "query", "message"), BAD)
def test_bad_parameters_are_400(demo: Demo, route: str, query: object, message: str) -> None:
    with client(demo.uri) as c:
        answer = c.get(f"/api/runs/{demo.ids['alpha']}/{route}", params=query)  # type: ignore[arg-type]
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert message in answer.json()["error"]


# -- the spike in the long series ----------------------------------------------------------


def test_spike_in_full_view(demo: Demo) -> None:
    found = series(demo, "big", key="loss", max_points=2000)
    assert 1e6 in found["value"]
    assert len(found["step"]) <= 2000
    assert found["step"][0] == 0 and found["step"][-1] == BIG - 1  # the chart spans the run


@PROFILE
@given(
    low=st.integers(0, SPIKE),
    high=st.integers(SPIKE, BIG + 10),
    max_points=st.integers(2, 5000),
    x=st.sampled_from(["step", "epoch", "time"]),
)
def test_spike_kept_at_every_zoom(demo: Demo, low: int, high: int, max_points: int, x: str) -> None:
    if x == "step":
        query = {"start": low, "stop": high}
    elif x == "epoch":
        query = {"start": low // (BIG // 100), "stop": high // (BIG // 100)}
    else:
        times = spike_times(demo)
        query = {
            "start": repr(float(times[min(low, BIG - 1)])),
            "stop": repr(float(times[min(high, BIG - 1)])),
        }
    found = series(demo, "big", key="loss", x=x, max_points=max_points, **query)
    assert 1e6 in found["value"], (query, len(found["step"]))
    column = found[x]
    assert min(column) >= float(query["start"]) and max(column) <= float(query["stop"])
    assert len(column) <= max_points


_TIMES: dict[str, np.ndarray] = {}


def spike_times(demo: Demo) -> np.ndarray:
    """The times (Unix seconds) of every point of the long series, read once per store."""
    if demo.uri not in _TIMES:
        _TIMES[demo.uri] = seconds(frame_of(demo, "big", "loss"))
    return _TIMES[demo.uri]


def test_time_zoom_exact_without_downsampling(demo: Demo) -> None:
    times = spike_times(demo)
    lo, hi = times[SPIKE - 20_000], times[SPIKE + 20_000]
    found = series(demo, "big", key="loss", x="time", start=repr(float(lo)), stop=repr(float(hi)))
    expected = np.flatnonzero((times >= lo) & (times <= hi))
    assert found["step"] == expected.tolist()


# -- time ranges where the clock went back ----------------------------------------------------


@pytest.fixture(scope="module")
def clocks(demo: Demo) -> tuple[str, dict[str, Columns]]:
    """A run written through the backend with a key whose time goes forward (``steady``) and
    one whose clock jumps back (``jumpy``), in chunks of 64 points."""
    backend = open_backend(demo.uri, create=False)
    from stepstore.backends.base import RunRecord

    run = RunRecord(
        id="clocks0000000000", project="p3", name="clocks", status="finished", created=1.0
    )
    backend.create_run(run)
    n = 64 * 40
    steps = np.arange(n, dtype=np.int64)
    base = 1_700_000_000_000_000
    rng = np.random.default_rng(3)
    values = rng.standard_normal(n)
    values[1234] = 99.0
    steady = base + steps * 1000
    jumpy = steady.copy()
    jumpy[n // 2 :] -= 10_000_000  # the clock goes back 10 s halfway
    written = {}
    for key, times in (("steady", steady), ("jumpy", jumpy)):
        series_id = backend.ensure_series(run.id, key, "scalar")
        columns = Columns(steps, np.full(n, -(2**63)), times, values)
        chunks = [
            (series_id, make_chunk(i, Columns(*(c[i * 64 : (i + 1) * 64] for c in columns)), True))
            for i in range(n // 64)
        ]
        summary = Summary(n, float(values.min()), float(values.max()), float(values[-1]), 0, n - 1)
        backend.commit(run.id, chunks, [(series_id, summary)], {})
        written[key] = columns
    backend.close()
    return run.id, written


@PROFILE
@given(data=st.data())
def test_time_ranges_follow_the_clock(
    demo: Demo, clocks: tuple[str, dict[str, Columns]], data: st.DataObject
) -> None:
    run_id, written = clocks
    key = data.draw(st.sampled_from(["steady", "jumpy"]))
    columns = written[key]
    lo, hi = sorted(
        data.draw(st.lists(st.sampled_from(columns.time.tolist()), min_size=2, max_size=2))
    )
    max_points = data.draw(st.none() | st.integers(2, 64))
    query: dict[str, object] = {
        "key": key,
        "x": "time",
        "start": repr(lo / 1e6),
        "stop": repr(hi / 1e6),
    }
    if max_points is not None:
        query["max_points"] = max_points
    with client(demo.uri) as c:
        (found,) = c.get(f"/api/runs/{run_id}/scalars", params=query).json()["series"]
    inside = (columns.time >= lo) & (columns.time <= hi)
    if max_points is None:
        assert found["step"] == columns.step[inside].tolist()
        return
    steps = np.array(found["step"], np.int64)
    assert np.all(inside[steps]), "a point outside the time range"
    assert np.array_equal(columns.value[steps], np.array(found["value"]))
    if inside.any():
        assert columns.value[inside].max() in found["value"]
        assert columns.value[inside].min() in found["value"]


# -- downloads -------------------------------------------------------------------------------


@pytest.mark.parametrize("query", [{}, {"start": 3, "stop": 60, "max_points": 10}])
def test_csv_download_exact(demo: Demo, query: dict) -> None:
    with client(demo.uri) as c:
        answer = c.get(
            f"/api/runs/{demo.ids['alpha']}/scalars.csv",
            params=[("key", "loss"), ("key", ODD_KEYS[0]), *query.items()],
        )
    assert answer.status_code == 200
    assert answer.headers["content-disposition"] == 'attachment; filename="alpha-scalars.csv"'
    read = pd.read_csv(io.BytesIO(answer.content), keep_default_na=False, na_values=[""])
    assert list(read.columns) == ["key", "step", "epoch", "time", "value"]
    extra = {"steps": (3, 60), "max_points": 10} if query else {}
    for key in ("loss", ODD_KEYS[0]):
        part = read[read["key"] == key].reset_index(drop=True)
        frame = frame_of(demo, "alpha", key, **extra)
        assert part["step"].tolist() == frame["step"].tolist()
        assert part["epoch"].tolist() == frame["epoch"].astype(float).tolist()
        assert pd.to_datetime(part["time"]).tolist() == frame["time"].tolist()
        assert same(part["value"].astype(float).to_numpy(), frame["value"].to_numpy())


def test_parquet_download_exact(demo: Demo) -> None:
    with client(demo.uri) as c:
        answer = c.get(
            f"/api/runs/{demo.ids['alpha']}/scalars.parquet",
            params={"key": "loss", "x": "epoch", "start": 0, "stop": 4},
        )
    assert answer.status_code == 200
    assert answer.headers["content-disposition"].endswith('scalars.parquet"')
    table = pq.read_table(io.BytesIO(answer.content))
    assert table.column_names == ["key", "step", "epoch", "time", "value"]
    assert str(table.schema.field("time").type) == "timestamp[us, tz=UTC]"
    frame = frame_of(demo, "alpha", "loss", epochs=(0, 4))
    read = table.to_pandas()
    assert read["key"].unique().tolist() == ["loss"]
    assert read["step"].tolist() == frame["step"].tolist()
    assert read["epoch"].tolist() == frame["epoch"].tolist()
    assert read["time"].tolist() == frame["time"].tolist()
    assert same(read["value"].to_numpy(), frame["value"].to_numpy())


# -- images, records ---------------------------------------------------------------------------


def test_images_list_and_png(demo: Demo) -> None:
    with client(demo.uri) as c:
        listed = c.get(f"/api/runs/{demo.ids['alpha']}/images", params={"key": "samples"}).json()
        assert [(i["step"], i["caption"]) for i in listed["images"]] == [
            (s, caption) for s, caption, _ in demo.images
        ]
        for item, (_, _, array) in zip(listed["images"], demo.images, strict=True):
            assert item["url"].startswith(
                f"/api/runs/{demo.ids['alpha']}/image.png?key=samples&step="
            )
            answer = c.get(item["url"])
            assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
            assert np.array_equal(np.asarray(PILImage.open(io.BytesIO(answer.content))), array)
        not_logged = c.get(
            f"/api/runs/{demo.ids['alpha']}/image.png", params={"key": "samples", "step": 3}
        )
        wrong_kind = c.get(f"/api/runs/{demo.ids['alpha']}/images", params={"key": "loss"})
    assert not_logged.status_code == 404 and "step 3" in not_logged.json()["error"]
    assert wrong_kind.status_code == 404 and "'loss'" in wrong_kind.json()["error"]


def test_records_table(demo: Demo) -> None:
    with client(demo.uri) as c:
        answer = c.get(f"/api/runs/{demo.ids['alpha']}/records", params={"key": "eval"}).json()
        missing = c.get(f"/api/runs/{demo.ids['alpha']}/records", params={"key": "other"})
    assert answer["columns"] == ["step", "acc", "label", "extra"]
    assert answer["rows"] == [[2, 0.5, "x", None], [6, 0.75, None, [1, 2]]]
    assert missing.status_code == 404 and "'other'" in missing.json()["error"]


# -- tensors ---------------------------------------------------------------------------------


def expected_stats(arrays: dict[int, np.ndarray]) -> dict[str, list]:
    values = {s: np.asarray(a, np.float64).ravel() for s, a in arrays.items()}
    return {
        "step": list(values),
        "min": [finite(v.min()) for v in values.values()],
        "max": [finite(v.max()) for v in values.values()],
        "mean": [v.mean() for v in values.values()],
        "std": [v.std() for v in values.values()],
        "norm": [math.sqrt(np.dot(v, v)) for v in values.values()],
    }


@pytest.mark.parametrize("key", ["weights/fc", "act/conv", "bias"])
def test_tensor_summary_against_numpy(demo: Demo, key: str) -> None:
    with client(demo.uri) as c:
        answer = c.get(f"/api/runs/{demo.ids['alpha']}/tensors", params={"key": key}).json()
    arrays = demo.tensors[key]
    first = next(iter(arrays.values()))
    assert answer["key"] == key
    assert answer["dtype"] == str(first.dtype)
    assert answer["shape"] == list(first.shape)
    assert answer["steps"] == list(arrays)
    expected = expected_stats(arrays)
    assert answer["stats"]["step"] == expected["step"]
    for name in ("min", "max", "mean", "std", "norm"):
        got = np.array([finite(v) for v in answer["stats"][name]])
        assert same(got, np.array(expected[name], np.float64)) or np.allclose(
            got, expected[name], rtol=1e-12, equal_nan=True
        ), name


def test_tensor_summary_spreads_steps(demo: Demo) -> None:
    with client(demo.uri) as c:
        answer = c.get(
            f"/api/runs/{demo.ids['alpha']}/tensors", params={"key": "weights/fc", "max_steps": 2}
        ).json()
    assert answer["steps"] == [0, 10, 20]
    assert answer["stats"]["step"] == [0, 20]


def block_means(plane: np.ndarray, side: int = 256) -> np.ndarray:
    """Block means written another way (loops over blocks)."""
    rows, cols = plane.shape
    fr, fc = -(-rows // side), -(-cols // side)
    return np.array(
        [
            [plane[r : r + fr, c : c + fc].mean() for c in range(0, cols, fc)]
            for r in range(0, rows, fr)
        ]
    )


def test_tensor_slice_reduced(demo: Demo) -> None:
    with client(demo.uri) as c:
        answer = c.get(
            f"/api/runs/{demo.ids['alpha']}/tensors/slice", params={"key": "weights/fc", "step": 10}
        ).json()
    array = demo.tensors["weights/fc"][10].astype(np.float64)
    assert answer["step"] == 10 and answer["shape"] == [300, 270] and answer["reduced"] is True
    values = np.array(answer["values"])
    assert values.shape == (150, 135)
    assert np.allclose(values, block_means(array), rtol=1e-12, atol=0)
    assert answer["min"] == array.min() and answer["max"] == array.max()


@pytest.mark.parametrize(("index", "picked"), [("", (0, 0)), ("1,2", (1, 2)), ("0,1", (0, 1))])
def test_tensor_slice_leading_indices(demo: Demo, index: str, picked: tuple[int, int]) -> None:
    with client(demo.uri) as c:
        answer = c.get(
            f"/api/runs/{demo.ids['alpha']}/tensors/slice",
            params={"key": "act/conv", "step": 1, "index": index},
        ).json()
    plane = demo.tensors["act/conv"][1][picked]
    assert answer["shape"] == [4, 5] and answer["reduced"] is False
    assert np.array_equal(np.array(answer["values"]), plane)


def test_tensor_slice_one_row_nonfinite_and_missing_step(demo: Demo) -> None:
    with client(demo.uri) as c:
        answer = c.get(
            f"/api/runs/{demo.ids['alpha']}/tensors/slice", params={"key": "bias", "step": 4}
        ).json()
        missing = c.get(
            f"/api/runs/{demo.ids['alpha']}/tensors/slice", params={"key": "bias", "step": 5}
        )
        wrong = c.get(f"/api/runs/{demo.ids['alpha']}/tensors", params={"key": "loss"})
    assert answer["shape"] == [1, 7]
    assert answer["values"] == [[4.0, None, "inf", -1.0, 0.0, 2.0, 3.0]]
    assert answer["min"] == -1.0 and answer["max"] == 4.0
    assert missing.status_code == 404 and "step 5" in missing.json()["error"]
    assert wrong.status_code == 404 and "'loss'" in wrong.json()["error"]


@pytest.mark.parametrize(("key", "bins"), [("weights/fc", 64), ("bias", 5), ("act/conv", 1)])
def test_tensor_histogram_against_numpy(demo: Demo, key: str, bins: int) -> None:
    with client(demo.uri) as c:
        answer = c.get(
            f"/api/runs/{demo.ids['alpha']}/tensors/histogram", params={"key": key, "bins": bins}
        ).json()
    arrays = {s: np.asarray(a, np.float64).ravel() for s, a in demo.tensors[key].items()}
    finite_values = {s: a[np.isfinite(a)] for s, a in arrays.items()}
    everything = np.concatenate(list(finite_values.values()))
    edges = np.linspace(everything.min(), everything.max(), bins + 1)
    assert answer["steps"] == list(arrays)
    assert answer["edges"] == edges.tolist()
    assert answer["counts"] == [
        np.histogram(v, bins=edges)[0].tolist() for v in finite_values.values()
    ]
    assert [sum(c) for c in answer["counts"]] == [len(v) for v in finite_values.values()]


# -- OpenAPI, JSON ---------------------------------------------------------------------------


def test_openapi_documents_every_api_route(demo: Demo) -> None:
    app = create_app(demo.uri)
    api_routes = {r.path for r in app.routes if isinstance(r, Route) and r.path.startswith("/api")}
    with client(demo.uri) as c:
        doc = c.get("/api/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == api_routes
    for path, item in doc["paths"].items():
        params = {p["name"] for p in item["get"]["parameters"] if p["in"] == "path"}
        assert params == set(re.findall(r"{(\w+)}", path)), path
        assert "200" in item["get"]["responses"]


def _containers(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4)


@given(
    st.recursive(
        st.floats() | st.integers() | st.text() | st.booleans() | st.none(),
        _containers,
        max_leaves=20,
    )
)
def test_json_nonfinite_round_trip(value: object) -> None:
    def expected(v: object) -> object:
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, float) and math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if isinstance(v, list):
            return [expected(x) for x in v]
        if isinstance(v, dict):
            return {k: expected(x) for k, x in v.items()}
        return v

    assert json.loads(dumps(value)) == expected(value)


# -- keys that need encoding, across backends --------------------------------------------------

KEY_PIECES = st.sampled_from(
    [
        "/",
        " ",
        "ü",
        "..",
        "%2e%2e",
        "&",
        "=",
        "+",
        "#",
        "?",
        "*",
        "[",
        "]",
        "a",
        "你",
        "~",
        "'",
        "%2F",
    ]
)
KEYS = (
    st.lists(KEY_PIECES, min_size=1, max_size=8).map("".join)
    | st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30)
).filter(lambda k: k == k.strip() and bool(k))


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=KEYS)
def test_keys_round_trip_through_query_strings(demo: Demo, key: str) -> None:
    with ss.init("keys", store=demo.uri, flush_interval=0.05) as run:
        run.log({key: 1.5}, step=3)
        run.log({key: float("nan")}, step=4)
    with client(demo.uri) as c:
        found = c.get(f"/api/runs/{run.id}/scalars", params={"key": key}).json()["series"]
        listed = c.get(f"/api/runs/{run.id}").json()["keys"]["scalars"]
    assert listed == [key]
    assert found == [
        {
            "key": key,
            "step": [3, 4],
            "epoch": [None, None],
            "time": found[0]["time"],
            "value": [1.5, None],
        }
    ]


# -- static files and the page ---------------------------------------------------------------


def test_page_and_static_files(tmp_path) -> None:
    store = make_small_store(tmp_path)
    from stepstore.ui.app import STATIC

    names = sorted(p.name for p in STATIC.iterdir() if p.is_file()) if STATIC.is_dir() else []
    with client(store) as c:
        page = c.get("/")
        if "index.html" in names:
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        else:
            assert page.status_code == 404 and "not built" in page.text
        for name in names:
            answer = c.get(f"/static/{name}")
            assert answer.status_code == 200 and answer.content == (STATIC / name).read_bytes()


TRAVERSALS = [
    "/static/..%2f..%2fpyproject.toml",
    "/static/..%2F..%2F..%2Fpyproject.toml",
    "/static/%2e%2e/%2e%2e/pyproject.toml",
    "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
    "/static/%252e%252e%252fpyproject.toml",
    "/static/..%5c..%5cpyproject.toml",
    "/static/%2fetc%2fpasswd",
    "/static//etc/passwd",
    "/static/%2Fetc%2Fpasswd",
    "/static/.",
    "/static/app.js%00.html",
    "/static/",
    "/static/__init__.py",
    "/api/runs/..%2f..%2fpyproject.toml",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_traversal_through_static(tmp_path, path: str) -> None:
    store = make_small_store(tmp_path)
    with client(store) as c:
        answer = c.get(path)
    assert answer.status_code in (404, 405), (path, answer.status_code)
    assert b"[project]" not in answer.content and b"root:" not in answer.content


def test_no_traversal_over_raw_http(tmp_path) -> None:
    """Paths sent as they are (no client normalising ``..``) to the real server."""
    import socket

    store = make_small_store(tmp_path)
    with RealServer(store) as url:
        host, port = urlsplit(url).hostname, urlsplit(url).port
        for path in [
            "/static/../../pyproject.toml",
            "/static/..",
            "/static/../app.py",
            "/static/%2e%2e/%2e%2e/pyproject.toml",
            "/static/..%2f..%2fpyproject.toml",
            "/../pyproject.toml",
        ]:
            with socket.create_connection((host, port)) as sock:
                sock.sendall(
                    f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
                )
                reply = b""
                while chunk := sock.recv(65536):
                    reply += chunk
            status = int(reply.split(b" ", 2)[1])
            assert status in (400, 404), (path, reply[:200])
            assert b"[project]" not in reply and b"import" not in reply


# -- security ---------------------------------------------------------------------------------


def make_small_store(tmp_path) -> str:
    path = tmp_path / "small"
    with ss.init("p", name="small", store=path, flush_interval=0.05) as run:
        run.log({"loss": 1.0}, step=0)
    return str(path)


TOKEN = "s3cret-token-value"


def test_token_required_everywhere(tmp_path) -> None:
    store = make_small_store(tmp_path)
    with client(store, token=TOKEN) as c:
        for path in ["/api/runs", "/api/openapi.json", "/api/runs/small", "/", "/static/app.js"]:
            answer = c.get(path)
            assert answer.status_code == 401, path
            assert answer.headers["www-authenticate"] == "Bearer"
            if path.startswith("/api"):
                assert answer.json() == {
                    "error": "a valid token is required (Authorization: Bearer TOKEN)"
                }
            else:
                assert answer.headers["content-type"].startswith("text/plain")
        wrong = c.get("/api/runs", headers={"Authorization": "Bearer nope-nope-nope"})
        wrong_query = c.get("/api/runs", params={"token": TOKEN + "x"})
        assert wrong.status_code == wrong_query.status_code == 401
        assert c.get("/api/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert c.get("/api/runs", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
        assert not c.cookies


def test_token_in_query_sets_a_strict_cookie(tmp_path) -> None:
    store = make_small_store(tmp_path)
    with client(store, token=TOKEN) as c:
        first = c.get("/", params={"token": TOKEN})
        assert first.status_code in (200, 404)  # 404 only when the page is not built
        cookie = first.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}={TOKEN};")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert c.get("/api/runs").status_code == 200  # the cookie now
        c.cookies.clear()
        assert c.get("/api/runs").status_code == 401
        c.cookies.set(COOKIE, "forged-value-123")
        assert c.get("/api/runs").status_code == 401


def test_host_header_guard(tmp_path) -> None:
    store = make_small_store(tmp_path)
    with client(store) as c:
        for host in ["127.0.0.1", "127.0.0.1:5757", "localhost:5757", "[::1]:5757", "LOCALHOST"]:
            assert c.get("/api/runs", headers={"Host": host}).status_code == 200, host
        for host in [
            "evil.example",
            "evil.example:5757",
            "127.0.0.1.evil.example",
            "",
            "0.0.0.0:5757",
        ]:
            answer = c.get("/api/runs", headers={"Host": host})
            assert answer.status_code == 400, host
            assert "not a loopback name" in answer.json()["error"]
    with client(store, token=TOKEN) as c:  # a token lets any name through
        answer = c.get(
            "/api/runs", headers={"Host": "box.example", "Authorization": f"Bearer {TOKEN}"}
        )
        assert answer.status_code == 200
    with client(store, allowed_hosts=["dash.example"]) as c:
        assert c.get("/api/runs", headers={"Host": "dash.example:80"}).status_code == 200
        assert c.get("/api/runs", headers={"Host": "127.0.0.1"}).status_code == 400


def test_no_cors_no_writes_and_safe_headers(tmp_path) -> None:
    store = make_small_store(tmp_path)
    with client(store) as c:
        answer = c.get("/api/runs", headers={"Origin": "http://evil.example"})
        preflight = c.options(
            "/api/runs",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
        )
        posted = c.post("/api/runs", json={})
        deleted = c.delete("/api/runs/small")
        unknown = c.get("/api/nothing")
    assert answer.status_code == 200
    assert not [h for h in answer.headers if h.lower().startswith("access-control")]
    assert not [h for h in preflight.headers if h.lower().startswith("access-control")]
    assert posted.status_code == deleted.status_code == 405
    assert "read-only" in posted.json()["error"]
    assert unknown.status_code == 404 and unknown.json() == {"error": "no route /api/nothing"}
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"


def test_bad_tokens_refused() -> None:
    for token in ["", "short", "has space in it", "semi;colon-token", "ünïcode-token"]:
        with pytest.raises(ss.InvalidArgumentError, match="token"):
            create_app("/nonexistent", token=token)


def test_missing_store_is_not_a_store(tmp_path) -> None:
    with pytest.raises(ss.NotAStoreError):
        create_app(tmp_path / "nothing")


def test_open_store_is_not_closed_by_the_app(tmp_path) -> None:
    with ss.open(make_small_store(tmp_path)) as store:
        with client(store) as c:
            assert c.get("/api/runs").status_code == 200
        assert store.runs()[0].name == "small"


# -- concurrency ------------------------------------------------------------------------------


class RealServer:
    """The app under uvicorn on a free loopback port, in a thread."""

    def __init__(self, store: str | ss.Store) -> None:
        import uvicorn

        from stepstore.ui.serving import bind

        self.sock = bind("127.0.0.1", 0)
        self.server = uvicorn.Server(uvicorn.Config(create_app(store), log_level="warning"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            assert self.thread.is_alive()
            threading.Event().wait(0.01)
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def test_concurrent_requests_share_the_store(demo: Demo) -> None:
    import httpx

    alpha, big = demo.ids["alpha"], demo.ids["big"]
    requests = [
        ("/api/runs", {}),
        (f"/api/runs/{alpha}", {}),
        (f"/api/runs/{alpha}/scalars", {"key": "loss"}),
        (
            f"/api/runs/{big}/scalars",
            {"key": "loss", "max_points": 500, "start": 1000, "stop": 900_000},
        ),
        (f"/api/runs/{alpha}/tensors", {"key": "weights/fc"}),
        (f"/api/runs/{alpha}/tensors/slice", {"key": "act/conv", "step": 1, "index": "1,1"}),
        (f"/api/runs/{alpha}/images", {"key": "samples"}),
        (f"/api/runs/{alpha}/records", {"key": "eval"}),
    ]
    with RealServer(demo.uri) as url, httpx.Client(base_url=url, timeout=60) as http:

        def fetch(i: int) -> tuple[int, bytes]:
            path, query = requests[i % len(requests)]
            answer = http.get(path, params=query)
            return answer.status_code, answer.content

        sequential = [fetch(i) for i in range(len(requests))]
        with ThreadPoolExecutor(max_workers=12) as pool:
            parallel = list(pool.map(fetch, range(len(requests) * 6)))
    assert all(status == 200 for status, _ in sequential)
    for i, (status, body) in enumerate(parallel):
        expected_status, expected_body = sequential[i % len(requests)]
        assert status == expected_status
        if requests[i % len(requests)][0] in ("/api/runs", f"/api/runs/{alpha}"):
            continue  # a live run's duration grows between requests
        assert body == expected_body, requests[i % len(requests)]


def test_image_urls_are_url_search_params_encoded() -> None:
    from stepstore.ui.media import image_url

    url = image_url("r1", "a b/ü~*'()!&=", 5, 1)
    assert url == "/api/runs/r1/image.png?key=a+b%2F%C3%BC%7E*%27%28%29%21%26%3D&step=5&position=1"
    assert dict(parse_qsl(urlsplit(url).query)) == {
        "key": "a b/ü~*'()!&=",
        "step": "5",
        "position": "1",
    }


def test_caption_with_script_survives(demo: Demo) -> None:
    with client(demo.uri) as c:
        listed = c.get(f"/api/runs/{demo.ids['alpha']}/images", params={"key": "samples"}).json()
    assert listed["images"][1]["caption"] == CAPTION
