"""How a run captures tensors and images: staged for the array writer, shrunk by
reductions (``Run.reduce``), thinned by byte budgets (``Run.budget``), and the capture
metadata that reports which policy governed each stored key and how many points it kept
and skipped."""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import KindMismatchError
from ..policies import log_spaced
from ..tensors.images import Image
from ..tensors.reduce import STAT_NAMES, Reduction
from ..tensors.staging import StagingPool, is_array, stage
from .keys import KeyRegistry, KeyState
from .messages import ArrayJob, ImageJob, TensorJob

_RAW = Reduction()

#: The series a tensor key reduced with ``reduce(..., how)`` is stored as, by suffix.
_REDUCED_OUTPUTS = {"stats": STAT_NAMES, "histogram": ("histogram", "histogram_edges")}


@dataclass
class Budget:
    """Bytes the tensors and images of keys matching ``keys`` may use before thinning."""

    keys: str
    bytes: int
    used: int = 0
    thinned_at: int | None = None


class Capture:
    """A run's reductions and budgets, and its capture metadata.

    Args:
        keys: The run's keys (budgets thin them).
        pool: The staging pool tensors are copied into (asked for at the first tensor).
    """

    def __init__(self, keys: KeyRegistry, pool: Callable[[], StagingPool]) -> None:
        self._keys = keys
        self._pool = pool
        self.reductions: list[tuple[str, Reduction]] = []
        self.budgets: list[Budget] = []
        #: Tensor key -> the reduction (``stats``/``histogram``) it was stored as.
        self.reduced: dict[str, str] = {}

    def job(self, state: KeyState, value: Any, step: int, epoch: int, stamp: float) -> ArrayJob:
        """Stage a tensor or image value of ``state``'s key for the array writer (the copy
        the caller pays for), charged to its budgets."""
        key = state.key
        if state.kind == "tensor":
            if not is_array(value):
                raise KindMismatchError(
                    f"key {key!r} holds tensors; got {type(value).__name__} {value!r:.60} "
                    "(log scalars under their own key)"
                )
            reduction = self.reduction_for(key)
            staged = stage(key, value, self._pool())
            nbytes = staged.array.nbytes if hasattr(staged.array, "nbytes") else 0
            self.charge(state, nbytes, step)
            return TensorJob(key, step, epoch, stamp, staged, reduction, nbytes)
        images = value if isinstance(value, (list, tuple)) else [value]
        if not images or not all(isinstance(i, Image) for i in images):
            raise KindMismatchError(
                f"key {key!r} holds images; got {type(value).__name__} (expected "
                "stepstore.Image or a list of them)"
            )
        pixels = [(i.array, i.caption) for i in images]
        nbytes = sum(array.nbytes for array, _ in pixels)
        self.charge(state, nbytes, step)
        return ImageJob(key, step, epoch, stamp, pixels, nbytes)

    def reduction_for(self, key: str) -> Reduction:
        """The reduction of tensor ``key`` (the last matching ``reduce`` wins); noted for the
        capture metadata when it is not raw."""
        for pattern, reduction in reversed(self.reductions):
            if fnmatch.fnmatchcase(key, pattern):
                if not reduction.raw:
                    self.reduced[key] = str(reduction.how)
                return reduction
        return _RAW

    def charge(self, state: KeyState, nbytes: int, step: int) -> None:
        """Count ``nbytes`` of ``state``'s key against its budgets; a budget spent first
        thins its keys to log-spaced steps, with a warning."""
        for budget in self.budgets:
            if not fnmatch.fnmatchcase(state.key, budget.keys):
                continue
            budget.used += nbytes
            if budget.thinned_at is None and budget.used > budget.bytes:
                budget.thinned_at = step
                self._keys.thin(budget.keys, log_spaced())
                warnings.warn(
                    f"stepstore: keys {budget.keys!r} used {budget.used} of their "
                    f"{budget.bytes}-byte budget at step {step}; recording them at "
                    "log-spaced steps from now on",
                    RuntimeWarning,
                    stacklevel=5,
                )

    def info(self) -> dict[str, Any]:
        """Which policy governs each stored key and how many points it kept and skipped.

        ``keys`` lists the keys as stored, so each ``recorded`` is the count of its series.
        A tensor key reduced to statistics or a histogram is stored as its outputs
        (``KEY/mean``, ..., ``KEY/histogram``, ``KEY/histogram_edges``): they stand in its
        place, each with the policy and skipped points of that key (``from``).
        """
        keys = dict(list(self._keys.states.items()))  # log() and writers may add keys
        entries: dict[str, dict[str, Any]] = {}
        for key, state in keys.items():
            how = self.reduced.get(key)
            outputs = [] if how is None else _REDUCED_OUTPUTS[how]
            produced = False
            for suffix in outputs:
                output = keys.get(f"{key}/{suffix}")
                stored = 0 if output is None else output.count  # restored on a resume
                recorded = stored + (state.count if how == "histogram" else 0)
                if recorded:
                    skipped = state.rejected + (0 if output is None else output.rejected)
                    entries[f"{key}/{suffix}"] = {
                        **_entry(state, recorded, skipped),
                        "from": key,
                    }
                    produced = True
            if not produced:
                entries.setdefault(key, _entry(state, state.count, state.rejected))
        return {
            "bindings": [{"pattern": p, "policy": repr(w)} for p, w in self._keys.bindings],
            "reductions": [
                {"pattern": p, "how": r.how, "dtype": r.dtype, "sample": r.sample}
                for p, r in self.reductions
            ],
            "budgets": [asdict(b) for b in self.budgets],
            "keys": entries,
        }


def _entry(state: KeyState, recorded: int, skipped: int) -> dict[str, Any]:
    """A key's line of the capture metadata."""
    policy = None if state.policy is None else repr(state.policy)
    return {"policy": policy, "recorded": recorded, "skipped": skipped}
