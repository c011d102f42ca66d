"""SIGKILL a process that logs scalars and tensors at a random moment, many times over.

Every host scalar whose ``log()`` returned must be in the store, every tensor logged more
than ``flush_interval`` (plus a margin for a loaded machine) before the kill must be there
too, and the store must pass ``check()`` once it has been opened (which recovers the run).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import stepstore as ss

FLUSH_INTERVAL = 0.2
#: Besides the flush interval, how long a tensor may take to reach the store (loaded CI).
MARGIN = 0.5
TRIALS = 12
ROW = 64

#: Logs ``loss``/``acc`` every step and a raw tensor ``w`` (random rows, written in place)
#: every 4th step; after each ``log()`` returns it prints the step and the wall-clock time
#: the call was made. Compressed tensors are left out here: a kill in one short window
#: damages them (see ``test_kill_between_array_write_and_index_commit``), which would make
#: this random test flaky rather than deterministic.
CHILD = f"""
import sys, time
import numpy as np
import stepstore as ss

run = ss.init("kill", store=sys.argv[1], flush_interval={FLUSH_INTERVAL}, chunk_size=128)
print("run", run.id, flush=True)
i = 0
while True:
    values = {{"loss": float(i), "acc": -float(i)}}
    if i % 4 == 0:
        values["w"] = np.random.default_rng(i).standard_normal({ROW})
    start = time.time()
    run.log(values, step=i)
    print(i, start, flush=True)
    i += 1
    time.sleep(0.0005)
"""


def _start(store: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


class _Lines:
    """Collects a child's stdout lines on a thread, so the test never blocks on a read."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.first = threading.Event()
        self._proc = proc
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self.lines.append(line)
            if line.startswith("0 "):
                self.first.set()

    def join(self) -> None:
        self._thread.join(timeout=30)


@pytest.mark.parametrize("trial", range(TRIALS))
def test_sigkill_at_a_random_moment_loses_nothing_promised(tmp_path: Path, trial: int) -> None:
    store = tmp_path / "store"
    proc = _start(store)
    lines = _Lines(proc)
    try:
        assert lines.first.wait(60), "the child never logged its first step"
        time.sleep(random.Random(trial).uniform(0.05, 1.2))
    finally:
        killed_at = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        lines.join()
        assert proc.stdout is not None and proc.stderr is not None
        stderr = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    assert not stderr.strip(), stderr
    run_id = lines.lines[0].split()[1]
    logged: list[tuple[int, float]] = []
    for line in lines.lines[1:]:
        parts = line.split()
        if len(parts) == 2 and line.endswith("\n"):  # the last line may be torn by the kill
            logged.append((int(parts[0]), float(parts[1])))
    assert logged, "nothing was logged before the kill"
    last_returned = logged[-1][0]

    store_view = ss.open(store)  # recovers the orphaned journal
    view = store_view.run(run_id)
    assert view.status == "crashed"
    for key, sign in (("loss", 1.0), ("acc", -1.0)):
        points = view.scalars(key)
        n = len(points)
        assert n > last_returned, f"{key}: {n} points, but log() returned for step {last_returned}"
        assert points["step"].tolist() == list(range(n))
        assert points["value"].tolist() == [sign * i for i in range(n)]

    old_enough = [i for i, t in logged if i % 4 == 0 and t < killed_at - FLUSH_INTERVAL - MARGIN]
    if old_enough:
        key = "w"
        series = view.tensor(key)
        steps = series.steps.tolist()
        assert steps == list(range(0, 4 * len(steps), 4)), f"{key}: steps are not a prefix"
        missing = sorted(set(old_enough) - set(steps))
        assert not missing, f"{key}: steps {missing[:5]} logged long before the kill are lost"
        picked = old_enough[:: max(1, len(old_enough) // 8)]
        for i in picked:
            assert np.array_equal(series.at(i), np.random.default_rng(i).standard_normal(ROW))
    assert store_view.check() == []
    assert not list((store / "journal").glob("*.journal"))
    store_view.close()


#: Logs 10 rows of ``w`` and flushes them into the store, then is killed by SIGKILL at the
#: worst moment of the next flush: after the array files are written, before the index rows
#: pointing at them are committed. ``argv[2]`` picks raw (in place) or zstd chunks.
WINDOW = """
import os, signal, sys
import numpy as np
import stepstore as ss
from stepstore.backends.sqlite import SQLiteBackend


def row(i):
    if sys.argv[2] == "raw":
        return np.random.default_rng(i).standard_normal(64)
    return np.full(64, float(i))


run = ss.init("window", store=sys.argv[1], flush_interval=60)
print(run.id, flush=True)
for i in range(10):
    run.log({"w": row(i)}, step=i)
run.flush()
SQLiteBackend.commit_arrays = lambda self, batch: os.kill(os.getpid(), signal.SIGKILL)
for i in range(10, 20):
    run.log({"w": row(i)}, step=i)
run.flush()
"""


@pytest.mark.parametrize(
    "codec",
    ["raw", "zstd"],
)
def test_kill_between_array_write_and_index_commit(tmp_path: Path, codec: str) -> None:
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    done = subprocess.run(
        [sys.executable, "-c", WINDOW, str(store), codec],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    run_id = done.stdout.split()[0]
    with ss.open(store) as opened:
        assert opened.check() == []
        series = opened.run(run_id).tensor("w")
        assert series.steps.tolist()[:10] == list(range(10))
        for i in range(10):
            expected = np.random.default_rng(i).standard_normal(ROW) if codec == "raw" else i
            assert np.array_equal(series.at(i), np.broadcast_to(expected, (ROW,)))
