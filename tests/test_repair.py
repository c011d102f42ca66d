"""``stepstore.repair`` and ``stepstore check --repair``: damage is reported where it is, the
rest stays readable, and repair drops only what is damaged, in every backend."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import stepstore as ss
from stepstore.backends.base import Problem
from stepstore.cli import main
from stepstore.repair import repair
from stepstore.tensors.series_writer import MAX_CHUNK_STEPS
from stepstore.tensors.zarr_v3 import shard_header_bytes
from stepstore.testing import StoreSQL

ROW = 64  # floats per tensor row: 256 bytes, random so they are stored raw (in place)


def _init(store_uri: str, **kwargs) -> ss.Run:
    """A run in ``store_uri`` that flushes every 50 ms."""
    return ss.init("test", store=store_uri, flush_interval=0.05, **kwargs)


def _arrays(store_uri: str) -> Path:
    """The local directory holding the store's tensors, images and artifacts."""
    with ss.open(store_uri) as store:
        return Path(store.backend.default_array_store)


def _chunk_file(arrays: Path, run_id: str, key: str, chunk: int = 0) -> Path:
    return arrays / run_id / key / "s0" / "c" / str(chunk) / "0"


def _row_offset(row: int) -> int:
    """Where row ``row`` of a tensor chunk file lies (512-byte rows: chunks of the most
    steps, after their shard index)."""
    return shard_header_bytes(MAX_CHUNK_STEPS) + row * ROW * 8


def _flip_scalar_chunk(store_sql: StoreSQL, key: str, seq: int) -> None:
    """Flip a byte of the blob of chunk ``seq`` of ``key`` (the store's only run)."""
    ((sid, data),) = store_sql(
        "SELECT c.series_id, c.data FROM chunks c JOIN series s ON s.id = c.series_id "
        'WHERE s."key" = ? AND c.seq = ?',
        (key, seq),
    )
    damaged = bytearray(bytes(data))
    damaged[-3] ^= 0xFF
    store_sql(
        "UPDATE chunks SET data = ? WHERE series_id = ? AND seq = ?", (bytes(damaged), sid, seq)
    )


def _rows(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(ROW) for _ in range(n)]


def _pairs(problems: list[Problem]) -> list[tuple[str, str]]:
    return [(p.where, p.what) for p in problems]


def test_damaged_scalar_chunk_is_reported_then_repaired(store_uri, store_sql):
    run = _init(store_uri, chunk_size=16)
    for i in range(64):
        run.log({"a": float(i), "b": float(-i)})
    run.finish()
    _flip_scalar_chunk(store_sql, "a", 3)  # the last chunk: the summary's last value changes
    where = f"run {run.id} key 'a' chunk 3"
    with ss.open(store_uri) as store:
        assert _pairs(store.check()) == [(where, "checksum mismatch")]
        view = store.run(run.id)
        assert view.scalars("a", steps=(0, 47))["value"].tolist() == [float(i) for i in range(48)]
        assert view.scalars("b")["value"].tolist() == [float(-i) for i in range(64)]

        assert _pairs(repair(store)) == [
            (where, "deleted the chunk (checksum mismatch); 16 point(s) lost"),
            (f"run {run.id} key 'a'", "rebuilt the summary from its chunks (48 points)"),
        ]
        assert store.check() == []
        assert repair(store) == []  # nothing left to do
    with ss.open(store_uri) as store:
        view = store.run(run.id)
        assert view.scalars("a")["value"].tolist() == [float(i) for i in range(48)]
        assert view.summary["a"] == {
            "count": 48,
            "min": 0.0,
            "max": 47.0,
            "last": 47.0,
            "first_step": 0,
            "last_step": 47,
        }
        assert view.summary["b"]["count"] == 64


