"""``stepstore.repair`` and ``stepstore check --repair``: damage is reported where it is, the
rest stays readable, and repair drops only what is damaged."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import stepstore as ss
from stepstore.cli import main
from stepstore.query.views import Store
from stepstore.repair import repair

ROW = 64  # floats per tensor row: 256 bytes, random so they are stored raw (in place)


def _chunk_file(store: Path, run_id: str, key: str, chunk: int = 0) -> Path:
    return store / "arrays" / run_id / key / "s0" / "c" / str(chunk) / "0"


def _flip_scalar_chunk(store: Path, key: str, seq: int) -> None:
    with sqlite3.connect(store / "stepstore.db") as db:
        (sid,) = db.execute("SELECT id FROM series WHERE key = ?", (key,)).fetchone()
        (data,) = db.execute(
            "SELECT data FROM chunks WHERE series_id = ? AND seq = ?", (sid, seq)
        ).fetchone()
        damaged = bytearray(data)
        damaged[-3] ^= 0xFF
        db.execute(
            "UPDATE chunks SET data = ? WHERE series_id = ? AND seq = ?",
            (bytes(damaged), sid, seq),
        )
    db.close()


def _rows(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(ROW) for _ in range(n)]


def test_damaged_scalar_chunk_is_reported_then_repaired(new_run, store_path):
    run = new_run(chunk_size=16)
    for i in range(64):
        run.log({"a": float(i), "b": float(-i)})
    run.finish()
    _flip_scalar_chunk(store_path, "a", 3)  # the last chunk: the summary's last value changes
    store = ss.open(store_path)
    where = f"run {run.id} key 'a' chunk 3"
    assert [(p.where, p.what) for p in store.check()] == [(where, "checksum mismatch")]
    view = store.run(run.id)
    assert view.scalars("a", steps=(0, 47))["value"].tolist() == [float(i) for i in range(48)]
    assert view.scalars("b")["value"].tolist() == [float(-i) for i in range(64)]

    repaired = repair(store)
    assert [(p.where, p.what) for p in repaired] == [
        (where, "deleted the chunk (checksum mismatch); 16 point(s) lost"),
        (f"run {run.id} key 'a'", "rebuilt the summary from its chunks (48 points)"),
    ]
    assert store.check() == []
    assert repair(store) == []  # nothing left to do
    view = ss.open(store_path).run(run.id)
    assert view.scalars("a")["value"].tolist() == [float(i) for i in range(48)]
    summary = view.summary["a"]
    assert (summary["count"], summary["last"], summary["min"], summary["max"]) == (48, 47, 0, 47)
    assert (summary["first_step"], summary["last_step"]) == (0, 47)
    assert view.summary["b"]["count"] == 64


def test_undecodable_scalar_chunk_is_deleted(new_run, store_path):
    run = new_run(chunk_size=16)
    for i in range(48):
        run.log({"a": float("nan") if i == 3 else float(i)})
    run.finish()
    with sqlite3.connect(store_path / "stepstore.db") as db:
        bad = b"SSCK\x01\x01\x10\x00\x00\x00garbage"
        db.execute(
            "UPDATE chunks SET data = ?, checksum = ? WHERE seq = 1",
            (bad, ss.series.chunk.checksum(bad)),
        )
    db.close()
    store = ss.open(store_path)
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
    assert values[4:] == [float(i) for i in [*range(4, 16), *range(32, 48)]]


def test_corrupted_tensor_row_is_cut_back_to_the_intact_rows(new_run, store_path):
    run = new_run()
    rows = _rows(30)
    for step, row in enumerate(rows):
        run.log({"w": row, "loss": float(step)}, step=step)
    run.finish()
    chunk = _chunk_file(store_path, run.id, "w")
    with open(chunk, "r+b") as handle:  # damage row 20 (step 20)
        handle.seek(20 * ROW * 8 + 7)
        handle.write(b"\x99")
    store = ss.open(store_path)
    (problem,) = store.check()
    assert problem.where == f"run {run.id} key 'w'"
    assert f"checksum mismatch in {chunk} (row 20, step 20)" in problem.what
    ts = store.run(run.id).tensor("w")
    assert np.array_equal(ts[0:20], np.stack(rows[:20]))  # the rest stays readable
    assert len(store.run(run.id).scalars("loss")) == 30

    (cut, rebuilt) = repair(store)
    assert cut.where == f"run {run.id} key 'w' segment 0 chunk 0"
    assert (rebuilt.where, rebuilt.what) == (
        f"run {run.id} key 'w'",
        "rebuilt the summary from its index (20 rows)",
    )
    assert cut.what == (
        f"cut the chunk to its 20 intact row(s) (checksum mismatch in {chunk} row 20); "
        "10 row(s) lost (steps 20 and later)"
    )
    assert store.check() == []
    view = ss.open(store_path).run(run.id)
    ts = view.tensor("w")
    assert ts.steps.tolist() == list(range(20))
    assert np.array_equal(ts[:], np.stack(rows[:20]))
    assert (view.summary["w"]["count"], view.summary["w"]["last_step"]) == (20, 19)


def test_torn_tensor_file_after_a_machine_crash(new_run, store_path):
    """A chunk file shorter than its index claims (size not made durable) is cut and padded."""
    run = new_run()
    rows = _rows(12, seed=1)
    for step, row in enumerate(rows):
        run.log({"w": row}, step=step)
    run.finish()
    chunk = _chunk_file(store_path, run.id, "w")
    full = chunk.stat().st_size
    with open(chunk, "r+b") as handle:
        handle.truncate(9 * ROW * 8 + 100)  # rows 0-8 whole, row 9 torn, rows 10-11 gone
    store = ss.open(store_path)
    (cut, _) = repair(store)
    assert cut.what.startswith(f"cut the chunk to its 9 intact row(s) (chunk file {chunk} ends")
    assert cut.what.endswith("3 row(s) lost (steps 9 and later)")
    assert chunk.stat().st_size == full
    assert store.check() == []
    ts = ss.open(store_path).run(run.id).tensor("w")
    assert np.array_equal(ts[:], np.stack(rows[:9]))


def test_missing_tensor_file_and_damaged_compressed_chunk_are_dropped(new_run, store_path):
    run = new_run()
    rows = _rows(5, seed=2)
    for step in range(10):
        run.log({"z": np.zeros((16, 16), np.float32) + step}, step=step)
        if step < 5:
            run.log({"gone": rows[step]}, step=step)
    run.finish()
    _chunk_file(store_path, run.id, "gone").unlink()
    packed = store_path / "arrays" / run.id / "z" / "s0" / "c" / "0" / "0" / "0"
    packed.write_bytes(b"not a zstd frame" * 8)
    store = ss.open(store_path)
    repaired = repair(store)
    assert [(p.where, p.what) for p in repaired[:2]] == [
        (
            f"run {run.id} key 'gone' segment 0 chunk 0",
            f"dropped the chunk (chunk file {_chunk_file(store_path, run.id, 'gone')} is "
            "missing); 5 row(s) lost",
        ),
        (f"run {run.id} key 'gone'", "rebuilt the summary from its index (0 rows)"),
    ]
    assert repaired[2].where == f"run {run.id} key 'z' segment 0 chunk 0"
    assert repaired[2].what.startswith(f"dropped the chunk (chunk file {packed} does not ")
    assert repaired[2].what.endswith("; 10 row(s) lost")
    assert (repaired[3].where, repaired[3].what) == (
        f"run {run.id} key 'z'",
        "rebuilt the summary from its index (0 rows)",
    )
    assert store.check() == []
    view = ss.open(store_path).run(run.id)
    assert len(view.tensor("z")) == 0
    assert view.summary["gone"]["count"] == 0


def test_damaged_images_and_artifacts_leave_the_index(new_run, store_path, tmp_path):
    run = new_run()
    for step in range(3):
        run.log({"img": ss.Image(np.full((4, 4), 40 * step, np.uint8))}, step=step)
    source = tmp_path / "notes.txt"
    source.write_text("hello")
    run.log_artifact(source)
    run.log_artifact(source, name="kept.txt")
    run.finish()
    image = store_path / "arrays" / run.id / "img" / "1-0.png"
    image.write_bytes(image.read_bytes()[:-4] + b"xxxx")
    (store_path / "arrays" / run.id / "artifacts" / "notes.txt").write_text("hellO")
    store = ss.open(store_path)
    assert len(store.check()) == 2
    repaired = repair(store)
    assert [p.where for p in repaired] == [
        f"run {run.id} key 'img' image step 1 position 0",
        f"run {run.id} key 'img'",
        f"run {run.id} artifact 'notes.txt'",
    ]
    assert store.check() == []
    view = ss.open(store_path).run(run.id)
    assert [i.step for i in view.images("img")] == [0, 2]
    assert list(view.artifacts()) == ["kept.txt"]
    assert view.summary["img"]["count"] == 2


def test_stale_summary_is_rebuilt(new_run, store_path):
    run = new_run()
    for i in range(10):
        run.log({"a": float(i)})
    run.finish()
    with sqlite3.connect(store_path / "stepstore.db") as db:
        db.execute("UPDATE series SET count = 3, max = 99 WHERE key = 'a'")
    db.close()
    store = ss.open(store_path)
    assert [p.what for p in repair(store)] == ["rebuilt the summary from its chunks (10 points)"]
    assert store.run(run.id).summary["a"]["max"] == 9.0


def test_a_run_being_recorded_is_left_alone(new_run, store_path):
    run = new_run(chunk_size=16)
    for i in range(40):
        run.log({"a": float(i)})
    run.flush()
    _flip_scalar_chunk(store_path, "a", 0)
    store = ss.open(store_path)
    assert repair(store) == []
    assert len(store.check()) == 1
    store.close()


def test_repair_of_a_server_store_is_refused():
    class Server:
        uri = "postgresql://db/x"

    with pytest.raises(ss.StepstoreError, match=r"only the embedded \(SQLite\) store can be"):
        repair(Store(Server()))  # type: ignore[arg-type]


def test_cli_check_repair(new_run, store_path):
    run = new_run(chunk_size=16)
    for i in range(40):
        run.log({"a": float(i)})
    run.finish()
    _flip_scalar_chunk(store_path, "a", 0)
    runner = CliRunner()
    before = runner.invoke(main, ["check", "--store", str(store_path)])
    assert before.exit_code == 1
    fixed = runner.invoke(main, ["check", "--repair", "--store", str(store_path)])
    assert fixed.exit_code == 0, fixed.output
    assert fixed.stdout.splitlines() == [
        f"repaired run {run.id} key 'a' chunk 0: deleted the chunk (checksum mismatch); "
        "16 point(s) lost",
        f"repaired run {run.id} key 'a': rebuilt the summary from its chunks (24 points)",
        f"2 repair(s) in {store_path}",
        "ok",
    ]
    again = runner.invoke(main, ["check", "--repair", "--json", "--store", str(store_path)])
    assert again.exit_code == 0
    assert json.loads(again.stdout) == {"ok": True, "problems": [], "repaired": []}
    assert "--repair" in runner.invoke(main, ["check", "--help"]).stdout
