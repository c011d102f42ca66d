"""Live reads in the training process: what a run logged under a scalar key, including
points the writer has not flushed yet, without waiting for it.

A flush moves points from the journal (host scalars) and the device-value queue into the
store while holding the scalar writer's ``writing`` lock; a read holding that lock takes
the committed points from the store and the rest from the journal ring and the queue, so
each point is read exactly once. Only what is asked for is read: the last ``last`` points
come from the pending ones first, then from as few stored chunks as hold the rest.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..backends.base import Backend
from ..series.chunk import NO_EPOCH, Columns, decode
from .journal import Journal
from .keys import KeyState
from .writer import ScalarWriter


class History(NamedTuple):
    """The points of one scalar key, oldest first: steps, epochs (-1 where none was given)
    and values, as NumPy arrays of equal length."""

    step: np.ndarray
    epoch: np.ndarray
    value: np.ndarray


class LiveReader:
    """Reads the scalar points of one rank of a run as its training thread logged them."""

    def __init__(
        self, backend: Backend, run_id: str, rank: int, journal: Journal, writer: ScalarWriter
    ) -> None:
        self._backend = backend
        self._run_id = run_id
        self._rank = rank
        self._journal = journal
        self._writer = writer
        self._series_ids: dict[str, int] = {}

    def history(self, state: KeyState, last: int | None) -> History:
        """The key's points (its last ``last`` when given), stored and pending, in log
        order."""
        with self._writer.writing:
            pending = self._pending(state)
            wanted = None if last is None else last - len(pending[0])
            stored = self._stored(state.key, wanted) if wanted is None or wanted > 0 else None
        step, epoch, value = pending
        if stored is not None:
            step = np.concatenate([stored.step, step])
            epoch = np.concatenate([stored.epoch, epoch])
            value = np.concatenate([stored.value, value])
        if last is not None:
            step, epoch, value = step[-last:], epoch[-last:], value[-last:]
        return History(step, np.where(epoch == NO_EPOCH, -1, epoch), value)

    def _pending(self, state: KeyState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The key's points not yet in the store: journal records past the committed
        position and queued device values, merged in log order."""
        cursor = self._writer.cursor
        records = self._journal.read(cursor.committed + 1, cursor.written + 1)
        mine = records[records["key"] == state.id]
        queued = [item for item in list(self._writer.deferred) if item.key_id == state.id]
        order = np.concatenate([mine["seq"].astype(np.int64) * 2, [d.order for d in queued]])
        pick = np.argsort(order, kind="stable")
        step = np.concatenate([mine["step"], np.array([d.step for d in queued], np.int64)])
        epoch = np.concatenate([mine["epoch"], np.array([d.epoch for d in queued], np.int64)])
        value = np.concatenate(
            [mine["value"], np.array([_host(d.value) for d in queued], np.float64)]
        )
        return step[pick], epoch[pick], value[pick]

    def _stored(self, key: str, wanted: int | None) -> Columns | None:
        """The key's stored points (only the chunks that hold its last ``wanted``)."""
        series_id = self._series_id(key)
        if series_id is None:
            return None
        rows = self._backend.chunks(series_id, with_data=False)
        if wanted is not None:
            held, first = 0, len(rows)
            while first > 0 and held < wanted:
                first -= 1
                held += rows[first].count
            rows = rows[first:]
        if not rows:
            return None
        low, high = min(r.first_step for r in rows), max(r.last_step for r in rows)
        seqs = {r.seq for r in rows}
        where = f"run {self._run_id} key {key!r}"
        parts = [
            decode(row.data or b"", where)
            for row in self._backend.chunks(series_id, steps=(low, high))
            if row.seq in seqs
        ]
        return Columns(*(np.concatenate(column) for column in zip(*parts, strict=True)))

    def _series_id(self, key: str) -> int | None:
        series_id = self._series_ids.get(key)
        if series_id is None:
            for series in self._backend.series(self._run_id, self._rank):
                self._series_ids[series.key] = series.id
            series_id = self._series_ids.get(key)
        return series_id


def _host(value: object) -> float:
    """A queued value as a host float (a device scalar is read from its device now)."""
    return value if type(value) is float else float(value.item())  # type: ignore[attr-defined]