def test_undecodable_scalar_chunk_is_deleted(store_uri, store_sql):
    run = _init(store_uri, chunk_size=16)
    for i in range(48):
        run.log({"a": float("nan") if i == 3 else float(i)})
    run.finish()
    bad = b"SSCK\x01\x01\x10\x00\x00\x00garbage"
    store_sql(
        "UPDATE chunks SET data = ?, checksum = ? WHERE seq = 1",
        (bad, ss.series.chunk.checksum(bad)),
    )
    with ss.open(store_uri) as store:
        (problem,) = store.check()
        assert problem.where == f"run {run.id} key 'a' chunk 1"
        (deleted, rebuilt) = repair(store)
        assert deleted.where == problem.where
        assert deleted.what.startswith("deleted the chunk (chunk payload does not decompress")
        assert deleted.what.endswith("; 16 point(s) lost")
        assert rebuilt.what == "rebuilt the summary from its chunks (32 points)"
        assert store.check() == []
        values = store.run(run.id).scalars("a")["value"].tolist()
    assert math.isnan(values[3])
    assert values[:3] + values[4:] == [float(i) for i in [0, 1, 2, *range(4, 16), *range(32, 48)]]


def test_corrupted_tensor_rows_are_dropped_and_every_intact_row_kept(store_uri):
    run = _init(store_uri)
    rows = _rows(100)
    for step, row in enumerate(rows):
        run.log({"w": row, "loss": float(step)}, step=step)
    run.finish()
    chunk = _chunk_file(_arrays(store_uri), run.id, "w")
    with open(chunk, "r+b") as handle:  # damage rows 3 and 20 (steps 3 and 20)
        for row in (3, 20):
            handle.seek(_row_offset(row) + 7)
            handle.write(b"\x99")
    kept = [s for s in range(100) if s not in (3, 20)]
    with ss.open(store_uri) as store:
        (problem,) = store.check()
        assert problem.where == f"run {run.id} key 'w'"
        assert problem.what == f"checksum mismatch in {chunk} (row 3, step 3) and 1 more row(s)"
        ts = store.run(run.id).tensor("w")
        assert np.array_equal(ts[4:20], np.stack(rows[4:20]))  # the rest stays readable
        assert len(store.run(run.id).scalars("loss")) == 100

        assert _pairs(repair(store)) == [
            (
                f"run {run.id} key 'w' segment 0 chunk 0",
                f"dropped 2 of its 100 rows (checksum mismatch in {chunk} (row 3, step 3) and 1 "
                "more row(s)); steps lost: 3, 20",
            ),
            (f"run {run.id} key 'w'", "rebuilt the summary from its index (98 rows)"),
        ]
        assert store.check() == []
        assert repair(store) == []
    with ss.open(store_uri) as store:
        view = store.run(run.id)
        ts = view.tensor("w")
        assert ts.steps.tolist() == kept
        assert np.array_equal(ts[:], np.stack([rows[s] for s in kept]))
        assert np.array_equal(ts[[2, 4, 21]], np.stack([rows[2], rows[4], rows[21]]))
        assert np.array_equal(ts[0:10, 5], np.array([rows[s][5] for s in kept if s < 10]))
        assert ts.stats()["step"].tolist() == kept
        with pytest.raises(KeyError, match="step 3 was not recorded"):
            ts.at(3)
        summary = view.summary["w"]
        assert (summary["count"], summary["first_step"], summary["last_step"]) == (98, 0, 99)
        assert len(view.scalars("loss")) == 100


def test_torn_tensor_file_after_a_machine_crash(store_uri):
    """A chunk file shorter than its index claims (size not made durable) loses the rows
    past its end and is padded."""
    run = _init(store_uri)
    rows = _rows(12, seed=1)
    for step, row in enumerate(rows):
        run.log({"w": row}, step=step)
    run.finish()
    chunk = _chunk_file(_arrays(store_uri), run.id, "w")
    full = chunk.stat().st_size
    with open(chunk, "r+b") as handle:
        handle.truncate(_row_offset(9) + 100)  # rows 0-8 whole, row 9 torn, rows 10-11 gone
    with ss.open(store_uri) as store:
        (cut, _) = repair(store)
        assert cut.what == (
            f"dropped 3 of its 12 rows (chunk file {chunk} ends in row 9); steps lost: 9, 10, 11"
        )
        assert chunk.stat().st_size == full
        assert store.check() == []
    with ss.open(store_uri) as store:
        ts = store.run(run.id).tensor("w")
        assert ts.steps.tolist() == list(range(9))
        assert np.array_equal(ts[:], np.stack(rows[:9]))


