"""CSV and Parquet export: layouts, exact values, key selection and argument errors."""

from __future__ import annotations

import csv
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
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


# -- project-scale export: --where/--project, records, tensors -----------------------------


def export_cli(store: Path, *args: object):
    from click.testing import CliRunner

    from stepstore.cli import main

    return CliRunner().invoke(main, ["export", "--store", str(store), *map(str, args)])


def test_where_writes_a_csv_per_run(sample, tmp_path):
    out = tmp_path / "out"
    result = export_cli(sample.store, "--where", "project = 'digits'", "-o", out, "--format", "csv")
    assert result.exit_code == 0, result.output
    alpha, beta = sample.runs["alpha"], sample.runs["beta"]
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{alpha.id}.csv", f"{beta.id}.csv"])
    assert read_csv(out / f"{alpha.id}.csv", 2) == expected_csv(sample, ["alpha"])
    assert read_csv(out / f"{beta.id}.csv", 2) == expected_csv(sample, ["beta"])
    rows = len(expected_csv(sample, ["alpha"])) + len(expected_csv(sample, ["beta"])) - 2
    assert result.output == f"wrote {rows} rows from 2 run(s) into 2 files in {out} (csv)\n"


def test_project_one_file_parquet_has_a_run_column(sample, tmp_path):
    path = tmp_path / "digits.parquet"
    result = export_cli(sample.store, "--project", "digits", "--one-file", "-o", path)
    assert result.exit_code == 0, result.output
    table = pq.read_table(path)
    rows = [
        (r["run_id"], r["project"], r["run"], r["key"], r["step"], r["epoch"], bits(r["value"]))
        for r in table.to_pylist()
    ]
    assert rows == expected_points(sample, ["alpha", "beta"])


def test_where_keys_pick_runs_holding_them(sample, tmp_path):
    out = tmp_path / "out"
    result = export_cli(sample.store, "--where", "status != 'x'", "-k", "extra", "-o", out / "")
    assert result.exit_code == 2  # no extension, no --format
    result = export_cli(
        sample.store, "--where", "status != 'x'", "-k", "extra", "-o", out, "--format", "parquet"
    )
    assert result.exit_code == 0, result.output
    beta = sample.runs["beta"]
    assert [p.name for p in out.iterdir()] == [f"{beta.id}.parquet"]
    assert pq.read_table(out / f"{beta.id}.parquet")["value"].to_pylist() == [0.0, 1.0, 2.0, 3.0]
    assert result.output.endswith("\nskipped 2 run(s) without scalars of the keys given\n")


def test_where_matching_nothing_writes_nothing(sample, tmp_path):
    out = tmp_path / "out"
    for fmt in ("csv", "npy"):
        result = export_cli(sample.store, "--where", "name = 'nobody'", "-o", out, "--format", fmt)
        assert result.exit_code == 1
        assert (
            result.output == "error: no runs match --where \"name = 'nobody'\"; nothing written\n"
        )
        assert not out.exists()


def test_runs_and_a_filter_together_are_refused(sample, tmp_path):
    result = export_cli(
        sample.store, "alpha", "--where", "x = 1", "--project", "p", "-o", tmp_path / "a.csv"
    )
    assert result.exit_code == 2
    assert (
        "give RUN... or --where/--project, not both (got RUN alpha and --where 'x = 1' and "
        "--project 'p')" in result.output
    )
    result = export_cli(sample.store, "-o", tmp_path / "a.csv")
    assert result.exit_code == 2
    assert "give the runs to export: RUN..., --where EXPR or --project P" in result.output


def test_a_key_no_run_holds_leaves_no_file(sample, tmp_path):
    out = tmp_path / "out"
    result = export_cli(
        sample.store, "--project", "digits", "-k", "nope*", "-o", out, "--format", "csv"
    )
    assert result.exit_code == 1
    assert result.output.startswith("error: no scalar key matching 'nope*' in run(s) alpha (")
    assert not out.exists()


RECORDS = [
    ("eval", 3, 0, {"acc": 0.1 + 0.2, "note": "first", "ids": [1, 2]}),
    ("eval", 8, 1, {"acc": math.nan, "big": 2**40}),
    ("a/b", 5, None, {"note": 7}),  # the epoch of the run so far: 1
]


@pytest.fixture
def with_records(new_run, store_path):
    """Runs ``r1`` (records of ``eval`` and ``a/b``) and ``r2`` (one record, no scalars)."""
    r1 = new_run("recs", name="r1")
    for key, step, epoch, fields in RECORDS:
        r1.log_record(key, fields, step=step, epoch=epoch)
    r1.finish()
    r2 = new_run("recs", name="r2")
    r2.log_record("eval", {"acc": 1.0}, step=0)
    r2.finish()
    return r1, r2


