"""The array writer thread: tensors, images, records and artifacts, off the training thread.

Jobs arrive on a queue bounded in bytes (the caller waits when it is full, and waits are
counted); the thread writes array data first and commits the index rows that point at it
every ``flush_interval`` seconds, on ``flush()`` and at the end.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from ..backends.base import ArrayBatch, ArtifactRow, Backend, ImageRow, RecordRow
from ..errors import RunStateError, WriterError
from .images import encode_png
from .location import ArrayLocation
from .reduce import Reduction, histogram, stats
from .sink import SeriesWriter, run_root, series_path
from .staging import StagingPool, host_array

#: Called with (key, step, epoch, time in s, value) to record a derived scalar.
EmitScalar = Callable[[str, int, int, float, float], None]


class ArrayWriter:
    """Writes the tensors, images, records and artifacts of one rank of a run.

    A non-zero rank's files live under ``RUN_ID/@rankN`` and its artifacts are named
    ``rankN/NAME``.
    """

    def __init__(
        self,
        backend: Backend,
        run_id: str,
        location: ArrayLocation,
        flush_interval: float,
        max_bytes: int,
        fsync: bool,
        emit_scalar: EmitScalar,
        rank: int = 0,
    ) -> None:
        self.backend = backend
        self.run_id = run_id
        self.rank = rank
        self.location = location
        self.flush_interval = flush_interval
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.emit_scalar = emit_scalar
        self.pool = StagingPool(max_bytes)
        self.error: BaseException | None = None
        self.waits = 0
        self.wait_seconds = 0.0
        self.bytes_written = 0
        self._jobs: deque[tuple[Any, ...]] = deque()
        self._queued_bytes = 0
        self._submitted = 0
        self._done = 0
        self._committed = 0
        self._series: dict[str, SeriesWriter] = {}
        self._series_ids: dict[str, int] = {}
        self._samples: dict[str, np.ndarray] = {}
        self._batch = ArrayBatch()
        self._cv = threading.Condition()
        self._flush_wanted = False
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="stepstore-arrays", daemon=True)
        self._thread.start()

    # -- training thread ----------------------------------------------------------------

    def submit(self, job: tuple[Any, ...], nbytes: int) -> None:
        """Queue a job; waits while the queue holds more than ``max_bytes``."""
        with self._cv:
            if self._queued_bytes and self._queued_bytes + nbytes > self.max_bytes:
                start = time.perf_counter()
                while self._queued_bytes and self._queued_bytes + nbytes > self.max_bytes:
                    self._raise_if_failed("log() waiting for the array writer")
                    self._cv.wait(0.5)
                self.waits += 1
                self.wait_seconds += time.perf_counter() - start
            self._jobs.append((*job, nbytes))
            self._queued_bytes += nbytes
            self._submitted += 1
            if len(self._jobs) == 1:  # a busy writer needs no wake-up
                self._cv.notify_all()

    def _raise_if_failed(self, what: str) -> None:
        if self.error is not None:
            raise WriterError(f"{what}: the array writer failed: {self.error}") from self.error
        if not self._thread.is_alive():
            raise RunStateError(f"{what}: the array writer is not running")

    def flush(self) -> None:
        """Block until every job submitted so far is written and committed."""
        with self._cv:
            target = self._submitted
            self._flush_wanted = True
            self._cv.notify_all()
            while self._committed < target:
                self._raise_if_failed("flush()")
                self._cv.wait(0.5)

    def stop(self) -> None:
        """Finish all jobs, close open chunks durably and commit; raise if that fails."""
        self.flush()
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join()
        for series in self._series.values():
            self._batch.chunks.extend(series.close())
        self._commit()

    # -- writer thread ------------------------------------------------------------------

    def _loop(self) -> None:
        next_commit = time.monotonic() + self.flush_interval
        while True:
            with self._cv:
                while not (self._jobs or self._stop or self._flush_wanted):
                    remaining = next_commit - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cv.wait(remaining)
                if self._stop and not self._jobs:
                    return
                job = self._jobs.popleft() if self._jobs else None
            try:
                if job is not None:
                    try:
                        self._handle(job)
                    except BaseException:
                        with self._cv:
                            self._jobs.appendleft(job)  # kept for the retry
                        raise
                    with self._cv:
                        self._queued_bytes -= job[-1]
                        self._done += 1
                        self._cv.notify_all()
                # commit on the interval, or once the queue is empty when a flush is wanted;
                # never after every job (re-encoding an open zstd chunk each time)
                due = time.monotonic() >= next_commit
                if due or (self._flush_wanted and not self._jobs):
                    self._flush_wanted = False
                    self._flush_series(durable=self.fsync)
                    next_commit = time.monotonic() + self.flush_interval
            except BaseException as exc:  # noqa: BLE001 - kept and raised on the caller
                with self._cv:
                    self.error = exc
                    self._cv.notify_all()
                time.sleep(min(self.flush_interval, 1.0))  # then retry: nothing is dropped
                continue
            if self.error is not None:
                with self._cv:
                    self.error = None
                    self._cv.notify_all()

    def _flush_series(self, durable: bool) -> None:
        for series in self._series.values():
            self._batch.chunks.extend(series.flush(durable))
        done = self._done
        self._commit()
        with self._cv:
            self._committed = done
            self._cv.notify_all()

    def _commit(self) -> None:
        if self._batch:
            self.backend.commit_arrays(self._batch)
            self._batch = ArrayBatch()

    def _series_id(self, key: str, kind: str) -> int:
        series_id = self._series_ids.get(key)
        if series_id is None:
            series_id = self._series_ids[key] = self.backend.ensure_series(
                self.run_id, key, kind, self.rank
            )
        return series_id

    def _handle(self, job: tuple[Any, ...]) -> None:
        kind = job[0]
        if kind == "tensor":
            _, key, step, epoch, stamp, staged, reduction, _ = job
            try:
                self._tensor(key, step, epoch, stamp, host_array(staged), staged.dtype, reduction)
            finally:
                self.pool.give(staged.array)
        elif kind == "record":
            _, key, step, epoch, stamp, data, _ = job
            self._batch.records.append(
                RecordRow(self._series_id(key, "record"), step, epoch, round(stamp * 1e6), data)
            )
        elif kind == "image":
            _, key, step, epoch, stamp, images, _ = job
            self._images(key, step, epoch, stamp, images)
        elif kind == "artifact":
            _, name, source, _ = job
            path = f"{run_root(self.run_id, self.rank)}/artifacts/{name}"
            with open(source, "rb") as handle:
                data = handle.read()
            self.location.write(path, data)
            self._batch.artifacts.append(
                ArtifactRow(
                    self.run_id,
                    f"rank{self.rank}/{name}" if self.rank else name,
                    path,
                    len(data),
                    hashlib.sha256(data).hexdigest(),
                    time.time(),
                )
            )
            self.bytes_written += len(data)

    def _tensor(
        self,
        key: str,
        step: int,
        epoch: int,
        stamp: float,
        array: np.ndarray,
        dtype: str,
        reduction: Reduction,
    ) -> None:
        if reduction.how == "stats":
            for name, value in stats(array).items():
                self.emit_scalar(f"{key}/{name}", step, epoch, stamp, value)
            return
        if reduction.how == "histogram":
            counts, edges = histogram(array, reduction.bins)
            self._row(f"{key}/histogram", step, epoch, stamp, counts, "int64")
            self._row(f"{key}/histogram_edges", step, epoch, stamp, edges, "float64")
            return
        if reduction.sample is not None:
            chosen = self._samples.get(key)
            if chosen is None or chosen.max(initial=-1) >= array.size:
                rng = np.random.default_rng()
                count = min(reduction.sample, array.size)
                chosen = np.sort(rng.choice(array.size, size=count, replace=False))
                self._samples[key] = chosen
                self._row(
                    f"{key}/sample_index", step, epoch, stamp, chosen.astype(np.int64), "int64"
                )
            array = array.reshape(-1)[chosen]
        if reduction.dtype == "float16" and dtype in ("float32", "float64", "bfloat16"):
            if dtype == "bfloat16":
                array = array.view(np.uint16).astype(np.uint32) << 16
                array = array.view(np.float32)
            array, dtype = array.astype(np.float16), "float16"
        self._row(key, step, epoch, stamp, array, dtype)

    def _row(
        self, key: str, step: int, epoch: int, stamp: float, array: np.ndarray, dtype: str
    ) -> None:
        series = self._series.get(key)
        if series is None:
            series_id = self._series_id(key, "tensor")
            series = self._series[key] = SeriesWriter(
                self.location,
                self.run_id,
                key,
                series_id,
                dtype,
                self.backend.tensor_index(series_id),
                self.rank,
            )
        started = series.append(step, epoch, round(stamp * 1e6), array, dtype)
        if started is not None:
            self._batch.segments.append(started)
        self.bytes_written += array.nbytes

    def _images(
        self,
        key: str,
        step: int,
        epoch: int,
        stamp: float,
        images: list[tuple[np.ndarray, str | None]],
    ) -> None:
        import zlib

        series_id = self._series_id(key, "image")
        for position, (pixels, caption) in enumerate(images):
            png = encode_png(pixels)
            path = f"{series_path(self.run_id, key, self.rank)}/{step}-{position}.png"
            self.location.write(path, png)
            self._batch.images.append(
                ImageRow(
                    series_id,
                    step,
                    position,
                    epoch,
                    round(stamp * 1e6),
                    caption,
                    path,
                    len(png),
                    zlib.crc32(png),
                )
            )
            self.bytes_written += len(png)


def record_json(key: str, record: dict[str, Any]) -> str:
    """A record as JSON text; raises ``InvalidValueError`` naming what is not serialisable."""
    from ..errors import InvalidValueError

    try:
        return json.dumps(record, allow_nan=True, default=_plain)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(
            f"key {key!r}: record is not JSON-serialisable ({exc}); expected a dict of "
            "strings, numbers, booleans, None, lists and dicts"
        ) from None


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{value!r} of type {type(value).__name__}")
