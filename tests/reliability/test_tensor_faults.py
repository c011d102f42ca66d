"""Faults while the writers work: a stored value is exactly what was logged at its step (or
absent and reported), never another step's data; a failed write is retried exactly once at
its row; a writer that failed before ``flush()``/``finish()`` retries before it raises; the
device-value queue is bounded like the journal.

Faults are injected by replacing ``os.pwrite`` in the tensor sink (raise ``ENOSPC`` or write
short), by failing a backend call once, and, for a real full disk, on a small tmpfs.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import stepstore as ss
from stepstore.recording.journal import Journal
from stepstore.recording.messages import DeviceValue
from stepstore.recording.writer import Cursor
from stepstore.recording.writer import ScalarWriter as Writer
from stepstore.tensors import series_writer as sink

from ..conftest import run_python
from .test_full_disk import small_disk

ROW = 1024  # float64 random rows: incompressible, so written in place with os.pwrite


def row(step: int, size: int = ROW) -> np.ndarray:
    return np.random.default_rng(step).standard_normal(size)


class FaultyOs:
    """Stands in for ``os`` in the tensor sink: ``pwrite`` raises ``ENOSPC`` while
    ``failing`` is set, fails on the call numbers in ``fail``, and writes only half of the
    bytes on the call numbers in ``short`` (numbered from 1)."""

    def __init__(self) -> None:
        self.calls = 0
        self.failing = False
        self.fail: set[int] = set()
        self.short: set[int] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def pwrite(self, fd: int, data: Any, offset: int) -> int:
        self.calls += 1
        if self.failing or self.calls in self.fail:
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        view = memoryview(data).cast("B")
        if self.calls in self.short:
            view = view[: max(1, len(view) // 2)]
        return os.pwrite(fd, view, offset)


@pytest.fixture
def faulty_os(monkeypatch: pytest.MonkeyPatch) -> FaultyOs:
    fake = FaultyOs()
    monkeypatch.setattr(sink, "os", fake)
    return fake


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def flush_eventually(run: ss.Run, timeout: float = 10.0) -> None:
    """``run.flush()`` until it succeeds (a writer may report an old error once)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            run.flush()
            return
        except ss.WriterError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def assert_exact(store_path: Path, run_id: str, key: str, expected: dict[int, np.ndarray]) -> None:
    """Every stored row of ``key`` is the logged one, all of ``expected`` are stored, and
    the store's checksums agree."""
    with ss.open(store_path) as store:
        series = store.run(run_id).tensor(key)
        steps = series.steps.tolist()
        assert sorted(expected) == [s for s in steps if s in expected], steps
        for step in steps:
            assert np.array_equal(series.at(step), expected[step]), f"{key} at step {step}"
        assert store.check() == []


def test_a_retried_tensor_keeps_its_own_data(new_run, store_path, faulty_os) -> None:
    run = new_run(on_error="warn")
    for i in range(40):
        run.log({"w": row(i)}, step=i)
    run.flush()
    faulty_os.failing = True
    run.log({"w": row(40)}, step=40)
    wait_for(lambda: run._array_writer.error is not None)
    # step 41 is staged while step 40 waits for its retry: it must not reuse (and
    # overwrite) the staging buffer that step 40 still needs
    with pytest.warns(RuntimeWarning, match="No space left"):
        run.log({"w": row(41)}, step=41)
    faulty_os.failing = False
    flush_eventually(run)
    run.finish()
    assert_exact(store_path, run.id, "w", {i: row(i) for i in range(42)})


def test_a_short_write_is_completed(new_run, store_path, faulty_os) -> None:
    faulty_os.short = {3, 7}
    run = new_run()
    for i in range(10):
        run.log({"w": row(i)}, step=i)
    run.finish()
    assert faulty_os.calls > 10  # the short rows were completed by further calls
    assert_exact(store_path, run.id, "w", {i: row(i) for i in range(10)})


def test_a_failed_first_row_of_a_new_shape_is_written_once(new_run, store_path, faulty_os) -> None:
    run = new_run()
    expected = {i: row(i) for i in range(5)} | {i: row(i, 2 * ROW) for i in range(5, 8)}
    for i in range(5):
        run.log({"w": expected[i]}, step=i)
    run.flush()
    faulty_os.fail = {faulty_os.calls + 1}  # the first row of the new shape's segment
    for i in range(5, 8):
        with contextlib.suppress(ss.WriterError):
            run.log({"w": expected[i]}, step=i)
        if i == 5:
            wait_for(lambda: run._array_writer.error is not None)
    flush_eventually(run)
    run.finish()
    with ss.open(store_path) as store:
        stored = store.run(run.id).tensor("w").steps.tolist()
    assert_exact(store_path, run.id, "w", {s: expected[s] for s in stored})
    assert stored[:6] == list(range(6))


