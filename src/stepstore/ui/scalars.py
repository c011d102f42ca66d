"""Routes of scalar series: JSON for charts (min/max downsampled over an x range) and the
same points as CSV or Parquet downloads."""

from __future__ import annotations

import csv
import glob
import io
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
from starlette.datastructures import QueryParams
from starlette.responses import Response

from ..errors import InvalidArgumentError, NotFoundError
from ..query import RunView, Store
from ..series.chunk import NO_EPOCH
from . import params
from .jsonenc import column

#: The columns ``x`` may name, the default first.
X_COLUMNS = ("step", "epoch", "time")
#: Largest ``max_points`` a request may ask for.
MAX_POINTS = 100_000


@dataclass(frozen=True)
class Points:
    """One key's points: ``epoch`` is valid where ``has_epoch``; ``time`` in µs."""

    key: str
    step: np.ndarray
    epoch: np.ndarray
    has_epoch: np.ndarray
    time: np.ndarray
    value: np.ndarray

    @classmethod
    def empty(cls, key: str) -> Points:
        """A key with no point in the range."""
        none = np.empty(0, np.int64)
        return cls(key, none, none, np.empty(0, bool), none, np.empty(0, np.float64))

    def to_json(self) -> dict[str, Any]:
        """The series as the API answers it (``time`` in Unix seconds)."""
        epochs: list[Any] = self.epoch.tolist()
        for i in np.flatnonzero(~self.has_epoch).tolist():
            epochs[i] = None
        return {
            "key": self.key,
            "step": self.step.tolist(),
            "epoch": epochs,
            "time": (self.time / 1e6).tolist(),
            "value": column(self.value),
        }


def _ranges(x: str, start: Decimal | None, stop: Decimal | None) -> dict[str, Any] | None:
    """``RunView.scalars`` keyword arguments bounding ``x`` by ``[start, stop]``; None when
    no point can lie in it (no integer step or epoch between the bounds)."""
    if start is None and stop is None:
        return {}
    if x == "time":
        for name, value in (("start", start), ("stop", stop)):
            if value is not None and not math.isfinite(float(value)):
                raise InvalidArgumentError(f"{name}={value}: expected Unix seconds within range")
        return {"times": tuple(None if v is None else float(v) for v in (start, stop))}
    bounds = params.integer_bounds(start, stop)
    if bounds is None:
        return None
    if x == "epoch":  # points logged without an epoch are outside every epoch range
        return {"epochs": (max(bounds[0], NO_EPOCH + 1), bounds[1])}
    return {"steps": bounds}


def _exact(key: str) -> str:
    """``key`` as a pattern ``RunView.scalars`` matches only to itself."""
    return glob.escape(key) if any(c in key for c in "*?[") else key


def read_points(store: Store, query: QueryParams, run: str) -> tuple[RunView, list[Points]]:
    """The run and the points of each ``key`` the query names, within ``start``/``stop``
    of ``x`` and downsampled to ``max_points``.

    Raises:
        InvalidArgumentError: A parameter is malformed.
        NotFoundError: No such run, or it has no such scalar key.
    """
    wanted = params.keys(query)
    x = params.choice(query, "x", X_COLUMNS)
    start, stop = params.window(query)
    max_points = params.optional_integer(query, "max_points", 2, MAX_POINTS)
    view = store.run(run)
    known = view.keys("scalar")
    for key in wanted:
        if key not in known:
            raise NotFoundError(
                f"run {view.name} ({view.id}) has no scalar key {key!r}; scalar keys: "
                f"{', '.join(sorted(known)) or 'none'}"
            )
    ranges = _ranges(x, start, stop)
    if ranges is None:
        return view, [Points.empty(key) for key in wanted]
    found = []
    for key in wanted:
        frame = view.scalars(_exact(key), max_points=max_points, **ranges)
        epoch = frame["epoch"]
        found.append(
            Points(
                key,
                frame["step"].to_numpy(np.int64),
                epoch.fillna(0).to_numpy(np.int64),
                epoch.notna().to_numpy(bool),
                frame["time"].dt.tz_convert(None).to_numpy("datetime64[us]").view(np.int64),
                frame["value"].to_numpy(np.float64),
            )
        )
    return view, found


def series(store: Store, query: QueryParams, run: str) -> dict[str, Any]:
    """``GET /api/runs/{id}/scalars``: the points of each key as columns."""
    _, found = read_points(store, query, run)
    return {"series": [points.to_json() for points in found]}


def _download(view: RunView, body: bytes, suffix: str, media_type: str) -> Response:
    """``body`` as a file download named after the run."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", view.name).strip("._") or view.id
    return Response(
        body,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{name}-scalars.{suffix}"'},
    )


def csv_file(store: Store, query: QueryParams, run: str) -> Response:
    """``GET /api/runs/{id}/scalars.csv``: columns key, step, epoch (empty where none), time
    (ISO 8601 UTC to the µs), value (``repr``: exact; ``nan``, ``inf``, ``-inf``)."""
    view, found = read_points(store, query, run)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["key", "step", "epoch", "time", "value"])
    for points in found:
        times = np.datetime_as_string(points.time.astype("datetime64[us]"), unit="us")
        for step, epoch, has, when, value in zip(
            points.step.tolist(),
            points.epoch.tolist(),
            points.has_epoch.tolist(),
            times.tolist(),
            points.value.tolist(),
            strict=True,
        ):
            writer.writerow([points.key, step, epoch if has else "", when + "Z", repr(value)])
    return _download(view, out.getvalue().encode("utf-8"), "csv", "text/csv; charset=utf-8")


def parquet_file(store: Store, query: QueryParams, run: str) -> Response:
    """``GET /api/runs/{id}/scalars.parquet``: columns key (string), step (int64), epoch
    (int64, null where none), time (timestamp µs UTC), value (float64)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    view, found = read_points(store, query, run)
    table = pa.table(
        {
            "key": pa.array([p.key for p in found for _ in range(len(p.step))], pa.string()),
            "step": pa.array(np.concatenate([np.empty(0, np.int64), *(p.step for p in found)])),
            "epoch": pa.array(
                np.concatenate([np.empty(0, np.int64), *(p.epoch for p in found)]),
                mask=~np.concatenate([np.empty(0, bool), *(p.has_epoch for p in found)]),
            ),
            "time": pa.array(
                np.concatenate([np.empty(0, np.int64), *(p.time for p in found)]),
                pa.timestamp("us", tz="UTC"),
            ),
            "value": pa.array(np.concatenate([np.empty(0, np.float64), *(p.value for p in found)])),
        }
    )
    out = io.BytesIO()
    pq.write_table(table, out)
    return _download(view, out.getvalue(), "parquet", "application/vnd.apache.parquet")
