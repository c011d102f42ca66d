"""Runs as a table, the MLflow ``search_runs`` shape: one row per run with its metadata,
its params flattened into ``params.*`` columns and chosen statistics of its scalar keys in
``metrics.KEY.STAT`` columns; as a pandas DataFrame or as an Arrow table (for DuckDB)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..backends.base import dotted_params
from ..errors import InvalidArgumentError
from .columns import arrow_column, pandas_column

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from .views import RunView

#: The statistics of a scalar key a runs table can show, in their column order.
STATS = ("last", "min", "max", "count")


def duration(view: RunView, now: float) -> float | None:
    """Seconds from the run's start to its end; a running run's lasts until ``now``, one
    that stopped without an end time (crashed) until its last heartbeat; None if unknown."""
    live = view.status == "running"  # a running run whose heartbeat stopped reads as crashed
    end = view.ended if view.ended is not None else now if live else view.heartbeat
    return None if end is None else max(0.0, end - view.created)


def scalar_summary(view: RunView) -> dict[str, dict[str, Any]]:
    """Per scalar key (rank 0's, sorted): its ``last``, ``min``, ``max`` and ``count``."""
    scalar = set(view.keys("scalar"))
    return {
        key: {stat: figures[stat] for stat in STATS}
        for key, figures in view.summary.items()
        if key in scalar
    }


def check_stats(metrics: str | Iterable[str]) -> list[str]:
    """The statistics ``metrics`` names (one or several of :data:`STATS`), in the order
    given, once each; ``InvalidArgumentError`` listing the choices for anything else."""
    chosen = [metrics] if isinstance(metrics, str) else metrics
    if not isinstance(chosen, Iterable):
        raise InvalidArgumentError(
            f"metrics={metrics!r}: expected a list of statistics among {', '.join(STATS)}"
        )
    picked = list(chosen)
    for stat in picked:
        if stat not in STATS:
            raise InvalidArgumentError(
                f"metrics: {stat!r} is not a statistic; expected any of {', '.join(STATS)}"
            )
    return list(dict.fromkeys(picked))


def runs_frame(views: Sequence[RunView], metrics: Sequence[str], now: float) -> pd.DataFrame:
    """The runs as a DataFrame: ``id, name, project, status, created`` (UTC),
    ``duration`` (seconds, see :func:`duration`), ``tags`` (lists), ``params.*`` (sorted)
    and, per scalar key (sorted) and statistic of ``metrics`` (as :func:`check_stats` gives
    them), ``metrics.KEY.STAT``: float64, NaN where a run lacks the key, except ``count``
    (int64, 0 where it lacks it). ``now`` ends running runs' durations."""
    import pandas as pd

    columns: dict[str, Any] = {
        "id": _objects([v.id for v in views]),
        "name": _objects([v.name for v in views]),
        "project": _objects([v.project for v in views]),
        "status": _objects([v.status for v in views]),
        "created": pd.to_datetime(_micros([v.created for v in views]), unit="us", utc=True),
        "duration": _floats([duration(v, now) for v in views]),
        "tags": _objects([v.tags for v in views]),
    }
    columns.update(
        (f"params.{name}", pandas_column(values)) for name, values in _params(views).items()
    )
    summaries = [scalar_summary(v) for v in views]
    for key in sorted({k for summary in summaries for k in summary}):
        for stat in metrics:
            figures = [summary.get(key) for summary in summaries]
            if stat == "count":
                column = np.array([0 if f is None else f["count"] for f in figures], np.int64)
            else:
                column = _floats([None if f is None else f[stat] for f in figures])
            columns[f"metrics.{key}.{stat}"] = column
    return pd.DataFrame(columns, index=pd.RangeIndex(len(views)))


def runs_table(views: Sequence[RunView], now: float) -> pa.Table:
    """The runs as an Arrow table: the columns of :func:`runs_frame` without metrics;
    ``created`` is a UTC timestamp (µs), ``tags`` a list of strings and the ``params.*``
    columns typed as :mod:`stepstore.query.columns` says (JSON text where values vary)."""
    import pyarrow as pa

    fixed = pa.table(
        {
            "id": pa.array([v.id for v in views], pa.string()),
            "name": pa.array([v.name for v in views], pa.string()),
            "project": pa.array([v.project for v in views], pa.string()),
            "status": pa.array([v.status for v in views], pa.string()),
            "created": pa.array(_micros([v.created for v in views]), pa.timestamp("us", "UTC")),
            "duration": pa.array([duration(v, now) for v in views], pa.float64()),
            "tags": pa.array([v.tags for v in views], pa.list_(pa.string())),
        }
    )
    for name, column in param_arrays(views).items():
        fixed = fixed.append_column(name, column)
    return fixed


def param_arrays(views: Sequence[RunView]) -> dict[str, pa.Array]:
    """Per flattened param (sorted), its ``params.NAME`` column: one value per run, typed
    as :mod:`stepstore.query.columns` says, null where a run lacks the param."""
    return {f"params.{name}": arrow_column(values) for name, values in _params(views).items()}


def _params(views: Sequence[RunView]) -> dict[str, list[Any]]:
    """Per flattened param name (sorted), each run's value (None where it has none)."""
    flat = [dict(dotted_params(v.params)) for v in views]
    names = sorted({name for params in flat for name in params})
    return {name: [params.get(name) for params in flat] for name in names}


def _objects(values: list[Any]) -> np.ndarray:
    column = np.empty(len(values), object)
    column[:] = values
    return column


def _floats(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], np.float64)


def _micros(seconds: list[float]) -> np.ndarray:
    """Unix seconds as whole microseconds."""
    return np.round(np.array(seconds, np.float64) * 1e6).astype(np.int64)