def _fail_once(monkeypatch: pytest.MonkeyPatch, run: ss.Run, suffix: str) -> list[str]:
    """Make the run's backend refuse to create the series whose key ends in ``suffix`` once."""
    real = run._backend.ensure_series
    failed: list[str] = []

    def ensure_series(run_id: str, key: str, kind: str, rank: int = 0) -> int:
        if key.endswith(suffix) and not failed:
            failed.append(key)
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        return real(run_id, key, kind, rank)

    monkeypatch.setattr(run._backend, "ensure_series", ensure_series)
    return failed


def test_a_retried_histogram_writes_each_row_once(new_run, store_path, monkeypatch) -> None:
    run = new_run()
    run.reduce("h", "histogram", bins=8)
    failed = _fail_once(monkeypatch, run, "/histogram_edges")
    for i in range(3):
        run.log({"h": np.arange(100.0) * (i + 1)}, step=i)
        flush_eventually(run)  # step 0 is retried; the next ones go through
    run.finish()
    assert failed
    with ss.open(store_path) as store:
        view = store.run(run.id)
        for key in ("h/histogram", "h/histogram_edges"):
            assert view.tensor(key).steps.tolist() == [0, 1, 2], key
        assert view.tensor("h/histogram").at(0).sum() == 100
        assert store.check() == []


def test_a_retried_sample_records_its_indices(new_run, store_path, monkeypatch) -> None:
    run = new_run()
    run.reduce("s", sample=10)
    failed = _fail_once(monkeypatch, run, "/sample_index")
    for i in range(3):
        run.log({"s": np.arange(1000.0) + i}, step=i)
        flush_eventually(run)
    run.finish()
    assert failed
    with ss.open(store_path) as store:
        view = store.run(run.id)
        index = view.tensor("s/sample_index").at(0)
        assert len(index) == 10
        for i in range(3):
            assert np.array_equal(view.tensor("s").at(i), index + float(i))


# -- an old error is retried before flush() / finish() raise it ------------------------------


def _fail_arrays_then_recover(run: ss.Run, faulty_os: FaultyOs) -> dict[int, np.ndarray]:
    """Log tensors into a failing array writer, then let writes succeed again."""
    logged = {}
    faulty_os.failing = True
    for i in range(5):
        with contextlib.suppress(ss.WriterError):
            run.log({"w": row(i)}, step=i)
            logged[i] = row(i)
        wait_for(lambda: run._array_writer.error is not None)
    faulty_os.failing = False
    return logged


@pytest.mark.parametrize("call", ["flush", "finish"])
def test_flush_and_finish_retry_an_old_array_error(
    store_path: Path, faulty_os: FaultyOs, call: str
) -> None:
    run = ss.init("retry", store=store_path, flush_interval=1.0)  # a failure pauses 1 s
    logged = _fail_arrays_then_recover(run, faulty_os)
    assert logged and run._array_writer.error is not None
    getattr(run, call)()  # the space is back: no stale error
    run.finish()
    assert ss.open(store_path).run(run.id).status == "finished"
    assert_exact(store_path, run.id, "w", logged)


