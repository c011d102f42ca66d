"""The array writer thread: tensors, images, records and artifacts, off the training thread.

Jobs arrive on a queue bounded in bytes and in time (the caller waits while it holds more
than ``max_bytes``, or more work than the thread does in a quarter of ``flush_interval``,
going by what recent jobs of the same key took; waits are counted). The thread writes array
data first and commits the index rows that point at it every half ``flush_interval`` while
there is something to commit, on ``flush()`` and at the end. A job is thus in the store
within about three quarters of ``flush_interval`` (plus one commit) of its ``log()``
returning, the durability the API promises for tensors, images and records.

A job that fails (a full disk, a store that does not answer) stays at the head of the queue,
owning its staged buffer, and is retried, so a value is stored exactly once, as logged. The
error is kept for the caller: ``flush()`` and ``stop()`` first have the job retried and raise
only when an attempt made after they were called fails too.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import BinaryIO, NamedTuple

import numpy as np

from ..backends.base import ArrayBatch, ArtifactRow, Backend, ImageRow, RecordRow
from ..errors import RunStateError, WriterError
from ..tensors.images import encode_png
from ..tensors.location import ArrayLocation
from ..tensors.paths import artifact_path, series_path
from ..tensors.reduce import Reduction, histogram, stats
from ..tensors.series_writer import TensorSeriesWriter
from ..tensors.staging import StagingPool, host_array
from .messages import ArrayJob, ArtifactJob, DerivedScalar, ImageJob, RecordJob, TensorJob
from .writer import DerivedScalars


class _Queued(NamedTuple):
    """A job on the queue: what to do, the seconds it should take, when it was queued
    (``time.perf_counter()``) and how long it should then wait to be done."""

    job: ArrayJob
    cost: float
    since: float
    expected: float


class ArrayWriter:
    """Writes the tensors, images, records and artifacts of one rank of a run.

    A non-zero rank's files live under ``RUN_ID/@rankN`` and its artifacts are named
    ``rankN/NAME``. Scalars it derives (tensor statistics) go to ``derived``, on to the
    scalar writer.
    """

    def __init__(
        self,
        backend: Backend,
        run_id: str,
        location: ArrayLocation,
        flush_interval: float,
        max_bytes: int,
        fsync: bool,
        derived: DerivedScalars,
        rank: int = 0,
    ) -> None:
        self.backend = backend
        self.run_id = run_id
        self.rank = rank
        self.location = location
        self.flush_interval = flush_interval
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.derived = derived
        self.pool = StagingPool(max_bytes)
        self.error: BaseException | None = None
        self.waits = 0
        self.wait_seconds = 0.0
        self.bytes_written = 0
        self._max_lag = flush_interval / 4  # seconds of queued work that make log() wait
        self._commit_every = flush_interval / 2
        self._jobs: deque[_Queued] = deque()
        self._queued_bytes = 0
        self._queued_cost = 0.0
        self._slowdown = 1.0  # how much longer jobs wait than their costs say (moving average)
        self._costs: dict[str, float] = {}  # seconds a job of each key takes (moving average)
        self._submitted = 0
        self._done = 0
        self._committed = 0
        self._next_commit = time.monotonic()  # the earliest time the next commit may start
        self._busy_since = time.perf_counter()  # when the thread's current work began
        self._parts: set[str] = set()  # rows of the current job already written
        self._attempts = 0  # work attempts the thread has begun
        self._failed_attempt = 0  # the attempt that raised ``error``
        self._retry = False  # a caller waits for a retry: skip the pause after a failure
        self._series: dict[str, TensorSeriesWriter] = {}
        self._series_ids: dict[str, int] = {}
        self._samples: dict[str, np.ndarray] = {}
        self._batch = ArrayBatch()
        self._cv = threading.Condition()
        self._flush_wanted = False
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="stepstore-arrays", daemon=True)
        self._thread.start()

    # -- training thread ----------------------------------------------------------------

    def submit(self, jobs: Sequence[ArrayJob]) -> None:
        """Queue the jobs of one call, all or none; waits while the queue is full
        (``max_bytes``) or lags behind.

        Raises ``WriterError`` when the writer fails while the caller waits (and then
        queues nothing)."""
        costs = [self._costs.get(job.key, self._max_lag) for job in jobs]  # unknown: drain
        nbytes, cost = sum(job.nbytes for job in jobs), sum(costs)
        with self._cv:
            if self._full(nbytes, cost):
                start = time.perf_counter()
                since = self._attempts
                while self._full(nbytes, cost):
                    self._raise_if_failed("log() waiting for the array writer", since)
                    self._cv.wait(0.5)
                self.waits += 1
                self.wait_seconds += time.perf_counter() - start
            was_idle = not self._jobs
            for job, job_cost in zip(jobs, costs, strict=True):
                expected = self._queued_cost + job_cost
                self._jobs.append(_Queued(job, job_cost, time.perf_counter(), expected))
                self._queued_bytes += job.nbytes
                self._queued_cost += job_cost
                self._submitted += 1
            if was_idle:  # a busy writer needs no wake-up
                self._cv.notify_all()

    def _full(self, nbytes: int, cost: float) -> bool:
        """Whether a job of ``nbytes`` taking ``cost`` seconds must wait: the queue would
        exceed ``max_bytes``, or hold more work than keeps the durability bound."""
        return bool(self._jobs) and (
            self._queued_bytes + nbytes > self.max_bytes
            or (self._queued_cost + cost) * self._slowdown > self._max_lag
        )

    def _raise_if_failed(self, what: str, since: int) -> None:
        """Raise the writer's error if an attempt begun after attempt ``since`` failed."""
        if self.error is not None and self._failed_attempt > since:
            raise WriterError(f"{what}: the array writer failed: {self.error}") from self.error
        if not self._thread.is_alive():
            raise RunStateError(f"{what}: the array writer is not running")

    def flush(self) -> None:
        """Block until every job submitted so far is written and committed.

        A writer that failed before this call retries at once; raises ``WriterError`` only
        if an attempt made after the call began fails."""
        with self._cv:
            target = self._submitted
            since = self._attempts
            self._retry = True
            while self._committed < target:
                self._raise_if_failed("flush()", since)
                self._flush_wanted = True  # again after a commit that missed this call's jobs
                self._cv.notify_all()
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
        while True:
            with self._cv:
                while not (self._jobs or self._stop or self._flush_wanted or self._commit_due()):
                    self._cv.wait(self._until_commit_due())
                    self._busy_since = time.perf_counter()
                if self._stop and not self._jobs:
                    return
                queued = self._jobs.popleft() if self._jobs else None
                self._attempts += 1
                attempt = self._attempts
            try:
                if queued is not None:
                    self._work(queued)
                    queued = None  # written: a commit that fails must not queue it again
                if self._commit_due() or (self._flush_wanted and not self._jobs):
                    self._flush_wanted = False
                    self._flush_series(durable=self.fsync)
            except BaseException as exc:  # noqa: BLE001 - kept and raised on the caller
                self._failed(exc, attempt, queued)
                continue
            if self.error is not None or self._retry:
                with self._cv:
                    self.error = None
                    self._retry = False
                    self._cv.notify_all()

    def _commit_due(self) -> bool:
        wait = self._until_commit_due()
        return wait is not None and wait <= 0

    def _until_commit_due(self) -> float | None:
        """Seconds until a commit is due (None: nothing to commit, wait to be woken)."""
        if self._done == self._committed:
            return None
        return self._next_commit - time.monotonic()

    def _work(self, queued: _Queued) -> None:
        """Write one job's data; its index rows wait for the next commit, which is due every
        half ``flush_interval`` or when a flush waits for an empty queue, never after every
        job (re-encoding an open zstd chunk each time)."""
        self._handle(queued.job)
        self._parts.clear()
        self._done_with(queued)

    def _done_with(self, queued: _Queued) -> None:
        """Count a finished job and learn how long jobs of its key take (the time since the
        thread finished what it did before: a job, a commit, or waiting) and how much
        longer jobs wait than those costs say (the training thread competing for the
        cores and the GIL, commits)."""
        key = queued.job.key
        now = time.perf_counter()
        seconds, self._busy_since = now - self._busy_since, now
        waited = min(max((now - queued.since) / max(queued.expected, 1e-6), 0.5), 50.0)
        with self._cv:
            old = self._costs.get(key)
            self._costs[key] = seconds if old is None else old + (seconds - old) / 4
            self._slowdown += (waited - self._slowdown) / 16
            self._queued_bytes -= queued.job.nbytes
            self._queued_cost = self._queued_cost - queued.cost if self._jobs else 0.0
            self._done += 1
            self._cv.notify_all()

    def _failed(self, exc: BaseException, attempt: int, queued: _Queued | None) -> None:
        """Keep the error for the callers and the job for a retry, then pause (up to a
        second) unless a caller waits for the retry."""
        with self._cv:
            if queued is not None:
                self._jobs.appendleft(queued)
            self.error = exc
            self._failed_attempt = attempt
            self._cv.notify_all()
            self._cv.wait_for(lambda: self._retry or self._stop, min(self.flush_interval, 1.0))
            self._retry = False
        self._busy_since = time.perf_counter()

    def _flush_series(self, durable: bool) -> None:
        """Commit the index rows of every job done so far. Commits start every half
        ``flush_interval`` (a job then waits for at most that and one commit), but leave at
        least a quarter of it to the jobs when a commit is slow."""
        started = time.monotonic()
        for series in self._series.values():
            self._batch.chunks.extend(series.flush(durable))
        done = self._done
        self._commit()
        with self._cv:
            self._committed = done
            self._next_commit = max(
                started + self._commit_every, time.monotonic() + self._commit_every / 2
            )
            self._cv.notify_all()
        self._busy_since = time.perf_counter()

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

    def _handle(self, job: ArrayJob) -> None:
        if type(job) is TensorJob:
            staged = job.staged
            self._tensor(
                job.key,
                job.step,
                job.epoch,
                job.time,
                host_array(staged),
                staged.dtype,
                job.reduction,
            )
            self.pool.give(staged)  # only now: a retry reads it again
        elif type(job) is RecordJob:
            series_id = self._series_id(job.key, "record")
            self._batch.records.append(
                RecordRow(series_id, job.step, job.epoch, round(job.time * 1e6), job.data)
            )
        elif type(job) is ImageJob:
            self._images(job.key, job.step, job.epoch, job.time, job.images)
        elif type(job) is ArtifactJob:
            self._artifact(job.key, job.source)

    def _artifact(self, name: str, source: BinaryIO) -> None:
        path = artifact_path(self.run_id, name, self.rank)
        source.seek(0)  # an open file: the data stays readable if the path goes away
        data = source.read()
        self.location.write(path, data)
        source.close()
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
                self._scalar(f"{key}/{name}", step, epoch, stamp, value)
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
                self._row(
                    f"{key}/sample_index", step, epoch, stamp, chosen.astype(np.int64), "int64"
                )
                self._samples[key] = chosen
            array = array.reshape(-1)[chosen]
        if reduction.dtype == "float16" and dtype in ("float32", "float64", "bfloat16"):
            if dtype == "bfloat16":
                array = array.view(np.uint16).astype(np.uint32) << 16
                array = array.view(np.float32)
            array, dtype = array.astype(np.float16), "float16"
        self._row(key, step, epoch, stamp, array, dtype)

    def _scalar(self, key: str, step: int, epoch: int, stamp: float, value: float) -> None:
        """Emit a derived scalar once per job, however often the job is retried."""
        if key not in self._parts:
            self.derived.put(DerivedScalar(key, step, epoch, stamp, value))
            self._parts.add(key)

    def _row(
        self, key: str, step: int, epoch: int, stamp: float, array: np.ndarray, dtype: str
    ) -> None:
        """Append a row to the tensor series ``key``, once per job, however often the job is
        retried (a histogram writes two rows; the second may fail)."""
        if key in self._parts:
            return
        series = self._series.get(key)
        if series is None:
            series_id = self._series_id(key, "tensor")
            series = self._series[key] = TensorSeriesWriter(
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
        self._parts.add(key)

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
        rows = []
        for position, (pixels, caption) in enumerate(images):
            png = encode_png(pixels)
            path = f"{series_path(self.run_id, key, self.rank)}/{step}-{position}.png"
            self.location.write(path, png)  # a retry rewrites it whole
            rows.append(
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
        self._batch.images.extend(rows)
        self.bytes_written += sum(row.size for row in rows)