def test_missing_tensor_file_and_damaged_compressed_chunk_are_dropped(store_uri):
    run = _init(store_uri)
    rows = _rows(5, seed=2)
    for step in range(10):
        run.log({"z": np.zeros((16, 16), np.float32) + step}, step=step)
        if step < 5:
            run.log({"gone": rows[step]}, step=step)
    run.finish()
    arrays = _arrays(store_uri)
    gone = _chunk_file(arrays, run.id, "gone")
    gone.unlink()
    packed = arrays / run.id / "z" / "s0" / "c" / "0" / "0" / "0"
    packed.write_bytes(b"not a zstd frame" * 8)
    with ss.open(store_uri) as store:
        repaired = repair(store)
        assert _pairs(repaired[:2]) == [
            (
                f"run {run.id} key 'gone' segment 0 chunk 0",
                f"dropped the chunk (chunk file {gone} is missing); 5 row(s) lost",
            ),
            (f"run {run.id} key 'gone'", "rebuilt the summary from its index (0 rows)"),
        ]
        assert repaired[2].where == f"run {run.id} key 'z' segment 0 chunk 0"
        assert repaired[2].what.startswith(f"dropped the chunk (chunk file {packed} does not ")
        assert repaired[2].what.endswith("; 10 row(s) lost")
        assert _pairs(repaired[3:]) == [
            (f"run {run.id} key 'z'", "rebuilt the summary from its index (0 rows)")
        ]
        assert store.check() == []
    with ss.open(store_uri) as store:
        view = store.run(run.id)
        assert len(view.tensor("z")) == 0
        assert len(view.tensor("gone")) == 0
        assert repr(view.tensor("gone")) == "<TensorSeries 'gone': 0 steps>"
        with pytest.raises(KeyError, match="tensor 'gone': step 2 was not recorded"):
            view.tensor("gone").at(2)
        for key in ("gone", "z"):
            summary = view.summary[key]
            assert (summary["count"], summary["first_step"], summary["last_step"]) == (
                0,
                None,
                None,
            )


def test_damaged_images_and_artifacts_leave_the_index(store_uri, tmp_path):
    run = _init(store_uri)
    for step in range(3):
        run.log({"img": ss.Image(np.full((4, 4), 40 * step, np.uint8))}, step=step)
    source = tmp_path / "notes.txt"
    source.write_text("hello")
    run.log_artifact(source)
    run.log_artifact(source, name="kept.txt")
    run.finish()
    arrays = _arrays(store_uri)
    image = arrays / run.id / "img" / "1-0.png"
    image.write_bytes(image.read_bytes()[:-4] + b"xxxx")
    artifact = arrays / run.id / "artifacts" / "notes.txt"
    artifact.write_text("hellO")
    with ss.open(store_uri) as store:
        assert len(store.check()) == 2
        assert _pairs(repair(store)) == [
            (
                f"run {run.id} key 'img' image step 1 position 0",
                f"removed the image from the index (checksum mismatch in {image})",
            ),
            (f"run {run.id} key 'img'", "rebuilt the summary from its index (2 rows)"),
            (
                f"run {run.id} artifact 'notes.txt'",
                f"removed the artifact from the index (SHA-256 mismatch in {artifact})",
            ),
        ]
        assert store.check() == []
    with ss.open(store_uri) as store:
        view = store.run(run.id)
        assert [(i.step, int(i.array.flat[0])) for i in view.images("img")] == [(0, 0), (2, 80)]
        assert list(view.artifacts()) == ["kept.txt"]
        assert view.artifact("kept.txt") == b"hello"
        summary = view.summary["img"]
        assert (summary["count"], summary["first_step"], summary["last_step"]) == (2, 0, 2)