def test_records_one_file_csv_and_parquet_read_back_exactly(with_records, store_path, tmp_path):
    import pandas as pd

    r1, r2 = with_records
    path = tmp_path / "recs.csv"
    result = export_cli(
        store_path, "--project", "recs", "--what", "records", "--one-file", "-o", path
    )
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote 4 records from 2 run(s) to {path} (csv)\n"
    with open(path, newline="", encoding="utf-8") as file:
        assert list(csv.reader(file)) == [
            ["run_id", "run", "key", "step", "epoch", "note", "acc", "ids", "big"],
            [r1.id, "r1", "a/b", "5", "1", "7", "", "", ""],
            [r1.id, "r1", "eval", "3", "0", "first", "0.30000000000000004", "[1, 2]", ""],
            [r1.id, "r1", "eval", "8", "1", "", "NaN", "", "1099511627776"],
            [r2.id, "r2", "eval", "0", "", "", "1.0", "", ""],
        ]
    path = tmp_path / "recs.parquet"
    result = export_cli(store_path, "r1", "r2", "--what", "records", "-o", path)
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(path)
    assert list(frame.columns) == [
        "run_id",
        "project",
        "run",
        "key",
        "step",
        "epoch",
        "note",
        "acc",
        "ids",
        "big",
    ]
    table = pq.read_table(path)
    assert table.column("note").to_pylist() == ["7", '"first"', None, None]  # mixed: JSON
    assert [bits(v) for v in table.column("acc").to_pylist()[1:]] == [
        bits(0.1 + 0.2),
        bits(math.nan),
        bits(1.0),
    ]
    assert table.column("ids").to_pylist() == [None, "[1, 2]", None, None]
    assert table.column("big").to_pylist() == [None, None, 2**40, None]
    assert table.column("epoch").to_pylist() == [1, 0, 1, None]


def test_records_per_run_files(with_records, store_path, tmp_path):
    r1, _ = with_records
    out = tmp_path / "out"
    result = export_cli(
        store_path,
        "--project",
        "recs",
        "--what",
        "records",
        "-k",
        "a/*",
        "-o",
        out,
        "--format",
        "csv",
    )
    assert result.exit_code == 0, result.output
    assert [p.name for p in out.iterdir()] == [f"{r1.id}.csv"]
    with open(out / f"{r1.id}.csv", newline="", encoding="utf-8") as file:
        assert list(csv.reader(file)) == [["key", "step", "epoch", "note"], ["a/b", "5", "1", "7"]]


TENSORS = {
    "a/b": [
        (0, np.arange(6, dtype=np.float32).reshape(2, 3)),
        (4, np.full((2, 3), -0.0, np.float32)),
    ],
    "..": [(1, np.array([True, False])), (2, np.array([False, True]))],
    "w": [(0, np.array([1, 2], np.int64)), (3, np.array([5, 6, 7], np.int64))],
}


@pytest.fixture
def with_tensors(new_run):
    run = new_run("tens", name="t1")
    for key, rows in TENSORS.items():
        for step, array in rows:
            run.log({key: array}, step=step)
    run.log({"loss": 1.0}, step=9)
    run.finish()
    return run


def test_npy_writes_a_file_per_key_and_step(with_tensors, store_path, tmp_path):
    out = tmp_path / "out"
    result = export_cli(store_path, "--project", "tens", "--format", "npy", "-o", out)
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote 6 tensors from 1 run(s) to {out} (npy)\n"
    run_dir = out / with_tensors.id
    assert sorted(p.name for p in run_dir.iterdir()) == ["%2E.", "a%2Fb", "w"]
    for key, folder in (("a/b", "a%2Fb"), ("..", "%2E."), ("w", "w")):
        assert sorted(p.name for p in (run_dir / folder).iterdir()) == sorted(
            f"{step}.npy" for step, _ in TENSORS[key]
        )
        for step, array in TENSORS[key]:
            loaded = np.load(run_dir / folder / f"{step}.npy")
            assert loaded.dtype == array.dtype
            assert loaded.tobytes() == array.tobytes() and loaded.shape == array.shape


def test_zarr_writes_a_store_per_run(with_tensors, store_path, tmp_path):
    import zarr

    out = tmp_path / "out"
    result = export_cli(store_path, "t1", "--format", "zarr", "-o", out, "-k", "a/b", "-k", "..")
    assert result.exit_code == 0, result.output
    group = zarr.open_group(out / with_tensors.id, mode="r")
    assert dict(group.attrs) == {"run_id": with_tensors.id, "run": "t1", "project": "tens"}
    assert sorted(group.group_keys()) == ["%2E.", "a%2Fb"]
    for key, name in (("a/b", "a%2Fb"), ("..", "%2E.")):
        assert group[name].attrs["key"] == key
        values = group[name]["values"][:]
        expected = np.stack([array for _, array in TENSORS[key]])
        assert values.dtype == expected.dtype
        assert values.tobytes() == expected.tobytes() and values.shape == expected.shape
        assert group[name]["steps"][:].tolist() == [step for step, _ in TENSORS[key]]


def test_zarr_refuses_a_key_that_changed_shape_before_writing(with_tensors, store_path, tmp_path):
    out = tmp_path / "out"
    result = export_cli(store_path, "t1", "--format", "zarr", "-o", out)
    assert result.exit_code == 1
    assert result.output == (
        f"error: tensor 'w' of run t1 ({with_tensors.id}) changed shape during the run (None,); "
        "a Zarr array holds one shape: export it with --format npy\n"
    )
    assert not out.exists()


def test_tensor_formats_refuse_scalar_options(with_tensors, store_path, tmp_path):
    result = export_cli(store_path, "t1", "--format", "npy", "--one-file", "-o", tmp_path / "o")
    assert result.exit_code == 2
    assert "--format npy exports tensors" in result.output


def test_zarr_chunks_span_several_files(with_tensors, store_path, tmp_path, monkeypatch):
    import zarr

    from stepstore.io import tensors

    monkeypatch.setattr(tensors, "CHUNK_BYTES", 24)  # one 2x3 float32 step per chunk
    out = tmp_path / "out"
    assert export_cli(store_path, "t1", "--format", "zarr", "-k", "a/b", "-o", out).exit_code == 0
    values = zarr.open_group(out / with_tensors.id, mode="r")["a%2Fb"]["values"]
    assert values.chunks == (1, 2, 3)
    assert values[:].tobytes() == np.stack([a for _, a in TENSORS["a/b"]]).tobytes()
