"""CSV and Parquet export: layouts, exact values, key selection and argument errors."""

from __future__ import annotations

import csv
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import stepstore as ss
from stepstore.io import FORMATS, export_csv, export_parquet, export_runs

from .conftest import FAST

#: Values a text format gets wrong easily: shortest repr, extremes, signed zero, non-finite.
NASTY = [
    0.1 + 0.2,
    1 / 3,
    math.nan,
    math.inf,
    -math.inf,
    -0.0,
    5e-324,
    1.7976931348623157e308,
    2.2250738585072014e-308,
    -123456789.12345679,
]

Point = tuple[str, int, "int | None", float]  # key, step, epoch, value


@dataclass
class Recorder:
    """Logs through a run and keeps what the store should hold, in logging order."""

    run: ss.Run
    points: list[Point] = field(default_factory=list)
    epoch: int | None = None

    def log(
        self, values: dict[str, float], step: int, epoch: int | None = None, skipped: tuple = ()
    ) -> None:
        self.run.log(values, step=step, epoch=epoch)
        if epoch is not None:
            self.epoch = epoch
        self.points += [(k, step, self.epoch, v) for k, v in values.items() if k not in skipped]


@dataclass
class Sample:
    """A store with three finished runs and the points each should hold."""

    store: Path
    runs: dict[str, ss.Run]
    points: dict[str, list[Point]]


