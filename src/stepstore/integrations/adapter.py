"""What the framework adapters (Keras, Lightning, Hugging Face) share: the run they record
into, and hyper-parameters turned into the JSON-like values a run's params hold.

An adapter is given an open run (``run=``) or ``stepstore.init``'s own arguments. A run it
starts itself it also finishes when training ends, and resumes (``init(resume=...)``) when
the framework calls it again afterwards (``trainer.test()`` after ``trainer.fit()``, a second
``model.fit()``), so one adapter object records into one run. A run it was given it never
finishes: that run belongs to the caller.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidArgumentError
from ..recording.idle import IdleRun
from ..recording.run import Run
from ..recording.start import init
from ..values import merged_params

#: The record key under which an adapter stores hyper-parameters that arrive once its run
#: has started (a run's params are fixed when it starts).
PARAMS_RECORD = "params"


class RunHolder:
    """The run an adapter records into: one it was given, or one it starts on first use."""

    def __init__(self, adapter: str, run: Run | None, init_kwargs: Mapping[str, Any]) -> None:
        """Check the arguments; no run is started here.

        Raises:
            InvalidArgumentError: ``run`` is not a Run, both ``run`` and ``init_kwargs`` are
                given, or neither ``run`` nor ``project`` is.
        """
        if run is not None:
            if not isinstance(run, Run):
                raise InvalidArgumentError(
                    f"{adapter}: run={run!r:.60}: expected a stepstore Run (stepstore.init)"
                )
            if init_kwargs:
                raise InvalidArgumentError(
                    f"{adapter}: got run= and stepstore.init arguments "
                    f"({', '.join(sorted(init_kwargs))}); pass one or the other"
                )
        elif "project" not in init_kwargs:
            raise InvalidArgumentError(
                f"{adapter}: expected run= (an open stepstore Run) or project= (and any other "
                "stepstore.init arguments) to start one"
            )
        self._run = run
        self.owned = run is None
        self._kwargs = dict(init_kwargs)
        self._known: dict[str, Any] | None = None  # params and what add_params recorded
        self._params_step = -1

    @property
    def current(self) -> Run | None:
        """The run if it has been started or given, else ``None``; starts nothing."""
        return self._run

    def get(self, params: Mapping[str, Any] | None = None) -> Run:
        """The run to record into: started now if needed, resumed if this holder finished it.

        ``params`` (plain values, see :func:`plain`) join the ``params=`` given to the
        adapter when the run is started here (theirs win on a clash); for a run that exists
        already they are recorded by :meth:`add_params`.
        """
        run = self._run
        if run is None:
            kwargs = dict(self._kwargs)
            kwargs["params"] = {**dict(kwargs.get("params") or {}), **(params or {})}
            run = self._run = init(**kwargs)
            return run
        if self.owned and run.status != "running":
            kept = {k: v for k, v in self._kwargs.items() if k not in ("name", "params", "tags")}
            run = self._run = init(**{**kept, "resume": run.id})
        if params:
            self.add_params(params)
        return run

    def add_params(self, params: Mapping[str, Any]) -> None:
        """Record hyper-parameters that arrive after the run started.

        Only the values that the run's params (and what this holder recorded before) do
        not hold already are recorded, nested as given, in the record
        :data:`PARAMS_RECORD` at the run's next step (one past the last such record if
        that is later); nothing when there are none.
        """
        run = self.get()
        if isinstance(run, IdleRun):
            return
        known = self._known if self._known is not None else run.params
        new = _difference(params, known)
        if new:
            step = max(run.step, self._params_step + 1)  # one record per step
            run.log_record(PARAMS_RECORD, new, step=step)
            self._known, self._params_step = merged_params(known, new), step

    def finish(self, status: str) -> None:
        """Finish the run with ``status`` if this holder started it and it still records."""
        if self.owned and self._run is not None and self._run.status == "running":
            self._run.finish(status)


class HeldRun:
    """What a callback holding a :class:`RunHolder` (as ``_holder``) offers its user: the
    run, ``finish`` and a context manager that records ``crashed`` when training raises."""

    _holder: RunHolder

    @property
    def run(self) -> Run | None:
        """The run being recorded into (``None`` before a callback-started run begins)."""
        return self._holder.current

    def __enter__(self) -> HeldRun:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, tb: Any) -> None:
        self.finish("finished" if kind is None else "crashed")

    def finish(self, status: str = "finished") -> None:
        """Finish the run with ``status`` if the callback started it (else do nothing)."""
        self._holder.finish(status)


def _difference(params: Mapping[str, Any], held: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``params`` (nested) whose values ``held`` does not hold."""
    new = {}
    for key, value in params.items():
        if key not in held:
            new[key] = value
        elif isinstance(value, Mapping) and isinstance(held[key], Mapping):
            inner = _difference(value, held[key])
            if inner:
                new[key] = inner
        elif held[key] != value:
            new[key] = value
    return new


def plain(value: Any, depth: int = 0) -> Any:
    """Hyper-parameters as JSON-like values a run's params can hold.

    Mappings, ``argparse.Namespace`` and dataclass instances become dicts with string keys;
    tuples, lists and sets become lists; NumPy and framework scalars become numbers and
    small arrays lists; enums their value; paths and any other object their ``str()``
    (so a framework's config never makes recording fail).
    """
    if value is None or isinstance(value, (bool, str, float)):
        return value
    if isinstance(value, int):
        return int(value)
    if depth > 32:
        return str(value)
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): plain(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(item, depth + 1) for item in value]
    if isinstance(value, enum.Enum):
        return plain(value.value, depth + 1)
    numel = getattr(value, "numel", None)  # torch's size() is a method
    size = numel() if callable(numel) else getattr(value, "size", None)
    if hasattr(value, "tolist") and isinstance(size, int) and size <= 64:
        return plain(value.tolist(), depth + 1)
    return str(value)
