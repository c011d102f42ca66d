"""SIGKILL a process that logs scalars, tensors, images and records in a tight loop, many
times over, and measure what each kind loses against the documented bound: tensors, images
and records lose at most ``flush_interval`` (host scalars lose nothing).

For each kind the loss window is the time from the ``log()`` return of the oldest value that
is not in the store to the kill (0 when nothing is missing). The median window over all trials
must stay within ``FLUSH_INTERVAL + MARGIN`` (the kill delays are long enough that a writer
which stopped committing would exceed it) and the worst within one more interval: on a shared
machine a single commit can stall for half a second in fsync (CI measured 1.03 s once, every
other trial of that run under 0.41 s). Every stored value must be exactly the one
logged at its step (per-step deterministic data), the stored steps of each key a prefix of
the logged ones, and the store must pass ``check()`` once opened (which recovers the run).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import stepstore as ss

FLUSH_INTERVAL = 0.5
#: Besides the flush interval: scheduling delays of a loaded 2-core machine. The writer's
#: own bound is about 3/4 of the interval plus one commit: measured worst 0.40 s with a load
#: average of 5, 0.83 s with one of 40 (other test suites running beside it).
MARGIN = 0.35
TRIALS = 20
W = 16384  # float32 elements of the raw (incompressible, written in place) tensor
Z = 4096  # float32 elements of the compressible (zstd) tensor
IMAGE_EVERY = 8

#: argv: store, side file. Logs ``loss`` + tensors ``w`` (raw) and ``z`` (zstd) every step,
#: an image ``img`` every IMAGE_EVERY steps, a record ``rec`` every step, as fast as it
#: can; after both calls of a step return it appends "STEP TIME" to the side file.
CHILD = f"""
import os, sys, time
import numpy as np
import stepstore as ss

store, side = sys.argv[1], sys.argv[2]
base = np.random.default_rng(0).standard_normal({W}, dtype=np.float32)
run = ss.init("kill", store=store, flush_interval={FLUSH_INTERVAL})
fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
os.write(fd, f"run {{run.id}}\\n".encode())
i = 0
while True:
    values = {{"loss": float(i), "w": base + np.float32(i), "z": np.full({Z}, i, np.float32)}}
    if i % {IMAGE_EVERY} == 0:
        values["img"] = ss.Image(np.full((16, 16, 3), i % 251, np.uint8))
    run.log(values, step=i)
    run.log_record("rec", {{"i": i}}, step=i)
    os.write(fd, f"{{i}} {{time.time()}}\\n".encode())
    i += 1
"""


def _acknowledged(side: Path) -> tuple[str, dict[int, float]]:
    """The run id and, per step whose calls returned, the time they did."""
    lines = side.read_text().splitlines()
    acked = {}
    for line in lines[1:]:
        parts = line.split()
        if len(parts) == 2:  # the last line may be torn by the kill
            acked[int(parts[0])] = float(parts[1])
    return lines[0].split()[1], acked


def _window(logged: list[int], stored: list[int], acked: dict[int, float], killed: float) -> float:
    """Seconds between the oldest acknowledged but missing value's return and the kill."""
    assert stored == logged[: len(stored)], f"stored steps are not a prefix: {stored[-5:]}"
    missing = logged[len(stored) :]
    return killed - acked[missing[0]] if missing else 0.0


def _check_store(store: Path, side: Path, killed: float) -> dict[str, float]:
    """Loss window per kind; asserts every stored value is the logged one."""
    run_id, acked = _acknowledged(side)
    steps = sorted(acked)
    assert steps == list(range(len(steps))) and steps, "no step was acknowledged"
    base = np.random.default_rng(0).standard_normal(W, dtype=np.float32)
    windows = {}
    with ss.open(store) as opened:  # recovers the orphaned journal
        view = opened.run(run_id)
        assert view.status == "crashed"
        loss = view.scalars("loss")
        assert len(loss) >= len(steps), "a host scalar whose log() returned was lost"
        assert loss["value"].tolist() == [float(i) for i in range(len(loss))]
        for key, width in (("w", W), ("z", Z)):
            series = view.tensor(key) if key in view.keys() else None
            stored = [] if series is None else series.steps.tolist()
            windows[key] = _window(steps, stored, acked, killed)
            if stored:
                rows = series[: len(stored)]  # type: ignore[index]
                numbers = np.arange(len(stored), dtype=np.float32)[:, None]
                expected = base + numbers if key == "w" else np.repeat(numbers, width, axis=1)
                assert np.array_equal(rows, expected), f"{key}: a stored row is not as logged"
        images = view.images("img") if "img" in view.keys() else []
        windows["img"] = _window(steps[::IMAGE_EVERY], [im.step for im in images], acked, killed)
        for im in images:
            assert np.array_equal(im.array, np.full((16, 16, 3), im.step % 251, np.uint8))
        records = view.records("rec") if "rec" in view.keys() else None
        stored = [] if records is None else records["step"].tolist()
        windows["rec"] = _window(steps, stored, acked, killed)
        if stored:
            assert records["i"].tolist() == stored  # type: ignore[index]
        assert opened.check() == []
    return windows


def _trial(tmp: Path, delay: float) -> dict[str, float]:
    store, side = tmp / "store", tmp / "acked.txt"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(store), str(side)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not (side.exists() and side.read_text().count("\n") >= 2):
            assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the child never logged its first step"
            time.sleep(0.01)
        time.sleep(delay)
    finally:
        killed = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        stderr = proc.stderr.read().decode()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert not stderr.strip(), stderr
    return _check_store(store, side, killed)


@pytest.mark.slow
def test_sigkill_loses_at_most_the_flush_interval(tmp_path: Path) -> None:
    rng = random.Random(10)
    worst = {"w": 0.0, "z": 0.0, "img": 0.0, "rec": 0.0}
    typical: list[float] = []
    for trial in range(TRIALS):
        windows = _trial(tmp_path / str(trial), rng.uniform(1.0, 2.0))
        print(trial, {kind: round(seconds, 3) for kind, seconds in windows.items()})
        worst = {kind: max(worst[kind], windows[kind]) for kind in worst}
        typical.append(max(windows.values()))
    print(
        f"worst loss window over {TRIALS} SIGKILLs (flush_interval {FLUSH_INTERVAL} s): "
        + ", ".join(f"{kind} {seconds:.3f} s" for kind, seconds in worst.items())
    )
    bound = FLUSH_INTERVAL + MARGIN
    median = float(np.median(typical))
    assert median <= bound, f"median loss window {median:.3f} s exceeds {bound} s"
    assert max(worst.values()) <= bound + FLUSH_INTERVAL, f"{worst} exceeds {bound} s + 1 interval"