def test_stale_summary_is_rebuilt_with_infinities_and_nan(store_uri, store_sql):
    """The rebuilt summary is stored as a commit stores it: ±inf and a NaN last survive."""
    values = [-math.inf, 1.0, 2.0, 3.0, 4.0, math.inf, 6.0, 7.0, 8.0, math.nan]
    run = _init(store_uri)
    for value in values:
        run.log({"a": value})
    run.finish()
    store_sql("UPDATE series SET count = 3, last = 1 WHERE \"key\" = 'a'", ())
    with ss.open(store_uri) as store:
        assert store.run(run.id).summary["a"]["count"] == 3
        assert _pairs(repair(store)) == [
            (f"run {run.id} key 'a'", "rebuilt the summary from its chunks (10 points)")
        ]
        assert repair(store) == []  # the stored summary now reads back as rebuilt
    with ss.open(store_uri) as store:
        summary = store.run(run.id).summary["a"]
        assert math.isnan(summary.pop("last"))
        assert summary == {
            "count": 10,
            "min": -math.inf,
            "max": math.inf,
            "first_step": 0,
            "last_step": 9,
        }
        where = "summary.a.max > 1e308 and summary.a.min < -1e308 and summary.a.count = 10"
        assert [r.id for r in store.runs(where=where)] == [run.id]


def test_a_run_being_recorded_is_left_alone(store_uri, store_sql):
    run = _init(store_uri, chunk_size=16)
    for i in range(40):
        run.log({"a": float(i)})
    run.flush()
    _flip_scalar_chunk(store_sql, "a", 0)
    with ss.open(store_uri) as store:
        assert repair(store) == []
        assert [p.where for p in store.check()] == [f"run {run.id} key 'a' chunk 0"]
    run.finish()
    with ss.open(store_uri) as store:
        assert [p.what for p in repair(store)] == [
            "deleted the chunk (checksum mismatch); 16 point(s) lost",
            "rebuilt the summary from its chunks (24 points)",
        ]


def test_a_run_recorded_on_another_host_is_left_alone(store_uri, store_sql):
    """No journal here, but a fresh heartbeat: a live process elsewhere may own the run."""
    run = _init(store_uri, chunk_size=16)
    for i in range(40):
        run.log({"a": float(i)})
    run.finish()
    _flip_scalar_chunk(store_sql, "a", 0)
    store_sql(
        "UPDATE runs SET status = 'running', heartbeat = ? WHERE id = ?", (time.time(), run.id)
    )
    with ss.open(store_uri) as store:
        assert store.run(run.id).status == "running"
        assert repair(store) == []
        assert [p.where for p in store.check()] == [f"run {run.id} key 'a' chunk 0"]
    store_sql("UPDATE runs SET heartbeat = ? WHERE id = ?", (time.time() - 3600, run.id))
    with ss.open(store_uri) as store:
        assert store.run(run.id).status == "crashed"  # stale: its process is gone
        assert [p.what for p in repair(store)] == [
            "deleted the chunk (checksum mismatch); 16 point(s) lost",
            "rebuilt the summary from its chunks (24 points)",
        ]
        assert store.check() == []


@pytest.mark.parametrize("journal", ["{id}.journal", "{id}.r3.journal"])
def test_a_run_with_a_journal_here_is_left_alone(store_uri, store_sql, journal):
    """A journal of the run, of rank 0 or another rank, marks it as recorded here; the
    journal of a run whose id merely starts with this one's does not."""
    run = _init(store_uri, chunk_size=16)
    for i in range(40):
        run.log({"a": float(i)})
    run.finish()
    _flip_scalar_chunk(store_sql, "a", 0)
    with ss.open(store_uri) as store:  # opening recovers orphaned journals: create them after
        journals = store.backend.journal_dir
        journals.mkdir(parents=True, exist_ok=True)
        held = journals / journal.format(id=run.id)
        held.touch()
        assert repair(store) == []
        held.unlink()
        (journals / f"{run.id}0.journal").touch()
        assert [p.what for p in repair(store)] == [
            "deleted the chunk (checksum mismatch); 16 point(s) lost",
            "rebuilt the summary from its chunks (24 points)",
        ]


