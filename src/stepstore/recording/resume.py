"""What a resumed run (or a rejoining rank) takes up from its store: its keys with their
counts, last steps and values, its step and its epoch."""

from __future__ import annotations

from ..backends.base import Backend, RunRecord, SeriesRecord
from ..series.chunk import NO_EPOCH, decode
from .keys import KeyRegistry


def restore(
    backend: Backend, record: RunRecord, rank: int, keys: KeyRegistry
) -> tuple[int, int | None]:
    """Register the stored keys of ``record``'s ``rank`` in ``keys``; return the run's step
    (one past the last training step) and epoch (that of the last scalar point at that
    step). System keys count their own sample steps and move neither."""
    step = 0
    last: tuple[int, SeriesRecord] | None = None  # the scalar series that ends last
    for series in backend.series(record.id, rank):
        state = keys.add(series.key, series.kind)
        state.count = series.summary.count
        state.value = series.summary.last
        state.last_step = series.summary.last_step if series.summary.last_step is not None else -1
        if series.key.startswith("system/"):
            continue
        step = max(step, state.last_step + 1)
        ends_last = last is None or state.last_step > last[0]
        if series.kind == "scalar" and state.last_step >= 0 and ends_last:
            last = (state.last_step, series)
    for key, info in record.capture.get("keys", {}).items():
        if key in keys.states:
            keys.states[key].rejected = info.get("skipped", 0)
    return step, None if last is None else _last_epoch(backend, *last)


def _last_epoch(backend: Backend, step: int, series: SeriesRecord) -> int | None:
    """The epoch of a scalar series' last point, at ``step`` (None when it was logged
    without one)."""
    chunks = backend.chunks(series.id, steps=(step, step))
    if not chunks or chunks[-1].data is None:
        return None
    epoch = int(decode(chunks[-1].data, f"series {series.key!r}").epoch[-1])
    return None if epoch == NO_EPOCH else epoch
