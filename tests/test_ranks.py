"""``ranks="all"``: every rank of a distributed job records into the shared run, each point
carrying its rank; readers select ranks or combine them per step. Runs on every backend."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stepstore as ss
from stepstore.backends import open_backend
from stepstore.query.ranks import across_ranks
from stepstore.series.chunk import Columns

from .conftest import FAST

WORLD = 4
STEPS = 40


def value(rank: int, step: int) -> float:
    return rank * 10.0 + step / 8.0


@pytest.fixture
def job(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Environment of a 4-rank job sharing run id ``job-7`` (set ``RANK`` per process)."""
    monkeypatch.setenv("WORLD_SIZE", str(WORLD))
    monkeypatch.setenv("STEPSTORE_RUN_ID", "job-7")
    return monkeypatch


def start(job: pytest.MonkeyPatch, rank: int, store: str, **kwargs: object) -> ss.Run:
    job.setenv("RANK", str(rank))
    return ss.init("dist", store=store, ranks="all", **{**FAST, **kwargs})


def record_job(job: pytest.MonkeyPatch, store: str) -> None:
    """All ranks (in this process) log ``loss`` at every step, rank 2 skips odd steps,
    each rank logs a tensor, a record and an artifact."""
    runs = [start(job, rank, store) for rank in range(WORLD)]
    for step in range(STEPS):
        for rank, run in enumerate(runs):
            if rank == 2 and step % 2:
                continue
            run.log({"loss": value(rank, step)}, step=step, epoch=step // 10)
    for rank, run in enumerate(runs):
        run.log({"w": np.full((2, 3), rank, np.float32)}, step=STEPS)
        run.log_record("cfg", {"rank": rank}, step=STEPS)
        if rank:
            run.log({"only_on_workers": float(rank)}, step=0)
    for run in runs:
        run.finish()


def test_every_rank_records_and_reads_back_exactly(job, store_uri) -> None:
    record_job(job, store_uri)
    view = ss.open(store_uri).run("job-7")
    assert view.ranks == [0, 1, 2, 3]
    assert view.rank_status == dict.fromkeys(range(WORLD), "finished")

    frame = view.scalars("loss", ranks="all")
    assert list(frame.columns) == ["key", "rank", "step", "epoch", "time", "value"]
    for rank in range(WORLD):
        part = frame[frame["rank"] == rank]
        steps = [s for s in range(STEPS) if rank != 2 or s % 2 == 0]
        assert part["step"].tolist() == steps
        assert part["value"].tolist() == [value(rank, s) for s in steps]
        assert part["epoch"].tolist() == [s // 10 for s in steps]

    plain = view.scalars("loss")  # rank 0, without a rank column, as before
    assert list(plain.columns) == ["key", "step", "epoch", "time", "value"]
    assert plain["value"].tolist() == [value(0, s) for s in range(STEPS)]
    assert view.summary["loss"]["last"] == value(0, STEPS - 1)

    picked = view.scalars(["loss", "only_on_workers"], ranks=[3, 1])
    assert sorted(set(picked["rank"])) == [1, 3]
    workers = picked[picked["key"] == "only_on_workers"]
    assert workers[["rank", "value"]].values.tolist() == [[1, 1.0], [3, 3.0]]
    assert view.keys(rank=1) == ["cfg", "loss", "only_on_workers", "w"]

    for rank in range(WORLD):
        assert np.array_equal(view.tensor("w", rank=rank)[STEPS], np.full((2, 3), rank, "f4"))
        assert view.records("cfg", rank=rank)["rank"].tolist() == [rank]
    assert ss.open(store_uri).check() == []


@pytest.mark.parametrize("how", ["mean", "min", "max", "sum", "std"])
def test_ranks_combine_per_step(job, store_uri, how) -> None:
    record_job(job, store_uri)
    view = ss.open(store_uri).run("job-7")
    frame = view.scalars("loss", across_ranks=how)
    assert list(frame.columns) == ["key", "step", "epoch", "time", "value", "ranks"]
    assert frame["step"].tolist() == list(range(STEPS))
    for step, got, count in zip(frame["step"], frame["value"], frame["ranks"], strict=True):
        present = [r for r in range(WORLD) if r != 2 or step % 2 == 0]
        values = np.array([value(r, step) for r in present])
        assert count == len(present)
        assert got == pytest.approx(getattr(np, how)(values), rel=1e-12)
    subset = view.scalars("loss", ranks=[0, 1], across_ranks="max", steps=(3, 5))
    assert subset["value"].tolist() == [value(1, s) for s in (3, 4, 5)]


def test_a_nan_on_one_rank_is_not_averaged_away(job, store_path) -> None:
    runs = [start(job, rank, str(store_path)) for rank in range(2)]
    runs[0].log({"loss": 1.0}, step=0)
    runs[1].log({"loss": float("nan")}, step=0)
    for run in runs:
        run.finish()
    frame = ss.open(store_path).run("job-7").scalars("loss", across_ranks="mean")
    assert np.isnan(frame["value"].tolist()[0])


def test_bad_rank_selections_are_explained(job, store_path) -> None:
    record_job(job, str(store_path))
    view = ss.open(store_path).run("job-7")
    with pytest.raises(ss.NotFoundError, match=r"has no rank 9; recorded ranks: 0, 1, 2, 3"):
        view.scalars("loss", ranks=[0, 9])
    with pytest.raises(ss.InvalidArgumentError, match=r"ranks='some': expected 'all', a rank"):
        view.scalars("loss", ranks="some")
    with pytest.raises(ss.InvalidArgumentError, match=r"across_ranks='avg': expected one of"):
        view.scalars("loss", across_ranks="avg")
    with pytest.raises(ss.NotFoundError, match=r"has no rank 5"):
        view.tensor("w", rank=5)
    with pytest.raises(ss.InvalidArgumentError, match=r"ranks='every': expected 'zero' or 'all'"):
        ss.init("dist", store=store_path, ranks="every")


def test_a_worker_waits_for_rank_zero_then_says_why(job, store_path) -> None:
    job.setenv("RANK", "1")
    with pytest.raises(ss.NotFoundError, match=r"rank 1: run job-7 was not created .* 0.2 s"):
        ss.init("dist", store=store_path, ranks="all", rank_wait=0.2)
    start(job, 0, str(store_path)).finish()
    job.setenv("RANK", "1")
    with pytest.raises(ss.InvalidArgumentError, match=r"belongs to project 'dist', not 'other'"):
        ss.init("other", store=store_path, ranks="all")


def test_without_ranks_all_workers_stay_idle(job, store_path) -> None:
    start(job, 0, str(store_path)).finish()
    job.setenv("RANK", "1")
    idle = ss.init("dist", store=store_path, **FAST)
    assert type(idle).__name__ == "IdleRun"
    assert ss.open(store_path).run("job-7").ranks == [0]


def test_a_restarted_worker_continues_its_own_steps(job, store_uri) -> None:
    first = [start(job, rank, store_uri) for rank in range(2)]
    for run in first:
        run.log({"loss": 1.0})
        run.log({"loss": 2.0})
        run.finish("killed")
    again = [start(job, rank, store_uri) for rank in range(2)]
    assert [run.step for run in again] == [2, 2]
    assert again[1].rank == 1 and again[1].status == "running"
    for run in again:
        run.log({"loss": 3.0})
        run.finish()
    frame = ss.open(store_uri).run("job-7").scalars("loss", ranks="all")
    assert frame[["rank", "step", "value"]].values.tolist() == [
        [0, 0, 1.0],
        [0, 1, 2.0],
        [0, 2, 3.0],
        [1, 0, 1.0],
        [1, 1, 2.0],
        [1, 2, 3.0],
    ]


def test_a_killed_worker_loses_no_point(job, store_uri, tmp_path) -> None:
    start(job, 0, store_uri).finish()
    code = """
        import os, sys, stepstore as ss
        run = ss.init("dist", store=sys.argv[1], ranks="all", flush_interval=3600)
        for step in range(5000):
            run.log({"loss": step * 0.5})
        print("logged", flush=True)
        sys.stdin.read()
        """
    env = {**os.environ, "RANK": "3", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), store_uri],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as worker:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "logged"
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    with ss.open(store_uri) as store:  # opening recovers the worker's journal
        view = store.run("job-7")
        assert view.rank_status[3] == "crashed"
        frame = view.scalars("loss", ranks=3)
        assert frame["value"].tolist() == [step * 0.5 for step in range(5000)]
        assert view.status == "finished"  # rank 0's status is the run's


def test_copy_carries_every_rank(job, store_path, tmp_path) -> None:
    record_job(job, str(store_path))
    target = tmp_path / "copy"
    from stepstore.io.copy import copy_runs

    with ss.open(store_path) as source, _open_new(target) as dest:
        assert [r.action for r in copy_runs(source, dest)] == ["copied"]
        assert [r.action for r in copy_runs(source, dest)] == ["skipped"]
    original = ss.open(store_path).run("job-7")
    copied = ss.open(target).run("job-7")
    assert copied.rank_status == original.rank_status
    a = original.scalars(ranks="all").drop(columns="time")
    b = copied.scalars(ranks="all").drop(columns="time")
    assert a.equals(b)
    assert np.array_equal(copied.tensor("w", rank=3)[STEPS], np.full((2, 3), 3, "f4"))


def _open_new(path: Path) -> ss.Store:
    open_backend(str(path), create=True).close()
    return ss.open(path)


def test_to_arrow_with_every_rank(job, store_path) -> None:
    record_job(job, str(store_path))
    table = ss.open(store_path).to_arrow(keys="loss", ranks="all")
    assert table.column_names[:5] == ["run_id", "project", "run", "key", "rank"]
    assert sorted(set(table.column("rank").to_pylist())) == [0, 1, 2, 3]
    assert table.num_rows == 3 * STEPS + STEPS // 2
    assert "rank" not in ss.open(store_path).to_arrow(keys="loss").column_names


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.integers(0, 30),
            st.floats(allow_nan=True, allow_infinity=False, width=32),
            max_size=12,
        ),
        min_size=1,
        max_size=5,
    ),
    st.sampled_from(["mean", "min", "max", "sum", "std"]),
)
def test_combining_matches_a_per_step_reference(per_rank, how) -> None:
    parts = []
    for rank, points in enumerate(per_rank):
        steps = np.array(sorted(points), dtype=np.int64)
        parts.append(
            Columns(
                steps,
                steps // 10,
                steps * 1000 + rank,
                np.array([points[s] for s in steps.tolist()], dtype=np.float64),
            )
        )
    columns, counts = across_ranks(parts, how)
    every = sorted({s for points in per_rank for s in points})
    assert columns.step.tolist() == every
    for i, step in enumerate(every):
        values = np.array([p[step] for p in per_rank if step in p], dtype=np.float64)
        assert counts[i] == len(values)
        assert columns.time[i] == max(step * 1000 + r for r, p in enumerate(per_rank) if step in p)
        expected = getattr(np, how)(values)
        if np.isnan(expected):
            assert np.isnan(columns.value[i])
        else:
            assert columns.value[i] == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_a_store_of_the_schema_before_ranks_is_migrated(store_uri, store_sql, monkeypatch):
    from stepstore.backends import mysql, postgresql, sqlite
    from stepstore.series.chunk import make_chunk
    from stepstore.testing import columns, run_record

    with monkeypatch.context() as old:  # a store created by the previous stepstore
        for cls in (sqlite.SQLiteBackend, postgresql.PostgresBackend, mysql.MySQLBackend):
            old.setattr(cls, "migrations", cls.migrations[:-1])
        backend = open_backend(store_uri, create=True)
        before = backend.schema_version
        backend.create_run(run_record("old-run"))
        backend.close()
    store_sql(
        'INSERT INTO series (run_id, "key", kind) VALUES (?, ?, ?)', ("old-run", "x", "scalar")
    )
    ((series_id,),) = store_sql("SELECT id FROM series", ())
    chunk = make_chunk(0, columns(range(100)), sealed=True)
    store_sql(
        "INSERT INTO chunks (series_id, seq, first_step, last_step, min_epoch, max_epoch, "
        "count, sealed, stats, checksum, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (series_id, 0, 0, 99, None, None, 100, True, chunk.stats, chunk.checksum, chunk.data),
    )

    with ss.open(store_uri) as store:  # opening migrates
        assert store.backend.schema_version == before + 1
        view = store.run("old-run")
        assert view.ranks == [0]
        assert view.scalars("x")["value"].tolist() == [s / 2 for s in range(100)]
        assert view.scalars("x", ranks="all")["rank"].tolist() == [0] * 100
    run = ss.init("p", store=store_uri, **FAST)
    run.log({"x": 1.0})
    run.finish()
    assert ss.open(store_uri).run(run.id).scalars("x")["value"].tolist() == [1.0]


