"""Comparing runs: summary metrics, the params that vary, sort orders, where two series part.

The pieces behind ``stepstore runs`` and ``stepstore diff``, kept free of any output format.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backends.base import dotted_params
from ..errors import InvalidArgumentError, NotFoundError
from ..series.chunk import Columns
from .runs_frame import STATS
from .views import RunView

#: Key prefixes the default metrics leave out: machine and per-layer series.
NOT_DEFAULT = ("system/", "activations/", "gradients/", "weights/")
#: Key prefixes of evaluation metrics, which the default metrics prefer.
EVALUATION = ("val/", "val_", "valid/", "validation/", "eval/", "test/")
#: Run fields a sort may name besides params and metrics.
FIELDS = ("id", "name", "project", "status", "created", "ended", "duration")
_METRIC_FORM = "KEY or KEY:" + "|".join(STATS)


@dataclass(frozen=True)
class Metric:
    """A summary value of a scalar key: its ``last`` value, ``min``, ``max`` or ``count``."""

    key: str
    stat: str = "last"

    @classmethod
    def parse(cls, text: str) -> Metric:
        """``KEY`` (its last value) or ``KEY:STAT``; a colon not followed by a stat name is
        part of the key."""
        key, sep, stat = text.rpartition(":")
        if sep and key and stat in STATS:
            return cls(key, stat)
        if not text or text.endswith(":"):
            raise InvalidArgumentError(f"metric {text!r}: expected {_METRIC_FORM}")
        return cls(text)

    @property
    def label(self) -> str:
        """``KEY`` for the last value, else ``KEY:STAT``."""
        return self.key if self.stat == "last" else f"{self.key}:{self.stat}"

    def of(self, view: RunView) -> Any:
        """The run's value of this metric; None when the run did not record the key."""
        stats = view.summary.get(self.key)
        return None if stats is None else stats[self.stat]


def scalar_keys(views: Sequence[RunView]) -> list[str]:
    """The scalar keys any of ``views`` recorded, sorted."""
    return sorted({key for view in views for key in view.keys("scalar")})


def check_metrics(metrics: Sequence[Metric], views: Sequence[RunView]) -> None:
    """Raise ``NotFoundError`` naming the known scalar keys if a metric's key is recorded by
    none of ``views`` (nothing to check when there are no runs)."""
    if not views:
        return
    known = scalar_keys(views)
    for metric in metrics:
        if metric.key not in known:
            raise NotFoundError(
                f"metric {metric.label!r}: no listed run has a scalar key {metric.key!r}; "
                f"scalar keys: {', '.join(known) or 'none'} (a metric is {_METRIC_FORM})"
            )


def default_metrics(views: Sequence[RunView], count: int = 3) -> list[Metric]:
    """The last values of ``count`` scalar keys: of those at least half the runs recorded,
    evaluation keys (``val/*``…) first, then losses, then the rest, each by how many runs
    have them and then alphabetically; keys fewer runs have come after them. Machine and
    per-layer keys (``system/``, ``activations/``, ``gradients/``, ``weights/``) are left out."""
    shared = Counter(
        key for view in views for key in view.keys("scalar") if not key.startswith(NOT_DEFAULT)
    )

    def rank(key: str) -> tuple[bool, int, int, str]:
        kind = 0 if key.startswith(EVALUATION) else 1 if key.endswith("loss") else 2
        return 2 * shared[key] < len(views), kind, -shared[key], key

    return [Metric(key) for key in sorted(shared, key=rank)[:count]]


def param_paths(views: Sequence[RunView]) -> list[str]:
    """Every param path of ``views``, in the order first met."""
    return list(dict.fromkeys(path for view in views for path, _ in dotted_params(view.params)))


def varying_params(views: Sequence[RunView]) -> list[str]:
    """The param paths whose value (or presence) is not the same in all ``views``."""
    flat = [dict(dotted_params(view.params)) for view in views]
    return [
        path
        for path in param_paths(views)
        if len({_canonical(params.get(path, _MISSING)) for params in flat}) > 1
    ]


_MISSING = object()


def _canonical(value: Any) -> str:
    """A text equal for equal param values and different for ``1``, ``1.0`` and ``True``."""
    return "\0missing" if value is _MISSING else json.dumps(value, sort_keys=True)


def field(view: RunView, name: str) -> Any:
    """A run field of :data:`FIELDS`; ``duration`` is seconds from creation to end (None
    while running)."""
    if name == "duration":
        return None if view.ended is None else view.ended - view.created
    return getattr(view, name)


