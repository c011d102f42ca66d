"""Routes of tensor series: a summary with per-step statistics, a 2-D slice at one step and
histograms over steps (computed in ``tensor_views``)."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import QueryParams

from ..query import Store
from . import params
from .jsonenc import column
from .tensor_views import histograms, spread_steps, step_stats, tensor_slice

#: Most steps a request may ask statistics or histograms of.
MAX_STEPS = 10_000
#: Most histogram bins a request may ask for.
MAX_BINS = 1024


def summary(store: Store, query: QueryParams, run: str) -> dict[str, Any]:
    """``GET /api/runs/{id}/tensors?key=K&max_steps=500``: dtype, one step's shape, every
    recorded step and statistics at up to ``max_steps`` of them."""
    key = params.key(query)
    max_steps = params.integer(query, "max_steps", 500, 2, MAX_STEPS)
    series = store.run(run).tensor(key)
    return {
        "key": key,
        "dtype": str(series.dtype),
        "shape": list(series.shape[1:]),
        "steps": spread_steps(series, len(series.steps)).tolist(),
        "stats": step_stats(series, spread_steps(series, max_steps)),
    }


def slice_(store: Store, query: QueryParams, run: str) -> dict[str, Any]:
    """``GET /api/runs/{id}/tensors/slice?key=K&step=S&index=i,j``: a 2-D slice for a
    heatmap."""
    key = params.key(query)
    step = params.required_integer(query, "step", *params.INT64)
    index = params.indices(query, "index")
    found = tensor_slice(store.run(run).tensor(key), step, index)
    return {**found, "values": column(found["values"])}


def histogram(store: Store, query: QueryParams, run: str) -> dict[str, Any]:
    """``GET /api/runs/{id}/tensors/histogram?key=K&bins=64&max_steps=200``: counts per step
    over shared edges."""
    key = params.key(query)
    bins = params.integer(query, "bins", 64, 1, MAX_BINS)
    max_steps = params.integer(query, "max_steps", 200, 2, MAX_STEPS)
    series = store.run(run).tensor(key)
    found = histograms(series, spread_steps(series, max_steps), bins)
    return {**found, "edges": column(found["edges"])}
