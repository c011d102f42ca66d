"""Scalar points as Arrow tables: one schema shared by ``Store.to_arrow`` and Parquet export."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from .views import RunView


def points_schema(with_rank: bool = False) -> pa.Schema:
    """``run_id, project, run, key, [rank,] step, epoch, time (µs, UTC), value``."""
    import pyarrow as pa

    return pa.schema(
        [
            ("run_id", pa.string()),
            ("project", pa.string()),
            ("run", pa.string()),
            ("key", pa.string()),
            *([("rank", pa.int64())] if with_rank else []),
            ("step", pa.int64()),
            ("epoch", pa.int64()),
            ("time", pa.timestamp("us", tz="UTC")),
            ("value", pa.float64()),
        ]
    )


def points_table(view: RunView, frame: pd.DataFrame) -> pa.Table:
    """One run's points (a frame from ``RunView.scalars``) as a table of :func:`points_schema`
    (with ``rank`` when the frame has it)."""
    import pyarrow as pa

    count = len(frame)
    with_rank = "rank" in frame
    columns = {
        "run_id": pa.array([view.id] * count, pa.string()),
        "project": pa.array([view.project] * count, pa.string()),
        "run": pa.array([view.name] * count, pa.string()),
        "key": pa.array(frame["key"]).cast(pa.string()),
    }
    if with_rank:
        columns["rank"] = pa.array(frame["rank"].to_numpy(), pa.int64())
    columns.update(
        step=pa.array(frame["step"].to_numpy(), pa.int64()),
        epoch=pa.array(frame["epoch"], pa.int64()),
        time=utc_micros(frame["time"]),
        value=pa.array(frame["value"].to_numpy(), pa.float64()),
    )
    return pa.table(columns, schema=points_schema(with_rank))


def utc_micros(times: pd.Series) -> pa.Array:
    """A column of UTC times as an Arrow ``timestamp[us, UTC]`` array (through NumPy, not
    ``Series.values``, which every pyarrow/pandas pairing converts differently)."""
    import pyarrow as pa

    micros = times.dt.tz_convert(None).to_numpy().astype("datetime64[us]").view("int64")
    return pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
