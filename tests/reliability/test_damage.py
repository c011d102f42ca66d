"""Damage to the embedded store's SQLite file: random byte flips, then ``check``,
``check --repair`` and reads of every run. Never an exception that is not a
``StepstoreError``, and every run whose rows the flip did not touch reads back exactly,
is not reported by ``check`` and is not touched by the repair. Also: a full disk while
opening a store that has a run to recover gives a ``StoreError``.

Which runs a flip touched is worked out from the file itself, read with a plain
``sqlite3`` connection: the rows of each table before and after the flip are compared and
each changed row is attributed to its run. A flip in an index, in the schema or in the
``meta`` table, or one that makes a table unreadable, may affect any run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import stepstore as ss
from stepstore.cli import main
from stepstore.repair import repair

from ..conftest import run_python
from .test_full_disk import small_disk

TRIALS = 150
FLIP = 8
#: Tables whose rows belong to a run, with the column that says which (``series_id``:
#: through the series table).
OWNERS = {
    "runs": "id",
    "run_params": "run_id",
    "run_tags": "run_id",
    "run_ranks": "run_id",
    "artifacts": "run_id",
    "series": "run_id",
    "chunks": "series_id",
    "tensor_chunks": "series_id",
    "tensor_segments": "series_id",
    "records": "series_id",
    "images": "series_id",
}


def _record_runs(store: Path) -> list[str]:
    """Three runs with scalars in several chunks, a raw tensor, images, records and an
    artifact; returns their ids."""
    ids = []
    for r in range(3):
        run = ss.init(
            "damage",
            store=store,
            flush_interval=0.05,
            chunk_size=32,
            params={"lr": 0.1 * (r + 1), "model": {"width": 8 * (r + 1)}},
            tags=["flips", f"r{r}"],
        )
        rng = np.random.default_rng(r)
        for step in range(100):
            values: dict[str, Any] = {"loss": 1.0 / (step + 1 + r), "acc": step / 100}
            if step % 10 == 0:
                values["w"] = rng.standard_normal(16)
            if step % 25 == 0:
                values["img"] = ss.Image(rng.integers(0, 255, (4, 4), np.uint8), caption=f"c{step}")
            run.log(values, step=step, epoch=step // 50)
            if step % 30 == 0:
                run.log_record("notes", {"at": step, "text": f"run {r}"}, step=step)
        notes = store.parent / f"notes-{r}.txt"
        notes.write_text(f"artifact of run {r}")
        run.log_artifact(notes)
        run.finish()
        ids.append(run.id)
    return ids


def _read_run(store: ss.Store, run_id: str) -> dict[str, Any]:
    """Everything stepstore reads back of one run, in comparable form."""
    view = store.run(run_id)
    ts = view.tensor("w")
    return {
        "meta": (view.name, view.project, view.status, view.params, view.tags),
        "summary": json.dumps(view.summary, sort_keys=True, default=str),
        "scalars": view.scalars(),
        "thinned": view.scalars(max_points=8),
        "epochs": view.scalars("loss", epochs=(1, 1)),
        "tensor": (ts.steps.tolist(), ts[:].tolist(), repr(ts)),
        "images": [(i.step, i.caption, i.array.tolist()) for i in view.images("img")],
        "records": view.records("notes"),
        "artifacts": {name: view.artifact(name) for name in view.artifacts()},
    }


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    for name, value in a.items():
        if isinstance(value, pd.DataFrame):
            try:
                pd.testing.assert_frame_equal(value, b[name])
            except AssertionError:
                return False
        elif value != b[name]:
            return False
    return True


@dataclass(frozen=True)
class Reference:
    """The undamaged store: its files, its runs read back, its rows and page owners."""

    store: Path
    runs: dict[str, dict[str, Any]]
    rows: dict[str, dict[int, tuple[Any, ...]]]
    series_runs: dict[int, str]
    page_owner: dict[int, str]
    page_size: int


def _dump(db: Path) -> dict[str, dict[int, tuple[Any, ...]]]:
    """Every row of every table that belongs to a run, by rowid, text as bytes."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)) as con:
        con.text_factory = bytes
        return {
            table: {row[0]: row[1:] for row in con.execute(f"SELECT rowid, * FROM {table}")}
            for table in OWNERS
        }


