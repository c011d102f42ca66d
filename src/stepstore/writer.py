"""The background writer: drains a run's journal into chunked series in its store.

The training thread only appends to the journal (host scalars) or to a bounded in-memory
queue (device scalars, resolved here so the training thread never waits for a device).
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
from itertools import pairwise
from typing import Any

import numpy as np

from .backends.base import Backend
from .errors import RunStateError, WriterError
from .journal import Journal
from .series.chunk import Columns, EncodedChunk, decode
from .series.tail import SeriesTail, Summary

#: A device value waiting for the writer: (order, key id, step, epoch, time in s, value);
#: order = 2 * journal seq + 1 places it after the host records logged before it.
Deferred = tuple[int, int, int, int, float, Any]


class Cursor:
    """Journal positions shared by the training thread and the writer."""

    __slots__ = ("committed", "written")

    def __init__(self, committed: int) -> None:
        self.written = committed
        self.committed = committed


class SeriesSink:
    """Appends batches of points to one rank's series of a run and commits them with the
    journal position.

    Series tails are loaded from the store on first use, so a resumed or recovered run
    continues its open chunks.
    """

    def __init__(self, backend: Backend, run_id: str, chunk_size: int, rank: int = 0) -> None:
        self.backend = backend
        self.run_id = run_id
        self.chunk_size = chunk_size
        self.rank = rank
        self._tails: dict[str, SeriesTail] = {}
        self._summaries: dict[str, Summary] | None = None

    def _tail(self, key: str, kind: str) -> SeriesTail:
        tail = self._tails.get(key)
        if tail is None:
            if self._summaries is None:
                self._summaries = {
                    s.key: s.summary for s in self.backend.series(self.run_id, self.rank)
                }
            series_id = self.backend.ensure_series(self.run_id, key, kind, self.rank)
            open_row = self.backend.open_chunk(series_id)
            open_chunk = None
            if open_row is not None:
                open_chunk = decode(open_row.data or b"", f"run {self.run_id} key {key!r}")
                next_seq = open_row.seq
            else:
                next_seq = self.backend.next_chunk_seq(series_id)
            summary = self._summaries.get(key)
            tail = SeriesTail(series_id, self.chunk_size, next_seq, open_chunk, summary)
            self._tails[key] = tail
        return tail

    def write(
        self,
        keys: Sequence[tuple[str, str]],
        key_ids: np.ndarray,
        columns: Columns,
        run_fields: dict[str, Any],
    ) -> int:
        """Append points (``key_ids`` index ``keys``: (name, kind)) and commit; returns count.

        On failure the in-memory tails are dropped, so a retry reloads them from the store
        and nothing is written twice.
        """
        chunks: list[tuple[int, EncodedChunk]] = []
        touched: list[SeriesTail] = []
        try:
            if len(key_ids):
                order = np.argsort(key_ids, kind="stable")
                sorted_ids = key_ids[order]
                starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
                bounds = [*starts.tolist(), len(order)]
                for a, b in pairwise(bounds):
                    pick = order[a:b]
                    name, kind = keys[int(sorted_ids[a])]
                    tail = self._tail(name, kind)
                    part = Columns(*(c[pick] for c in columns))
                    chunks.extend((tail.series_id, c) for c in tail.append(part))
                    touched.append(tail)
            for tail in touched:
                partial = tail.flush()
                if partial is not None:
                    chunks.append((tail.series_id, partial))
            summaries = [(t.series_id, t.summary) for t in touched]
            self.backend.commit(self.run_id, chunks, summaries, run_fields, self.rank)
        except BaseException:
            self._tails.clear()
            self._summaries = None
            raise
        return len(key_ids)


def journal_columns(records: np.ndarray) -> tuple[np.ndarray, Columns]:
    """Key ids and columns of journal records (time converted to µs)."""
    return records["key"].astype(np.int64), Columns(
        records["step"].copy(),
        records["epoch"].copy(),
        np.round(records["time"] * 1e6).astype(np.int64),
        records["value"].copy(),
    )


class Writer:
    """The thread that moves one run's journal and device-value queue into its store."""

    def __init__(
        self,
        sink: SeriesSink,
        journal: Journal,
        cursor: Cursor,
        keys: list[tuple[str, str]],
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
        self.deferred: deque[Deferred] = deque()
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
        while self.deferred and self.deferred[0][0] <= limit:
            deferred.append(self.deferred.popleft())
        try:
            if deferred:
                key_ids, columns, resolved = _merge_deferred(
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
        return bool(self.deferred) and self.deferred[0][0] <= 2 * target + 1

    def defer(self, items: Sequence[Deferred]) -> None:
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

    def withdraw(self, items: Sequence[Deferred]) -> None:
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


def _merge_deferred(
    seqs: np.ndarray, key_ids: np.ndarray, columns: Columns, deferred: list[tuple]
) -> tuple[np.ndarray, Columns, dict[int, float]]:
    """Resolve device values (this may wait for the device) and merge them in log order;
    also the last resolved value of each key id."""
    order = np.concatenate([seqs.astype(np.int64) * 2, [d[0] for d in deferred]])
    extra_ids = np.array([d[1] for d in deferred], dtype=np.int64)
    extra = Columns(
        np.array([d[2] for d in deferred], dtype=np.int64),
        np.array([d[3] for d in deferred], dtype=np.int64),
        np.round(np.array([d[4] for d in deferred]) * 1e6).astype(np.int64),
        np.array(
            [d[5] if type(d[5]) is float else float(d[5].item()) for d in deferred],
            dtype=np.float64,
        ),
    )
    pick = np.argsort(order, kind="stable")
    merged = Columns(*(np.concatenate([a, b])[pick] for a, b in zip(columns, extra, strict=True)))
    resolved = dict(zip(extra_ids.tolist(), extra.value.tolist(), strict=True))
    return np.concatenate([key_ids, extra_ids])[pick], merged, resolved
