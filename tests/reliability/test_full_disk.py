"""A full disk: a clear error reaches the caller, the store stays intact and recording
resumes once space is back.

The store lives on a small tmpfs mounted for the test (root only; skipped otherwise). The
recording runs in a child process, so a failure that kills it (SIGBUS from a memory map
on a full filesystem) fails the test instead of the test run.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..conftest import run_python

#: Records 3000 points (wrapping the 1024-slot journal, so all its pages exist), fills the
#: disk with a filler file, logs until an error reaches the caller, checks the store from a
#: second handle, frees the space, waits for the writer to catch up, logs more, finishes.
#: With ``tensors`` (argv[3] == "1") every 10th step also logs a 64-float tensor ``w``.
CHILD = """
import json, os, sys, time
import numpy as np
import stepstore as ss

store, filler, tensors = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
out = {}


def values(i):
    if tensors and i % 10 == 0:
        return {"loss": float(i), "w": np.random.default_rng(i).standard_normal(64)}
    return {"loss": float(i)}


run = ss.init("disk", store=store, flush_interval=0.05, journal_slots=1024, chunk_size=256)
i = 0
for _ in range(3000):
    run.log(values(i), step=i)
    i += 1
run.flush()
out["before"] = i

fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
block = b"\\xa5" * 4096
try:
    while True:
        os.write(fd, block)
except OSError as exc:
    out["filler_error"] = exc.strerror
os.close(fd)

deadline = time.monotonic() + 60
error = None
while error is None and time.monotonic() < deadline:
    try:
        run.log(values(i), step=i)
        i += 1
        if i % 64 == 0:
            run.flush()
    except ss.StepstoreError as exc:
        error = exc
out["error_type"] = type(error).__name__
out["error"] = str(error)
out["logged_at_error"] = i

with ss.open(store) as reader:
    out["check_full"] = [[p.where, p.what] for p in reader.check()]
    points = reader.run(run.id).scalars("loss")["value"].tolist()
    out["read_full"] = len(points)
    out["read_full_ok"] = points == [float(k) for k in range(len(points))]
    if tensors:
        steps = reader.run(run.id).tensor("w").steps.tolist()
        out["tensor_full_ok"] = steps[:300] == list(range(0, 3000, 10))

os.unlink(filler)
deadline = time.monotonic() + 10
while True:
    try:
        run.flush()
        break
    except ss.StepstoreError as exc:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
for _ in range(500):
    run.log(values(i), step=i)
    i += 1
run.finish()
out["total"] = i
with ss.open(store) as reader:
    view = reader.run(run.id)
    points = view.scalars("loss")["value"].tolist()
    out["status"] = view.status
    out["read_after"] = points == [float(k) for k in range(i)]
    if tensors:
        out["tensor_after"] = view.tensor("w").steps.tolist() == list(range(0, i, 10))
    out["check_after"] = [[p.where, p.what] for p in reader.check()]
print(json.dumps(out))
"""


@contextlib.contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where``; skips the test when it cannot be mounted."""
    where.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs for a full-disk test: {exc}")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for a full-disk test: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)


def _record_on_a_full_disk(tmp_path: Path, size: str, tensors: bool) -> dict[str, Any]:
    with small_disk(tmp_path / "disk", size) as disk:
        args = (str(disk / "store"), str(disk / "filler"), "1" if tensors else "0")
        done = run_python(CHILD, *args, timeout=300)
    assert done.returncode == 0, f"child failed ({done.returncode}):\n{done.stderr}"
    out: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    assert out["filler_error"] == "No space left on device"
    return out


def test_full_disk_gives_a_clear_error_and_recording_resumes(tmp_path: Path) -> None:
    out = _record_on_a_full_disk(tmp_path, "2m", tensors=False)
    assert out["error_type"] == "WriterError", out
    assert "database or disk is full" in out["error"], out["error"]
    assert out["check_full"] == []
    assert out["read_full"] >= out["before"] and out["read_full_ok"]
    assert out["status"] == "finished"
    assert out["read_after"], f"points 0..{out['total'] - 1} did not all read back"
    assert out["check_after"] == []


def test_full_disk_with_tensors_resumes(tmp_path: Path) -> None:
    out = _record_on_a_full_disk(tmp_path, "4m", tensors=True)
    assert out["error_type"] == "WriterError", out
    assert "No space left on device" in out["error"] or "full" in out["error"], out["error"]
    assert out["check_full"] == []
    assert out["read_full_ok"] and out["tensor_full_ok"]
    assert out["status"] == "finished"
    assert out["read_after"] and out["tensor_after"]
    assert out["check_after"] == []