@dataclass(frozen=True)
class SortKey:
    """What runs are sorted by: a run field, ``params.PATH`` or a metric; descending with a
    leading ``-``."""

    value: Callable[[RunView], Any]
    descending: bool
    metric: Metric | None = None

    @classmethod
    def parse(cls, text: str, views: Sequence[RunView]) -> SortKey:
        """The sort ``text`` names, checked against ``views`` (``NotFoundError`` listing the
        fields, params and scalar keys when it names none of them)."""
        descending = text.startswith("-")
        name = text[1:] if descending else text
        if name in FIELDS:
            return cls(lambda view: field(view, name), descending)
        paths = param_paths(views)
        if name.startswith("params."):
            path = name.removeprefix("params.")
            if path in paths or not views:
                return cls(lambda view: dict(dotted_params(view.params)).get(path), descending)
        else:
            metric = Metric.parse(name) if name else None
            if metric is not None and (not views or metric.key in scalar_keys(views)):
                return cls(metric.of, descending, metric)
        raise NotFoundError(
            f"sort {text!r}: not a run field, param or metric of the listed runs; fields: "
            f"{', '.join(FIELDS)}; params: "
            f"{', '.join(f'params.{p}' for p in paths) or 'none'}; scalar keys: "
            f"{', '.join(scalar_keys(views)) or 'none'} (a metric is {_METRIC_FORM}; a "
            "leading - sorts in descending order)"
        )

    def sort(self, views: Sequence[RunView]) -> list[RunView]:
        """``views`` in this order (stable); runs without a value come last either way."""
        values = [(view, self.value(view)) for view in views]
        present = [(view, value) for view, value in values if not _missing(value)]
        present.sort(key=lambda pair: _order(pair[1]), reverse=self.descending)
        return [view for view, _ in present] + [v for v, value in values if _missing(value)]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _order(value: Any) -> tuple[int, Any]:
    """Numbers before strings before other values (by their JSON text)."""
    if isinstance(value, (int, float)):
        return 0, value
    if isinstance(value, str):
        return 1, value
    return 2, json.dumps(value, sort_keys=True)


@dataclass(frozen=True)
class Divergence:
    """Where two series of one key part: the first common step whose values differ beyond
    the tolerance (None if none does), the two values there, and how many steps both
    recorded and whether they recorded the same steps."""

    key: str
    step: int | None
    a: float | None
    b: float | None
    common: int
    same_steps: bool


def _last_per_step(columns: Columns) -> tuple[np.ndarray, np.ndarray]:
    """Distinct steps, sorted, and the last value logged at each."""
    steps = columns.step[::-1]
    unique, first = np.unique(steps, return_index=True)
    return unique, columns.value[::-1][first]


def diverge(
    key: str, a: Columns, b: Columns, rel_tol: float = 1e-6, abs_tol: float = 0.0
) -> Divergence:
    """Compare two series of ``key`` step by step (the last value at each step).

    Finite values differ when ``|a - b| > max(rel_tol * max(|a|, |b|), abs_tol)``; two NaNs
    or two equal infinities are the same; a NaN or an infinity and anything else differ.
    """
    if not (rel_tol >= 0 and abs_tol >= 0):
        raise InvalidArgumentError(
            f"tolerance rel_tol={rel_tol!r} abs_tol={abs_tol!r}: expected numbers >= 0"
        )
    steps_a, values_a = _last_per_step(a)
    steps_b, values_b = _last_per_step(b)
    common, ia, ib = np.intersect1d(steps_a, steps_b, assume_unique=True, return_indices=True)
    va, vb = values_a[ia], values_b[ib]
    with np.errstate(invalid="ignore", over="ignore"):
        apart = np.abs(va - vb) > np.maximum(rel_tol * np.maximum(np.abs(va), np.abs(vb)), abs_tol)
    nan_a, nan_b = np.isnan(va), np.isnan(vb)
    finite = np.isfinite(va) & np.isfinite(vb)
    differ = np.where(finite, apart, (va != vb) & ~(nan_a & nan_b))
    same_steps = len(common) == len(steps_a) == len(steps_b)
    hits = np.flatnonzero(differ)
    if not len(hits):
        return Divergence(key, None, None, None, len(common), same_steps)
    first = int(hits[0])
    return Divergence(
        key, int(common[first]), float(va[first]), float(vb[first]), len(common), same_steps
    )
