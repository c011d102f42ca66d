"""The open end of a scalar series: points accumulate here until a chunk is full."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .chunk import Columns, EncodedChunk, make_chunk


@dataclass
class Summary:
    """Running per-series summary: count, NaN-ignoring min and max, last value and steps."""

    count: int = 0
    min: float | None = None
    max: float | None = None
    last: float | None = None
    first_step: int | None = None
    last_step: int | None = None

    def update(self, columns: Columns) -> None:
        """Fold newly appended points into the summary."""
        values = columns.value
        if not len(values):
            return
        if self.first_step is None:
            self.first_step = int(columns.step[0])
        self.count += len(values)
        self.last = float(values[-1])
        self.last_step = int(columns.step[-1])
        finite = values[~np.isnan(values)]
        if len(finite):
            lo, hi = float(finite.min()), float(finite.max())
            self.min = lo if self.min is None else min(self.min, lo)
            self.max = hi if self.max is None else max(self.max, hi)


class SeriesTail:
    """Buffers one series' open chunk; seals it when full and re-encodes it on flush.

    Memory is bounded by ``chunk_size`` points (32 bytes each) per series.
    """

    def __init__(
        self,
        series_id: int,
        chunk_size: int,
        next_seq: int = 0,
        open_chunk: Columns | None = None,
        summary: Summary | None = None,
    ) -> None:
        self.series_id = series_id
        self.chunk_size = chunk_size
        self.summary = summary or Summary()
        self._step = np.empty(chunk_size, np.int64)
        self._epoch = np.empty(chunk_size, np.int64)
        self._time = np.empty(chunk_size, np.int64)
        self._value = np.empty(chunk_size, np.float64)
        self._n = 0
        self._seq = next_seq
        self._dirty = False
        if open_chunk is not None and len(open_chunk.step):
            self._put(open_chunk, 0, len(open_chunk.step))

    def _put(self, columns: Columns, start: int, stop: int) -> None:
        n, m = self._n, stop - start
        self._step[n : n + m] = columns.step[start:stop]
        self._epoch[n : n + m] = columns.epoch[start:stop]
        self._time[n : n + m] = columns.time[start:stop]
        self._value[n : n + m] = columns.value[start:stop]
        self._n += m

    def _columns(self) -> Columns:
        n = self._n
        return Columns(self._step[:n], self._epoch[:n], self._time[:n], self._value[:n])

    def append(self, columns: Columns) -> list[EncodedChunk]:
        """Add points (in step order); return the chunks this sealed."""
        self.summary.update(columns)
        sealed = []
        start, total = 0, len(columns.step)
        while start < total:
            take = min(self.chunk_size - self._n, total - start)
            self._put(columns, start, start + take)
            start += take
            self._dirty = True
            if self._n == self.chunk_size:
                sealed.append(make_chunk(self._seq, self._columns(), sealed=True))
                self._seq += 1
                self._n = 0
                self._dirty = False
        return sealed

    def flush(self) -> EncodedChunk | None:
        """The open chunk re-encoded, if points arrived since the last flush."""
        if not self._dirty or not self._n:
            return None
        self._dirty = False
        return make_chunk(self._seq, self._columns(), sealed=False)
