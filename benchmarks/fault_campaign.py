"""Fault campaign: random SIGKILLs, full disks, byte flips and concurrent readers/writers.

Loops random trials for ``--minutes`` (every available kind at least once), prints what
each tried and what survived, and a table per trial kind and per data kind at the end:

    python benchmarks/fault_campaign.py --minutes 5
    python benchmarks/fault_campaign.py --minutes 1 --seed 7 --flush-interval 0.5 --json out.json
    python benchmarks/fault_campaign.py --replay kill-resume:123456     # one trial again

Trial kinds (each a few seconds; children are fresh interpreters running this file):

- ``kill``: a child records scalars (``loss``, ``acc``: values from the step and a per-run
  salt, with NaN, ±inf and -0.0 among them), tensors (``w``: constant-filled, compressed,
  sometimes changing shape; ``r``: random, incompressible), images and records in a tight
  loop with occasional sleeps, appending "STEP TIME" to a side file after each call
  returns; sometimes a reader process reads the store meanwhile. SIGKILL at a random
  moment (0.1-3 s), then the store is opened (which recovers the orphaned journal) and
  verified.
- ``kill-finish``: the same, killed while ``finish()`` runs.
- ``kill-resume``: killed, then ``init(resume=ID)`` continues the run in a new child,
  which is killed (or finishes) too.
- ``full-disk`` (root only: the store on a small tmpfs): a filler file fills the disk while
  the child logs; errors reaching the caller are counted; space is freed, ``flush()`` and
  ``finish()`` must succeed and every acknowledged value read back. Sometimes the child is
  killed while the disk is full instead.
- ``byte-flip``: on a copy of a finished store, XOR 1-4 random bytes: anywhere in the SQLite
  database or in the pages of one of its tables (scalar chunks, tensor index, records,
  images, runs; found with SQLite's ``dbstat``), in tensor chunk files, the Zarr ``steps``
  arrays, ``zarr.json`` or PNG images; then ``Store.check()``, reads,
  ``stepstore.repair.repair()``, ``check()`` and reads again. Values that read back
  differently fail the trial even when ``check()`` reported damage; missing ones must have
  been reported; ``repair()`` must keep every value that read back exactly before it, and
  leave ``check()`` clean when only array files were damaged. The replayed store is
  recorded from fixed schedules, so ``--replay byte-flip:SEED`` hits the same bytes.
- ``writers``: 2-4 processes record their own runs into one store at once while a reader
  reads; one of them is killed.

What is checked, everywhere: a stored value is exactly the one logged at its step, or absent
and reported by ``check()``, never another step's data; every host scalar whose ``log()``
returned is in the store, bit for bit; tensors, images and records lose at most the flush
interval before a SIGKILL (the loss window: time of the last acknowledged value minus time
of the last one stored before the first missing one; bound ``--flush-interval`` +
``--margin``); after ``finish()`` returned, nothing is missing; nothing outside the store
is touched (each trial's directory holds only what the campaign put there, a sentinel file
next to the store stays as it was); opening, ``check()`` and ``repair()`` raise nothing but
``StepstoreError``; ``check()`` is clean after kills, full disks and concurrent writers.

Output: progress lines on stderr, the tables on stdout; ``--json`` writes every trial. The
exit status is 1 if any trial failed. ``STEPSTORE_*`` variables are not passed to children.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, load, table

import stepstore as ss
from stepstore.repair import repair

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("kill", "kill-finish", "kill-resume", "full-disk", "byte-flip", "writers")
DATA_KINDS = ("scalar", "tensor", "image", "record")
KEY_KIND = {
    "loss": "scalar",
    "acc": "scalar",
    "w": "tensor",
    "r": "tensor",
    "img": "image",
    "rec": "record",
}
EPOCH = 50  # steps per epoch
RAW = 128  # float32 elements of the incompressible tensor ``r``
LISTED = 3  # mismatches listed per key before "and N more"

# -- what is logged at each step ---------------------------------------------------------
#
# A run's schedule travels in its params, so any reader can tell what was logged at a step:
# salt (int), tensor_every, image_every, record_every (ints), shapes, raw (bools).


def new_schedule(rng: random.Random) -> dict[str, Any]:
    """A random schedule for one run."""
    return {
        "salt": rng.randrange(1, 1 << 20),
        "tensor_every": rng.choice([1, 2, 3, 5]),
        "image_every": rng.choice([4, 8, 16]),
        "record_every": rng.choice([1, 2, 3]),
        "shapes": rng.random() < 0.5,
        "raw": rng.random() < 0.6,
    }


def schedule_of(params: dict[str, Any]) -> dict[str, Any] | None:
    """The schedule stored in a run's params (None if it is not one of ours)."""
    sched = params.get("fault")
    if not isinstance(sched, dict) or not {"salt", "tensor_every"} <= set(sched):
        return None
    return sched


def keys_at(step: int, sched: dict[str, Any]) -> list[str]:
    """Keys ``log()`` records at ``step`` (the record ``rec`` is a separate call)."""
    keys = ["loss", "acc"]
    if step % sched["tensor_every"] == 0:
        keys.append("w")
        if sched["raw"]:
            keys.append("r")
    if step % sched["image_every"] == 0:
        keys.append("img")
    return keys


def logged_at(key: str, step: int, sched: dict[str, Any]) -> bool:
    """Whether ``key`` is logged at ``step`` by the schedule."""
    if key == "rec":
        return step % sched["record_every"] == 0
    return key in keys_at(step, sched)


def expected_scalars(key: str, steps: np.ndarray, salt: int) -> np.ndarray:
    """float64 values of ``loss`` / ``acc`` at ``steps``."""
    s = steps.astype(np.float64)
    if key == "loss":
        return s * 0.5 + salt
    out = -s / 3.0 + salt
    m = steps % 101
    out[m == 7] = np.inf
    out[m == 13] = -np.inf
    out[m == 17] = np.nan
    out[m == 19] = -0.0
    return out


