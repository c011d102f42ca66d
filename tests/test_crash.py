"""A killed process loses no host scalar whose log() returned; the store stays consistent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import stepstore as ss

WRITER = """
import sys, stepstore as ss
run = ss.init("crash", store=sys.argv[1], flush_interval=float(sys.argv[2]), chunk_size=64)
print(run.id, flush=True)
i = 0
while True:
    run.log({"a": float(i), "b": -float(i)}, epoch=i // 100)
    if i % 97 == 0:
        print(i, flush=True)   # i was logged (log returned) before this line
    i += 1
"""


def start_writer(store: Path, flush_interval: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(store), str(flush_interval)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.parametrize("trial", range(6))
def test_sigkill_loses_no_returned_log(tmp_path, trial):
    store = tmp_path / "store"
    # long flush intervals make the journal, not the store, hold the newest points
    proc = start_writer(store, flush_interval=[0.01, 5.0, 60.0][trial % 3])
    run_id = proc.stdout.readline().strip()
    deadline = time.monotonic() + 0.3 + 0.25 * trial
    last_seen = -1
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip().isdigit():
            last_seen = int(line)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert last_seen >= 0
    view = ss.open(store).run(run_id)  # opening recovers the orphaned journal
    assert view.status == "crashed"
    a = view.scalars("a")
    b = view.scalars("b")
    n = len(a)
    assert n > last_seen
    assert a["step"].tolist() == list(range(n))
    assert a["value"].tolist() == [float(i) for i in range(n)]
    assert a["epoch"].tolist() == [i // 100 for i in range(n)]
    assert len(b) in (n, n + 1, n - 1)
    assert ss.open(store).check() == []
    assert not list((store / "journal").glob("*.journal"))


def test_crashed_run_resumes_from_last_recorded_step(tmp_path):
    store = tmp_path / "store"
    proc = start_writer(store, flush_interval=60.0)
    run_id = proc.stdout.readline().strip()
    while int(proc.stdout.readline()) < 500:
        pass
    proc.kill()
    proc.wait()
    proc.stdout.close()
    run = ss.init("crash", store=store, resume=run_id, flush_interval=0.05)
    resumed_at = run.step
    run.log({"a": -1.0})
    run.finish()
    a = ss.open(store).run(run_id).scalars("a")
    assert resumed_at >= 500
    assert a["step"].tolist() == list(range(resumed_at + 1))
    assert a["value"].iloc[-1] == -1.0


def test_live_run_is_not_recovered_by_a_reader(tmp_path):
    store = tmp_path / "store"
    proc = start_writer(store, flush_interval=60.0)
    run_id = proc.stdout.readline().strip()
    proc.stdout.readline()
    try:
        view = ss.open(store).run(run_id)
        assert view.status == "running"
        assert list((store / "journal").glob("*.journal"))
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_sigterm_flushes_and_marks_killed(tmp_path):
    store = tmp_path / "store"
    proc = start_writer(store, flush_interval=60.0)
    run_id = proc.stdout.readline().strip()
    while int(proc.stdout.readline()) < 300:
        pass
    proc.terminate()
    assert proc.wait() == -signal.SIGTERM
    proc.stdout.close()
    assert not list((store / "journal").glob("*.journal"))  # finished, not left for recovery
    view = ss.open(store).run(run_id)
    assert view.status == "killed"
    n = len(view.scalars("a"))
    assert n > 300
    assert view.scalars("a")["value"].tolist() == [float(i) for i in range(n)]


REFUSED_THEN_KILLED = """
import os, sys, stepstore as ss
run = ss.init("crash", store=sys.argv[1], flush_interval=60.0)
run.log({"a": 1.0, "b": 2.0}, step=0)
try:
    run.log({"a": 3.0, "b": "not a number"}, step=1)  # "a" is packed before "b" is refused
except ss.InvalidValueError:
    print(run.id, flush=True)
    os.kill(os.getpid(), 9)
"""


def test_a_refused_log_leaves_nothing_for_recovery_to_replay(tmp_path):
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run(
        [sys.executable, "-c", REFUSED_THEN_KILLED, str(store)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    view = ss.open(store).run(done.stdout.strip())
    assert view.scalars("a")["value"].tolist() == [1.0]
    assert view.scalars("b")["value"].tolist() == [2.0]


def test_a_journal_being_created_is_never_claimed_as_an_orphan(tmp_path, monkeypatch):
    import fcntl

    from stepstore.recording.journal import Journal, journal_paths

    real_flock = fcntl.flock
    claimed = []

    def scan_for_orphans_first(fd, operation):  # another process's scan, just before our lock
        monkeypatch.setattr(fcntl, "flock", real_flock)
        claimed.extend(Journal.claim_orphan(path) for path in journal_paths(tmp_path))
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", scan_for_orphans_first)
    journal = Journal.create(tmp_path, "r1", 64)
    assert claimed == []
    assert Journal.claim_orphan(journal.path) is None  # held by us
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r1.journal", "r1.keys"]
    journal.close(remove=True)


UNCAUGHT = """
import sys, stepstore as ss
sys.excepthook = lambda kind, error, tb: print("user hook:", kind.__name__, flush=True)
run = ss.init("crash", store=sys.argv[1], flush_interval=60.0)
print(run.id, flush=True)
for step in range(50):
    run.log({"a": float(step)}, step=step)
raise ERROR
"""


@pytest.mark.parametrize(
    ("error", "status"), [("RuntimeError('boom')", "crashed"), ("KeyboardInterrupt", "killed")]
)
def test_an_uncaught_exception_marks_the_run_and_still_reaches_the_hook(tmp_path, error, status):
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    result = subprocess.run(
        [sys.executable, "-c", UNCAUGHT.replace("ERROR", error), str(store)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    run_id, hook = result.stdout.splitlines()
    assert hook == f"user hook: {error.partition('(')[0]}"
    view = ss.open(store).run(run_id)
    assert view.status == status
    assert view.scalars("a")["value"].tolist() == [float(i) for i in range(50)]