@pytest.mark.parametrize("store_uri", ["mariadb"], indirect=True)
def test_a_mysql_migration_cut_off_before_its_version_is_completed(store_uri, store_sql):
    """MySQL commits each DDL statement: a process killed after the ALTER and before the
    version row leaves the ranks column in place and the old version recorded."""
    run = ss.init("p", store=store_uri, **FAST)
    run.log({"x": 1.0})
    run.finish()
    with ss.open(store_uri) as store:
        version = store.backend.schema_version
    store_sql("UPDATE meta SET value = ? WHERE \"key\" = 'schema_version'", (str(version - 1),))
    with ss.open(store_uri) as store:  # opening completes the migration
        assert store.backend.schema_version == version
        assert store.run(run.id).scalars("x", ranks="all")["rank"].tolist() == [0]


def test_show_lists_the_ranks_and_their_status(job, store_path) -> None:
    import json

    from click.testing import CliRunner

    from stepstore.cli import main

    runs = [start(job, rank, str(store_path)) for rank in range(3)]
    runs[2].finish("killed")
    runs[0].finish()
    runs[1].finish()
    shown = CliRunner().invoke(main, ["show", "job-7", "--store", str(store_path)])
    assert shown.exit_code == 0, shown.output
    assert "0 finished, 1 finished, 2 killed" in shown.stdout
    described = CliRunner().invoke(main, ["show", "job-7", "--json", "--store", str(store_path)])
    assert json.loads(described.stdout)["ranks"] == {
        "0": "finished",
        "1": "finished",
        "2": "killed",
    }


