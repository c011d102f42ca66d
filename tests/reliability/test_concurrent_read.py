"""A reader querying while another process writes sees consistent, growing data."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import stepstore as ss

#: Logs ``loss`` every step and a 64-float tensor ``w`` every 4th step for ``argv[2]``
#: seconds, then finishes and prints the number of steps. ``argv[3]`` picks the tensor:
#: ``raw`` (random rows, written in place) or ``zstd`` (constant rows, compressed chunks).
WRITER = """
import sys, time
import numpy as np
import stepstore as ss

def row(i):
    if sys.argv[3] == "raw":
        return np.random.default_rng(i).standard_normal(64)
    return np.full(64, float(i))


run = ss.init("concurrent", store=sys.argv[1], flush_interval=0.05, chunk_size=256)
print(run.id, flush=True)
stop = time.monotonic() + float(sys.argv[2])
i = 0
while time.monotonic() < stop:
    values = {"loss": float(i)}
    if i % 4 == 0:
        values["w"] = row(i)
    run.log(values, step=i)
    i += 1
    if i % 50 == 0:
        time.sleep(0.002)
run.finish()
print(i, flush=True)
"""


def _row(i: int, codec: str) -> np.ndarray:
    if codec == "raw":
        return np.random.default_rng(i).standard_normal(64)
    return np.full(64, float(i))


@pytest.mark.parametrize(
    "codec",
    ["raw", "zstd"],
)
def test_reader_sees_consistent_growing_data_while_a_writer_writes(
    tmp_path: Path, codec: str
) -> None:
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(store), "3", codec],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert writer.stdout is not None
        run_id = writer.stdout.readline().strip()
        assert run_id, writer.stderr.read() if writer.stderr else ""
        reads, last_points, last_rows, grew = 0, 0, 0, 0
        with ss.open(store) as reader:
            while writer.poll() is None:
                view = reader.run(run_id)
                if "loss" not in view.keys():
                    continue
                counted = view.summary["loss"]["count"]
                points = view.scalars("loss")
                n = len(points)
                assert points["step"].tolist() == list(range(n)), "steps are not a prefix"
                assert points["value"].tolist() == [float(i) for i in range(n)]
                assert n >= last_points, f"points went from {last_points} down to {n}"
                assert counted <= n, f"summary counts {counted} points, the chunks hold {n}"
                if "w" in view.keys():
                    tensor = view.tensor("w")
                    steps = tensor.steps.tolist()
                    assert steps == list(range(0, 4 * len(steps), 4))
                    assert len(steps) >= last_rows
                    if steps:
                        assert np.array_equal(tensor.at(steps[-1]), _row(steps[-1], codec))
                    last_rows = len(steps)
                grew += n > last_points
                last_points = n
                reads += 1
            assert writer.wait(timeout=120) == 0, writer.stderr.read() if writer.stderr else ""
            total = int(writer.stdout.read().split()[-1])
            view = reader.run(run_id)
            assert view.status == "finished"
            assert view.scalars("loss")["value"].tolist() == [float(i) for i in range(total)]
            assert view.tensor("w").steps.tolist() == list(range(0, total, 4))
            assert reader.check() == []
        assert reads >= 10 and grew >= 3, f"only {reads} reads, {grew} saw growth"
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.wait(timeout=30)
        for stream in (writer.stdout, writer.stderr):
            if stream is not None:
                stream.close()


class _FlushBetweenReads:
    """A SQLite connection that lets ``between`` run once, right after the first read of a
    tensor index table: a writer's flush landing between the two reads of ``tensor_index``."""

    def __init__(self, db: Any, between: Callable[[], None]) -> None:
        self._db, self._between, self._armed = db, between, True

    def execute(self, sql: str, *args: Any) -> Any:
        cursor = self._db.execute(sql, *args)
        if "FROM tensor_" not in sql or not self._armed:
            return cursor
        rows = cursor.fetchall()  # this read is complete before the flush
        self._armed = False
        self._between()
        return iter(rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def test_a_flush_between_the_index_reads_never_shows_a_chunk_without_its_segment(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    run = ss.init("concurrent", store=store, flush_interval=60.0)
    run.log({"w": np.arange(4, dtype=np.float32)}, step=0)
    run.flush()
    reader = ss.open(store)
    view = reader.run(run.id)

    def flush_a_new_segment() -> None:  # a shape change starts segment 1
        run.log({"w": np.arange(5, dtype=np.float32)}, step=1)
        run.flush()

    backend = reader.backend
    backend._db = _FlushBetweenReads(backend._db, flush_a_new_segment)  # white box: SQLite
    series = view.tensor("w")
    assert series.steps.tolist() == [0]
    assert series.dtype == np.float32 and series.shape == (1, 4)
    assert series.at(0).tolist() == [0.0, 1.0, 2.0, 3.0]
    backend._db = backend._db._db
    run.finish()
    later = ss.open(store).run(run.id).tensor("w")
    assert later.steps.tolist() == [0, 1] and later.shape == (2, None)
