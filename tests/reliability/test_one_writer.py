"""A run (per rank) has one live writer: resuming a run that another process still records
is refused with the process named; a run whose process died resumes as before."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import stepstore as ss
from stepstore.backends.sqlite import DB_NAME

from ..conftest import FAST

#: Records ``loss`` at every step until killed, printing the run id once it has started.
RECORDER = """
import sys, time
import stepstore as ss
run = ss.init("one", store=sys.argv[1], flush_interval=0.05)
print(run.id, flush=True)
step = 0
while True:
    run.log({"loss": float(step)})
    step += 1
    time.sleep(0.001)
"""


def _start_recorder(store: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(RECORDER), str(store)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    return child, child.stdout.readline().strip()


def test_resuming_a_run_another_process_records_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    child, run_id = _start_recorder(store)
    try:
        time.sleep(0.3)
        with pytest.raises(ss.RunStateError, match=rf"being recorded by process {child.pid} on"):
            ss.init("one", store=store, resume=run_id, **FAST)
        assert child.poll() is None  # the recorder goes on untouched
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    with ss.init("one", store=store, resume=run_id, **FAST) as run:  # dead: resumes
        first = run.step
        run.log({"loss": -1.0})
    frame = ss.open(store).run(run_id).scalars("loss")
    steps = frame["step"].tolist()
    assert steps == list(range(first + 1))  # no step twice, none backwards
    assert frame["value"].tolist() == [float(s) for s in range(first)] + [-1.0]


def test_resuming_a_run_this_process_records_is_refused(new_run, store_path: Path) -> None:
    run = new_run()
    run.log({"loss": 1.0})
    with pytest.raises(ss.RunStateError, match=rf"process {os.getpid()} "):
        ss.init("test", store=store_path, resume=run.id, **FAST)
    run.log({"loss": 2.0})
    run.finish()
    assert ss.open(store_path).run(run.id).scalars("loss")["value"].tolist() == [1.0, 2.0]


def test_a_run_recorded_on_another_host_is_refused_until_its_heartbeat_is_stale(
    new_run, store_path: Path
) -> None:
    run = new_run()
    run.log({"loss": 1.0})
    run.finish()
    run_id = run.id
    with contextlib.closing(sqlite3.connect(store_path / DB_NAME)) as db, db:
        db.execute(  # the row as a process recording on another machine keeps it
            "UPDATE runs SET status = 'running', host = 'gpu-node-7', pid = 4242, "
            "heartbeat = ? WHERE id = ?",
            (time.time(), run_id),
        )
    with pytest.raises(ss.RunStateError, match="process 4242 on host gpu-node-7, last heartbeat"):
        ss.init("test", store=store_path, resume=run_id, **FAST)
    with contextlib.closing(sqlite3.connect(store_path / DB_NAME)) as db, db:
        db.execute("UPDATE runs SET heartbeat = ? WHERE id = ?", (time.time() - 3600, run_id))
    with ss.init("test", store=store_path, resume=run_id, **FAST) as resumed:  # went silent
        resumed.log({"loss": 2.0})
    assert ss.open(store_path).run(run_id).scalars("loss")["value"].tolist() == [1.0, 2.0]


def test_two_processes_resuming_one_run_at_once_leave_one_writer(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with ss.init("one", store=store, **FAST) as run:
        run.log({"loss": 0.0})
    code = """
        import os, sys, time
        import stepstore as ss
        try:
            run = ss.init("one", store=sys.argv[1], resume=sys.argv[2], flush_interval=0.05)
        except ss.RunStateError:
            print("refused", flush=True)
            sys.exit(0)
        print("recording", flush=True)
        while not os.path.exists(sys.argv[3]):  # hold the run until every child has tried
            time.sleep(0.01)
        run.finish()
    """
    release = tmp_path / "release"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), str(store), run.id, str(release)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    outcomes = sorted(child.stdout.readline().strip() for child in children)  # type: ignore[union-attr]
    release.touch()
    for child in children:
        child.communicate(timeout=120)
        assert child.returncode == 0
    assert outcomes == ["recording", "refused", "refused", "refused"]