@pytest.mark.parametrize("call", ["flush", "finish"])
def test_flush_and_finish_retry_an_old_scalar_error(
    store_path: Path, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    run = ss.init("retry", store=store_path, flush_interval=1.0)
    real = run._writer.sink.write
    failing = threading.Event()
    failing.set()

    def write(*args: Any) -> int:
        if failing.is_set():
            raise OSError(errno.ENOSPC, "database or disk is full (injected)")
        return real(*args)

    monkeypatch.setattr(run._writer.sink, "write", write)
    for i in range(100):
        run.log({"loss": float(i)}, step=i)
    run._writer.wake()
    wait_for(lambda: run._writer.error is not None)
    failing.clear()
    getattr(run, call)()
    run.finish()
    view = ss.open(store_path).run(run.id)
    assert view.status == "finished"
    assert view.scalars("loss")["value"].tolist() == [float(i) for i in range(100)]


def test_flush_still_raises_a_persistent_error(store_path: Path, faulty_os: FaultyOs) -> None:
    run = ss.init("retry", store=store_path, flush_interval=1.0)
    faulty_os.failing = True
    run.log({"w": row(0)}, step=0)
    started = time.monotonic()
    with pytest.raises(ss.WriterError, match="No space left"):
        run.flush()
    assert time.monotonic() - started < 5
    faulty_os.failing = False
    run.finish()
    assert_exact(store_path, run.id, "w", {0: row(0)})


#: Logs 64 KiB tensors until the tmpfs is full and log() raises, frees the space, then calls
#: ``argv[2]`` (flush or finish) at once; prints which steps log() accepted.
FULL_DISK = """
import json, os, sys, time
import numpy as np
import stepstore as ss

store, call = sys.argv[1], sys.argv[2]
filler = os.path.join(os.path.dirname(store), "filler")
row = lambda i: np.random.default_rng(i).standard_normal(8192)
run = ss.init("disk", store=store, flush_interval=1.0, journal_slots=1024)
for i in range(20):
    run.log({"w": row(i)}, step=i)
run.flush()
fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
try:
    while True:
        os.write(fd, b"\\xa5" * 4096)
except OSError:
    pass
os.close(fd)
accepted, error = list(range(20)), None
i = 20
deadline = time.monotonic() + 30
while error is None and time.monotonic() < deadline:
    try:
        run.log({"w": row(i)}, step=i)
        accepted.append(i)
    except ss.StepstoreError as exc:
        error = repr(exc)
    i += 1
os.unlink(filler)
getattr(run, call)()
run.finish()
print(json.dumps({"accepted": accepted, "error": error, "run": run.id}))
"""


@pytest.mark.parametrize("call", ["flush", "finish"])
def test_full_disk_then_space_back_flush_and_finish_succeed(tmp_path: Path, call: str) -> None:
    with small_disk(tmp_path / "disk", "6m") as disk:
        store = disk / "store"
        done = run_python(FULL_DISK, str(store), call, timeout=120)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout.splitlines()[-1])
        assert out["error"] is not None, "the disk never filled"
        accepted = {i: row(i, 8192) for i in out["accepted"]}
        assert ss.open(store).run(out["run"]).status == "finished"
        assert_exact(store, out["run"], "w", accepted)


# -- the device-value queue is bounded --------------------------------------------------------


class _Sink:
    """A scalar sink that records what it writes, or fails while ``failing`` is set."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.failing = threading.Event()

    def write(self, keys: Any, key_ids: np.ndarray, columns: Any, fields: Any) -> int:
        if self.failing.is_set():
            raise OSError(errno.ENOSPC, "database or disk is full (injected)")
        time.sleep(0.01)  # a slow store
        self.values.extend(columns.value.tolist())
        return len(key_ids)


def _writer(tmp_path: Path, sink_: _Sink) -> Writer:
    journal = Journal.create(tmp_path, "run", 1024)
    writer = Writer(sink_, journal, Cursor(0), [("x", "scalar")], 0.05, dict)  # type: ignore[arg-type]
    writer.start()
    return writer


def _items(first: int, count: int) -> list[DeviceValue]:
    return [DeviceValue(1, 0, step, 0, 0.0, float(step)) for step in range(first, first + count)]


def test_device_values_wait_for_room(tmp_path: Path) -> None:
    sink_ = _Sink()
    writer = _writer(tmp_path, sink_)
    total = 4 * writer.max_deferred
    for first in range(0, total, 256):
        writer.defer(_items(first, 256))
        assert len(writer.deferred) <= writer.max_deferred
    writer.stop()
    assert writer.waits > 0 and writer.wait_seconds > 0
    assert sink_.values == [float(i) for i in range(total)]


def test_device_values_raise_when_the_writer_keeps_failing(tmp_path: Path) -> None:
    sink_ = _Sink()
    sink_.failing.set()
    writer = _writer(tmp_path, sink_)
    writer.defer(_items(0, writer.max_deferred))
    with pytest.raises(ss.WriterError, match="disk is full"):
        writer.defer(_items(writer.max_deferred, 1))
    assert len(writer.deferred) <= writer.max_deferred
    sink_.failing.clear()
    writer.defer(_items(writer.max_deferred, 1))
    writer.stop()
    assert sink_.values == [float(i) for i in range(writer.max_deferred + 1)]


def test_a_failed_commit_writes_no_tensor_twice(new_run, store_path, monkeypatch) -> None:
    run = new_run()
    real = run._backend.commit_arrays
    failed: list[int] = []

    def commit_arrays(batch: Any) -> None:
        if not failed:
            failed.append(len(batch.chunks))
            raise OSError(errno.ENOSPC, "database or disk is full (injected)")
        real(batch)

    monkeypatch.setattr(run._backend, "commit_arrays", commit_arrays)
    for i in range(3):
        run.log({"w": row(i)}, step=i)
    flush_eventually(run)
    run.finish()
    assert failed
    assert_exact(store_path, run.id, "w", {i: row(i) for i in range(3)})