def test_export_every_rank_to_csv_and_parquet(job, store_path, tmp_path) -> None:
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from stepstore.cli import main

    runs = [start(job, rank, str(store_path)) for rank in range(2)]
    for step in range(2):
        for rank, run in enumerate(runs):
            run.log({"loss": value(rank, step)}, step=step, epoch=0)
    runs[1].log({"extra": 0.5}, step=1)
    for run in runs:
        run.finish()
    out = tmp_path / "all.csv"
    args = ["export", "job-7", "-o", str(out), "--all-ranks", "--store", str(store_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines() == [
        "rank,step,epoch,loss,extra",
        f"0,0,0,{value(0, 0)!r},",
        f"0,1,0,{value(0, 1)!r},",
        f"1,0,0,{value(1, 0)!r},",
        f"1,1,0,{value(1, 1)!r},0.5",
    ]
    from stepstore.io.export import export_runs

    parquet = tmp_path / "all.parquet"
    view = ss.open(store_path).run("job-7")
    assert export_runs([view], parquet, "parquet", keys="extra", ranks="all") == 1
    table = pq.read_table(parquet)
    assert table.column_names[3:6] == ["key", "rank", "step"]
    assert table.select(["key", "rank", "step", "value"]).to_pylist() == [
        {"key": "extra", "rank": 1, "step": 1, "value": 0.5}
    ]


def test_a_rank_that_recorded_nothing_is_listed_but_adds_no_rows(job, store_path) -> None:
    zero, one = (start(job, rank, str(store_path)) for rank in range(2))
    zero.log({"loss": 1.0})
    zero.finish()
    one.finish()
    view = ss.open(store_path).run("job-7")
    assert view.ranks == [0, 1]
    assert view.scalars("loss", ranks="all")[["rank", "value"]].values.tolist() == [[0, 1.0]]
    with pytest.raises(ss.NotFoundError, match=r"has no key matching 'loss'"):
        view.scalars("loss", ranks=1)


def test_summary_filters_describe_rank_zero(job, store_uri) -> None:
    runs = [start(job, rank, store_uri) for rank in range(2)]
    runs[0].log({"loss": 0.1}, step=0)
    runs[1].log({"loss": 9.0}, step=0)
    for run in runs:
        run.finish()
    store = ss.open(store_uri)
    assert [r.id for r in store.runs(where="summary.loss.last > 1")] == []
    assert [r.id for r in store.runs(where="summary.loss.max < 1")] == ["job-7"]
    assert [r.id for r in store.runs(where="summary.loss.count = 1")] == ["job-7"]