def tensor_shape(step: int, sched: dict[str, Any]) -> tuple[int, ...]:
    """The shape of ``w`` at ``step``: it alternates every 40 steps when ``shapes``."""
    return (32, 48) if sched["shapes"] and (step // 40) % 2 else (64, 64)


def expected_tensor(key: str, step: int, sched: dict[str, Any]) -> np.ndarray:
    """The tensor logged under ``key`` at ``step``."""
    if key == "w":
        return np.full(tensor_shape(step, sched), step + sched["salt"], np.float32)
    return np.random.default_rng([sched["salt"], step]).standard_normal(RAW, dtype=np.float32)


def expected_image(step: int, sched: dict[str, Any]) -> np.ndarray:
    """The image logged at ``step`` (HxWx3 uint8)."""
    a = np.zeros((12, 16, 3), np.uint8)
    a[..., 0] = step & 0xFF
    a[..., 1] = (step >> 8) & 0xFF
    a[..., 2] = sched["salt"] & 0xFF
    a[0] = np.arange(16, dtype=np.uint8)[:, None] * 7
    return a


def caption(step: int) -> str:
    return f"step {step}"


def expected_record(step: int, sched: dict[str, Any]) -> dict[str, Any]:
    return {"i": step, "salt": sched["salt"], "x": step * 0.25, "tag": f"s{step}-{sched['salt']}"}


def values_at(step: int, sched: dict[str, Any]) -> dict[str, Any]:
    """The dict given to ``log()`` at ``step``."""
    steps = np.array([step])
    values: dict[str, Any] = {
        "loss": float(expected_scalars("loss", steps, sched["salt"])[0]),
        "acc": float(expected_scalars("acc", steps, sched["salt"])[0]),
    }
    for key in keys_at(step, sched)[2:]:
        if key == "img":
            values[key] = ss.Image(expected_image(step, sched), caption=caption(step))
        else:
            values[key] = expected_tensor(key, step, sched)
    return values


# -- reading a run back ------------------------------------------------------------------


@dataclass
class RunCheck:
    """What one run holds: per key the steps whose value is exactly the logged one (good)
    and those whose value differs (wrong), one line per key with wrong values (bad), keys
    or rows that could not be read (errors)."""

    good: dict[str, set[int]] = field(default_factory=dict)
    wrong: dict[str, set[int]] = field(default_factory=dict)
    bad: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def count(self) -> int:
        return sum(len(s) for s in self.good.values())


def _mismatch(check: RunCheck, where: str, found: list[str]) -> None:
    if found:
        more = f" (and {len(found) - LISTED} more)" if len(found) > LISTED else ""
        check.bad.append(f"{where}: " + "; ".join(found[:LISTED]) + more)


def _scalars(view: ss.RunView, key: str, sched: dict[str, Any], check: RunCheck) -> None:
    frame = view.scalars(key)
    steps = frame["step"].to_numpy(np.int64)
    values = frame["value"].to_numpy(np.float64)
    epochs = frame["epoch"].to_numpy()
    where = f"run {view.id} {key!r}"
    if len(np.unique(steps)) != len(steps):
        check.bad.append(f"{where}: a step is stored twice")
    expected = expected_scalars(key, steps, sched["salt"])
    same = values.view(np.uint64) == expected.view(np.uint64)
    found = [
        f"step {s} holds {v!r}, logged {e!r}"
        for s, v, e in zip(steps[~same], values[~same], expected[~same], strict=True)
    ]
    wrong_epoch = epochs.astype(np.float64) != (steps // EPOCH)
    found += [
        f"step {s} has epoch {e}"
        for s, e in zip(steps[wrong_epoch], epochs[wrong_epoch], strict=True)
    ]
    _mismatch(check, where, found)
    check.good[key] = {int(s) for s in steps[same & ~wrong_epoch]}
    check.wrong[key] = {int(s) for s in steps[~same | wrong_epoch]}


def _tensor_rows(
    series: ss.TensorSeries, key: str, steps: list[int], sched: dict[str, Any], where: str
) -> tuple[set[int], list[tuple[int, str]], list[str]]:
    """Compare the rows at ``steps`` (one expected shape) with what was logged."""
    good: set[int] = set()
    found: list[tuple[int, str]] = []
    errors: list[str] = []
    try:
        rows = series[steps]
        if len(rows) != len(steps):
            raise ss.StepstoreError(f"{len(rows)} rows for {len(steps)} steps")
        pairs = list(zip(steps, rows, strict=True))
    except ss.StepstoreError:  # a damaged row or mixed shapes: one row at a time
        pairs = []
        for s in steps:
            try:
                pairs.append((s, series.at(s)))
            except ss.StepstoreError as exc:
                errors.append(f"{where} step {s}: {type(exc).__name__}: {exc}")
    for s, row in pairs:
        want = expected_tensor(key, s, sched)
        if row.dtype == want.dtype and row.shape == want.shape and np.array_equal(row, want):
            good.add(s)
        else:
            found.append((s, f"step {s} holds {_describe(row)}, logged {_describe(want)}"))
    return good, found, errors


def _describe(a: np.ndarray) -> str:
    flat = np.asarray(a).ravel()
    head = ", ".join(f"{x:g}" for x in flat[:3]) if flat.dtype.kind == "f" else str(flat[:3])
    return f"{a.dtype}{tuple(a.shape)} [{head}...]"


def _tensor(
    view: ss.RunView,
    key: str,
    sched: dict[str, Any],
    check: RunCheck,
    sample: random.Random | None,
) -> None:
    series = view.tensor(key)
    steps = [int(s) for s in series.steps]
    where = f"run {view.id} {key!r}"
    if len(set(steps)) != len(steps):
        check.bad.append(f"{where}: a step is stored twice")
    off = [s for s in steps if not logged_at(key, s, sched)]
    _mismatch(check, where, [f"step {s} is stored, nothing was logged there" for s in off])
    chosen = sorted(set(steps) - set(off))
    if sample is not None and len(chosen) > 12:
        chosen = sorted({*sample.sample(chosen, 11), chosen[-1]})
    good: set[int] = set()
    found: list[tuple[int, str]] = []
    group: list[int] = []
    for s in [*chosen, None]:  # consecutive steps of one expected shape are read at once
        if group and (s is None or tensor_shape(s, sched) != tensor_shape(group[0], sched)):
            ok, bad, errors = _tensor_rows(series, key, group, sched, where)
            good |= ok
            found += bad
            check.errors += errors
            group = []
        if s is not None:
            group.append(s)
    _mismatch(check, where, [line for _, line in found])
    check.good[key] = good
    check.wrong[key] = {s for s, _ in found}


def _images(view: ss.RunView, sched: dict[str, Any], check: RunCheck) -> None:
    where = f"run {view.id} 'img'"
    good, found = set(), []
    for image in view.images("img"):
        s = image.step
        if not logged_at("img", s, sched):
            found.append(f"step {s} is stored, nothing was logged there")
        elif image.caption != caption(s) or not np.array_equal(
            image.array, expected_image(s, sched)
        ):
            found.append(f"step {s} holds caption {image.caption!r}, {_describe(image.array)}")
            check.wrong.setdefault("img", set()).add(s)
        else:
            good.add(s)
    _mismatch(check, where, found)
    check.good["img"] = good


def _records(view: ss.RunView, sched: dict[str, Any], check: RunCheck) -> None:
    where = f"run {view.id} 'rec'"
    frame = view.records("rec")
    good, found = set(), []
    for full in frame.to_dict("records"):
        s = int(full.pop("step"))
        # a field only some records have is NaN in the others (ours hold no NaN)
        row = {k: v for k, v in full.items() if not (isinstance(v, float) and v != v)}
        want = expected_record(s, sched)
        if not logged_at("rec", s, sched):
            found.append(f"step {s} is stored, nothing was logged there")
        elif row != want:
            found.append(f"step {s} holds {row}")
            check.wrong.setdefault("rec", set()).add(s)
        else:
            good.add(s)
    if len(frame) and len(set(frame["step"])) != len(frame):
        found.append("a step is stored twice")
    _mismatch(check, where, found)
    check.good["rec"] = good


def verify_run(
    view: ss.RunView, sched: dict[str, Any], sample: random.Random | None = None
) -> RunCheck:
    """Read every key of ``view`` and compare each stored value with what the schedule
    logged at its step. With ``sample``, only a dozen tensor rows per key are read."""
    check = RunCheck()
    try:
        keys = view.keys()
    except ss.StepstoreError as exc:
        check.errors.append(f"run {view.id} keys(): {type(exc).__name__}: {exc}")
        return check
    for key in keys:
        if key not in KEY_KIND:
            check.bad.append(f"run {view.id}: key {key!r} was never logged")
            continue
        try:
            kind = KEY_KIND[key]
            if kind == "scalar":
                _scalars(view, key, sched, check)
            elif kind == "tensor":
                _tensor(view, key, sched, check, sample)
            elif kind == "image":
                _images(view, sched, check)
            else:
                _records(view, sched, check)
        except ss.StepstoreError as exc:
            check.errors.append(f"run {view.id} {key!r}: {type(exc).__name__}: {exc}")
    return check


# -- children ------------------------------------------------------------------------------


def _append(fd: int, line: str) -> None:
    os.write(fd, (line + "\n").encode())


def child_record(spec: dict[str, Any]) -> int:
    """Record a run as the spec says; append acknowledgements to the side file.

    Lines: ``run ID TIME STEP`` once init returned; ``STEP TIME FLAGS`` after the calls of
    a step returned (``l``: log(), ``r``: log_record()); ``e STEP TYPE MESSAGE`` for an
    error that reached this caller; ``flushed TIME RETRIES``, ``finishing TIME``,
    ``finished TIME``.
    """
    sched = spec["sched"]
    rng = random.Random(spec["seed"])
    fd = os.open(spec["side"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    run = ss.init(
        spec["project"],
        store=spec["store"],
        params={"fault": sched},
        resume=spec.get("resume"),
        flush_interval=spec["flush_interval"],
        **spec.get("settings", {}),
    )
    step = run.step
    _append(fd, f"run {run.id} {time.time():.6f} {step}")
    stop = spec.get("stop_file")
    tolerate = bool(stop)
    finish_after = spec.get("finish_after")
    end = None  # finish_after counts from the first acknowledged step
    sleep_p = spec.get("sleep_p", 0.0)
    pace = spec.get("pace", 0.0)
    while not (stop and os.path.exists(stop)) and not (end and time.monotonic() >= end):
        flags = ""
        try:
            run.log(values_at(step, sched), step=step, epoch=step // EPOCH)
            flags = "l"
            if logged_at("rec", step, sched):
                run.log_record("rec", expected_record(step, sched), step=step)
                flags += "r"
        except ss.StepstoreError as exc:
            if not tolerate:
                raise
            message = " ".join(str(exc).split())[:200]
            _append(fd, f"e {step} {type(exc).__name__} {message}")
            time.sleep(0.002)
        if flags:
            _append(fd, f"{step} {time.time():.6f} {flags}")
            if finish_after is not None and end is None:
                end = time.monotonic() + finish_after
        step += 1
        if sleep_p and rng.random() < sleep_p:
            time.sleep(rng.uniform(0.001, 0.03))
        if pace:
            time.sleep(pace)
    if stop:  # space is back: the writer must catch up, then recording goes on
        retries, deadline = 0, time.monotonic() + 30
        while True:
            try:
                run.flush()
                break
            except ss.StepstoreError:
                retries += 1
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        _append(fd, f"flushed {time.time():.6f} {retries}")
        for _ in range(spec.get("after_steps", 0)):
            run.log(values_at(step, sched), step=step, epoch=step // EPOCH)
            flags = "l"
            if logged_at("rec", step, sched):
                run.log_record("rec", expected_record(step, sched), step=step)
                flags += "r"
            _append(fd, f"{step} {time.time():.6f} {flags}")
            step += 1
    _append(fd, f"finishing {time.time():.6f}")
    run.finish()
    _append(fd, f"finished {time.time():.6f}")
    os.close(fd)
    return 0


def child_reader(spec: dict[str, Any]) -> int:
    """Read every run of the store over and over (a fresh ``ss.open`` each pass), checking
    values against the schedules and that no key shrinks; lines to ``spec['out']``:
    ``pass N ROWS``, ``bad DETAIL``, ``error TYPE MESSAGE``, ``notfound``."""
    rng = random.Random(spec["seed"])
    fd = os.open(spec["out"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    seen: dict[tuple[str, str], int] = {}
    passes = 0
    while not os.path.exists(spec["stop_file"]):
        rows = 0
        try:
            with ss.open(spec["store"]) as store:
                for view in store.runs():
                    sched = schedule_of(view.params)
                    if sched is None:
                        _append(fd, f"bad run {view.id}: params {view.params!r:.100}")
                        continue
                    check = verify_run(view, sched, sample=rng)
                    for line in check.bad:
                        _append(fd, f"bad {line}")
                    for line in check.errors:
                        kind = "notfound" if "NotFoundError" in line else "error"
                        _append(fd, f"{kind} {' '.join(line.split())[:300]}")
                    for key, good in check.good.items():
                        n = len(view.tensor(key)) if KEY_KIND[key] == "tensor" else len(good)
                        if n < seen.get((view.id, key), 0):
                            _append(fd, f"bad run {view.id} {key!r} shrank to {n} values")
                        seen[(view.id, key)] = max(n, seen.get((view.id, key), 0))
                        rows += n
        except (ss.NotFoundError, ss.NotAStoreError) as exc:  # not created yet
            _append(fd, f"notfound {' '.join(str(exc).split())[:300]}")
        except ss.StepstoreError as exc:
            _append(fd, f"error {type(exc).__name__} {' '.join(str(exc).split())[:300]}")
        passes += 1
        _append(fd, f"pass {passes} {rows}")
        time.sleep(rng.uniform(0.0, 0.05))
    os.close(fd)
    return 0


def child_main(mode: str, spec_json: str) -> int:
    spec = json.loads(spec_json)
    return child_record(spec) if mode == "record" else child_reader(spec)


# -- the parent's side of a trial ----------------------------------------------------------


class TrialError(Exception):
    """A check of the trial failed (the message says which); the trial stops there."""


@dataclass
class Trial:
    """One trial: what was tried, what failed, how much was acknowledged and survived."""

    kind: str
    seed: int
    detail: str = ""
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    acked: int = 0
    survived: int = 0
    #: data kind -> loss windows (s), one per killed recording phase
    windows: dict[str, list[float]] = field(default_factory=dict)
    #: data kind -> [acknowledged, survived] in killed phases
    by_kind: dict[str, list[int]] = field(default_factory=dict)
    seconds: float = 0.0

    def fail(self, message: str) -> None:
        self.failures.append(" ".join(message.split())[:400])

    def window(self) -> float | None:
        values = [w for kind, ws in self.windows.items() if kind != "scalar" for w in ws]
        return max(values) if values else None


@dataclass
class Ack:
    step: int
    time: float
    flags: str


@dataclass
class Side:
    """A recording child's side file, parsed (a torn last line is left out)."""

    run_id: str | None = None
    start: float = 0.0
    start_step: int = 0
    acks: list[Ack] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    marks: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> Side:
        side = cls()
        try:
            text = path.read_text()
        except FileNotFoundError:
            return side
        for line in text.split("\n")[:-1]:
            parts = line.split(" ")
            if parts[0] == "run":
                side.run_id, side.start, side.start_step = parts[1], float(parts[2]), int(parts[3])
            elif parts[0] == "e":
                side.errors.append(" ".join(parts[2:]))
            elif parts[0].isdigit():
                side.acks.append(Ack(int(parts[0]), float(parts[1]), parts[2]))
            else:
                side.marks[parts[0]] = parts[1:]
        return side


class Child:
    """A child process of this script (``record`` or ``reader``), stderr to a file."""

    live: list[Child] = []  # noqa: RUF012 - the parent's registry, for cleanup

    def __init__(self, mode: str, spec: dict[str, Any], err: Path, cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STEPSTORE_")}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        self.err = err
        with open(err, "wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--child", mode, json.dumps(spec)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=cwd,
                env=env,
            )
        Child.live.append(self)

    def kill(self) -> float:
        """SIGKILL; returns the wall-clock time of the kill."""
        killed = time.time()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.wait(30)
        return killed

    def wait(self, timeout: float) -> int | None:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        if self in Child.live:
            Child.live.remove(self)
        return rc

    def stderr(self) -> str:
        try:
            return self.err.read_text(errors="replace").strip()
        except FileNotFoundError:
            return ""

    def last_error(self) -> str:
        lines = self.stderr().splitlines()
        return lines[-1] if lines else ""

    @classmethod
    def kill_all(cls) -> None:
        for child in list(cls.live):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.proc.pid, signal.SIGKILL)
            child.wait(30)


@dataclass
class Settings:
    flush_interval: float = 1.0
    margin: float = 0.5
    timeout: float = 120.0  # for a child to start, finish or be seen


class Workdir:
    """A trial's directory: a sentinel file and a record of what the campaign put there,
    so anything else appearing (or the sentinel changing) is caught."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True)
        self.path = path
        self.sentinel = path / "sentinel.bin"
        self.sentinel.write_bytes(os.urandom(4096))
        self.digest = hashlib.sha256(self.sentinel.read_bytes()).hexdigest()
        self.expected = {"sentinel.bin"}

    def file(self, name: str) -> Path:
        self.expected.add(name)
        return self.path / name

    def check(self, trial: Trial) -> None:
        extra = sorted(p.name for p in self.path.iterdir() if p.name not in self.expected)
        if extra:
            trial.fail(f"files appeared outside the store: {extra[:5]}")
        if hashlib.sha256(self.sentinel.read_bytes()).hexdigest() != self.digest:
            trial.fail("the sentinel file next to the store changed")


def wait_for(
    predicate: Callable[[], bool], timeout: float, child: Child | None = None, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if child is not None and child.proc.poll() is not None:
            raise TrialError(
                f"the child exited ({child.proc.returncode}) before {what}: {child.last_error()}"
            )
        if time.monotonic() > deadline:
            raise TrialError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.01)


def head(path: Path, size: int = 4096) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(size).decode(errors="replace")
    except FileNotFoundError:
        return ""


def tail(path: Path, size: int = 4096) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - size))
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def first_ack(side: Path) -> Callable[[], bool]:
    """Whether a step was acknowledged (the side file holds a complete ack line)."""
    return lambda: any(ln[:1].isdigit() for ln in head(side).split("\n")[:-1])


def marked(side: Path, mark: str) -> Callable[[], bool]:
    return lambda: f"\n{mark} " in tail(side)


def acked_keys(ack: Ack, sched: dict[str, Any]) -> list[str]:
    keys = keys_at(ack.step, sched) if "l" in ack.flags else []
    return [*keys, "rec"] if "r" in ack.flags else keys


@dataclass
class Phase:
    """One child's recording of a run: its side file and how it ended."""

    side: Side
    killed: bool  # the child was killed before finish() returned
    finished: bool  # finish() returned


def judge_values(trial: Trial, check: RunCheck, phases: list[Phase], label: str = "") -> None:
    """Every stored value is the logged one and was stored at a step some phase reached."""
    for line in check.bad:
        trial.fail(f"{label}different data: {line}")
    for line in check.errors:
        trial.fail(f"{label}unreadable: {line}")
    reached: set[int] = set()
    for phase in phases:
        if phase.side.acks:
            reached |= set(range(phase.side.start_step, phase.side.acks[-1].step + 2))
    for key, good in check.good.items():
        beyond = sorted(good - reached)
        if beyond:
            trial.fail(f"{label}{key!r}: steps {beyond[:3]} stored, but never logged")


def judge_phase(
    trial: Trial,
    check: RunCheck,
    sched: dict[str, Any],
    phase: Phase,
    settings: Settings,
    label: str = "",
    bound: bool = True,
    figures: bool = True,
) -> None:
    """Hold the stored run against what one phase acknowledged: scalars all there; other
    kinds all there after finish() returned, else within the loss-window bound (when
    ``bound``). Adds to the trial's counts and (with ``figures``) its loss windows."""
    per_key: dict[str, list[Ack]] = {}
    for ack in phase.side.acks:
        for key in acked_keys(ack, sched):
            per_key.setdefault(key, []).append(ack)
    windows: dict[str, float] = {}
    for key, acks in per_key.items():
        kind = KEY_KIND[key]
        good = check.good.get(key, set())
        kept = sum(a.step in good for a in acks)
        trial.acked += len(acks)
        trial.survived += kept
        if phase.killed and figures:
            counts = trial.by_kind.setdefault(kind, [0, 0])
            counts[0] += len(acks)
            counts[1] += kept
        if kept == len(acks):
            windows[kind] = max(windows.get(kind, 0.0), 0.0)
            continue
        first = next(i for i, a in enumerate(acks) if a.step not in good)
        since = acks[first - 1].time if first else phase.side.start
        window = acks[-1].time - since
        windows[kind] = max(windows.get(kind, 0.0), window)
        lost = f"{len(acks) - kept} of {len(acks)} acknowledged values lost"
        if kind == "scalar":
            trial.fail(f"{label}{key!r}: {lost} (first step {acks[first].step})")
        elif phase.finished:
            trial.fail(f"{label}{key!r}: finish() returned but {lost} (first {acks[first].step})")
        elif bound and window > settings.flush_interval + settings.margin:
            trial.fail(
                f"{label}{key!r}: {lost}, a loss window of {window:.2f} s > "
                f"{settings.flush_interval:g} s flush interval + {settings.margin:g} s"
            )
    if phase.killed and figures:
        for kind, window in windows.items():
            trial.windows.setdefault(kind, []).append(round(window, 4))


def judge(
    trial: Trial,
    check: RunCheck,
    sched: dict[str, Any],
    phases: list[Phase],
    settings: Settings,
    bound: bool = True,
) -> None:
    judge_values(trial, check, phases)
    for phase in phases:
        judge_phase(trial, check, sched, phase, settings, bound=bound)


def check_clean(trial: Trial, store: ss.Store, label: str = "") -> None:
    problems = store.check()
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        trial.fail(f"{label}check(): {problems[0].where}: {problems[0].what}{more}")


def no_journals(trial: Trial, store: Path) -> None:
    left = sorted(p.name for p in (store / "journal").glob("*.journal"))
    if left:
        trial.fail(f"journals left after recovery: {left}")


class Reader:
    """A reader child for a trial, stopped with a stop file; its findings become failures."""

    def __init__(self, work: Workdir, store: Path, seed: int, name: str = "reader") -> None:
        self.out = work.file(f"{name}.out")
        self.stop_file = work.file(f"{name}.stop")
        spec = {"store": str(store), "out": str(self.out), "stop_file": str(self.stop_file)}
        self.child = Child("reader", {**spec, "seed": seed}, work.file(f"{name}.err"), work.path)

    def stop(self) -> None:
        self.stop_file.touch()

    def wait_reading(self, timeout: float) -> None:
        """Wait until a pass of the reader has read some values."""

        def reading() -> bool:
            lines = tail(self.out).split("\n")[:-1]
            return any(ln.startswith("pass ") and not ln.endswith(" 0") for ln in lines)

        wait_for(reading, timeout, self.child, "the reader's first pass")

    def collect(self, trial: Trial) -> None:
        self.stop()
        if self.child.wait(20) is None:
            self.child.kill()
            trial.notes.append("reader killed after 20 s")
        elif self.child.proc.returncode != 0:
            trial.fail(f"reader exited {self.child.proc.returncode}: {self.child.last_error()}")
        elif self.child.stderr():
            trial.fail(f"reader wrote to stderr: {self.child.last_error()}")
        lines = self.out.read_text().splitlines() if self.out.exists() else []
        passes = [ln for ln in lines if ln.startswith("pass ")]
        for line in [ln for ln in lines if ln.startswith(("bad ", "error "))][:3]:
            trial.fail(f"reader: {line}")
        trial.notes.append(
            f"reader: {len(passes)} passes, {sum(ln.startswith('notfound') for ln in lines)} "
            "not-found reads"
        )


def record_spec(
    work: Workdir, store: Path, sched: dict[str, Any], rng: random.Random, name: str, **extra: Any
) -> tuple[dict[str, Any], Path]:
    side = work.file(f"{name}.side")
    spec = {
        "store": str(store),
        "side": str(side),
        "project": "fault",
        "sched": sched,
        "seed": rng.randrange(1 << 30),
        "sleep_p": rng.choice([0.0, 0.002, 0.02]),
        **extra,
    }
    return spec, side


def _sched_note(sched: dict[str, Any]) -> str:
    bits = [f"tensors every {sched['tensor_every']}"]
    if sched["raw"]:
        bits.append("raw")
    if sched["shapes"]:
        bits.append("shape changes")
    return ", ".join(bits)


def killed_phase(
    trial: Trial,
    work: Workdir,
    store: Path,
    sched: dict[str, Any],
    rng: random.Random,
    settings: Settings,
    name: str,
    resume: str | None = None,
    in_finish: bool = False,
    reader: bool = False,
) -> Phase:
    """Start a recording child, SIGKILL it at a random moment (or while ``finish()`` runs)
    and return its phase."""
    extra: dict[str, Any] = {"flush_interval": settings.flush_interval, "resume": resume}
    if in_finish:
        extra["finish_after"] = rng.uniform(0.3, 2.0)
    spec, side = record_spec(work, store, sched, rng, name, **extra)
    child = Child("record", spec, work.file(f"{name}.err"), work.path)
    readers = [Reader(work, store, rng.randrange(1 << 30), f"{name}-reader")] if reader else []
    try:
        wait_for(first_ack(side), settings.timeout, child, "the first acknowledged step")
        for r in readers:
            r.wait_reading(settings.timeout)
        if in_finish:
            wait_for(marked(side, "finishing"), settings.timeout, child, "finish()")
            time.sleep(rng.uniform(0.0, 0.3))
            how = "killed in finish()"
        else:
            delay = rng.uniform(0.1, 3.0)
            time.sleep(delay)
            how = f"killed after {delay:.2f} s"
        child.kill()
    finally:
        if child.proc.poll() is None:
            child.kill()
    for r in readers:
        r.collect(trial)
    parsed = Side.read(side)
    finished = "finished" in parsed.marks
    rc = child.proc.returncode
    if finished and in_finish:
        how = "finish() returned before the kill"
    elif rc not in (-signal.SIGKILL, 0):
        trial.fail(f"{name}: exited {rc} before the kill: {child.last_error()}")
    if child.stderr():
        trial.fail(f"{name}: wrote to stderr: {child.last_error()}")
    if parsed.run_id is None or not parsed.acks:
        raise TrialError(f"{name}: no acknowledged step")
    trial.detail += f"{'; ' if trial.detail else ''}{name}: {how}, {len(parsed.acks)} steps" + (
        ", reader" if reader else ""
    )
    return Phase(parsed, killed=not finished, finished=finished)


def verify_store(
    trial: Trial,
    store_path: Path,
    runs: list[tuple[str, dict[str, Any], list[Phase]]],
    settings: Settings,
    bound: bool = True,
) -> dict[str, RunCheck]:
    """Open the store (recovering orphans), judge each run, require a clean check."""
    checks = {}
    with ss.open(store_path) as store:
        for run_id, sched, phases in runs:
            view = store.run(run_id)
            killed = phases[-1].killed
            if killed and view.status not in ("crashed", "finished"):
                trial.fail(f"run {run_id}: status {view.status!r} after a kill")
            if not killed and view.status != "finished":
                trial.fail(f"run {run_id}: status {view.status!r} after finish() returned")
            checks[run_id] = verify_run(view, sched)
            judge(trial, checks[run_id], sched, phases, settings, bound=bound)
        check_clean(trial, store)
    no_journals(trial, store_path)
    return checks


# -- trial kinds -------------------------------------------------------------------------


def trial_kill(trial: Trial, work: Workdir, rng: random.Random, settings: Settings) -> None:
    store = work.file("store")
    sched = new_schedule(rng)
    in_finish = trial.kind == "kill-finish"
    reader = rng.random() < 0.5
    phase = killed_phase(
        trial, work, store, sched, rng, settings, "child", in_finish=in_finish, reader=reader
    )
    trial.detail += f" ({_sched_note(sched)})"
    assert phase.side.run_id is not None
    verify_store(trial, store, [(phase.side.run_id, sched, [phase])], settings)


def trial_resume(trial: Trial, work: Workdir, rng: random.Random, settings: Settings) -> None:
    store = work.file("store")
    sched = new_schedule(rng)
    first = killed_phase(trial, work, store, sched, rng, settings, "first")
    run_id = first.side.run_id
    assert run_id is not None
    before = verify_store(trial, store, [(run_id, sched, [first])], settings)[run_id]
    acked, survived = trial.acked, trial.survived
    second = killed_phase(
        trial,
        work,
        store,
        sched,
        rng,
        settings,
        "resumed",
        resume=run_id,
        in_finish=rng.random() < 0.3,
        reader=rng.random() < 0.3,
    )
    trial.detail += f" ({_sched_note(sched)})"
    if second.side.run_id != run_id:
        raise TrialError(f"resume={run_id} recorded into run {second.side.run_id}")
    if second.side.start_step <= first.side.acks[-1].step:
        trial.fail(
            f"resumed at step {second.side.start_step}, but step {first.side.acks[-1].step} "
            "was acknowledged before the kill"
        )
    with ss.open(store) as opened:
        view = opened.run(run_id)
        if second.killed and view.status not in ("crashed", "finished"):
            trial.fail(f"run {run_id}: status {view.status!r} after the second kill")
        if second.finished and view.status != "finished":
            trial.fail(f"run {run_id}: status {view.status!r} after finish() returned")
        check = verify_run(view, sched)
        judge_values(trial, check, [first, second], "after resuming: ")
        # the first phase again: nothing it had stored may have gone (figures counted above)
        judge_phase(trial, check, sched, first, settings, "after resuming: ", False, False)
        for key, steps in before.good.items():
            gone = sorted(steps - check.good.get(key, set()))
            if gone:
                trial.fail(f"after resuming: {key!r} steps {gone[:3]} stored before are gone")
        trial.acked, trial.survived = acked, survived  # count each phase's values once
        judge_phase(trial, check, sched, second, settings, "resumed run: ")
        check_clean(trial, opened, "after resuming: ")
    no_journals(trial, store)


def trial_writers(trial: Trial, work: Workdir, rng: random.Random, settings: Settings) -> None:
    store = work.file("store")
    n = rng.randint(2, 4)
    victim = rng.randrange(n)
    writers = []
    for i in range(n):
        sched = new_schedule(rng)
        spec, side = record_spec(
            work,
            store,
            sched,
            rng,
            f"w{i}",
            flush_interval=settings.flush_interval,
            finish_after=30.0 if i == victim else rng.uniform(1.5, 3.0),
        )
        writers.append((sched, side, Child("record", spec, work.file(f"w{i}.err"), work.path)))
    reader = Reader(work, store, rng.randrange(1 << 30))
    try:
        for _, side, child in writers:
            wait_for(first_ack(side), settings.timeout, child, "the first acknowledged step")
        reader.wait_reading(settings.timeout)
        delay = rng.uniform(0.1, 2.0)
        time.sleep(delay)
        writers[victim][2].kill()
        for i, (_, _, child) in enumerate(writers):
            if i != victim and child.wait(settings.timeout) is None:
                raise TrialError(f"writer w{i} did not finish in {settings.timeout:.0f} s")
    finally:
        for _, _, child in writers:
            if child.proc.poll() is None:
                child.kill()
        reader.collect(trial)
    runs = []
    for i, (sched, side, child) in enumerate(writers):
        parsed = Side.read(side)
        finished = "finished" in parsed.marks
        rc = child.proc.returncode
        if i != victim and (rc != 0 or not finished):
            trial.fail(f"writer w{i} exited {rc}: {child.last_error()}")
        elif child.stderr() and rc != -signal.SIGKILL:
            trial.fail(f"writer w{i} wrote to stderr: {child.last_error()}")
        if parsed.run_id is None:
            raise TrialError(f"writer w{i} never started its run")
        runs.append((parsed.run_id, sched, [Phase(parsed, killed=not finished, finished=finished)]))
    trial.detail = f"{n} writers + reader, w{victim} killed after {delay:.2f} s" + (
        " (it had finished)" if not runs[victim][2][0].killed else ""
    )
    verify_store(trial, store, runs, settings)


# full disk ---------------------------------------------------------------------------------


def can_mount() -> str | None:
    """None if a tmpfs can be mounted here, else why not."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "not running as root"
    if shutil.which("mount") is None:
        return "no mount command"
    probe = Path(tempfile.mkdtemp(prefix="fault-probe-"))
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if done.returncode != 0:
            return f"mount -t tmpfs failed: {done.stderr.strip()}"
        subprocess.run(["umount", str(probe)], capture_output=True, timeout=30)
        return None
    except (OSError, subprocess.SubprocessError) as exc:
        return f"mount -t tmpfs failed: {exc}"
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


@contextlib.contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        raise TrialError(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)


def fill(path: Path) -> int:
    """Write ``path`` until the disk is full; bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for block in (b"\xa5" * 65536, b"\xa5" * 4096, b"\xa5" * 512):
            while True:
                try:
                    written += os.write(fd, block)
                except OSError:
                    break
    finally:
        os.close(fd)
    return written


def check_while_full(trial: Trial, store: Path) -> None:
    """A second handle on the full disk: check() is clean (a StepstoreError is noted)."""
    try:
        with ss.open(store) as opened:
            check_clean(trial, opened, "on the full disk: ")
    except ss.StepstoreError as exc:
        trial.notes.append(f"on the full disk, opening or check() raised {exc!r:.160}")


def trial_disk(trial: Trial, work: Workdir, rng: random.Random, settings: Settings) -> None:
    size = rng.choice(["8m", "12m", "16m"])
    kill_while_full = rng.random() < 0.3
    sched = new_schedule(rng)
    interval = min(settings.flush_interval, 0.25)
    with small_disk(work.file("disk"), size) as disk:
        store, filler = disk / "store", disk / "filler"
        stop = work.file("stop")
        spec, side = record_spec(
            work,
            store,
            sched,
            rng,
            "child",
            flush_interval=interval,
            stop_file=str(stop),
            pace=0.002,
            after_steps=rng.randint(20, 200),
            settings={"journal_slots": 4096, "chunk_size": 256},
        )
        child = Child("record", spec, work.file("child.err"), work.path)
        try:
            wait_for(first_ack(side), settings.timeout, child, "the first acknowledged step")
            time.sleep(rng.uniform(0.2, 0.8))
            filled = fill(filler)
            full_for = rng.uniform(0.8, 2.0)
            time.sleep(full_for / 2)
            check_while_full(trial, store)
            time.sleep(full_for / 2)
            if kill_while_full:
                child.kill()
            filler.unlink()
            stop.touch()
            if child.wait(settings.timeout) is None:
                raise TrialError(f"the child did not finish {settings.timeout:.0f} s after")
        finally:
            if child.proc.poll() is None:
                child.kill()
        parsed = Side.read(side)
        rc = child.proc.returncode
        errors = sorted({e.split(" ", 1)[0] for e in parsed.errors})
        trial.detail = (
            f"{size} tmpfs, filler {filled / 1e6:.1f} MB, full for {full_for:.1f} s, "
            f"{len(parsed.errors)} errors reached the caller {errors or ''}, "
            + ("killed while full" if kill_while_full else f"rc {rc}")
            + f", flush interval {interval:g} s ({_sched_note(sched)})"
        )
        if parsed.errors:
            trial.notes.append(f"first error: {parsed.errors[0][:200]}")
        if not kill_while_full:
            if rc != 0 or "finished" not in parsed.marks:
                raise TrialError(
                    f"the child exited {rc} after space was freed: {child.last_error()}"
                )
            trial.notes.append(f"flush() retries once space was back: {parsed.marks['flushed'][1]}")
        elif rc != -signal.SIGKILL:
            trial.fail(f"the child exited {rc} before the kill: {child.last_error()}")
        if child.stderr():
            trial.fail(f"the child wrote to stderr: {child.last_error()}")
        if parsed.run_id is None:
            raise TrialError("the child never started its run")
        finished = "finished" in parsed.marks
        phase = Phase(parsed, killed=not finished, finished=finished)
        # a kill while the disk is full may lose tensors older than the flush interval
        # (they could not be written); the bound is not claimed there
        verify_store(trial, store, [(parsed.run_id, sched, [phase])], settings, bound=False)
        if kill_while_full:
            trial.windows, trial.by_kind = {}, {}  # not a plain kill: keep it out of the figures
        extra = sorted(p.name for p in disk.iterdir() if p.name != "store")
        if extra:
            trial.fail(f"files appeared on the disk outside the store: {extra[:5]}")


# byte flips --------------------------------------------------------------------------------


@dataclass
class Base:
    """A finished store to copy and damage, with what each run holds and, per group of
    tables, the pages of its database file."""

    path: Path
    scheds: dict[str, dict[str, Any]]
    good: dict[str, dict[str, set[int]]]
    digest: str
    pages: dict[str, list[int]]
    page_size: int

    def count(self) -> int:
        return sum(len(s) for run in self.good.values() for s in run.values())


def tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


#: Flip targets inside the SQLite file: the pages of these tables (and their indexes).
DB_GROUPS = {
    "db:scalar-chunks": ("chunks",),
    "db:tensor-index": ("tensor_chunks", "tensor_segments"),
    "db:records": ("records",),
    "db:images": ("images",),
    "db:runs": ("runs", "run_params", "series", "meta", "run_ranks"),
}


def db_pages(db: Path) -> tuple[dict[str, list[int]], int]:
    """Page numbers of each table group (``dbstat``; empty when SQLite lacks it)."""
    import sqlite3

    con = sqlite3.connect(db)
    try:
        size = int(con.execute("PRAGMA page_size").fetchone()[0])
        try:
            rows = con.execute("SELECT name, pageno FROM dbstat").fetchall()
        except sqlite3.Error:
            return {}, size
    finally:
        con.close()
    pages: dict[str, list[int]] = {}
    for group, tables in DB_GROUPS.items():
        pages[group] = sorted({int(n) for name, n in rows if name.startswith(tables)})
    return pages, size


def build_base(path: Path, rng: random.Random, settings: Settings) -> Base:
    """Record two runs in-process (small scalar chunks, so there are many) and finish."""
    scheds = {}
    for _ in range(2):
        sched = new_schedule(rng)
        sched["raw"] = True
        run = ss.init(
            "fault", store=path, params={"fault": sched}, flush_interval=0.1, chunk_size=32
        )
        for step in range(rng.randint(150, 300)):
            run.log(values_at(step, sched), step=step, epoch=step // EPOCH)
            if logged_at("rec", step, sched):
                run.log_record("rec", expected_record(step, sched), step=step)
            if step % 60 == 59:
                run.flush()  # several tensor chunks
        run.finish()
        scheds[run.id] = sched
    good = {}
    with ss.open(path) as store:
        problems = store.check()
        if problems:
            raise TrialError(f"the base store does not check clean: {problems[0]}")
        for run_id, sched in scheds.items():
            check = verify_run(store.run(run_id), sched)
            if check.bad or check.errors:
                raise TrialError(f"the base store does not read back: {check.bad + check.errors}")
            good[run_id] = check.good
    pages, size = db_pages(path / "stepstore.db")
    return Base(path, scheds, good, tree_digest(path), pages, size)


FLIP_TARGETS = {  # category: (weight, does the file belong to it)
    "db": (2, lambda rel: rel.name.startswith("stepstore.db")),
    "chunk": (3, lambda rel: "c" in rel.parts and "steps" not in rel.parts),
    "steps": (1, lambda rel: "steps" in rel.parts and "c" in rel.parts),
    "zarr.json": (1, lambda rel: rel.name == "zarr.json"),
    "png": (2, lambda rel: rel.suffix == ".png"),
}
DB_WEIGHT = 1  # each group of DB_GROUPS


def flip_bytes(store: Path, rng: random.Random, base: Base) -> list[tuple[str, str]]:
    """XOR 1-4 random bytes of random files (or of a table's pages in the database);
    returns (category, 'file@offset')."""
    files = [p for p in store.rglob("*") if p.is_file() and p.stat().st_size]
    by_cat = {
        cat: [p for p in files if test(p.relative_to(store))]
        for cat, (_, test) in FLIP_TARGETS.items()
    }
    cats = [c for c in FLIP_TARGETS if by_cat[c]]
    weights = [FLIP_TARGETS[c][0] for c in cats]
    groups = [g for g, pages in base.pages.items() if pages]
    cats += groups
    weights += [DB_WEIGHT] * len(groups)
    flips = []
    for _ in range(rng.randint(1, 4)):
        cat = rng.choices(cats, weights=weights)[0]
        if cat in base.pages:
            target = store / "stepstore.db"
            page = rng.choice(base.pages[cat])
            offset = (page - 1) * base.page_size + rng.randrange(base.page_size)
        else:
            target = rng.choice(by_cat[cat])
            size = target.stat().st_size
            # chunk files are preallocated: bias towards their start, where the rows are
            offset = rng.randrange(min(size, rng.choice([1024, 16384, 262144, size])))
        data = bytearray(target.read_bytes())
        if offset >= len(data):
            continue
        data[offset] ^= rng.randint(1, 255)
        target.write_bytes(bytes(data))
        flips.append((cat, f"{target.relative_to(store)}@{offset}"))
    return flips


def read_all(
    trial: Trial, store: ss.Store, base: Base, label: str
) -> tuple[dict[str, RunCheck], int]:
    """Each run read back (different values fail the trial) and the failed reads."""
    checks: dict[str, RunCheck] = {}
    unreadable = 0
    try:
        listed = {v.id for v in store.runs()}
        strangers = sorted(listed - set(base.scheds))
        if strangers:
            trial.fail(f"{label}: runs {strangers} appeared (another run's id?)")
    except ss.StepstoreError:
        unreadable += 1
    for run_id, sched in base.scheds.items():
        try:
            check = verify_run(store.run(run_id), sched)
        except ss.StepstoreError:
            unreadable += 1
            continue
        for line in check.bad:
            trial.fail(f"{label}: different data: {line}")
        unreadable += len(check.errors)
        checks[run_id] = check
    return checks, unreadable


def read_guarded(
    trial: Trial, store: ss.Store, base: Base, label: str
) -> tuple[dict[str, RunCheck], int]:
    """``read_all``; a StepstoreError makes everything unreadable, anything else fails."""
    try:
        return read_all(trial, store, base, label)
    except ss.StepstoreError as exc:
        trial.notes.append(f"reading {label} raised {type(exc).__name__}: {str(exc)[:120]}")
        return {}, 1
    except Exception as exc:
        raise TrialError(
            f"reading {label} raised {type(exc).__name__} (not a StepstoreError): {exc}"
        ) from exc


def lost(base: Base, checks: dict[str, RunCheck], absent: bool = False) -> int:
    """Values of the base store that do not read back exactly (with ``absent``: that do
    not read back at all, leaving out those that read back wrong)."""
    n = 0
    for run_id, keys in base.good.items():
        check = checks.get(run_id, RunCheck())
        for key, steps in keys.items():
            left = steps - check.good.get(key, set())
            n += len(left - check.wrong.get(key, set())) if absent else len(left)
    return n


def trial_flip(
    trial: Trial, work: Workdir, rng: random.Random, settings: Settings, base: Base
) -> None:
    store_path = work.file("store")
    shutil.copytree(base.path, store_path)
    flips = flip_bytes(store_path, rng, base)
    trial.detail = "flipped " + ", ".join(f"{cat} {where}" for cat, where in flips)
    trial.acked = base.count()
    only_arrays = all(not cat.startswith("db") for cat, _ in flips)

    def guarded(what: str, call: Callable[[], Any]) -> tuple[bool, Any]:
        """(True, result), or (False, the StepstoreError); anything else fails the trial."""
        try:
            return True, call()
        except ss.StepstoreError as exc:
            trial.notes.append(f"{what} raised {type(exc).__name__}: {str(exc)[:120]}")
            return False, exc
        except Exception as exc:
            raise TrialError(
                f"{what} raised {type(exc).__name__} (not a StepstoreError): {exc}"
            ) from exc

    ok, store = guarded("ss.open", lambda: ss.open(store_path))
    if not ok:
        trial.notes.append("the store was refused when opened: all of it absent and reported")
        return
    with store:
        ok, before = guarded("check()", store.check)
        reported = not ok or bool(before)
        tag = "before repair (check() reported damage)" if reported else "before repair"
        before_checks, unreadable = read_guarded(trial, store, base, tag)
        absent = lost(base, before_checks, absent=True)
        if (absent or unreadable) and not reported:
            trial.fail(
                f"before repair: {absent} values missing, {unreadable} reads failed, "
                "but check() reported nothing"
            )
        ok, fixed = guarded("repair()", lambda: repair(store))
        ok_after, after = guarded("check() after repair", store.check)
        tag = "after repair (check() still reports damage)" if after else "after repair"
        after_checks, unreadable = read_guarded(trial, store, base, tag)
        gone = lost(base, after_checks)
        trial.survived = trial.acked - gone
        if unreadable and ok_after and not after:
            trial.fail(f"after repair: {unreadable} reads failed, but check() reports nothing")
        absent = lost(base, after_checks, absent=True)
        if absent and not reported:
            trial.fail(f"after repair: {absent} values missing, but check() reported nothing")
        dropped = sum(
            len(steps - after_checks.get(run_id, RunCheck()).good.get(key, set()))
            for run_id, check in before_checks.items()
            for key, steps in check.good.items()
        )
        if dropped:
            trial.fail(f"repair dropped {dropped} values that read back exactly before it")
        if only_arrays and ok_after and after:
            trial.fail(
                f"only array files were damaged, yet check() after repair reports "
                f"{len(after)} problems: {after[0].where}: {after[0].what}"
            )
        trial.notes.append(
            f"check: {len(before) if isinstance(before, list) else 'raised'} problems before, "
            f"{len(fixed) if isinstance(fixed, list) else 'raised'} repairs, "
            f"{len(after) if isinstance(after, list) else 'raised'} after; {gone} values lost"
        )
        for name, found in (("before", before), ("after", after)):
            if isinstance(found, list) and found:
                trial.notes.append(f"check {name}: {found[0].where}: {found[0].what[:160]}")
    if tree_digest(base.path) != base.digest:
        trial.fail("the original store (outside the damaged copy) changed")


# -- the campaign ----------------------------------------------------------------------------


def run_trial(
    kind: str, seed: int, root: Path, settings: Settings, base: Callable[[], Base]
) -> Trial:
    trial = Trial(kind, seed)
    rng = random.Random(seed)
    n = 1
    while (root / f"{kind}-{seed}-{n}").exists():
        n += 1
    work = Workdir(root / f"{kind}-{seed}-{n}")
    start = time.monotonic()
    try:
        if kind in ("kill", "kill-finish"):
            trial_kill(trial, work, rng, settings)
        elif kind == "kill-resume":
            trial_resume(trial, work, rng, settings)
        elif kind == "writers":
            trial_writers(trial, work, rng, settings)
        elif kind == "full-disk":
            trial_disk(trial, work, rng, settings)
        else:
            trial_flip(trial, work, rng, settings, base())
        work.check(trial)
    except TrialError as exc:
        trial.fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - a crash is a finding; the campaign goes on
        trial.fail(f"{type(exc).__name__}: {exc}")
        traceback.print_exc(file=sys.stderr)
    finally:
        Child.kill_all()
    trial.seconds = round(time.monotonic() - start, 2)
    return trial


def campaign(
    minutes: float,
    seed: int,
    settings: Settings,
    kinds: Iterable[str] = KINDS,
    root: Path | None = None,
    replay: tuple[str, int] | None = None,
    progress: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    """Run trials until ``minutes`` are up (each available kind at least once)."""
    skipped: dict[str, str] = {}
    wanted = [k for k in KINDS if k in set(kinds)]
    if "full-disk" in wanted:
        why = can_mount()
        if why is not None:
            skipped["full-disk"] = why
            wanted.remove("full-disk")
            progress(f"full-disk trials skipped: {why}")
    rng = random.Random(seed)
    own_root = root is None
    root = Path(tempfile.mkdtemp(prefix="fault-campaign-")) if root is None else root
    bases: list[Base] = []

    def base() -> Base:
        if not bases:
            # the same schedules in every campaign, so a replayed flip hits a similar store
            bases.append(build_base(root / "base" / "store", random.Random(0), settings))
        return bases[0]

    trials: list[Trial] = []
    start = time.monotonic()
    load_start = load()
    try:
        if replay is not None and replay[0] in skipped:
            plan: Iterator[tuple[str, int]] = iter([])
        elif replay is not None:
            plan = iter([replay])
        else:
            plan = _plan(wanted, rng, start + minutes * 60)
        for kind, trial_seed in plan:
            trial = run_trial(kind, trial_seed, root, settings, base)
            trials.append(trial)
            verdict = "ok" if not trial.failures else f"FAILED ({len(trial.failures)})"
            window = trial.window()
            progress(
                f"[{time.monotonic() - start:6.1f} s] #{len(trials)} {kind} seed={trial_seed}: "
                f"{verdict}; {trial.detail}; acked {trial.acked}, survived {trial.survived}"
                + (f", loss window {window:.3f} s" if window is not None else "")
                + f" ({trial.seconds:.1f} s)"
            )
            for note in trial.notes:
                progress(f"    note: {note}")
            for failure in trial.failures:
                progress(f"    FAIL {failure}")
    finally:
        Child.kill_all()
        if own_root:
            shutil.rmtree(root, ignore_errors=True)
    return report(trials, skipped, seed, settings, time.monotonic() - start, load_start)


def _plan(kinds: list[str], rng: random.Random, deadline: float) -> Iterator[tuple[str, int]]:
    """Rounds of the kinds in random order until the deadline (the first round whole)."""
    first = True
    while kinds and (first or time.monotonic() < deadline):
        order = list(kinds)
        rng.shuffle(order)
        for kind in order:
            if not first and time.monotonic() >= deadline:
                return
            yield kind, rng.randrange(1, 1 << 31)
        first = False


def _stats(windows: list[float]) -> tuple[float | None, float | None]:
    return (max(windows), statistics.median(windows)) if windows else (None, None)


def report(
    trials: list[Trial],
    skipped: dict[str, str],
    seed: int,
    settings: Settings,
    took: float,
    load_start: float,
) -> dict[str, Any]:
    kinds: dict[str, Any] = {}
    for kind in KINDS:
        mine = [t for t in trials if t.kind == kind]
        if not mine and kind not in skipped:
            continue
        windows = [w for t in mine if (w := t.window()) is not None]
        worst, mid = _stats(windows)
        kinds[kind] = {
            "trials": len(mine),
            "passed": sum(not t.failures for t in mine),
            "failed": sum(bool(t.failures) for t in mine),
            "acked": sum(t.acked for t in mine),
            "survived": sum(t.survived for t in mine),
            "worst_window_s": worst,
            "median_window_s": mid,
            "skipped": skipped.get(kind),
        }
    data: dict[str, Any] = {}
    for dk in DATA_KINDS:
        windows = [w for t in trials for w in t.windows.get(dk, [])]
        acked = sum(t.by_kind.get(dk, [0, 0])[0] for t in trials)
        kept = sum(t.by_kind.get(dk, [0, 0])[1] for t in trials)
        worst, mid = _stats(windows)
        data[dk] = {
            "acked": acked,
            "survived": kept,
            "lost": acked - kept,
            "kills": len(windows),
            "worst_window_s": worst,
            "median_window_s": mid,
        }
    return {
        "settings": {
            "seed": seed,
            "flush_interval": settings.flush_interval,
            "margin": settings.margin,
            "seconds": round(took, 1),
            "load_start": load_start,
            "load_end": load(),
        },
        "environment": environment(),
        "kinds": kinds,
        "data_kinds": data,
        "skipped": skipped,
        "totals": {
            "trials": len(trials),
            "passed": sum(not t.failures for t in trials),
            "failed": sum(bool(t.failures) for t in trials),
            "acked": sum(t.acked for t in trials),
            "survived": sum(t.survived for t in trials),
        },
        "failures": [
            {"kind": t.kind, "seed": t.seed, "detail": t.detail, "failure": f}
            for t in trials
            for f in t.failures
        ],
        "trials": [asdict(t) for t in trials],
    }


def seconds(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f} s"


def render(out: dict[str, Any]) -> str:
    s = out["settings"]
    which = f"replay {s['replay']}" if "replay" in s else f"seed {s['seed']}"
    lines = [
        f"Fault campaign: {which}, flush interval {s['flush_interval']:g} s, "
        f"loss bound {s['flush_interval'] + s['margin']:g} s, {s['seconds']:.0f} s, "
        f"load {s['load_start']} -> {s['load_end']}",
        "",
    ]
    rows = []
    for kind, k in out["kinds"].items():
        if k["skipped"]:
            rows.append([kind, 0, "—", "—", "—", "—", "—", f"skipped: {k['skipped']}"])
            continue
        rows.append(
            [
                kind,
                k["trials"],
                k["passed"],
                k["failed"],
                f"{k['acked']:,}",
                f"{k['survived']:,}",
                seconds(k["worst_window_s"]),
                seconds(k["median_window_s"]),
            ]
        )
    t = out["totals"]
    rows.append(
        [
            "**total**",
            t["trials"],
            t["passed"],
            t["failed"],
            f"{t['acked']:,}",
            f"{t['survived']:,}",
            "",
            "",
        ]
    )
    header = ["trial kind", "trials", "passed", "failed", "acknowledged", "survived"]
    lines.append(table([*header, "worst loss window", "median loss window"], rows))
    lines += ["", "Acknowledged values in killed recordings, by data kind:", ""]
    rows = [
        [
            dk,
            f"{d['acked']:,}",
            f"{d['survived']:,}",
            f"{d['lost']:,}",
            d["kills"],
            seconds(d["worst_window_s"]),
            seconds(d["median_window_s"]),
            "0 s (nothing lost)" if dk == "scalar" else f"{s['flush_interval']:g} s",
        ]
        for dk, d in out["data_kinds"].items()
    ]
    header = ["data kind", "acknowledged", "survived", "lost", "kills"]
    lines.append(table([*header, "worst window", "median window", "promise"], rows))
    lines.append("")
    if out["failures"]:
        lines.append(f"Failures ({len(out['failures'])}):")
        for f in out["failures"]:
            lines.append(f"- {f['kind']} seed={f['seed']}: {f['failure']}")
        lines.append(
            "Replay one: python benchmarks/fault_campaign.py --replay KIND:SEED "
            f"--flush-interval {s['flush_interval']:g}"
        )
    else:
        lines.append("No failures.")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        return child_main(sys.argv[2], sys.argv[3])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--flush-interval", type=float, default=1.0)
    parser.add_argument(
        "--margin",
        type=float,
        default=0.5,
        help="seconds a loss window may exceed the flush interval (a flush in progress, "
        "a loaded machine)",
    )
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated trial kinds")
    parser.add_argument("--replay", default=None, help="KIND:SEED, one trial")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="keep the trial dirs here")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    replay = None
    if args.replay:
        kind, _, trial_seed = args.replay.partition(":")
        if kind not in KINDS or not trial_seed.isdigit():
            parser.error("--replay expects KIND:SEED")
        replay = (kind, int(trial_seed))
        kinds = [kind]
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    settings = Settings(flush_interval=args.flush_interval, margin=args.margin)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    out = campaign(args.minutes, seed, settings, kinds, args.keep, replay)
    if replay is not None:
        out["settings"]["replay"] = args.replay
    print(render(out))
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1, default=str) + "\n")
    return 1 if out["totals"]["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