def _column(db: Path, table: str, name: str) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)) as con:
        names = [row[1] for row in con.execute(f"PRAGMA table_info({table})")]
    return names.index(name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    store = tmp_path_factory.mktemp("damage") / "store"
    ids = _record_runs(store)
    with ss.open(store) as opened:
        runs = {run_id: _read_run(opened, run_id) for run_id in ids}
        assert opened.check() == []
    db = store / "stepstore.db"
    assert (
        not (store / "stepstore.db-wal").exists() or not (store / "stepstore.db-wal").stat().st_size
    )
    with contextlib.closing(sqlite3.connect(db)) as con:
        owners = dict(con.execute("SELECT pageno, name FROM dbstat"))
        (page_size,) = con.execute("PRAGMA page_size").fetchone()
        series_runs = dict(con.execute("SELECT id, run_id FROM series"))
    return Reference(store, runs, _dump(db), series_runs, owners, page_size)


def _owners(reference: Reference, db: Path, table: str, row: tuple[Any, ...]) -> set[str]:
    """The runs a row of ``table`` (as dumped, text as bytes) belongs to."""
    value = row[_column(db, table, OWNERS[table])]
    if OWNERS[table] == "series_id":
        return {reference.series_runs[value]} if value in reference.series_runs else set()
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return {text} if text in reference.runs else set()


def _hit_runs(reference: Reference, db: Path, offset: int) -> set[str]:
    """The runs whose rows the flip at ``offset`` may have changed."""
    everything = set(reference.runs)
    pages = {offset // reference.page_size + 1, (offset + FLIP - 1) // reference.page_size + 1}
    tables = {reference.page_owner.get(page, "<free>") for page in pages}
    if tables - set(OWNERS) - {"<free>"}:
        return everything  # an index, the schema or the meta table
    try:
        after = _dump(db)
    except sqlite3.Error:
        return everything
    hit: set[str] = set()
    for table, rows in reference.rows.items():
        changed = rows.keys() ^ after[table].keys()
        changed |= {k for k in rows.keys() & after[table].keys() if rows[k] != after[table][k]}
        for rowid in changed:
            for dumped in (rows.get(rowid), after[table].get(rowid)):
                if dumped is not None:
                    hit |= _owners(reference, db, table, dumped)
    return hit


def _flip(reference: Reference, store: Path, rng: random.Random) -> int:
    """Overwrite ``FLIP`` random bytes of the SQLite file past its header, at an offset
    whose bytes are not all zero (not empty space); return the offset."""
    db = store / "stepstore.db"
    data = bytearray(db.read_bytes())
    while True:
        offset = rng.randrange(100, len(data) - FLIP)
        if any(data[offset : offset + FLIP]):
            break
    data[offset : offset + FLIP] = rng.randbytes(FLIP)
    db.write_bytes(bytes(data))
    return offset


@contextlib.contextmanager
def _opened(store: Path) -> Iterator[ss.Store | None]:
    """The store opened, or None when it cannot be (which must be a StepstoreError)."""
    try:
        opened = ss.open(store)
    except ss.StepstoreError:
        yield None
        return
    with opened:
        yield opened


def _read_or_fail(store: ss.Store, run_id: str) -> dict[str, Any] | None:
    """The run read back, or None when a StepstoreError says it cannot be."""
    try:
        return _read_run(store, run_id)
    except ss.StepstoreError:
        return None


def _trial(reference: Reference, work: Path, seed: int) -> dict[str, Any]:
    """One flip, then check, repair and reads; returns what happened."""
    store = work / f"trial-{seed}"
    shutil.copytree(reference.store, store)
    offset = _flip(reference, store, random.Random(seed))
    hit = _hit_runs(reference, store / "stepstore.db", offset)
    intact = set(reference.runs) - hit
    outcome: dict[str, Any] = {"offset": offset, "hit": len(hit), "opened": True}
    with _opened(store) as opened:
        if opened is None:
            outcome["opened"] = False
            assert not intact, (
                f"seed {seed}: the store does not open, yet runs {intact} were not hit"
            )
            return outcome
        problems = opened.check()
        outcome["problems"] = len(problems)
        assert not [p for p in problems for r in intact if r in p.where], (seed, problems)
        repaired = repair(opened)
        outcome["repairs"] = len(repaired)
        assert not [p for p in repaired for r in intact if r in p.where], (seed, repaired)
        opened.check()
    with _opened(store) as opened:
        assert opened is not None
        for run_id in reference.runs:
            read = _read_or_fail(opened, run_id)
            if run_id in intact:
                assert read is not None and _same(reference.runs[run_id], read), (seed, run_id)
    if seed % 10 == 0:
        result = CliRunner().invoke(main, ["check", "--repair", "--json", "--store", str(store)])
        assert result.exit_code in (0, 1) and not isinstance(result.exception, Exception), (
            seed,
            result.output,
        )
    shutil.rmtree(store)
    return outcome


@pytest.mark.slow
def test_byte_flips_in_the_sqlite_file(reference: Reference, tmp_path: Path) -> None:
    outcomes = [_trial(reference, tmp_path, seed) for seed in range(TRIALS)]
    opened = [o for o in outcomes if o["opened"]]
    # the flips must exercise the paths this test is about, not just empty space
    assert sum(o["hit"] > 0 for o in opened) >= TRIALS // 5
    assert sum(o["hit"] < len(reference.runs) for o in outcomes) >= TRIALS // 2
    assert sum(o["repairs"] > 0 for o in opened) >= 5
    assert len(opened) < TRIALS  # some flips leave the schema unreadable


def test_image_paths_that_are_not_utf8(reference: Reference, tmp_path: Path) -> None:
    """The case from the field: bytes of an image path that SQLite cannot hand back as text."""
    store = tmp_path / "store"
    shutil.copytree(reference.store, store)
    first, *others = reference.runs
    with contextlib.closing(sqlite3.connect(store / "stepstore.db")) as con:
        con.execute(
            "UPDATE images SET path = CAST(X'80ff2f78' AS TEXT) WHERE series_id IN "
            "(SELECT id FROM series WHERE run_id = ?)",
            (first,),
        )
        con.commit()
    with ss.open(store) as opened:
        with pytest.raises(ss.StoreError, match=r"stepstore\.db: reading the images of series"):
            opened.run(first).images("img")
        problems = opened.check()
        assert [p.where for p in problems] == [f"run {first} key 'img'"]
        assert "Could not decode to UTF-8 column 'path'" in problems[0].what
        assert repair(opened) == []
        for run_id in others:
            assert _same(reference.runs[run_id], _read_run(opened, run_id))


#: Logs 2000 points and dies without flushing them: its journal is left to recover.
ORPHAN = """
import os, sys
import stepstore as ss

run = ss.init(
    "disk", store=sys.argv[1], flush_interval=600, chunk_size=256, journal_slots=4096
)
for i in range(2000):
    run.log({"loss": float(i)}, step=i)
print(run.id)
os._exit(0)
"""


def _fill(disk: Path) -> Path:
    """Fill the filesystem of ``disk`` with a file; return it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\xa5" * 4096)
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_while_recovering_on_open_gives_a_store_error(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "3m") as disk:
        store = disk / "store"
        done = run_python(ORPHAN, str(store))
        assert done.returncode == 0, done.stderr
        run_id = done.stdout.split()[-1]
        filler = _fill(disk)
        for opening in (lambda: ss.open(store), lambda: ss.init("disk", store=store)):
            with pytest.raises(ss.StoreError, match="full") as got:
                opening()
            assert str(store) in str(got.value)
        os.unlink(filler)
        with ss.open(store) as opened:
            values = opened.run(run_id).scalars("loss")["value"].tolist()
            assert values == [float(i) for i in range(2000)]
            assert opened.check() == []
    assert not math.isnan(values[0])


def test_a_journal_cut_short_gives_a_store_error_naming_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    done = run_python(ORPHAN, str(store))
    assert done.returncode == 0, done.stderr
    (journal,) = (store / "journal").glob("*.journal")
    journal.write_bytes(journal.read_bytes()[:10])
    with pytest.raises(ss.StoreError, match="cannot recover the points of this journal") as got:
        ss.open(store)
    assert str(journal) in str(got.value)
    assert journal.exists()  # kept for a later attempt
