"""The scalar writer thread: drains a run's journal into chunked series in its store.

The training thread only appends to the journal (host scalars) or to a bounded in-memory
queue (device scalars, resolved here so the training thread never waits for a device);
scalars derived beside training (tensor statistics from the array writer, system metrics)
arrive on that queue too, as :class:`~.messages.DerivedScalar` messages.
The writer wakes every ``flush_interval`` seconds, when the journal or the device-value
queue is half full, or when asked to flush, and writes everything logged so far in one
backend transaction, data before the journal position that says it is written. Errors are
kept and re-raised on the caller's next call; nothing is removed from the journal until it
is committed. A caller that waits (``flush()``, ``stop()``, a full journal or queue) has a
failed flush retried at once and raises only if an attempt made after it began fails too.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import RunStateError, WriterError
from ..series.chunk import Columns
from .journal import Journal, journal_columns
from .keys import KeyRegistry
from .messages import DerivedScalar, DeviceValue
from .sink import ScalarSink


class Cursor:
    """Journal positions shared by the training thread and the writer."""

    __slots__ = ("committed", "written")

    def __init__(self, committed: int) -> None:
        self.written = committed
        self.committed = committed


class ScalarWriter:
    """The thread that moves one run's journal and device-value queue into its store."""

    def __init__(
        self,
        sink: ScalarSink,
        journal: Journal,
        cursor: Cursor,
        keys: Sequence[tuple[str, str]],
        flush_interval: float,
        run_fields: Callable[[], dict[str, Any]],
    ) -> None:
        self.sink = sink
        self.journal = journal
        self.cursor = cursor
        self.keys = keys
        self.flush_interval = flush_interval
        self.run_fields = run_fields
        #: Device values waiting for the writer, in log order (filled by ``defer``).
        self.deferred: deque[DeviceValue] = deque()
        #: Key id -> the last device (deferred) value written, for the progress line.
        self.resolved: dict[int, float] = {}
        #: How many device values may wait, as many as the journal holds.
        self.max_deferred = journal.capacity
        self.error: BaseException | None = None
        self.flushes = 0
        self.points = 0
        self.waits = 0
        self.wait_seconds = 0.0
        self._wake = threading.Event()
        self._retry = threading.Event()  # a caller waits: skip the pause after a failure
        self._progress = threading.Condition()
        #: Held while a flush moves points from the journal and queue into the store: a
        #: live read holding it sees each point in exactly one of them.
        self.writing = threading.Lock()
        self._attempts = 0  # flush attempts begun
        self._failed_attempt = 0  # the attempt that raised ``error``
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="stepstore-writer", daemon=True)

    def start(self) -> None:
        """Start the background thread."""
        self._thread.start()

    def wake(self) -> None:
        """Ask for a flush now, without waiting for it."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            if self._stop:
                break
            try:
                self.flush_once()
            except BaseException:  # noqa: BLE001 - kept in ``error`` for the caller
                self._retry.wait(min(self.flush_interval, 1.0))
            self._retry.clear()

    def flush_once(self) -> None:
        """Write everything logged so far; raises what the store raised (and keeps it in
        ``error`` for the training thread)."""
        with self._progress:
            self._attempts += 1
            attempt = self._attempts
        try:
            with self.writing:
                self._write()
        except BaseException as exc:
            with self._progress:
                self.error = exc
                self._failed_attempt = attempt
                self._progress.notify_all()
            raise

    def _write(self) -> None:
        written = self.cursor.written
        committed = self.cursor.committed
        records = self.journal.read(committed + 1, written + 1)
        key_ids, columns = journal_columns(records)
        deferred = []
        limit = 2 * written + 1
        while self.deferred and self.deferred[0].order <= limit:
            deferred.append(self.deferred.popleft())
        try:
            if deferred:
                key_ids, columns, resolved = merge_deferred(
                    records["seq"], key_ids, columns, deferred
                )
                self.resolved.update(resolved)
            fields = self.run_fields()
            fields.update(journal_seq=written, heartbeat=time.time())
            self.points += self.sink.write(self.keys, key_ids, columns, fields)
        except BaseException:
            self.deferred.extendleft(reversed(deferred))
            raise
        self.flushes += 1
        self.error = None
        with self._progress:
            self.cursor.committed = written
            self._progress.notify_all()

    def wait_until(self, ready: Callable[[], bool], what: str) -> None:
        """Wake the writer and block until ``ready()``; raise the writer's error if a flush
        attempted after this call began fails (an older failure is retried first)."""
        with self._progress:
            since = self._attempts
            while not ready():
                if self.error is not None and self._failed_attempt > since:
                    raise WriterError(f"{what}: the writer failed: {self.error}") from self.error
                if not self._thread.is_alive():
                    raise RunStateError(f"{what}: the writer is not running")
                self._retry.set()
                self._wake.set()
                self._progress.wait(0.5)

    def wait_for_space(self, needed: int) -> None:
        """Block the caller until the journal has room for ``needed`` more records."""
        start = time.perf_counter()
        limit = self.journal.capacity - needed
        self.wait_until(
            lambda: self.cursor.written - self.cursor.committed <= limit, "log() waiting for room"
        )
        self.waits += 1
        self.wait_seconds += time.perf_counter() - start

    def flush(self) -> None:
        """Block until everything logged before this call is in the store."""
        target = self.cursor.written
        self.wait_until(
            lambda: self.cursor.committed >= target and not self._pending_deferred(target),
            "flush()",
        )

    def _pending_deferred(self, target: int) -> bool:
        return bool(self.deferred) and self.deferred[0].order <= 2 * target + 1

    def defer(self, items: Sequence[DeviceValue]) -> None:
        """Queue device values for the writer to resolve (the training thread never waits
        for a device). Like the journal, the queue is bounded (``max_deferred``): the caller
        waits while it is full (counted in ``waits``), wakes the writer once it is half full,
        and gets ``WriterError`` when the writer keeps failing."""
        if len(self.deferred) + len(items) > self.max_deferred and self.deferred:
            start = time.perf_counter()
            limit = self.max_deferred - len(items)
            self.wait_until(
                lambda: len(self.deferred) <= limit or not self.deferred,
                "log() waiting for room for device values",
            )
            self.waits += 1
            self.wait_seconds += time.perf_counter() - start
        self.deferred.extend(items)
        if len(self.deferred) > self.max_deferred // 2:
            self._wake.set()

    def withdraw(self, items: Sequence[DeviceValue]) -> None:
        """Take back device values queued by a ``log()`` that then failed, those the writer
        has not taken yet."""
        for item in items:
            with contextlib.suppress(ValueError):
                self.deferred.remove(item)

    def stop(self) -> None:
        """Stop the thread after a last flush; raise if that flush fails."""
        self._stop = True
        self._wake.set()
        self._retry.set()
        self._thread.join()
        self.flush_once()


def merge_deferred(
    seqs: np.ndarray, key_ids: np.ndarray, columns: Columns, deferred: Sequence[DeviceValue]
) -> tuple[np.ndarray, Columns, dict[int, float]]:
    """Resolve device values (this may wait for the device) and merge them in log order;
    also the last resolved value of each key id."""
    orders, ids, steps, epochs, times, values = zip(*deferred, strict=True)
    order = np.concatenate([seqs.astype(np.int64) * 2, orders])
    extra_ids = np.array(ids, dtype=np.int64)
    extra = Columns(
        np.array(steps, dtype=np.int64),
        np.array(epochs, dtype=np.int64),
        np.round(np.array(times) * 1e6).astype(np.int64),
        np.array([v if type(v) is float else float(v.item()) for v in values], dtype=np.float64),
    )
    pick = np.argsort(order, kind="stable")
    merged = Columns(*(np.concatenate([a, b])[pick] for a, b in zip(columns, extra, strict=True)))
    resolved = dict(zip(extra_ids.tolist(), extra.value.tolist(), strict=True))
    return np.concatenate([key_ids, extra_ids])[pick], merged, resolved


class DerivedScalars:
    """Where scalars computed beside training go (tensor statistics from the array writer,
    system metrics): registered as scalar keys if new, then queued on the scalar writer
    after the host points logged so far."""

    def __init__(self, keys: KeyRegistry, writer: ScalarWriter) -> None:
        self._keys = keys
        self._writer = writer

    def put(self, scalar: DerivedScalar) -> None:
        """Record ``scalar``; waits while the scalar writer's queue is full."""
        state = self._keys.add(scalar.key, "scalar")
        order = 2 * self._writer.cursor.written + 1
        self._writer.defer(
            [DeviceValue(order, state.id, scalar.step, scalar.epoch, scalar.time, scalar.value)]
        )
        state.count += 1
        state.value = scalar.value