def test_cli_check_repair(store_uri, store_sql):
    run = _init(store_uri, chunk_size=16)
    for i in range(40):
        run.log({"a": float(i)})
    run.finish()
    _flip_scalar_chunk(store_sql, "a", 0)
    runner = CliRunner()
    before = runner.invoke(main, ["check", "--store", store_uri])
    assert before.exit_code == 1
    fixed = runner.invoke(main, ["check", "--repair", "--store", store_uri])
    assert fixed.exit_code == 0, fixed.output
    assert fixed.stdout.splitlines() == [
        f"repaired run {run.id} key 'a' chunk 0: deleted the chunk (checksum mismatch); "
        "16 point(s) lost",
        f"repaired run {run.id} key 'a': rebuilt the summary from its chunks (24 points)",
        f"2 repair(s) in {store_uri}",
        "ok",
    ]
    again = runner.invoke(main, ["check", "--repair", "--json", "--store", store_uri])
    assert again.exit_code == 0
    assert json.loads(again.stdout) == {"ok": True, "problems": [], "repaired": []}
    assert "--repair" in runner.invoke(main, ["check", "--help"]).stdout


def test_damage_in_a_workers_series_is_repaired_there(store_uri, store_sql, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("STEPSTORE_RUN_ID", "job-1")
    runs = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        runs.append(_init(store_uri, ranks="all", chunk_size=16))
    for i in range(32):
        for rank, run in enumerate(runs):
            run.log({"a": float(i + 100 * rank)})
    for run in runs:
        run.finish()
    ((sid, data),) = store_sql(
        "SELECT c.series_id, c.data FROM chunks c JOIN series s ON s.id = c.series_id "
        'WHERE s."rank" = 1 AND c.seq = 0',
        (),
    )
    damaged = bytearray(bytes(data))
    damaged[-3] ^= 0xFF
    store_sql("UPDATE chunks SET data = ? WHERE series_id = ? AND seq = 0", (bytes(damaged), sid))
    where = "run job-1 key 'a' rank 1"
    with ss.open(store_uri) as store:
        assert _pairs(store.check()) == [(f"{where} chunk 0", "checksum mismatch")]
        assert _pairs(repair(store)) == [
            (f"{where} chunk 0", "deleted the chunk (checksum mismatch); 16 point(s) lost"),
            (where, "rebuilt the summary from its chunks (16 points)"),
        ]
        assert store.check() == []
        frame = store.run("job-1").scalars("a", ranks="all")
    assert frame[frame["rank"] == 0]["value"].tolist() == [float(i) for i in range(32)]
    assert frame[frame["rank"] == 1]["value"].tolist() == [float(i + 100) for i in range(16, 32)]


# -- index rows that disagree with their data --------------------------------------------------


def _scalar_chunk_row(store_sql: StoreSQL, key: str, seq: int) -> tuple[int, bytes]:
    """Series id and statistics of chunk ``seq`` of ``key`` (the store's only run)."""
    ((sid, stats),) = store_sql(
        "SELECT c.series_id, c.stats FROM chunks c JOIN series s ON s.id = c.series_id "
        'WHERE s."key" = ? AND c.seq = ?',
        (key, seq),
    )
    return sid, bytes(stats)


def test_altered_chunk_statistics_and_steps_are_found_and_rebuilt(store_uri, store_sql):
    """A scalar chunk's data is intact, but its index row lies: statistics, first step and
    count are rebuilt from its points, and no point is lost."""
    from stepstore.series.chunk import STATS_DTYPE

    run = _init(store_uri, chunk_size=16)
    for i in range(48):
        run.log({"a": float(i)})
    run.finish()
    sid, stats = _scalar_chunk_row(store_sql, "a", 1)
    altered = np.frombuffer(stats, STATS_DTYPE).copy()
    altered["max"] = 1e9
    altered["sum"] = -5.0
    store_sql(
        "UPDATE chunks SET stats = ? WHERE series_id = ? AND seq = 1", (altered.tobytes(), sid)
    )
    store_sql("UPDATE chunks SET first_step = 5 WHERE series_id = ? AND seq = 0", (sid,))
    store_sql("UPDATE chunks SET count = 15 WHERE series_id = ? AND seq = 2", (sid,))
    where = f"run {run.id} key 'a' chunk"
    with ss.open(store_uri) as store:
        assert _pairs(store.check()) == [
            (f"{where} 0", "its index row differs from its points (first_step)"),
            (
                f"{where} 1",
                "its index row differs from its points (statistics sum, statistics max)",
            ),
            (f"{where} 2", "its index row differs from its points (count)"),
        ]
        assert _pairs(repair(store)) == [
            (f"{where} 0", "rebuilt its index row from its 16 points (first_step)"),
            (
                f"{where} 1",
                "rebuilt its index row from its 16 points (statistics sum, statistics max)",
            ),
            (f"{where} 2", "rebuilt its index row from its 16 points (count)"),
        ]
        assert store.check() == []
        assert repair(store) == []
    with ss.open(store_uri) as store:
        view = store.run(run.id)
        assert view.scalars("a", steps=(0, 3))["value"].tolist() == [0.0, 1.0, 2.0, 3.0]
        assert view.scalars("a")["value"].tolist() == [float(i) for i in range(48)]
        assert view.scalars("a", max_points=4)["value"].max() == 47.0


def _tensor_run(store_uri: str, steps: int = 30, seed: int = 3) -> tuple[ss.Run, list[np.ndarray]]:
    run = _init(store_uri)
    rows = _rows(steps, seed)
    for step, row in enumerate(rows):
        run.log({"w": row}, step=step)
    run.finish()
    return run, rows


def _set_index_step(store_sql: StoreSQL, entry: int, step: int) -> None:
    """Write ``step`` as the step of row ``entry`` of the only tensor chunk's index row."""
    ((sid, blob),) = store_sql("SELECT series_id, steps FROM tensor_chunks", ())
    steps = np.frombuffer(bytes(blob), "<i8").copy()
    steps[entry] = step
    store_sql("UPDATE tensor_chunks SET steps = ? WHERE series_id = ?", (steps.tobytes(), sid))


def test_a_damaged_tensor_step_index_is_restored_from_the_steps_array(store_uri, store_sql):
    run, rows = _tensor_run(store_uri)
    _set_index_step(store_sql, 7, 1000 + 7)
    where = f"run {run.id} key 'w'"
    differ = (
        "the steps of 1 row(s) differ between its index and the steps array (row 7: 1007 in "
        "the index, 7 in the array)"
    )
    with ss.open(store_uri) as store:
        assert _pairs(store.check()) == [(where, f"segment 0 chunk 0: {differ}")]
        assert _pairs(repair(store)) == [
            (
                f"{where} segment 0 chunk 0",
                f"restored the steps of 1 row(s) from the steps array ({differ})",
            )
        ]
        assert store.check() == []
        ts = store.run(run.id).tensor("w")
        assert ts.steps.tolist() == list(range(30))
        assert np.array_equal(ts.at(7), rows[7])


def test_a_damaged_steps_array_is_written_again_from_the_index(store_uri):
    run, _ = _tensor_run(store_uri)
    steps_file = _arrays(store_uri) / run.id / "w" / "steps" / "c" / "0"
    steps = np.frombuffer(steps_file.read_bytes(), "<i8").copy()
    steps[12] = -4
    steps_file.write_bytes(steps.tobytes())
    where = f"run {run.id} key 'w'"
    with ss.open(store_uri) as store:
        assert _pairs(store.check()) == [
            (
                where,
                "segment 0 chunk 0: the steps of 1 row(s) differ between its index and the steps "
                "array (row 12: 12 in the index, -4 in the array)",
            )
        ]
        assert _pairs(repair(store)) == [
            (
                f"{where} segment 0 chunk 0",
                "wrote the steps of 1 row(s) into the steps array again",
            )
        ]
        assert store.check() == []
    assert np.frombuffer(steps_file.read_bytes(), "<i8")[:30].tolist() == list(range(30))


def test_a_step_that_neither_copy_vouches_for_drops_its_row(store_uri, store_sql):
    """Index and steps array disagree and both run in order: the row's step is unknown."""
    run, rows = _tensor_run(store_uri)
    _set_index_step(store_sql, 7, 8)  # 6, 8, 8: still in order, as is 6, 7, 8
    with ss.open(store_uri) as store:
        (dropped, rebuilt) = repair(store)
        assert dropped.what.startswith("dropped 1 of its 30 rows (the steps of 1 row(s) differ")
        assert dropped.what.endswith("; steps lost: 8")
        assert rebuilt.what == "rebuilt the summary from its index (29 rows)"
        assert store.check() == []
        ts = store.run(run.id).tensor("w")
        assert ts.steps.tolist() == [s for s in range(30) if s != 7]
        assert np.array_equal(ts.at(8), rows[8])


@pytest.mark.parametrize("document", ["zarr.json", "s0/zarr.json", "steps/zarr.json"])
def test_a_garbage_zarr_json_is_found_and_written_again(store_uri, document):
    import zarr

    run, rows = _tensor_run(store_uri)
    group = _arrays(store_uri) / run.id / "w"
    damaged = group / document
    damaged.write_bytes(b"\x00garbage{")
    with ss.open(store_uri) as store:
        (problem,) = store.check()
        assert problem.where == f"run {run.id} key 'w'"
        assert problem.what == f"{damaged} is not JSON"
        assert _pairs(repair(store)) == [
            (
                f"run {run.id} key 'w'",
                f"wrote {damaged} again from the index ({damaged} is not JSON)",
            )
        ]
        assert store.check() == []
    opened = zarr.open_group(str(group), mode="r")
    assert opened["steps"][:].tolist() == list(range(30))
    assert np.array_equal(opened["s0"][:], np.stack(rows))


def test_a_zarr_json_describing_another_array_is_found(store_uri):
    run, _ = _tensor_run(store_uri)
    document = _arrays(store_uri) / run.id / "w" / "s0" / "zarr.json"
    content = json.loads(document.read_text())
    content["data_type"] = "int8"
    content["attributes"]["stepstore"]["first_row"] = "x"
    document.write_text(json.dumps(content))
    with ss.open(store_uri) as store:
        assert [p.what for p in store.check()] == [
            f"{document} does not describe segment 0 (data_type, first_row)"
        ]
        assert len(repair(store)) == 1
        assert store.check() == []
    assert json.loads(document.read_text())["data_type"] == "float64"


def test_reading_an_unrecorded_step_names_it(store_uri):
    run, _ = _tensor_run(store_uri, steps=3)
    with ss.open(store_uri) as store:
        ts = store.run(run.id).tensor("w")
        with pytest.raises(ss.NotFoundError, match=r"tensor 'w': step 5 was not recorded") as got:
            ts.at(5)
        assert isinstance(got.value, KeyError)
        with pytest.raises(KeyError, match="step 9"):
            ts[[1, 9]]


# -- damage that makes part of the store unreadable -------------------------------------------


def test_a_run_the_database_cannot_read_does_not_stop_check_or_repair(store_uri, store_sql):
    """A run whose tensor index is damaged (a value of the wrong type) is reported, and the
    other series and runs are still checked and repaired."""
    runs = []
    for _ in range(2):
        run = _init(store_uri, chunk_size=16)
        for i in range(32):
            run.log({"a": float(i), "w": np.arange(4.0) + i}, step=i)
        run.finish()
        runs.append(run)
    store_sql(
        "UPDATE tensor_segments SET shape = 'not json' WHERE series_id IN "
        "(SELECT id FROM series WHERE run_id = ?)",
        (runs[0].id,),
    )
    for run in runs:
        ((sid, data),) = store_sql(
            "SELECT c.series_id, c.data FROM chunks c JOIN series s ON s.id = c.series_id "
            "WHERE s.run_id = ? AND c.seq = 0",
            (run.id,),
        )
        damaged = bytearray(bytes(data))
        damaged[-3] ^= 0xFF
        store_sql(
            "UPDATE chunks SET data = ? WHERE series_id = ? AND seq = 0", (bytes(damaged), sid)
        )
    with ss.open(store_uri) as store:
        problems = store.check()
        assert [p.where for p in problems] == [
            *sorted(f"run {r.id} key 'a' chunk 0" for r in runs),
            f"run {runs[0].id} key 'w'",
        ]
        assert "column shape holds 'not json', expected a JSON list of sizes" in problems[-1].what
        assert "reading the tensor index of series" in problems[-1].what
        assert [p.where for p in repair(store)] == [
            f"run {r.id} key 'a'{suffix}" for r in runs for suffix in (" chunk 0", "")
        ]
        assert [p.where for p in store.check()] == [f"run {runs[0].id} key 'w'"]
        with pytest.raises(ss.StoreError, match="column shape"):
            store.run(runs[0].id).tensor("w")
        assert store.run(runs[1].id).tensor("w").steps.tolist() == list(range(32))


def test_database_errors_reach_the_caller_as_store_errors(store_uri, store_sql):
    run = _init(store_uri)
    run.log({"img": ss.Image(np.zeros((2, 2), np.uint8)), "w": np.arange(3.0)}, step=0)
    run.log_record("notes", {"text": "hi"}, step=0)
    run.finish()
    store_sql("UPDATE records SET data = ?", ("[1, 2",))
    with ss.open(store_uri) as store:
        view = store.run(run.id)
        with pytest.raises(ss.StoreError, match=r"record 'notes' step 0 .* not a JSON object"):
            view.records("notes")
        store_sql("DROP TABLE images", ())
        with pytest.raises(ss.StoreError, match=r"reading the images of series \d+") as got:
            view.images("img")
        assert "images" in str(got.value)
        assert store.uri in str(got.value)
        (problem, *_) = [p for p in store.check() if p.where == f"run {run.id} key 'img'"]
        assert "reading the images of series" in problem.what


def test_a_store_from_before_row_positions_is_migrated(store_uri, store_sql):
    """Tensor index rows written before ``positions`` existed read back as the chunk's first
    rows, and repair can then drop rows from them."""
    run, rows = _tensor_run(store_uri)
    with ss.open(store_uri) as store:
        version = store.backend.schema_version
    store_sql('ALTER TABLE tensor_chunks DROP COLUMN "positions"', ())
    before_positions = version - 2  # the events table came after positions
    store_sql(
        "UPDATE meta SET value = ? WHERE \"key\" = 'schema_version'", (str(before_positions),)
    )
    chunk = _chunk_file(_arrays(store_uri), run.id, "w")
    with open(chunk, "r+b") as handle:
        handle.seek(_row_offset(5))
        handle.write(b"\xff" * 8)
    with ss.open(store_uri) as store:  # opening migrates
        assert store.backend.schema_version == version
        assert np.array_equal(store.run(run.id).tensor("w")[6:30], np.stack(rows[6:]))
        (dropped, _) = repair(store)
        assert dropped.what.endswith("steps lost: 5")
        ts = store.run(run.id).tensor("w")
        assert ts.steps.tolist() == [s for s in range(30) if s != 5]
        assert np.array_equal(ts[:], np.stack(rows[:5] + rows[6:]))


def test_a_run_resumed_after_rows_were_dropped_checks_clean(store_uri):
    """The resumed run's new segment numbers its rows from the rows indexed, so in the
    steps array it overlaps rows of the segment before: neither is reported as damage."""
    run, rows = _tensor_run(store_uri)
    chunk = _chunk_file(_arrays(store_uri), run.id, "w")
    with open(chunk, "r+b") as handle:
        handle.seek(_row_offset(3))
        handle.write(b"\xff" * 8)
    with ss.open(store_uri) as store:
        assert len(repair(store)) == 2
    resumed = _init(store_uri, resume=run.id)
    more = _rows(5, seed=9)
    for step, row in enumerate(more, start=30):
        resumed.log({"w": row}, step=step)
    resumed.finish()
    with ss.open(store_uri) as store:
        assert store.check() == []
        assert repair(store) == []
        ts = store.run(run.id).tensor("w")
        assert ts.steps.tolist() == [s for s in range(35) if s != 3]
        assert np.array_equal(ts[:], np.stack(rows[:3] + rows[4:] + more))
