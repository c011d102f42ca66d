"""IdleRun: the run as a non-zero rank of a distributed job sees it, a null object.

It offers the whole public interface of :class:`~.run.Run` (and counts as one for
``isinstance``) without any of its state: every recording call does nothing, reads answer
as for an empty run. It has the shared run's id, so ranks can refer to it; rank 0 records.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

from ..flight import FlightEvent, FlightRecorder
from ..policies import Policy
from ..tensors.flight import DEFAULT_FLIGHT_BUDGET
from .live import History
from .run import Run


class IdleRun:
    """A run whose calls do nothing (this rank does not record)."""

    def __init__(self, run_id: str, project: str, name: str | None, rank: int) -> None:
        self._id = run_id
        self._project = project
        self._name = name or run_id
        self._rank = rank
        self._params: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<IdleRun {self._id} rank={self._rank} (rank 0 records)>"

    @property
    def id(self) -> str:
        """The shared run's id."""
        return self._id

    @property
    def name(self) -> str:
        """The name given to ``init`` (the id when none was)."""
        return self._name

    @property
    def project(self) -> str:
        """The project given to ``init``."""
        return self._project

    @property
    def params(self) -> dict[str, Any]:
        """Empty: rank 0 holds the run's params."""
        return self._params

    @property
    def tags(self) -> list[str]:
        """Empty: rank 0 holds the run's tags."""
        return []

    @property
    def store(self) -> str:
        """Rank 0's store (this rank writes nothing)."""
        return ""

    @property
    def rank(self) -> int:
        """This process's rank."""
        return self._rank

    @property
    def step(self) -> int:
        """Always 0: this rank counts no steps."""
        return 0

    @property
    def status(self) -> str:
        """Always ``running``: rank 0 records the run's status."""
        return "running"

    def log(
        self,
        values: Mapping[str, Any],
        step: int | None = None,
        epoch: int | None = None,
        when: Policy | None = None,
        advance: bool = True,
        *,
        repeat: bool = False,
        time: float | None = None,
    ) -> None:
        """Does nothing on this rank."""

    def update_params(self, params: Mapping[str, Any] | None = None, /, **more: Any) -> None:
        """Does nothing on this rank."""

    def log_record(
        self,
        key: str,
        record: Mapping[str, Any],
        step: int | None = None,
        epoch: int | None = None,
        *,
        time: float | None = None,
    ) -> None:
        """Does nothing on this rank."""

    def log_artifact(self, path: str | os.PathLike[str], name: str | None = None) -> str:
        """Does nothing on this rank; returns the name the artifact would have."""
        return name or Path(os.fspath(path)).name

    def policy(self, pattern: str, when: Policy) -> IdleRun:
        """Does nothing on this rank."""
        return self

    def reduce(
        self,
        pattern: str,
        how: str | None = None,
        *,
        dtype: str | None = None,
        sample: int | None = None,
        bins: int = 64,
    ) -> IdleRun:
        """Does nothing on this rank."""
        return self

    def budget(self, nbytes: int, keys: str = "*") -> IdleRun:
        """Does nothing on this rank."""
        return self

    def flight(
        self,
        pattern: str | Sequence[str],
        steps: int,
        trigger: Policy | None = None,
        after: int = 0,
        budget: int = DEFAULT_FLIGHT_BUDGET,
        device: bool = False,
    ) -> FlightRecorder:
        """A flight recorder that is never fed and keeps nothing on this rank (its
        arguments are checked as on rank 0)."""
        recorder = FlightRecorder(pattern, steps, trigger, after, budget, device)
        recorder.attach(self, fed=False)
        return recorder

    def dump_flight(self, reason: str) -> None:
        """Does nothing on this rank."""

    def _add_flight(self, recorder: FlightRecorder, fed: bool) -> Callable[[FlightEvent], None]:
        """Nothing persists here: the events of a recorder on this rank are dropped."""
        return _drop

    def console(self, keys: Sequence[str] | None = None, every: float = 0.5) -> IdleRun:
        """Does nothing on this rank (rank 0 shows the progress line)."""
        return self

    def latest(self, key: str) -> float:
        """NaN: this rank records nothing (rank 0 holds the values)."""
        return float("nan")

    @overload
    def history(
        self, key: str, last: int | None = None, *, with_steps: Literal[False] = False
    ) -> np.ndarray: ...

    @overload
    def history(
        self, key: str, last: int | None = None, *, with_steps: Literal[True]
    ) -> History: ...

    def history(
        self, key: str, last: int | None = None, *, with_steps: bool = False
    ) -> np.ndarray | History:
        """No points: this rank records nothing (rank 0 holds the values)."""
        empty = History(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64))
        return empty if with_steps else empty.value

    def capture_info(self) -> dict[str, Any]:
        """Empty capture metadata: this rank records nothing."""
        return {"bindings": [], "reductions": [], "budgets": [], "keys": {}}

    def writer_info(self) -> dict[str, Any]:
        """Zero writer counters: this rank writes nothing."""
        return {
            "flushes": 0,
            "points": 0,
            "waits": 0,
            "wait_seconds": 0.0,
            "array_bytes": 0,
            "flush_interval": 0.0,
        }

    def flush(self) -> None:
        """Does nothing on this rank."""

    def detach(self) -> None:
        """Does nothing on this rank."""

    def finish(self, status: str = "finished") -> None:
        """Does nothing on this rank."""

    def __enter__(self) -> IdleRun:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, tb: Any) -> None:
        self.finish("finished" if kind is None else "crashed")


def _drop(event: FlightEvent) -> None:
    """Persist nothing (a flight event on a rank that does not record)."""


Run.register(IdleRun)
