"""Scalar points into a run's series: appended to each key's open chunk and committed to
the store together with the journal position they reach (the scalar writer's and
recovery's way into the store)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..series.chunk import Columns, EncodedChunk, decode
from ..series.tail import SeriesTail, Summary


class ScalarSink:
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