def record_sample(store: Path) -> Sample:
    """Record runs ``alpha`` and ``beta`` (project digits) and ``gamma`` (project other).

    ``alpha`` has a point without an epoch, a key kept by a policy at even steps only, two
    points of one key at the same step, and every value of :data:`NASTY`.
    """
    alpha = ss.init(
        "digits",
        name="alpha",
        params={"lr": 1e-3, "model": {"width": 64, "act": "relu"}, "odd": 0.1 + 0.2, "ids": [1, 2]},
        tags=["baseline", "cnn"],
        store=store,
        allow_rewind=True,  # for the two points of one key at one step
        **FAST,
    )
    alpha.policy("grad/*", ss.every(2))
    a = Recorder(alpha)
    a.log({"loss": 2.5}, step=0)
    a.log({"acc": 0.125}, step=0, epoch=0)
    for step, value in enumerate(NASTY, start=1):
        a.log(
            {"loss": value, "acc": step / 7, "grad/w": -value},
            step=step,
            epoch=step // 4,
            skipped=("grad/w",) if step % 2 else (),
        )
    a.log({"val/loss": 1.5}, step=5, epoch=1)
    a.log({"val/loss": 2.75}, step=5, epoch=1)
    alpha.finish()

    beta = ss.init("digits", name="beta", params={"lr": 0.1}, store=store, **FAST)
    b = Recorder(beta)
    for step in range(4):
        b.log({"loss": 1 / (step + 3), "extra": float(step)}, step=step, epoch=step // 2)
    beta.finish()

    gamma = ss.init("other", name="gamma", params={"lr": 0.5}, tags=["x"], store=store, **FAST)
    c = Recorder(gamma)
    c.log({"loss": 9.0}, step=0)
    c.log({"loss": math.nan}, step=1)
    gamma.finish("crashed")
    return Sample(
        store,
        {"alpha": alpha, "beta": beta, "gamma": gamma},
        {"alpha": a.points, "beta": b.points, "gamma": c.points},
    )


def bits(value: float) -> bytes:
    """A float's 8 bytes, so NaN, -0.0 and every last bit compare exactly."""
    return struct.pack("<d", value)


def expected_csv(
    sample: Sample, names: list[str], keys: list[str] | None = None
) -> list[list[str | bytes | None]]:
    """The CSV the runs should give, header first; value cells as :func:`bits` or None."""
    columns: list[str] = []
    per_run = []
    for name in names:
        points = [p for p in sample.points[name] if keys is None or p[0] in keys]
        run_keys = sorted({p[0] for p in points})
        if keys is not None:
            run_keys = [k for k in keys if k in run_keys]
        columns += [k for k in run_keys if k not in columns]
        rows: dict[int, tuple[list[int | None], dict[str, float]]] = {}
        for key, step, epoch, value in points:
            epochs, values = rows.setdefault(step, ([], {}))
            epochs.append(epoch)
            values[key] = value  # the last point of a key at a step wins
        per_run.append((name, rows))
    several = len(names) > 1
    table: list[list[str | bytes | None]] = [
        [*(["run_id", "run"] if several else []), "step", "epoch", *columns]
    ]
    for name, rows in per_run:
        run = sample.runs[name]
        for step in sorted(rows):
            epochs, values = rows[step]
            epoch = next((e for e in epochs if e is not None), None)
            table.append(
                [
                    *([run.id, name] if several else []),
                    str(step),
                    "" if epoch is None else str(epoch),
                    *(bits(values[k]) if k in values else None for k in columns),
                ]
            )
    return table


def read_csv(path: Path, fixed: int) -> list[list[str | bytes | None]]:
    """A written CSV with the cells after the first ``fixed`` ones as :func:`bits` or None."""
    with open(path, newline="", encoding="utf-8") as file:
        header, *rows = list(csv.reader(file))
    return [
        header,
        *[[*row[:fixed], *(bits(float(c)) if c else None for c in row[fixed:])] for row in rows],
    ]


def expected_points(sample: Sample, names: list[str]) -> list[tuple]:
    """Every point as an exported Parquet row: run by run, key by key, in logging order."""
    rows = []
    for name in names:
        run = sample.runs[name]
        for key in sorted({p[0] for p in sample.points[name]}):
            rows += [
                (run.id, run.project, name, key, step, epoch, bits(value))
                for k, step, epoch, value in sample.points[name]
                if k == key
            ]
    return rows


@pytest.fixture
def sample(store_path: Path) -> Sample:
    return record_sample(store_path)


def test_io_reexports_the_exporters():
    from stepstore.io import export as module

    assert (export_runs, export_csv, export_parquet) == (
        module.export_runs,
        module.export_csv,
        module.export_parquet,
    )
    assert FORMATS == ("csv", "parquet")


def test_csv_of_one_run_is_wide_and_exact(sample, tmp_path):
    alpha = ss.open(sample.store).run("alpha")
    path = tmp_path / "alpha.csv"
    assert export_csv([alpha], path) == len({p[1] for p in sample.points["alpha"]})
    assert read_csv(path, 2) == expected_csv(sample, ["alpha"])
    text = path.read_text()
    assert text.splitlines()[0] == "step,epoch,acc,grad/w,loss,val/loss"
    assert text.splitlines()[1] == "0,0,0.125,,2.5,"  # loss had no epoch; acc's is the step's
    assert {"nan", "inf", "-inf", "-0.0", "0.30000000000000004"} <= set(
        text.replace("\n", ",").split(",")
    )
    assert "\r" not in text


def test_csv_of_several_runs_leads_with_run_columns(sample, tmp_path):
    store = ss.open(sample.store)
    views = [store.run("beta"), store.run(sample.runs["alpha"].id)]
    path = tmp_path / "both.csv"
    written = export_csv(views, path)
    expected = expected_csv(sample, ["beta", "alpha"])
    assert read_csv(path, 4) == expected
    assert written == len(expected) - 1
    assert expected[0] == [
        "run_id",
        "run",
        "step",
        "epoch",
        "extra",
        "loss",
        "acc",
        "grad/w",
        "val/loss",
    ]


def test_csv_keys_and_globs_pick_columns_in_the_order_given(sample, tmp_path):
    store = ss.open(sample.store)
    views = [store.run("alpha"), store.run("beta")]
    path = tmp_path / "some.csv"
    export_csv(views, path, keys=["val/*", "loss"])
    assert read_csv(path, 4) == expected_csv(sample, ["alpha", "beta"], ["val/loss", "loss"])
    export_csv(views[:1], path, keys="grad/w")
    assert read_csv(path, 2) == expected_csv(sample, ["alpha"], ["grad/w"])
    with pytest.raises(
        ss.NotFoundError, match=r"no scalar key matching 'nope\*' in run\(s\) alpha"
    ):
        export_csv(views, path, keys=["loss", "nope*"])


def test_parquet_holds_every_point_exactly(sample, tmp_path):
    store = ss.open(sample.store)
    names = ["alpha", "beta"]
    views = [store.run(name) for name in names]
    path = tmp_path / "points.parquet"
    assert export_parquet(views, path) == len(expected_points(sample, names))
    table = pq.read_table(path)
    assert table.schema.remove_metadata() == pa.schema(
        [
            ("run_id", pa.string()),
            ("project", pa.string()),
            ("run", pa.string()),
            ("key", pa.string()),
            ("step", pa.int64()),
            ("epoch", pa.int64()),
            ("time", pa.timestamp("us", tz="UTC")),
            ("value", pa.float64()),
        ]
    )
    assert table.schema.metadata == {
        b"stepstore.version": ss.__version__.encode(),
        b"stepstore.run_ids": ",".join(v.id for v in views).encode(),
    }
    rows = [
        (r["run_id"], r["project"], r["run"], r["key"], r["step"], r["epoch"], bits(r["value"]))
        for r in table.to_pylist()
    ]
    assert rows == expected_points(sample, names)
    times = [v.scalars()["time"].dt.as_unit("us").astype("int64").tolist() for v in views]
    assert table["time"].cast(pa.int64()).to_pylist() == times[0] + times[1]


def test_parquet_keys_select_points(sample, tmp_path):
    alpha = ss.open(sample.store).run("alpha")
    path = tmp_path / "val.parquet"
    assert export_parquet([alpha], path, keys=["val/*"]) == 2
    assert pq.read_table(path).column("value").to_pylist() == [1.5, 2.75]


def test_export_dispatches_by_format(sample, tmp_path):
    alpha = ss.open(sample.store).run("alpha")
    assert export_runs([alpha], tmp_path / "a.csv", "csv") == export_csv(
        [alpha], tmp_path / "b.csv"
    )
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert export_runs([alpha], tmp_path / "a.pq", "parquet", keys="loss") == len(NASTY) + 1
    with pytest.raises(
        ss.InvalidArgumentError, match=r"format='tsv': expected one of csv, parquet"
    ):
        export_runs([alpha], tmp_path / "a.tsv", "tsv")


def test_run_without_points_gives_a_header_or_an_empty_table(new_run, store_path, tmp_path):
    run = new_run(name="empty")
    run.finish()
    view = ss.open(store_path).run("empty")
    assert export_csv([view], tmp_path / "e.csv") == 0
    assert (tmp_path / "e.csv").read_text() == "step,epoch\n"
    assert export_parquet([view], tmp_path / "e.parquet") == 0
    assert pq.read_table(tmp_path / "e.parquet").num_rows == 0


def test_key_named_like_a_fixed_column_is_refused_in_csv(new_run, store_path, tmp_path):
    run = new_run(name="clash")
    run.log({"epoch": 1.0})
    run.finish()
    view = ss.open(store_path).run("clash")
    with pytest.raises(ss.InvalidArgumentError, match="key 'epoch' has the name of a fixed CSV"):
        export_csv([view], tmp_path / "c.csv")
    assert export_parquet([view], tmp_path / "c.parquet") == 1


@pytest.mark.parametrize("writer", [export_csv, export_parquet])
def test_bad_arguments_raise_invalid_argument(sample, tmp_path, writer):
    view = ss.open(sample.store).run("alpha")
    out = tmp_path / "out"
    cases = [
        ([], out, None, r"runs=\[\]: expected at least one run"),
        (view, out, None, "expected a list of RunView"),
        (["alpha"], out, None, "'alpha' is not a RunView"),
        ([view, view], out, None, r"run alpha \(\w+\) is given twice"),
        ([view], tmp_path, None, "is a directory; expected a file path"),
        ([view], tmp_path / "no" / "f", None, "directory .*no' does not exist"),
        ([view], 42, None, "path=42: expected a file path"),
        ([view], "", None, "path='': expected a file path"),
        ([view], out, [], r"keys=\[\]: expected a key, a glob or a non-empty list"),
        ([view], out, ["loss", ""], "expected a key, a glob"),
    ]
    for runs, path, keys, message in cases:
        with pytest.raises(ss.InvalidArgumentError, match=message):
            writer(runs, path, keys)
    assert not out.exists()
